/* kv_append and merge_states: no plan, so their kernels are built on first
 * use, one program per dtype, and kept by the device. */
#include <stdlib.h>

#include "ocl.h"

enum { NUM_DTYPES = 3 }; /* f32, f16, bf16 */

struct ocl_ops {
    ocl_kernel kv_append[NUM_DTYPES];
    ocl_kernel merge[NUM_DTYPES];
};

/* The kernel `name` for dtype, built on first use. */
static xattn_status ops_kernel(xattn_device *dev, xattn_dtype dtype, int merge,
                               ocl_kernel **out)
{
    if ((unsigned)dtype >= NUM_DTYPES)
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: dtype %d for a copy kernel", (int)dtype);
    xattn_status st = XATTN_OK;
    pthread_mutex_lock(&dev->lock);
    if (!dev->ops && !(dev->ops = calloc(1, sizeof *dev->ops)))
        st = xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    ocl_kernel *k = NULL;
    if (st == XATTN_OK) k = merge ? &dev->ops->merge[dtype] : &dev->ops->kv_append[dtype];
    int need = st == XATTN_OK && !k->kernel;
    pthread_mutex_unlock(&dev->lock);
    if (need) {
        char opts[64] = "";
        xattn_options_dtype(opts, sizeof opts, "IO", dtype);
        cl_program prog;
        st = ocl_program_get(dev, "ops", opts, &prog);
        ocl_kernel made;
        if (st == XATTN_OK)
            st = ocl_kernel_create(dev, prog, merge ? "merge_states" : "kv_append", &made);
        if (st == XATTN_OK) {
            pthread_mutex_lock(&dev->lock);
            if (!k->kernel) {
                *k = made;
            } else {
                ocl_kernel_release(dev, &made); /* another thread was first */
            }
            pthread_mutex_unlock(&dev->lock);
        }
    }
    if (st == XATTN_OK) *out = k;
    return st;
}

void ocl_ops_release(xattn_device *dev)
{
    if (!dev->ops) return;
    for (int i = 0; i < NUM_DTYPES; i++) {
        ocl_kernel_release(dev, &dev->ops->kv_append[i]);
        ocl_kernel_release(dev, &dev->ops->merge[i]);
    }
    free(dev->ops);
    dev->ops = NULL;
}


xattn_status ocl_kv_append(xattn_device *dev, const xattn_kv_append_launch *l)
{
    ocl_kernel *k;
    XATTN_TRY(ops_kernel(dev, l->dtype, 0, &k));
    cl_long heads = l->num_kv_heads, dqk = l->dqk, dv = l->dv, ps = l->page_size;
    cl_long num_slots = l->num_pages * l->page_size, slots_st = 1;
    cl_ulong kn_off = l->k_new.offset, vn_off = l->v_new.offset, s_off = l->slots.offset;
    cl_ulong kc_off = l->k_cache.offset, vc_off = l->v_cache.offset;
    cl_long kn_st = l->kn_st, kn_sh = l->kn_sh, vn_st = l->vn_st, vn_sh = l->vn_sh;
    cl_long kc_sp = l->kc_sp, kc_st = l->kc_st, kc_sh = l->kc_sh;
    cl_long vc_sp = l->vc_sp, vc_st = l->vc_st, vc_sh = l->vc_sh;
    const ocl_arg args[] = {
        OCL_ARG(heads), OCL_ARG(dqk), OCL_ARG(dv), OCL_ARG(ps), OCL_ARG(num_slots),
        OCL_ARG(l->k_new.native), OCL_ARG(kn_off), OCL_ARG(l->v_new.native), OCL_ARG(vn_off),
        OCL_ARG(l->slots.native), OCL_ARG(s_off), OCL_ARG(slots_st),
        OCL_ARG(l->k_cache.native), OCL_ARG(kc_off), OCL_ARG(l->v_cache.native), OCL_ARG(vc_off),
        OCL_ARG(kn_st), OCL_ARG(kn_sh), OCL_ARG(vn_st), OCL_ARG(vn_sh),
        OCL_ARG(kc_sp), OCL_ARG(kc_st), OCL_ARG(kc_sh), OCL_ARG(vc_sp), OCL_ARG(vc_st),
        OCL_ARG(vc_sh),
    };
    size_t global[2] = {(size_t)heads, (size_t)l->n};
    return ocl_launch(dev, k, (int)XATTN_ARRAY_SIZE(args), args, 2, global, NULL);
}

xattn_status ocl_merge_states(xattn_device *dev, const xattn_merge_launch *l)
{
    ocl_kernel *k;
    XATTN_TRY(ops_kernel(dev, l->dtype, 1, &k));
    cl_long n = l->n, heads = l->heads, dim = l->dim;
    cl_ulong oa_off = l->o_a.offset, ob_off = l->o_b.offset, o_off = l->o.offset;
    cl_ulong la_off = l->lse_a.offset, lb_off = l->lse_b.offset, l_off = l->lse.offset;
    cl_long oa_st = l->oa_st, oa_sh = l->oa_sh, ob_st = l->ob_st, ob_sh = l->ob_sh;
    cl_long o_st = l->o_st, o_sh = l->o_sh, la_sh = l->la_sh, la_st = l->la_st;
    cl_long lb_sh = l->lb_sh, lb_st = l->lb_st, l_sh = l->l_sh, l_st = l->l_st;
    const ocl_arg args[] = {
        OCL_ARG(n), OCL_ARG(heads), OCL_ARG(dim),
        OCL_ARG(l->o_a.native), OCL_ARG(oa_off), OCL_ARG(oa_st), OCL_ARG(oa_sh),
        OCL_ARG(l->o_b.native), OCL_ARG(ob_off), OCL_ARG(ob_st), OCL_ARG(ob_sh),
        OCL_ARG(l->o.native), OCL_ARG(o_off), OCL_ARG(o_st), OCL_ARG(o_sh),
        OCL_ARG(l->lse_a.native), OCL_ARG(la_off), OCL_ARG(la_sh), OCL_ARG(la_st),
        OCL_ARG(l->lse_b.native), OCL_ARG(lb_off), OCL_ARG(lb_sh), OCL_ARG(lb_st),
        OCL_ARG(l->lse.native), OCL_ARG(l_off), OCL_ARG(l_sh), OCL_ARG(l_st),
    };
    size_t global[2] = {(size_t)heads, (size_t)n};
    return ocl_launch(dev, k, (int)XATTN_ARRAY_SIZE(args), args, 2, global, NULL);
}
