/* Split-KV merge: the partial O and LSE of every split of a row into O and
 * LSE. Options: -DIO=<dtype> (of O); Dv, the row pitch of the partials
 * (the plan's dv_pad), sizes, strides and counts are arguments, so one
 * module per dtype serves every plan.
 *
 * Partials (common/plan.h): O as f32 [splits][part_rows][hq][dv_pad],
 * already divided by its own sum, then LSE as f32 [splits][part_rows][hq];
 * a split that saw no key of a row has LSE −inf and its O is never read.
 * The sink, which must count once, joins the denominator only here. */

/* One row of 32 lanes per (global query row, head); lane l writes columns l, l + 32, ... */
extern "C" __global__ void split_merge(i64 total_q, i64 hq, i64 seqlen_q, int q_ragged,
                                       int splits, i64 part_rows, const float *__restrict__ part,
                                       ELEM(IO) *__restrict__ o, i64 o_sb, i64 o_st, i64 o_sh,
                                       float *__restrict__ lse, i64 lse_sh, i64 lse_st,
                                       int has_lse, const float *__restrict__ sinks,
                                       int has_sinks, i64 dv, i64 dv_pad)
{
    const int lane = row_lane();
    const i64 r = (i64)blockIdx.x * (blockDim.x / ROW_LANES) + threadIdx.x / ROW_LANES;
    if (r >= total_q * hq) return;
    const i64 grow = r / hq, h = r % hq;
    const float *pl = part + (i64)splits * part_rows * hq * dv_pad;
    const i64 o_elem = q_ragged ? grow * o_st : (grow / seqlen_q) * o_sb + (grow % seqlen_q) * o_st;
    ELEM(IO) *orow = o + o_elem + h * o_sh;

    /* Rows outside the partials belong to no sequence: zeros, −inf. The
     * largest partial LSE is NaN if any is (fmaxf alone would drop it). */
    float top = -XATTN_INF;
    bool any_nan = false;
    if (grow < part_rows)
        for (int s = 0; s < splits; s++) {
            const float x = pl[((i64)s * part_rows + grow) * hq + h];
            any_nan |= xisnan(x);
            top = fmaxf(top, x);
        }
    if (any_nan) top = XATTN_NAN;
    float out_lse = -XATTN_INF;
    if (top == -XATTN_INF) {
        for (i64 d = lane; d < dv; d += ROW_LANES) STORE(IO, orow, d, 0.0f);
    } else {
        /* Rebase on the larger of the best split and the sink so neither
         * exponential overflows. */
        const float sink = has_sinks ? sinks[h] : -XATTN_INF;
        if (sink > top) top = sink;
        float denom = has_sinks ? expf(sink - top) : 0.0f;
        for (int s = 0; s < splits; s++) {
            const float x = pl[((i64)s * part_rows + grow) * hq + h];
            if (x != -XATTN_INF) denom += expf(x - top);
        }
        const float inv = 1.0f / denom;
        for (i64 d = lane; d < dv; d += ROW_LANES) {
            float acc = 0.0f;
            for (int s = 0; s < splits; s++) {
                const i64 prow = ((i64)s * part_rows + grow) * hq + h;
                const float x = pl[prow];
                if (x == -XATTN_INF) continue;
                acc += expf(x - top) * inv * part[prow * dv_pad + d];
            }
            STORE(IO, orow, d, acc);
        }
        out_lse = top + logf(denom);
    }
    if (has_lse && lane == 0) lse[h * lse_sh + grow * lse_st] = out_lse;
}
