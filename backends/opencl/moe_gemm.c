/* MoE expert GEMMs of both kernel styles: the gate/up GEMM with the
 * activation in its epilogue (x_perm → h, f32 in the workspace), then the
 * down GEMM (h → y). One program per plan holds both kernels of its style
 * (kernels/moe_gemm_cpu.cl or kernels/moe_gemm_gpu.cl); its options are the
 * dtypes, the activation (with SWIGLU_CLAMPED's α and limit as float
 * literals), the W1 layout, which biases the layer has and the tile sizes,
 * while H, I, rows, experts and every stride and offset are kernel
 * arguments. The biases are added and the activation applied in the GEMMs'
 * epilogues, so they cost no pass of their own.
 *
 * Neither style reads expert_offsets on the host: dimension 1 of the grid
 * counts virtual row tiles, rows / block_m + E of them, enough for any
 * segment layout (see the kernels), and tiles without rows return at once.
 *
 * CPU style (PoCL): the plan's CPU tiles are reinterpreted for the
 * rows-in-lanes microkernel of moe_gemm_cpu.cl. block_m is rounded up to
 * whole row groups of CPU_LANES rows; block_n is kept (rounded to whole
 * register blocks); the plan's block_k sizes an L1 panel of
 * XATTN_CPU_MOE_TILE_COLS weight rows, while this kernel's L1 working set
 * per K chunk is CPU_LANES transposed rows plus CPU_NW weight rows, so the
 * K chunk is block_k · TILE_COLS / (CPU_LANES + CPU_NW); block_m grows to
 * as many rows as fit L2 with a K chunk of each (see cpu_options). Tiles of
 * few rows switch to K in lanes inside the kernel.
 *
 * GPU style: local-memory tiles of the plan (block_m, block_n, block_k,
 * threads); each work-item owns TM × TN outputs (per pair) in registers,
 * TM and TN chosen here so the threads tile the block exactly. The plan's
 * stages are not used: one buffer, two barriers per K step. */
#include <stdlib.h>
#include <string.h>

#include "ocl.h"
#include "plan_moe_cpu.h"

enum {
    CPU_LANES = 16,  /* rows per float16 vector */
    CPU_NW = 8,      /* weight rows of a register block */
    /* Tiles of at most this many rows keep K in the lanes (measured on
     * PoCL, 2-core Zen 4: at par with the CPU backend up to 32 rows, where
     * rows in lanes lost up to 3× below 16), CPU_PAIR_ROWS rows at a time:
     * PAIR_ROWS · NW accumulators and NW weight vectors fill the 32 vector
     * registers of AVX-512. */
    CPU_FEW_ROWS = 32,
    CPU_PAIR_ROWS = 2,
    CPU_MIN_KC = 16, /* K chunks are whole vectors of a panel row */
    CPU_MAX_BM = 256, /* transposed rows of a K chunk: 256 KiB of L2 at KC 256 */
    OPTIONS_SIZE = 768,
    GPU_F32_BYTES = 4, /* the GPU kernel stages A and B as f32 */
    GPU_LDS_PAD = 1,   /* LDS_PAD of moe_gemm_gpu.cl: local tile rows are padded */
};

struct ocl_moe_gemm {
    int cpu;                 /* CPU style */
    ocl_kernel up, down;
    int64_t block_m;         /* rows of a tile (both GEMMs) */
    int64_t up_bn, down_bn;  /* columns of a tile (gate/up: gate columns) */
    size_t up_threads, down_threads; /* work-items per group (GPU) */
};

static int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }
static int64_t round_up(int64_t x, int64_t m) { return ceil_div(x, m) * m; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* K chunk of the CPU kernel for the plan's block_k over reduction k. */
static int64_t cpu_kc(const xattn_moe_gemm_tiles *t, int64_t k)
{
    int64_t kc = (int64_t)t->block_k * XATTN_CPU_MOE_TILE_COLS / (CPU_LANES + CPU_NW);
    kc = max64(kc / CPU_MIN_KC * CPU_MIN_KC, CPU_MIN_KC);
    return min64(kc, round_up(k, CPU_MIN_KC));
}

/* Bytes of the CPU kernel's __local arrays for a tile of bm rows, wn
 * weight rows and K chunk kc: the transposed A chunk, the panel and the
 * partial sums (moe_gemm_cpu.cl). */
static size_t cpu_local_bytes(int64_t bm, int64_t wn, int64_t kc)
{
    int64_t floats = bm * kc + CPU_NW * kc + bm * round_up(wn, CPU_NW);
    return (size_t)floats * sizeof(float);
}

static xattn_status cpu_options(xattn_device *dev, const xattn_moe_plan_params *p,
                                const xattn_moe_desc *d, ocl_moe_gemm *g, char *opts,
                                size_t size)
{
    /* The plan's block_m rows of all of K fill half of L2; this kernel
     * keeps only a K chunk of its rows there, so as many more rows fit,
     * each reusing a weight panel: up to CPU_MAX_BM, and no more than a
     * segment can hold (the planner's bound). */
    int64_t kc_up = cpu_kc(&p->up, d->hidden), kc_down = cpu_kc(&p->down, d->inter);
    int64_t bm = min64(p->up.block_m * ceil_div(d->hidden, kc_up),
                       p->down.block_m * ceil_div(d->inter, kc_down));
    const int64_t seg_rows = (int64_t)d->max_tokens + (p->align > 1 ? p->align - 1 : 0);
    bm = min64(min64(bm, CPU_MAX_BM), seg_rows);
    g->block_m = round_up(max64(bm, 1), CPU_LANES);
    g->up_bn = round_up(min64(p->up.block_n, d->inter), CPU_NW / 2);
    g->down_bn = round_up(min64(p->down.block_n, d->hidden), CPU_NW);
    /* The kernels' __local arrays must fit the device: smaller K chunks,
     * then fewer rows, until they do (any sizes are correct). */
    for (;;) {
        size_t need = cpu_local_bytes(g->block_m, g->up_bn * 2, kc_up);
        size_t down = cpu_local_bytes(g->block_m, g->down_bn, kc_down);
        if (down > need) need = down;
        if (need <= dev->local_mem_bytes) break;
        if (kc_up > CPU_MIN_KC || kc_down > CPU_MIN_KC) {
            kc_up = max64(kc_up / 2 / CPU_MIN_KC * CPU_MIN_KC, CPU_MIN_KC);
            kc_down = max64(kc_down / 2 / CPU_MIN_KC * CPU_MIN_KC, CPU_MIN_KC);
        } else if (g->block_m > CPU_LANES) {
            g->block_m -= CPU_LANES;
        } else {
            return xattn_error(XATTN_ERR_UNSUPPORTED, "opencl: %zu bytes of local memory are "
                               "too few for the MoE GEMMs", dev->local_mem_bytes);
        }
    }
    int bad = xattn_options_add(opts, size, " -DLANES=%d -DNW=%d -DFEW_ROWS=%d -DPAIR_ROWS=%d",
                              CPU_LANES, CPU_NW, CPU_FEW_ROWS, CPU_PAIR_ROWS);
    bad |= xattn_options_add(opts, size, " -DUP_BM=%lld -DUP_BN=%lld -DUP_KC=%lld",
                           (long long)g->block_m, (long long)g->up_bn,
                           (long long)kc_up);
    bad |= xattn_options_add(opts, size, " -DDOWN_BM=%lld -DDOWN_BN=%lld -DDOWN_KC=%lld",
                           (long long)g->block_m, (long long)g->down_bn,
                           (long long)kc_down);
    return bad ? xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE GEMM options too long") : XATTN_OK;
}

/* Per-thread register block TM × TN of a bm × bn tile for `threads`
 * work-items laid out TY × TX (TX = bn / TN, TY = bm / TM): the most square
 * one, so a k step loads the fewest operands per FMA. */
static int gpu_thread_block(int64_t bm, int64_t bn, int64_t threads, int64_t *tm, int64_t *tn)
{
    int found = 0;
    for (int64_t n = 1; n <= bn; n++) {
        if (bn % n || threads % (bn / n)) continue;
        int64_t ty = threads / (bn / n);
        if (bm % ty) continue;
        int64_t m = bm / ty;
        if (!found || max64(m, n) < max64(*tm, *tn)) {
            *tm = m;
            *tn = n;
            found = 1;
        }
    }
    return found;
}

static xattn_status gpu_gemm_options(xattn_device *dev, const char *name,
                                     const xattn_moe_gemm_tiles *t, int pairs, int64_t k,
                                     char *opts, size_t size)
{
    int64_t tm = 0, tn = 0;
    if (!gpu_thread_block(t->block_m, t->block_n, t->threads, &tm, &tn))
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "opencl: no thread layout for a %d × %d MoE tile of %d threads",
                           (int)t->block_m, (int)t->block_n, (int)t->threads);
    /* The plan sized local memory for its staged dtypes; this kernel stages
     * f32, so a smaller K step keeps the tile inside the device's memory
     * (any K step is correct). */
    int64_t bk = min64(t->block_k, k);
    while (bk > 1 && (size_t)((t->block_m + pairs * t->block_n + 2 * GPU_LDS_PAD) * bk *
                              GPU_F32_BYTES) > dev->local_mem_bytes)
        bk /= 2;
    int bad = xattn_options_add(opts, size,
                              " -D%s_BM=%d -D%s_BN=%d -D%s_BK=%lld -D%s_THREADS=%d"
                              " -D%s_TM=%lld -D%s_TN=%lld",
                              name, (int)t->block_m, name, (int)t->block_n, name, (long long)bk,
                              name, (int)t->threads, name, (long long)tm, name, (long long)tn);
    return bad ? xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE GEMM options too long") : XATTN_OK;
}

static xattn_status gpu_options(xattn_device *dev, const xattn_moe_plan_params *p,
                                const xattn_moe_desc *d, ocl_moe_gemm *g, char *opts,
                                size_t size)
{
    if (p->up.block_m != p->down.block_m)
        return xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE GEMMs with different block_m");
    g->block_m = p->up.block_m;
    g->up_bn = p->up.block_n;
    g->down_bn = p->down.block_n;
    g->up_threads = (size_t)p->up.threads;
    g->down_threads = (size_t)p->down.threads;
    XATTN_TRY(gpu_gemm_options(dev, "UP", &p->up, 2, d->hidden, opts, size));
    return gpu_gemm_options(dev, "DOWN", &p->down, 1, d->inter, opts, size);
}

xattn_status ocl_moe_gemm_prepare(xattn_device *dev, const struct xattn_moe_plan *plan,
                                  ocl_moe_gemm **out)
{
    const xattn_moe_plan_params *p = &plan->params;
    const xattn_moe_desc *d = &plan->prob.desc;
    *out = NULL;
    ocl_moe_gemm *g = calloc(1, sizeof *g);
    if (!g) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "opencl: out of memory");
    g->cpu = p->style == XATTN_DEVICE_STYLE_CPU;

    char opts[OPTIONS_SIZE] = "";
    /* BDT is defined without biases too (f32 then), so ELEM(BDT) compiles. */
    int bad = xattn_options_dtype(opts, sizeof opts, "XDT", d->dtype);
    bad |= xattn_options_dtype(opts, sizeof opts, "WDT", d->weight_dtype);
    bad |= xattn_options_dtype(opts, sizeof opts, "BDT", d->bias_dtype);
    bad |= xattn_options_add(opts, sizeof opts, " -DACT_GEGLU=%d -DW1_IL=%d -DHAS_B1=%d -DHAS_B2=%d",
                           d->activation == XATTN_MOE_GEGLU,
                           (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0,
                           (d->flags & XATTN_MOE_EXPERT_B1) != 0,
                           (d->flags & XATTN_MOE_EXPERT_B2) != 0);
    /* Hexadecimal float literals carry α and the limit exactly. */
    if (d->activation == XATTN_MOE_SWIGLU_CLAMPED)
        bad |= xattn_options_add(opts, sizeof opts,
                               " -DACT_CLAMPED=1 -DACT_ALPHA=%af -DACT_LIMIT=%af",
                               (double)plan->prob.alpha, (double)plan->prob.limit);
    xattn_status st = bad ? xattn_error(XATTN_ERR_INTERNAL, "opencl: MoE GEMM options too long")
                    : g->cpu ? cpu_options(dev, p, d, g, opts, sizeof opts)
                             : gpu_options(dev, p, d, g, opts, sizeof opts);
    cl_program prog = NULL;
    if (st == XATTN_OK)
        st = ocl_program_get(dev, g->cpu ? "moe_gemm_cpu" : "moe_gemm_gpu", opts, &prog);
    if (st == XATTN_OK)
        st = ocl_kernel_create(dev, prog, g->cpu ? "moe_up_cpu" : "moe_up_gpu", &g->up);
    if (st == XATTN_OK)
        st = ocl_kernel_create(dev, prog, g->cpu ? "moe_down_cpu" : "moe_down_gpu", &g->down);
    if (st != XATTN_OK) {
        ocl_moe_gemm_release(dev, g);
        return st;
    }
    *out = g;
    return XATTN_OK;
}

void ocl_moe_gemm_release(xattn_device *dev, ocl_moe_gemm *g)
{
    if (!g) return;
    ocl_kernel_release(dev, &g->up);
    ocl_kernel_release(dev, &g->down);
    free(g);
}

/* Launch one GEMM over column tiles × virtual row tiles. */
static xattn_status launch_gemm(xattn_device *dev, const ocl_moe_gemm *g, ocl_kernel *k,
                                int nargs, const ocl_arg *args, int64_t n, int64_t bn,
                                size_t threads, int64_t row_tiles)
{
    size_t group = g->cpu ? 1 : threads;
    size_t global[2] = {(size_t)ceil_div(n, bn) * group, (size_t)row_tiles};
    size_t local[2] = {group, 1};
    return ocl_launch(dev, k, nargs, args, 2, global, local);
}

xattn_status ocl_moe_gemm_run(xattn_device *dev, const struct xattn_moe_plan *plan,
                              ocl_moe_gemm *g, const xattn_moe_launch *l)
{
    const xattn_moe_desc *d = &plan->prob.desc;
    const xattn_moe_plan_params *p = &plan->params;
    if (l->rows <= 0) return XATTN_OK; /* nothing to read or write */
    cl_long H = d->hidden, I = d->inter, rows = l->rows;
    cl_int experts = d->num_experts;
    cl_ulong off_off = l->expert_offsets.offset, x_off = l->x_perm.offset;
    cl_ulong w1_off = l->w1.offset, w2_off = l->w2.offset, y_off = l->y.offset;
    cl_ulong h_off = l->workspace.offset + p->h_offset;
    cl_long off_st = l->offsets_st, x_st = l->x_perm_st, y_st = l->y_st;
    cl_long w1_se = l->w1_se, w1_sn = l->w1_sn, w2_se = l->w2_se, w2_sn = l->w2_sn;
    /* Absent biases go as NULL buffers, which the kernels never read. */
    cl_ulong b1_off = l->b1.offset, b2_off = l->b2.offset;
    cl_long b1_se = l->b1_se, b2_se = l->b2_se;
    /* Every segment fits rows / block_m + E virtual tiles (see the kernels). */
    const int64_t row_tiles = rows / g->block_m + experts;

    const ocl_arg up_args[] = {
        OCL_ARG(H), OCL_ARG(I), OCL_ARG(rows), OCL_ARG(experts),
        OCL_ARG(l->expert_offsets.native), OCL_ARG(off_off), OCL_ARG(off_st),
        OCL_ARG(l->x_perm.native), OCL_ARG(x_off), OCL_ARG(x_st),
        OCL_ARG(l->w1.native), OCL_ARG(w1_off), OCL_ARG(w1_se), OCL_ARG(w1_sn),
        OCL_ARG(l->workspace.native), OCL_ARG(h_off),
        OCL_ARG(l->b1.native), OCL_ARG(b1_off), OCL_ARG(b1_se),
    };
    XATTN_TRY(launch_gemm(dev, g, &g->up, (int)XATTN_ARRAY_SIZE(up_args), up_args, I, g->up_bn,
                          g->up_threads, row_tiles));
    const ocl_arg down_args[] = {
        OCL_ARG(I), OCL_ARG(H), OCL_ARG(rows), OCL_ARG(experts),
        OCL_ARG(l->expert_offsets.native), OCL_ARG(off_off), OCL_ARG(off_st),
        OCL_ARG(l->workspace.native), OCL_ARG(h_off),
        OCL_ARG(l->w2.native), OCL_ARG(w2_off), OCL_ARG(w2_se), OCL_ARG(w2_sn),
        OCL_ARG(l->y.native), OCL_ARG(y_off), OCL_ARG(y_st),
        OCL_ARG(l->b2.native), OCL_ARG(b2_off), OCL_ARG(b2_se),
    };
    return launch_gemm(dev, g, &g->down, (int)XATTN_ARRAY_SIZE(down_args), down_args, H,
                       g->down_bn, g->down_threads, row_tiles);
}
