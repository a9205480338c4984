/* kv_append and merge_states: each streams its operands once. Options:
 * -DIO=<dtype>; head dims, strides and counts are arguments, so one module
 * serves every shape of a dtype. Operand pointers arrive already offset. */

/* One block per token, its threads over (KV head, element): copy the new K
 * and V rows into the slot's page. Slots outside [0, num_slots) are
 * skipped (−1 means "not stored"). Raw copies: f16/bf16 bits move
 * unchanged. */
extern "C" __global__ void kv_append(i64 heads, i64 dqk, i64 dv, i64 page_size, i64 num_slots,
                                     const ELEM(IO) *__restrict__ k_new,
                                     const ELEM(IO) *__restrict__ v_new,
                                     const int *__restrict__ slots, i64 slots_st,
                                     ELEM(IO) *__restrict__ k_cache,
                                     ELEM(IO) *__restrict__ v_cache, i64 kn_st, i64 kn_sh,
                                     i64 vn_st, i64 vn_sh, i64 kc_sp, i64 kc_st, i64 kc_sh,
                                     i64 vc_sp, i64 vc_st, i64 vc_sh)
{
    const i64 t = blockIdx.x;
    const i64 slot = slots[t * slots_st];
    if (slot < 0 || slot >= num_slots) return;
    const i64 page = slot / page_size, off = slot % page_size;
    const i64 width = dqk > dv ? dqk : dv;
    for (i64 i = threadIdx.x; i < heads * width; i += blockDim.x) {
        const i64 h = i / width, d = i % width;
        if (d < dqk)
            k_cache[page * kc_sp + off * kc_st + h * kc_sh + d] = k_new[t * kn_st + h * kn_sh + d];
        if (d < dv)
            v_cache[page * vc_sp + off * vc_st + h * vc_sh + d] = v_new[t * vn_st + h * vn_sh + d];
    }
}

/* One row of 32 lanes per (token, head): O = (e^a O_a + e^b O_b) /
 * (e^a + e^b), LSE = log(e^a + e^b), weights taken relative to the larger
 * LSE so nothing overflows; both −inf gives zeros and −inf. A NaN LSE (or
 * +inf: inf − inf) makes the row NaN; a side of LSE −inf is not read. o may
 * be o_a or o_b (each element is read before it is written, by the same
 * lane), and lse may be lse_a or lse_b. */
extern "C" __global__ void merge_states(i64 n, i64 heads, i64 dim, const ELEM(IO) *o_a,
                                        i64 oa_st, i64 oa_sh, const ELEM(IO) *o_b, i64 ob_st,
                                        i64 ob_sh, ELEM(IO) *o, i64 o_st, i64 o_sh,
                                        const float *lse_a, i64 la_sh, i64 la_st,
                                        const float *lse_b, i64 lb_sh, i64 lb_st, float *lse,
                                        i64 l_sh, i64 l_st)
{
    const int lane = row_lane();
    const i64 row = (i64)blockIdx.x * (blockDim.x / ROW_LANES) + threadIdx.x / ROW_LANES;
    if (row >= n * heads) return; /* uniform across the row */
    const i64 t = row / heads, h = row % heads;
    const float a = lse_a[h * la_sh + t * la_st];
    const float b = lse_b[h * lb_sh + t * lb_st];
    /* In place, lse is lse_a or lse_b: every lane has read both before
     * lane 0 writes. */
    row_sync();
    const ELEM(IO) *ra = o_a + t * oa_st + h * oa_sh;
    const ELEM(IO) *rb = o_b + t * ob_st + h * ob_sh;
    ELEM(IO) *ro = o + t * o_st + h * o_sh;
    if (a == -XATTN_INF && b == -XATTN_INF) {
        for (i64 d = lane; d < dim; d += ROW_LANES) STORE(IO, ro, d, 0.0f);
        if (lane == 0) lse[h * l_sh + t * l_st] = -XATTN_INF;
        return;
    }
    const float m = a > b ? a : b;
    const float wa = expf(a - m), wb = expf(b - m);
    const float inv = 1.0f / (wa + wb);
    const float ca = wa * inv, cb = wb * inv;
    for (i64 d = lane; d < dim; d += ROW_LANES) {
        const float va = a != -XATTN_INF ? LOAD(IO, ra, d) * ca : 0.0f;
        const float vb = b != -XATTN_INF ? LOAD(IO, rb, d) * cb : 0.0f;
        STORE(IO, ro, d, va + vb);
    }
    if (lane == 0) lse[h * l_sh + t * l_st] = m + logf(wa + wb);
}
