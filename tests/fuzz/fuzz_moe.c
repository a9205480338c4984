/* libFuzzer harness: the MoE descriptor, the plan queries, and one of the
 * five calls on small host buffers, on the cpu backend.
 *
 * Input: the descriptor's fields, then the call and its tensors' contents
 * in the order read below (fuzz_input.h says how a field is read). Each
 * call must return a status of the enum, with a message when it fails, and
 * must not crash, hang, leak or touch memory outside its tensors (built
 * with AddressSanitizer and UndefinedBehaviorSanitizer; each buffer is
 * exactly its tensor's extent). Numbers are not checked: that is the
 * conformance harness's job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

enum {
    MAX_TOKENS = 64,
    MAX_EXPERTS = 64,
    MAX_TOPK = 8,
    /* Calls whose weights have more elements than this are planned only. */
    MAX_RUN_WEIGHTS = 1 << 18,
    MAX_INDEX = MAX_TOKENS * MAX_TOPK + MAX_EXPERTS * 64,
};

static void moe(fz *f, fz_pool *pool)
{
    xattn_moe_desc d;
    memset(&d, 0, sizeof d);
    d.max_tokens = fz_int(f, 1, MAX_TOKENS);
    d.hidden = fz_int(f, 1, 96);
    d.num_experts = fz_int(f, 1, 40);
    d.top_k = fz_int(f, 1, MAX_TOPK);
    d.inter = fz_int(f, 1, 48);
    d.dtype = (xattn_dtype)fz_int(f, 0, 2);
    d.weight_dtype = (xattn_dtype)fz_int(f, 0, 2);
    d.logits_dtype = (xattn_dtype)fz_int(f, 0, 2);
    d.route = (xattn_moe_route_mode)fz_int(f, 0, 3);
    d.activation = (xattn_moe_activation)fz_int(f, 0, 1);
    d.flags = fz_u8(f) < FZ_RAW_FROM ? fz_u8(f) & 0x3u : fz_u32(f);
    if (d.route == XATTN_MOE_ROUTE_SIGMOID_GROUPED || fz_u8(f) >= 224) {
        d.n_group = fz_int(f, 1, 8);
        d.topk_group = fz_int(f, 1, 8);
    }
    static const float scales[] = {0.0f, 1.0f, 2.5f, 0.5f};
    d.routed_scaling_factor = fz_float(f, scales, 4);
    static const int32_t aligns[] = {0, 1, 4, 16, 3, 64};
    d.align = fz_choose(f, aligns, 6);

    xattn_moe_plan *plan = NULL;
    xattn_status st = xattn_moe_plan_create(fz_ctx, &d, &plan);
    fz_check_status(st);
    if (st != XATTN_OK) return;
    char text[4096];
    size_t needed = 0;
    fz_check_status(xattn_moe_plan_describe(plan, text, (size_t)fz_u8(f) * 16, &needed));
    const size_t ws_bytes = xattn_moe_workspace_size(plan);
    (void)xattn_moe_alignment(plan);
    (void)xattn_moe_rows(plan, -1);
    (void)xattn_moe_rows(plan, (int64_t)d.max_tokens + 1);

    const int64_t T = fz_int(f, 0, d.max_tokens), E = d.num_experts, k = d.top_k;
    const int64_t H = d.hidden, I = d.inter;
    const int64_t R = xattn_moe_rows(plan, T < 0 || T > d.max_tokens ? 0 : T);
    if ((double)E * 3 * I * H > MAX_RUN_WEIGHTS || E > MAX_EXPERTS || k > MAX_TOPK || T < 0 ||
        T > MAX_TOKENS || R < 0 || T * k + E * 64 > MAX_INDEX) {
        xattn_moe_plan_destroy(&plan);
        return;
    }
    const uint8_t op = fz_u8(f) % 5;
    fz_layout lay = fz_layout_read(f);
    int32_t ids[MAX_TOKENS * MAX_TOPK], offsets[MAX_EXPERTS + 1], token_row[MAX_TOKENS * MAX_TOPK];
    for (int64_t i = 0; i < T * k; i++) ids[i] = fz_int(f, -1, (int32_t)E - 1);
    for (int64_t i = 0; i < T * k; i++) token_row[i] = fz_int(f, -1, (int32_t)R - 1);
    /* segments of the plan's alignment, ending at most at R (or raw) */
    const int32_t al = xattn_moe_alignment(plan);
    offsets[0] = 0;
    for (int64_t e = 0; e < E; e++) {
        const int64_t rows = (int64_t)fz_int(f, 0, 3) * (al > 0 ? al : 1);
        const int64_t end = offsets[e] + rows;
        offsets[e + 1] = rows >= 0 && end <= R ? (int32_t)end : offsets[e];
    }
    if (fz_u8(f) >= 240) offsets[fz_u8(f) % (E + 1)] = (int32_t)fz_u32(f);

    const int64_t lg[2] = {T, E}, xs[2] = {T, H}, tk[2] = {T, k}, es[1] = {E}, eo[1] = {E + 1};
    const int64_t pr[2] = {R, H}, rt[1] = {R}, w1[3] = {E, 2 * I, H}, w2[3] = {E, H, I};
    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    switch (op) {
    case 0: /* route */
    case 4: /* forward */
        a.logits = fz_tensor(pool, d.logits_dtype, 2, lg, lay, NULL);
        if (d.flags & XATTN_MOE_BIAS) a.bias = fz_tensor(pool, XATTN_F32, 1, es, lay, NULL);
        if (op == 0) {
            a.topk_ids = fz_tensor(pool, XATTN_I32, 2, tk, lay, NULL);
            a.topk_weights = fz_tensor(pool, XATTN_F32, 2, tk, lay, NULL);
        } else {
            a.x = fz_tensor(pool, d.dtype, 2, xs, lay, NULL);
            a.w1 = fz_tensor(pool, d.weight_dtype, 3, w1, lay, NULL);
            a.w2 = fz_tensor(pool, d.weight_dtype, 3, w2, lay, NULL);
            a.out = fz_tensor(pool, d.dtype, 2, xs, lay, NULL);
        }
        break;
    case 1: /* dispatch */
        a.topk_ids = fz_tensor(pool, XATTN_I32, 2, tk, lay, ids);
        a.x = fz_tensor(pool, d.dtype, 2, xs, lay, NULL);
        a.expert_offsets = fz_tensor(pool, XATTN_I32, 1, eo, lay, NULL);
        a.x_perm = fz_tensor(pool, d.dtype, 2, pr, lay, NULL);
        a.row_token = fz_tensor(pool, XATTN_I32, 1, rt, lay, NULL);
        a.token_row = fz_tensor(pool, XATTN_I32, 2, tk, lay, NULL);
        break;
    case 2: /* experts */
        a.x_perm = fz_tensor(pool, d.dtype, 2, pr, lay, NULL);
        a.expert_offsets = fz_tensor(pool, XATTN_I32, 1, eo, lay, offsets);
        a.w1 = fz_tensor(pool, d.weight_dtype, 3, w1, lay, NULL);
        a.w2 = fz_tensor(pool, d.weight_dtype, 3, w2, lay, NULL);
        a.y = fz_tensor(pool, d.dtype, 2, pr, lay, NULL);
        break;
    case 3: /* combine */
        a.y = fz_tensor(pool, d.dtype, 2, pr, lay, NULL);
        a.topk_weights = fz_tensor(pool, XATTN_F32, 2, tk, lay, NULL);
        a.token_row = fz_tensor(pool, XATTN_I32, 2, tk, lay, token_row);
        a.out = fz_tensor(pool, d.dtype, 2, xs, lay, NULL);
        a.accumulate = fz_u8(f) & 1;
        break;
    }
    const uint8_t ws_mode = fz_u8(f);
    const size_t ws_give = ws_mode < 240 ? ws_bytes : ws_bytes / 2;
    if (ws_give) {
        const int64_t s[1] = {(int64_t)(ws_give + 3) / 4}; /* i32 elements */
        a.workspace = fz_tensor(pool, XATTN_I32, 1, s, (fz_layout){0}, NULL).buffer;
    }
    if (!pool->too_big) {
        switch (op) {
        case 0: st = xattn_moe_route(plan, &a); break;
        case 1: st = xattn_moe_dispatch(plan, &a); break;
        case 2: st = xattn_moe_experts(plan, &a); break;
        case 3: st = xattn_moe_combine(plan, &a); break;
        default: st = xattn_moe_forward(plan, &a); break;
        }
        fz_check_status(st);
    }
    xattn_moe_plan_destroy(&plan);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz f = {data, size};
    fz_pool pool = fz_pool_start(size);
    moe(&f, &pool);
    fz_pool_free(&pool);
    return 0;
}
