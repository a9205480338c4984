/* kv_append and merge_states for the CPU backend. Both stream memory once,
 * so plain C on the pool's threads over tokens is as fast as the memory
 * allows. */
#include <math.h>
#include <string.h>

#include "cpu_kernels.h"
#include "half.h"

/* Below this many elements a parallel region costs more than it saves. */
enum { PARALLEL_MIN_ELEMS = 1 << 15 };

static const char *cref(xattn_ref r) { return (const char *)r.native + r.offset; }
static char *mref(xattn_ref r) { return (char *)r.native + r.offset; }

static size_t dtype_bytes(xattn_dtype t) { return t == XATTN_F32 ? 4 : 2; }

static void kv_append_job(void *arg, const xattn_cpu_team *team)
{
    const xattn_kv_append_launch *l = arg;
    const size_t e = dtype_bytes(l->dtype);
    const int32_t *slots = (const int32_t *)cref(l->slots);
    const char *kn = cref(l->k_new), *vn = cref(l->v_new);
    char *kc = mref(l->k_cache), *vc = mref(l->v_cache);
    const int64_t n = l->n, heads = l->num_kv_heads;
    int64_t t0, t1;
    xattn_cpu_team_share(team, n, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t slot = slots[t];
        if (slot < 0) continue; /* −1: this token is not stored */
        const int64_t page = slot / l->page_size, off = slot % l->page_size;
        for (int64_t h = 0; h < heads; h++) {
            memcpy(kc + (page * l->kc_sp + off * l->kc_st + h * l->kc_sh) * (int64_t)e,
                   kn + (t * l->kn_st + h * l->kn_sh) * (int64_t)e, (size_t)l->dqk * e);
            memcpy(vc + (page * l->vc_sp + off * l->vc_st + h * l->vc_sh) * (int64_t)e,
                   vn + (t * l->vn_st + h * l->vn_sh) * (int64_t)e, (size_t)l->dv * e);
        }
    }
}

void xattn_cpu_kv_append(const xattn_kv_append_launch *l, xattn_cpu_pool *pool)
{
    const int parallel = l->n * l->num_kv_heads * (l->dqk + l->dv) >= PARALLEL_MIN_ELEMS;
    xattn_cpu_pool_run(pool, parallel ? xattn_cpu_pool_threads(pool) : 1, kv_append_job,
                       (void *)l);
}

static float load_elem(const char *p, xattn_dtype t, int64_t i)
{
    if (t == XATTN_F32) return ((const float *)p)[i];
    uint16_t h;
    memcpy(&h, p + i * 2, sizeof h);
    return t == XATTN_F16 ? xattn_f16_to_f32(h) : xattn_bf16_to_f32(h);
}

static void store_elem(char *p, xattn_dtype t, int64_t i, float x)
{
    if (t == XATTN_F32) {
        ((float *)p)[i] = x;
        return;
    }
    uint16_t h = t == XATTN_F16 ? xattn_f32_to_f16(x) : xattn_f32_to_bf16(x);
    memcpy(p + i * 2, &h, sizeof h);
}

static void merge_job(void *arg, const xattn_cpu_team *team)
{
    const xattn_merge_launch *l = arg;
    const int64_t e = (int64_t)dtype_bytes(l->dtype);
    const char *oa = cref(l->o_a), *ob = cref(l->o_b);
    const float *la = (const float *)cref(l->lse_a), *lb = (const float *)cref(l->lse_b);
    char *o = mref(l->o);
    float *lse = (float *)mref(l->lse);
    const int64_t rows = l->n * l->heads, dim = l->dim;
    int64_t x0, x1;
    xattn_cpu_team_share(team, rows, &x0, &x1);
    for (int64_t x = x0; x < x1; x++) {
        const int64_t t = x / l->heads, h = x % l->heads;
        const float a = la[h * l->la_sh + t * l->la_st], b = lb[h * l->lb_sh + t * l->lb_st];
        const char *ra = oa + (t * l->oa_st + h * l->oa_sh) * e;
        const char *rb = ob + (t * l->ob_st + h * l->ob_sh) * e;
        char *ro = o + (t * l->o_st + h * l->o_sh) * e;
        /* In place (o == o_a) is safe: each element is read before it is
         * written, and rows never straddle. */
        if (a == -INFINITY && b == -INFINITY) {
            for (int64_t d = 0; d < dim; d++) store_elem(ro, l->dtype, d, 0.0f);
            lse[h * l->l_sh + t * l->l_st] = -INFINITY;
            continue;
        }
        /* Weights relative to the larger LSE, so nothing overflows. A NaN
         * LSE makes m or a weight NaN, a +inf one inf − inf: the row is
         * NaN. A side of LSE −inf has weight 0 and its O is not read (it
         * may be anything: a state over no key); any other side's O is,
         * so a NaN there shows even where its weight rounds to 0. */
        const float m = a > b ? a : b;
        const float wa = expf(a - m), wb = expf(b - m);
        const float inv = 1.0f / (wa + wb);
        const float ca = wa * inv, cb = wb * inv;
        for (int64_t d = 0; d < dim; d++) {
            float va = a != -INFINITY ? load_elem(ra, l->dtype, d) * ca : 0.0f;
            float vb = b != -INFINITY ? load_elem(rb, l->dtype, d) * cb : 0.0f;
            store_elem(ro, l->dtype, d, va + vb);
        }
        lse[h * l->l_sh + t * l->l_st] = m + logf(wa + wb);
    }
}

void xattn_cpu_merge_states(const xattn_merge_launch *l, xattn_cpu_pool *pool)
{
    const int parallel = l->n * l->heads * l->dim >= PARALLEL_MIN_ELEMS;
    xattn_cpu_pool_run(pool, parallel ? xattn_cpu_pool_threads(pool) : 1, merge_job,
                       (void *)l);
}
