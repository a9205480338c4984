/* xattn bench, MoE layer workloads: Mixtral-8x7B, Qwen3-30B-A3B,
 * DeepSeek-V3, GPT-OSS and Llama-4 layers (their H, I, k, routing and
 * expert form: GPT-OSS's interleaved W1, biases and clamped SwiGLU,
 * Llama-4's weights on the input), each through one plan and one
 * workspace: route, dispatch, experts and combine timed one at a time,
 * then the fused forward. Llama-4 also has a shared expert, a dense FFN
 * over every token: it runs as the experts call of a second plan (one
 * expert, k 1, alignment 1) on x, with expert_offsets {0, T}, writing out,
 * and the routed forward then adds into out (accumulate); its "forward" is
 * those two calls, and the shared expert is also timed alone.
 *
 * T is chosen so that one forward takes about a second on the device: a
 * few forwards at smaller T (the plan allows any T up to its max_tokens)
 * fit a line through time against T. Where a layer's weights would not fit
 * the memory given to them (--moe-mib), fewer experts run (the model's
 * shape and routing kept), and the output says how many.
 *
 * What is counted, with T tokens, top-k, E experts run, H, I, element sizes
 * a (activations), g (logits) and w (weights), n = T·k real rows (random
 * logits never drop an entry) and A experts that got rows:
 *   experts FLOPs  2·n·(2I·H + H·I): both GEMMs over the real rows only;
 *                  padding rows are overhead, not work. The shared expert:
 *                  2·T·3·H·Is (Is its FFN size).
 *   bytes          each input read once + each output written once, real
 *                  rows only (padding shows as a lower rate):
 *     route     T·E·g logits (+ E·4 bias) read; T·k·4 ids + T·k·4 weights written
 *     dispatch  T·k·4 ids + T·H·a x read; (E+1)·4 offsets + n·H·a x_perm
 *               + n·4 row_token + T·k·4 token_row written
 *     experts   (E+1)·4 offsets + n·H·a x_perm + A·(3·H·I·w + (2I + H)·b)
 *               weights and biases (b: bias element size, 0 without) read;
 *               n·H·a y written
 *     combine   T·k·4 weights + T·k·4 token_row + n·H·a y read; T·H·a out written
 *               (with the weights on the input, dispatch reads the
 *               weights and combine does not)
 *     shared    2·4 offsets + T·H·a x + 3·H·Is·w weights read; T·H·a out written
 *     forward   the four together (it runs them through the workspace),
 *               plus the shared expert
 * "route+dispatch+combine" is the sum of those three steps' times and bytes:
 * the data movement around the GEMMs, compared with the bytes/s ceiling. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "plan_moe.h"

/* A forward at the chosen T lasts about this long. */
#define TARGET_SECONDS 1.0
/* Calibration: the first probe has 1/CALIBRATION_START of the T the FLOP
 * ceiling would finish in TARGET_SECONDS; at most CALIBRATION_PROBES
 * probes, stopping at one within CALIBRATION_TOLERANCE of the target. A
 * probe shorter than SHORT_PROBE_SECONDS runs twice and keeps the faster
 * (its first run may touch new workspace pages). */
#define CALIBRATION_START 16
#define CALIBRATION_PROBES 5
#define CALIBRATION_TOLERANCE 0.1
#define SHORT_PROBE_SECONDS 0.25
/* Activations and workspace may take this fraction of --moe-mib. */
#define ACTIVATION_SHARE 4
/* Weights repeat one random block of this many elements: timings do not
 * depend on the values, and drawing gigabytes of random numbers would take
 * longer than the benchmark. Smaller tensors are random throughout. */
#define FILL_BLOCK_ELEMS ((size_t)1 << 22)
/* Scales of the random inputs: logits in [-1, 1) spread tokens evenly
 * over the experts, and a small bias (like a trained router's) keeps it
 * so; W1 and W2 scaled by 1/sqrt of their reduction length keep the GEMM
 * outputs below 1, finite in f16 at any H and I. */
#define LOGIT_SCALE 1.0f
#define BIAS_SCALE 0.01f
/* Expert biases of GPT-OSS's size: they shift the GEMM outputs a little. */
#define EXPERT_BIAS_SCALE 0.1f
#define GIB ((double)(1u << 30))

/* Expert biases of a layer. */
#define EXPERT_BIASES (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)

static const struct moe_preset {
    const char *name, *model;
    int32_t hidden, inter, experts, top_k;
    xattn_moe_route_mode route;
    uint32_t flags;             /* routing and expert form */
    int32_t n_group, topk_group;
    float scale;
    xattn_moe_activation activation;
    int32_t shared_inter;       /* the shared expert's FFN size; 0: none */
} presets[] = {
    {"mixtral-8x7b", "Mixtral-8x7B", 4096, 14336, 8, 2, XATTN_MOE_ROUTE_SOFTMAX_TOPK,
     XATTN_MOE_RENORMALIZE, 0, 0, 0.0f, XATTN_MOE_SWIGLU, 0},
    {"qwen3-30b-a3b", "Qwen3-30B-A3B", 2048, 768, 128, 8, XATTN_MOE_ROUTE_SOFTMAX_TOPK,
     XATTN_MOE_RENORMALIZE, 0, 0, 0.0f, XATTN_MOE_SWIGLU, 0},
    {"deepseek-v3", "DeepSeek-V3", 7168, 2048, 256, 8, XATTN_MOE_ROUTE_SIGMOID_GROUPED,
     XATTN_MOE_RENORMALIZE | XATTN_MOE_BIAS, 8, 4, 2.5f, XATTN_MOE_SWIGLU, 0},
    /* gpt-oss-120b's layer: biases in the activations' dtype. */
    {"gpt-oss", "GPT-OSS-120B", 2880, 2880, 128, 4, XATTN_MOE_ROUTE_TOPK_SOFTMAX,
     XATTN_MOE_W1_INTERLEAVED | EXPERT_BIASES, 0, 0, 0.0f, XATTN_MOE_SWIGLU_CLAMPED, 0},
    /* Llama-4 Scout and Maverick share this layer shape. */
    {"llama-4", "Llama-4", 5120, 8192, 16, 1, XATTN_MOE_ROUTE_TOPK_SIGMOID,
     XATTN_MOE_WEIGHTS_ON_INPUT, 0, 0, 0.0f, XATTN_MOE_SWIGLU, 8192},
};
_Static_assert(sizeof presets / sizeof presets[0] <= BENCH_MOE_MAX_CASES,
               "BENCH_MOE_MAX_CASES too small");

static const char *const step_names[MOE_STEPS] = {"route", "dispatch", "experts", "combine",
                                                  "forward", "shared expert"};

typedef xattn_status (*moe_call_fn)(const xattn_moe_plan *plan, const xattn_moe_args *args);
static const moe_call_fn step_calls[MOE_STEPS] = {
    xattn_moe_route,   xattn_moe_dispatch, xattn_moe_experts,
    xattn_moe_combine, xattn_moe_forward,  xattn_moe_experts,
};

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* W1, W2 and, where the layer has them, b1 and b2 of one expert. */
static uint64_t weight_bytes_per_expert(const xattn_moe_desc *d)
{
    const uint64_t H = (uint64_t)d->hidden, I = (uint64_t)d->inter;
    uint64_t bytes = 3 * H * I * xattn_dtype_size(d->weight_dtype);
    const uint64_t b = xattn_dtype_size(d->bias_dtype);
    if (d->flags & XATTN_MOE_EXPERT_B1) bytes += 2 * I * b;
    if (d->flags & XATTN_MOE_EXPERT_B2) bytes += H * b;
    return bytes;
}

static uint64_t shared_weight_bytes(const bench_moe_case *c)
{
    return 3 * (uint64_t)c->desc.hidden * (uint64_t)c->shared_inter *
           xattn_dtype_size(c->desc.weight_dtype);
}

/* ---- cases ------------------------------------------------------------------ */

/* The fewest experts the preset's routing allows: k, or for grouped
 * routing whole groups, enough that the kept groups hold k experts. */
static int32_t fewest_experts(const struct moe_preset *p)
{
    if (!p->n_group) return p->top_k;
    int32_t per_group = (p->top_k + p->topk_group - 1) / p->topk_group;
    return p->n_group * per_group;
}

/* Experts to run: --experts, else all whose weights fit in --moe-mib
 * (beside the shared expert's, which always runs), rounded down to whole
 * groups. *above_budget when even the fewest the routing allows do not fit
 * (they run anyway). */
static int32_t experts_to_run(const struct moe_preset *p, const bench_options *o,
                              const bench_moe_case *c, int *above_budget)
{
    *above_budget = 0;
    if (o->moe.experts) return o->moe.experts < p->experts ? o->moe.experts : p->experts;
    double budget = fmax(0.0, (double)o->moe_weight_bytes - shared_weight_bytes(c));
    double fit = floor(budget / weight_bytes_per_expert(&c->desc));
    if (fit >= p->experts) return p->experts;
    int32_t step = p->n_group ? p->n_group : 1;
    int32_t e = (int32_t)fit / step * step;
    if (e < fewest_experts(p)) {
        *above_budget = 1;
        return fewest_experts(p);
    }
    return e;
}

int xattn_bench_moe_cases(const bench_options *o, bench_moe_case *cases)
{
    if (!(o->workloads & WORKLOAD_MOE)) return 0;
    int n = 0;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const struct moe_preset *p = &presets[i];
        if (o->moe_only && strcmp(p->name, o->moe_only)) continue;
        bench_moe_case *c = &cases[n++];
        memset(c, 0, sizeof *c);
        c->name = p->name;
        c->model = p->model;
        c->model_experts = p->experts;
        c->tokens = o->moe.tokens ? o->moe.tokens : o->moe_default_tokens;
        c->tokens_from = o->moe.tokens ? "--tokens" : "the default run's T; --full calibrates";
        c->shape_overridden = o->moe.hidden || o->moe.inter;
        xattn_moe_desc *d = &c->desc;
        d->hidden = o->moe.hidden ? o->moe.hidden : p->hidden;
        d->inter = o->moe.inter ? o->moe.inter : p->inter;
        d->top_k = p->top_k;
        d->dtype = o->dtype;
        d->logits_dtype = o->dtype;
        d->weight_dtype = o->weight_dtype;
        d->route = p->route;
        d->activation = p->activation;
        d->flags = p->flags;
        if (d->flags & EXPERT_BIASES) d->bias_dtype = o->dtype;
        d->n_group = p->n_group;
        d->topk_group = p->topk_group;
        d->routed_scaling_factor = p->scale;
        if (p->shared_inter) c->shared_inter = o->moe.inter ? o->moe.inter : p->shared_inter;
        d->num_experts = experts_to_run(p, o, c, &c->above_budget);
    }
    return n;
}

/* "sigmoid_grouped, bias, groups 8/4, renormalised, scale 2.5" */
static void describe_route(const xattn_moe_desc *d, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "%s", xattn_moe_route_name(d->route));
    if (n < size && (d->flags & XATTN_MOE_BIAS)) n += (size_t)snprintf(buf + n, size - n, ", bias");
    if (n < size && d->n_group)
        n += (size_t)snprintf(buf + n, size - n, ", groups %d/%d", (int)d->n_group,
                              (int)d->topk_group);
    if (n < size && (d->flags & XATTN_MOE_RENORMALIZE))
        n += (size_t)snprintf(buf + n, size - n, ", renormalised");
    if (n < size && d->routed_scaling_factor != 0.0f)
        n += (size_t)snprintf(buf + n, size - n, ", scale %g", (double)d->routed_scaling_factor);
    if (n < size && (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT))
        snprintf(buf + n, size - n, ", weights on the input");
}

/* "swiglu_clamped, W1 interleaved, biases f32; shared expert I 8192" */
static void describe_experts(const bench_moe_case *c, char *buf, size_t size)
{
    const xattn_moe_desc *d = &c->desc;
    size_t n = (size_t)snprintf(buf, size, "%s", xattn_moe_activation_name(d->activation));
    if (n < size && (d->flags & XATTN_MOE_W1_INTERLEAVED))
        n += (size_t)snprintf(buf + n, size - n, ", W1 interleaved");
    if (n < size && (d->flags & EXPERT_BIASES))
        n += (size_t)snprintf(buf + n, size - n, ", biases %s", xattn_dtype_name(d->bias_dtype));
    if (n < size && c->shared_inter)
        snprintf(buf + n, size - n, "; shared expert I %d", (int)c->shared_inter);
}

/* "5.25 GiB", "12.0 MiB", "96.0 KiB", "512 bytes" */
static void format_bytes(double bytes, char *buf, size_t size)
{
    if (bytes >= GIB)
        snprintf(buf, size, "%.2f GiB", bytes / GIB);
    else if (bytes >= 1 << 20)
        snprintf(buf, size, "%.1f MiB", bytes / (1 << 20));
    else if (bytes >= 1 << 10)
        snprintf(buf, size, "%.1f KiB", bytes / (1 << 10));
    else
        snprintf(buf, size, "%.0f bytes", bytes);
}

/* Expert GEMM FLOPs per token, the shared expert's included. */
static double flop_per_token(const bench_moe_case *c)
{
    const xattn_moe_desc *d = &c->desc;
    return 2.0 * 3.0 * d->hidden * ((double)d->top_k * d->inter + c->shared_inter);
}

void xattn_bench_moe_print_list(const bench_moe_case *cases, int n)
{
    printf("%-16s %-14s %-11s %3s %5s %6s %-5s %-5s %10s %11s %6s  %s\n", "moe workload",
           "model", "experts", "k", "H", "I", "dtype", "wtype", "weights", "GFLOP/token",
           "T", "route; experts");
    int above_budget = 0, shared = 0;
    for (int i = 0; i < n; i++) {
        const bench_moe_case *c = &cases[i];
        const xattn_moe_desc *d = &c->desc;
        char experts[24], tokens[16], route[96];
        snprintf(experts, sizeof experts, "%d of %d%s", (int)d->num_experts,
                 (int)c->model_experts, c->above_budget ? "*" : "");
        above_budget |= c->above_budget;
        shared |= c->shared_inter != 0;
        if (c->tokens)
            snprintf(tokens, sizeof tokens, "%d", c->tokens);
        else
            snprintf(tokens, sizeof tokens, "auto");
        describe_route(d, route, sizeof route);
        char weights[32], form[96];
        describe_experts(c, form, sizeof form);
        format_bytes(d->num_experts * weight_bytes_per_expert(d) + shared_weight_bytes(c),
                     weights, sizeof weights);
        printf("%-16s %-14s %-11s %3d %5d %6d %-5s %-5s %10s %11.3f %6s  %s; %s\n", c->name,
               c->model, experts, (int)d->top_k, (int)d->hidden, (int)d->inter,
               xattn_dtype_name(d->dtype), xattn_dtype_name(d->weight_dtype), weights,
               flop_per_token(c) / FLOPS_PER_GFLOP, tokens, route, form);
    }
    if (above_budget) printf("* the fewest experts the routing allows; more than --moe-mib\n");
    if (shared) printf("weights and GFLOP/token include the shared expert's\n");
}

/* ---- buffers ------------------------------------------------------------------ */

/* The tensors of a case: inputs, the output, and the intermediates that
 * the one-at-a-time calls pass along (forward keeps its own in the
 * workspace); then the shared expert's weights and its expert_offsets
 * {0, T}. */
enum {
    OP_LOGITS, OP_BIAS, OP_X, OP_W1, OP_W2, OP_OUT, OP_IDS, OP_WEIGHTS, OP_OFFSETS,
    OP_X_PERM, OP_ROW_TOKEN, OP_TOKEN_ROW, OP_Y, OP_B1, OP_B2,
    OP_SHARED_W1, OP_SHARED_W2, OP_SHARED_OFFSETS, OP_COUNT
};

#define OP(i) (1u << (i))

/* The operands each step passes; every other field of its args is absent,
 * and so are those in it the layer does not have (buffer NULL: bias
 * without XATTN_MOE_BIAS, b1 and b2 without expert biases). With the
 * weights on the input, topk_weights moves from combine to dispatch. The
 * shared expert passes x as x_perm and out as y. */
static const unsigned step_operands[MOE_STEPS] = {
    [MOE_ROUTE] = OP(OP_LOGITS) | OP(OP_BIAS) | OP(OP_IDS) | OP(OP_WEIGHTS),
    [MOE_DISPATCH] = OP(OP_IDS) | OP(OP_X) | OP(OP_OFFSETS) | OP(OP_X_PERM) | OP(OP_ROW_TOKEN) |
                     OP(OP_TOKEN_ROW),
    [MOE_EXPERTS] = OP(OP_X_PERM) | OP(OP_OFFSETS) | OP(OP_W1) | OP(OP_W2) | OP(OP_Y) |
                    OP(OP_B1) | OP(OP_B2),
    [MOE_COMBINE] = OP(OP_Y) | OP(OP_WEIGHTS) | OP(OP_TOKEN_ROW) | OP(OP_OUT),
    [MOE_FORWARD] = OP(OP_LOGITS) | OP(OP_BIAS) | OP(OP_X) | OP(OP_W1) | OP(OP_W2) | OP(OP_OUT) |
                    OP(OP_B1) | OP(OP_B2),
    [MOE_SHARED] = OP(OP_X) | OP(OP_SHARED_OFFSETS) | OP(OP_SHARED_W1) | OP(OP_SHARED_W2) |
                   OP(OP_OUT),
};

typedef struct moe_bench {
    const xattn_moe_desc *desc; /* max_tokens set */
    xattn_moe_desc shared_desc; /* the shared expert: E 1, k 1, I = shared_inter */
    xattn_moe_plan *plan;
    xattn_moe_plan *shared_plan; /* NULL: no shared expert */
    xattn_buffer *buf[OP_COUNT]; /* NULL: not used */
    xattn_buffer *workspace;     /* for both plans, which run one after the other */
    int64_t shared_tokens;       /* T that OP_SHARED_OFFSETS holds, −1: none yet */
} moe_bench;

/* The shared expert of a case as a MoE layer of its own: one expert that
 * every token reaches with weight 1 (softmax over one logit), no padding. */
static xattn_moe_desc shared_expert_desc(const xattn_moe_desc *d, int32_t inter)
{
    xattn_moe_desc s;
    memset(&s, 0, sizeof s);
    s.max_tokens = d->max_tokens;
    s.hidden = d->hidden;
    s.inter = inter;
    s.num_experts = 1;
    s.top_k = 1;
    s.dtype = d->dtype;
    s.weight_dtype = d->weight_dtype;
    s.logits_dtype = d->logits_dtype;
    s.route = XATTN_MOE_ROUTE_SOFTMAX_TOPK;
    s.activation = XATTN_MOE_SWIGLU;
    s.align = 1;
    return s;
}

/* Operand `op` for T tokens and R rows: dtype, rank and shape. */
static int32_t operand_shape(const xattn_moe_desc *d, int op, int64_t T, int64_t R,
                             int64_t shape[3], xattn_dtype *dtype)
{
    int64_t E = d->num_experts, k = d->top_k, H = d->hidden, I = d->inter;
    switch (op) {
    case OP_B1: *dtype = d->bias_dtype; shape[0] = E; shape[1] = 2 * I; return 2;
    case OP_B2: *dtype = d->bias_dtype; shape[0] = E; shape[1] = H; return 2;
    case OP_LOGITS: *dtype = d->logits_dtype; shape[0] = T; shape[1] = E; return 2;
    case OP_BIAS: *dtype = XATTN_F32; shape[0] = E; return 1;
    case OP_X: *dtype = d->dtype; shape[0] = T; shape[1] = H; return 2;
    case OP_W1: *dtype = d->weight_dtype; shape[0] = E; shape[1] = 2 * I; shape[2] = H; return 3;
    case OP_W2: *dtype = d->weight_dtype; shape[0] = E; shape[1] = H; shape[2] = I; return 3;
    case OP_OUT: *dtype = d->dtype; shape[0] = T; shape[1] = H; return 2;
    case OP_IDS: *dtype = XATTN_I32; shape[0] = T; shape[1] = k; return 2;
    case OP_WEIGHTS: *dtype = XATTN_F32; shape[0] = T; shape[1] = k; return 2;
    case OP_OFFSETS: *dtype = XATTN_I32; shape[0] = E + 1; return 1;
    case OP_X_PERM: *dtype = d->dtype; shape[0] = R; shape[1] = H; return 2;
    case OP_ROW_TOKEN: *dtype = XATTN_I32; shape[0] = R; return 1;
    case OP_TOKEN_ROW: *dtype = XATTN_I32; shape[0] = T; shape[1] = k; return 2;
    default: *dtype = d->dtype; shape[0] = R; shape[1] = H; return 2; /* OP_Y */
    }
}

static size_t operand_elems(const xattn_moe_desc *d, int op, int64_t T, int64_t R,
                            xattn_dtype *dtype)
{
    int64_t shape[3];
    int32_t rank = operand_shape(d, op, T, R, shape, dtype);
    size_t n = 1;
    for (int32_t i = 0; i < rank; i++) n *= (size_t)shape[i];
    return n;
}

/* The operands step passes for the case's layer. */
static unsigned step_uses(const moe_bench *m, int step)
{
    unsigned ops = step_operands[step];
    if (m->desc->flags & XATTN_MOE_WEIGHTS_ON_INPUT) {
        if (step == MOE_DISPATCH) ops |= OP(OP_WEIGHTS);
        if (step == MOE_COMBINE) ops &= ~OP(OP_WEIGHTS);
    }
    return ops;
}

/* The args of one step for T tokens: its operands as views of the
 * buffers (sized for max_tokens), the workspace, nothing else. */
static xattn_moe_args step_args(const moe_bench *m, int step, int64_t T)
{
    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    xattn_tensor *fields[OP_COUNT] = {
        [OP_LOGITS] = &a.logits,         [OP_BIAS] = &a.bias,
        [OP_X] = &a.x,                   [OP_W1] = &a.w1,
        [OP_W2] = &a.w2,                 [OP_OUT] = &a.out,
        [OP_IDS] = &a.topk_ids,          [OP_WEIGHTS] = &a.topk_weights,
        [OP_OFFSETS] = &a.expert_offsets, [OP_X_PERM] = &a.x_perm,
        [OP_ROW_TOKEN] = &a.row_token,   [OP_TOKEN_ROW] = &a.token_row,
        [OP_Y] = &a.y,                   [OP_B1] = &a.b1,
        [OP_B2] = &a.b2,
    };
    a.workspace = m->workspace;
    if (step != MOE_SHARED) {
        int64_t R = xattn_moe_rows(m->plan, T);
        const unsigned ops = step_uses(m, step);
        for (int op = 0; op <= OP_B2; op++) {
            if (!(ops & OP(op)) || !m->buf[op]) continue;
            int64_t shape[3];
            xattn_dtype dtype;
            int32_t rank = operand_shape(m->desc, op, T, R, shape, &dtype);
            *fields[op] = xattn_tensor_contiguous(m->buf[op], 0, dtype, rank, shape);
        }
        /* With a shared expert, forward adds to what it wrote. */
        a.accumulate = step == MOE_FORWARD && m->shared_plan;
    } else {
        /* x [T, H] is the one expert's segment, its y is out [T, H]. */
        const xattn_moe_desc *s = &m->shared_desc;
        const int64_t x_shape[2] = {T, s->hidden}, offsets[1] = {2};
        const int64_t w1[3] = {1, 2 * (int64_t)s->inter, s->hidden};
        const int64_t w2[3] = {1, s->hidden, s->inter};
        a.x_perm = xattn_tensor_contiguous(m->buf[OP_X], 0, s->dtype, 2, x_shape);
        a.y = xattn_tensor_contiguous(m->buf[OP_OUT], 0, s->dtype, 2, x_shape);
        a.expert_offsets =
            xattn_tensor_contiguous(m->buf[OP_SHARED_OFFSETS], 0, XATTN_I32, 1, offsets);
        a.w1 = xattn_tensor_contiguous(m->buf[OP_SHARED_W1], 0, s->weight_dtype, 3, w1);
        a.w2 = xattn_tensor_contiguous(m->buf[OP_SHARED_W2], 0, s->weight_dtype, 3, w2);
    }
    return a;
}

/* The shared expert's expert_offsets for T tokens: {0, T}, written once
 * per T, before any timed run. */
static int set_shared_tokens(moe_bench *m, int64_t T, bench_moe_result *r)
{
    if (!m->shared_plan || m->shared_tokens == T) return 0;
    const int32_t offsets[2] = {0, (int32_t)T};
    xattn_status st = xattn_buffer_write(m->buf[OP_SHARED_OFFSETS], 0, offsets, sizeof offsets);
    if (st != XATTN_OK)
        return xattn_bench_fail(&r->status, r->message, sizeof r->message, "xattn_buffer_write",
                                st);
    m->shared_tokens = T;
    return 0;
}

static int out_of_memory(bench_moe_result *r, const char *what, size_t bytes)
{
    r->status = RUN_ERROR;
    snprintf(r->message, sizeof r->message, "out of host memory (%s, %zu bytes)", what, bytes);
    return -1;
}

/* Fill an operand with values uniform in [-scale, scale), written in
 * blocks of at most FILL_BLOCK_ELEMS; a larger operand repeats its one
 * random block. */
static int fill_operand(xattn_buffer *b, xattn_dtype dtype, size_t elems, float scale,
                        uint64_t *seed, bench_moe_result *r)
{
    size_t es = xattn_dtype_size(dtype);
    size_t block = elems < FILL_BLOCK_ELEMS ? elems : FILL_BLOCK_ELEMS;
    void *host = malloc(block * es);
    if (!host) return out_of_memory(r, "fill block", block * es);
    xattn_bench_fill_random(host, dtype, block, scale, seed);
    int rc = 0;
    for (size_t at = 0; at < elems && !rc; at += block) {
        size_t n = elems - at < block ? elems - at : block;
        xattn_status st = xattn_buffer_write(b, at * es, host, n * es);
        if (st != XATTN_OK)
            rc = xattn_bench_fail(&r->status, r->message, sizeof r->message,
                                  "xattn_buffer_write", st);
    }
    free(host);
    return rc;
}

/* Allocate every operand for max_tokens and the workspace; fill the inputs. */
static int alloc_buffers(xattn_context *ctx, const bench_options *o, moe_bench *m,
                         bench_moe_result *r)
{
    const xattn_moe_desc *d = m->desc;
    int64_t T = d->max_tokens, R = xattn_moe_rows(m->plan, T);
    uint64_t seed = o->seed;
    for (int op = 0; op < OP_COUNT; op++) {
        if (op == OP_BIAS && !(d->flags & XATTN_MOE_BIAS)) continue;
        if (op == OP_B1 && !(d->flags & XATTN_MOE_EXPERT_B1)) continue;
        if (op == OP_B2 && !(d->flags & XATTN_MOE_EXPERT_B2)) continue;
        if (op >= OP_SHARED_W1 && !m->shared_plan) continue;
        xattn_dtype dtype;
        size_t elems;
        if (op >= OP_SHARED_W1) { /* one expert's W1 or W2, or its offsets */
            const xattn_moe_desc *s = &m->shared_desc;
            dtype = op == OP_SHARED_OFFSETS ? XATTN_I32 : s->weight_dtype;
            elems = op == OP_SHARED_OFFSETS ? 2 : (op == OP_SHARED_W1 ? 2 : 1) *
                                                      (size_t)s->hidden * (size_t)s->inter;
        } else {
            elems = operand_elems(d, op, T, R, &dtype);
        }
        xattn_status st = xattn_buffer_alloc(ctx, elems * xattn_dtype_size(dtype), &m->buf[op]);
        if (st != XATTN_OK)
            return xattn_bench_fail(&r->status, r->message, sizeof r->message,
                                    "xattn_buffer_alloc", st);
        float scale = 0.0f; /* 0: an output, not filled */
        switch (op) {
        case OP_LOGITS: scale = LOGIT_SCALE; break;
        case OP_BIAS: scale = BIAS_SCALE; break;
        case OP_X: scale = 1.0f; break;
        case OP_W1: case OP_SHARED_W1: scale = 1.0f / sqrtf((float)d->hidden); break;
        case OP_W2: scale = 1.0f / sqrtf((float)d->inter); break;
        case OP_SHARED_W2: scale = 1.0f / sqrtf((float)m->shared_desc.inter); break;
        case OP_B1: case OP_B2: scale = EXPERT_BIAS_SCALE; break;
        default: break;
        }
        if (scale > 0.0f && fill_operand(m->buf[op], dtype, elems, scale, &seed, r)) return -1;
    }
    r->workspace_bytes = xattn_moe_workspace_size(m->plan);
    const size_t shared_ws = xattn_moe_workspace_size(m->shared_plan);
    if (shared_ws > r->workspace_bytes) r->workspace_bytes = shared_ws;
    if (r->workspace_bytes) {
        xattn_status st = xattn_buffer_alloc(ctx, r->workspace_bytes, &m->workspace);
        if (st != XATTN_OK)
            return xattn_bench_fail(&r->status, r->message, sizeof r->message,
                                    "xattn_buffer_alloc (workspace)", st);
    }
    return 0;
}

static void free_buffers(moe_bench *m)
{
    for (int op = 0; op < OP_COUNT; op++) xattn_buffer_free(&m->buf[op]);
    xattn_buffer_free(&m->workspace);
}

/* ---- timing ------------------------------------------------------------------ */

/* The args of a step for T tokens; with a shared expert, forward's run
 * is the shared expert's args, then forward's. */
typedef struct step_run {
    int step;
    xattn_moe_args a, shared;
} step_run;

static step_run step_prepare(const moe_bench *m, int step, int64_t T)
{
    step_run s;
    memset(&s, 0, sizeof s);
    s.step = step;
    s.a = step_args(m, step, T);
    if (step == MOE_FORWARD && m->shared_plan) s.shared = step_args(m, MOE_SHARED, T);
    return s;
}

static xattn_status step_once(const moe_bench *m, const step_run *s)
{
    if (s->step == MOE_SHARED) return xattn_moe_experts(m->shared_plan, &s->a);
    if (s->step == MOE_FORWARD && m->shared_plan) {
        xattn_status st = xattn_moe_experts(m->shared_plan, &s->shared);
        if (st != XATTN_OK) return st;
    }
    return step_calls[s->step](m->plan, &s->a);
}

/* Run one step n times back to back, then wait for the device; *seconds is
 * the time per run, wait included. */
static int run_step(xattn_context *ctx, const moe_bench *m, const step_run *s, int n,
                    double *seconds, bench_moe_result *r)
{
    char call[48];
    double t0 = xattn_bench_now();
    for (int i = 0; i < n; i++) {
        xattn_status st = step_once(m, s);
        if (st != XATTN_OK) {
            snprintf(call, sizeof call, "xattn_moe_%s (%s)",
                     s->step == MOE_SHARED ? "experts" : step_names[s->step],
                     step_names[s->step]);
            return xattn_bench_fail(&r->status, r->message, sizeof r->message, call, st);
        }
    }
    xattn_status st = xattn_context_synchronize(ctx);
    if (st != XATTN_OK)
        return xattn_bench_fail(&r->status, r->message, sizeof r->message,
                                "xattn_context_synchronize", st);
    *seconds = (xattn_bench_now() - t0) / n;
    return 0;
}

/* Warm-up runs, one run to size the batch of a repeat, then the repeats. */
static int time_step(xattn_context *ctx, const bench_options *o, moe_bench *m,
                     const bench_moe_case *mc, int step, int64_t T, double *secs,
                     bench_moe_result *r)
{
    char what[64];
    snprintf(what, sizeof what, "%s %s", mc->name, step_names[step]);
    if (set_shared_tokens(m, T, r)) return -1;
    const step_run run = step_prepare(m, step, T);
    bench_moe_timing *t = &r->step[step];
    double s;
    for (int i = 0; i < o->warmup; i++) {
        if (run_step(ctx, m, &run, 1, &s, r)) return -1;
        xattn_bench_show_progress(what, 0, o->repeats, (void *)o);
    }
    if (run_step(ctx, m, &run, 1, &s, r)) return -1;
    t->runs_per_repeat = xattn_bench_runs_per_repeat(s);
    for (int i = 0; i < o->repeats; i++) {
        if (run_step(ctx, m, &run, t->runs_per_repeat, &secs[i], r)) return -1;
        xattn_bench_show_progress(what, i + 1, o->repeats, (void *)o);
    }
    t->min_s = secs[0];
    for (int i = 1; i < o->repeats; i++)
        if (secs[i] < t->min_s) t->min_s = secs[i];
    t->median_s = xattn_bench_median(secs, o->repeats);
    t->repeats = o->repeats;
    return 0;
}

/* ---- choosing T ----------------------------------------------------------------- */

/* Bytes held per token of max_tokens: the operands here and the plan's
 * workspace (x_perm, y, maps and h per row; ids, weights, token_row per
 * token; a shared expert's h). An estimate: padding rows are left out. */
static double bytes_per_token(const bench_moe_case *mc)
{
    const xattn_moe_desc *d = &mc->desc;
    double a = (double)xattn_dtype_size(d->dtype), k = d->top_k;
    double per_row = 2.0 * (2.0 * d->hidden * a + sizeof(int32_t)) + sizeof(float) * d->inter;
    return d->num_experts * (double)xattn_dtype_size(d->logits_dtype) + 2.0 * d->hidden * a +
           2.0 * 3.0 * k * sizeof(int32_t) + k * per_row + sizeof(float) * mc->shared_inter;
}

/* The largest T a case plans for: what the FLOP ceiling finishes in
 * TARGET_SECONDS (a forward cannot be faster), within the activation
 * memory. */
static int64_t token_cap(const bench_moe_case *mc, const bench_options *o,
                         const xattn_device_caps *caps, const bench_ceilings *c,
                         int *memory_bound)
{
    const xattn_moe_desc *d = &mc->desc;
    double flop_rate = c->flop_rate > 0 ? c->flop_rate
                       : o->dtype == XATTN_F32 ? caps->peak_flops_f32
                                               : caps->peak_flops_f16;
    double by_memory = (double)(o->moe_weight_bytes / ACTIVATION_SHARE) / bytes_per_token(mc);
    /* Rows are int32 in expert_offsets: keep T·k well inside. */
    double cap = (double)(INT32_MAX / 2 / d->top_k);
    if (flop_rate > 0) cap = fmin(cap, ceil(flop_rate * TARGET_SECONDS / flop_per_token(mc)));
    *memory_bound = by_memory < cap;
    return max64(1, (int64_t)fmin(cap, by_memory));
}

/* Seconds of one forward at T tokens. */
static int probe_forward(xattn_context *ctx, moe_bench *m, int64_t T, double *seconds,
                         bench_moe_result *r)
{
    if (set_shared_tokens(m, T, r)) return -1;
    const step_run run = step_prepare(m, MOE_FORWARD, T);
    if (run_step(ctx, m, &run, 1, seconds, r)) return -1;
    if (*seconds < SHORT_PROBE_SECONDS) {
        double again;
        if (run_step(ctx, m, &run, 1, &again, r)) return -1;
        *seconds = fmin(*seconds, again);
    }
    return 0;
}

/* T for a forward of about TARGET_SECONDS, at most cap. Forward time is
 * close to a line in T: a fixed part (every expert's weights are streamed
 * however few rows it gets) plus a part per token. The second probe
 * assumes no fixed part; each later one is where the line through the last
 * two probes meets the target (the secant method), which also steps over a
 * noisy probe. */
static int calibrate_tokens(xattn_context *ctx, const bench_options *o, moe_bench *m,
                            const bench_moe_case *mc, int64_t cap, int64_t *tokens,
                            bench_moe_result *r)
{
    char what[64];
    snprintf(what, sizeof what, "%s calibrating T", mc->name);
    int64_t t_prev = 0, t = max64(1, cap / CALIBRATION_START), next = t;
    double s_prev = 0.0, s = 0.0;
    for (int probe = 1; probe <= CALIBRATION_PROBES; probe++) {
        if (probe_forward(ctx, m, t, &s, r)) return -1;
        xattn_bench_show_progress(what, probe, CALIBRATION_PROBES, (void *)o);
        if (fabs(s / TARGET_SECONDS - 1.0) <= CALIBRATION_TOLERANCE) {
            next = t;
            break;
        }
        double estimate = s > 0 ? (double)t * TARGET_SECONDS / s : (double)cap;
        if (t_prev && t != t_prev && (s - s_prev) / (double)(t - t_prev) > 0) {
            double per_token = (s - s_prev) / (double)(t - t_prev);
            estimate = (double)t + (TARGET_SECONDS - s) / per_token;
        }
        next = (int64_t)fmax(1.0, fmin((double)cap, round(estimate)));
        if (next == t) break; /* at a bound: the cap, or T = 1 */
        t_prev = t;
        s_prev = s;
        t = next;
    }
    *tokens = next;
    return 0;
}

/* ---- one case ------------------------------------------------------------------ */

/* What the steps read and write at T tokens (see the top of this file),
 * from the rows dispatch produced. */
static void count_work(const bench_moe_case *mc, int64_t T, bench_moe_result *r)
{
    const xattn_moe_desc *d = &mc->desc;
    uint64_t E = (uint64_t)d->num_experts, k = (uint64_t)d->top_k, H = (uint64_t)d->hidden;
    uint64_t I = (uint64_t)d->inter, t = (uint64_t)T, tk = t * k;
    uint64_t a = xattn_dtype_size(d->dtype), g = xattn_dtype_size(d->logits_dtype);
    uint64_t w = xattn_dtype_size(d->weight_dtype);
    uint64_t n = (uint64_t)r->rows, i32 = sizeof(int32_t), f32 = sizeof(float);
    uint64_t bias = (d->flags & XATTN_MOE_BIAS) ? E * f32 : 0;
    /* The route weights are read by dispatch when they scale the input,
     * else by combine. */
    uint64_t on_input = (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) ? tk * f32 : 0;
    bench_moe_timing *s = r->step;
    s[MOE_ROUTE].bytes = t * E * g + bias + tk * (i32 + f32);
    s[MOE_DISPATCH].bytes = tk * i32 + on_input + t * H * a + (E + 1) * i32 + n * H * a +
                            n * i32 + tk * i32;
    s[MOE_EXPERTS].bytes = (E + 1) * i32 + n * H * a +
                           (uint64_t)r->active_experts * weight_bytes_per_expert(d) + n * H * a;
    s[MOE_COMBINE].bytes = tk * f32 - on_input + tk * i32 + n * H * a + t * H * a;
    s[MOE_EXPERTS].flop = 2 * n * (2 * I * H + H * I);
    s[MOE_FORWARD].flop = s[MOE_EXPERTS].flop;
    for (int i = MOE_ROUTE; i < MOE_FORWARD; i++) s[MOE_FORWARD].bytes += s[i].bytes;
    if (mc->shared_inter) {
        uint64_t si = (uint64_t)mc->shared_inter;
        s[MOE_SHARED].flop = 2 * t * 3 * H * si;
        s[MOE_SHARED].bytes = 2 * i32 + 2 * t * H * a + 3 * H * si * w;
        s[MOE_FORWARD].flop += s[MOE_SHARED].flop;
        s[MOE_FORWARD].bytes += s[MOE_SHARED].bytes;
    }
}

/* Rows with padding and the experts that got rows, from expert_offsets. */
static int read_segments(const moe_bench *m, bench_moe_result *r)
{
    int64_t E = m->desc->num_experts;
    size_t bytes = (size_t)(E + 1) * sizeof(int32_t);
    int32_t *offsets = malloc(bytes);
    if (!offsets) return out_of_memory(r, "expert_offsets", bytes);
    xattn_status st = xattn_buffer_read(m->buf[OP_OFFSETS], 0, offsets, bytes);
    if (st == XATTN_OK) {
        r->padded_rows = offsets[E];
        for (int64_t e = 0; e < E; e++) r->active_experts += offsets[e + 1] > offsets[e];
    }
    free(offsets);
    if (st != XATTN_OK)
        return xattn_bench_fail(&r->status, r->message, sizeof r->message, "xattn_buffer_read",
                                st);
    return 0;
}

void xattn_bench_moe_run(xattn_context *ctx, const bench_options *o,
                         const xattn_device_caps *caps, const bench_ceilings *c,
                         const bench_moe_case *mc, bench_moe_result *r)
{
    double window[2 * CEILING_MIN_REPEATS];
    int nwin = 0;
    memset(r, 0, sizeof *r);
    xattn_moe_desc desc = mc->desc;
    moe_bench m;
    memset(&m, 0, sizeof m);
    m.desc = &desc;
    double *secs = malloc((size_t)o->repeats * sizeof *secs);
    if (!secs) {
        out_of_memory(r, "timings", (size_t)o->repeats * sizeof *secs);
        return;
    }

    m.shared_tokens = -1;
    int memory_bound = 0;
    int64_t cap = mc->tokens ? mc->tokens : token_cap(mc, o, caps, c, &memory_bound);
    desc.max_tokens = (int32_t)cap;
    xattn_status st = xattn_moe_plan_create(ctx, &desc, &m.plan);
    if (st == XATTN_OK && mc->shared_inter) {
        m.shared_desc = shared_expert_desc(&desc, mc->shared_inter);
        st = xattn_moe_plan_create(ctx, &m.shared_desc, &m.shared_plan);
    }
    if (st != XATTN_OK) {
        xattn_bench_fail(&r->status, r->message, sizeof r->message, "xattn_moe_plan_create", st);
        goto done;
    }
    st = xattn_moe_plan_describe(m.plan, r->plan, sizeof r->plan, NULL);
    if (st != XATTN_OK) {
        xattn_bench_fail(&r->status, r->message, sizeof r->message, "xattn_moe_plan_describe",
                         st);
        goto done;
    }
    r->align = xattn_moe_alignment(m.plan);
    if (alloc_buffers(ctx, o, &m, r)) goto done;

    if (mc->tokens) {
        r->tokens = mc->tokens;
        r->tokens_from = mc->tokens_from;
    } else {
        if (calibrate_tokens(ctx, o, &m, mc, cap, &r->tokens, r)) goto done;
        r->tokens_from = r->tokens < cap   ? "calibrated to about 1 s"
                         : memory_bound    ? "the most --moe-mib leaves room for"
                                           : "the most the FLOP ceiling allows in 1 s";
    }
    /* Random logits never drop an entry: every (token, slot) is a row. */
    r->rows = r->tokens * desc.top_k;

    if (c->reader) xattn_bench_window_passes(c->reader, CEILING_MIN_REPEATS, window, &nwin);
    /* In forward's order, so each step's inputs are its predecessor's
     * outputs. */
    for (int step = 0; step < MOE_STEPS; step++) {
        if (step == MOE_SHARED && !m.shared_plan) continue;
        if (time_step(ctx, o, &m, mc, step, r->tokens, secs, r)) goto done;
        if (step == MOE_DISPATCH && read_segments(&m, r)) goto done;
    }
    count_work(mc, r->tokens, r);
    r->status = RUN_OK;
    if (c->reader) {
        xattn_bench_window_passes(c->reader, CEILING_MIN_REPEATS, window, &nwin);
        r->window_passes = nwin;
        r->window_median = xattn_bench_median(window, nwin); /* sorts */
        r->window_best = window[nwin - 1];
    }
done:
    xattn_bench_end_progress(o);
    free(secs);
    free_buffers(&m);
    xattn_moe_plan_destroy(&m.plan);
    xattn_moe_plan_destroy(&m.shared_plan);
}

/* ---- output ------------------------------------------------------------------ */

/* The bytes/s ceiling of a case: its window's best read pass when measured. */
static double byte_ceiling(const bench_ceilings *c, const bench_moe_result *r)
{
    return r->window_passes ? r->window_best : c->byte_rate;
}

/* Route, dispatch and combine together: times and bytes added. */
static bench_moe_timing data_movement(const bench_moe_result *r)
{
    bench_moe_timing t;
    memset(&t, 0, sizeof t);
    static const int steps[] = {MOE_ROUTE, MOE_DISPATCH, MOE_COMBINE};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const bench_moe_timing *s = &r->step[steps[i]];
        t.bytes += s->bytes;
        t.median_s += s->median_s;
        t.min_s += s->min_s;
    }
    return t;
}

static void print_step(const bench_options *o, const bench_ceilings *c,
                       const bench_moe_result *r, const char *name, const bench_moe_timing *t)
{
    double flops = (double)t->flop / t->median_s, bps = (double)t->bytes / t->median_s;
    printf("  %-24s %10.3f", name, 1e3 * t->median_s);
    if (t->flop > 0) {
        printf(" %9.1f", flops / FLOPS_PER_GFLOP);
        xattn_bench_print_pct(flops, o->ceilings ? c->flop_rate : 0);
    } else {
        printf(" %9s %6s", "-", "-");
    }
    printf(" %8.2f", bps / BYTES_PER_GB);
    xattn_bench_print_pct(bps, o->ceilings ? byte_ceiling(c, r) : 0);
    printf("  %s\n", o->ceilings ? xattn_bench_bound(c, (double)t->flop, (double)t->bytes) : "-");
}

void xattn_bench_moe_print_table(const bench_options *o, const bench_ceilings *c,
                                 const bench_moe_case *cases, const bench_moe_result *res,
                                 int n)
{
    printf("MoE layers: activations and logits %s, weights %s; T from --tokens, else the\n"
           "default run's, else (--full) chosen so that one forward takes about 1 s.\n"
           "GFLOP/s: the expert GEMMs, 2*rows*(2I*H + H*I) over the real rows (padding not\n"
           "counted). GB/s: each input read once + each output written once, real rows only:\n"
           "  route     logits (+ bias) read; topk ids + weights written\n"
           "  dispatch  ids + x (+ weights on the input) read; offsets + x_perm +\n"
           "            row_token + token_row written\n"
           "  experts   offsets + x_perm + the weights (and biases) of experts with rows\n"
           "            read; y written\n"
           "  combine   token_row + y (+ weights unless on the input) read; out written\n"
           "  forward   the four together (with a shared expert: the shared expert's\n"
           "            experts call writes out, then forward adds to it)\n"
           "  shared    a shared expert alone: a dense FFN over every token, run as\n"
           "            the experts call of a one-expert plan (x in, out written)\n"
           "A step whose data fits in the caches can pass 100%% of the bytes/s ceiling.\n",
           xattn_dtype_name(o->dtype), xattn_dtype_name(o->weight_dtype));
    for (int i = 0; i < n; i++) {
        const bench_moe_case *mc = &cases[i];
        const xattn_moe_desc *d = &mc->desc;
        const bench_moe_result *r = &res[i];
        char route[96], form[96];
        describe_route(d, route, sizeof route);
        describe_experts(mc, form, sizeof form);
        printf("\n%s: %s layer, %d of %d experts%s, H %d, I %d%s, k %d, %s\n  experts %s\n",
               mc->name, mc->model, (int)d->num_experts, (int)mc->model_experts,
               mc->above_budget ? " (the fewest the routing allows; more than --moe-mib)" : "",
               (int)d->hidden, (int)d->inter,
               mc->shape_overridden ? " (from --hidden/--inter)" : "", (int)d->top_k, route,
               form);
        if (r->status != RUN_OK) {
            printf("  %s: %s\n", r->status == RUN_UNSUPPORTED ? "unsupported" : "ERROR",
                   r->message);
            continue;
        }
        char weights[32], workspace[32];
        format_bytes(d->num_experts * weight_bytes_per_expert(d) + shared_weight_bytes(mc),
                     weights, sizeof weights);
        format_bytes((double)r->workspace_bytes, workspace, sizeof workspace);
        printf("  T %lld (%s), weights %s, workspace %s\n", (long long)r->tokens,
               r->tokens_from, weights, workspace);
        printf("  rows %lld real + %lld padding (alignment %d), %d of %d experts got rows\n",
               (long long)r->rows, (long long)(r->padded_rows - r->rows), (int)r->align,
               (int)r->active_experts, (int)d->num_experts);
        printf("  %-24s %10s %9s %6s %8s %6s  %s\n", "step", "ms", "GFLOP/s", "%FLOP", "GB/s",
               "%BW", "bound");
        for (int s = MOE_ROUTE; s <= MOE_COMBINE; s++)
            print_step(o, c, r, step_names[s], &r->step[s]);
        bench_moe_timing moved = data_movement(r);
        print_step(o, c, r, "route+dispatch+combine", &moved);
        if (mc->shared_inter) {
            print_step(o, c, r, step_names[MOE_SHARED], &r->step[MOE_SHARED]);
            print_step(o, c, r, "shared + forward", &r->step[MOE_FORWARD]);
        } else {
            print_step(o, c, r, step_names[MOE_FORWARD], &r->step[MOE_FORWARD]);
        }
        if (r->window_passes)
            printf("  %%BW against the read ceiling of this workload's window: best %.1f GB/s, "
                   "median %.1f GB/s of %d passes just before and after its runs\n",
                   r->window_best / BYTES_PER_GB, r->window_median / BYTES_PER_GB,
                   r->window_passes);
        if (o->verbose && r->plan[0]) xattn_bench_print_indented(r->plan);
    }
}

static void json_step(xattn_json *j, const bench_options *o, const bench_ceilings *c,
                      const bench_moe_result *r, const char *name, const bench_moe_timing *t)
{
    double flops = (double)t->flop / t->median_s, bps = (double)t->bytes / t->median_s;
    xattn_json_object_begin(j, name);
    xattn_json_double(j, "median_s", t->median_s);
    xattn_json_double(j, "min_s", t->min_s);
    if (t->repeats) {
        xattn_json_int(j, "repeats", t->repeats);
        xattn_json_int(j, "runs_per_repeat", t->runs_per_repeat);
    }
    xattn_json_uint(j, "flop", t->flop);
    xattn_json_uint(j, "bytes", t->bytes);
    xattn_json_double(j, "flops", flops);
    xattn_json_double(j, "bytes_per_s", bps);
    xattn_bench_json_pct(j, "flops_pct", o->ceilings && t->flop > 0, flops, c->flop_rate);
    xattn_bench_json_pct(j, "bytes_pct", o->ceilings, bps, byte_ceiling(c, r));
    xattn_json_string(j, "bound", o->ceilings ? xattn_bench_bound(c, (double)t->flop,
                                                                   (double)t->bytes)
                                              : "-");
    xattn_json_object_end(j);
}

void xattn_bench_moe_print_json(xattn_json *j, const bench_options *o, const bench_ceilings *c,
                                const bench_moe_case *mc, const bench_moe_result *r)
{
    const xattn_moe_desc *d = &mc->desc;
    xattn_json_object_begin(j, NULL);
    xattn_json_string(j, "name", mc->name);
    xattn_json_string(j, "op", "moe");
    xattn_json_string(j, "model", mc->model);
    xattn_json_string(j, "dtype", xattn_dtype_name(d->dtype));
    xattn_json_string(j, "weight_dtype", xattn_dtype_name(d->weight_dtype));
    xattn_json_string(j, "logits_dtype", xattn_dtype_name(d->logits_dtype));
    xattn_json_int(j, "hidden", d->hidden);
    xattn_json_int(j, "inter", d->inter);
    xattn_json_int(j, "experts", d->num_experts);
    xattn_json_int(j, "model_experts", mc->model_experts);
    xattn_json_int(j, "top_k", d->top_k);
    xattn_json_string(j, "route", xattn_moe_route_name(d->route));
    xattn_json_bool(j, "renormalize", (d->flags & XATTN_MOE_RENORMALIZE) != 0);
    xattn_json_bool(j, "bias", (d->flags & XATTN_MOE_BIAS) != 0);
    xattn_json_int(j, "n_group", d->n_group);
    xattn_json_int(j, "topk_group", d->topk_group);
    xattn_json_double(j, "routed_scaling_factor",
                      d->routed_scaling_factor != 0.0f ? d->routed_scaling_factor : 1.0);
    xattn_json_bool(j, "weights_on_input", (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0);
    xattn_json_string(j, "activation", xattn_moe_activation_name(d->activation));
    if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        xattn_json_double(j, "swiglu_alpha",
                          d->swiglu_alpha != 0.0f ? d->swiglu_alpha : XATTN_MOE_SWIGLU_ALPHA);
        xattn_json_double(j, "swiglu_limit",
                          d->swiglu_limit != 0.0f ? d->swiglu_limit : XATTN_MOE_SWIGLU_LIMIT);
    }
    xattn_json_bool(j, "w1_interleaved", (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0);
    if (d->flags & EXPERT_BIASES) xattn_json_string(j, "expert_biases", xattn_dtype_name(d->bias_dtype));
    else xattn_json_null(j, "expert_biases");
    if (mc->shared_inter) xattn_json_int(j, "shared_expert_inter", mc->shared_inter);
    else xattn_json_null(j, "shared_expert_inter");
    xattn_json_uint(j, "weight_bytes", (uint64_t)d->num_experts * weight_bytes_per_expert(d) +
                                           shared_weight_bytes(mc));
    xattn_json_uint(j, "flop_per_token",
                    2 * (uint64_t)d->top_k * 3 * (uint64_t)d->hidden * (uint64_t)d->inter +
                        2 * 3 * (uint64_t)d->hidden * (uint64_t)mc->shared_inter);
    if (!r) { /* --list: T is known only when given */
        if (mc->tokens) xattn_json_int(j, "tokens", mc->tokens);
        else xattn_json_null(j, "tokens");
        xattn_json_object_end(j);
        return;
    }
    if (xattn_bench_json_status(j, r->status, r->message)) return;
    xattn_json_int(j, "tokens", r->tokens);
    xattn_json_string(j, "tokens_from", r->tokens_from);
    xattn_json_int(j, "rows", r->rows);
    xattn_json_int(j, "padded_rows", r->padded_rows);
    xattn_json_int(j, "align", r->align);
    xattn_json_int(j, "active_experts", r->active_experts);
    xattn_json_uint(j, "workspace_bytes", r->workspace_bytes);
    xattn_json_object_begin(j, "steps");
    for (int s = MOE_ROUTE; s <= MOE_COMBINE; s++) json_step(j, o, c, r, step_names[s], &r->step[s]);
    bench_moe_timing moved = data_movement(r);
    json_step(j, o, c, r, "route_dispatch_combine", &moved);
    if (mc->shared_inter) json_step(j, o, c, r, "shared_expert", &r->step[MOE_SHARED]);
    json_step(j, o, c, r, step_names[MOE_FORWARD], &r->step[MOE_FORWARD]);
    xattn_json_object_end(j);
    xattn_bench_json_window(j, r->window_passes, r->window_best, r->window_median);
    xattn_json_string(j, "plan", r->plan);
    xattn_json_object_end(j);
}
