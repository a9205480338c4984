/* Zero-byte buffers (api/xattn_core.h): xattn_buffer_alloc(ctx, 0) and
 * xattn_buffer_wrap(ctx, ptr or NULL, 0) give valid buffers of size 0, so
 * empty tensors (a MoE step with T = 0, a kv_append of no rows, a merge of
 * no tokens) can live in them; every call on such tensors succeeds and
 * writes nothing. Runs on the backend XATTN_BACKEND names. */
#include "api_test.h"

#include <stdlib.h>
#include <string.h>

/* ---- the buffers themselves ---------------------------------------------- */

static void check_empty(xattn_buffer *buf)
{
    assert_non_null(buf);
    assert_int_equal(xattn_buffer_size(buf), 0);
    /* Backends take a NULL native handle for "operand absent". */
    assert_non_null(xattn_buffer_native(buf));
    unsigned char b = 0x5c;
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 0, &b, 0), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 0, &b, 0), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 0, NULL, 0), XATTN_OK);
    XT_EXPECT_ERROR(xattn_buffer_write(buf, 0, &b, 1), XATTN_ERR_INVALID_ARGUMENT, "offset",
                    "bytes");
    XT_EXPECT_ERROR(xattn_buffer_read(buf, 0, &b, 1), XATTN_ERR_INVALID_ARGUMENT, "offset",
                    "bytes");
    assert_int_equal(b, 0x5c);
}

static void test_alloc_of_zero_bytes_gives_an_empty_buffer(void **state)
{
    (void)state;
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(xt_ctx, 0, &buf), XATTN_OK);
    check_empty(buf);
    xattn_buffer *other = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(xt_ctx, 0, &other), XATTN_OK);
    assert_ptr_not_equal(xattn_buffer_native(buf), xattn_buffer_native(other));
    xattn_buffer_free(&other);
    xattn_buffer_free(&buf);
    assert_null(buf);
}

/* DLPack and NumPy describe an empty array with a NULL data pointer. */
static void test_wrap_of_null_with_zero_bytes_gives_an_empty_buffer(void **state)
{
    (void)state;
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_wrap(xt_ctx, NULL, 0, &buf), XATTN_OK);
    check_empty(buf);
    xattn_buffer_free(&buf);
}

static void test_wrap_of_a_handle_with_zero_bytes_keeps_the_handle(void **state)
{
    (void)state;
    xattn_buffer *owner = xt_buffer(xt_ctx, 64, 0x11);
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_wrap(xt_ctx, xattn_buffer_native(owner), 0, &buf), XATTN_OK);
    assert_ptr_equal(xattn_buffer_native(buf), xattn_buffer_native(owner));
    check_empty(buf);
    xattn_buffer_free(&buf);
    XT_ASSERT_UNTOUCHED(owner, 0x11); /* freeing a wrapper frees nothing */
    xattn_buffer_free(&owner);
}

/* Still no NULL with bytes: that is a missing pointer, not an empty one. */
static void test_wrap_of_null_with_bytes_is_rejected(void **state)
{
    (void)state;
    xattn_buffer *buf = NULL;
    XT_EXPECT_ERROR(xattn_buffer_wrap(xt_ctx, NULL, 1, &buf), XATTN_ERR_INVALID_ARGUMENT,
                    "native");
    assert_null(buf);
}

/* ---- empty tensors in zero-byte buffers ----------------------------------- */

enum { MAX_BUFS = 32 };
enum { HKV = 2, D = 16, PAGES = 3, PAGE_SIZE = 4 };
static xattn_buffer *bufs[MAX_BUFS];
static int nbufs;

static int free_bufs(void **state)
{
    (void)state;
    for (int i = 0; i < nbufs; i++) xattn_buffer_free(&bufs[i]);
    nbufs = 0;
    return 0;
}

static xattn_buffer *keep(xattn_buffer *b)
{
    assert_true(nbufs < MAX_BUFS);
    bufs[nbufs++] = b;
    return b;
}

/* An empty tensor in its own zero-byte buffer, made both ways in turn
 * (alloc of 0 bytes; wrap of NULL, 0 bytes). */
static xattn_tensor empty(xattn_dtype dtype, int32_t rank, int64_t d1, int64_t d2)
{
    static int flip;
    xattn_buffer *b = NULL;
    if (flip++ & 1)
        XT_ASSERT_STATUS(xattn_buffer_wrap(xt_ctx, NULL, 0, &b), XATTN_OK);
    else
        XT_ASSERT_STATUS(xattn_buffer_alloc(xt_ctx, 0, &b), XATTN_OK);
    keep(b);
    const int64_t shape[3] = {0, d1, d2};
    return xattn_tensor_contiguous(b, 0, dtype, rank, shape);
}

/* LSE [H, N] with N = 0 tokens: the empty dimension is the inner one. */
static xattn_tensor empty_lse(void)
{
    const int64_t ls[2] = {HKV, 0};
    return xattn_tensor_contiguous(empty(XATTN_F32, 1, 0, 0).buffer, 0, XATTN_F32, 2, ls);
}

/* A non-empty tensor filled with byte. */
static xattn_tensor full(xattn_dtype dtype, int32_t rank, const int64_t *shape,
                         unsigned char byte)
{
    size_t n = xt_elems(rank, shape) * xattn_dtype_size(dtype);
    xattn_buffer *b = keep(xt_buffer(xt_ctx, n, byte));
    return xattn_tensor_contiguous(b, 0, dtype, rank, shape);
}

enum { H = 16, E = 4, K = 2, I = 8, MAX_T = 4 };

/* T = 0 is a valid MoE step: every call, and the fused forward, on
 * zero-byte buffers for the [T, ...] and [R, ...] tensors. */
static void test_moe_with_zero_tokens_runs_on_zero_byte_buffers(void **state)
{
    (void)state;
    xattn_moe_desc d = xt_moe_desc(MAX_T, H, E, K, I);
    d.flags = 0; /* the route weights as they come, not renormalised */
    d.align = 4;
    xattn_moe_plan *plan = NULL;
    XT_ASSERT_STATUS(xattn_moe_plan_create(xt_ctx, &d, &plan), XATTN_OK);
    assert_int_equal(xattn_moe_rows(plan, 0), 0);
    size_t ws_bytes = xattn_moe_workspace_size(plan);
    xattn_buffer *ws = ws_bytes ? keep(xt_buffer(xt_ctx, ws_bytes, 0)) : NULL;
    const unsigned char S = XT_SENTINEL_O;
    const int64_t w1s[3] = {E, 2 * I, H}, w2s[3] = {E, H, I}, offs[1] = {E + 1};
    xattn_tensor w1 = full(XATTN_F32, 3, w1s, 0), w2 = full(XATTN_F32, 3, w2s, 0);

    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    a.logits = empty(XATTN_F32, 2, E, 0);
    a.topk_ids = empty(XATTN_I32, 2, K, 0);
    a.topk_weights = empty(XATTN_F32, 2, K, 0);
    a.workspace = ws;
    XT_ASSERT_STATUS(xattn_moe_route(plan, &a), XATTN_OK);

    memset(&a, 0, sizeof a);
    a.topk_ids = empty(XATTN_I32, 2, K, 0);
    a.x = empty(XATTN_F32, 2, H, 0);
    a.expert_offsets = full(XATTN_I32, 1, offs, S);
    a.x_perm = empty(XATTN_F32, 2, H, 0);
    a.row_token = empty(XATTN_I32, 1, 0, 0);
    a.token_row = empty(XATTN_I32, 2, K, 0);
    a.workspace = ws;
    XT_ASSERT_STATUS(xattn_moe_dispatch(plan, &a), XATTN_OK);
    XT_ASSERT_UNTOUCHED(a.expert_offsets.buffer, S);

    /* experts sees rows, not tokens: R = 0 rows after a T = 0 dispatch. */
    memset(&a, 0, sizeof a);
    a.x_perm = empty(XATTN_F32, 2, H, 0);
    const int32_t zero_offsets[E + 1] = {0};
    xattn_buffer *ob = keep(xt_buffer_i32(xt_ctx, zero_offsets, E + 1));
    a.expert_offsets = xattn_tensor_contiguous(ob, 0, XATTN_I32, 1, offs);
    a.w1 = w1;
    a.w2 = w2;
    a.y = empty(XATTN_F32, 2, H, 0);
    a.workspace = ws;
    XT_ASSERT_STATUS(xattn_moe_experts(plan, &a), XATTN_OK);

    for (int32_t accumulate = 0; accumulate <= 1; accumulate++) {
        memset(&a, 0, sizeof a);
        a.y = empty(XATTN_F32, 2, H, 0);
        a.topk_weights = empty(XATTN_F32, 2, K, 0);
        a.token_row = empty(XATTN_I32, 2, K, 0);
        a.out = empty(XATTN_F32, 2, H, 0);
        a.accumulate = accumulate;
        a.workspace = ws;
        XT_ASSERT_STATUS(xattn_moe_combine(plan, &a), XATTN_OK);

        memset(&a, 0, sizeof a);
        a.logits = empty(XATTN_F32, 2, E, 0);
        a.x = empty(XATTN_F32, 2, H, 0);
        a.w1 = w1;
        a.w2 = w2;
        a.out = empty(XATTN_F32, 2, H, 0);
        a.accumulate = accumulate;
        a.workspace = ws;
        XT_ASSERT_STATUS(xattn_moe_forward(plan, &a), XATTN_OK);
    }
    if (ws) XT_ASSERT_UNTOUCHED(ws, 0);
    xattn_moe_plan_destroy(&plan);
}

/* kv_append of no rows: new rows and slots in zero-byte buffers. */
static void test_kv_append_of_zero_rows_runs_on_zero_byte_buffers(void **state)
{
    (void)state;
    const int64_t cache[4] = {PAGES, PAGE_SIZE, HKV, D};
    xattn_tensor kc = full(XATTN_F32, 4, cache, XT_SENTINEL_O);
    xattn_tensor vc = full(XATTN_F32, 4, cache, XT_SENTINEL_O);
    xattn_tensor kn = empty(XATTN_F32, 3, HKV, D), vn = empty(XATTN_F32, 3, HKV, D);
    xattn_tensor slots = empty(XATTN_I32, 1, 0, 0);
    XT_ASSERT_STATUS(xattn_kv_append(xt_ctx, &kn, &vn, &slots, &kc, &vc), XATTN_OK);
    XT_ASSERT_STATUS(xattn_context_synchronize(xt_ctx), XATTN_OK);
    XT_ASSERT_UNTOUCHED(kc.buffer, XT_SENTINEL_O);
    XT_ASSERT_UNTOUCHED(vc.buffer, XT_SENTINEL_O);
}

/* merge_states of no tokens: every operand in a zero-byte buffer. */
static void test_merge_of_zero_tokens_runs_on_zero_byte_buffers(void **state)
{
    (void)state;
    xattn_tensor oa = empty(XATTN_F32, 3, HKV, D), ob = empty(XATTN_F32, 3, HKV, D);
    xattn_tensor o = empty(XATTN_F32, 3, HKV, D);
    xattn_tensor la = empty_lse(), lb = empty_lse(), l = empty_lse();
    XT_ASSERT_STATUS(xattn_merge_states(xt_ctx, &oa, &la, &ob, &lb, &o, &l), XATTN_OK);
    XT_ASSERT_STATUS(xattn_context_synchronize(xt_ctx), XATTN_OK);
}

/* A zero-byte wrap of memory that has bytes (here another buffer's handle)
 * is a valid operand, and that memory is never written. */
static void test_zero_byte_wrap_of_real_memory_is_never_written(void **state)
{
    (void)state;
    xattn_buffer *owner = keep(xt_buffer(xt_ctx, 256, XT_SENTINEL_O));
    xattn_buffer *b = NULL;
    XT_ASSERT_STATUS(xattn_buffer_wrap(xt_ctx, xattn_buffer_native(owner), 0, &b), XATTN_OK);
    keep(b);
    const int64_t os[3] = {0, HKV, D}, ls[2] = {HKV, 0};
    xattn_tensor o = xattn_tensor_contiguous(b, 0, XATTN_F32, 3, os);
    xattn_tensor l = xattn_tensor_contiguous(b, 0, XATTN_F32, 2, ls);
    xattn_tensor oa = empty(XATTN_F32, 3, HKV, D), ob = empty(XATTN_F32, 3, HKV, D);
    xattn_tensor la = empty_lse(), lb = empty_lse();
    XT_ASSERT_STATUS(xattn_merge_states(xt_ctx, &oa, &la, &ob, &lb, &o, &l), XATTN_OK);
    XT_ASSERT_STATUS(xattn_context_synchronize(xt_ctx), XATTN_OK);
    XT_ASSERT_UNTOUCHED(owner, XT_SENTINEL_O);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_of_zero_bytes_gives_an_empty_buffer),
        cmocka_unit_test(test_wrap_of_null_with_zero_bytes_gives_an_empty_buffer),
        cmocka_unit_test(test_wrap_of_a_handle_with_zero_bytes_keeps_the_handle),
        cmocka_unit_test(test_wrap_of_null_with_bytes_is_rejected),
        cmocka_unit_test_teardown(test_moe_with_zero_tokens_runs_on_zero_byte_buffers,
                                  free_bufs),
        cmocka_unit_test_teardown(test_kv_append_of_zero_rows_runs_on_zero_byte_buffers,
                                  free_bufs),
        cmocka_unit_test_teardown(test_merge_of_zero_tokens_runs_on_zero_byte_buffers,
                                  free_bufs),
        cmocka_unit_test_teardown(test_zero_byte_wrap_of_real_memory_is_never_written,
                                  free_bufs),
    };
    return cmocka_run_group_tests(tests, xt_ctx_setup, xt_ctx_teardown);
}
