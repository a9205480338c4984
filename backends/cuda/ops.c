/* kv_append and merge_states: no plan, so their kernels are compiled on
 * first use, one module per dtype, and kept by the device. */
#include <stdlib.h>
#include <string.h>

#include "cu.h"

enum {
    NUM_DTYPES = 3,        /* f32, f16, bf16 */
    OPS_THREADS = 256,
};

struct cu_ops {
    int ready[NUM_DTYPES];
    cu_kernel kv_append[NUM_DTYPES];
    cu_kernel merge[NUM_DTYPES];
};

xattn_status cu_ops_variants(xattn_dtype dtype, cu_variant *out, int *n)
{
    *n = 0;
    if ((unsigned)dtype >= NUM_DTYPES)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: dtype %d for kv_append/merge_states",
                           (int)dtype);
    memset(out, 0, sizeof *out);
    out->source = "ops";
    if (xattn_options_dtype(out->options, sizeof out->options, "IO", dtype) != 0)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: ops options too long");
    out->kernels[0] = "kv_append";
    out->kernels[1] = "merge_states";
    out->hot = 0;
    out->smem_bytes = 0;
    out->threads = OPS_THREADS;
    *n = 1;
    return XATTN_OK;
}

/* The kernels for dtype, compiled on first use. cu_module_get takes
 * dev->lock itself, so the lock here only guards the table. */
static xattn_status ops_get(xattn_device *dev, xattn_dtype dtype, const struct cu_ops **out)
{
    if ((unsigned)dtype >= NUM_DTYPES)
        return xattn_error(XATTN_ERR_INTERNAL, "cuda: dtype %d for a copy kernel", (int)dtype);
    xattn_status st = XATTN_OK;
    pthread_mutex_lock(&dev->lock);
    if (!dev->ops && !(dev->ops = calloc(1, sizeof *dev->ops)))
        st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cuda: out of memory");
    int need = st == XATTN_OK && !dev->ops->ready[dtype];
    pthread_mutex_unlock(&dev->lock);
    if (need) {
        cu_variant v;
        int n = 0;
        cu_kernel k[1][CU_MAX_KERNELS];
        st = cu_ops_variants(dtype, &v, &n);
        if (st == XATTN_OK) st = cu_variants_load(dev, &v, n, k);
        if (st == XATTN_OK) {
            pthread_mutex_lock(&dev->lock);
            /* A racing thread got the same module and stored the same
             * kernels; storing only the first time keeps the table
             * unwritten once a reader has seen it ready (readers use it
             * without the lock). */
            if (!dev->ops->ready[dtype]) {
                dev->ops->kv_append[dtype] = k[0][0];
                dev->ops->merge[dtype] = k[0][1];
                dev->ops->ready[dtype] = 1;
            }
            pthread_mutex_unlock(&dev->lock);
        }
    }
    if (st == XATTN_OK) *out = dev->ops;
    return st;
}

void cu_ops_release(xattn_device *dev)
{
    free(dev->ops); /* the functions belong to modules the device unloads */
    dev->ops = NULL;
}

xattn_status cu_kv_append(xattn_device *dev, const xattn_kv_append_launch *l)
{
    const struct cu_ops *ops = NULL;
    XATTN_TRY(ops_get(dev, l->dtype, &ops));
    if (l->n <= 0 || l->num_kv_heads <= 0) return XATTN_OK;
    int64_t heads = l->num_kv_heads, dqk = l->dqk, dv = l->dv, ps = l->page_size;
    int64_t slots = l->num_pages * l->page_size, slots_st = 1;
    CUdeviceptr kn = cu_ptr(l->k_new), vn = cu_ptr(l->v_new), sl = cu_ptr(l->slots);
    CUdeviceptr kc = cu_ptr(l->k_cache), vc = cu_ptr(l->v_cache);
    int64_t kn_st = l->kn_st, kn_sh = l->kn_sh, vn_st = l->vn_st, vn_sh = l->vn_sh;
    int64_t kc_sp = l->kc_sp, kc_st = l->kc_st, kc_sh = l->kc_sh;
    int64_t vc_sp = l->vc_sp, vc_st = l->vc_st, vc_sh = l->vc_sh;
    void *args[] = {&heads, &dqk, &dv, &ps, &slots, &kn, &vn, &sl, &slots_st, &kc, &vc,
                    &kn_st, &kn_sh, &vn_st, &vn_sh, &kc_sp, &kc_st, &kc_sh, &vc_sp, &vc_st,
                    &vc_sh};
    if (l->n > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: kv_append of %lld tokens in one call",
                           (long long)l->n);
    return cu_launch(dev, &ops->kv_append[l->dtype], (unsigned)l->n, 1, 1, args);
}

xattn_status cu_merge_states(xattn_device *dev, const xattn_merge_launch *l)
{
    const struct cu_ops *ops = NULL;
    XATTN_TRY(ops_get(dev, l->dtype, &ops));
    if (l->n <= 0 || l->heads <= 0) return XATTN_OK;
    int64_t n = l->n, heads = l->heads, dim = l->dim;
    CUdeviceptr oa = cu_ptr(l->o_a), ob = cu_ptr(l->o_b), o = cu_ptr(l->o);
    CUdeviceptr la = cu_ptr(l->lse_a), lb = cu_ptr(l->lse_b), lo = cu_ptr(l->lse);
    int64_t oa_st = l->oa_st, oa_sh = l->oa_sh, ob_st = l->ob_st, ob_sh = l->ob_sh;
    int64_t o_st = l->o_st, o_sh = l->o_sh, la_sh = l->la_sh, la_st = l->la_st;
    int64_t lb_sh = l->lb_sh, lb_st = l->lb_st, l_sh = l->l_sh, l_st = l->l_st;
    void *args[] = {&n, &heads, &dim, &oa, &oa_st, &oa_sh, &ob, &ob_st, &ob_sh, &o, &o_st,
                    &o_sh, &la, &la_sh, &la_st, &lb, &lb_sh, &lb_st, &lo, &l_sh, &l_st};
    int64_t warps = OPS_THREADS / 32, rows = n * heads;
    int64_t blocks = (rows + warps - 1) / warps;
    if (blocks > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "cuda: merge_states of %lld rows",
                           (long long)rows);
    return cu_launch(dev, &ops->merge[l->dtype], (unsigned)blocks, 1, 1, args);
}
