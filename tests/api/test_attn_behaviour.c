/* Attention behaviour that the conformance catalogue cannot express
 * (api/xattn_attn.h): strides of size-1 dimensions are never used, and a
 * ragged run costs what its real lengths cost, not its plan's bounds.
 *
 * The backend comes from the environment (cpu, opencl in either kernel
 * style); inputs are small and checked against values computed here. */
#include "api_test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { D = 64 };

/* Any stride is valid on a dimension of size 1 (only index 0 exists), so
 * the largest one is: a backend that multiplied it would overflow. */
#define HUGE_STRIDE INT64_MAX

/* Every dimension but the innermost of t has size 1: give it HUGE_STRIDE. */
static void huge_outer_strides(xattn_tensor *t)
{
    for (int i = 0; i + 1 < t->rank; i++) {
        assert_int_equal(t->shape[i], 1);
        t->stride[i] = HUGE_STRIDE;
    }
}

static void read_floats(xattn_buffer *b, float *x, size_t n)
{
    XT_ASSERT_STATUS(xattn_buffer_read(b, 0, x, n * sizeof *x), XATTN_OK); /* blocking */
}

static void fill(float *x, size_t n, int salt)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 7 + (size_t)salt * 5) % 13) / 13.0f - 0.5f;
}

/* One query, one key, one head (uniform, or paged with one page of one
 * slot): O is V's row and LSE the score, whatever the outer strides. */
static void run_one_key(int paged)
{
    xattn_context *ctx = xt_context();
    float q[D], k[D], v[D], o[D], lse = 0.0f;
    fill(q, D, 1);
    fill(k, D, 2);
    fill(v, D, 3);
    xattn_attn_desc d = xt_attn_desc(1, 1, 1, 1, 1, D, XATTN_ATTN_LSE);
    if (paged) {
        d.kv_layout = XATTN_KV_PAGED;
        d.page_size = d.num_pages = d.max_pages_per_seq = 1;
    }
    xattn_plan *plan = xt_plan(ctx, &d);

    const int64_t shape4[4] = {1, 1, 1, D}, lse_shape[2] = {1, 1}, one[1] = {1};
    const int64_t table_shape[2] = {1, 1};
    const int32_t zero = 0, len = 1;
    xattn_buffer *bq = xt_buffer_f32(ctx, q, D), *bk = xt_buffer_f32(ctx, k, D);
    xattn_buffer *bv = xt_buffer_f32(ctx, v, D), *bo = xt_buffer(ctx, D * sizeof(float), 0xff);
    xattn_buffer *bl = xt_buffer(ctx, sizeof(float), 0xff);
    xattn_buffer *bt = xt_buffer_i32(ctx, &zero, 1), *bs = xt_buffer_i32(ctx, &len, 1);
    size_t ws = xattn_plan_workspace_size(plan);
    xattn_attn_args a = xt_attn_args(bq, bk, bv, bo, 4, shape4, shape4);
    a.lse = xattn_tensor_contiguous(bl, 0, XATTN_F32, 2, lse_shape);
    a.lse.stride[1] = HUGE_STRIDE;
    if (paged) {
        a.block_table = xattn_tensor_contiguous(bt, 0, XATTN_I32, 2, table_shape);
        a.seqlens_k = xattn_tensor_contiguous(bs, 0, XATTN_I32, 1, one);
        huge_outer_strides(&a.block_table);
    }
    huge_outer_strides(&a.q);
    huge_outer_strides(&a.k);
    huge_outer_strides(&a.v);
    huge_outer_strides(&a.o);
    a.lse.stride[0] = HUGE_STRIDE;
    a.workspace = ws ? xt_buffer(ctx, ws, 0) : NULL;
    XT_ASSERT_STATUS(xattn_attn_run(plan, &a), XATTN_OK);

    read_floats(bo, o, D);
    read_floats(bl, &lse, 1);
    double s = 0.0;
    for (int i = 0; i < D; i++) s += (double)q[i] * k[i];
    s /= sqrt((double)D);
    for (int i = 0; i < D; i++) assert_float_equal(o[i], v[i], 1e-6);
    assert_float_equal(lse, s, 1e-5);

    xattn_buffer *bufs[] = {bq, bk, bv, bo, bl, bt, bs, a.workspace};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
    xattn_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
}

static void test_run_ignores_strides_of_size_one_dims(void **state)
{
    (void)state;
    run_one_key(0);
}

static void test_paged_run_ignores_strides_of_size_one_dims(void **state)
{
    (void)state;
    run_one_key(1);
}

/* kv_append of one token, one head, into one page of one slot. */
static void test_kv_append_ignores_strides_of_size_one_dims(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    float k[D], v[D], got[D];
    fill(k, D, 4);
    fill(v, D, 5);
    const int64_t new_shape[3] = {1, 1, D}, cache_shape[4] = {1, 1, 1, D}, one[1] = {1};
    const int32_t slot = 0;
    xattn_buffer *bk = xt_buffer_f32(ctx, k, D), *bv = xt_buffer_f32(ctx, v, D);
    xattn_buffer *bkc = xt_buffer(ctx, D * sizeof(float), 0);
    xattn_buffer *bvc = xt_buffer(ctx, D * sizeof(float), 0);
    xattn_buffer *bs = xt_buffer_i32(ctx, &slot, 1);
    xattn_tensor kn = xattn_tensor_contiguous(bk, 0, XATTN_F32, 3, new_shape);
    xattn_tensor vn = xattn_tensor_contiguous(bv, 0, XATTN_F32, 3, new_shape);
    xattn_tensor kc = xattn_tensor_contiguous(bkc, 0, XATTN_F32, 4, cache_shape);
    xattn_tensor vc = xattn_tensor_contiguous(bvc, 0, XATTN_F32, 4, cache_shape);
    xattn_tensor sl = xattn_tensor_contiguous(bs, 0, XATTN_I32, 1, one);
    huge_outer_strides(&kn);
    huge_outer_strides(&vn);
    huge_outer_strides(&kc);
    huge_outer_strides(&vc);
    XT_ASSERT_STATUS(xattn_kv_append(ctx, &kn, &vn, &sl, &kc, &vc), XATTN_OK);
    read_floats(bkc, got, D);
    assert_memory_equal(got, k, sizeof k);
    read_floats(bvc, got, D);
    assert_memory_equal(got, v, sizeof v);
    xattn_buffer *bufs[] = {bk, bv, bkc, bvc, bs};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
    xattn_context_destroy(&ctx);
}

/* merge_states of one row, one head. */
static void test_merge_states_ignores_strides_of_size_one_dims(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    float oa[D], ob[D], o[D];
    const float la = 0.25f, lb = -1.0f;
    fill(oa, D, 6);
    fill(ob, D, 7);
    const int64_t o_shape[3] = {1, 1, D}, l_shape[2] = {1, 1};
    xattn_buffer *boa = xt_buffer_f32(ctx, oa, D), *bob = xt_buffer_f32(ctx, ob, D);
    xattn_buffer *bla = xt_buffer_f32(ctx, &la, 1), *blb = xt_buffer_f32(ctx, &lb, 1);
    xattn_buffer *bo = xt_buffer(ctx, D * sizeof(float), 0xff);
    xattn_buffer *bl = xt_buffer(ctx, sizeof(float), 0xff);
    xattn_tensor toa = xattn_tensor_contiguous(boa, 0, XATTN_F32, 3, o_shape);
    xattn_tensor tob = xattn_tensor_contiguous(bob, 0, XATTN_F32, 3, o_shape);
    xattn_tensor to = xattn_tensor_contiguous(bo, 0, XATTN_F32, 3, o_shape);
    xattn_tensor tla = xattn_tensor_contiguous(bla, 0, XATTN_F32, 2, l_shape);
    xattn_tensor tlb = xattn_tensor_contiguous(blb, 0, XATTN_F32, 2, l_shape);
    xattn_tensor tl = xattn_tensor_contiguous(bl, 0, XATTN_F32, 2, l_shape);
    xattn_tensor *all[] = {&toa, &tob, &to};
    for (int i = 0; i < 3; i++) huge_outer_strides(all[i]);
    xattn_tensor *lses[] = {&tla, &tlb, &tl};
    for (int i = 0; i < 3; i++) lses[i]->stride[0] = lses[i]->stride[1] = HUGE_STRIDE;
    XT_ASSERT_STATUS(xattn_merge_states(ctx, &toa, &tla, &tob, &tlb, &to, &tl), XATTN_OK);
    float lse;
    read_floats(bo, o, D);
    read_floats(bl, &lse, 1);
    const double m = la, e = exp((double)lb - m), den = 1.0 + e;
    assert_float_equal(lse, m + log(den), 1e-5);
    for (int i = 0; i < D; i++) assert_float_equal(o[i], (oa[i] + e * ob[i]) / den, 1e-5);
    xattn_buffer *bufs[] = {boa, bob, bla, blb, bo, bl};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
    xattn_context_destroy(&ctx);
}

/* Ragged Q: the plan's seqlen_q is a bound, and a run must cost what its
 * real lengths cost. Ten real rows under a bound of 2^29: before the work
 * was numbered from cu_seqlens_q, each run walked every tile of the bound
 * (about 10^9 empty items, seconds on the CPU backend, far longer on PoCL)
 * and these runs outlasted the test's timeout; now each takes microseconds
 * to milliseconds. The test has no clock of its own: the suite's timeout is
 * the check, and the results are checked against values computed here. */
enum { RG_B = 2, RG_HQ = 32, RG_HKV = 8, RG_D = 64, RG_TQ = 10, RG_TK = 12, RG_RUNS = 8 };
#define RG_BOUND (1 << 29)

static void test_ragged_run_costs_real_lengths_not_bound(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    xattn_attn_desc d = xt_attn_desc(RG_B, RG_BOUND, RG_TK, RG_HQ, RG_HKV, RG_D, XATTN_ATTN_LSE);
    d.q_layout = XATTN_Q_RAGGED;
    d.kv_layout = XATTN_KV_RAGGED;
    xattn_plan *plan = xt_plan(ctx, &d);
    /* Nor does planning for the bound ask for memory in its proportion. */
    size_t ws = xattn_plan_workspace_size(plan);
    assert_true(ws < ((size_t)64 << 20));

    enum { NQ = RG_TQ * RG_HQ * RG_D, NK = RG_TK * RG_HKV * RG_D };
    float *q = malloc(NQ * sizeof *q), *k = malloc(NK * sizeof *k), *v = malloc(NK * sizeof *v);
    float *o = malloc(NQ * sizeof *o), lse[RG_HQ * RG_TQ];
    assert_non_null(q);
    assert_non_null(k);
    assert_non_null(v);
    assert_non_null(o);
    fill(q, NQ, 8);
    fill(k, NK, 9);
    fill(v, NK, 10);
    const int32_t cu_q[RG_B + 1] = {0, RG_TQ, RG_TQ}, cu_k[RG_B + 1] = {0, RG_TK, RG_TK};
    const int64_t qs[3] = {RG_TQ, RG_HQ, RG_D}, ks[3] = {RG_TK, RG_HKV, RG_D};
    const int64_t cs[1] = {RG_B + 1}, ls[2] = {RG_HQ, RG_TQ};
    xattn_buffer *bq = xt_buffer_f32(ctx, q, NQ), *bk = xt_buffer_f32(ctx, k, NK);
    xattn_buffer *bv = xt_buffer_f32(ctx, v, NK), *bo = xt_buffer(ctx, NQ * sizeof(float), 0xff);
    xattn_buffer *bl = xt_buffer(ctx, sizeof lse, 0xff);
    xattn_buffer *bcq = xt_buffer_i32(ctx, cu_q, RG_B + 1);
    xattn_buffer *bck = xt_buffer_i32(ctx, cu_k, RG_B + 1);
    xattn_attn_args a = xt_attn_args(bq, bk, bv, bo, 3, qs, ks);
    a.lse = xattn_tensor_contiguous(bl, 0, XATTN_F32, 2, ls);
    a.cu_seqlens_q = xattn_tensor_contiguous(bcq, 0, XATTN_I32, 1, cs);
    a.cu_seqlens_k = xattn_tensor_contiguous(bck, 0, XATTN_I32, 1, cs);
    a.workspace = ws ? xt_buffer(ctx, ws, 0) : NULL;
    for (int r = 0; r < RG_RUNS; r++) XT_ASSERT_STATUS(xattn_attn_run(plan, &a), XATTN_OK);
    read_floats(bo, o, NQ);
    read_floats(bl, lse, RG_HQ * RG_TQ);

    const double scale = 1.0 / sqrt((double)RG_D);
    for (int i = 0; i < RG_TQ; i++)
        for (int h = 0; h < RG_HQ; h++) {
            const int kh = h / (RG_HQ / RG_HKV);
            double s[RG_TK], m = -INFINITY, sum = 0.0;
            for (int j = 0; j < RG_TK; j++) {
                s[j] = 0.0;
                for (int x = 0; x < RG_D; x++)
                    s[j] += (double)q[(i * RG_HQ + h) * RG_D + x] * k[(j * RG_HKV + kh) * RG_D + x];
                s[j] *= scale;
                if (s[j] > m) m = s[j];
            }
            for (int j = 0; j < RG_TK; j++) sum += exp(s[j] - m);
            assert_float_equal(lse[h * RG_TQ + i], m + log(sum), 1e-4);
            for (int x = 0; x < RG_D; x++) {
                double want = 0.0;
                for (int j = 0; j < RG_TK; j++)
                    want += exp(s[j] - m) / sum * v[(j * RG_HKV + kh) * RG_D + x];
                assert_float_equal(o[(i * RG_HQ + h) * RG_D + x], want, 1e-5);
            }
        }
    xattn_buffer *bufs[] = {bq, bk, bv, bo, bl, bcq, bck, a.workspace};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
    free(q);
    free(k);
    free(v);
    free(o);
    xattn_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
}

#define T(f) cmocka_unit_test_teardown(f, xt_env_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_run_ignores_strides_of_size_one_dims),
        T(test_paged_run_ignores_strides_of_size_one_dims),
        T(test_kv_append_ignores_strides_of_size_one_dims),
        T(test_merge_states_ignores_strides_of_size_one_dims),
        T(test_ragged_run_costs_real_lengths_not_bound),
    };
    return cmocka_run_group_tests_name("attention behaviour", tests, NULL, NULL);
}
