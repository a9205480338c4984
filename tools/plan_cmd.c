/* xattn plan: print the plan for an attention problem or (--moe) a MoE
 * layer, for the current context's device or (--preset) for a device preset
 * with no device at all. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "json.h"
#include "opts.h"
#include "plan.h"
#include "plan_moe.h"
#include "xattn.h"

/* Plans for the presets are a few hundred bytes; leave room. */
enum { PLAN_TEXT_BYTES = 4096 };

/* MoE layers of `--model`: shape, routing and expert form as the models
 * ship them. */
typedef struct moe_model {
    const char *name;
    int32_t hidden, inter, experts, top_k;
    xattn_moe_route_mode route;
    int32_t n_group, topk_group;
    uint32_t flags;
    float routed_scale;
    xattn_moe_activation activation;
    xattn_dtype bias_dtype;
} moe_model;

static const moe_model moe_models[] = {
    {"mixtral", 4096, 14336, 8, 2, XATTN_MOE_ROUTE_SOFTMAX_TOPK, 0, 0, XATTN_MOE_RENORMALIZE, 0,
     XATTN_MOE_SWIGLU, XATTN_F32},
    {"qwen3-moe", 2048, 768, 128, 8, XATTN_MOE_ROUTE_SOFTMAX_TOPK, 0, 0, XATTN_MOE_RENORMALIZE,
     0, XATTN_MOE_SWIGLU, XATTN_F32},
    {"deepseek-v3", 7168, 2048, 256, 8, XATTN_MOE_ROUTE_SIGMOID_GROUPED, 8, 4,
     XATTN_MOE_RENORMALIZE | XATTN_MOE_BIAS, 2.5f, XATTN_MOE_SWIGLU, XATTN_F32},
    /* Interleaved W1, bf16 biases, the clamped SwiGLU. */
    {"gpt-oss", 2880, 2880, 128, 4, XATTN_MOE_ROUTE_TOPK_SOFTMAX, 0, 0,
     XATTN_MOE_W1_INTERLEAVED | XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2, 0,
     XATTN_MOE_SWIGLU_CLAMPED, XATTN_BF16},
    /* The route weight on the expert's input. */
    {"llama-4", 5120, 8192, 16, 1, XATTN_MOE_ROUTE_TOPK_SIGMOID, 0, 0,
     XATTN_MOE_WEIGHTS_ON_INPUT, 0, XATTN_MOE_SWIGLU, XATTN_F32},
};

/* Route modes by their --route names, in xattn_moe_route_mode order. */
static const char *const route_names[] = {"softmax-topk", "topk-softmax", "sigmoid-grouped",
                                          "topk-sigmoid", NULL};

/* The MoE options; −1 (0 for flags) where the model's value stands. */
typedef struct moe_opts {
    const moe_model *model;
    int tokens, hidden, inter, experts, top_k, n_group, topk_group, align;
    int route, activation, weight_dtype, logits_dtype, bias_dtype;
    uint32_t flags;         /* added to the model's */
    float routed_scale;     /* with --routed-scale: replaces the model's */
    float swiglu_alpha, swiglu_limit; /* 0: the default */
} moe_opts;

typedef struct plan_opts {
    const char *preset;
    int threads;
    int json;
    int batch, sq, sk, hq, hkv, d, dqk, dv;
    int dtype;              /* -1: by device style */
    int causal, window, ragged, alibi, sinks, lse;
    int wl, wr, page_size;
    float softcap, scale;
    int moe;                /* --moe: plan a MoE layer */
    int routed_scale_set;   /* --routed-scale given */
    moe_opts m;
} plan_opts;

/* --window L,R */
static int parse_window(void *opts, const char *s)
{
    plan_opts *o = opts;
    const char *comma = strchr(s, ',');
    if (!comma) {
        fprintf(stderr, "xattn plan: --window '%s': expected L,R (-1 = unbounded)\n", s);
        return -1;
    }
    char left[32];
    size_t n = (size_t)(comma - s);
    if (n >= sizeof left) n = sizeof left - 1;
    memcpy(left, s, n);
    left[n] = '\0';
    long long l, r;
    if (xattn_opts_int("xattn plan", "--window", left, -1, INT32_MAX, &l) ||
        xattn_opts_int("xattn plan", "--window", comma + 1, -1, INT32_MAX, &r))
        return -1;
    o->wl = (int)l;
    o->wr = (int)r;
    o->window = 1;
    return 0;
}

/* --model NAME: one of moe_models. */
static int parse_model(void *opts, const char *s)
{
    plan_opts *o = opts;
    size_t n = sizeof moe_models / sizeof moe_models[0];
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, moe_models[i].name)) {
            o->m.model = &moe_models[i];
            return 0;
        }
    fprintf(stderr, "xattn plan: --model '%s': expected one of ", s);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "%s%s", moe_models[i].name, i + 1 < n ? ", " : "\n");
    return -1;
}

/* In xattn_moe_activation order. */
static const char *const activation_names[] = {"swiglu", "geglu", "swiglu-clamped", NULL};

/* The sections of the table: options before the first heading serve both
 * kinds of plan; each later section only the kind its heading names. */
enum { SECTION_BOTH, SECTION_ATTN, SECTION_MOE };

#define OPT_STRUCT plan_opts
static const xattn_opt plan_table[] = {
    OPT_STRING("preset", preset, "NAME", "plan for a device preset (listed below), no device\n"
                                         "needed (default: the device XATTN_BACKEND and\n"
                                         "XATTN_DEVICE pick)"),
    OPT_INT("threads", threads, 0, 1 << 20, "N", "worker threads for --preset host (default: all cores)"),
    OPT_DTYPE("dtype", dtype, "f32, f16 or bf16 (default: bf16 on GPU-style devices,\n"
                              "f32 on CPU-style ones)"),
    OPT_FLAG("json", 0, json, 1, "print JSON on stdout instead of text"),

    OPT_HEADING("attention problem (defaults: B=1, Sq=4096, Sk=Sq, Hq=32, Hkv=Hq, D=128):"),
    OPT_INT("batch", batch, 1, INT32_MAX, "N", "sequences B"),
    OPT_INT("sq", sq, 0, INT32_MAX, "N", "query tokens per sequence (max, with --ragged)"),
    OPT_INT("sk", sk, 0, INT32_MAX, "N", "key tokens per sequence (max, with --ragged or\n--page-size)"),
    OPT_INT("hq", hq, 1, INT32_MAX, "N", "query heads"),
    OPT_INT("hkv", hkv, 1, INT32_MAX, "N", "KV heads (Hq % Hkv == 0)"),
    OPT_INT("d", d, 1, INT32_MAX, "N", "head dim of Q, K and V"),
    OPT_INT("dqk", dqk, 1, INT32_MAX, "N", "head dim of Q and K (default --d), e.g. 192, 576"),
    OPT_INT("dv", dv, 1, INT32_MAX, "N", "head dim of V (default --d), e.g. 128, 512"),
    OPT_FLAG("causal", 0, causal, 1, "causal mask (window right = 0)"),
    OPT_CUSTOM("window", 0, parse_window, "L,R", "sliding window, -1 = unbounded"),
    OPT_INT("page-size", page_size, 1, INT32_MAX, "P", "paged KV cache with P tokens per page"),
    OPT_FLAG("ragged", 0, ragged, 1, "ragged (varlen) Q and K/V"),
    OPT_FLOAT("softcap", softcap, "C", "soft cap of the scores"),
    OPT_FLOAT("scale", scale, "S", "score scale (default 1/sqrt(Dqk))"),
    OPT_FLAG("alibi", 0, alibi, 1, "ALiBi slopes"),
    OPT_FLAG("sinks", 0, sinks, 1, "attention sinks"),
    OPT_FLAG("lse", 0, lse, 1, "write the log-sum-exp"),

    OPT_HEADING("MoE layer (defaults: --model mixtral, --tokens 512):"),
    OPT_FLAG("moe", 0, moe, 1, "plan a MoE layer instead of attention"),
    OPT_CUSTOM("model", 0, parse_model, "NAME", "shape and routing of a model's layer (listed\n"
                                                "below); the options below override it"),
    OPT_INT("tokens", m.tokens, 1, INT32_MAX, "N", "most tokens per call (max_tokens)"),
    OPT_INT("hidden", m.hidden, 1, INT32_MAX, "N", "hidden size H"),
    OPT_INT("inter", m.inter, 1, INT32_MAX, "N", "expert FFN size I"),
    OPT_INT("experts", m.experts, 1, INT32_MAX, "N", "experts E"),
    OPT_INT("top-k", m.top_k, 1, INT32_MAX, "N", "experts per token"),
    OPT_CHOICE("route", m.route, route_names, "MODE", "softmax-topk, topk-softmax,\n"
                                                      "sigmoid-grouped or topk-sigmoid"),
    OPT_INT("groups", m.n_group, 1, INT32_MAX, "N", "sigmoid-grouped: expert groups (n_group)"),
    OPT_INT("topk-group", m.topk_group, 1, INT32_MAX, "N", "sigmoid-grouped: groups kept per token"),
    OPT_BITS("bias", m.flags, XATTN_MOE_BIAS, "sigmoid-grouped: a selection bias per expert"),
    OPT_BITS("renormalize", m.flags, XATTN_MOE_RENORMALIZE, "route weights renormalised to sum 1"),
    OPT_FLOAT("routed-scale", m.routed_scale, "S", "route weights times S"),
    OPT_CHOICE("activation", m.activation, activation_names, "A",
               "swiglu, geglu or swiglu-clamped (default: the\nmodel's)"),
    OPT_FLOAT("swiglu-alpha", m.swiglu_alpha, "A", "swiglu-clamped: alpha (default 1.702)"),
    OPT_FLOAT("swiglu-limit", m.swiglu_limit, "L", "swiglu-clamped: limit (default 7)"),
    OPT_BITS("w1-interleaved", m.flags, XATTN_MOE_W1_INTERLEAVED, "W1 rows alternate gate and up"),
    OPT_BITS("b1", m.flags, XATTN_MOE_EXPERT_B1, "expert bias after the gate/up GEMM"),
    OPT_BITS("b2", m.flags, XATTN_MOE_EXPERT_B2, "expert bias after the down GEMM"),
    OPT_DTYPE("bias-dtype", m.bias_dtype, "b1 and b2 (default: the model's, else f32)"),
    OPT_BITS("weights-on-input", m.flags, XATTN_MOE_WEIGHTS_ON_INPUT,
             "dispatch scales rows by their route weight,\ncombine sums them unweighted"),
    OPT_DTYPE("weight-dtype", m.weight_dtype, "W1 and W2 (default --dtype)"),
    OPT_DTYPE("logits-dtype", m.logits_dtype, "gate logits (default --dtype)"),
    OPT_INT("align", m.align, 1, XATTN_MOE_MAX_ALIGN, "N", "segment alignment (default: the planner's choice)"),
};
#undef OPT_STRUCT

static void plan_usage(FILE *f);
static const xattn_cmd plan_cmd = {"xattn plan", "[--moe] [options]", plan_table,
                                   XATTN_OPTS_COUNT(plan_table), plan_usage};

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: xattn plan [options]          attention plan\n"
            "       xattn plan --moe [options]    MoE layer plan\n"
            "\n"
            "Print the attention plan (tiles, threads, stages, KV splits, work items,\n"
            "workspace, local memory) for a problem, or with --moe the plan of a\n"
            "Mixture-of-Experts layer (segment alignment, permuted rows, expert GEMM\n"
            "tiles, threads, scratch and the workspace regions).\n"
            "\n");
    xattn_opts_print(f, &plan_cmd);
    fprintf(f, "\npresets: ");
    for (const char *const *n = xattn_preset_names(); *n; n++)
        fprintf(f, "%s%s", *n, n[1] ? ", " : "\n");
    fprintf(f, "models:  ");
    for (size_t i = 0; i < sizeof moe_models / sizeof moe_models[0]; i++)
        fprintf(f, "%s%s", moe_models[i].name,
                i + 1 < sizeof moe_models / sizeof moe_models[0] ? ", " : "\n");
}

/* 1: parsed; 0: error (printed); -1: --help (printed). */
static int parse_args(int argc, char **argv, plan_opts *o)
{
    memset(o, 0, sizeof *o);
    moe_opts *m = &o->m;
    m->model = &moe_models[0];
    m->tokens = 512;
    m->hidden = m->inter = m->experts = m->top_k = m->n_group = m->topk_group = -1;
    m->route = m->activation = m->weight_dtype = m->logits_dtype = m->bias_dtype = -1;
    o->batch = 1;
    o->sq = 4096;
    o->sk = -1;
    o->hq = 32;
    o->hkv = -1;
    o->d = 128;
    o->dqk = o->dv = -1;
    o->dtype = -1;

    int seen[XATTN_OPTS_COUNT(plan_table)];
    int r = xattn_opts_parse(&plan_cmd, argc, argv, o, seen);
    if (r != XATTN_OPTS_RUN) return r == XATTN_OPTS_HELP ? -1 : 0;
    o->routed_scale_set = xattn_opts_seen(&plan_cmd, seen, "routed-scale") != 0;

    /* The last option given that only the other kind of plan takes is an
     * error rather than silently ignored. */
    const char *attn_only = NULL, *moe_only = NULL;
    int attn_at = 0, moe_at = 0, section = SECTION_BOTH;
    for (size_t i = 0; i < XATTN_OPTS_COUNT(plan_table); i++) {
        const xattn_opt *t = &plan_table[i];
        if (t->type == XATTN_OPT_HEADING) section++;
        if (!seen[i] || !strcmp(t->name, "moe")) continue;
        if (section == SECTION_ATTN && seen[i] > attn_at) attn_only = t->name, attn_at = seen[i];
        if (section == SECTION_MOE && seen[i] > moe_at) moe_only = t->name, moe_at = seen[i];
    }
    if (o->sk < 0) o->sk = o->sq;
    if (o->hkv < 0) o->hkv = o->hq;
    if (o->dqk < 0) o->dqk = o->d;
    if (o->dv < 0) o->dv = o->d;
    if (o->threads && (!o->preset || strcmp(o->preset, "host"))) {
        fprintf(stderr, "xattn plan: --threads applies to --preset host only\n");
        return 0;
    }
    if (o->moe && attn_only) {
        fprintf(stderr, "xattn plan: --%s applies to attention plans, not to --moe\n", attn_only);
        return 0;
    }
    if (!o->moe && moe_only) {
        fprintf(stderr, "xattn plan: --%s applies to MoE plans: add --moe\n", moe_only);
        return 0;
    }
    return 1;
}

static xattn_attn_desc make_desc(const plan_opts *o, xattn_dtype dtype)
{
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = dtype;
    d.batch = o->batch;
    d.num_q_heads = o->hq;
    d.num_kv_heads = o->hkv;
    d.head_dim_qk = o->dqk;
    d.head_dim_v = o->dv;
    d.seqlen_q = o->sq;
    d.seqlen_k = o->sk;
    d.q_layout = o->ragged ? XATTN_Q_RAGGED : XATTN_Q_UNIFORM;
    d.kv_layout = o->ragged ? XATTN_KV_RAGGED : XATTN_KV_UNIFORM;
    if (o->page_size) {
        int64_t pages = ((int64_t)o->sk + o->page_size - 1) / o->page_size;
        if (pages < 1) pages = 1;
        d.kv_layout = XATTN_KV_PAGED;
        d.page_size = o->page_size;
        d.max_pages_per_seq = pages > INT32_MAX ? INT32_MAX : (int32_t)pages;
        int64_t total = pages * o->batch;
        d.num_pages = total > INT32_MAX ? INT32_MAX : (int32_t)total;
    }
    if (o->causal) d.flags |= XATTN_ATTN_CAUSAL;
    if (o->window) {
        d.flags |= XATTN_ATTN_WINDOW;
        d.window_left = o->wl;
        d.window_right = o->wr;
    }
    if (o->alibi) d.flags |= XATTN_ATTN_ALIBI;
    if (o->sinks) d.flags |= XATTN_ATTN_SINKS;
    if (o->lse) d.flags |= XATTN_ATTN_LSE;
    d.softcap = o->softcap;
    d.scale = o->scale;
    return d;
}

static xattn_dtype pick_dtype(const plan_opts *o, xattn_device_style style)
{
    if (o->dtype >= 0) return (xattn_dtype)o->dtype;
    return style == XATTN_DEVICE_STYLE_GPU ? XATTN_BF16 : XATTN_F32;
}

/* The model's layer with the explicit options over it. */
static xattn_moe_desc make_moe_desc(const plan_opts *o, xattn_dtype dtype)
{
    const moe_opts *m = &o->m;
    const moe_model *mm = m->model;
    xattn_moe_desc d;
    memset(&d, 0, sizeof d);
    d.max_tokens = m->tokens;
    d.hidden = m->hidden > 0 ? m->hidden : mm->hidden;
    d.inter = m->inter > 0 ? m->inter : mm->inter;
    d.num_experts = m->experts > 0 ? m->experts : mm->experts;
    d.top_k = m->top_k > 0 ? m->top_k : mm->top_k;
    d.dtype = dtype;
    d.weight_dtype = m->weight_dtype >= 0 ? (xattn_dtype)m->weight_dtype : dtype;
    d.logits_dtype = m->logits_dtype >= 0 ? (xattn_dtype)m->logits_dtype : dtype;
    d.route = m->route >= 0 ? (xattn_moe_route_mode)m->route : mm->route;
    d.activation = m->activation >= 0 ? (xattn_moe_activation)m->activation : mm->activation;
    d.flags = mm->flags | m->flags;
    /* A bias dtype, alpha or limit means something only with its option;
     * given without it, the planner's error says so. */
    if (m->bias_dtype >= 0) d.bias_dtype = (xattn_dtype)m->bias_dtype;
    else if (d.flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)) d.bias_dtype = mm->bias_dtype;
    d.swiglu_alpha = m->swiglu_alpha;
    d.swiglu_limit = m->swiglu_limit;
    d.n_group = m->n_group > 0 ? m->n_group : mm->n_group;
    d.topk_group = m->topk_group > 0 ? m->topk_group : mm->topk_group;
    d.routed_scaling_factor = o->routed_scale_set ? m->routed_scale : mm->routed_scale;
    d.align = m->align > 0 ? m->align : 0;
    return d;
}

static int fail(const char *what, xattn_status st)
{
    fprintf(stderr, "xattn plan: %s: %s: %s\n", what, xattn_status_string(st), xattn_last_error());
    return 1;
}

/* Where a plan is made for: a preset's caps, or a context's device. */
typedef struct plan_target {
    const char *preset;   /* NULL: the context's device */
    xattn_context *ctx;
    xattn_device_caps caps;
} plan_target;

/* Both kinds of plan, as the planner made them, and the text. */
typedef struct plan_result {
    int moe;
    xattn_attn_problem prob;
    xattn_attn_plan_params params;
    xattn_moe_problem moe_prob;
    xattn_moe_plan_params moe_params;
    char text[PLAN_TEXT_BYTES];
} plan_result;

/* A context's plan text from xattn_plan_describe / xattn_moe_plan_describe. */
static void take_text(plan_result *r, xattn_status st, size_t needed)
{
    if (st == XATTN_OK && needed >= sizeof r->text)
        snprintf(r->text + sizeof r->text - sizeof "\n(truncated)\n",
                 sizeof "\n(truncated)\n", "\n(truncated)\n");
}

/* The preset's line at the start of r->text: its length, or -1 when the
 * text has no room after it for the planner's. */
static int preset_line(plan_result *r, const plan_target *t)
{
    int n = snprintf(r->text, sizeof r->text, "preset       %s: %s\n", t->preset, t->caps.name);
    return n > 0 && (size_t)n < sizeof r->text ? n : -1;
}

/* A context's plan described itself (st, needed) into r->text: its status,
 * also checking that its workspace (plan_ws) is the planner's. */
static int described(plan_result *r, xattn_status st, size_t needed, size_t plan_ws,
                     size_t planner_ws)
{
    take_text(r, st, needed);
    if (st != XATTN_OK) return fail("describe", st);
    if (plan_ws != planner_ws) {
        fprintf(stderr, "xattn plan: internal: the plan's workspace (%zu) is not the planner's "
                        "(%zu)\n", plan_ws, planner_ws);
        return 1;
    }
    return 0;
}

/* The planner's parameters are those the library's plan holds: the same
 * planner on the same caps. A context's plan is also made through the
 * public API, which also runs the backend's own checks and gives the text. */
static int plan_attention(const plan_opts *o, const plan_target *t, plan_result *r)
{
    xattn_attn_desc desc = make_desc(o, pick_dtype(o, t->caps.style));
    xattn_status st = xattn_attn_problem_init(&desc, &r->prob);
    if (st != XATTN_OK) return fail("problem", st);
    st = xattn_plan_attention(&t->caps, &r->prob, &r->params);
    if (st != XATTN_OK) return fail("plan", st);
    if (t->preset) {
        int n = preset_line(r, t);
        if (n >= 0)
            xattn_plan_params_format(&r->prob, &r->params, r->text + n, sizeof r->text - (size_t)n);
        return 0;
    }
    xattn_plan *plan = NULL;
    st = xattn_plan_create(t->ctx, &desc, &plan);
    if (st != XATTN_OK) return fail("plan", st);
    size_t needed = 0;
    st = xattn_plan_describe(plan, r->text, sizeof r->text, &needed);
    int rc = described(r, st, needed, xattn_plan_workspace_size(plan), r->params.workspace_bytes);
    xattn_plan_destroy(&plan);
    return rc;
}

static int plan_moe(const plan_opts *o, const plan_target *t, plan_result *r)
{
    xattn_moe_desc desc = make_moe_desc(o, pick_dtype(o, t->caps.style));
    xattn_status st = xattn_moe_problem_init(&desc, &r->moe_prob);
    if (st != XATTN_OK) return fail("problem", st);
    st = xattn_plan_moe(&t->caps, &r->moe_prob, &r->moe_params);
    if (st != XATTN_OK) return fail("plan", st);
    if (t->preset) {
        int n = preset_line(r, t);
        if (n >= 0)
            xattn_moe_params_format(&r->moe_prob, &r->moe_params, r->text + n,
                                    sizeof r->text - (size_t)n);
        return 0;
    }
    xattn_moe_plan *plan = NULL;
    st = xattn_moe_plan_create(t->ctx, &desc, &plan);
    if (st != XATTN_OK) return fail("plan", st);
    size_t needed = 0;
    st = xattn_moe_plan_describe(plan, r->text, sizeof r->text, &needed);
    int rc = described(r, st, needed, xattn_moe_workspace_size(plan),
                       r->moe_params.workspace_bytes);
    xattn_moe_plan_destroy(&plan);
    return rc;
}

/* ---- JSON ----------------------------------------------------------------- */

static const char *const q_layout_names[] = {"uniform", "ragged"};
static const char *const kv_layout_names[] = {"uniform", "ragged", "paged"};

static const char *style_name(xattn_device_style s)
{
    return s == XATTN_DEVICE_STYLE_GPU ? "gpu" : "cpu";
}

static void json_attn(xattn_json *j, const xattn_attn_problem *prob,
                      const xattn_attn_plan_params *p)
{
    const xattn_attn_desc *d = &prob->desc;
    xattn_json_object_begin(j, "problem");
    xattn_json_string(j, "dtype", xattn_dtype_name(d->dtype));
    xattn_json_int(j, "batch", d->batch);
    xattn_json_int(j, "num_q_heads", d->num_q_heads);
    xattn_json_int(j, "num_kv_heads", d->num_kv_heads);
    xattn_json_int(j, "head_dim_qk", d->head_dim_qk);
    xattn_json_int(j, "head_dim_v", d->head_dim_v);
    xattn_json_string(j, "q_layout", (unsigned)d->q_layout < 2 ? q_layout_names[d->q_layout] : "?");
    xattn_json_string(j, "kv_layout",
                      (unsigned)d->kv_layout < 3 ? kv_layout_names[d->kv_layout] : "?");
    xattn_json_int(j, "seqlen_q", d->seqlen_q);
    xattn_json_int(j, "seqlen_k", d->seqlen_k);
    xattn_json_int(j, "page_size", d->page_size);
    xattn_json_int(j, "num_pages", d->num_pages);
    xattn_json_int(j, "max_pages_per_seq", d->max_pages_per_seq);
    xattn_json_bool(j, "causal", (d->flags & XATTN_ATTN_CAUSAL) != 0);
    xattn_json_int(j, "window_left", prob->window_left);
    xattn_json_int(j, "window_right", prob->window_right);
    xattn_json_bool(j, "alibi", (d->flags & XATTN_ATTN_ALIBI) != 0);
    xattn_json_bool(j, "sinks", (d->flags & XATTN_ATTN_SINKS) != 0);
    xattn_json_bool(j, "lse", (d->flags & XATTN_ATTN_LSE) != 0);
    xattn_json_double(j, "scale", prob->scale);
    xattn_json_double(j, "softcap", d->softcap);
    xattn_json_object_end(j);

    xattn_json_object_begin(j, "plan");
    xattn_json_string(j, "style", style_name(p->style));
    xattn_json_int(j, "block_q", p->block_q);
    xattn_json_int(j, "block_k", p->block_k);
    xattn_json_int(j, "gqa_pack", p->gqa_pack);
    xattn_json_int(j, "dqk_pad", p->dqk_pad);
    xattn_json_int(j, "dv_pad", p->dv_pad);
    xattn_json_int(j, "threads", p->threads);
    xattn_json_int(j, "stages", p->stages);
    xattn_json_int(j, "kv_splits", p->kv_splits);
    xattn_json_int(j, "kv_split_len", p->kv_split_len);
    xattn_json_int(j, "q_tiles", p->q_tiles);
    xattn_json_int(j, "head_groups", p->head_groups);
    xattn_json_int(j, "num_work", p->num_work);
    xattn_json_uint(j, "local_mem_bytes", p->local_mem_bytes);
    xattn_json_bool(j, "q_in_registers", p->q_in_registers != 0);
    xattn_json_uint(j, "scratch_offset", p->scratch_offset);
    xattn_json_uint(j, "partial_offset", p->partial_offset);
    xattn_json_uint(j, "partial_bytes", p->partial_bytes);
    xattn_json_uint(j, "workspace_bytes", p->workspace_bytes);
    xattn_json_object_end(j);
}

static void json_tiles(xattn_json *j, const char *key, const xattn_moe_gemm_tiles *t)
{
    xattn_json_object_begin(j, key);
    xattn_json_int(j, "block_m", t->block_m);
    xattn_json_int(j, "block_n", t->block_n);
    xattn_json_int(j, "block_k", t->block_k);
    xattn_json_int(j, "threads", t->threads);
    xattn_json_int(j, "stages", t->stages);
    xattn_json_object_end(j);
}

static void json_moe(xattn_json *j, const xattn_moe_problem *prob, const xattn_moe_plan_params *p)
{
    const xattn_moe_desc *d = &prob->desc;
    xattn_json_object_begin(j, "problem");
    xattn_json_int(j, "max_tokens", d->max_tokens);
    xattn_json_int(j, "hidden", d->hidden);
    xattn_json_int(j, "inter", d->inter);
    xattn_json_int(j, "num_experts", d->num_experts);
    xattn_json_int(j, "top_k", d->top_k);
    xattn_json_string(j, "dtype", xattn_dtype_name(d->dtype));
    xattn_json_string(j, "weight_dtype", xattn_dtype_name(d->weight_dtype));
    xattn_json_string(j, "logits_dtype", xattn_dtype_name(d->logits_dtype));
    xattn_json_string(j, "route", (unsigned)d->route < XATTN_OPTS_COUNT(route_names) - 1
                                      ? route_names[d->route] : "?");
    xattn_json_string(j, "activation",
                      (unsigned)d->activation < XATTN_OPTS_COUNT(activation_names) - 1
                          ? activation_names[d->activation] : "?");
    if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        xattn_json_double(j, "swiglu_alpha", prob->alpha);
        xattn_json_double(j, "swiglu_limit", prob->limit);
    }
    xattn_json_bool(j, "renormalize", (d->flags & XATTN_MOE_RENORMALIZE) != 0);
    xattn_json_bool(j, "bias", (d->flags & XATTN_MOE_BIAS) != 0);
    xattn_json_bool(j, "weights_on_input", (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0);
    xattn_json_bool(j, "w1_interleaved", (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0);
    xattn_json_bool(j, "b1", (d->flags & XATTN_MOE_EXPERT_B1) != 0);
    xattn_json_bool(j, "b2", (d->flags & XATTN_MOE_EXPERT_B2) != 0);
    if (d->flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2))
        xattn_json_string(j, "bias_dtype", xattn_dtype_name(d->bias_dtype));
    xattn_json_int(j, "n_group", d->n_group);
    xattn_json_int(j, "topk_group", d->topk_group);
    xattn_json_double(j, "routed_scaling_factor", prob->scale);
    xattn_json_int(j, "align", d->align);
    xattn_json_object_end(j);

    xattn_json_object_begin(j, "plan");
    xattn_json_string(j, "style", style_name(p->style));
    xattn_json_int(j, "align", p->align);
    xattn_json_int(j, "max_rows", p->max_rows);
    xattn_json_int(j, "threads", p->threads);
    json_tiles(j, "up", &p->up);
    json_tiles(j, "down", &p->down);
    xattn_json_uint(j, "local_mem_bytes", p->local_mem_bytes);
    xattn_json_uint(j, "scratch_per_thread", p->scratch_per_thread);
    xattn_json_uint(j, "scratch_offset", p->scratch_offset);
    xattn_json_uint(j, "scratch_bytes", p->scratch_bytes);
    xattn_json_uint(j, "h_offset", p->h_offset);
    xattn_json_uint(j, "ids_offset", p->ids_offset);
    xattn_json_uint(j, "weights_offset", p->weights_offset);
    xattn_json_uint(j, "offsets_offset", p->offsets_offset);
    xattn_json_uint(j, "row_token_offset", p->row_token_offset);
    xattn_json_uint(j, "token_row_offset", p->token_row_offset);
    xattn_json_uint(j, "x_perm_offset", p->x_perm_offset);
    xattn_json_uint(j, "y_offset", p->y_offset);
    xattn_json_uint(j, "workspace_bytes", p->workspace_bytes);
    xattn_json_object_end(j);
}

static void print_json(const plan_target *t, const plan_result *r)
{
    xattn_json j;
    xattn_json_init(&j, stdout);
    xattn_json_object_begin(&j, NULL);
    xattn_json_string(&j, "xattn_version", xattn_version());
    xattn_json_string(&j, "kind", r->moe ? "moe" : "attention");
    xattn_json_string(&j, "preset", t->preset);
    xattn_json_string(&j, "backend", t->ctx ? xattn_context_backend_name(t->ctx) : NULL);
    xattn_json_string(&j, "device", t->caps.name);
    xattn_tool_json_caps(&j, &t->caps);
    if (r->moe)
        json_moe(&j, &r->moe_prob, &r->moe_params);
    else
        json_attn(&j, &r->prob, &r->params);
    xattn_json_string(&j, "text", r->text);
    xattn_json_object_end(&j);
    xattn_json_finish(&j);
}

/* ---- entry point ---------------------------------------------------------- */

int xattn_cmd_plan(int argc, char **argv)
{
    plan_opts o;
    int r = parse_args(argc, argv, &o);
    if (r < 0) return 0;
    if (!r) return 2;

    plan_target t;
    memset(&t, 0, sizeof t);
    t.preset = o.preset;
    if (o.preset && !strcmp(o.preset, "host")) {
        xattn_host_cpu_caps(o.threads, &t.caps);
    } else if (o.preset && !xattn_preset_caps(o.preset, &t.caps)) {
        fprintf(stderr, "xattn plan: --preset '%s': expected one of ", o.preset);
        for (const char *const *n = xattn_preset_names(); *n; n++)
            fprintf(stderr, "%s%s", *n, n[1] ? ", " : "\n");
        return 2;
    } else if (!o.preset) {
        xattn_status st = xattn_context_create(&t.ctx);
        if (st != XATTN_OK) return fail("context", st);
        st = xattn_context_caps(t.ctx, &t.caps);
        if (st != XATTN_OK) {
            xattn_context_destroy(&t.ctx);
            return fail("caps", st);
        }
    }

    plan_result *res = calloc(1, sizeof *res);
    int rc = 1;
    if (!res) {
        fprintf(stderr, "xattn plan: out of memory\n");
    } else {
        res->moe = o.moe;
        rc = o.moe ? plan_moe(&o, &t, res) : plan_attention(&o, &t, res);
        if (!rc && o.json)
            print_json(&t, res);
        else if (!rc)
            fputs(res->text, stdout);
    }
    free(res);
    xattn_context_destroy(&t.ctx);
    return rc;
}
