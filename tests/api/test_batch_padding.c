/* Batch padding (api/xattn_attn.h, xattn_attn_desc): a run takes exactly
 * desc.batch sequences; fewer are run by padding with empty sequences
 * (seqlens_k = 0, no rows in cu_seqlens_q), and block-table entries past a
 * sequence's pages are never read. Paged K/V, uniform and ragged Q, on the
 * backend XATTN_BACKEND names. */
#include "api_test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Three sequences: 7 keys (2 of 4 pages), 16 keys (every page), and a
 * padding sequence with none. */
enum { B = 3, SQ = 2, HQ = 2, HKV = 1, D = 64, PAGE_SIZE = 4, PAGES = 8, MAX_PAGES = 4 };
enum { PAD = 2, TOTAL_Q_RAGGED = 4 };
static const int32_t seqlens[B] = {7, 16, 0};
static const int32_t used_pages[B] = {2, 4, 0};
/* Pages of the used entries; the unused ones are filled per run. */
static const int32_t pages_of[B][MAX_PAGES] = {{5, 2, 0, 0}, {0, 7, 3, 1}, {0, 0, 0, 0}};

static xattn_context *g_ctx;

static int setup(void **state)
{
    (void)state;
    return xattn_context_create(&g_ctx) == XATTN_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    xattn_context_destroy(&g_ctx);
    return 0;
}

static xattn_buffer *random_f32(size_t n, uint32_t seed)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    xattn_buffer *b = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(g_ctx, n * sizeof *v, &b), XATTN_OK);
    xattn_status st = xattn_buffer_write(b, 0, v, n * sizeof *v);
    free(v);
    XT_ASSERT_STATUS(st, XATTN_OK);
    return b;
}

typedef struct run_result {
    float o[B * SQ * HQ * D];
    float lse[HQ * B * SQ];
} run_result;

/* One run with the unused block-table entries set to unused; total_q rows
 * of O and LSE come back. */
static void run(int ragged, int32_t unused, run_result *r)
{
    const int64_t total_q = ragged ? TOTAL_Q_RAGGED : B * SQ;
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = XATTN_F32;
    d.batch = B;
    d.num_q_heads = HQ;
    d.num_kv_heads = HKV;
    d.head_dim_qk = d.head_dim_v = D;
    d.q_layout = ragged ? XATTN_Q_RAGGED : XATTN_Q_UNIFORM;
    d.kv_layout = XATTN_KV_PAGED;
    d.seqlen_q = SQ;
    d.seqlen_k = PAGE_SIZE * MAX_PAGES;
    d.page_size = PAGE_SIZE;
    d.num_pages = PAGES;
    d.max_pages_per_seq = MAX_PAGES;
    d.flags = XATTN_ATTN_LSE;
    xattn_plan *plan = NULL;
    XT_ASSERT_STATUS(xattn_plan_create(g_ctx, &d, &plan), XATTN_OK);

    int32_t table[B][MAX_PAGES];
    for (int b = 0; b < B; b++)
        for (int p = 0; p < MAX_PAGES; p++)
            table[b][p] = p < used_pages[b] ? pages_of[b][p] : unused;
    const int32_t cu_q[B + 1] = {0, SQ, 2 * SQ, 2 * SQ}; /* the padding: no rows */

    xattn_buffer *q = random_f32((size_t)total_q * HQ * D, 1);
    xattn_buffer *kc = random_f32(PAGES * PAGE_SIZE * HKV * D, 2);
    xattn_buffer *vc = random_f32(PAGES * PAGE_SIZE * HKV * D, 3);
    xattn_buffer *o = xt_buffer(g_ctx, (size_t)total_q * HQ * D * sizeof(float), XT_SENTINEL_O);
    xattn_buffer *lse = xt_buffer(g_ctx, (size_t)HQ * total_q * sizeof(float), XT_SENTINEL_LSE);
    xattn_buffer *bt = xt_buffer_i32(g_ctx, &table[0][0], B * MAX_PAGES);
    xattn_buffer *sk = xt_buffer_i32(g_ctx, seqlens, B);
    xattn_buffer *cq = xt_buffer_i32(g_ctx, cu_q, B + 1);
    size_t ws_bytes = xattn_plan_workspace_size(plan);
    xattn_buffer *ws = ws_bytes ? xt_buffer(g_ctx, ws_bytes, 0) : NULL;

    xattn_attn_args a;
    memset(&a, 0, sizeof a);
    const int64_t qu[4] = {B, SQ, HQ, D}, qr[3] = {total_q, HQ, D};
    const int64_t cs[4] = {PAGES, PAGE_SIZE, HKV, D}, ls[2] = {HQ, total_q};
    const int64_t bs[2] = {B, MAX_PAGES}, ss[1] = {B}, cqs[1] = {B + 1};
    a.q = ragged ? xattn_tensor_contiguous(q, 0, XATTN_F32, 3, qr)
                 : xattn_tensor_contiguous(q, 0, XATTN_F32, 4, qu);
    a.o = ragged ? xattn_tensor_contiguous(o, 0, XATTN_F32, 3, qr)
                 : xattn_tensor_contiguous(o, 0, XATTN_F32, 4, qu);
    a.k = xattn_tensor_contiguous(kc, 0, XATTN_F32, 4, cs);
    a.v = xattn_tensor_contiguous(vc, 0, XATTN_F32, 4, cs);
    a.lse = xattn_tensor_contiguous(lse, 0, XATTN_F32, 2, ls);
    a.block_table = xattn_tensor_contiguous(bt, 0, XATTN_I32, 2, bs);
    a.seqlens_k = xattn_tensor_contiguous(sk, 0, XATTN_I32, 1, ss);
    if (ragged) a.cu_seqlens_q = xattn_tensor_contiguous(cq, 0, XATTN_I32, 1, cqs);
    a.workspace = ws;
    XT_ASSERT_STATUS(xattn_attn_run(plan, &a), XATTN_OK);
    memset(r, 0, sizeof *r);
    XT_ASSERT_STATUS(xattn_buffer_read(o, 0, r->o, (size_t)total_q * HQ * D * sizeof(float)),
                     XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(lse, 0, r->lse, (size_t)HQ * total_q * sizeof(float)),
                     XATTN_OK);

    xattn_buffer *all[] = {q, kc, vc, o, lse, bt, sk, cq, ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) xattn_buffer_free(&all[i]);
    xattn_plan_destroy(&plan);
}

/* Unused entries that would be out of range, or another valid page, give
 * the same bits as valid ones: they are never read. */
static const int32_t unused_values[] = {-1, INT32_MIN, INT32_MAX, PAGES, 6};

static void check_padding(int ragged)
{
    const int64_t total_q = ragged ? TOTAL_Q_RAGGED : B * SQ;
    run_result base, other;
    run(ragged, 4, &base);
    /* The real sequences saw keys: finite LSE. */
    for (int h = 0; h < HQ; h++)
        for (int t = 0; t < 2 * SQ; t++) assert_true(isfinite(base.lse[h * total_q + t]));
    /* Uniform Q: the padding sequence's rows see no key. */
    if (!ragged) {
        for (int t = PAD * SQ; t < B * SQ; t++)
            for (int h = 0; h < HQ; h++) {
                assert_true(isinf(base.lse[h * total_q + t]) && base.lse[h * total_q + t] < 0);
                for (int c = 0; c < D; c++) assert_true(base.o[(t * HQ + h) * D + c] == 0.0f);
            }
    }
    for (size_t i = 0; i < sizeof unused_values / sizeof unused_values[0]; i++) {
        run(ragged, unused_values[i], &other);
        if (memcmp(base.o, other.o, sizeof base.o) || memcmp(base.lse, other.lse, sizeof base.lse))
            fail_msg("%s Q: unused block-table entries = %d changed the result", ragged ?
                     "ragged" : "uniform", (int)unused_values[i]);
    }
}

static void test_uniform_batch_padded_with_an_empty_sequence(void **state)
{
    (void)state;
    check_padding(0);
}

static void test_ragged_batch_padded_with_an_empty_sequence(void **state)
{
    (void)state;
    check_padding(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform_batch_padded_with_an_empty_sequence),
        cmocka_unit_test(test_ragged_batch_padded_with_an_empty_sequence),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
