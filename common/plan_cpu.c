/* Tiles for CPU-style devices: a few wide cores that keep a block of query
 * rows and their accumulators in vector registers and stream K/V tiles
 * through per-thread scratch (no local memory, no barriers).
 *
 * Every query head of a KV head is packed into one tile (gqa_pack = Hq/Hkv),
 * so K and V are read once for all of them. Two kernel shapes follow from
 * the number of rows a tile can hold:
 *  - narrow (rows ≤ half a vector: decode with small GQA ratios): keys in
 *    vector lanes; all head groups run in lockstep (plan_cpu.h) with short
 *    key tiles, so the keys one thread touches in a short window are whole
 *    token rows, and the rows `stages` tiles ahead are prefetched;
 *  - wide (prefill): query rows in vector lanes, a register block of
 *    S_ROW_VECTORS vectors of rows, key tiles sized so one K block and one
 *    Q block stay in the first-level cache. */
#include "plan_cpu.h"

#include "error.h"

enum {
    SCRATCH_ALIGN = 64,        /* one cache line; also the widest vector */
    /* Wide tiles hold this many vectors of query rows: a multiple of the
     * kernels' register block (3 vectors for S = Q·Kᵀ, 6 rows for P·V). */
    WIDE_ROW_VECTORS = 6,
    WIDE_MIN_ROW_VECTORS = 3,
    WIDE_BLOCK_K = 64,
    /* A narrow tile of one head reads about this many bytes of K and V:
     * 32 keys at D = 128 f32. Shorter tiles keep a token row's reads closer
     * together (a pure read loop likes 8 keys best) but pay the per-tile
     * softmax more often; measured on Zen 4 (decode, Sk = 16384): 8 KiB
     * 24–29 GB/s, 16 KiB 32–38, 32 KiB 36, 128 KiB 35. */
    NARROW_TILE_BYTES = 32 * 1024,
    /* Bytes of K and V (all lockstep heads) between the tile computed and
     * the tile prefetched: far enough to cover DRAM latency at full
     * bandwidth, within L2 (256 KiB and 512 KiB measured the same to 10%). */
    NARROW_PREFETCH_BYTES = 512 * 1024,
    NARROW_MAX_STAGES = 16,
    MIN_BLOCK_K = 16,
    /* Without a known L2 size, assume this much per core. */
    DEFAULT_L2_BYTES = 512 * 1024,
};

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int32_t xattn_cpu_lockstep_items(const xattn_attn_plan_params *p)
{
    if (p->stages <= 1 || p->head_groups <= 1) return 1;
    return p->head_groups < XATTN_CPU_LOCKSTEP_MAX ? p->head_groups : XATTN_CPU_LOCKSTEP_MAX;
}

static int region(size_t *off, size_t *at, int64_t elems, size_t elem_bytes)
{
    if (elems < 0 || (uint64_t)elems > SIZE_MAX / 8 / elem_bytes) return 0;
    size_t bytes = (size_t)elems * elem_bytes;
    bytes = (bytes + SCRATCH_ALIGN - 1) / SCRATCH_ALIGN * SCRATCH_ALIGN;
    if (*off > SIZE_MAX / 2 - bytes) return 0;
    *at = *off;
    *off += bytes;
    return 1;
}

int xattn_cpu_scratch_layout(const xattn_attn_plan_params *p, xattn_cpu_scratch *out)
{
    int64_t bq = round_up(p->block_q, XATTN_CPU_TILE_QUANTUM);
    int64_t bk = round_up(p->block_k, XATTN_CPU_TILE_QUANTUM);
    int64_t dqk = p->dqk_pad, dv = p->dv_pad;
    int64_t row = bk > dqk ? bk : dqk;
    if (dv > row) row = dv;
    size_t off = 0;
    int ok = bq <= INT32_MAX && bk <= INT32_MAX;
    ok = ok && region(&off, &out->q, dqk * bq, 4);
    /* The narrow kernel keeps four row addresses per key in k instead. */
    const int64_t k_elems = dqk > XATTN_CPU_ADDRS_PER_KEY ? dqk : XATTN_CPU_ADDRS_PER_KEY;
    ok = ok && region(&off, &out->k, bk * k_elems, 4);
    ok = ok && region(&off, &out->v, bk * dv, 4);
    ok = ok && region(&off, &out->s, bk * bq, 4);
    ok = ok && region(&off, &out->o, bq * dv, 4);
    ok = ok && region(&off, &out->row, row, 4);
    ok = ok && region(&off, &out->stat, XATTN_CPU_ROW_FIELDS * bq, 4);
    ok = ok && region(&off, &out->idx, 2 * bq, 4);
    if (!ok) return 0;
    out->bq_pad = (int32_t)bq;
    out->bk_pad = (int32_t)bk;
    out->item_bytes = off;
    out->items = xattn_cpu_lockstep_items(p);
    if (off > SIZE_MAX / 4 / (size_t)out->items) return 0;
    out->total = off * (size_t)out->items;
    return 1;
}

xattn_status xattn_plan_cpu_tiles(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                                  xattn_attn_plan_params *out)
{
    const xattn_attn_desc *d = &prob->desc;
    int64_t lanes = caps->simd_width;
    if (lanes < 1) lanes = 1;
    if (lanes > XATTN_CPU_TILE_QUANTUM) lanes = XATTN_CPU_TILE_QUANTUM;

    out->gqa_pack = prob->group;
    out->dqk_pad = (int32_t)round_up(d->head_dim_qk, lanes);
    out->dv_pad = (int32_t)round_up(d->head_dim_v, lanes);
    out->stages = 1; /* wide: hardware prefetchers stream K/V, no software pipeline */
    out->head_groups = d->num_q_heads / out->gqa_pack; /* as xattn_plan_attention sets it */

    int64_t rows = (int64_t)(d->seqlen_q > 0 ? d->seqlen_q : 1) * prob->group;
    int narrow = rows * 2 <= lanes;
    int64_t block_q, block_k, min_block_q;
    if (narrow) {
        block_q = rows;
        min_block_q = rows;
        /* Whole vectors of keys: lanes / rows rounded down to a power of
         * two keys per vector, as the narrow kernel packs them. */
        int64_t rp = 1;
        while (rp < rows) rp *= 2;
        int64_t quantum = lanes / rp > 1 ? lanes / rp : 1;
        int64_t esize = d->dtype == XATTN_F32 ? 4 : 2;
        int64_t key_bytes = (int64_t)(d->head_dim_qk + d->head_dim_v) * esize;
        block_k = round_up(NARROW_TILE_BYTES / key_bytes > 1 ? NARROW_TILE_BYTES / key_bytes : 1,
                           quantum);
        int64_t items = out->head_groups < XATTN_CPU_LOCKSTEP_MAX ? out->head_groups
                                                                 : XATTN_CPU_LOCKSTEP_MAX;
        int64_t stages = NARROW_PREFETCH_BYTES / (items * block_k * key_bytes);
        out->stages = (int32_t)(stages < 2 ? 2 : stages > NARROW_MAX_STAGES ? NARROW_MAX_STAGES
                                                                            : stages);
    } else {
        block_q = round_up(rows, lanes);
        if (block_q > WIDE_ROW_VECTORS * lanes) block_q = WIDE_ROW_VECTORS * lanes;
        min_block_q = WIDE_MIN_ROW_VECTORS * lanes < block_q ? WIDE_MIN_ROW_VECTORS * lanes
                                                             : block_q;
        block_k = WIDE_BLOCK_K;
    }

    /* Keep one thread's scratch within half its L2, so the other half holds
     * the K/V stream; shrink rows first (wide head dims), then keys. */
    size_t budget = (caps->local_mem_bytes ? caps->local_mem_bytes : DEFAULT_L2_BYTES) / 2;
    xattn_cpu_scratch s;
    for (;;) {
        out->block_q = (int32_t)block_q;
        out->block_k = (int32_t)block_k;
        if (!xattn_cpu_scratch_layout(out, &s))
            return xattn_error(XATTN_ERR_UNSUPPORTED,
                               "planner: CPU scratch for head dims (%d, %d) overflows",
                               (int)d->head_dim_qk, (int)d->head_dim_v);
        if (s.total <= budget) break;
        if (block_q - lanes >= min_block_q) block_q -= lanes;
        else if (block_k / 2 >= MIN_BLOCK_K) block_k /= 2;
        else if (out->stages > 1) out->stages = 1; /* no lockstep: one item's scratch */
        else break; /* still correct, only slower */
    }
    out->local_mem_bytes = s.total;
    return XATTN_OK;
}
