/* kv_append and merge_states cases against the float64 reference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ref.h"

static int64_t dim_product(const hx_tensor *t)
{
    int64_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) n *= t->shape[d];
    return n;
}

/* Read every element of t in row-major index order. Returns the index of
 * the first element still holding the poison (never written), or −1. */
static int64_t gather(const hx_tensor *t, double *out)
{
    const int64_t n = dim_product(t);
    int64_t idx[XATTN_MAX_RANK] = {0}, poison = -1;
    for (int64_t e = 0; e < n; e++) {
        const void *p = hx_tensor_at(t, idx);
        out[e] = hx_load(p, t->dtype);
        if (poison < 0 && hx_is_poison(p, t->dtype)) poison = e;
        for (int32_t d = t->rank - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return poison;
}

/* Write every element of t from values in row-major index order. */
static void scatter(const hx_tensor *t, const double *in)
{
    const int64_t n = dim_product(t);
    int64_t idx[XATTN_MAX_RANK] = {0};
    for (int64_t e = 0; e < n; e++) {
        hx_store(hx_tensor_at(t, idx), t->dtype, in[e]);
        for (int32_t d = t->rank - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

static void fill_normal(hx_rng *rng, xattn_dtype dt, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = hx_round(dt, hx_rng_normal(rng));
}

/* A [n, h, d] operand of kv_append or merge_states laid out per mem.
 * HEAD_MAJOR stores it as [h, n, d]. */
static size_t rows_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, xattn_dtype dt, int64_t n,
                          int64_t h, int64_t d)
{
    return hx_seq_tensor(t, buf, mem, dt, 0, 1, n, n, h, d);
}

/* ---- kv_append -------------------------------------------------------------- */

void hx_run_kv_append(xattn_context *ctx, const hx_case *c, uint64_t seed, hx_result *res)
{
    const hx_kv_case *a = &c->kv;
    const xattn_dtype dt = a->dtype;
    const int64_t rows = (int64_t)a->num_pages * a->page_size;
    const int64_t kr = (int64_t)a->hkv * a->dqk, vr = (int64_t)a->hkv * a->dv;
    hx_rng rng;
    hx_rng_seed(&rng, seed);

    double *kc = malloc((size_t)(rows * kr) * sizeof *kc);
    double *vc = malloc((size_t)(rows * vr) * sizeof *vc);
    double *kn = malloc((size_t)(a->n * kr + 1) * sizeof *kn);
    double *vn = malloc((size_t)(a->n * vr + 1) * sizeof *vn);
    double *got = malloc((size_t)(rows * (kr > vr ? kr : vr)) * sizeof *got);
    int32_t *slots = malloc((size_t)(rows > a->n ? rows : a->n) * sizeof *slots);
    hx_buf kc_buf = {0}, vc_buf = {0}, new_buf = {0}, vn_buf = {0}, slot_buf = {0};
    unsigned char *mask = NULL;
    if (!kc || !vc || !kn || !vn || !got || !slots) {
        hx_result_fail(res, "harness: out of host memory");
        goto done;
    }
    fill_normal(&rng, dt, kc, rows * kr);
    fill_normal(&rng, dt, vc, rows * vr);
    fill_normal(&rng, dt, kn, a->n * kr);
    fill_normal(&rng, dt, vn, a->n * vr);
    /* Distinct slots anywhere in the cache, some of them skipped. */
    for (int64_t s = 0; s < rows; s++) slots[s] = (int32_t)s;
    hx_rng_shuffle(&rng, slots, rows);
    if (a->skip_every > 0)
        for (int32_t t = a->skip_every - 1; t < a->n; t += a->skip_every) slots[t] = -1;

    /* Caches. */
    hx_tensor kct, vct, knt, vnt, st;
    hx_buf *vcb = a->mem == HX_MEM_PACKED ? &kc_buf : &vc_buf;
    size_t kcb = hx_page_tensor(&kct, &kc_buf, a->mem, dt, a->num_pages, a->page_size, a->hkv,
                                a->dqk, 0);
    size_t vcbytes = hx_page_tensor(&vct, vcb, a->mem, dt, a->num_pages, a->page_size, a->hkv,
                                    a->dv, 1);
    if (vcb == &kc_buf && vcbytes > kcb) kcb = vcbytes;
    /* New rows: PACKED takes them from a fused QKV projection output
     * [n, 2·Hkv + 2·Hkv, D] (Hq = 2·Hkv). */
    hx_buf *vnb = &vn_buf;
    size_t nb, vnbytes = 0;
    if (a->mem == HX_MEM_PACKED) {
        const int64_t width = 4 * (int64_t)a->hkv;
        vnb = &new_buf;
        nb = hx_packed_tensor(&knt, &new_buf, dt, 0, 1, a->n, a->n, a->hkv, a->dqk, width,
                              2 * a->hkv);
        size_t b2 = hx_packed_tensor(&vnt, vnb, dt, 0, 1, a->n, a->n, a->hkv, a->dv, width,
                                     3 * a->hkv);
        if (b2 > nb) nb = b2;
    } else {
        nb = rows_tensor(&knt, &new_buf, a->mem, dt, a->n, a->hkv, a->dqk);
        vnbytes = rows_tensor(&vnt, vnb, a->mem, dt, a->n, a->hkv, a->dv);
    }
    const int64_t sshape[1] = {a->n}, sstride[1] = {1};
    size_t sb = hx_tensor_init(&st, &slot_buf, a->mem == HX_MEM_PADDED ? 64 : 0, XATTN_I32, 1,
                               sshape, sstride);

    if (hx_buf_alloc(ctx, &kc_buf, kcb, res)) goto done;
    if (vcb == &vc_buf && hx_buf_alloc(ctx, &vc_buf, vcbytes, res)) goto done;
    if (hx_buf_alloc(ctx, &new_buf, nb, res)) goto done;
    if (vnb == &vn_buf && hx_buf_alloc(ctx, &vn_buf, vnbytes, res)) goto done;
    if (hx_buf_alloc(ctx, &slot_buf, sb, res)) goto done;
    scatter(&kct, kc);
    scatter(&vct, vc);
    scatter(&knt, kn);
    scatter(&vnt, vn);
    for (int32_t t = 0; t < a->n; t++) {
        int64_t idx[1] = {t};
        hx_store(hx_tensor_at(&st, idx), XATTN_I32, slots[t]);
    }
    if (hx_buf_upload(&kc_buf, res) || (vc_buf.dev && hx_buf_upload(&vc_buf, res)) ||
        hx_buf_upload(&new_buf, res) || (vn_buf.dev && hx_buf_upload(&vn_buf, res)) ||
        hx_buf_upload(&slot_buf, res))
        goto done;

    const xattn_tensor k_new = hx_tensor_api(&knt), v_new = hx_tensor_api(&vnt);
    const xattn_tensor slot_t = hx_tensor_api(&st);
    const xattn_tensor k_cache = hx_tensor_api(&kct), v_cache = hx_tensor_api(&vct);
    double t0 = hx_now();
    xattn_status s = xattn_kv_append(ctx, &k_new, &v_new, &slot_t, &k_cache, &v_cache);
    if (hx_complete(ctx, s, "xattn_kv_append", t0, res)) goto done;
    if (hx_buf_download(&kc_buf, res) || (vc_buf.dev && hx_buf_download(&vc_buf, res)))
        goto done;

    t0 = hx_now();
    xattn_ref_kv_append(a->n, a->hkv, a->dqk, a->dv, kn, vn, slots, kc, vc);
    res->ref_seconds += hx_now() - t0;

    /* A copy is exact: every cache element must equal the reference. */
    double err = 0.0, norm = 0.0;
    const hx_tensor *views[2] = {&kct, &vct};
    const double *refs[2] = {kc, vc};
    const int64_t widths[2] = {kr, vr};
    const int32_t dims[2] = {a->dqk, a->dv};
    for (int w = 0; w < 2; w++) {
        gather(views[w], got);
        int64_t n = rows * widths[w], bad = 0, first = -1;
        for (int64_t e = 0; e < n; e++) {
            double d = got[e] - refs[w][e];
            if (!(got[e] == refs[w][e])) {
                bad++;
                if (first < 0) first = e;
            }
            if (isfinite(d)) err += d * d;
            norm += refs[w][e] * refs[w][e];
        }
        if (bad) {
            const int64_t row = first / widths[w];
            hx_result_fail(res,
                           "%s cache: %lld elements differ; first at page %lld, offset %lld, "
                           "head %lld, d %lld: got %.9g, want %.9g",
                           w ? "V" : "K", (long long)bad, (long long)(row / a->page_size),
                           (long long)(row % a->page_size),
                           (long long)((first % widths[w]) / dims[w]),
                           (long long)(first % dims[w]), got[first], refs[w][first]);
        }
    }
    res->nmse = norm > 0.0 ? err / norm : 0.0;

    mask = calloc(kc_buf.bytes > vc_buf.bytes ? kc_buf.bytes : vc_buf.bytes, 1);
    if (!mask) {
        hx_result_fail(res, "harness: out of host memory");
        goto done;
    }
    hx_tensor_mark(&kct, mask);
    if (vcb == &kc_buf) hx_tensor_mark(&vct, mask);
    int64_t stray = hx_buf_first_stray(&kc_buf, mask);
    if (stray >= 0)
        hx_result_fail(res, "K cache: byte %lld of its buffer, outside the tensor, was written",
                       (long long)stray);
    if (vc_buf.dev) {
        memset(mask, 0, vc_buf.bytes);
        hx_tensor_mark(&vct, mask);
        stray = hx_buf_first_stray(&vc_buf, mask);
        if (stray >= 0)
            hx_result_fail(res,
                           "V cache: byte %lld of its buffer, outside the tensor, was written",
                           (long long)stray);
    }
    if (res->status != HX_FAIL) {
        hx_buf_check_unchanged(&new_buf, "new K/V rows", res);
        if (vn_buf.dev) hx_buf_check_unchanged(&vn_buf, "new V rows", res);
        hx_buf_check_unchanged(&slot_buf, "slots", res);
    }
done:
    free(mask);
    hx_buf_free(&kc_buf);
    hx_buf_free(&vc_buf);
    hx_buf_free(&new_buf);
    hx_buf_free(&vn_buf);
    hx_buf_free(&slot_buf);
    free(kc);
    free(vc);
    free(kn);
    free(vn);
    free(got);
    free(slots);
}

/* ---- merge_states -------------------------------------------------------------- */

static void gen_lse(hx_rng *rng, hx_lse_mode mode, double *a, double *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        switch (mode) {
        case HX_LSE_NORMAL:
            a[i] = 3.0 * hx_rng_normal(rng);
            b[i] = 3.0 * hx_rng_normal(rng);
            break;
        case HX_LSE_NEG_INF: {
            a[i] = 3.0 * hx_rng_normal(rng);
            b[i] = 3.0 * hx_rng_normal(rng);
            int64_t k = hx_rng_below(rng, 8);
            if (k == 0 || k == 2) a[i] = -INFINITY;
            if (k == 1 || k == 2) b[i] = -INFINITY;
            break;
        }
        case HX_LSE_NONFINITE: {
            /* NaN or +inf on either side, or one side −inf, or finite. */
            static const double special[] = {NAN, INFINITY, -INFINITY};
            a[i] = 3.0 * hx_rng_normal(rng);
            b[i] = 3.0 * hx_rng_normal(rng);
            int64_t k = hx_rng_below(rng, 10);
            if (k < 3) a[i] = special[k];
            else if (k < 6) b[i] = special[k - 3];
            else if (k == 6) a[i] = b[i] = -INFINITY;
            break;
        }
                case HX_LSE_LARGE: {
            /* Magnitudes past fp32's e^88 and differences of either sign,
             * from equal to hundreds apart. */
            double base = (hx_rng_next(rng) & 1 ? 1 : -1) * (90.0 + 200.0 * hx_rng_uniform(rng));
            a[i] = base;
            int64_t k = hx_rng_below(rng, 4);
            b[i] = k == 0 ? base : base + (k == 1 ? 1 : k == 2 ? -1 : 0.5) *
                                              (hx_rng_uniform(rng) * 200.0);
            break;
        }
        }
        a[i] = (float)a[i];
        b[i] = (float)b[i];
    }
}

void hx_run_merge(xattn_context *ctx, const hx_case *c, uint64_t seed, hx_result *res)
{
    const hx_merge_case *a = &c->merge;
    const xattn_dtype dt = a->dtype;
    const int64_t no = (int64_t)a->n * a->heads * a->dim, nl = (int64_t)a->n * a->heads;
    hx_rng rng;
    hx_rng_seed(&rng, seed);
    double *oa = malloc((size_t)(no + 1) * sizeof *oa);
    double *ob = malloc((size_t)(no + 1) * sizeof *ob);
    double *o = malloc((size_t)(no + 1) * sizeof *o);
    double *got = malloc((size_t)(no + 1) * sizeof *got);
    double *la = malloc((size_t)(nl + 1) * sizeof *la);
    double *lb = malloc((size_t)(nl + 1) * sizeof *lb);
    double *l = malloc((size_t)(nl + 1) * sizeof *l);
    double *lgot = malloc((size_t)(nl + 1) * sizeof *lgot);
    hx_buf oa_buf = {0}, ob_buf = {0}, o_buf = {0}, la_buf = {0}, lb_buf = {0}, l_buf = {0};
    unsigned char *mask = NULL;
    if (!oa || !ob || !o || !got || !la || !lb || !l || !lgot) {
        hx_result_fail(res, "harness: out of host memory");
        goto done;
    }
    fill_normal(&rng, dt, oa, no);
    fill_normal(&rng, dt, ob, no);
    gen_lse(&rng, a->lse_mode, la, lb, nl);
    if (a->lse_mode == HX_LSE_NONFINITE)
        for (int32_t h = 0; h < a->heads; h++)
            for (int32_t t = 0; t < a->n; t++) {
                const int64_t i = (int64_t)h * a->n + t, row = ((int64_t)t * a->heads + h) * a->dim;
                /* A side of LSE −inf is not read: NaN there must not show. */
                if (la[i] == -INFINITY) oa[row] = NAN;
                if (lb[i] == -INFINITY) ob[row + 2] = NAN;
                /* A side that counts: its NaN element is NaN in O. */
                if (isfinite(la[i]) && isfinite(lb[i]) && t % 3 == 0) oa[row + 1] = NAN;
            }

    hx_tensor oat, obt, ot, lat, lbt, lt;
    size_t oab = rows_tensor(&oat, &oa_buf, a->mem, dt, a->n, a->heads, a->dim);
    size_t obb = rows_tensor(&obt, &ob_buf, a->mem, dt, a->n, a->heads, a->dim);
    size_t lab = hx_lse_tensor(&lat, &la_buf, a->mem, a->heads, a->n);
    size_t lbb = hx_lse_tensor(&lbt, &lb_buf, a->mem, a->heads, a->n);
    hx_buf *out_o = &oa_buf, *out_l = &la_buf;
    ot = oat;
    lt = lat;
    if (hx_buf_alloc(ctx, &oa_buf, oab, res) || hx_buf_alloc(ctx, &ob_buf, obb, res) ||
        hx_buf_alloc(ctx, &la_buf, lab, res) || hx_buf_alloc(ctx, &lb_buf, lbb, res))
        goto done;
    if (!a->in_place) {
        out_o = &o_buf;
        out_l = &l_buf;
        size_t b1 = rows_tensor(&ot, &o_buf, a->mem, dt, a->n, a->heads, a->dim);
        size_t b2 = hx_lse_tensor(&lt, &l_buf, a->mem, a->heads, a->n);
        if (hx_buf_alloc(ctx, &o_buf, b1, res) || hx_buf_alloc(ctx, &l_buf, b2, res)) goto done;
    }
    scatter(&oat, oa);
    scatter(&obt, ob);
    for (int32_t h = 0; h < a->heads; h++)
        for (int32_t t = 0; t < a->n; t++) {
            int64_t idx[2] = {h, t};
            hx_store(hx_tensor_at(&lat, idx), XATTN_F32, la[(int64_t)h * a->n + t]);
            hx_store(hx_tensor_at(&lbt, idx), XATTN_F32, lb[(int64_t)h * a->n + t]);
        }
    if (hx_buf_upload(&oa_buf, res) || hx_buf_upload(&ob_buf, res) ||
        hx_buf_upload(&la_buf, res) || hx_buf_upload(&lb_buf, res))
        goto done;
    if (!a->in_place && (hx_buf_upload(&o_buf, res) || hx_buf_upload(&l_buf, res))) goto done;

    const xattn_tensor xoa = hx_tensor_api(&oat), xob = hx_tensor_api(&obt);
    const xattn_tensor xla = hx_tensor_api(&lat), xlb = hx_tensor_api(&lbt);
    const xattn_tensor xo = hx_tensor_api(&ot), xl = hx_tensor_api(&lt);
    double t0 = hx_now();
    xattn_status s = xattn_merge_states(ctx, &xoa, &xla, &xob, &xlb, &xo, &xl);
    if (hx_complete(ctx, s, "xattn_merge_states", t0, res)) goto done;
    if (hx_buf_download(out_o, res) || hx_buf_download(out_l, res)) goto done;

    t0 = hx_now();
    xattn_ref_merge_states(a->n, a->heads, a->dim, oa, la, ob, lb, o, l);
    res->ref_seconds += hx_now() - t0;

    const int64_t unwritten = gather(&ot, got);
    if (unwritten >= 0)
        hx_result_fail(res, "O[t %lld, h %lld, d %lld] was not written (still poison)",
                       (long long)(unwritten / ((int64_t)a->heads * a->dim)),
                       (long long)((unwritten / a->dim) % a->heads),
                       (long long)(unwritten % a->dim));
    hx_cmp cmp;
    hx_compare(got, o, no, a->dim, dt, &cmp);
    res->nmse = cmp.nmse;
    const double tol = hx_tol_nmse(dt);
    if (cmp.first_nonfinite >= 0 || !(cmp.nmse <= tol)) {
        const int64_t e = cmp.first_nonfinite >= 0 ? cmp.first_nonfinite : cmp.worst;
        const int64_t t = e / ((int64_t)a->heads * a->dim), h = (e / a->dim) % a->heads;
        hx_result_fail(res,
                       "O %s (NMSE %.3g, limit %.0e); %s at O[t %lld, h %lld, d %lld] "
                       "(LSE_a %g, LSE_b %g): got %.9g, want %.9g",
                       cmp.first_nonfinite >= 0 ? "has NaN/Inf the reference lacks" : "too far",
                       cmp.nmse, tol, cmp.first_nonfinite >= 0 ? "first" : "worst",
                       (long long)t, (long long)h, (long long)(e % a->dim),
                       la[h * a->n + t], lb[h * a->n + t], got[e], o[e]);
    } else if (!(cmp.worst_row_nmse <= HX_ROW_FACTOR * tol)) {
        const int64_t t = cmp.worst_row / a->heads, h = cmp.worst_row % a->heads;
        hx_result_fail(res,
                       "O row [t %lld, h %lld] (LSE_a %g, LSE_b %g) too far (row NMSE %.3g, "
                       "limit %.0e, tensor NMSE %.3g)",
                       (long long)t, (long long)h, la[h * a->n + t], lb[h * a->n + t],
                       cmp.worst_row_nmse, HX_ROW_FACTOR * tol, cmp.nmse);
    }
    for (int32_t h = 0; h < a->heads; h++)
        for (int32_t t = 0; t < a->n; t++) {
            int64_t idx[2] = {h, t};
            const void *p = hx_tensor_at(&lt, idx);
            lgot[(int64_t)h * a->n + t] = hx_load(p, XATTN_F32);
            if (hx_is_poison(p, XATTN_F32))
                hx_result_fail(res, "LSE[h %d, t %d] was not written (still poison)", h, t);
        }
    hx_lse_cmp lc;
    hx_compare_lse(lgot, l, nl, &lc);
    res->lse_err = lc.max_abs;
    const double ltol = hx_tol_lse(dt);
    if (lc.first_mismatch >= 0 || !(lc.max_abs <= ltol)) {
        const int64_t e = lc.first_mismatch >= 0 ? lc.first_mismatch : lc.worst;
        hx_result_fail(res,
                       "LSE %s (max abs err %.3g, limit %.0e) at LSE[h %lld, t %lld] "
                       "(LSE_a %g, LSE_b %g): got %.9g, want %.9g",
                       lc.first_mismatch >= 0 ? "non-finite mismatch" : "too far", lc.max_abs,
                       ltol, (long long)(e / a->n), (long long)(e % a->n), la[e], lb[e],
                       lgot[e], l[e]);
    }

    size_t mbytes = out_o->bytes > out_l->bytes ? out_o->bytes : out_l->bytes;
    mask = calloc(mbytes, 1);
    if (!mask) {
        hx_result_fail(res, "harness: out of host memory");
        goto done;
    }
    hx_tensor_mark(&ot, mask);
    int64_t stray = hx_buf_first_stray(out_o, mask);
    if (stray >= 0)
        hx_result_fail(res, "O: byte %lld of its buffer, outside the tensor, was written",
                       (long long)stray);
    memset(mask, 0, mbytes);
    hx_tensor_mark(&lt, mask);
    stray = hx_buf_first_stray(out_l, mask);
    if (stray >= 0)
        hx_result_fail(res, "LSE: byte %lld of its buffer, outside the tensor, was written",
                       (long long)stray);
    if (res->status != HX_FAIL) {
        hx_buf_check_unchanged(&ob_buf, "O_b", res);
        hx_buf_check_unchanged(&lb_buf, "LSE_b", res);
        if (!a->in_place) {
            hx_buf_check_unchanged(&oa_buf, "O_a", res);
            hx_buf_check_unchanged(&la_buf, "LSE_a", res);
        }
    }
done:
    free(mask);
    hx_buf_free(&oa_buf);
    hx_buf_free(&ob_buf);
    hx_buf_free(&o_buf);
    hx_buf_free(&la_buf);
    hx_buf_free(&lb_buf);
    hx_buf_free(&l_buf);
    free(oa);
    free(ob);
    free(o);
    free(got);
    free(la);
    free(lb);
    free(l);
    free(lgot);
}
