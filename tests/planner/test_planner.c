/* Planner rules (common/plan.h, docs/attention.md), checked on every device preset with no
 * hardware: tiles fit, threads within limits, shapes match the matrix units,
 * decode is split to fill the device, workspace never grows with Sq·Sk, and
 * every supported head dim gets a plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "xattn.h"

enum { WORKSPACE_ALIGN = 256, MAX_PRESETS = 16 };

static const xattn_dtype dtypes[] = {XATTN_F32, XATTN_F16, XATTN_BF16};

typedef struct dims {
    int32_t dqk, dv;
} dims;

/* Every head-dim pair of docs/attention.md. Returns the count. */
static size_t supported_dims(dims *out)
{
    size_t n = 0;
    for (int32_t d = 8; d <= 256; d += 8) out[n++] = (dims){d, d};
    out[n++] = (dims){192, 128};
    out[n++] = (dims){576, 512};
    return n;
}

static size_t preset_count(void)
{
    size_t n = 0;
    for (const char *const *p = xattn_preset_names(); *p; p++) n++;
    return n;
}

static xattn_device_caps preset(const char *name)
{
    xattn_device_caps caps;
    memset(&caps, 0, sizeof caps);
    assert_true(xattn_preset_caps(name, &caps));
    return caps;
}

static xattn_attn_desc shape(xattn_dtype t, int32_t b, int32_t sq, int32_t sk, int32_t hq,
                             int32_t hkv, dims d)
{
    xattn_attn_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.dtype = t;
    desc.batch = b;
    desc.seqlen_q = sq;
    desc.seqlen_k = sk;
    desc.num_q_heads = hq;
    desc.num_kv_heads = hkv;
    desc.head_dim_qk = d.dqk;
    desc.head_dim_v = d.dv;
    return desc;
}

/* Plan desc on caps; fails the test (naming both) unless it plans. */
static xattn_attn_plan_params plan_ok(const xattn_device_caps *caps, const xattn_attn_desc *desc,
                                      xattn_attn_problem *prob_out)
{
    xattn_attn_problem prob;
    xattn_attn_plan_params p;
    memset(&p, 0, sizeof p);
    xattn_status st = xattn_attn_problem_init(desc, &prob);
    if (st != XATTN_OK) fail_msg("problem_init: %s", xattn_last_error());
    st = xattn_plan_attention(caps, &prob, &p);
    if (st != XATTN_OK)
        fail_msg("%s: %s B=%d Sq=%d Sk=%d Hq=%d Hkv=%d D=(%d,%d): %s: %s", caps->name,
                 xattn_dtype_name(desc->dtype), (int)desc->batch, (int)desc->seqlen_q,
                 (int)desc->seqlen_k, (int)desc->num_q_heads, (int)desc->num_kv_heads,
                 (int)desc->head_dim_qk, (int)desc->head_dim_v, xattn_status_string(st),
                 xattn_last_error());
    if (prob_out) *prob_out = prob;
    return p;
}

static int uses_matrix(const xattn_device_caps *caps, xattn_dtype t)
{
    if (caps->style != XATTN_DEVICE_STYLE_GPU) return 0;
    if (t == XATTN_F16) return (caps->matrix_dtypes & XATTN_MATRIX_F16) != 0;
    if (t == XATTN_BF16) return (caps->matrix_dtypes & XATTN_MATRIX_BF16) != 0;
    return 0;
}

static size_t esize(xattn_dtype t) { return t == XATTN_F32 ? 4 : 2; }

/* Calls check(caps, desc, params) for every preset, dtype, head dim and a
 * prefill, a decode and a GQA decode shape. */
typedef void (*plan_check)(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                           const xattn_attn_plan_params *p);

static void for_every_plan(plan_check check)
{
    dims all[64];
    size_t nd = supported_dims(all);
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t ti = 0; ti < sizeof dtypes / sizeof dtypes[0]; ti++) {
            for (size_t di = 0; di < nd; di++) {
                xattn_attn_desc shapes[] = {
                    shape(dtypes[ti], 2, 1024, 1024, 16, 16, all[di]),  /* prefill */
                    shape(dtypes[ti], 1, 1, 32768, 32, 8, all[di]),     /* GQA decode */
                    shape(dtypes[ti], 8, 3, 4099, 128, 1, all[di]),     /* MQA / MLA */
                };
                for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                    xattn_attn_problem prob;
                    xattn_attn_plan_params p = plan_ok(&caps, &shapes[si], &prob);
                    check(&caps, &prob, &p);
                }
            }
        }
    }
}

/* ---- presets ---------------------------------------------------------------- */

static void every_preset_has_usable_caps(void **state)
{
    (void)state;
    assert_true(preset_count() >= 7);
    assert_true(preset_count() < MAX_PRESETS);
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps c = preset(*name);
        assert_true(c.name[0] != '\0');
        assert_true(c.compute_units >= 1);
        assert_true(c.simd_width >= 1);
        assert_true(c.local_mem_bytes > 0);
        assert_true(c.max_threads_per_group >= 1);
        assert_true(c.vector_bytes >= 4);
        assert_true(c.peak_flops_f32 > 0 && c.peak_flops_f16 > 0 && c.peak_bytes_per_s > 0);
        if (c.style == XATTN_DEVICE_STYLE_GPU) {
            assert_true(c.max_threads_per_group >= c.simd_width);
            assert_true(c.max_threads_per_group % c.simd_width == 0);
        }
        if (c.matrix_dtypes) assert_true(c.matrix_m && c.matrix_n && c.matrix_k);
    }
}

static void presets_carry_the_published_figures(void **state)
{
    (void)state;
    xattn_device_caps h100 = preset("h100"), mi300x = preset("mi300x");
    xattn_device_caps rdna = preset("rx7900xtx"), pocl = preset("pocl-cpu");
    assert_int_equal(h100.compute_units, 132);
    assert_int_equal(h100.simd_width, 32);
    assert_int_equal(h100.local_mem_bytes, 227 * 1024);
    assert_int_equal(mi300x.compute_units, 304);
    assert_int_equal(mi300x.simd_width, 64); /* wave64 */
    assert_int_equal(mi300x.local_mem_bytes, 64 * 1024);
    assert_int_equal(rdna.simd_width, 32);   /* wave32 */
    assert_int_equal(pocl.style, XATTN_DEVICE_STYLE_CPU);
    assert_int_equal(h100.style, XATTN_DEVICE_STYLE_GPU);
    /* The H200 is an H100 with faster, larger memory. */
    xattn_device_caps h200 = preset("h200");
    assert_int_equal(h200.compute_units, h100.compute_units);
    assert_int_equal(h200.local_mem_bytes, h100.local_mem_bytes);
    assert_true(h200.peak_bytes_per_s == 4.8e12);
    assert_true(h200.peak_flops_f16 == h100.peak_flops_f16);
}

static void unknown_preset_is_rejected(void **state)
{
    (void)state;
    xattn_device_caps c;
    assert_false(xattn_preset_caps("bogus", &c));
    assert_false(xattn_preset_caps("", &c));
    assert_false(xattn_preset_caps(NULL, &c));
}

static void host_caps_describe_this_machine(void **state)
{
    (void)state;
    xattn_device_caps c, three, host;
    xattn_host_cpu_caps(0, &c);
    assert_int_equal(c.style, XATTN_DEVICE_STYLE_CPU);
    assert_true(c.compute_units >= 1);
    assert_true(c.simd_width == 4 || c.simd_width == 8 || c.simd_width == 16);
    assert_int_equal(c.vector_bytes, c.simd_width * 4);
    assert_true(c.local_mem_bytes >= 64 * 1024);
    assert_true(c.cache_bytes >= 4 * 1024);
    assert_true(c.peak_flops_f32 > 1e9);
    assert_true(c.peak_bytes_per_s > 1e9);
    xattn_host_cpu_caps(3, &three);
    assert_int_equal(three.compute_units, 3);
    assert_true(xattn_preset_caps("host", &host));
    assert_int_equal(host.compute_units, c.compute_units);
}

/* ---- tiles -------------------------------------------------------------------- */

static void check_fits(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                       const xattn_attn_plan_params *p)
{
    const xattn_attn_desc *d = &prob->desc;
    assert_true(p->local_mem_bytes > 0);
    assert_true(p->local_mem_bytes <= caps->local_mem_bytes);
    if (caps->style == XATTN_DEVICE_STYLE_GPU) {
        /* At least Q (unless it lives in registers) and one stage of K and
         * V live in local memory. */
        size_t e = esize(d->dtype);
        size_t q = p->q_in_registers ? 0 : (size_t)p->block_q * p->dqk_pad * e;
        size_t need = q + (size_t)p->stages * p->block_k * (p->dqk_pad + p->dv_pad) * e;
        assert_true(p->local_mem_bytes >= need);
        /* Q in registers only where it is needed: a 64-lane device with
         * matrix units, at most 32 rows, and the same tile with Q in local
         * memory would not fit. */
        if (p->q_in_registers) {
            assert_int_equal(caps->simd_width, 64);
            assert_true(caps->matrix_m > 0);
            assert_true(p->block_q <= 32);
            assert_true(p->local_mem_bytes + (size_t)p->block_q * p->dqk_pad * e >
                        caps->local_mem_bytes);
        }
    } else {
        assert_int_equal(p->q_in_registers, 0);
    }
}

static void tiles_fit_local_memory(void **state)
{
    (void)state;
    for_every_plan(check_fits);
}

static void check_threads(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                          const xattn_attn_plan_params *p)
{
    (void)prob;
    if (caps->style == XATTN_DEVICE_STYLE_CPU) {
        assert_int_equal(p->threads, caps->compute_units);
        return;
    }
    assert_true(p->threads >= (int32_t)caps->simd_width);
    assert_true(p->threads <= (int32_t)caps->max_threads_per_group);
    assert_int_equal(p->threads % caps->simd_width, 0);
    assert_true(p->stages >= 1);
}

static void threads_stay_within_group_limits(void **state)
{
    (void)state;
    for_every_plan(check_threads);
}

static void check_shapes(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                         const xattn_attn_plan_params *p)
{
    const xattn_attn_desc *d = &prob->desc;
    assert_true(p->dqk_pad >= d->head_dim_qk);
    assert_true(p->dv_pad >= d->head_dim_v);
    assert_true(p->block_q >= 1 && p->block_k >= 1);
    if (uses_matrix(caps, d->dtype)) {
        assert_int_equal(p->block_q % caps->matrix_m, 0);
        assert_int_equal(p->block_k % caps->matrix_n, 0);
        assert_int_equal(p->block_k % caps->matrix_k, 0);
        assert_int_equal(p->dqk_pad % caps->matrix_k, 0);
        assert_int_equal(p->dv_pad % caps->matrix_n, 0);
        /* Padding never exceeds one matrix step. */
        assert_true(p->dqk_pad < d->head_dim_qk + (int32_t)caps->matrix_k);
    }
}

static void block_sizes_are_multiples_of_the_matrix_shape(void **state)
{
    (void)state;
    for_every_plan(check_shapes);
}

static void check_work(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                       const xattn_attn_plan_params *p)
{
    (void)caps;
    const xattn_attn_desc *d = &prob->desc;
    assert_true(p->gqa_pack >= 1);
    assert_int_equal(prob->group % p->gqa_pack, 0);
    assert_int_equal((int64_t)p->head_groups * p->gqa_pack, d->num_q_heads);
    int64_t rows = (int64_t)d->seqlen_q * p->gqa_pack;
    assert_int_equal(p->q_tiles, (rows + p->block_q - 1) / p->block_q);
    assert_int_equal(p->num_work,
                     (int64_t)d->batch * p->head_groups * p->q_tiles * p->kv_splits);
    /* Splits cover the keys exactly once, block-aligned, none empty. */
    assert_true(p->kv_splits >= 1);
    assert_int_equal(p->kv_split_len % p->block_k, 0);
    int64_t sk = d->seqlen_k > 0 ? d->seqlen_k : 1;
    assert_true((int64_t)p->kv_splits * p->kv_split_len >= sk);
    assert_true((int64_t)(p->kv_splits - 1) * p->kv_split_len < sk);
}

static void work_items_cover_every_tile_and_key_once(void **state)
{
    (void)state;
    for_every_plan(check_work);
}

static void check_workspace_layout(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                                   const xattn_attn_plan_params *p)
{
    const xattn_attn_desc *d = &prob->desc;
    assert_int_equal(p->scratch_offset % WORKSPACE_ALIGN, 0);
    assert_int_equal(p->partial_offset % WORKSPACE_ALIGN, 0);
    assert_int_equal(p->workspace_bytes % WORKSPACE_ALIGN, 0);
    size_t scratch = 0;
    if (caps->style == XATTN_DEVICE_STYLE_CPU)
        scratch = (size_t)p->threads * p->local_mem_bytes;
    assert_true(p->partial_offset >= p->scratch_offset + scratch);
    assert_true(p->partial_offset + p->partial_bytes <= p->workspace_bytes);
    if (p->kv_splits > 1) {
        size_t rows = (size_t)p->kv_splits * d->batch * d->seqlen_q * d->num_q_heads;
        assert_int_equal(p->partial_bytes, rows * (size_t)(p->dv_pad + 1) * 4);
    } else {
        assert_int_equal(p->partial_bytes, 0);
    }
    if (caps->style == XATTN_DEVICE_STYLE_GPU && p->kv_splits == 1)
        assert_int_equal(p->workspace_bytes, 0);
}

static void workspace_regions_are_aligned_and_disjoint(void **state)
{
    (void)state;
    for_every_plan(check_workspace_layout);
}

static void check_planned(const xattn_device_caps *caps, const xattn_attn_problem *prob,
                          const xattn_attn_plan_params *p)
{
    assert_int_equal(p->style, caps->style);
    assert_true(p->num_work >= 1);
    assert_true(p->dqk_pad >= prob->desc.head_dim_qk && p->dv_pad >= prob->desc.head_dim_v);
}

static void every_supported_head_dim_plans_on_every_preset(void **state)
{
    (void)state;
    /* for_every_plan fails, naming the problem, on the first that does not plan. */
    for_every_plan(check_planned);
}

static void mla_dims_fit_on_every_preset(void **state)
{
    (void)state;
    const dims mla[] = {{576, 512}, {192, 128}};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t ti = 0; ti < sizeof dtypes / sizeof dtypes[0]; ti++) {
            for (size_t i = 0; i < sizeof mla / sizeof mla[0]; i++) {
                /* DeepSeek-style: 128 query heads on one latent KV head. */
                xattn_attn_desc decode = shape(dtypes[ti], 4, 1, 8192, 128, 1, mla[i]);
                xattn_attn_desc prefill = shape(dtypes[ti], 1, 2048, 2048, 128, 128, mla[i]);
                prefill.flags = XATTN_ATTN_CAUSAL;
                xattn_attn_problem prob;
                xattn_attn_plan_params p = plan_ok(&caps, &decode, &prob);
                check_fits(&caps, &prob, &p);
                check_threads(&caps, &prob, &p);
                p = plan_ok(&caps, &prefill, &prob);
                check_fits(&caps, &prob, &p);
                check_threads(&caps, &prob, &p);
            }
        }
    }
}

/* The foundation's planner gave MLA (576, 512) only 16 x 16 tiles on the
 * 64 KiB AMD presets: Q alone took 18 KiB of them. With Q in registers,
 * decode (128 heads packed) and prefill get 32 rows; H100 (227 KiB) keeps
 * Q in shared memory and larger tiles, and an ordinary head dim never
 * needs it. */
static void mla_gets_32_row_tiles_with_q_in_registers_on_64_kib_presets(void **state)
{
    (void)state;
    const dims mla = {576, 512}, d128 = {128, 128};
    const char *const amd[] = {"mi300x", "mi250x"};
    for (size_t i = 0; i < sizeof amd / sizeof amd[0]; i++) {
        xattn_device_caps caps = preset(amd[i]);
        for (int t = 0; t < 2; t++) {
            xattn_dtype dt = t ? XATTN_BF16 : XATTN_F16;
            xattn_attn_desc decode = shape(dt, 32, 1, 4096, 128, 1, mla);
            xattn_attn_desc prefill = shape(dt, 1, 4096, 4096, 128, 128, mla);
            prefill.flags = XATTN_ATTN_CAUSAL;
            xattn_attn_plan_params p = plan_ok(&caps, &decode, NULL);
            assert_int_equal(p.block_q, 32);
            assert_int_equal(p.q_in_registers, 1);
            p = plan_ok(&caps, &prefill, NULL);
            assert_int_equal(p.block_q, 32);
            assert_int_equal(p.q_in_registers, 1);
            xattn_attn_desc llama = shape(dt, 1, 4096, 4096, 32, 8, d128);
            assert_int_equal(plan_ok(&caps, &llama, NULL).q_in_registers, 0);
        }
        /* f32 uses no matrix units, so Q stays in local memory. */
        xattn_attn_desc f32 = shape(XATTN_F32, 32, 1, 4096, 128, 1, mla);
        assert_int_equal(plan_ok(&caps, &f32, NULL).q_in_registers, 0);
    }
    xattn_device_caps h100 = preset("h100");
    xattn_attn_desc decode = shape(XATTN_BF16, 32, 1, 4096, 128, 1, mla);
    xattn_attn_plan_params p = plan_ok(&h100, &decode, NULL);
    assert_int_equal(p.q_in_registers, 0);
    assert_true(p.block_q >= 32);
}

/* ---- splits and workspace ---------------------------------------------------- */

static void decode_with_few_sequences_is_split_to_fill_the_device(void **state)
{
    (void)state;
    const dims d128 = {128, 128}, mla = {576, 512};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t ti = 0; ti < sizeof dtypes / sizeof dtypes[0]; ti++) {
            xattn_attn_desc cases[] = {
                shape(dtypes[ti], 1, 1, 32768, 32, 8, d128),   /* Llama-3-8B */
                shape(dtypes[ti], 1, 1, 32768, 64, 8, d128),   /* Llama-3-70B */
                shape(dtypes[ti], 2, 1, 32768, 32, 32, d128),  /* MHA */
                shape(dtypes[ti], 1, 1, 32768, 128, 1, mla),   /* DeepSeek MLA */
            };
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                xattn_attn_plan_params p = plan_ok(&caps, &cases[i], NULL);
                if (p.num_work < (int64_t)caps.compute_units)
                    fail_msg("%s case %zu: %lld work items for %u compute units", caps.name,
                             i, (long long)p.num_work, caps.compute_units);
                /* Each split still holds a few key blocks. */
                if (p.kv_splits > 1) assert_true(p.kv_split_len >= 2 * p.block_k);
            }
        }
    }
}

static void short_kv_is_never_split(void **state)
{
    (void)state;
    const dims d128 = {128, 128};
    const int32_t sks[] = {0, 1, 17, 100, 256};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t i = 0; i < sizeof sks / sizeof sks[0]; i++) {
            xattn_attn_desc d = shape(XATTN_BF16, 1, 1, sks[i], 8, 1, d128);
            xattn_attn_plan_params p = plan_ok(&caps, &d, NULL);
            assert_int_equal(p.kv_splits, 1);
            assert_int_equal(p.partial_bytes, 0);
        }
    }
}

static void prefill_that_fills_the_device_is_not_split(void **state)
{
    (void)state;
    const dims d128 = {128, 128};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        xattn_attn_desc d = shape(XATTN_BF16, 16, 4096, 4096, 32, 8, d128);
        xattn_attn_plan_params p = plan_ok(&caps, &d, NULL);
        assert_int_equal(p.kv_splits, 1);
    }
}

static size_t workspace_for(const xattn_device_caps *caps, xattn_dtype t, int32_t b, int32_t sq,
                            int32_t sk, int32_t hq, int32_t hkv, dims d)
{
    xattn_attn_desc desc = shape(t, b, sq, sk, hq, hkv, d);
    return plan_ok(caps, &desc, NULL).workspace_bytes;
}

static void workspace_does_not_grow_with_sq_times_sk(void **state)
{
    (void)state;
    const int32_t lens[] = {1, 7, 128, 1000, 8192, 65536, 1 << 20};
    const dims ds[] = {{64, 64}, {128, 128}, {256, 256}, {576, 512}};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
            for (size_t ti = 0; ti < sizeof dtypes / sizeof dtypes[0]; ti++) {
                /* A bound that depends on the device and the heads only. */
                size_t largest = 0;
                for (size_t qi = 0; qi < sizeof lens / sizeof lens[0]; qi++) {
                    for (size_t ki = 0; ki < sizeof lens / sizeof lens[0]; ki++) {
                        size_t ws = workspace_for(&caps, dtypes[ti], 1, lens[qi], lens[ki],
                                                  32, 8, ds[di]);
                        if (ws > largest) largest = ws;
                    }
                }
                size_t small = workspace_for(&caps, dtypes[ti], 1, 1, 32768, 32, 8, ds[di]);
                /* 4 work items per compute unit of f32 rows, 128 rows each,
                 * plus per-thread scratch within L2: far below Sq·Sk. */
                size_t bound = (size_t)4 * caps.compute_units * 128 * (ds[di].dv + 16 + 1) * 4 +
                               (size_t)caps.compute_units * caps.local_mem_bytes + 4096;
                if (largest > bound)
                    fail_msg("%s D=%d %s: workspace %zu exceeds %zu", caps.name, ds[di].dqk,
                             xattn_dtype_name(dtypes[ti]), largest, bound);
                assert_true(small <= largest);
                /* Scaling Sq and Sk up by 16 once both are long changes nothing;
                 * for decode, at most the rounding of split lengths to key
                 * blocks (one split more or less). */
                assert_int_equal(
                    workspace_for(&caps, dtypes[ti], 1, 65536, 65536, 32, 8, ds[di]),
                    workspace_for(&caps, dtypes[ti], 1, 1 << 20, 1 << 20, 32, 8, ds[di]));
                size_t decode = workspace_for(&caps, dtypes[ti], 1, 1, 1 << 17, 32, 8, ds[di]);
                size_t decode16 = workspace_for(&caps, dtypes[ti], 1, 1, 1 << 21, 32, 8, ds[di]);
                assert_true(decode16 <= bound);
                assert_true(decode16 <= decode + decode / 8);
                /* A ragged plan's seqlen_q is a bound for any batch, and may be
                 * huge next to the rows of a run: bounded all the same. */
                assert_true(workspace_for(&caps, dtypes[ti], 64, 1 << 24, 4096, 32, 8, ds[di]) <=
                            bound);
            }
        }
    }
}

/* ---- GPU-style choices ----------------------------------------------------------- */

static void gpu_decode_packs_the_query_heads_of_a_kv_head(void **state)
{
    (void)state;
    const dims d128 = {128, 128};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        if (caps.style != XATTN_DEVICE_STYLE_GPU) continue;
        xattn_attn_desc d = shape(XATTN_BF16, 1, 1, 8192, 32, 8, d128);
        xattn_attn_plan_params p = plan_ok(&caps, &d, NULL);
        assert_int_equal(p.gqa_pack, 4);
        assert_int_equal(p.head_groups, 8);
        assert_int_equal(p.q_tiles, 1);
    }
}

static void gpu_prefill_uses_large_tiles_with_stages_where_memory_allows(void **state)
{
    (void)state;
    const dims d128 = {128, 128};
    xattn_device_caps h100 = preset("h100");
    xattn_attn_desc d = shape(XATTN_BF16, 1, 8192, 8192, 16, 16, d128);
    xattn_attn_plan_params p = plan_ok(&h100, &d, NULL);
    assert_int_equal(p.block_q, 128);
    assert_true(p.block_k >= 64);
    assert_true(p.stages >= 2);
    /* Head dim 256 and MLA dims get smaller tiles on the same device. */
    xattn_attn_desc d256 = shape(XATTN_BF16, 1, 8192, 8192, 16, 16, (dims){256, 256});
    xattn_attn_plan_params p256 = plan_ok(&h100, &d256, NULL);
    assert_true((int64_t)p256.block_q * p256.block_k < (int64_t)p.block_q * p.block_k);
    xattn_attn_desc mla = shape(XATTN_BF16, 1, 8192, 8192, 16, 16, (dims){576, 512});
    xattn_attn_plan_params pm = plan_ok(&h100, &mla, NULL);
    assert_true((int64_t)pm.block_q * pm.block_k < (int64_t)p256.block_q * p256.block_k);
}

static void f32_never_uses_matrix_units(void **state)
{
    (void)state;
    /* f32 is IEEE fp32 throughout: no TF32. The f32 tile therefore stages P
     * in f32 and is not held to the matrix shape; it still fits. */
    xattn_device_caps h100 = preset("h100");
    xattn_attn_desc d = shape(XATTN_F32, 1, 4096, 4096, 8, 8, (dims){128, 128});
    xattn_attn_problem prob;
    xattn_attn_plan_params p = plan_ok(&h100, &d, &prob);
    size_t e = 4;
    size_t with_p = (size_t)p.block_q * p.dqk_pad * e +
                    (size_t)p.stages * p.block_k * (p.dqk_pad + p.dv_pad) * e +
                    (size_t)p.block_q * p.block_k * 4;
    assert_true(p.local_mem_bytes >= with_p);
}

static void a_device_too_small_for_any_tile_is_unsupported(void **state)
{
    (void)state;
    xattn_device_caps tiny = preset("h100");
    tiny.local_mem_bytes = 1024;
    xattn_attn_desc d = shape(XATTN_BF16, 1, 128, 128, 8, 8, (dims){128, 128});
    xattn_attn_problem prob;
    xattn_attn_plan_params p;
    assert_int_equal(xattn_attn_problem_init(&d, &prob), XATTN_OK);
    assert_int_equal(xattn_plan_attention(&tiny, &prob, &p), XATTN_ERR_UNSUPPORTED);
    assert_non_null(strstr(xattn_last_error(), "local memory"));
}

static void planning_is_deterministic(void **state)
{
    (void)state;
    xattn_device_caps caps = preset("mi300x");
    xattn_attn_desc d = shape(XATTN_F16, 3, 17, 5000, 24, 8, (dims){96, 96});
    d.flags = XATTN_ATTN_CAUSAL;
    xattn_attn_plan_params a = plan_ok(&caps, &d, NULL), b = plan_ok(&caps, &d, NULL);
    assert_memory_equal(&a, &b, sizeof a);
}

static void plan_text_names_tiles_threads_splits_and_workspace(void **state)
{
    (void)state;
    xattn_device_caps caps = preset("h100");
    xattn_attn_desc d = shape(XATTN_BF16, 1, 1, 32768, 32, 8, (dims){128, 128});
    xattn_attn_problem prob;
    xattn_attn_plan_params p = plan_ok(&caps, &d, &prob);
    char text[2048];
    int n = xattn_plan_params_format(&prob, &p, text, sizeof text);
    assert_true(n > 0 && (size_t)n < sizeof text);
    assert_int_equal(xattn_plan_params_format(&prob, &p, NULL, 0), n);
    const char *words[] = {"block_q", "block_k", "threads", "stages", "kv splits",
                           "work items", "workspace", "local memory"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        assert_non_null(strstr(text, words[i]));
    /* Truncation keeps snprintf semantics. */
    char small[16];
    assert_int_equal(xattn_plan_params_format(&prob, &p, small, sizeof small), n);
    assert_int_equal(strlen(small), sizeof small - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_preset_has_usable_caps),
        cmocka_unit_test(presets_carry_the_published_figures),
        cmocka_unit_test(unknown_preset_is_rejected),
        cmocka_unit_test(host_caps_describe_this_machine),
        cmocka_unit_test(tiles_fit_local_memory),
        cmocka_unit_test(threads_stay_within_group_limits),
        cmocka_unit_test(block_sizes_are_multiples_of_the_matrix_shape),
        cmocka_unit_test(work_items_cover_every_tile_and_key_once),
        cmocka_unit_test(workspace_regions_are_aligned_and_disjoint),
        cmocka_unit_test(every_supported_head_dim_plans_on_every_preset),
        cmocka_unit_test(mla_dims_fit_on_every_preset),
        cmocka_unit_test(mla_gets_32_row_tiles_with_q_in_registers_on_64_kib_presets),
        cmocka_unit_test(decode_with_few_sequences_is_split_to_fill_the_device),
        cmocka_unit_test(short_kv_is_never_split),
        cmocka_unit_test(prefill_that_fills_the_device_is_not_split),
        cmocka_unit_test(workspace_does_not_grow_with_sq_times_sk),
        cmocka_unit_test(gpu_decode_packs_the_query_heads_of_a_kv_head),
        cmocka_unit_test(gpu_prefill_uses_large_tiles_with_stages_where_memory_allows),
        cmocka_unit_test(f32_never_uses_matrix_units),
        cmocka_unit_test(a_device_too_small_for_any_tile_is_unsupported),
        cmocka_unit_test(planning_is_deterministic),
        cmocka_unit_test(plan_text_names_tiles_threads_splits_and_workspace),
    };
    return cmocka_run_group_tests_name("planner", tests, NULL, NULL);
}
