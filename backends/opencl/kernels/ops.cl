/* kv_append and merge_states: each streams its operands once. Options:
 * -DIO=<dtype> (both), and for kv_append nothing else: head dims, strides
 * and counts are arguments, so one build serves every shape of a dtype. */

/* One work-item per (token, KV head): copy the new K and V rows into the
 * slot's page. Slots outside [0, num_pages·page_size) are skipped (−1 means
 * "not stored"; the front end rejects the rest when it can read them). */
__kernel void kv_append(long heads, long dqk, long dv, long page_size, long num_slots,
                        __global const RAW(IO) *k_new, ulong k_new_off,
                        __global const RAW(IO) *v_new, ulong v_new_off,
                        __global const int *slots, ulong slots_off, long slots_st,
                        __global RAW(IO) *k_cache, ulong k_cache_off,
                        __global RAW(IO) *v_cache, ulong v_cache_off,
                        long kn_st, long kn_sh, long vn_st, long vn_sh,
                        long kc_sp, long kc_st, long kc_sh, long vc_sp, long vc_st, long vc_sh)
{
    const long t = get_global_id(1), h = get_global_id(0);
    if (h >= heads) return;
    const long slot = AT_CONST(int, slots, slots_off)[t * slots_st];
    if (slot < 0 || slot >= num_slots) return;
    const long page = slot / page_size, off = slot % page_size;
    __global const RAW(IO) *ks = AT_CONST(RAW(IO), k_new, k_new_off) + t * kn_st + h * kn_sh;
    __global const RAW(IO) *vs = AT_CONST(RAW(IO), v_new, v_new_off) + t * vn_st + h * vn_sh;
    __global RAW(IO) *kd = AT(RAW(IO), k_cache, k_cache_off) + page * kc_sp + off * kc_st + h * kc_sh;
    __global RAW(IO) *vd = AT(RAW(IO), v_cache, v_cache_off) + page * vc_sp + off * vc_st + h * vc_sh;
    /* Raw copies: the bits of f16/bf16 move unchanged. */
    for (long d = 0; d < dqk; d++) kd[d] = ks[d];
    for (long d = 0; d < dv; d++) vd[d] = vs[d];
}

/* One work-item per (token, head): O = (e^a O_a + e^b O_b) / (e^a + e^b),
 * LSE = log(e^a + e^b), weights taken relative to the larger LSE so nothing
 * overflows; both −inf gives zeros and −inf. A NaN LSE (or a +inf one:
 * inf − inf) makes the row NaN; a side of LSE −inf is not read, any other
 * is (a NaN there shows even where its weight rounds to 0). o may be o_a
 * or o_b (each element is read before it is written). */
__kernel void merge_states(long n, long heads, long dim,
                           __global const ELEM(IO) *o_a, ulong o_a_off, long oa_st, long oa_sh,
                           __global const ELEM(IO) *o_b, ulong o_b_off, long ob_st, long ob_sh,
                           __global ELEM(IO) *o, ulong o_off, long o_st, long o_sh,
                           __global const float *lse_a, ulong lse_a_off, long la_sh, long la_st,
                           __global const float *lse_b, ulong lse_b_off, long lb_sh, long lb_st,
                           __global float *lse, ulong lse_off, long l_sh, long l_st)
{
    const long h = get_global_id(0), t = get_global_id(1);
    if (h >= heads) return;
    const float a = AT_CONST(float, lse_a, lse_a_off)[h * la_sh + t * la_st];
    const float b = AT_CONST(float, lse_b, lse_b_off)[h * lb_sh + t * lb_st];
    __global const ELEM(IO) *ra = AT_CONST(ELEM(IO), o_a, o_a_off) + t * oa_st + h * oa_sh;
    __global const ELEM(IO) *rb = AT_CONST(ELEM(IO), o_b, o_b_off) + t * ob_st + h * ob_sh;
    __global ELEM(IO) *ro = AT(ELEM(IO), o, o_off) + t * o_st + h * o_sh;
    __global float *l = AT(float, lse, lse_off) + h * l_sh + t * l_st;
    if (a == -INFINITY && b == -INFINITY) {
        for (long d = 0; d < dim; d++) STORE(IO, ro, d, 0.0f);
        *l = -INFINITY;
        return;
    }
    const float m = a > b ? a : b;
    const float wa = exp(a - m), wb = exp(b - m);
    const float inv = 1.0f / (wa + wb);
    const float ca = wa * inv, cb = wb * inv;
    for (long d = 0; d < dim; d++) {
        const float va = a != -INFINITY ? LOAD(IO, ra, d) * ca : 0.0f;
        const float vb = b != -INFINITY ? LOAD(IO, rb, d) * cb : 0.0f;
        STORE(IO, ro, d, va + vb);
    }
    *l = m + log(wa + wb);
}
