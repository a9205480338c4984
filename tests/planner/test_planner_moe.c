/* MoE planner rules (common/plan_moe.h, docs/moe.md), checked on every
 * device preset with no hardware: the plan takes the device's style, segment
 * alignment follows the descriptor or the device, rows follow the formula,
 * GPU tiles fit the device, CPU scratch covers the kernels, and the
 * workspace regions are aligned, disjoint and inside the workspace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"
#include "plan_moe.h"
#include "plan_moe_cpu.h"
#include "xattn.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

enum { WORKSPACE_ALIGN = 256, SCRATCH_ALIGN = 64, MAX_REGS_PER_LANE = 255 };

static const xattn_dtype dtypes[] = {XATTN_F32, XATTN_F16, XATTN_BF16};

/* The model layers of the issue, with their routing and expert form. */
typedef struct model {
    const char *name;
    int32_t hidden, inter, experts, top_k;
    xattn_moe_route_mode route;
    int32_t n_group, topk_group;
    uint32_t flags;
    float scale;
    xattn_moe_activation activation;
    xattn_dtype bias_dtype;
} model;

static const model models[] = {
    {"Mixtral-8x7B", 4096, 14336, 8, 2, XATTN_MOE_ROUTE_SOFTMAX_TOPK, 0, 0,
     XATTN_MOE_RENORMALIZE, 0.0f, XATTN_MOE_SWIGLU, XATTN_F32},
    {"Qwen3-30B-A3B", 2048, 768, 128, 8, XATTN_MOE_ROUTE_SOFTMAX_TOPK, 0, 0,
     XATTN_MOE_RENORMALIZE, 0.0f, XATTN_MOE_SWIGLU, XATTN_F32},
    {"DeepSeek-V3", 7168, 2048, 256, 8, XATTN_MOE_ROUTE_SIGMOID_GROUPED, 8, 4,
     XATTN_MOE_RENORMALIZE | XATTN_MOE_BIAS, 2.5f, XATTN_MOE_SWIGLU, XATTN_F32},
    {"GPT-OSS-120B", 2880, 2880, 128, 4, XATTN_MOE_ROUTE_TOPK_SOFTMAX, 0, 0,
     XATTN_MOE_W1_INTERLEAVED | XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2, 0.0f,
     XATTN_MOE_SWIGLU_CLAMPED, XATTN_BF16},
    {"Llama-4", 5120, 8192, 16, 1, XATTN_MOE_ROUTE_TOPK_SIGMOID, 0, 0,
     XATTN_MOE_WEIGHTS_ON_INPUT, 0.0f, XATTN_MOE_SWIGLU, XATTN_F32},
};

static const int32_t token_counts[] = {1, 7, 64, 513, 4096, 8192};

static xattn_device_caps preset(const char *name)
{
    xattn_device_caps caps;
    memset(&caps, 0, sizeof caps);
    assert_true(xattn_preset_caps(name, &caps));
    return caps;
}

static xattn_moe_desc layer(const model *m, xattn_dtype t, int32_t tokens, int32_t align)
{
    xattn_moe_desc d;
    memset(&d, 0, sizeof d);
    d.max_tokens = tokens;
    d.hidden = m->hidden;
    d.inter = m->inter;
    d.num_experts = m->experts;
    d.top_k = m->top_k;
    d.dtype = d.weight_dtype = d.logits_dtype = t;
    d.route = m->route;
    d.n_group = m->n_group;
    d.topk_group = m->topk_group;
    d.flags = m->flags;
    d.routed_scaling_factor = m->scale;
    d.activation = m->activation;
    d.bias_dtype = m->bias_dtype;
    d.align = align;
    return d;
}

/* Plan desc on caps; fails the test (naming both) unless it plans. */
static xattn_moe_plan_params plan_ok(const xattn_device_caps *caps, const xattn_moe_desc *d,
                                     xattn_moe_problem *prob_out)
{
    xattn_moe_problem prob;
    xattn_moe_plan_params p;
    memset(&p, 0, sizeof p);
    if (xattn_moe_problem_init(d, &prob) != XATTN_OK)
        fail_msg("problem_init: %s", xattn_last_error());
    xattn_status st = xattn_plan_moe(caps, &prob, &p);
    if (st != XATTN_OK)
        fail_msg("%s: %s T=%d H=%d I=%d E=%d k=%d align %d: %s: %s", caps->name,
                 xattn_dtype_name(d->dtype), (int)d->max_tokens, (int)d->hidden, (int)d->inter,
                 (int)d->num_experts, (int)d->top_k, (int)d->align, xattn_status_string(st),
                 xattn_last_error());
    if (prob_out) *prob_out = prob;
    return p;
}

/* Calls check for every preset, model, dtype and token count, with the
 * planner's alignment. */
typedef void (*plan_check)(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                           const xattn_moe_plan_params *p);

static void for_every_plan(plan_check check)
{
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t mi = 0; mi < ARRAY_SIZE(models); mi++)
            for (size_t ti = 0; ti < ARRAY_SIZE(dtypes); ti++)
                for (size_t ni = 0; ni < ARRAY_SIZE(token_counts); ni++) {
                    xattn_moe_desc d = layer(&models[mi], dtypes[ti], token_counts[ni], 0);
                    xattn_moe_problem prob;
                    xattn_moe_plan_params p = plan_ok(&caps, &d, &prob);
                    check(&caps, &prob, &p);
                }
    }
}

static int uses_matrix(const xattn_device_caps *caps, const xattn_moe_desc *d)
{
    if (caps->style != XATTN_DEVICE_STYLE_GPU || d->dtype != d->weight_dtype) return 0;
    if (d->weight_dtype == XATTN_F16) return (caps->matrix_dtypes & XATTN_MATRIX_F16) != 0;
    if (d->weight_dtype == XATTN_BF16) return (caps->matrix_dtypes & XATTN_MATRIX_BF16) != 0;
    return 0;
}

static int64_t expected_rows(const xattn_moe_desc *d, int32_t align, int64_t tokens)
{
    int64_t pairs = tokens * d->top_k;
    return pairs + (pairs < d->num_experts ? pairs : d->num_experts) * (align - 1);
}

/* ---- every model on every preset --------------------------------------------- */

static void check_planned(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                          const xattn_moe_plan_params *p)
{
    (void)prob;
    assert_int_equal(p->style, caps->style);
    assert_true(p->align >= 1 && p->align <= XATTN_MOE_MAX_ALIGN);
    assert_true(p->threads >= 1);
    assert_true(p->workspace_bytes > 0);
}

static void every_model_plans_on_every_preset(void **state)
{
    (void)state;
    /* for_every_plan fails, naming the problem, on the first that does not plan. */
    for_every_plan(check_planned);
}

/* ---- style and alignment -------------------------------------------------------- */

static void the_plan_takes_the_devices_style(void **state)
{
    (void)state;
    xattn_moe_desc d = layer(&models[1], XATTN_BF16, 512, 0);
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        int cpu = !strcmp(*name, "pocl-cpu") || !strcmp(*name, "host");
        assert_int_equal(caps.style, cpu ? XATTN_DEVICE_STYLE_CPU : XATTN_DEVICE_STYLE_GPU);
        assert_int_equal(plan_ok(&caps, &d, NULL).style, caps.style);
    }
    /* The caps' style decides, not the other figures: PoCL's CPU device
     * described as GPU-style gets local-memory tiles for its work-groups. */
    xattn_device_caps pocl = preset("pocl-cpu");
    pocl.style = XATTN_DEVICE_STYLE_GPU;
    xattn_moe_plan_params p = plan_ok(&pocl, &d, NULL);
    assert_int_equal(p.style, XATTN_DEVICE_STYLE_GPU);
    assert_int_equal(p.align, p.up.block_m);
    assert_true(p.local_mem_bytes > 0 && p.local_mem_bytes <= pocl.local_mem_bytes);
}

static void check_alignment(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                            const xattn_moe_plan_params *p)
{
    if (caps->style == XATTN_DEVICE_STYLE_CPU) {
        /* No padding: the CPU GEMMs take any number of rows. */
        assert_int_equal(p->align, 1);
        return;
    }
    /* One expert per row tile. */
    assert_int_equal(p->align, p->up.block_m);
    assert_int_equal(p->up.block_m, p->down.block_m);
    if (uses_matrix(caps, &prob->desc)) assert_int_equal(p->align % caps->matrix_m, 0);
}

static void the_device_picks_the_alignment_when_the_descriptor_does_not(void **state)
{
    (void)state;
    for_every_plan(check_alignment);
}

static void a_descriptors_alignment_is_kept(void **state)
{
    (void)state;
    const int32_t aligns[] = {1, 3, 16, 48, 64, 128, XATTN_MOE_MAX_ALIGN};
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        for (size_t ai = 0; ai < ARRAY_SIZE(aligns); ai++) {
            xattn_moe_desc d = layer(&models[2], XATTN_BF16, 333, aligns[ai]);
            xattn_moe_plan_params p = plan_ok(&caps, &d, NULL);
            assert_int_equal(p.align, aligns[ai]);
            /* GPU row tiles stay inside one segment where a tile size
             * divides the alignment. */
            if (caps.style == XATTN_DEVICE_STYLE_GPU && aligns[ai] % 16 == 0)
                assert_int_equal(aligns[ai] % p.up.block_m, 0);
        }
    }
}

static void small_batches_get_small_gpu_row_tiles(void **state)
{
    (void)state;
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        if (caps.style != XATTN_DEVICE_STYLE_GPU) continue;
        /* Decode: each expert gets a row or two; a large tile would be
         * mostly padding. */
        xattn_moe_desc decode = layer(&models[2], XATTN_BF16, 1, 0);
        xattn_moe_plan_params p = plan_ok(&caps, &decode, NULL);
        assert_int_equal(p.align, 16);
        /* Prefill: Mixtral's 8 experts get 2048 rows each at 8192 tokens. */
        xattn_moe_desc prefill = layer(&models[0], XATTN_BF16, 8192, 0);
        p = plan_ok(&caps, &prefill, NULL);
        assert_int_equal(p.align, 128);
    }
}

/* ---- rows ---------------------------------------------------------------------- */

static void check_rows(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                       const xattn_moe_plan_params *p)
{
    (void)caps;
    const xattn_moe_desc *d = &prob->desc;
    assert_int_equal(p->max_rows, expected_rows(d, p->align, d->max_tokens));
    assert_int_equal(xattn_moe_rows_for(prob, p->align, d->max_tokens), p->max_rows);
}

static void max_rows_is_tokens_times_k_plus_the_padding_of_the_used_experts(void **state)
{
    (void)state;
    for_every_plan(check_rows);
    /* Fewer pairs than experts pad only the experts they can reach. */
    xattn_moe_desc d = layer(&models[2], XATTN_BF16, 8192, 64);
    xattn_moe_problem prob;
    assert_int_equal(xattn_moe_problem_init(&d, &prob), XATTN_OK);
    assert_int_equal(xattn_moe_rows_for(&prob, 64, 0), 0);
    assert_int_equal(xattn_moe_rows_for(&prob, 64, 1), 8 + 8 * 63);
    assert_int_equal(xattn_moe_rows_for(&prob, 64, 100), 800 + 256 * 63);
    assert_int_equal(xattn_moe_rows_for(&prob, 1, 100), 800);
    assert_int_equal(xattn_moe_rows_for(&prob, 64, -1), -1);
}

static void rows_beyond_i32_indices_are_rejected_naming_max_tokens(void **state)
{
    (void)state;
    xattn_device_caps caps = preset("h100");
    xattn_moe_desc d = layer(&models[2], XATTN_BF16, 1 << 29, 0); /* 2^32 pairs */
    xattn_moe_problem prob;
    xattn_moe_plan_params p;
    assert_int_equal(xattn_moe_problem_init(&d, &prob), XATTN_OK);
    assert_int_equal(xattn_plan_moe(&caps, &prob, &p), XATTN_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(xattn_last_error(), "max_tokens"));
}

/* ---- GPU tiles --------------------------------------------------------------------- */

static size_t round16(size_t x) { return (x + 15) / 16 * 16; }

/* Local memory of one GEMM's tile: A and B per stage (plan_moe.c). */
static size_t tile_local_mem(const xattn_moe_gemm_tiles *t, int pairs, size_t a_es, size_t b_es)
{
    return (size_t)t->stages * (round16((size_t)t->block_m * t->block_k * a_es) +
                                round16((size_t)pairs * t->block_n * t->block_k * b_es));
}

static void check_gpu_tiles(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                            const xattn_moe_plan_params *p)
{
    if (caps->style != XATTN_DEVICE_STYLE_GPU) return;
    const xattn_moe_desc *d = &prob->desc;
    const int mm = uses_matrix(caps, d);
    const size_t x_es = xattn_dtype_size(d->dtype), w_es = xattn_dtype_size(d->weight_dtype);
    const xattn_moe_gemm_tiles *tiles[] = {&p->up, &p->down};
    for (int i = 0; i < 2; i++) {
        const xattn_moe_gemm_tiles *t = tiles[i];
        const int pairs = i == 0 ? 2 : 1;
        assert_true(t->block_m >= 1 && t->block_n >= 1 && t->block_k >= 1 && t->stages >= 1);
        assert_true(t->threads >= (int32_t)caps->simd_width);
        assert_true(t->threads <= (int32_t)caps->max_threads_per_group);
        assert_int_equal(t->threads % caps->simd_width, 0);
        if (mm) {
            assert_int_equal(t->block_m % caps->matrix_m, 0);
            assert_int_equal(t->block_n % caps->matrix_n, 0);
            assert_int_equal(t->block_k % caps->matrix_k, 0);
        }
        /* f32 accumulators of the tile spread over the group's lanes. */
        int64_t acc = (int64_t)t->block_m * t->block_n * pairs / t->threads;
        assert_true(acc < MAX_REGS_PER_LANE);
        if (caps->registers_per_group)
            assert_true(acc * t->threads <= (int64_t)caps->registers_per_group);
        /* The down GEMM stages h (f32 in the workspace) in the weight dtype
         * with matrix units, in f32 without. */
        size_t a_es = i == 0 ? x_es : mm ? w_es : sizeof(float);
        size_t need = tile_local_mem(t, pairs, a_es, w_es);
        assert_true(need <= p->local_mem_bytes);
    }
    assert_true(p->local_mem_bytes <= caps->local_mem_bytes);
}

static void gpu_tiles_fit_local_memory_registers_and_threads(void **state)
{
    (void)state;
    for_every_plan(check_gpu_tiles);
}

static void a_device_too_small_for_any_tile_is_unsupported(void **state)
{
    (void)state;
    /* Less than one stage of the smallest matrix-unit tile (16 x 8 x 16). */
    xattn_device_caps tiny = preset("h100");
    tiny.local_mem_bytes = 512;
    xattn_moe_desc d = layer(&models[0], XATTN_BF16, 512, 0);
    xattn_moe_problem prob;
    xattn_moe_plan_params p;
    assert_int_equal(xattn_moe_problem_init(&d, &prob), XATTN_OK);
    assert_int_equal(xattn_plan_moe(&tiny, &prob, &p), XATTN_ERR_UNSUPPORTED);
    assert_non_null(strstr(xattn_last_error(), "local memory"));
}

/* ---- CPU scratch ----------------------------------------------------------------- */

static size_t scratch_array(int64_t elems) { return ((size_t)elems * 4 + 63) / 64 * 64; }

static void check_cpu_scratch(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                              const xattn_moe_plan_params *p)
{
    if (caps->style != XATTN_DEVICE_STYLE_CPU) return;
    const xattn_moe_desc *d = &prob->desc;
    assert_true(p->threads >= 1);
    assert_true((uint32_t)p->threads <= caps->compute_units);
    assert_int_equal(p->scratch_per_thread % SCRATCH_ALIGN, 0);
    assert_int_equal(p->scratch_bytes, (size_t)p->threads * p->scratch_per_thread);
    /* Route: logits [E] f32 (+ group scores and kept groups); dispatch:
     * expert counts and padding starts [E] i32. */
    size_t route = scratch_array(d->num_experts);
    if (d->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED)
        route += scratch_array(d->n_group) + 2 * scratch_array(d->topk_group);
    assert_true(p->scratch_per_thread >= route);
    assert_true(p->scratch_per_thread >= 2 * scratch_array(d->num_experts));
    assert_true(p->up.block_m >= 1 && p->up.block_n >= 1 && p->up.block_k >= 1);
    assert_true(p->down.block_m >= 1 && p->down.block_n >= 1 && p->down.block_k >= 1);
    /* The GEMM tiles the kernel assumes: row blocks in whole register
     * blocks, K steps either all of K or whole cache lines of f32, and the
     * scratch the kernel carves (the same layout function) inside the slice. */
    const xattn_moe_gemm_tiles *g[] = {&p->up, &p->down};
    const int32_t K[] = {d->hidden, d->inter};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(g[i]->block_m % XATTN_CPU_MOE_ROW_QUANTUM, 0);
        assert_true(g[i]->block_m <= 256);
        assert_true(g[i]->block_k == K[i] || (g[i]->block_k < K[i] && g[i]->block_k % 16 == 0));
    }
    xattn_cpu_moe_scratch lay;
    assert_true(xattn_cpu_moe_scratch_layout(prob, p, &lay));
    assert_true(lay.total <= p->scratch_per_thread);
    /* A layer with expert biases converts an item's entries to f32 there:
     * a gate/up item's 2·block_n, a down item's block_n. */
    if (d->flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)) {
        int64_t n = 2 * (int64_t)p->up.block_n;
        if (p->down.block_n > n) n = p->down.block_n;
        assert_int_equal(lay.bias % SCRATCH_ALIGN, 0);
        assert_true(lay.bias + (size_t)n * sizeof(float) <= lay.total);
    }
}

static void cpu_tiles_and_scratch_fit_the_kernels_on_every_thread(void **state)
{
    (void)state;
    for_every_plan(check_cpu_scratch);
}

/* ---- workspace ------------------------------------------------------------------- */

typedef struct region {
    const char *name;
    size_t offset, bytes;
} region;

static void check_workspace(const xattn_device_caps *caps, const xattn_moe_problem *prob,
                            const xattn_moe_plan_params *p)
{
    (void)caps;
    const xattn_moe_desc *d = &prob->desc;
    const size_t T = (size_t)d->max_tokens, k = (size_t)d->top_k, R = (size_t)p->max_rows;
    const size_t H = (size_t)d->hidden, es = xattn_dtype_size(d->dtype);
    /* The layout plan_moe.h documents, in its order. */
    const region regions[] = {
        {"scratch", p->scratch_offset, p->scratch_bytes},
        {"h", p->h_offset, R * (size_t)d->inter * 4},
        {"ids", p->ids_offset, T * k * 4},
        {"weights", p->weights_offset, T * k * 4},
        {"offsets", p->offsets_offset, ((size_t)d->num_experts + 1) * 4},
        {"row_token", p->row_token_offset, R * 4},
        {"token_row", p->token_row_offset, T * k * 4},
        {"x_perm", p->x_perm_offset, R * H * es},
        {"y", p->y_offset, R * H * es},
    };
    assert_int_equal(p->workspace_bytes % WORKSPACE_ALIGN, 0);
    for (size_t i = 0; i < ARRAY_SIZE(regions); i++) {
        const region *r = &regions[i];
        if (r->offset % WORKSPACE_ALIGN)
            fail_msg("%s: region %s at %zu is not aligned", caps->name, r->name, r->offset);
        if (r->offset + r->bytes > p->workspace_bytes)
            fail_msg("%s: region %s [%zu, +%zu) ends past the workspace %zu", caps->name,
                     r->name, r->offset, r->bytes, p->workspace_bytes);
        if (i > 0 && regions[i - 1].offset + regions[i - 1].bytes > r->offset)
            fail_msg("%s: region %s overlaps %s", caps->name, r->name, regions[i - 1].name);
    }
}

static void workspace_regions_are_aligned_disjoint_and_inside_the_workspace(void **state)
{
    (void)state;
    for_every_plan(check_workspace);
}

static void a_workspace_that_overflows_is_rejected_naming_max_tokens(void **state)
{
    (void)state;
    /* 2^30 rows of h with I near 2^31 f32, then as many of x_perm and y:
     * more than 2^64 bytes. */
    model huge = models[0];
    huge.inter = INT32_MAX;
    huge.hidden = INT32_MAX;
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        xattn_moe_desc d = layer(&huge, XATTN_F32, 1 << 29, 1);
        xattn_moe_problem prob;
        xattn_moe_plan_params p;
        assert_int_equal(xattn_moe_problem_init(&d, &prob), XATTN_OK);
        xattn_status st = xattn_plan_moe(&caps, &prob, &p);
        /* A GPU preset may find no tile for these sizes first. */
        if (st == XATTN_ERR_UNSUPPORTED) continue;
        assert_int_equal(st, XATTN_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(xattn_last_error(), "max_tokens"));
    }
}

/* ---- determinism and text ---------------------------------------------------------- */

static void planning_is_deterministic(void **state)
{
    (void)state;
    for (const char *const *name = xattn_preset_names(); *name; name++) {
        xattn_device_caps caps = preset(*name);
        xattn_moe_desc d = layer(&models[3], XATTN_F16, 777, 0);
        xattn_moe_plan_params a = plan_ok(&caps, &d, NULL), b = plan_ok(&caps, &d, NULL);
        assert_memory_equal(&a, &b, sizeof a);
    }
}

/* The describe text says which expert form and route-weight placement the
 * layer has: GPT-OSS's and Llama-4's. */
static void plan_text_names_the_expert_form(void **state)
{
    (void)state;
    xattn_device_caps caps = preset("host");
    struct {
        const model *m;
        const char *words[4];
    } want[] = {
        {&models[3], {"swiglu_clamped", "alpha 1.702", "limit 7", "interleaved"}},
        {&models[3], {"b1 and b2 bf16", "topk_softmax", "swiglu_clamped", "experts"}},
        {&models[4], {"weights on the input", "topk_sigmoid", "swiglu", "experts"}},
    };
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        xattn_moe_desc d = layer(want[i].m, XATTN_BF16, 64, 0);
        xattn_moe_problem prob;
        xattn_moe_plan_params p = plan_ok(&caps, &d, &prob);
        char text[4096];
        int n = xattn_moe_params_format(&prob, &p, text, sizeof text);
        assert_true(n > 0 && (size_t)n < sizeof text);
        for (size_t w = 0; w < ARRAY_SIZE(want[i].words); w++)
            if (!strstr(text, want[i].words[w]))
                fail_msg("'%s' missing from:\n%s", want[i].words[w], text);
    }
}

static void plan_text_names_alignment_tiles_and_workspace(void **state)
{
    (void)state;
    const char *const names[] = {"h100", "host"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        xattn_device_caps caps = preset(names[i]);
        xattn_moe_desc d = layer(&models[2], XATTN_BF16, 4096, 0);
        xattn_moe_problem prob;
        xattn_moe_plan_params p = plan_ok(&caps, &d, &prob);
        char text[4096];
        int n = xattn_moe_params_format(&prob, &p, text, sizeof text);
        assert_true(n > 0 && (size_t)n < sizeof text);
        assert_int_equal(xattn_moe_params_format(&prob, &p, NULL, 0), n);
        const char *words[] = {"sigmoid_grouped", "align", "max rows", "gate/up", "down",
                               "block_m", "threads", "workspace", "scratch"};
        for (size_t w = 0; w < ARRAY_SIZE(words); w++)
            if (!strstr(text, words[w])) fail_msg("'%s' missing from:\n%s", words[w], text);
        /* Truncation keeps snprintf semantics. */
        char small[16];
        assert_int_equal(xattn_moe_params_format(&prob, &p, small, sizeof small), n);
        assert_int_equal(strlen(small), sizeof small - 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_model_plans_on_every_preset),
        cmocka_unit_test(the_plan_takes_the_devices_style),
        cmocka_unit_test(the_device_picks_the_alignment_when_the_descriptor_does_not),
        cmocka_unit_test(a_descriptors_alignment_is_kept),
        cmocka_unit_test(small_batches_get_small_gpu_row_tiles),
        cmocka_unit_test(max_rows_is_tokens_times_k_plus_the_padding_of_the_used_experts),
        cmocka_unit_test(rows_beyond_i32_indices_are_rejected_naming_max_tokens),
        cmocka_unit_test(gpu_tiles_fit_local_memory_registers_and_threads),
        cmocka_unit_test(a_device_too_small_for_any_tile_is_unsupported),
        cmocka_unit_test(cpu_tiles_and_scratch_fit_the_kernels_on_every_thread),
        cmocka_unit_test(workspace_regions_are_aligned_disjoint_and_inside_the_workspace),
        cmocka_unit_test(a_workspace_that_overflows_is_rejected_naming_max_tokens),
        cmocka_unit_test(planning_is_deterministic),
        cmocka_unit_test(plan_text_names_alignment_tiles_and_workspace),
        cmocka_unit_test(plan_text_names_the_expert_form),
    };
    return cmocka_run_group_tests_name("planner-moe", tests, NULL, NULL);
}
