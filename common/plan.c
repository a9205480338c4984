/* The vendor-neutral attention planner: device caps + validated problem in,
 * plan parameters out. Pure: no I/O, no allocation, no globals; a failure
 * leaves its message with xattn_error() like every other entry point.
 *
 * CPU-style devices get their tiles from xattn_plan_cpu_tiles()
 * (common/plan_cpu.c); GPU-style devices get them here. Everything after the
 * tiles (work list, KV splits, workspace) is shared.
 *
 * GPU tiles, FlashAttention-2/3 style. One group owns block_q query rows
 * (GQA heads packed in) and walks the keys block_k at a time. Its warps
 * (threads / simd_width of them) form a warps_m × warps_n grid:
 *
 *   warps_m = min(warps, block_q / matrix_m)   (1 without matrix units)
 *   warps_n = warps / warps_m
 *
 * A warp owns block_q / warps_m rows. O += P·V is split over Dv columns
 * warps_n ways; S = Q·Kᵀ over keys min(warps_n, block_k / matrix_n) ways
 * (with matrix units, the other warps of the row band wait at the barrier;
 * without, all warps_n). Local memory, in this order, each region starting
 * on a LOCAL_ALIGN boundary:
 *
 *   Q   [block_q][dqk_pad]            dtype
 *   K   [stages][block_k][dqk_pad]    dtype  \ K and V of one stage are
 *   V   [stages][block_k][dv_pad]     dtype  / adjacent: K0 V0 K1 V1 ...
 *   P   [block_q][block_k]            dtype with matrix units, else f32
 *   max/sum [2][warps_n][block_q]     f32
 *
 * P and the row statistics exist only when P must travel between warps:
 * without matrix units, or when warps_n > 1. Otherwise P stays in registers.
 * f32 problems never use matrix units (IEEE fp32 throughout, no TF32).
 *
 * Q in registers (q_in_registers): on wave64 devices with matrix units
 * (CDNA), a tile whose Q region would not fit beside K and V may instead
 * read each warp's Q rows straight from global memory into its matrix
 * operand registers, and keep no Q region. Each warp of a row band then
 * holds the band's Q, (block_q / warps_m) · dqk_pad elements over its
 * lanes, counted with O and S against the register limit. Large head dims
 * need it: MLA's (576, 512) gets 16 × 16 tiles in 64 KiB with Q in local
 * memory, 32 × 16 without. The planner considers it only for a block_q
 * that fits with Q in local memory at no block_k, stage count and warp
 * count, only up to 32 rows (GPU_MAX_Q_REGS_BLOCK_Q says why), and only at
 * 64 lanes, where an MFMA lane has the register file for it (CDNA's 512
 * VGPRs with the accumulation registers) and whose kernels take it (the
 * HIP module's attn_mfma); other kernels run such a plan on their general
 * path.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "text.h"
#include "plan.h"
#include "plan_cpu.h"

enum {
    WORKSPACE_ALIGN = XATTN_WORKSPACE_ALIGN,
    CPU_SLICE_ALIGN = 64,  /* per-thread scratch slices never share a cache line */
    LOCAL_ALIGN = 16,      /* one 128-bit vector load */
    /* A device is full with about this many work items per compute unit. */
    WORK_PER_UNIT = 2,
    /* A KV split keeps at least this many key blocks and keys, so the merge
     * stays cheap next to the split's own work; short KV is never split. */
    MIN_SPLIT_BLOCKS = 4,
    MIN_SPLIT_KEYS = 256,
    /* GPU tiles. */
    GPU_MAX_BLOCK_Q = 128,
    GPU_MIN_BLOCK_Q = 16,  /* below this, only when nothing larger fits */
    /* Tiles with fewer rows read each K/V byte for too few FLOPs to leave
     * the memory bound (decode). */
    GPU_COMPUTE_BOUND_BLOCK_Q = 64,
    GPU_MAX_STAGES = 2,
    GPU_GOOD_BLOCK_K = 64, /* amortises the per-block rescale and barrier */
    GPU_MIN_BLOCK_K = 32,  /* below this, only when nothing larger fits */
    /* NVIDIA gives a thread at most 255 registers, RDNA and CDNA a lane 256
     * VGPRs (AGPRs aside). */
    GPU_MAX_REGS_PER_LANE = 255,
    /* Registers a lane needs besides the O and S accumulators: addresses,
     * row max/sum, loop state, fragments in flight. */
    GPU_REG_OVERHEAD = 48,
    GPU_PREFERRED_WARPS = 4, /* enough warps per group to hide latency */
    /* Q in registers: at most this many rows. The register count above
     * says far less than a kernel holds for such head dims: attn_mfma's
     * MLA tile of 32 rows (2 x 2 waves) takes 463 of gfx90a's 512 VGPRs
     * where it counts 186, and 64 rows (count 252) or 128 rows in 8 waves
     * spill (tools/hip_inspect.sh). */
    GPU_MAX_Q_REGS_BLOCK_Q = 32,
};

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int64_t lcm64(int64_t a, int64_t b) { return a / gcd64(a, b) * b; }

static size_t align_size(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* a·b, or 0 with *ok cleared on overflow. */
static size_t mul_size(size_t a, size_t b, int *ok)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
        *ok = 0;
        return 0;
    }
    return r;
}

static size_t add_size(size_t a, size_t b, int *ok)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) {
        *ok = 0;
        return 0;
    }
    return r;
}

/* Matrix units take this problem's dtype (never f32: no TF32 shortcuts). */
static int uses_matrix_units(const xattn_device_caps *caps, xattn_dtype t)
{
    if (!caps->matrix_m || !caps->matrix_n || !caps->matrix_k) return 0;
    if (t == XATTN_F16) return (caps->matrix_dtypes & XATTN_MATRIX_F16) != 0;
    if (t == XATTN_BF16) return (caps->matrix_dtypes & XATTN_MATRIX_BF16) != 0;
    return 0;
}

/* ---- GPU tiles ------------------------------------------------------------ */

typedef struct gpu_shape {
    int mm;            /* matrix units in use */
    int q_regs_ok;     /* Q may live in registers instead (wave64 matrix units) */
    int esize;         /* bytes per Q/K/V element */
    int64_t dqk_pad, dv_pad;
    int64_t row_quantum, key_quantum;
} gpu_shape;

typedef struct gpu_tile {
    int32_t block_q, block_k, stages, warps;
    size_t local_mem;
    int q_regs;        /* Q in registers, no Q region */
    int in_flight;     /* K/V blocks loading while one is used, capped at 2 */
    int warp_rank;     /* position of warps in the preference order */
} gpu_tile;

/* Local memory of a tile, laid out as the header comment describes. */
static size_t gpu_local_mem(const gpu_shape *s, int64_t bq, int64_t bk, int64_t stages,
                            int64_t warps_n, int q_regs)
{
    size_t e = (size_t)s->esize;
    size_t q = q_regs ? 0 : align_size((size_t)(bq * s->dqk_pad) * e, LOCAL_ALIGN);
    size_t k = align_size((size_t)(bk * s->dqk_pad) * e, LOCAL_ALIGN);
    size_t v = align_size((size_t)(bk * s->dv_pad) * e, LOCAL_ALIGN);
    size_t total = q + (size_t)stages * (k + v);
    if (!s->mm || warps_n > 1) {
        size_t p_elem = s->mm ? e : 4;
        total += align_size((size_t)(bq * bk) * p_elem, LOCAL_ALIGN);
        total += align_size((size_t)(2 * warps_n * bq) * 4, LOCAL_ALIGN);
    }
    return total;
}

/* Does (bq, bk, stages, warps) fit the device, with Q in local memory or
 * (q_regs) in registers? Fills t when it does. */
static int gpu_tile_fits(const xattn_device_caps *caps, const gpu_shape *s, int32_t bq,
                         int32_t bk, int32_t stages, int32_t warps, int q_regs, gpu_tile *t)
{
    if (q_regs && (!s->q_regs_ok || bq > GPU_MAX_Q_REGS_BLOCK_Q)) return 0;
    int64_t threads = (int64_t)warps * caps->simd_width;
    if (threads > caps->max_threads_per_group) return 0;

    int64_t warps_m = 1;
    if (s->mm) {
        int64_t row_blocks = bq / (int64_t)caps->matrix_m;
        warps_m = row_blocks < warps ? row_blocks : warps;
        if (warps_m < 1 || warps % warps_m) return 0;
    }
    int64_t warps_n = warps / warps_m;
    int64_t s_warps = warps_n; /* warps of a row band that compute S */
    if (s->mm) {
        if ((bq / warps_m) % caps->matrix_m) return 0;
        if (s->dv_pad % warps_n || (s->dv_pad / warps_n) % caps->matrix_n) return 0;
        if (bk / caps->matrix_n < s_warps) s_warps = bk / caps->matrix_n;
        if (s_warps < 1 || warps_n % s_warps || (bk / s_warps) % caps->matrix_n) return 0;
    } else if ((int64_t)bq * s->dv_pad < threads) {
        return 0; /* some threads would own no output */
    }

    /* O and S accumulators are f32: O spread over every lane of the group,
     * S over the lanes of the warps that compute it. */
    int64_t regs = ceil_div((int64_t)bq * s->dv_pad, threads) +
                   ceil_div((int64_t)bq * bk, warps_m * s_warps * caps->simd_width) +
                   GPU_REG_OVERHEAD;
    if (q_regs) /* the band's Q in 32-bit registers over a warp's lanes */
        regs += ceil_div(bq / warps_m * s->dqk_pad * s->esize, 4 * (int64_t)caps->simd_width);
    if (regs > GPU_MAX_REGS_PER_LANE) return 0;
    if (caps->registers_per_group && regs * threads > caps->registers_per_group) return 0;

    size_t lmem = gpu_local_mem(s, bq, bk, stages, warps_n, q_regs);
    if (lmem > caps->local_mem_bytes) return 0;

    size_t resident = caps->local_mem_bytes / lmem; /* groups per compute unit */
    int64_t in_flight = (int64_t)stages * (int64_t)(resident < 2 ? resident : 2);
    t->block_q = bq;
    t->block_k = bk;
    t->stages = stages;
    t->warps = warps;
    t->local_mem = lmem;
    t->q_regs = q_regs;
    t->in_flight = in_flight < 2 ? (int)in_flight : 2;
    return 1;
}

static int min_int(int a, int b) { return a < b ? a : b; }

/* Preference among tiles of one block_q: block_k of at least
 * GPU_GOOD_BLOCK_K (the per-block softmax rescale and barrier amortised),
 * then two K/V blocks in flight (double buffering or a second resident
 * group), then the larger block_k, more stages, and the warp count earliest
 * in the preference order. Decode-sized tiles are bound by memory, not by
 * the rescale, so for them blocks in flight come first. */
static int gpu_tile_better(const gpu_tile *a, const gpu_tile *b)
{
    int memory_bound = a->block_q < GPU_COMPUTE_BOUND_BLOCK_Q;
    if (memory_bound && a->in_flight != b->in_flight) return a->in_flight > b->in_flight;
    int ga = min_int(a->block_k, GPU_GOOD_BLOCK_K), gb = min_int(b->block_k, GPU_GOOD_BLOCK_K);
    if (ga != gb) return ga > gb;
    if (a->in_flight != b->in_flight) return a->in_flight > b->in_flight;
    if (a->block_k != b->block_k) return a->block_k > b->block_k;
    if (a->stages != b->stages) return a->stages > b->stages;
    return a->warp_rank < b->warp_rank;
}

static xattn_status plan_gpu_tiles(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                                   xattn_attn_plan_params *out)
{
    static const int32_t block_qs[] = {128, 64, 32, 16, 8, 4};
    static const int32_t block_ks[] = {128, 64, 32, 16, 8};
    /* Fewest warps that hide latency first; more only when registers
     * demand it; fewer only when nothing else fits. */
    static const int32_t warp_counts[] = {GPU_PREFERRED_WARPS, 8, 16, 2, 1};
    const xattn_attn_desc *d = &prob->desc;

    gpu_shape s;
    s.mm = uses_matrix_units(caps, d->dtype);
    s.q_regs_ok = s.mm && caps->simd_width == 64;
    s.esize = (int)xattn_dtype_size(d->dtype);
    int64_t pad = s.mm ? lcm64(caps->matrix_k, caps->matrix_n)
                       : (caps->vector_bytes / (uint32_t)s.esize > 1
                              ? caps->vector_bytes / (uint32_t)s.esize : 1);
    s.dqk_pad = round_up(d->head_dim_qk, pad);
    s.dv_pad = round_up(d->head_dim_v, pad);
    s.row_quantum = s.mm ? caps->matrix_m : 1;
    s.key_quantum = s.mm ? lcm64(caps->matrix_n, caps->matrix_k) : 1;

    /* Decode and short prefill pack a KV head's query heads into one tile,
     * so K and V are read once for all of them. */
    int32_t pack = (prob->group > 1 && d->seqlen_q < GPU_MAX_BLOCK_Q) ? prob->group : 1;
    int64_t rows = (int64_t)d->seqlen_q * pack;
    int64_t want_rows = rows > GPU_MIN_BLOCK_Q ? rows : GPU_MIN_BLOCK_Q;

    /* Largest block_q not beyond the rows (K/V traffic falls as 1/block_q),
     * then the best of the rest for it; but a block_k below
     * GPU_MIN_BLOCK_K costs more in per-block softmax rescales and barriers
     * than halving block_q does in K/V traffic, so look for one of those
     * first over every block_q. */
    gpu_tile best = {0};
    int found = 0;
    int64_t cap = GPU_MAX_BLOCK_Q;
    while (cap / 2 >= want_rows) cap /= 2;
    static const int32_t min_block_ks[] = {GPU_MIN_BLOCK_K, 1};
    for (size_t mi = 0; mi < XATTN_ARRAY_SIZE(min_block_ks) && !found; mi++) {
        int32_t min_bk = min_block_ks[mi];
        for (size_t qi = 0; qi < XATTN_ARRAY_SIZE(block_qs) && !found; qi++) {
            int32_t bq = block_qs[qi];
            if (bq > cap || bq % s.row_quantum) continue;
            /* Q in local memory first; in registers only when no tile of
             * this block_q fits with it there. */
            for (int q_regs = 0; q_regs <= 1 && !found; q_regs++) {
                for (size_t ki = 0; ki < XATTN_ARRAY_SIZE(block_ks); ki++) {
                    int32_t bk = block_ks[ki];
                    if (bk < min_bk || bk % s.key_quantum) continue;
                    for (int32_t stages = GPU_MAX_STAGES; stages >= 1; stages--) {
                        for (size_t wi = 0; wi < XATTN_ARRAY_SIZE(warp_counts); wi++) {
                            gpu_tile t;
                            if (!gpu_tile_fits(caps, &s, bq, bk, stages, warp_counts[wi],
                                               q_regs, &t))
                                continue;
                            t.warp_rank = (int)wi;
                            if (!found || gpu_tile_better(&t, &best)) best = t;
                            found = 1;
                        }
                    }
                }
            }
        }
    }
    if (!found)
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "planner: no attention tile for head dims (%d, %d) %s fits %s "
                           "(%u bytes of local memory, %u threads per group)",
                           (int)d->head_dim_qk, (int)d->head_dim_v, xattn_dtype_name(d->dtype),
                           caps->name, caps->local_mem_bytes, caps->max_threads_per_group);

    out->block_q = best.block_q;
    out->block_k = best.block_k;
    out->gqa_pack = pack;
    out->dqk_pad = (int32_t)s.dqk_pad;
    out->dv_pad = (int32_t)s.dv_pad;
    out->threads = (int32_t)(best.warps * (int32_t)caps->simd_width);
    out->stages = best.stages;
    out->local_mem_bytes = best.local_mem;
    out->q_in_registers = best.q_regs;
    return XATTN_OK;
}

/* ---- shared: work list, KV splits, workspace ------------------------------- */

xattn_status xattn_plan_attention(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                                  xattn_attn_plan_params *out)
{
    if (!caps || !prob || !out)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "planner: NULL caps, problem or output");
    const xattn_attn_desc *d = &prob->desc;
    if (!caps->compute_units || !caps->simd_width)
        return xattn_error(XATTN_ERR_INTERNAL, "planner: caps of %s have no compute units or "
                           "SIMD width", caps->name);

    xattn_attn_plan_params p;
    memset(&p, 0, sizeof p);
    p.style = caps->style;
    if (caps->style == XATTN_DEVICE_STYLE_CPU) {
        XATTN_TRY(xattn_plan_cpu_tiles(caps, prob, &p));
        p.threads = caps->compute_units > INT32_MAX ? INT32_MAX : (int32_t)caps->compute_units;
        p.local_mem_bytes = align_size(p.local_mem_bytes, CPU_SLICE_ALIGN);
    } else {
        XATTN_TRY(plan_gpu_tiles(caps, prob, &p));
    }
    if (p.block_q < 1 || p.block_k < 1 || p.gqa_pack < 1 || prob->group % p.gqa_pack ||
        p.dqk_pad < d->head_dim_qk || p.dv_pad < d->head_dim_v || p.stages < 1)
        return xattn_error(XATTN_ERR_INTERNAL,
                           "planner: bad tiles for %s (block_q %d, block_k %d, gqa_pack %d)",
                           caps->name, (int)p.block_q, (int)p.block_k, (int)p.gqa_pack);

    /* Work items before splitting. */
    p.head_groups = d->num_q_heads / p.gqa_pack;
    int64_t q_tiles = ceil_div((int64_t)d->seqlen_q * p.gqa_pack, p.block_q);
    int64_t base_work;
    if (q_tiles > INT32_MAX ||
        __builtin_mul_overflow((int64_t)d->batch * p.head_groups, q_tiles, &base_work))
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "planner: %d sequences x %d query tokens x %d heads is too many "
                           "work items", (int)d->batch, (int)d->seqlen_q, (int)d->num_q_heads);
    p.q_tiles = (int32_t)q_tiles;

    /* Split long KV when the work items alone cannot fill the device. */
    int64_t sk = d->seqlen_k > 0 ? d->seqlen_k : 1;
    int64_t target = (int64_t)WORK_PER_UNIT * caps->compute_units;
    int64_t min_split = (int64_t)MIN_SPLIT_BLOCKS * p.block_k;
    if (min_split < MIN_SPLIT_KEYS) min_split = round_up(MIN_SPLIT_KEYS, p.block_k);
    /* The CPU kernels run lockstep items on one thread (plan_cpu.h): only
     * groups of them can fill the threads. */
    int64_t streams = base_work;
    if (p.style == XATTN_DEVICE_STYLE_CPU) {
        int64_t together = xattn_cpu_lockstep_items(&p);
        streams = base_work / p.head_groups * ceil_div(p.head_groups, together);
    }
    int64_t splits = 1;
    if (streams > 0 && streams < target) {
        splits = ceil_div(target, streams);
        if (splits > sk / min_split) splits = sk / min_split;
        if (splits < 1) splits = 1;
    }
    int64_t split_len = round_up(ceil_div(sk, splits), p.block_k);
    splits = ceil_div(sk, split_len); /* no empty split after rounding */
    if (split_len > INT32_MAX)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "planner: seqlen_k %d is too long",
                           (int)d->seqlen_k);
    p.kv_splits = (int32_t)splits;
    p.kv_split_len = (int32_t)split_len;
    if (__builtin_mul_overflow(base_work, splits, &p.num_work))
        return xattn_error(XATTN_ERR_UNSUPPORTED, "planner: too many work items");

    /* Workspace: per-thread scratch (CPU), then split-KV partials. Neither
     * grows with Sq·Sk: splits happen only while B·Sq·Hq is small. */
    int ok = 1;
    size_t off = 0;
    p.scratch_offset = 0;
    if (p.style == XATTN_DEVICE_STYLE_CPU)
        off = align_size(mul_size((size_t)p.threads, p.local_mem_bytes, &ok), WORKSPACE_ALIGN);
    p.partial_offset = off;
    if (p.kv_splits > 1) {
        size_t rows = mul_size(mul_size((size_t)d->batch, (size_t)d->seqlen_q, &ok),
                               (size_t)d->num_q_heads, &ok);
        size_t split_rows = mul_size((size_t)p.kv_splits, rows, &ok);
        size_t o_bytes = mul_size(mul_size(split_rows, (size_t)p.dv_pad, &ok), 4, &ok);
        size_t lse_bytes = mul_size(split_rows, 4, &ok);
        p.partial_bytes = add_size(o_bytes, lse_bytes, &ok);
        off = add_size(off, align_size(p.partial_bytes, WORKSPACE_ALIGN), &ok);
    }
    if (!ok || off > SIZE_MAX - WORKSPACE_ALIGN)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "planner: workspace size overflows");
    p.workspace_bytes = off;
    *out = p;
    return XATTN_OK;
}

/* ---- text ------------------------------------------------------------------ */

int xattn_plan_params_format(const xattn_attn_problem *prob, const xattn_attn_plan_params *p,
                             char *buf, size_t size)
{
    if (!prob || !p) return -1;
    if (!buf) size = 0;
    if (size) buf[0] = '\0';
    const xattn_attn_desc *d = &prob->desc;
    int cpu = p->style == XATTN_DEVICE_STYLE_CPU;
    size_t n = 0;

    static const char *const q_layouts[] = {"uniform", "ragged"};
    static const char *const kv_layouts[] = {"uniform", "ragged", "paged"};
    const char *ql = (unsigned)d->q_layout < 2 ? q_layouts[d->q_layout] : "?";
    const char *kl = (unsigned)d->kv_layout < 3 ? kv_layouts[d->kv_layout] : "?";

    xattn_text_put(buf, size, &n, "problem      %s B=%d Sq=%d Sk=%d Hq=%d Hkv=%d Dqk=%d Dv=%d, Q %s, KV %s",
        xattn_dtype_name(d->dtype), (int)d->batch, (int)d->seqlen_q, (int)d->seqlen_k,
        (int)d->num_q_heads, (int)d->num_kv_heads, (int)d->head_dim_qk, (int)d->head_dim_v, ql,
        kl);
    if (d->kv_layout == XATTN_KV_PAGED) xattn_text_put(buf, size, &n, " (page %d)", (int)d->page_size);
    xattn_text_put(buf, size, &n, "\n             scale %.6g", (double)prob->scale);
    if (prob->window_left >= 0 || prob->window_right >= 0)
        xattn_text_put(buf, size, &n, ", window (%d, %d)", (int)prob->window_left, (int)prob->window_right);
    if (d->flags & XATTN_ATTN_CAUSAL) xattn_text_put(buf, size, &n, ", causal");
    if (d->softcap > 0) xattn_text_put(buf, size, &n, ", softcap %g", (double)d->softcap);
    if (d->flags & XATTN_ATTN_ALIBI) xattn_text_put(buf, size, &n, ", alibi");
    if (d->flags & XATTN_ATTN_SINKS) xattn_text_put(buf, size, &n, ", sinks");
    if (d->flags & XATTN_ATTN_LSE) xattn_text_put(buf, size, &n, ", lse");
    xattn_text_put(buf, size, &n, "\n");

    xattn_text_put(buf, size, &n, "style        %s\n", cpu ? "cpu (register blocks, no barriers)"
                                              : "gpu (local-memory tiles, barriers)");
    xattn_text_put(buf, size, &n, "tile         block_q %d x block_k %d", (int)p->block_q, (int)p->block_k);
    if (p->gqa_pack > 1)
        xattn_text_put(buf, size, &n, ", %d query heads packed per KV head", (int)p->gqa_pack);
    xattn_text_put(buf, size, &n, "\nhead dims    Dqk %d -> %d, Dv %d -> %d (padded)\n", (int)d->head_dim_qk,
        (int)p->dqk_pad, (int)d->head_dim_v, (int)p->dv_pad);
    xattn_text_put(buf, size, &n, "threads      %d %s\n", (int)p->threads,
        cpu ? "worker threads" : "per group");
    xattn_text_put(buf, size, &n, "stages       %d\n", (int)p->stages);
    if (p->kv_splits > 1)
        xattn_text_put(buf, size, &n, "kv splits    %d x %d keys\n", (int)p->kv_splits, (int)p->kv_split_len);
    else
        xattn_text_put(buf, size, &n, "kv splits    1 (no split)\n");
    xattn_text_put(buf, size, &n, "work items   %lld = %d seq x %d head groups x %d q tiles x %d splits\n",
        (long long)p->num_work, (int)d->batch, (int)p->head_groups, (int)p->q_tiles,
        (int)p->kv_splits);
    xattn_text_put(buf, size, &n, "local memory ");
    xattn_text_put_bytes(buf, size, &n, p->local_mem_bytes);
    xattn_text_put(buf, size, &n, cpu ? " per thread (scratch)\n"
                                      : p->q_in_registers ? " per group (Q in registers)\n"
                                                          : " per group\n");
    xattn_text_put(buf, size, &n, "workspace    ");
    xattn_text_put_bytes(buf, size, &n, p->workspace_bytes);
    if (cpu) {
        xattn_text_put(buf, size, &n, "\n  scratch    @%zu, %d x ", p->scratch_offset, (int)p->threads);
        xattn_text_put_bytes(buf, size, &n, p->local_mem_bytes);
    }
    if (p->kv_splits > 1) {
        xattn_text_put(buf, size, &n, "\n  partials   @%zu, ", p->partial_offset);
        xattn_text_put_bytes(buf, size, &n, p->partial_bytes);
        xattn_text_put(buf, size, &n, " (f32 O and LSE per split)");
    }
    xattn_text_put(buf, size, &n, "\n");
    return n > INT_MAX ? INT_MAX : (int)n;
}

int64_t xattn_attn_tile_space(const xattn_attn_problem *prob, const xattn_attn_plan_params *p,
                              int64_t total_q)
{
    const xattn_attn_desc *d = &prob->desc;
    if (d->q_layout != XATTN_Q_RAGGED || p->block_q <= 0) return 0;
    const int64_t cap = (int64_t)d->batch * p->q_tiles + d->batch;
    const int64_t space = total_q / p->block_q * p->gqa_pack +
                          total_q % p->block_q * p->gqa_pack / p->block_q + d->batch;
    return space < cap ? space : cap;
}
