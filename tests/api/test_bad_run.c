/* Bad input to xattn_attn_run and the plan queries (docs/errors.md).
 *
 * Each case starts from arguments that pass validation, breaks exactly one
 * documented rule and checks: the documented status, a message naming the
 * offending argument, and that O and LSE still hold their sentinel bytes.
 *
 * The backend comes from the environment. These cases need a plan; when the
 * backend cannot plan the reference problem yet, the run is reported as
 * skipped (exit 77) with the reason, unless XATTN_TEST_REQUIRE_PLAN=1 turns
 * that into a failure (the fake backend module always can plan). */
#include "api_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    B = 2,       /* uniform and paged batch */
    RB = 3,      /* ragged batch (its middle sequence is empty) */
    SQ = 3,      /* seqlen_q bound */
    SK = 5,      /* seqlen_k bound (uniform, ragged) */
    HQ = 4,
    HKV = 2,
    D = 64,
    TOTAL_Q = 5, /* ragged: cu_seqlens_q = {0, 2, 2, 5} */
    TOTAL_K = 9, /* ragged: cu_seqlens_k = {0, 4, 4, 9} */
    PAGE_SIZE = 3,
    NUM_PAGES = 6,
    MAX_PAGES = 3,
    PAGED_SK = 7, /* paged: seqlens_k = {5, 7} */
    DECODE_SK = 4096, /* decode: B 1, Sq 1; long enough to split KV on a GPU */
    WORKSPACE_ALIGN = 256,
    MAX_BUFFERS = 32,
};

typedef enum fx_layout { FX_UNIFORM, FX_RAGGED, FX_PAGED, FX_DECODE } fx_layout;

static const int32_t cu_q_valid[RB + 1] = {0, 2, 2, TOTAL_Q};
static const int32_t cu_k_valid[RB + 1] = {0, 4, 4, TOTAL_K};
static const int32_t block_table_valid[B * MAX_PAGES] = {0, 1, 2, 3, 4, 5};
static const int32_t seqlens_k_valid[B] = {5, PAGED_SK};

typedef struct fixture {
    xattn_attn_desc desc;
    xattn_plan *plan;
    xattn_attn_args args;
    xattn_buffer *bufs[MAX_BUFFERS];
    int nbufs;
} fixture;

static xattn_context *g_ctx;

/* A backend without kernels yet may answer a valid call with UNSUPPORTED;
 * the built-in cpu backend must not. */
static xattn_status unsupported_unless_cpu(void)
{
    return strcmp(xattn_context_backend_name(g_ctx), "cpu") ? XATTN_ERR_UNSUPPORTED : XATTN_OK;
}
static fixture fx;

static xattn_buffer *fx_buffer(size_t bytes, unsigned char fill)
{
    assert_true(fx.nbufs < MAX_BUFFERS);
    xattn_buffer *buf = xt_buffer(g_ctx, bytes, fill);
    fx.bufs[fx.nbufs++] = buf;
    return buf;
}

/* A new contiguous tensor in a buffer of exactly its size. */
static xattn_tensor fx_tensor(xattn_dtype dtype, int32_t rank, const int64_t *shape,
                              unsigned char fill)
{
    size_t n = 1;
    for (int32_t d = 0; d < rank; d++) n *= (size_t)shape[d];
    xattn_buffer *buf = fx_buffer(n * xattn_dtype_size(dtype), fill);
    return xattn_tensor_contiguous(buf, 0, dtype, rank, shape);
}

static xattn_tensor fx_i32(const int32_t *values, int32_t rank, const int64_t *shape)
{
    size_t n = 1;
    for (int32_t d = 0; d < rank; d++) n *= (size_t)shape[d];
    assert_true(fx.nbufs < MAX_BUFFERS);
    xattn_buffer *buf = xt_buffer_i32(g_ctx, values, n);
    fx.bufs[fx.nbufs++] = buf;
    return xattn_tensor_contiguous(buf, 0, XATTN_I32, rank, shape);
}

/* Overwrite the contents of an i32 tensor's buffer. */
static void fx_set_i32(const xattn_tensor *t, const int32_t *values, size_t n)
{
    XT_ASSERT_STATUS(xattn_buffer_write(t->buffer, t->offset, values, n * sizeof *values),
                     XATTN_OK);
}

static xattn_attn_desc reference_desc(fx_layout layout, uint32_t flags)
{
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = XATTN_F32;
    d.batch = layout == FX_RAGGED ? RB : B;
    d.num_q_heads = HQ;
    d.num_kv_heads = HKV;
    d.head_dim_qk = D;
    d.head_dim_v = D;
    d.q_layout = layout == FX_RAGGED ? XATTN_Q_RAGGED : XATTN_Q_UNIFORM;
    d.kv_layout = layout == FX_RAGGED  ? XATTN_KV_RAGGED
                  : layout == FX_PAGED ? XATTN_KV_PAGED
                                       : XATTN_KV_UNIFORM;
    d.seqlen_q = SQ;
    d.seqlen_k = layout == FX_PAGED ? PAGED_SK : SK;
    if (layout == FX_DECODE) {
        d.batch = 1;
        d.seqlen_q = 1;
        d.seqlen_k = DECODE_SK;
    }
    if (layout == FX_PAGED) {
        d.page_size = PAGE_SIZE;
        d.num_pages = NUM_PAGES;
        d.max_pages_per_seq = MAX_PAGES;
    }
    d.flags = flags;
    return d;
}

/* Valid arguments for a fresh plan of the given layout and flags: O is
 * filled with XT_SENTINEL_O and LSE (with XATTN_ATTN_LSE) with
 * XT_SENTINEL_LSE. */
static void fx_make(fx_layout layout, uint32_t flags)
{
    fx.desc = reference_desc(layout, flags);
    XT_ASSERT_STATUS(xattn_plan_create(g_ctx, &fx.desc, &fx.plan), XATTN_OK);
    assert_non_null(fx.plan);

    xattn_attn_args *a = &fx.args;
    memset(a, 0, sizeof *a);
    int64_t total_q;
    if (layout == FX_RAGGED) {
        const int64_t q_shape[3] = {TOTAL_Q, HQ, D};
        const int64_t k_shape[3] = {TOTAL_K, HKV, D};
        const int64_t cu_shape[1] = {RB + 1};
        a->q = fx_tensor(XATTN_F32, 3, q_shape, 0);
        a->o = fx_tensor(XATTN_F32, 3, q_shape, XT_SENTINEL_O);
        a->k = fx_tensor(XATTN_F32, 3, k_shape, 0);
        a->v = fx_tensor(XATTN_F32, 3, k_shape, 0);
        a->cu_seqlens_q = fx_i32(cu_q_valid, 1, cu_shape);
        a->cu_seqlens_k = fx_i32(cu_k_valid, 1, cu_shape);
        total_q = TOTAL_Q;
    } else {
        const int64_t q_shape[4] = {fx.desc.batch, fx.desc.seqlen_q, HQ, D};
        a->q = fx_tensor(XATTN_F32, 4, q_shape, 0);
        a->o = fx_tensor(XATTN_F32, 4, q_shape, XT_SENTINEL_O);
        total_q = fx.desc.batch * fx.desc.seqlen_q;
        if (layout == FX_PAGED) {
            const int64_t cache_shape[4] = {NUM_PAGES, PAGE_SIZE, HKV, D};
            const int64_t bt_shape[2] = {B, MAX_PAGES};
            const int64_t sk_shape[1] = {B};
            a->k = fx_tensor(XATTN_F32, 4, cache_shape, 0);
            a->v = fx_tensor(XATTN_F32, 4, cache_shape, 0);
            a->block_table = fx_i32(block_table_valid, 2, bt_shape);
            a->seqlens_k = fx_i32(seqlens_k_valid, 1, sk_shape);
        } else {
            const int64_t k_shape[4] = {fx.desc.batch, fx.desc.seqlen_k, HKV, D};
            a->k = fx_tensor(XATTN_F32, 4, k_shape, 0);
            a->v = fx_tensor(XATTN_F32, 4, k_shape, 0);
        }
    }
    if (flags & XATTN_ATTN_LSE) {
        const int64_t lse_shape[2] = {HQ, total_q};
        a->lse = fx_tensor(XATTN_F32, 2, lse_shape, XT_SENTINEL_LSE);
    }
    const int64_t head_shape[1] = {HQ};
    if (flags & XATTN_ATTN_ALIBI) a->alibi_slopes = fx_tensor(XATTN_F32, 1, head_shape, 0);
    if (flags & XATTN_ATTN_SINKS) a->sinks = fx_tensor(XATTN_F32, 1, head_shape, 0);

    size_t ws = xattn_plan_workspace_size(fx.plan);
    if (ws > 0) a->workspace = fx_buffer(ws, 0);
    a->workspace_offset = 0;
}

static int fx_teardown(void **state)
{
    (void)state;
    xattn_plan_destroy(&fx.plan);
    for (int i = 0; i < fx.nbufs; i++) xattn_buffer_free(&fx.bufs[i]);
    memset(&fx, 0, sizeof fx);
    return 0;
}

/* O and LSE (where present) still hold their sentinels. */
static void check_outputs_untouched(const xattn_attn_args *a, const char *file, int line)
{
    if (a->o.buffer) xt_check_filled(a->o.buffer, XT_SENTINEL_O, "O", file, line);
    if (a->lse.buffer) xt_check_filled(a->lse.buffer, XT_SENTINEL_LSE, "LSE", file, line);
}

/* Run the fixture's (modified) arguments: must fail with want, name one of
 * the words and leave O and LSE untouched. */
#define EXPECT_RUN_REJECTED(want, ...)                                          \
    do {                                                                        \
        XT_EXPECT_ERROR(xattn_attn_run(fx.plan, &fx.args), (want), __VA_ARGS__); \
        check_outputs_untouched(&fx.args, __FILE__, __LINE__);                  \
    } while (0)

#define EXPECT_RUN_INVALID(...) EXPECT_RUN_REJECTED(XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* ---- controls: the fixtures themselves pass validation ---------------- */

static void expect_valid_run(void)
{
    xattn_status st = xattn_attn_run(fx.plan, &fx.args);
    xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "xattn_attn_run(valid)", __FILE__,
                     __LINE__);
    if (st == XATTN_ERR_UNSUPPORTED) XT_ASSERT_ERROR_NAMES(xattn_context_backend_name(g_ctx));
}

static void test_run_accepts_valid_uniform_args(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    expect_valid_run();
}

static void test_run_accepts_valid_ragged_args(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    expect_valid_run();
}

static void test_run_accepts_valid_paged_args(void **state)
{
    (void)state;
    fx_make(FX_PAGED, XATTN_ATTN_CAUSAL);
    expect_valid_run();
}

static void test_run_accepts_valid_alibi_and_sinks(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_ALIBI | XATTN_ATTN_SINKS);
    expect_valid_run();
}

/* Token and head strides are free (docs/attention.md): Q and O as views into
 * wider buffers are valid. */
static void test_run_accepts_strided_q_and_o(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    /* Q and O inside buffers twice as wide: token stride 2·Hq·D. */
    const int64_t wide[4] = {B, SQ, 2 * HQ, D};
    xattn_tensor q = fx_tensor(XATTN_F32, 4, wide, 0);
    xattn_tensor o = fx_tensor(XATTN_F32, 4, wide, XT_SENTINEL_O);
    q.shape[2] = o.shape[2] = HQ;
    fx.args.q = q;
    fx.args.o = o;
    expect_valid_run();
}

/* LSE takes any element strides, as every other tensor: FlashInfer keeps
 * it as [total_q, Hq] in memory, which is the [Hq, total_q] view with
 * strides (1, Hq). */
static void test_run_accepts_lse_transposed_view(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.lse.stride[0] = 1;
    fx.args.lse.stride[1] = HQ;
    expect_valid_run();
}

/* ---- null handles ---------------------------------------------------- */

static void test_run_rejects_null_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    XT_EXPECT_ERROR(xattn_attn_run(NULL, &fx.args), XATTN_ERR_INVALID_ARGUMENT, "plan");
    check_outputs_untouched(&fx.args, __FILE__, __LINE__);
}

static void test_run_rejects_null_args(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    XT_EXPECT_ERROR(xattn_attn_run(fx.plan, NULL), XATTN_ERR_INVALID_ARGUMENT, "args");
    check_outputs_untouched(&fx.args, __FILE__, __LINE__);
}

static void test_run_rejects_absent_q(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.q.buffer = NULL;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_absent_v(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.v.buffer = NULL;
    EXPECT_RUN_INVALID("v");
}

static void test_run_rejects_absent_o(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    xattn_buffer *o_buf = fx.args.o.buffer;
    fx.args.o.buffer = NULL;
    EXPECT_RUN_INVALID("o");
    XT_ASSERT_UNTOUCHED(o_buf, XT_SENTINEL_O);
}

/* ---- dtypes ---------------------------------------------------------- */

static void test_run_rejects_q_dtype_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.q.dtype = XATTN_F16;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_k_dtype_differing_from_q(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.k.dtype = XATTN_BF16;
    EXPECT_RUN_INVALID("k");
}

static void test_run_rejects_i32_q(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.q.dtype = XATTN_I32;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_o_dtype_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.o.dtype = XATTN_F16;
    EXPECT_RUN_INVALID("o");
}

static void test_run_rejects_lse_not_f32(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.lse.dtype = XATTN_F16;
    EXPECT_RUN_INVALID("lse");
}

/* ---- ranks and shapes against the plan -------------------------------- */

static void test_run_rejects_q_wrong_rank(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    /* Uniform Q is [B, Sq, Hq, D]; pass it as ragged-style [B·Sq, Hq, D]. */
    const int64_t shape[3] = {B * SQ, HQ, D};
    fx.args.q = xattn_tensor_contiguous(fx.args.q.buffer, 0, XATTN_F32, 3, shape);
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_q_head_count_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.q.shape[2] = HQ / 2;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_k_head_count_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.k.shape[2] = 1;
    EXPECT_RUN_INVALID("k");
}

static void test_run_rejects_v_head_dim_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.v.shape[3] = D / 2;
    EXPECT_RUN_INVALID("v");
}

static void test_run_rejects_batch_above_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    const int64_t q_shape[4] = {B + 1, SQ, HQ, D};
    const int64_t k_shape[4] = {B + 1, SK, HKV, D};
    fx.args.q = fx_tensor(XATTN_F32, 4, q_shape, 0);
    fx.args.o = fx_tensor(XATTN_F32, 4, q_shape, XT_SENTINEL_O);
    fx.args.k = fx_tensor(XATTN_F32, 4, k_shape, 0);
    fx.args.v = fx_tensor(XATTN_F32, 4, k_shape, 0);
    EXPECT_RUN_INVALID("q", "batch");
}

static void test_run_rejects_seqlen_q_above_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    const int64_t q_shape[4] = {B, SQ + 1, HQ, D};
    fx.args.q = fx_tensor(XATTN_F32, 4, q_shape, 0);
    fx.args.o = fx_tensor(XATTN_F32, 4, q_shape, XT_SENTINEL_O);
    EXPECT_RUN_INVALID("q", "seqlen_q");
}

static void test_run_rejects_seqlen_k_above_plan(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    const int64_t k_shape[4] = {B, SK + 1, HKV, D};
    fx.args.k = fx_tensor(XATTN_F32, 4, k_shape, 0);
    fx.args.v = fx_tensor(XATTN_F32, 4, k_shape, 0);
    EXPECT_RUN_INVALID("k", "seqlen_k");
}

static void test_run_rejects_o_shape_differing_from_q(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.o.shape[1] = SQ - 1;
    EXPECT_RUN_INVALID("o");
}

static void test_run_rejects_v_token_count_differing_from_k(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.v.shape[1] = SK - 1;
    EXPECT_RUN_INVALID("v");
}

static void test_run_rejects_lse_wrong_shape(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    /* [total_q, Hq] instead of [Hq, total_q]. */
    const int64_t shape[2] = {B * SQ, HQ};
    fx.args.lse = xattn_tensor_contiguous(fx.args.lse.buffer, 0, XATTN_F32, 2, shape);
    EXPECT_RUN_INVALID("lse");
}

/* ---- strides and bounds ---------------------------------------------- */

static void test_run_rejects_q_innermost_stride_not_one(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    /* Every other float of a buffer twice as wide: in bounds, no overlap. */
    const int64_t wide[4] = {B, SQ, HQ, 2 * D};
    fx.args.q = fx_tensor(XATTN_F32, 4, wide, 0);
    fx.args.q.shape[3] = D;
    fx.args.q.stride[3] = 2;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_o_innermost_stride_not_one(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.o.stride[3] = 0; /* broadcast: every element of a head aliases */
    EXPECT_RUN_INVALID("o");
}

static void test_run_rejects_lse_strides_overlapping(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    /* Transposed, but a token stride of 1 lands every head on the next
     * token's first head. */
    fx.args.lse.stride[0] = 1;
    fx.args.lse.stride[1] = 1;
    EXPECT_RUN_INVALID("lse");
}

static void test_run_rejects_lse_zero_stride(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.lse.stride[0] = 0; /* every head of a token at one address */
    fx.args.lse.stride[1] = 1;
    EXPECT_RUN_INVALID("lse");
}

static void test_run_rejects_q_head_stride_smaller_than_head_dim(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.q.stride[2] = D / 2;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_o_token_stride_overlapping_heads(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.o.stride[1] = HQ * D / 2;
    EXPECT_RUN_INVALID("o");
}

static void test_run_rejects_misaligned_tensor_offset(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    const int64_t shape[4] = {B, SQ, HQ, D + 1};
    fx.args.q = fx_tensor(XATTN_F32, 4, shape, 0);
    fx.args.q.shape[3] = D;
    fx.args.q.offset = 2; /* half a float */
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_negative_token_count(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.q.shape[0] = -1;
    EXPECT_RUN_INVALID("q");
}

static void test_run_rejects_o_overlapping_q(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    /* O written over Q's memory; Q now carries the sentinel. */
    fx.args.o.buffer = fx.args.q.buffer;
    xt_fill(fx.args.q.buffer, XT_SENTINEL_O);
    EXPECT_RUN_INVALID("o");
}

static void test_run_rejects_lse_overlapping_o(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    /* LSE's 96 bytes placed at the start of O's buffer. */
    xattn_buffer *lse_buf = fx.args.lse.buffer;
    fx.args.lse.buffer = fx.args.o.buffer;
    XT_EXPECT_ERROR(xattn_attn_run(fx.plan, &fx.args), XATTN_ERR_INVALID_ARGUMENT, "o", "lse");
    XT_ASSERT_UNTOUCHED(fx.args.o.buffer, XT_SENTINEL_O);
    XT_ASSERT_UNTOUCHED(lse_buf, XT_SENTINEL_LSE);
}

static void test_run_rejects_buffer_from_another_context(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    xattn_context *other = xt_context();
    xattn_buffer *buf = NULL;
    xattn_status st = xattn_buffer_alloc(other, xattn_buffer_size(fx.args.k.buffer), &buf);
    if (st == XATTN_OK) {
        fx.args.k.buffer = buf;
        st = xattn_attn_run(fx.plan, &fx.args);
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s", xattn_last_error());
    xattn_buffer_free(&buf);
    xattn_context_destroy(&other);
    XT_ASSERT_STATUS(st, XATTN_ERR_INVALID_ARGUMENT);
    if (!xt_mentions(msg, "k")) fail_msg("message \"%s\" does not name k", msg);
    check_outputs_untouched(&fx.args, __FILE__, __LINE__);
}

static void test_run_rejects_o_outside_buffer(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.o.offset = sizeof(float); /* last element one float past the end */
    EXPECT_RUN_INVALID("o");
}

static void test_run_rejects_k_offset_past_buffer_end(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.k.offset = xattn_buffer_size(fx.args.k.buffer) + 64;
    EXPECT_RUN_INVALID("k");
}

static void test_run_rejects_v_strides_reaching_past_buffer(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.v.stride[0] *= 2;
    EXPECT_RUN_INVALID("v");
}

static void test_run_rejects_lse_outside_buffer(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    fx.args.lse.stride[0] += 1;
    EXPECT_RUN_INVALID("lse");
}

/* ---- optional tensors: required with their flag, never ignored -------- */

static void test_run_rejects_missing_lse_with_lse_flag(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    xattn_buffer *lse_buf = fx.args.lse.buffer;
    fx.args.lse.buffer = NULL;
    EXPECT_RUN_INVALID("lse");
    XT_ASSERT_UNTOUCHED(lse_buf, XT_SENTINEL_LSE);
}

static void test_run_rejects_lse_without_lse_flag(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    const int64_t shape[2] = {HQ, B * SQ};
    fx.args.lse = fx_tensor(XATTN_F32, 2, shape, XT_SENTINEL_LSE);
    EXPECT_RUN_INVALID("lse");
}

static void test_run_rejects_alibi_flag_without_slopes(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_ALIBI | XATTN_ATTN_LSE);
    fx.args.alibi_slopes.buffer = NULL;
    EXPECT_RUN_INVALID("alibi_slopes");
}

static void test_run_rejects_alibi_slopes_without_flag(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    const int64_t shape[1] = {HQ};
    fx.args.alibi_slopes = fx_tensor(XATTN_F32, 1, shape, 0);
    EXPECT_RUN_INVALID("alibi_slopes");
}

static void test_run_rejects_alibi_slopes_wrong_length(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_ALIBI | XATTN_ATTN_LSE);
    fx.args.alibi_slopes.shape[0] = HQ - 1;
    EXPECT_RUN_INVALID("alibi_slopes");
}

static void test_run_rejects_sinks_flag_without_sinks(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_SINKS | XATTN_ATTN_LSE);
    fx.args.sinks.buffer = NULL;
    EXPECT_RUN_INVALID("sinks");
}

static void test_run_rejects_sinks_without_flag(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    const int64_t shape[1] = {HQ};
    fx.args.sinks = fx_tensor(XATTN_F32, 1, shape, 0);
    EXPECT_RUN_INVALID("sinks");
}

static void test_run_rejects_cu_seqlens_q_with_uniform_q(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    const int64_t shape[1] = {B + 1};
    const int32_t cu[B + 1] = {0, SQ, 2 * SQ};
    fx.args.cu_seqlens_q = fx_i32(cu, 1, shape);
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_block_table_with_contiguous_kv(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, XATTN_ATTN_LSE);
    const int64_t shape[2] = {B, MAX_PAGES};
    fx.args.block_table = fx_i32(block_table_valid, 2, shape);
    EXPECT_RUN_INVALID("block_table");
}

/* ---- ragged batches -------------------------------------------------- */

static void test_run_rejects_missing_cu_seqlens_q(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.cu_seqlens_q.buffer = NULL;
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_q_not_monotonic(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {0, 3, 2, TOTAL_Q};
    fx_set_i32(&fx.args.cu_seqlens_q, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_q_last_not_total_rows(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {0, 2, 2, TOTAL_Q - 1};
    fx_set_i32(&fx.args.cu_seqlens_q, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_q_first_not_zero(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {1, 2, 2, TOTAL_Q};
    fx_set_i32(&fx.args.cu_seqlens_q, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_q_sequence_above_seqlen_q(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {0, 1, 1, TOTAL_Q}; /* last sequence: 4 > SQ */
    fx_set_i32(&fx.args.cu_seqlens_q, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_q", "seqlen_q");
}

/* A length computed as cu[b+1] − cu[b] must not overflow int32 on the way
 * (UBSan reports it if it does). */
static void test_run_rejects_cu_seqlens_q_jumping_to_int32_min(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {0, 2, INT32_MIN, TOTAL_Q};
    fx_set_i32(&fx.args.cu_seqlens_q, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_q_wrong_length(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.cu_seqlens_q.shape[0] = RB;
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_q_not_i32(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.cu_seqlens_q.dtype = XATTN_F32;
    EXPECT_RUN_INVALID("cu_seqlens_q");
}

static void test_run_rejects_cu_seqlens_k_not_monotonic(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {0, 5, 4, TOTAL_K};
    fx_set_i32(&fx.args.cu_seqlens_k, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_k");
}

static void test_run_rejects_cu_seqlens_k_last_not_total_rows(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    const int32_t cu[RB + 1] = {0, 4, 4, TOTAL_K - 1};
    fx_set_i32(&fx.args.cu_seqlens_k, cu, RB + 1);
    EXPECT_RUN_INVALID("cu_seqlens_k");
}

static void test_run_rejects_missing_cu_seqlens_k(void **state)
{
    (void)state;
    fx_make(FX_RAGGED, XATTN_ATTN_LSE);
    fx.args.cu_seqlens_k.buffer = NULL;
    EXPECT_RUN_INVALID("cu_seqlens_k");
}

/* ---- paged KV -------------------------------------------------------- */

static void test_run_rejects_block_table_entry_negative(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    const int32_t bt[B * MAX_PAGES] = {0, -1, 2, 3, 4, 5};
    fx_set_i32(&fx.args.block_table, bt, B * MAX_PAGES);
    EXPECT_RUN_INVALID("block_table");
}

static void test_run_rejects_block_table_entry_at_num_pages(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    const int32_t bt[B * MAX_PAGES] = {0, 1, 2, NUM_PAGES, 4, 5};
    fx_set_i32(&fx.args.block_table, bt, B * MAX_PAGES);
    EXPECT_RUN_INVALID("block_table");
}

static void test_run_rejects_seqlens_k_beyond_max_pages_times_page_size(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    const int32_t sk[B] = {5, MAX_PAGES * PAGE_SIZE + 1};
    fx_set_i32(&fx.args.seqlens_k, sk, B);
    EXPECT_RUN_INVALID("seqlens_k");
}

static void test_run_rejects_seqlens_k_above_plan(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    const int32_t sk[B] = {5, PAGED_SK + 1}; /* fits the pages, not the plan */
    fx_set_i32(&fx.args.seqlens_k, sk, B);
    EXPECT_RUN_INVALID("seqlens_k", "seqlen_k");
}

static void test_run_rejects_negative_seqlens_k(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    const int32_t sk[B] = {-1, PAGED_SK};
    fx_set_i32(&fx.args.seqlens_k, sk, B);
    EXPECT_RUN_INVALID("seqlens_k");
}

static void test_run_rejects_missing_block_table(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    fx.args.block_table.buffer = NULL;
    EXPECT_RUN_INVALID("block_table");
}

static void test_run_rejects_missing_seqlens_k(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    fx.args.seqlens_k.buffer = NULL;
    EXPECT_RUN_INVALID("seqlens_k");
}

static void test_run_rejects_block_table_wrong_shape(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    fx.args.block_table.shape[1] = MAX_PAGES - 1;
    EXPECT_RUN_INVALID("block_table");
}

static void test_run_rejects_cache_page_size_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    fx.args.k.shape[1] = PAGE_SIZE - 1;
    EXPECT_RUN_INVALID("k");
}

static void test_run_rejects_cache_page_count_differing_from_plan(void **state)
{
    (void)state;
    fx_make(FX_PAGED, 0);
    fx.args.v.shape[0] = NUM_PAGES - 1;
    EXPECT_RUN_INVALID("v");
}

/* ---- workspace ------------------------------------------------------- */

static size_t require_workspace(void)
{
    size_t ws = xattn_plan_workspace_size(fx.plan);
    if (ws == 0) {
        print_message("the plan needs no workspace on this backend; nothing to shrink\n");
        skip();
    }
    return ws;
}

static void test_run_rejects_workspace_too_small(void **state)
{
    (void)state;
    fx_make(FX_DECODE, XATTN_ATTN_LSE);
    size_t ws = require_workspace();
    if (ws > 1) {
        fx.args.workspace = fx_buffer(ws - 1, 0);
        EXPECT_RUN_REJECTED(XATTN_ERR_WORKSPACE_TOO_SMALL, "workspace");
    }
}

static void test_run_rejects_workspace_offset_leaving_too_little(void **state)
{
    (void)state;
    fx_make(FX_DECODE, XATTN_ATTN_LSE);
    size_t ws = require_workspace();
    fx.args.workspace = fx_buffer(ws + WORKSPACE_ALIGN - 1, 0);
    fx.args.workspace_offset = WORKSPACE_ALIGN;
    EXPECT_RUN_REJECTED(XATTN_ERR_WORKSPACE_TOO_SMALL, "workspace", "workspace_offset");
}

static void test_run_rejects_missing_workspace(void **state)
{
    (void)state;
    fx_make(FX_DECODE, XATTN_ATTN_LSE);
    require_workspace();
    fx.args.workspace = NULL;
    EXPECT_RUN_REJECTED(XATTN_ERR_WORKSPACE_TOO_SMALL, "workspace");
}

static void test_run_rejects_misaligned_workspace_offset(void **state)
{
    (void)state;
    fx_make(FX_DECODE, XATTN_ATTN_LSE);
    size_t ws = xattn_plan_workspace_size(fx.plan);
    fx.args.workspace = fx_buffer(ws + 2 * WORKSPACE_ALIGN, 0);
    fx.args.workspace_offset = 100;
    EXPECT_RUN_INVALID("workspace_offset");
}

/* ---- plan queries ---------------------------------------------------- */

static void test_plan_describe_rejects_null_plan(void **state)
{
    (void)state;
    char buf[64];
    memset(buf, XT_SENTINEL_HOST, sizeof buf);
    size_t needed = 12345;
    XT_EXPECT_ERROR(xattn_plan_describe(NULL, buf, sizeof buf, &needed),
                    XATTN_ERR_INVALID_ARGUMENT, "plan");
    XT_ASSERT_HOST_UNTOUCHED(buf, sizeof buf, XT_SENTINEL_HOST);
    assert_int_equal(needed, 12345);
}

static void test_plan_describe_rejects_null_buffer_with_size(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    size_t needed = 12345;
    XT_EXPECT_ERROR(xattn_plan_describe(fx.plan, NULL, 64, &needed),
                    XATTN_ERR_INVALID_ARGUMENT, "buf");
    assert_int_equal(needed, 12345);
}

static void test_plan_workspace_size_of_null_plan_is_zero(void **state)
{
    (void)state;
    assert_int_equal(xattn_plan_workspace_size(NULL), 0);
}

/* ---- behaviour that needs a plan ------------------------------------- */

static void test_plan_describe_truncates_and_reports_length(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    size_t needed = 0;
    XT_ASSERT_STATUS(xattn_plan_describe(fx.plan, NULL, 0, &needed), XATTN_OK);
    assert_true(needed > 0);

    char *full = malloc(needed + 1);
    assert_non_null(full);
    size_t again = 0;
    XT_ASSERT_STATUS(xattn_plan_describe(fx.plan, full, needed + 1, &again), XATTN_OK);
    assert_int_equal(again, needed);
    assert_int_equal(strlen(full), needed);

    char small[8];
    memset(small, 'x', sizeof small);
    XT_ASSERT_STATUS(xattn_plan_describe(fx.plan, small, sizeof small, NULL), XATTN_OK);
    int terminated = small[sizeof small - 1] == '\0';
    int prefix = strncmp(small, full, sizeof small - 1) == 0;
    free(full);
    assert_true(terminated);
    assert_true(prefix);
}

static void test_plan_destroy_clears_handle(void **state)
{
    (void)state;
    fx_make(FX_UNIFORM, 0);
    xattn_plan_destroy(&fx.plan);
    assert_null(fx.plan);
    xattn_plan_destroy(&fx.plan); /* pointer to NULL */
    xattn_plan_destroy(NULL);
}

/* ---- main ------------------------------------------------------------ */

/* Exit status meson reads as "skipped". */
enum { EXIT_SKIP = 77 };

static int can_plan(void)
{
    xattn_attn_desc d = reference_desc(FX_UNIFORM, 0);
    xattn_plan *plan = NULL;
    xattn_status st = xattn_plan_create(g_ctx, &d, &plan);
    if (st == XATTN_OK) {
        xattn_plan_destroy(&plan);
        return 1;
    }
    fprintf(stderr, "backend %s cannot plan the reference problem: %s: %s\n",
            xattn_context_backend_name(g_ctx), xattn_status_string(st), xattn_last_error());
    return 0;
}

#define F(f) cmocka_unit_test_teardown(f, fx_teardown)

int main(void)
{
    xattn_status st = xattn_context_create(&g_ctx);
    if (st != XATTN_OK) {
        fprintf(stderr, "cannot create a context: %s: %s\n", xattn_status_string(st),
                xattn_last_error());
        return 1;
    }
    if (!can_plan()) {
        const char *require = getenv("XATTN_TEST_REQUIRE_PLAN");
        int required = require && !strcmp(require, "1");
        fprintf(stderr, "%s\n", required ? "FAILED: XATTN_TEST_REQUIRE_PLAN=1"
                                         : "SKIPPED: run-time validation needs a plan");
        xattn_context_destroy(&g_ctx);
        return required ? 1 : EXIT_SKIP;
    }
    printf("backend: %s (%s)\n", xattn_context_backend_name(g_ctx),
           xattn_context_device_name(g_ctx));

    const struct CMUnitTest tests[] = {
        F(test_run_accepts_valid_uniform_args),
        F(test_run_accepts_valid_ragged_args),
        F(test_run_accepts_valid_paged_args),
        F(test_run_accepts_valid_alibi_and_sinks),
        F(test_run_accepts_strided_q_and_o),
        F(test_run_accepts_lse_transposed_view),

        F(test_run_rejects_null_plan),
        F(test_run_rejects_null_args),
        F(test_run_rejects_absent_q),
        F(test_run_rejects_absent_v),
        F(test_run_rejects_absent_o),

        F(test_run_rejects_q_dtype_differing_from_plan),
        F(test_run_rejects_k_dtype_differing_from_q),
        F(test_run_rejects_i32_q),
        F(test_run_rejects_o_dtype_differing_from_plan),
        F(test_run_rejects_lse_not_f32),

        F(test_run_rejects_q_wrong_rank),
        F(test_run_rejects_q_head_count_differing_from_plan),
        F(test_run_rejects_k_head_count_differing_from_plan),
        F(test_run_rejects_v_head_dim_differing_from_plan),
        F(test_run_rejects_batch_above_plan),
        F(test_run_rejects_seqlen_q_above_plan),
        F(test_run_rejects_seqlen_k_above_plan),
        F(test_run_rejects_o_shape_differing_from_q),
        F(test_run_rejects_v_token_count_differing_from_k),
        F(test_run_rejects_lse_wrong_shape),

        F(test_run_rejects_q_innermost_stride_not_one),
        F(test_run_rejects_o_innermost_stride_not_one),
        F(test_run_rejects_lse_strides_overlapping),
        F(test_run_rejects_lse_zero_stride),
        F(test_run_rejects_q_head_stride_smaller_than_head_dim),
        F(test_run_rejects_o_token_stride_overlapping_heads),
        F(test_run_rejects_misaligned_tensor_offset),
        F(test_run_rejects_negative_token_count),
        F(test_run_rejects_o_overlapping_q),
        F(test_run_rejects_lse_overlapping_o),
        F(test_run_rejects_buffer_from_another_context),
        F(test_run_rejects_o_outside_buffer),
        F(test_run_rejects_k_offset_past_buffer_end),
        F(test_run_rejects_v_strides_reaching_past_buffer),
        F(test_run_rejects_lse_outside_buffer),

        F(test_run_rejects_missing_lse_with_lse_flag),
        F(test_run_rejects_lse_without_lse_flag),
        F(test_run_rejects_alibi_flag_without_slopes),
        F(test_run_rejects_alibi_slopes_without_flag),
        F(test_run_rejects_alibi_slopes_wrong_length),
        F(test_run_rejects_sinks_flag_without_sinks),
        F(test_run_rejects_sinks_without_flag),
        F(test_run_rejects_cu_seqlens_q_with_uniform_q),
        F(test_run_rejects_block_table_with_contiguous_kv),

        F(test_run_rejects_missing_cu_seqlens_q),
        F(test_run_rejects_cu_seqlens_q_not_monotonic),
        F(test_run_rejects_cu_seqlens_q_last_not_total_rows),
        F(test_run_rejects_cu_seqlens_q_first_not_zero),
        F(test_run_rejects_cu_seqlens_q_sequence_above_seqlen_q),
        F(test_run_rejects_cu_seqlens_q_jumping_to_int32_min),
        F(test_run_rejects_cu_seqlens_q_wrong_length),
        F(test_run_rejects_cu_seqlens_q_not_i32),
        F(test_run_rejects_cu_seqlens_k_not_monotonic),
        F(test_run_rejects_cu_seqlens_k_last_not_total_rows),
        F(test_run_rejects_missing_cu_seqlens_k),

        F(test_run_rejects_block_table_entry_negative),
        F(test_run_rejects_block_table_entry_at_num_pages),
        F(test_run_rejects_seqlens_k_beyond_max_pages_times_page_size),
        F(test_run_rejects_seqlens_k_above_plan),
        F(test_run_rejects_negative_seqlens_k),
        F(test_run_rejects_missing_block_table),
        F(test_run_rejects_missing_seqlens_k),
        F(test_run_rejects_block_table_wrong_shape),
        F(test_run_rejects_cache_page_size_differing_from_plan),
        F(test_run_rejects_cache_page_count_differing_from_plan),

        F(test_run_rejects_workspace_too_small),
        F(test_run_rejects_workspace_offset_leaving_too_little),
        F(test_run_rejects_missing_workspace),
        F(test_run_rejects_misaligned_workspace_offset),

        F(test_plan_describe_rejects_null_plan),
        F(test_plan_describe_rejects_null_buffer_with_size),
        F(test_plan_workspace_size_of_null_plan_is_zero),
        F(test_plan_describe_truncates_and_reports_length),
        F(test_plan_destroy_clears_handle),
    };
    int failed = cmocka_run_group_tests_name("bad run input", tests, NULL, NULL);
    xattn_context_destroy(&g_ctx);
    return failed;
}
