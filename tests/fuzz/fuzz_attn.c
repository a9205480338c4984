/* libFuzzer harness: the attention descriptor and a run on small host
 * buffers, kv_append and merge_states, on the cpu backend.
 *
 * Input: an op byte, then the fields of the call in the order read below
 * (fuzz_input.h says how a field is read). Each call must return a status
 * of the enum, with a message when it fails (fz_check_status), and must
 * not crash, hang, leak, or touch memory outside its tensors (the harness
 * is built with AddressSanitizer and UndefinedBehaviorSanitizer, and each
 * tensor's buffer is exactly its extent). Numbers are not checked: that is
 * the conformance harness's job. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

enum {
    MAX_BATCH = 4,
    MAX_PAGES_PER_SEQ = 16,
    /* Runs whose score count B·Sq·Sk·Hq·(Dqk + Dv) is above this are
     * planned only, so that an input takes milliseconds. */
    MAX_RUN_WORK = 1 << 23,
};

static const int32_t head_dims[] = {8, 16, 40, 64, 72, 80, 96, 128, 160, 192, 256, 512, 576, 24};

/* Sequence lengths of a ragged batch from the input: prefix sums in cu,
 * valid (each length ≤ bound) unless the input says raw, and *t the
 * [batch + 1] tensor holding them. Returns the total length, 0 when the
 * raw sum is negative. */
static int64_t read_cu(fz *f, fz_pool *pool, int32_t batch, int32_t bound, int32_t *cu,
                       xattn_tensor *t)
{
    cu[0] = 0;
    for (int32_t b = 0; b < batch; b++) {
        int32_t len = fz_int(f, 0, bound > 0 && bound < 1000 ? bound : 8);
        cu[b + 1] = (int32_t)((uint32_t)cu[b] + (uint32_t)len);
    }
    const int64_t s[1] = {(int64_t)batch + 1};
    *t = fz_tensor(pool, XATTN_I32, 1, s, (fz_layout){0}, cu);
    return cu[batch] < 0 ? 0 : cu[batch];
}

static void attention(fz *f, fz_pool *pool)
{
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = (xattn_dtype)fz_int(f, 0, 2);
    d.batch = fz_int(f, 1, MAX_BATCH);
    d.num_kv_heads = fz_int(f, 1, 4);
    int32_t group = fz_int(f, 1, 8);
    d.num_q_heads = (int32_t)((uint32_t)d.num_kv_heads * (uint32_t)group);
    d.head_dim_qk = fz_choose(f, head_dims, (int)(sizeof head_dims / sizeof head_dims[0]));
    d.head_dim_v = fz_u8(f) < 200 ? d.head_dim_qk
                                  : fz_choose(f, head_dims,
                                              (int)(sizeof head_dims / sizeof head_dims[0]));
    d.q_layout = (xattn_q_layout)fz_int(f, 0, 1);
    d.kv_layout = (xattn_kv_layout)fz_int(f, 0, 2);
    d.seqlen_q = fz_int(f, 1, 40);
    d.seqlen_k = fz_int(f, 0, 200);
    if (d.kv_layout == XATTN_KV_PAGED) {
        d.page_size = fz_int(f, 1, 20);
        d.num_pages = fz_int(f, 1, 40);
        d.max_pages_per_seq = fz_int(f, 1, MAX_PAGES_PER_SEQ);
    }
    d.flags = fz_u8(f) < FZ_RAW_FROM ? fz_u8(f) & 0x1fu : fz_u32(f);
    d.window_left = fz_int(f, -1, 50);
    d.window_right = fz_int(f, -1, 50);
    static const float scales[] = {0.0f, 0.125f, 1.0f, -0.5f};
    static const float caps[] = {0.0f, 0.0f, 5.0f, 30.0f};
    d.scale = fz_float(f, scales, 4);
    d.softcap = fz_float(f, caps, 4);

    xattn_plan *plan = NULL;
    xattn_status st = xattn_plan_create(fz_ctx, &d, &plan);
    fz_check_status(st);
    if (st != XATTN_OK) return;
    char text[2048];
    size_t needed = 0;
    fz_check_status(xattn_plan_describe(plan, text, (size_t)fz_u8(f) * 8, &needed));
    const size_t ws_bytes = xattn_plan_workspace_size(plan);

    /* Run only small problems, on the descriptor's own shapes. */
    const double work = (double)d.batch * d.seqlen_q * (d.seqlen_k + 1) * d.num_q_heads *
                        (d.head_dim_qk + d.head_dim_v);
    if (work > MAX_RUN_WORK || d.batch > MAX_BATCH ||
        (d.kv_layout == XATTN_KV_PAGED && d.max_pages_per_seq > MAX_PAGES_PER_SEQ)) {
        xattn_plan_destroy(&plan);
        return;
    }
    const int64_t B = d.batch, Hq = d.num_q_heads, Hkv = d.num_kv_heads;
    const int64_t Dqk = d.head_dim_qk, Dv = d.head_dim_v;
    int32_t cu_q[MAX_BATCH + 1], cu_k[MAX_BATCH + 1], seqlens[MAX_BATCH];
    int32_t table[MAX_BATCH * MAX_PAGES_PER_SEQ];
    xattn_attn_args a;
    memset(&a, 0, sizeof a);
    fz_layout lay = fz_layout_read(f);

    int64_t total_q = B * d.seqlen_q;
    if (d.q_layout == XATTN_Q_RAGGED) {
        total_q = read_cu(f, pool, d.batch, d.seqlen_q, cu_q, &a.cu_seqlens_q);
        const int64_t qs[3] = {total_q, Hq, Dqk}, os[3] = {total_q, Hq, Dv};
        a.q = fz_tensor(pool, d.dtype, 3, qs, lay, NULL);
        a.o = fz_tensor(pool, d.dtype, 3, os, lay, NULL);
    } else {
        const int64_t qs[4] = {B, d.seqlen_q, Hq, Dqk}, os[4] = {B, d.seqlen_q, Hq, Dv};
        a.q = fz_tensor(pool, d.dtype, 4, qs, lay, NULL);
        a.o = fz_tensor(pool, d.dtype, 4, os, lay, NULL);
    }
    if (d.kv_layout == XATTN_KV_RAGGED) {
        const int64_t total_k = read_cu(f, pool, d.batch, d.seqlen_k, cu_k, &a.cu_seqlens_k);
        const int64_t ks[3] = {total_k, Hkv, Dqk}, vs[3] = {total_k, Hkv, Dv};
        a.k = fz_tensor(pool, d.dtype, 3, ks, lay, NULL);
        a.v = fz_tensor(pool, d.dtype, 3, vs, lay, NULL);
    } else if (d.kv_layout == XATTN_KV_PAGED) {
        for (int64_t b = 0; b < B; b++) seqlens[b] = fz_int(f, 0, d.seqlen_k);
        for (int64_t i = 0; i < B * d.max_pages_per_seq; i++)
            table[i] = fz_int(f, 0, d.num_pages - 1);
        const int64_t ts[2] = {B, d.max_pages_per_seq}, ss[1] = {B};
        a.block_table = fz_tensor(pool, XATTN_I32, 2, ts, (fz_layout){0}, table);
        a.seqlens_k = fz_tensor(pool, XATTN_I32, 1, ss, (fz_layout){0}, seqlens);
        const int64_t ks[4] = {d.num_pages, d.page_size, Hkv, Dqk};
        const int64_t vs[4] = {d.num_pages, d.page_size, Hkv, Dv};
        a.k = fz_tensor(pool, d.dtype, 4, ks, lay, NULL);
        a.v = fz_tensor(pool, d.dtype, 4, vs, lay, NULL);
    } else {
        const int64_t ks[4] = {B, d.seqlen_k, Hkv, Dqk}, vs[4] = {B, d.seqlen_k, Hkv, Dv};
        a.k = fz_tensor(pool, d.dtype, 4, ks, lay, NULL);
        a.v = fz_tensor(pool, d.dtype, 4, vs, lay, NULL);
    }
    const int64_t hs[1] = {Hq}, ls[2] = {Hq, total_q};
    if (d.flags & XATTN_ATTN_LSE) a.lse = fz_tensor(pool, XATTN_F32, 2, ls, lay, NULL);
    if (d.flags & XATTN_ATTN_ALIBI) a.alibi_slopes = fz_tensor(pool, XATTN_F32, 1, hs, lay, NULL);
    if (d.flags & XATTN_ATTN_SINKS) a.sinks = fz_tensor(pool, XATTN_F32, 1, hs, lay, NULL);
    /* the workspace: enough, or (rarely) too little */
    const uint8_t ws_mode = fz_u8(f);
    const size_t ws_give = ws_mode < 240 ? ws_bytes : ws_bytes / 2;
    if (ws_give) {
        const int64_t s[1] = {(int64_t)(ws_give + 3) / 4}; /* i32 elements */
        fz_layout plain = {0};
        a.workspace = fz_tensor(pool, XATTN_I32, 1, s, plain, NULL).buffer;
        a.workspace_offset = ws_mode == 255 ? 8 : 0;
    }
    if (!pool->too_big) fz_check_status(xattn_attn_run(plan, &a));
    xattn_plan_destroy(&plan);
}

static void kv_append(fz *f, fz_pool *pool)
{
    const xattn_dtype dt = (xattn_dtype)fz_int(f, 0, 2);
    const int64_t n = fz_int(f, 0, 64), hkv = fz_int(f, 1, 4);
    const int64_t dqk = fz_choose(f, head_dims, 8), dv = fz_choose(f, head_dims, 8);
    const int64_t pages = fz_int(f, 1, 16), page = fz_int(f, 1, 16);
    if (n < 0 || n > 256) return;
    int32_t slots[256];
    const int64_t capacity = pages * page; /* may be huge or negative from raw values */
    const int32_t top = capacity > INT32_MAX ? INT32_MAX : capacity < 0 ? 0 : (int32_t)capacity;
    for (int64_t t = 0; t < n; t++) slots[t] = fz_int(f, -1, top - 1);
    fz_layout lay = fz_layout_read(f);
    const int64_t ks[3] = {n, hkv, dqk}, vs[3] = {n, hkv, dv}, ss[1] = {n};
    const int64_t kc[4] = {pages, page, hkv, dqk}, vc[4] = {pages, page, hkv, dv};
    xattn_tensor k_new = fz_tensor(pool, dt, 3, ks, lay, NULL);
    xattn_tensor v_new = fz_tensor(pool, dt, 3, vs, lay, NULL);
    xattn_tensor sl = fz_tensor(pool, XATTN_I32, 1, ss, (fz_layout){0}, slots);
    xattn_tensor k_cache = fz_tensor(pool, dt, 4, kc, lay, NULL);
    xattn_tensor v_cache = fz_tensor(pool, dt, 4, vc, lay, NULL);
    if (!pool->too_big)
        fz_check_status(xattn_kv_append(fz_ctx, &k_new, &v_new, &sl, &k_cache, &v_cache));
}

static void merge_states(fz *f, fz_pool *pool)
{
    const xattn_dtype dt = (xattn_dtype)fz_int(f, 0, 2);
    const int64_t n = fz_int(f, 0, 64), h = fz_int(f, 1, 8), dim = fz_int(f, 0, 128);
    const uint8_t in_place = fz_u8(f) >= 192;
    fz_layout lay = fz_layout_read(f);
    const int64_t os[3] = {n, h, dim}, ls[2] = {h, n};
    xattn_tensor oa = fz_tensor(pool, dt, 3, os, lay, NULL);
    xattn_tensor la = fz_tensor(pool, XATTN_F32, 2, ls, lay, NULL);
    xattn_tensor ob = fz_tensor(pool, dt, 3, os, lay, NULL);
    xattn_tensor lb = fz_tensor(pool, XATTN_F32, 2, ls, lay, NULL);
    xattn_tensor o = in_place ? oa : fz_tensor(pool, dt, 3, os, lay, NULL);
    xattn_tensor l = in_place ? la : fz_tensor(pool, XATTN_F32, 2, ls, lay, NULL);
    if (!pool->too_big) fz_check_status(xattn_merge_states(fz_ctx, &oa, &la, &ob, &lb, &o, &l));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    fz_pool pool = fz_pool_start(size);
    const uint8_t op = fz_u8(&f);
    if (op < 192)
        attention(&f, &pool);
    else if (op < 224)
        kv_append(&f, &pool);
    else
        merge_states(&f, &pool);
    fz_pool_free(&pool);
    return 0;
}
