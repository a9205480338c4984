/* Split-KV merge, shared by the CPU-style and GPU-style attention kernels.
 * Options: -DIO=<dtype> (of O), -DDV (true Dv), -DDV_PAD (the plan's dv_pad,
 * the row pitch of the partials). Sizes, strides and counts are arguments.
 *
 * Partials (plan.h): O as f32 [splits][part_rows][hq][DV_PAD], already
 * divided by its own sum, then LSE as f32 [splits][part_rows][hq]; a split
 * that saw no key of a row has LSE −inf and its O is never read. The sink,
 * which must count once, joins the denominator only here. */

/* Elements of O written per step: head dims are multiples of 8. */
#define MERGE_STEP 8

/* One work-item per (head, global query row). */
__kernel void split_merge(long total_q, long hq, long seqlen_q, int q_ragged, int splits,
                          long part_rows,
                          __global const float *part, ulong part_off,
                          __global ELEM(IO) *o, ulong o_off, long o_sb, long o_st, long o_sh,
                          __global float *lse, ulong lse_off, long lse_sh, long lse_st,
                          int has_lse, __global const float *sinks, ulong sinks_off,
                          int has_sinks)
{
    const long h = get_global_id(0), grow = get_global_id(1);
    if (h >= hq || grow >= total_q) return;
    __global const float *po = AT_CONST(float, part, part_off);
    __global const float *pl = po + (long)splits * part_rows * hq * DV_PAD;
    const long o_elem = q_ragged ? grow * o_st
                                 : (grow / seqlen_q) * o_sb + (grow % seqlen_q) * o_st;
    __global ELEM(IO) *orow = AT(ELEM(IO), o, o_off) + o_elem + h * o_sh;

    /* Rows outside the partials belong to no sequence: zeros, −inf. The
     * largest partial LSE is NaN if any is (a split whose row went NaN):
     * fmax alone would drop it. */
    float top = -INFINITY;
    int any_nan = 0;
    if (grow < part_rows)
        for (int s = 0; s < splits; s++) {
            const float x = pl[((long)s * part_rows + grow) * hq + h];
            any_nan |= isnan(x);
            top = fmax(top, x);
        }
    if (any_nan) top = NAN;
    float out_lse = -INFINITY;
    if (top == -INFINITY) {
        for (int d = 0; d < DV; d += MERGE_STEP) STORE8(IO, orow, d, (float8)0.0f);
    } else {
        /* Rebase on the larger of the best split and the sink so neither
         * exponential overflows. */
        const float sink = has_sinks ? AT_CONST(float, sinks, sinks_off)[h] : -INFINITY;
        if (sink > top) top = sink;
        float denom = has_sinks ? exp(sink - top) : 0.0f;
        for (int s = 0; s < splits; s++) {
            const float x = pl[((long)s * part_rows + grow) * hq + h];
            if (x != -INFINITY) denom += exp(x - top);
        }
        const float inv = 1.0f / denom;
        for (int d = 0; d < DV; d += MERGE_STEP) {
            float8 acc = (float8)0.0f;
            for (int s = 0; s < splits; s++) {
                const long prow = ((long)s * part_rows + grow) * hq + h;
                const float x = pl[prow];
                if (x == -INFINITY) continue;
                acc = fma((float8)(exp(x - top) * inv), vload8(0, po + prow * DV_PAD + d), acc);
            }
            STORE8(IO, orow, d, acc);
        }
        out_lse = top + log(denom);
    }
    if (has_lse) AT(float, lse, lse_off)[h * lse_sh + grow * lse_st] = out_lse;
}
