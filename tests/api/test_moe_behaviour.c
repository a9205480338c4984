/* MoE API behaviour (api/xattn_moe.h): the plan queries, T = 0 as a no-op,
 * forward as the four calls in a row (for every expert form too),
 * accumulate, dropped ids, and NaN routing inputs.
 *
 * The numerics of each primitive against the float64 reference are the
 * conformance harness's job; these cases check the contract's promises
 * that hold whatever the values are. They need a plan; a backend that
 * cannot plan is skipped (exit 77) unless XATTN_TEST_REQUIRE_PLAN=1. */
#include "api_test.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BUFFERS = 64 };

static xattn_context *g_ctx;

/* Buffers and the plan of one case, freed by the teardown. */
static struct fixture {
    xattn_moe_plan *plan;
    xattn_buffer *bufs[MAX_BUFFERS];
    int nbufs;
    uint32_t seed;
} fx;

static int fx_teardown(void **state)
{
    (void)state;
    xattn_moe_plan_destroy(&fx.plan);
    for (int i = 0; i < fx.nbufs; i++) xattn_buffer_free(&fx.bufs[i]);
    memset(&fx, 0, sizeof fx);
    return 0;
}

static xattn_moe_desc small_desc(void)
{
    xattn_moe_desc d;
    memset(&d, 0, sizeof d);
    d.max_tokens = 6;
    d.hidden = 16;
    d.num_experts = 5;
    d.top_k = 2;
    d.inter = 8;
    d.dtype = d.weight_dtype = d.logits_dtype = XATTN_F32;
    d.route = XATTN_MOE_ROUTE_SOFTMAX_TOPK;
    d.activation = XATTN_MOE_SWIGLU;
    d.flags = XATTN_MOE_RENORMALIZE;
    d.align = 4;
    return d;
}

static void fx_plan(const xattn_moe_desc *d)
{
    XT_ASSERT_STATUS(xattn_moe_plan_create(g_ctx, d, &fx.plan), XATTN_OK);
    assert_non_null(fx.plan);
}

/* A contiguous tensor in a buffer of exactly its size (64 bytes when it is
 * empty), filled with byte. */
static xattn_tensor fx_tensor(xattn_dtype dtype, int32_t rank, const int64_t *shape,
                              unsigned char byte)
{
    size_t n = 1;
    for (int32_t i = 0; i < rank; i++) n *= (size_t)shape[i];
    assert_true(fx.nbufs < MAX_BUFFERS);
    xattn_buffer *buf = xt_buffer(g_ctx, n ? n * xattn_dtype_size(dtype) : 64, byte);
    fx.bufs[fx.nbufs++] = buf;
    return xattn_tensor_contiguous(buf, 0, dtype, rank, shape);
}

/* The plan's workspace, zero-filled; NULL when it needs none. */
static xattn_buffer *fx_workspace(void)
{
    size_t ws = xattn_moe_workspace_size(fx.plan);
    if (!ws) return NULL;
    assert_true(fx.nbufs < MAX_BUFFERS);
    xattn_buffer *buf = xt_buffer(g_ctx, ws, 0);
    fx.bufs[fx.nbufs++] = buf;
    return buf;
}

static xattn_tensor fx_tensor2(xattn_dtype dtype, int64_t rows, int64_t cols, unsigned char byte)
{
    const int64_t shape[2] = {rows, cols};
    return fx_tensor(dtype, 2, shape, byte);
}

static xattn_tensor fx_tensor1(xattn_dtype dtype, int64_t n, unsigned char byte)
{
    return fx_tensor(dtype, 1, &n, byte);
}

static size_t tensor_elements(const xattn_tensor *t)
{
    size_t n = 1;
    for (int32_t i = 0; i < t->rank; i++) n *= (size_t)t->shape[i];
    return n;
}

static void write_tensor(const xattn_tensor *t, const void *src)
{
    XT_ASSERT_STATUS(xattn_buffer_write(t->buffer, t->offset, src,
                                        tensor_elements(t) * xattn_dtype_size(t->dtype)),
                     XATTN_OK);
}

static void read_tensor(const xattn_tensor *t, void *dst)
{
    XT_ASSERT_STATUS(xattn_buffer_read(t->buffer, t->offset, dst,
                                       tensor_elements(t) * xattn_dtype_size(t->dtype)),
                     XATTN_OK);
}

/* Uniform in [−1, 1) from a 32-bit LCG: reproducible without libc rand. */
static float next_uniform(void)
{
    fx.seed = fx.seed * 1664525u + 1013904223u;
    return (float)(fx.seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

/* Random finite values of the tensor's float dtype: f32 and bf16 (the high
 * half of an f32) with |v| ≤ scale; f16 built from its fields, exponent
 * 12..15 so 2^−3 ≤ |v| < 2 whatever the scale. */
static void fill_random(const xattn_tensor *t, float scale)
{
    size_t n = tensor_elements(t);
    size_t es = xattn_dtype_size(t->dtype);
    unsigned char *bytes = malloc(n * es);
    assert_non_null(bytes);
    for (size_t i = 0; i < n; i++) {
        float v = scale * next_uniform();
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        if (t->dtype == XATTN_F32) {
            memcpy(bytes + i * es, &v, es);
        } else if (t->dtype == XATTN_BF16) {
            uint16_t h = (uint16_t)(bits >> 16);
            memcpy(bytes + i * es, &h, es);
        } else { /* f16 */
            uint16_t h = (uint16_t)((bits >> 31) << 15 | (12u + (bits >> 8) % 4u) << 10 |
                                    (bits & 0x3ffu));
            memcpy(bytes + i * es, &h, es);
        }
    }
    write_tensor(t, bytes);
    free(bytes);
}

/* ---- plan queries ---------------------------------------------------- */

/* xattn_moe_rows(plan, T) = T·k + min(E, T·k)·(alignment − 1) for T in
 * [0, max_tokens], −1 outside. */
static void test_rows_follow_the_formula(void **state)
{
    (void)state;
    const int32_t aligns[] = {1, 4, 16};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        xattn_moe_desc d = small_desc();
        d.align = aligns[a];
        fx_plan(&d);
        int64_t align = xattn_moe_alignment(fx.plan);
        for (int64_t t = 0; t <= d.max_tokens; t++) {
            int64_t tk = t * d.top_k;
            int64_t want = tk + (tk < d.num_experts ? tk : d.num_experts) * (align - 1);
            assert_int_equal(xattn_moe_rows(fx.plan, t), want);
        }
        assert_int_equal(xattn_moe_rows(fx.plan, -1), -1);
        assert_int_equal(xattn_moe_rows(fx.plan, d.max_tokens + 1), -1);
        assert_int_equal(xattn_moe_rows(fx.plan, INT64_MAX), -1);
        assert_int_equal(xattn_moe_rows(fx.plan, INT64_MIN), -1);
        xattn_moe_plan_destroy(&fx.plan);
    }
    assert_int_equal(xattn_moe_rows(NULL, 0), -1);
    assert_int_equal(xattn_moe_rows(NULL, 1), -1);
}

static void test_alignment_is_the_descriptors_when_set(void **state)
{
    (void)state;
    const int32_t aligns[] = {1, 3, 16, 64, XATTN_MOE_MAX_ALIGN};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        xattn_moe_desc d = small_desc();
        d.align = aligns[a];
        fx_plan(&d);
        assert_int_equal(xattn_moe_alignment(fx.plan), aligns[a]);
        xattn_moe_plan_destroy(&fx.plan);
    }
}

static void test_alignment_zero_lets_the_planner_pick(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    d.align = 0;
    fx_plan(&d);
    int32_t align = xattn_moe_alignment(fx.plan);
    assert_true(align >= 1 && align <= XATTN_MOE_MAX_ALIGN);
}

static void test_queries_of_null_plan(void **state)
{
    (void)state;
    assert_int_equal(xattn_moe_alignment(NULL), 0);
    assert_int_equal(xattn_moe_workspace_size(NULL), 0);
}

static void test_describe_reports_length_and_truncates(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    fx_plan(&d);
    size_t needed = 0;
    XT_ASSERT_STATUS(xattn_moe_plan_describe(fx.plan, NULL, 0, &needed), XATTN_OK);
    assert_true(needed > 0);

    char *full = malloc(needed + 1);
    assert_non_null(full);
    size_t again = 0;
    XT_ASSERT_STATUS(xattn_moe_plan_describe(fx.plan, full, needed + 1, &again), XATTN_OK);
    int full_ok = again == needed && strlen(full) == needed;

    /* Every size from 1 to the full length: terminated, a prefix. */
    int small_ok = 1;
    char *small = malloc(needed + 1);
    assert_non_null(small);
    for (size_t size = 1; size <= needed; size++) {
        memset(small, 'x', needed + 1);
        XT_ASSERT_STATUS(xattn_moe_plan_describe(fx.plan, small, size, NULL), XATTN_OK);
        small_ok &= small[size - 1] == '\0' && strlen(small) == size - 1 &&
                    !strncmp(small, full, size - 1) && small[size] == 'x';
    }
    free(small);
    free(full);
    assert_true(full_ok);
    assert_true(small_ok);
}

static void test_describe_rejects_null_buffer_with_size(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    fx_plan(&d);
    size_t needed = 12345;
    XT_EXPECT_ERROR(xattn_moe_plan_describe(fx.plan, NULL, 16, &needed),
                    XATTN_ERR_INVALID_ARGUMENT, "buf");
    assert_int_equal(needed, 12345);
}

static void test_destroy_accepts_null_and_clears_handle(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    fx_plan(&d);
    xattn_moe_plan_destroy(&fx.plan);
    assert_null(fx.plan);
    xattn_moe_plan_destroy(&fx.plan); /* pointer to NULL */
    xattn_moe_plan_destroy(NULL);
}

/* ---- T = 0 ------------------------------------------------------------- */

/* Every call with T = 0 (and R = xattn_moe_rows(0) = 0 rows) returns OK and
 * writes nothing: outputs keep their sentinel. */
static void test_zero_tokens_is_a_no_op_for_every_call(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    d.route = XATTN_MOE_ROUTE_SIGMOID_GROUPED;
    d.flags |= XATTN_MOE_BIAS;
    d.num_experts = 4;
    d.n_group = 2;
    d.topk_group = 1;
    fx_plan(&d);
    const int64_t E = d.num_experts, H = d.hidden, k = d.top_k, I = d.inter;
    assert_int_equal(xattn_moe_rows(fx.plan, 0), 0);
    const unsigned char S = XT_SENTINEL_O;

    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    xattn_buffer *workspace = fx_workspace();

    a.logits = fx_tensor2(XATTN_F32, 0, E, 0);
    a.bias = fx_tensor1(XATTN_F32, E, 0);
    a.topk_ids = fx_tensor2(XATTN_I32, 0, k, S);
    a.topk_weights = fx_tensor2(XATTN_F32, 0, k, S);
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_route(fx.plan, &a), XATTN_OK);
    XT_ASSERT_UNTOUCHED(a.topk_ids.buffer, S);
    XT_ASSERT_UNTOUCHED(a.topk_weights.buffer, S);

    memset(&a, 0, sizeof a);
    a.topk_ids = fx_tensor2(XATTN_I32, 0, k, 0);
    a.x = fx_tensor2(XATTN_F32, 0, H, 0);
    a.expert_offsets = fx_tensor1(XATTN_I32, E + 1, S);
    a.x_perm = fx_tensor2(XATTN_F32, 0, H, S);
    a.row_token = fx_tensor1(XATTN_I32, 0, S);
    a.token_row = fx_tensor2(XATTN_I32, 0, k, S);
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_dispatch(fx.plan, &a), XATTN_OK);
    XT_ASSERT_UNTOUCHED(a.expert_offsets.buffer, S);
    XT_ASSERT_UNTOUCHED(a.x_perm.buffer, S);
    XT_ASSERT_UNTOUCHED(a.row_token.buffer, S);
    XT_ASSERT_UNTOUCHED(a.token_row.buffer, S);

    memset(&a, 0, sizeof a);
    a.x_perm = fx_tensor2(XATTN_F32, 0, H, 0);
    a.expert_offsets = fx_tensor1(XATTN_I32, E + 1, 0);
    const int64_t w1_shape[3] = {E, 2 * I, H}, w2_shape[3] = {E, H, I};
    a.w1 = fx_tensor(XATTN_F32, 3, w1_shape, 0);
    a.w2 = fx_tensor(XATTN_F32, 3, w2_shape, 0);
    a.y = fx_tensor2(XATTN_F32, 0, H, S);
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_experts(fx.plan, &a), XATTN_OK);
    XT_ASSERT_UNTOUCHED(a.y.buffer, S);

    xattn_tensor w1 = a.w1, w2 = a.w2;
    for (int32_t accumulate = 0; accumulate <= 1; accumulate++) {
        memset(&a, 0, sizeof a);
        a.y = fx_tensor2(XATTN_F32, 0, H, 0);
        a.topk_weights = fx_tensor2(XATTN_F32, 0, k, 0);
        a.token_row = fx_tensor2(XATTN_I32, 0, k, 0);
        a.out = fx_tensor2(XATTN_F32, 0, H, S);
        a.accumulate = accumulate;
        a.workspace = workspace;
        XT_ASSERT_STATUS(xattn_moe_combine(fx.plan, &a), XATTN_OK);
        XT_ASSERT_UNTOUCHED(a.out.buffer, S);

        memset(&a, 0, sizeof a);
        a.logits = fx_tensor2(XATTN_F32, 0, E, 0);
        a.bias = fx_tensor1(XATTN_F32, E, 0);
        a.x = fx_tensor2(XATTN_F32, 0, H, 0);
        a.w1 = w1;
        a.w2 = w2;
        a.out = fx_tensor2(XATTN_F32, 0, H, S);
        a.accumulate = accumulate;
        a.workspace = workspace;
        XT_ASSERT_STATUS(xattn_moe_forward(fx.plan, &a), XATTN_OK);
        XT_ASSERT_UNTOUCHED(a.out.buffer, S);
    }
    if (workspace) XT_ASSERT_UNTOUCHED(workspace, 0);
}

/* ---- forward = route → dispatch → experts → combine -------------------- */

/* One layer shape per routing mode, with every dtype and an alignment of
 * each kind (the planner's choice, 1, and larger than some segments). */
typedef struct forward_case {
    xattn_moe_desc desc;
    int32_t tokens;
    int32_t accumulate; /* out starts with random values and is added to */
} forward_case;

static forward_case forward_cases[] = {
    /* Mixtral-like: softmax, renormalised, planner's alignment, T < max. */
    {{.max_tokens = 9, .hidden = 32, .num_experts = 8, .top_k = 2, .inter = 16,
      .dtype = XATTN_F32, .weight_dtype = XATTN_F32, .logits_dtype = XATTN_F32,
      .route = XATTN_MOE_ROUTE_SOFTMAX_TOPK, .activation = XATTN_MOE_SWIGLU,
      .flags = XATTN_MOE_RENORMALIZE, .align = 0}, 7, 0},
    /* DeepSeek-V3-like: groups, bias, scale; bf16. */
    {{.max_tokens = 6, .hidden = 24, .num_experts = 16, .top_k = 4, .inter = 8,
      .dtype = XATTN_BF16, .weight_dtype = XATTN_BF16, .logits_dtype = XATTN_F32,
      .route = XATTN_MOE_ROUTE_SIGMOID_GROUPED, .activation = XATTN_MOE_GEGLU,
      .flags = XATTN_MOE_RENORMALIZE | XATTN_MOE_BIAS, .n_group = 4, .topk_group = 2,
      .routed_scaling_factor = 2.5f, .align = 16}, 6, 0},
    /* GPT-OSS-like: softmax over the picked logits; f16 weights, E = 12. */
    {{.max_tokens = 5, .hidden = 16, .num_experts = 12, .top_k = 4, .inter = 12,
      .dtype = XATTN_F32, .weight_dtype = XATTN_F16, .logits_dtype = XATTN_BF16,
      .route = XATTN_MOE_ROUTE_TOPK_SOFTMAX, .activation = XATTN_MOE_SWIGLU, .align = 1}, 5, 0},
    /* Llama-4-like: sigmoid of the logit, k = 1; f16 activations. */
    {{.max_tokens = 8, .hidden = 8, .num_experts = 5, .top_k = 1, .inter = 24,
      .dtype = XATTN_F16, .weight_dtype = XATTN_BF16, .logits_dtype = XATTN_F16,
      .route = XATTN_MOE_ROUTE_TOPK_SIGMOID, .activation = XATTN_MOE_GEGLU, .align = 8}, 3, 0},
    /* The Mixtral and DeepSeek layers again, adding into out. */
    {{.max_tokens = 9, .hidden = 32, .num_experts = 8, .top_k = 2, .inter = 16,
      .dtype = XATTN_F32, .weight_dtype = XATTN_F32, .logits_dtype = XATTN_F32,
      .route = XATTN_MOE_ROUTE_SOFTMAX_TOPK, .activation = XATTN_MOE_SWIGLU,
      .flags = XATTN_MOE_RENORMALIZE, .align = 0}, 9, 1},
    {{.max_tokens = 6, .hidden = 24, .num_experts = 16, .top_k = 4, .inter = 8,
      .dtype = XATTN_BF16, .weight_dtype = XATTN_BF16, .logits_dtype = XATTN_F32,
      .route = XATTN_MOE_ROUTE_SIGMOID_GROUPED, .activation = XATTN_MOE_GEGLU,
      .flags = XATTN_MOE_RENORMALIZE | XATTN_MOE_BIAS, .n_group = 4, .topk_group = 2,
      .routed_scaling_factor = 2.5f, .align = 16}, 2, 1},
    /* GPT-OSS's experts: interleaved W1, bf16 biases, the clamped SwiGLU
     * with a limit the random values reach. */
    {{.max_tokens = 5, .hidden = 16, .num_experts = 12, .top_k = 4, .inter = 12,
      .dtype = XATTN_BF16, .weight_dtype = XATTN_BF16, .logits_dtype = XATTN_BF16,
      .route = XATTN_MOE_ROUTE_TOPK_SOFTMAX, .activation = XATTN_MOE_SWIGLU_CLAMPED,
      .flags = XATTN_MOE_W1_INTERLEAVED | XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2,
      .align = 1, .swiglu_limit = 0.25f, .bias_dtype = XATTN_BF16}, 5, 0},
    /* Llama-4's weights on the input, adding into out; and with k = 2. */
    {{.max_tokens = 8, .hidden = 8, .num_experts = 5, .top_k = 1, .inter = 24,
      .dtype = XATTN_F16, .weight_dtype = XATTN_BF16, .logits_dtype = XATTN_F16,
      .route = XATTN_MOE_ROUTE_TOPK_SIGMOID, .activation = XATTN_MOE_SWIGLU,
      .flags = XATTN_MOE_WEIGHTS_ON_INPUT, .align = 8}, 7, 1},
    {{.max_tokens = 9, .hidden = 32, .num_experts = 8, .top_k = 2, .inter = 16,
      .dtype = XATTN_F32, .weight_dtype = XATTN_F32, .logits_dtype = XATTN_F32,
      .route = XATTN_MOE_ROUTE_SOFTMAX_TOPK, .activation = XATTN_MOE_SWIGLU,
      .flags = XATTN_MOE_RENORMALIZE | XATTN_MOE_WEIGHTS_ON_INPUT | XATTN_MOE_EXPERT_B2,
      .align = 0}, 9, 0},
};

/* Bytes of out after forward and after the four calls (with accumulate:
 * combine accumulating into the same starting out). The contract gives
 * forward no latitude: it runs the same four primitives on the same values,
 * with the same row count and its intermediates in the same dtypes, and
 * every CPU kernel partitions its work independently of timing. So the
 * results must be equal bit for bit, for every dtype. */
static void test_forward_equals_the_four_calls(void **state)
{
    const forward_case *c = *state;
    const xattn_moe_desc *d = &c->desc;
    fx_plan(d);
    fx.seed = 12345u;
    const int64_t T = c->tokens, E = d->num_experts, H = d->hidden, k = d->top_k, I = d->inter;
    const int64_t R = xattn_moe_rows(fx.plan, T);
    assert_true(R > 0);

    xattn_tensor logits = fx_tensor2(d->logits_dtype, T, E, 0);
    xattn_tensor bias = {0};
    if (d->flags & XATTN_MOE_BIAS) {
        bias = fx_tensor1(XATTN_F32, E, 0);
        fill_random(&bias, 0.5f);
    }
    xattn_tensor x = fx_tensor2(d->dtype, T, H, 0);
    const int64_t w1_shape[3] = {E, 2 * I, H}, w2_shape[3] = {E, H, I};
    xattn_tensor w1 = fx_tensor(d->weight_dtype, 3, w1_shape, 0);
    xattn_tensor w2 = fx_tensor(d->weight_dtype, 3, w2_shape, 0);
    fill_random(&logits, 3.0f);
    fill_random(&x, 1.0f);
    fill_random(&w1, 0.5f);
    fill_random(&w2, 0.5f);
    xattn_tensor b1 = {0}, b2 = {0};
    if (d->flags & XATTN_MOE_EXPERT_B1) {
        b1 = fx_tensor2(d->bias_dtype, E, 2 * I, 0);
        fill_random(&b1, 0.5f);
    }
    if (d->flags & XATTN_MOE_EXPERT_B2) {
        b2 = fx_tensor2(d->bias_dtype, E, H, 0);
        fill_random(&b2, 0.5f);
    }
    const int on_input = (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0;
    xattn_buffer *workspace = fx_workspace();

    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    a.logits = logits;
    a.bias = bias;
    a.topk_ids = fx_tensor2(XATTN_I32, T, k, 0);
    a.topk_weights = fx_tensor2(XATTN_F32, T, k, 0);
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_route(fx.plan, &a), XATTN_OK);
    xattn_tensor topk_ids = a.topk_ids, topk_weights = a.topk_weights;

    memset(&a, 0, sizeof a);
    a.topk_ids = topk_ids;
    if (on_input) a.topk_weights = topk_weights;
    a.x = x;
    a.expert_offsets = fx_tensor1(XATTN_I32, E + 1, 0);
    a.x_perm = fx_tensor2(d->dtype, R, H, 0);
    a.row_token = fx_tensor1(XATTN_I32, R, 0);
    a.token_row = fx_tensor2(XATTN_I32, T, k, 0);
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_dispatch(fx.plan, &a), XATTN_OK);
    xattn_tensor expert_offsets = a.expert_offsets, x_perm = a.x_perm, token_row = a.token_row;

    memset(&a, 0, sizeof a);
    a.x_perm = x_perm;
    a.expert_offsets = expert_offsets;
    a.w1 = w1;
    a.w2 = w2;
    a.b1 = b1;
    a.b2 = b2;
    a.y = fx_tensor2(d->dtype, R, H, 0);
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_experts(fx.plan, &a), XATTN_OK);
    xattn_tensor y = a.y;

    memset(&a, 0, sizeof a);
    a.y = y;
    if (!on_input) a.topk_weights = topk_weights;
    a.token_row = token_row;
    a.out = fx_tensor2(d->dtype, T, H, XT_SENTINEL_O);
    const uint32_t out_seed = fx.seed;
    if (c->accumulate) fill_random(&a.out, 2.0f);
    a.accumulate = c->accumulate;
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_combine(fx.plan, &a), XATTN_OK);
    xattn_tensor out_calls = a.out;

    memset(&a, 0, sizeof a);
    a.logits = logits;
    a.bias = bias;
    a.x = x;
    a.w1 = w1;
    a.w2 = w2;
    a.b1 = b1;
    a.b2 = b2;
    a.out = fx_tensor2(d->dtype, T, H, XT_SENTINEL_O);
    if (c->accumulate) { /* the same starting values as combine's */
        fx.seed = out_seed;
        fill_random(&a.out, 2.0f);
    }
    a.accumulate = c->accumulate;
    a.workspace = workspace;
    XT_ASSERT_STATUS(xattn_moe_forward(fx.plan, &a), XATTN_OK);
    xattn_tensor out_forward = a.out;

    size_t bytes = (size_t)(T * H) * xattn_dtype_size(d->dtype);
    unsigned char *got_calls = malloc(bytes), *got_forward = malloc(bytes);
    assert_non_null(got_calls);
    assert_non_null(got_forward);
    read_tensor(&out_calls, got_calls);
    read_tensor(&out_forward, got_forward);
    size_t first_diff = bytes;
    for (size_t i = 0; i < bytes && first_diff == bytes; i++)
        if (got_calls[i] != got_forward[i]) first_diff = i;
    /* Equal is only worth something if out was computed: every element
     * overwritten (no sentinel left), not all zero. */
    size_t es = xattn_dtype_size(d->dtype), unwritten = 0, nonzero = 0;
    for (size_t i = 0; i < bytes; i += es) {
        size_t sentinel = 0;
        for (size_t b = 0; b < es; b++) {
            sentinel += got_forward[i + b] == XT_SENTINEL_O;
            nonzero += got_forward[i + b] != 0;
        }
        unwritten += sentinel == es;
    }
    free(got_calls);
    free(got_forward);
    if (first_diff < bytes)
        fail_msg("forward differs from the four calls at byte %zu of out (%s)", first_diff,
                 xattn_dtype_name(d->dtype));
    if (!c->accumulate) assert_int_equal(unwritten, 0);
    assert_true(nonzero > 0);
}

/* ---- NaN routing inputs ------------------------------------------------------ */

/* NaN in, NaN out (api/xattn_moe.h), in every route mode: token 0 has a
 * NaN where its largest logit would be, token 1 only NaN, token 2 none.
 * Route: tokens 0 and 1 get k distinct valid ids, the NaN ranking last
 * (token 0: the k best of the others; token 1: experts 0..k−1), and every
 * weight NaN; token 2 is routed as it would be alone (finite weights).
 * Forward, with the weights on the output and on the input: out rows 0
 * and 1 are all NaN, row 2 all finite. */
enum { NAN_TOKENS = 3, NAN_EXPERTS = 8, NAN_K = 3 };

static void test_nan_logits_route_last_and_reach_the_output(void **state)
{
    (void)state;
    const xattn_moe_route_mode modes[] = {XATTN_MOE_ROUTE_SOFTMAX_TOPK,
                                          XATTN_MOE_ROUTE_TOPK_SOFTMAX,
                                          XATTN_MOE_ROUTE_SIGMOID_GROUPED,
                                          XATTN_MOE_ROUTE_TOPK_SIGMOID};
    /* Token 0: expert 5 (NaN) would lead; the rest rank 2, 7, 0, ... */
    float logits[NAN_TOKENS * NAN_EXPERTS] = {
        1.0f, -1.0f, 3.0f, -2.0f, 0.5f, NAN, -0.5f, 2.0f,
        NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN,
        0.25f, 1.5f, -1.0f, 2.5f, 0.0f, -3.0f, 1.0f, 0.75f,
    };
    const int32_t want0[NAN_K] = {2, 7, 0}, want1[NAN_K] = {0, 1, 2};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        for (int on_input = 0; on_input <= 1; on_input++) {
            xattn_moe_desc d = small_desc();
            d.max_tokens = NAN_TOKENS;
            d.num_experts = NAN_EXPERTS;
            d.top_k = NAN_K;
            d.route = modes[m];
            d.flags = on_input ? XATTN_MOE_WEIGHTS_ON_INPUT : 0;
            if (modes[m] == XATTN_MOE_ROUTE_SIGMOID_GROUPED) d.n_group = 1, d.topk_group = 1;
            fx_plan(&d);
            xattn_tensor l = fx_tensor2(XATTN_F32, NAN_TOKENS, NAN_EXPERTS, 0);
            write_tensor(&l, logits);
            xattn_buffer *ws = fx_workspace();

            xattn_moe_args a;
            memset(&a, 0, sizeof a);
            a.logits = l;
            a.topk_ids = fx_tensor2(XATTN_I32, NAN_TOKENS, NAN_K, 0);
            a.topk_weights = fx_tensor2(XATTN_F32, NAN_TOKENS, NAN_K, 0);
            a.workspace = ws;
            XT_ASSERT_STATUS(xattn_moe_route(fx.plan, &a), XATTN_OK);
            int32_t ids[NAN_TOKENS * NAN_K];
            float w[NAN_TOKENS * NAN_K];
            read_tensor(&a.topk_ids, ids);
            read_tensor(&a.topk_weights, w);
            for (int j = 0; j < NAN_K; j++) {
                if (ids[j] != want0[j] || ids[NAN_K + j] != want1[j])
                    fail_msg("route mode %d, slot %d: experts %d and %d, want %d and %d",
                             (int)modes[m], j, ids[j], ids[NAN_K + j], want0[j], want1[j]);
                if (!isnan(w[j]) || !isnan(w[NAN_K + j]))
                    fail_msg("route mode %d, slot %d: weights %g and %g, want NaN",
                             (int)modes[m], j, (double)w[j], (double)w[NAN_K + j]);
                if (!isfinite(w[2 * NAN_K + j]))
                    fail_msg("route mode %d: token 2 (no NaN) has weight %g", (int)modes[m],
                             (double)w[2 * NAN_K + j]);
            }

            const int64_t w1_shape[3] = {NAN_EXPERTS, 2 * d.inter, d.hidden};
            const int64_t w2_shape[3] = {NAN_EXPERTS, d.hidden, d.inter};
            memset(&a, 0, sizeof a);
            a.logits = l;
            a.x = fx_tensor2(XATTN_F32, NAN_TOKENS, d.hidden, 0);
            a.w1 = fx_tensor(XATTN_F32, 3, w1_shape, 0);
            a.w2 = fx_tensor(XATTN_F32, 3, w2_shape, 0);
            fill_random(&a.x, 1.0f);
            fill_random(&a.w1, 0.5f);
            fill_random(&a.w2, 0.5f);
            a.out = fx_tensor2(XATTN_F32, NAN_TOKENS, d.hidden, 0);
            a.workspace = ws;
            XT_ASSERT_STATUS(xattn_moe_forward(fx.plan, &a), XATTN_OK);
            float out[NAN_TOKENS * 16];
            assert_true(d.hidden <= 16);
            read_tensor(&a.out, out);
            for (int32_t i = 0; i < d.hidden; i++)
                if (!isnan(out[i]) || !isnan(out[d.hidden + i]) || !isfinite(out[2 * d.hidden + i]))
                    fail_msg("forward, route mode %d, weights on the %s: out[., %d] = %g, %g, "
                             "%g; want NaN, NaN, finite", (int)modes[m],
                             on_input ? "input" : "output", (int)i, (double)out[i],
                             (double)out[d.hidden + i], (double)out[2 * d.hidden + i]);
            fx_teardown(NULL);
        }
    }
}

/* ---- accumulate ---------------------------------------------------------- */

/* Tolerance of out += result against the host's v + r: both sides are
 * fp32 roundings of the same exact sum of v and k products, so they differ
 * by a few ulps of |v| + Σ|w·y| (8 ulps: under 1e-6 relative). */
static int close_to_sum(float got, float v, float r, float magnitude)
{
    return fabsf(got - (v + r)) <= 8.0f * FLT_EPSILON * (fabsf(v) + magnitude);
}

/* combine with accumulate adds into out: out = v + Σ w·y, where Σ w·y is
 * what the same call writes without accumulate. */
static void test_combine_accumulate_adds_to_out(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    fx_plan(&d);
    fx.seed = 777u;
    const int64_t T = d.max_tokens, H = d.hidden, k = d.top_k;
    const int64_t R = xattn_moe_rows(fx.plan, T);

    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    a.y = fx_tensor2(XATTN_F32, R, H, 0);
    a.topk_weights = fx_tensor2(XATTN_F32, T, k, 0);
    a.token_row = fx_tensor2(XATTN_I32, T, k, 0);
    a.out = fx_tensor2(XATTN_F32, T, H, 0);
    a.workspace = fx_workspace();
    fill_random(&a.y, 2.0f);
    fill_random(&a.topk_weights, 1.0f);
    int32_t *rows = malloc((size_t)(T * k) * sizeof *rows);
    assert_non_null(rows);
    for (int64_t i = 0; i < T * k; i++) rows[i] = i % 5 == 3 ? -1 : (int32_t)((i * 7) % R);
    write_tensor(&a.token_row, rows);

    size_t n = (size_t)(T * H);
    float *plain = malloc(n * sizeof *plain), *base = malloc(n * sizeof *base);
    float *summed = malloc(n * sizeof *summed), *y = malloc((size_t)(R * H) * sizeof *y);
    float *w = malloc((size_t)(T * k) * sizeof *w);
    assert_true(plain && base && summed && y && w);
    XT_ASSERT_STATUS(xattn_moe_combine(fx.plan, &a), XATTN_OK);
    read_tensor(&a.out, plain);

    fill_random(&a.out, 4.0f);
    read_tensor(&a.out, base);
    a.accumulate = 1;
    XT_ASSERT_STATUS(xattn_moe_combine(fx.plan, &a), XATTN_OK);
    read_tensor(&a.out, summed);
    read_tensor(&a.y, y);
    read_tensor(&a.topk_weights, w);

    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++) {
        int64_t t = (int64_t)i / H, h = (int64_t)i % H;
        float magnitude = 0.0f; /* Σ |w·y| of the terms */
        for (int64_t j = 0; j < k; j++)
            if (rows[t * k + j] >= 0) magnitude += fabsf(w[t * k + j] * y[rows[t * k + j] * H + h]);
        if (!close_to_sum(summed[i], base[i], plain[i], magnitude)) bad = i;
    }
    float got = bad < n ? summed[bad] : 0, want = bad < n ? base[bad] + plain[bad] : 0;
    free(rows);
    free(plain);
    free(base);
    free(summed);
    free(y);
    free(w);
    if (bad < n) fail_msg("out[%zu] = %g after accumulate, expected %g", bad, got, want);
}

/* ---- dropped ids (−1) ------------------------------------------------------ */

/* Dispatch leaves a dropped pair out: token_row −1, no row for it, and the
 * expert segments count only the pairs kept. */
static void test_dispatch_leaves_dropped_pairs_out(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    fx_plan(&d);
    fx.seed = 99u;
    enum { T = 3, K = 2, E = 5 };
    assert_int_equal(d.top_k, K);
    assert_int_equal(d.num_experts, E);
    const int64_t H = d.hidden, align = xattn_moe_alignment(fx.plan);
    const int64_t R = xattn_moe_rows(fx.plan, T);
    /* Token 0 keeps one pair, token 1 none, token 2 both. */
    const int32_t ids[T * K] = {-1, 3, -1, -1, 3, 0};

    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    a.topk_ids = fx_tensor2(XATTN_I32, T, K, 0);
    write_tensor(&a.topk_ids, ids);
    a.x = fx_tensor2(XATTN_F32, T, H, 0);
    fill_random(&a.x, 1.0f);
    a.expert_offsets = fx_tensor1(XATTN_I32, E + 1, XT_SENTINEL_O);
    a.x_perm = fx_tensor2(XATTN_F32, R, H, XT_SENTINEL_O);
    a.row_token = fx_tensor1(XATTN_I32, R, XT_SENTINEL_O);
    a.token_row = fx_tensor2(XATTN_I32, T, K, XT_SENTINEL_O);
    a.workspace = fx_workspace();
    XT_ASSERT_STATUS(xattn_moe_dispatch(fx.plan, &a), XATTN_OK);

    int32_t offsets[E + 1], token_row[T * K];
    int32_t *row_token = malloc((size_t)R * sizeof *row_token);
    float *x = malloc((size_t)(T * H) * sizeof *x);
    unsigned char *x_perm = malloc((size_t)(R * H) * sizeof(float));
    assert_true(row_token && x && x_perm);
    read_tensor(&a.expert_offsets, offsets);
    read_tensor(&a.token_row, token_row);
    read_tensor(&a.row_token, row_token);
    read_tensor(&a.x, x);
    read_tensor(&a.x_perm, x_perm);

    /* Kept: expert 0 one row (token 2), expert 3 two rows (tokens 0, 2). */
    const int32_t want_offsets[E + 1] = {0, (int32_t)align, (int32_t)align, (int32_t)align,
                                         (int32_t)(2 * align), (int32_t)(2 * align)};
    int offsets_ok = !memcmp(offsets, want_offsets, sizeof offsets);
    int dropped_ok = token_row[0] == -1 && token_row[2] == -1 && token_row[3] == -1;
    int kept_ok = token_row[1] == (int32_t)align && token_row[4] == (int32_t)align + 1 &&
                  token_row[5] == 0;
    /* Row r holds x of its token, padding rows zeros, rows past the last
     * segment are not written (still the sentinel). */
    int rows_ok = 1, x_perm_ok = 1;
    const size_t row_bytes = (size_t)H * sizeof(float);
    float zeros[64] = {0};
    assert_true(H <= 64);
    for (int64_t r = 0; r < R; r++) {
        int32_t want = r == 0 ? 2 : r == align ? 0 : r == align + 1 ? 2 : -1;
        rows_ok &= row_token[r] == want;
        const unsigned char *row = x_perm + (size_t)r * row_bytes;
        if (want >= 0)
            x_perm_ok &= !memcmp(row, x + want * H, row_bytes);
        else if (r < 2 * align)
            x_perm_ok &= !memcmp(row, zeros, row_bytes);
        else
            for (size_t i = 0; i < row_bytes; i++) x_perm_ok &= row[i] == XT_SENTINEL_O;
    }
    free(row_token);
    free(x);
    free(x_perm);
    assert_true(offsets_ok);
    assert_true(dropped_ok);
    assert_true(kept_ok);
    assert_true(rows_ok);
    assert_true(x_perm_ok);
}

/* Combine sums over the pairs with token_row ≥ 0 only: a dropped pair's
 * weight and the rows nobody points at take no part, even as NaN. */
static void test_combine_ignores_dropped_pairs(void **state)
{
    (void)state;
    xattn_moe_desc d = small_desc();
    fx_plan(&d);
    fx.seed = 31337u;
    enum { T = 3, K = 2 };
    assert_int_equal(d.top_k, K);
    const int64_t H = d.hidden;
    const int64_t R = xattn_moe_rows(fx.plan, T);
    const int32_t token_row[T * K] = {-1, 1, -1, -1, 4, 2};
    const float weights[T * K] = {NAN, 0.75f, INFINITY, NAN, 0.5f, -1.25f};

    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    a.y = fx_tensor2(XATTN_F32, R, H, 0);
    a.topk_weights = fx_tensor2(XATTN_F32, T, K, 0);
    a.token_row = fx_tensor2(XATTN_I32, T, K, 0);
    a.out = fx_tensor2(XATTN_F32, T, H, XT_SENTINEL_O);
    a.workspace = fx_workspace();
    float *y = malloc((size_t)(R * H) * sizeof *y);
    assert_non_null(y);
    for (int64_t i = 0; i < R * H; i++) y[i] = NAN; /* rows 1, 2 and 4 get values */
    for (int64_t h = 0; h < H; h++) {
        y[1 * H + h] = next_uniform();
        y[2 * H + h] = next_uniform();
        y[4 * H + h] = next_uniform();
    }
    write_tensor(&a.y, y);
    write_tensor(&a.topk_weights, weights);
    write_tensor(&a.token_row, token_row);
    XT_ASSERT_STATUS(xattn_moe_combine(fx.plan, &a), XATTN_OK);
    float out[T * 64];
    assert_true(H <= 64);
    read_tensor(&a.out, out);

    /* One term is one product, rounded once; two terms may be summed in
     * either order (fp32). Token 1 has none: exactly zero. */
    int ok = 1;
    for (int64_t h = 0; h < H; h++) {
        float one = 0.75f * y[1 * H + h];
        float two = 0.5f * y[4 * H + h] + -1.25f * y[2 * H + h];
        float two_bound = 4.0f * FLT_EPSILON *
                          (fabsf(0.5f * y[4 * H + h]) + fabsf(1.25f * y[2 * H + h]));
        ok &= out[0 * H + h] == one;
        ok &= out[1 * H + h] == 0.0f;
        ok &= fabsf(out[2 * H + h] - two) <= two_bound;
    }
    free(y);
    assert_true(ok);
}

/* ---- main ------------------------------------------------------------ */

/* Exit status meson reads as "skipped". */
enum { EXIT_SKIP = 77 };

static int can_plan(void)
{
    xattn_moe_desc d = small_desc();
    xattn_moe_plan *plan = NULL;
    xattn_status st = xattn_moe_plan_create(g_ctx, &d, &plan);
    if (st == XATTN_OK) {
        xattn_moe_plan_destroy(&plan);
        return 1;
    }
    fprintf(stderr, "backend %s cannot plan a MoE layer: %s: %s\n",
            xattn_context_backend_name(g_ctx), xattn_status_string(st), xattn_last_error());
    return 0;
}

#define F(f) cmocka_unit_test_teardown(f, fx_teardown)
#define FORWARD(i, name) \
    {"test_forward_equals_the_four_calls/" name, test_forward_equals_the_four_calls, NULL, \
     fx_teardown, &forward_cases[i]}

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
                                         : "SKIPPED: MoE behaviour needs a plan");
        xattn_context_destroy(&g_ctx);
        return required ? 1 : EXIT_SKIP;
    }
    printf("backend: %s (%s)\n", xattn_context_backend_name(g_ctx),
           xattn_context_device_name(g_ctx));

    const struct CMUnitTest tests[] = {
        F(test_rows_follow_the_formula),
        F(test_alignment_is_the_descriptors_when_set),
        F(test_alignment_zero_lets_the_planner_pick),
        F(test_queries_of_null_plan),
        F(test_describe_reports_length_and_truncates),
        F(test_describe_rejects_null_buffer_with_size),
        F(test_destroy_accepts_null_and_clears_handle),
        F(test_zero_tokens_is_a_no_op_for_every_call),
        FORWARD(0, "mixtral_f32"),
        FORWARD(1, "deepseek_bf16"),
        FORWARD(2, "gpt_oss_f16_weights"),
        FORWARD(3, "llama4_f16"),
        FORWARD(4, "mixtral_f32_accumulate"),
        FORWARD(5, "deepseek_bf16_accumulate"),
        FORWARD(6, "gpt_oss_experts_bf16"),
        FORWARD(7, "llama4_weights_on_input_f16_accumulate"),
        FORWARD(8, "mixtral_weights_on_input_b2_f32"),
        F(test_nan_logits_route_last_and_reach_the_output),
        F(test_combine_accumulate_adds_to_out),
        F(test_dispatch_leaves_dropped_pairs_out),
        F(test_combine_ignores_dropped_pairs),
    };
    int failed = cmocka_run_group_tests_name("MoE behaviour", tests, NULL, NULL);
    xattn_context_destroy(&g_ctx);
    return failed;
}
