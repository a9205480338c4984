/* Built-in CPU backend: host glue (device, buffers) and kernel dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#  include <sys/mman.h>
#endif

#include "backend.h"
#include "cpu_kernels.h"
#include "error.h"
#include "plan_cpu.h"

struct xattn_device {
    const xattn_cpu_isa *isa; /* the kernel build every plan of this device uses */
    xattn_cpu_pool *pool;     /* caps.compute_units threads, the caller's included */
};

/* XATTN_CPU_ISA (auto | avx512 | avx2 | generic) pins the kernel build, so
 * the portable builds can be tested on a machine that has the wide ones. */
#define CPU_ISA_ENV "XATTN_CPU_ISA"

/* The widest kernel build this CPU runs, or the one XATTN_CPU_ISA names. */
static xattn_status pick_isa(const xattn_cpu_isa **out)
{
    const char *want = getenv(CPU_ISA_ENV);
    if (want && (!*want || !strcmp(want, "auto"))) want = NULL;
    if (want && strcmp(want, "avx512") && strcmp(want, "avx2") && strcmp(want, "generic"))
        return xattn_error(XATTN_ERR_INVALID_ENV,
                           "%s=%s: valid values are auto, avx512, avx2, generic", CPU_ISA_ENV,
                           want);
    const xattn_cpu_isa *isas;
    int n = xattn_cpu_isa_list(&isas); /* runnable builds, widest first */
    for (int i = 0; i < n; i++)
        if (!want || !strcmp(want, isas[i].name)) {
            *out = &isas[i];
            return XATTN_OK;
        }
    return xattn_error(XATTN_ERR_UNSUPPORTED, "%s=%s: this CPU cannot run that kernel build",
                       CPU_ISA_ENV, want);
}

static int32_t cpu_probe(char *reason, size_t reason_size)
{
    if (reason_size) reason[0] = '\0';
    return 1;
}

static xattn_status cpu_device_open(int32_t index, const xattn_context_options *opts,
                                    xattn_device **out, xattn_device_caps *caps)
{
    (void)index;
    if (opts->native_queue)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "options.native_queue: the cpu backend has no queue; pass NULL");
    const xattn_cpu_isa *isa = NULL;
    XATTN_TRY(pick_isa(&isa));
    xattn_device *dev = calloc(1, sizeof *dev);
    if (!dev) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: out of memory");
    xattn_host_cpu_caps(opts->num_threads, caps);
    /* Plans pad head dims to the vectors of the build that will run them. */
    caps->simd_width = (uint32_t)isa->lanes;
    caps->vector_bytes = (uint32_t)isa->lanes * 4u;
    snprintf(caps->name, sizeof caps->name, "host CPU, %u thread%s, %s kernels",
             caps->compute_units, caps->compute_units == 1 ? "" : "s", isa->name);
    dev->isa = isa;
    /* The threads start here, not in a run: a run must not allocate, and
     * a failure here is a status, not an exit. */
    xattn_status st = xattn_cpu_pool_create((int32_t)caps->compute_units, &dev->pool);
    if (st != XATTN_OK) {
        free(dev);
        return st;
    }
    *out = dev;
    return XATTN_OK;
}

static void cpu_device_close(xattn_device *dev)
{
    xattn_cpu_pool_destroy(dev->pool);
    free(dev);
}

static xattn_status cpu_synchronize(xattn_device *dev)
{
    (void)dev;
    return XATTN_OK;
}

enum {
    CPU_BUFFER_ALIGN = 64,
    /* Buffers from this size on are aligned to and advised for transparent
     * huge pages: attention reads one KV head's slice of every token, a
     * stride that touches a new 4 KiB page per key and thrashes the TLB. */
    CPU_HUGE_PAGE = 2 * 1024 * 1024,
};

static xattn_status cpu_buffer_alloc(xattn_device *dev, size_t bytes, void **native)
{
    (void)dev;
    size_t align = bytes >= CPU_HUGE_PAGE ? CPU_HUGE_PAGE : CPU_BUFFER_ALIGN;
    size_t rounded = (bytes + align - 1) / align * align;
    if (rounded < bytes) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: %zu bytes overflow", bytes);
    void *p = aligned_alloc(align, rounded);
    if (!p) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: cannot allocate %zu bytes", bytes);
#if defined(MADV_HUGEPAGE)
    if (align == CPU_HUGE_PAGE) (void)madvise(p, rounded, MADV_HUGEPAGE); /* a hint only */
#endif
    *native = p;
    return XATTN_OK;
}

static void cpu_buffer_free(xattn_device *dev, void *native)
{
    (void)dev;
    free(native);
}

static xattn_status cpu_buffer_write(xattn_device *dev, void *native, size_t offset,
                                     const void *src, size_t bytes)
{
    (void)dev;
    memcpy((char *)native + offset, src, bytes);
    return XATTN_OK;
}

static xattn_status cpu_buffer_read(xattn_device *dev, const void *native, size_t offset,
                                    void *dst, size_t bytes)
{
    (void)dev;
    memcpy(dst, (const char *)native + offset, bytes);
    return XATTN_OK;
}

static void *cpu_buffer_host_ptr(xattn_device *dev, void *native)
{
    (void)dev;
    return native;
}

/* Kernel build chosen for a plan at prepare time. */
typedef struct cpu_attn_state {
    const xattn_cpu_isa *isa;
} cpu_attn_state;

static xattn_status cpu_attn_prepare(xattn_device *dev, const struct xattn_plan *plan,
                                     void **state)
{
    *state = NULL;
    const xattn_attn_plan_params *p = &plan->params;
    xattn_cpu_scratch lay = {0};
    if (p->style != XATTN_DEVICE_STYLE_CPU || p->gqa_pack < 1 ||
        plan->prob.group % p->gqa_pack || p->threads < 1 || p->kv_splits < 1 ||
        (p->kv_splits > 1 && p->kv_split_len < 1) ||
        !xattn_cpu_scratch_layout(p, &lay) || lay.total > p->local_mem_bytes)
        return xattn_error(XATTN_ERR_INTERNAL,
                           "cpu: plan does not fit the CPU kernels (style %d, gqa_pack %d, "
                           "scratch %zu of %zu bytes)",
                           (int)p->style, (int)p->gqa_pack, lay.total, p->local_mem_bytes);

    const xattn_cpu_isa *pick = dev->isa;
    /* The kernel's vectors must tile the plan's padded head dims; the caps
     * the planner saw say so, this only guards the contract. */
    if (p->dqk_pad % pick->lanes || p->dv_pad % pick->lanes)
        return xattn_error(XATTN_ERR_INTERNAL,
                           "cpu: head dims padded to %d/%d do not fit the %s kernels' %d lanes",
                           (int)p->dqk_pad, (int)p->dv_pad, pick->name, (int)pick->lanes);

    cpu_attn_state *st = calloc(1, sizeof *st);
    if (!st) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: out of memory");
    st->isa = pick;
    xattn_log(XATTN_LOG_DEBUG, "cpu: attention kernel %s for block_q %d, block_k %d",
              pick->name, (int)p->block_q, (int)p->block_k);
    *state = st;
    return XATTN_OK;
}

static void cpu_attn_release(xattn_device *dev, void *state)
{
    (void)dev;
    free(state);
}

static xattn_status cpu_attn_run(xattn_device *dev, const struct xattn_plan *plan,
                                 const void *state, const xattn_attn_launch *l)
{
    const cpu_attn_state *st = state;
    st->isa->attn(plan, l, dev->pool);
    return XATTN_OK;
}

static xattn_status cpu_kv_append(xattn_device *dev, const xattn_kv_append_launch *l)
{
    xattn_cpu_kv_append(l, dev->pool);
    return XATTN_OK;
}

static xattn_status cpu_merge_states(xattn_device *dev, const xattn_merge_launch *l)
{
    xattn_cpu_merge_states(l, dev->pool);
    return XATTN_OK;
}

/* MoE: the expert GEMMs come from the device's kernel build; route,
 * dispatch and combine are portable C. */
typedef struct cpu_moe_state {
    const xattn_cpu_isa *isa;
} cpu_moe_state;

static xattn_status cpu_moe_prepare(xattn_device *dev, const struct xattn_moe_plan *plan,
                                    void **state)
{
    *state = NULL;
    const xattn_moe_plan_params *p = &plan->params;
    if (p->style != XATTN_DEVICE_STYLE_CPU || p->threads < 1 || p->align < 1 ||
        p->scratch_bytes < (size_t)p->threads * p->scratch_per_thread)
        return xattn_error(XATTN_ERR_INTERNAL,
                           "cpu: MoE plan does not fit the CPU kernels (style %d, threads %d, "
                           "scratch %zu for %zu per thread)",
                           (int)p->style, (int)p->threads, p->scratch_bytes,
                           p->scratch_per_thread);
    cpu_moe_state *st = calloc(1, sizeof *st);
    if (!st) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "cpu: out of memory");
    st->isa = dev->isa;
    *state = st;
    return XATTN_OK;
}

static void cpu_moe_release(xattn_device *dev, void *state)
{
    (void)dev;
    free(state);
}

static xattn_status cpu_moe_run(xattn_device *dev, const struct xattn_moe_plan *plan,
                                const void *state, xattn_moe_op op, const xattn_moe_launch *l)
{
    const cpu_moe_state *st = state;
    switch (op) {
    case XATTN_MOE_OP_ROUTE: xattn_cpu_moe_route(plan, l, dev->pool); return XATTN_OK;
    case XATTN_MOE_OP_DISPATCH: xattn_cpu_moe_dispatch(plan, l, dev->pool); return XATTN_OK;
    case XATTN_MOE_OP_EXPERTS: st->isa->moe_experts(plan, l, dev->pool); return XATTN_OK;
    case XATTN_MOE_OP_COMBINE: xattn_cpu_moe_combine(plan, l, dev->pool); return XATTN_OK;
    }
    return xattn_error(XATTN_ERR_INTERNAL, "cpu: unknown MoE op %d", (int)op);
}

static const xattn_backend_vtable cpu_vtable = {
    .abi_version = XATTN_BACKEND_ABI_VERSION,
    .name = "cpu",
    .probe = cpu_probe,
    .device_open = cpu_device_open,
    .device_close = cpu_device_close,
    .synchronize = cpu_synchronize,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .buffer_write = cpu_buffer_write,
    .buffer_read = cpu_buffer_read,
    .buffer_host_ptr = cpu_buffer_host_ptr,
    .attn_prepare = cpu_attn_prepare,
    .attn_release = cpu_attn_release,
    .attn_run = cpu_attn_run,
    .kv_append = cpu_kv_append,
    .merge_states = cpu_merge_states,
    .moe_prepare = cpu_moe_prepare,
    .moe_release = cpu_moe_release,
    .moe_run = cpu_moe_run,
};

const xattn_backend_vtable *xattn_cpu_backend_entry(void) { return &cpu_vtable; }
