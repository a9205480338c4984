/* xattn plan: print the plan for an attention problem or (--moe) a MoE
 * layer, for the current context's device or (--preset) for a device preset
 * with no device at all. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
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
                                          "topk-sigmoid"};

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
            "\n"
            "device:\n"
            "  --preset NAME     plan for a device preset, no device needed; NAME is one of\n"
            "                    ");
    for (const char *const *n = xattn_preset_names(); *n; n++)
        fprintf(f, "%s%s", *n, n[1] ? ", " : "\n");
    fprintf(f,
            "                    (without --preset: the device XATTN_BACKEND/XATTN_DEVICE pick)\n"
            "  --threads N       worker threads for --preset host (default: all cores)\n"
            "  --dtype T         f32, f16 or bf16 (default: bf16 on GPU-style devices,\n"
            "                    f32 on CPU-style ones)\n"
            "\n"
            "attention problem (defaults: B=1, Sq=4096, Sk=Sq, Hq=32, Hkv=Hq, D=128):\n"
            "  --batch N         sequences B\n"
            "  --sq N            query tokens per sequence (max, with --ragged)\n"
            "  --sk N            key tokens per sequence (max, with --ragged or --page-size)\n"
            "  --hq N            query heads\n"
            "  --hkv N           KV heads (Hq %% Hkv == 0)\n"
            "  --d N             head dim of Q, K and V\n"
            "  --dqk N, --dv N   separate head dims (default --d), e.g. 192/128, 576/512\n"
            "  --causal          causal mask (window right = 0)\n"
            "  --window L,R      sliding window, -1 = unbounded\n"
            "  --page-size P     paged KV cache with P tokens per page\n"
            "  --ragged          ragged (varlen) Q and K/V\n"
            "  --softcap C       soft cap of the scores\n"
            "  --scale S         score scale (default 1/sqrt(Dqk))\n"
            "  --alibi           ALiBi slopes\n"
            "  --sinks           attention sinks\n"
            "  --lse             write the log-sum-exp\n"
            "\n"
            "MoE layer, with --moe (defaults: --model mixtral, --tokens 512):\n"
            "  --model NAME      shape and routing of a model's layer; NAME is one of\n"
            "                    ");
    for (size_t i = 0; i < sizeof moe_models / sizeof moe_models[0]; i++)
        fprintf(f, "%s%s", moe_models[i].name,
                i + 1 < sizeof moe_models / sizeof moe_models[0] ? ", " : "\n");
    fprintf(f,
            "                    (the options below override it)\n"
            "  --tokens N        most tokens per call (max_tokens)\n"
            "  --hidden N        hidden size H\n"
            "  --inter N         expert FFN size I\n"
            "  --experts N       experts E\n"
            "  --top-k N         experts per token\n"
            "  --route MODE      softmax-topk, topk-softmax, sigmoid-grouped or topk-sigmoid\n"
            "  --groups N        sigmoid-grouped: expert groups (n_group)\n"
            "  --topk-group N    sigmoid-grouped: groups kept per token\n"
            "  --bias            sigmoid-grouped: a selection bias per expert\n"
            "  --renormalize     route weights renormalised to sum 1\n"
            "  --routed-scale S  route weights times S\n"
            "  --activation A    swiglu, geglu or swiglu-clamped (default: the model's)\n"
            "  --swiglu-alpha A, --swiglu-limit L\n"
            "                    swiglu-clamped's alpha and limit (default 1.702 and 7)\n"
            "  --w1-interleaved  W1 rows alternate gate and up\n"
            "  --b1, --b2        expert biases after the gate/up and the down GEMM\n"
            "  --bias-dtype T    b1 and b2 (default: the model's, else f32)\n"
            "  --weights-on-input\n"
            "                    dispatch scales rows by their route weight, combine sums\n"
            "                    them unweighted\n"
            "  --weight-dtype T  W1 and W2 (default --dtype)\n"
            "  --logits-dtype T  gate logits (default --dtype)\n"
            "  --align N         segment alignment 1..%d (default: the planner's choice)\n",
            XATTN_MOE_MAX_ALIGN);
}

/* Strict integer in [lo, hi]. */
static int parse_int(const char *opt, const char *s, long lo, long hi, int32_t *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "xattn plan: %s '%s': expected an integer in [%ld, %ld]\n", opt,
                s ? s : "", lo, hi);
        return 0;
    }
    *out = (int32_t)v;
    return 1;
}

static int parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = s ? strtof(s, &end) : 0;
    if (!s || !*s || *end || errno) {
        fprintf(stderr, "xattn plan: %s '%s': expected a number\n", opt, s ? s : "");
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_window(const char *s, int32_t *l, int32_t *r)
{
    const char *comma = s ? strchr(s, ',') : NULL;
    if (!comma) {
        fprintf(stderr, "xattn plan: --window '%s': expected L,R (-1 = unbounded)\n",
                s ? s : "");
        return 0;
    }
    char left[32];
    size_t n = (size_t)(comma - s);
    if (n >= sizeof left) n = sizeof left - 1;
    memcpy(left, s, n);
    left[n] = '\0';
    return parse_int("--window", left, -1, INT32_MAX, l) &&
           parse_int("--window", comma + 1, -1, INT32_MAX, r);
}

/* --dtype, --weight-dtype, --logits-dtype: f32, f16 or bf16. */
static int parse_dtype(const char *opt, const char *s, int *out)
{
    if (s && !strcmp(s, "f32")) *out = XATTN_F32;
    else if (s && !strcmp(s, "f16")) *out = XATTN_F16;
    else if (s && !strcmp(s, "bf16")) *out = XATTN_BF16;
    else {
        fprintf(stderr, "xattn plan: %s '%s': expected f32, f16 or bf16\n", opt, s ? s : "");
        return 0;
    }
    return 1;
}

/* Index of s in names[0..n), or -1 with the choices printed. */
static int parse_choice(const char *opt, const char *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s && !strcmp(s, names[i])) return (int)i;
    fprintf(stderr, "xattn plan: %s '%s': expected one of ", opt, s ? s : "");
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%s%s", names[i], i + 1 < n ? ", " : "\n");
    return -1;
}

/* The MoE options; −1 (0 for flags) where the model's value stands. */
typedef struct moe_opts {
    const moe_model *model;
    int32_t tokens, hidden, inter, experts, top_k, n_group, topk_group, align;
    int route, activation, weight_dtype, logits_dtype, bias_dtype;
    uint32_t flags;         /* added to the model's */
    int routed_scale_set;   /* 0: the model's routed_scaling_factor */
    float routed_scale;
    float swiglu_alpha, swiglu_limit; /* 0: the default */
} moe_opts;

typedef struct plan_opts {
    const char *preset;
    int32_t threads;
    int32_t batch, sq, sk, hq, hkv, dqk, dv;
    int dtype;              /* -1: by device style */
    int causal, window, ragged, alibi, sinks, lse;
    int32_t wl, wr, page_size;
    float softcap, scale;
    int moe;                /* --moe: plan a MoE layer */
    moe_opts m;
    /* The last option seen that only one kind of plan takes, so the other
     * kind can reject it rather than ignore it. */
    const char *attn_only, *moe_only;
} plan_opts;

static int takes_value(const char *opt)
{
    static const char *const with_value[] = {
        "--preset", "--threads", "--batch", "--sq", "--sk", "--hq", "--hkv", "--d",
        "--dqk", "--dv", "--page-size", "--softcap", "--scale", "--window", "--dtype",
        "--model", "--tokens", "--hidden", "--inter", "--experts", "--top-k", "--route",
        "--groups", "--topk-group", "--routed-scale", "--activation", "--weight-dtype",
        "--logits-dtype", "--align", "--bias-dtype", "--swiglu-alpha", "--swiglu-limit",
    };
    for (size_t i = 0; i < sizeof with_value / sizeof with_value[0]; i++)
        if (!strcmp(opt, with_value[i])) return 1;
    return 0;
}

/* A MoE option a (value v). 1: parsed; 0: error (printed); -1: not a MoE
 * option. *takes: whether it consumed v. */
static int parse_moe_arg(const char *a, const char *v, moe_opts *m, int *takes)
{
    static const struct {
        const char *flag;
        size_t offset;
    } int_opts[] = {
        {"--tokens", offsetof(moe_opts, tokens)},
        {"--hidden", offsetof(moe_opts, hidden)},
        {"--inter", offsetof(moe_opts, inter)},
        {"--experts", offsetof(moe_opts, experts)},
        {"--top-k", offsetof(moe_opts, top_k)},
        {"--groups", offsetof(moe_opts, n_group)},
        {"--topk-group", offsetof(moe_opts, topk_group)},
        {"--align", offsetof(moe_opts, align)},
    };
    /* In xattn_moe_activation order. */
    static const char *const activations[] = {"swiglu", "geglu", "swiglu-clamped"};
    *takes = 1;
    for (size_t i = 0; i < sizeof int_opts / sizeof int_opts[0]; i++)
        if (!strcmp(a, int_opts[i].flag))
            return parse_int(a, v, 1, INT32_MAX, (int32_t *)((char *)m + int_opts[i].offset));
    if (!strcmp(a, "--model")) {
        for (size_t i = 0; i < sizeof moe_models / sizeof moe_models[0]; i++)
            if (v && !strcmp(v, moe_models[i].name)) {
                m->model = &moe_models[i];
                return 1;
            }
        fprintf(stderr, "xattn plan: --model '%s': expected one of ", v ? v : "");
        for (size_t i = 0; i < sizeof moe_models / sizeof moe_models[0]; i++)
            fprintf(stderr, "%s%s", moe_models[i].name,
                    i + 1 < sizeof moe_models / sizeof moe_models[0] ? ", " : "\n");
        return 0;
    }
    if (!strcmp(a, "--route"))
        return (m->route = parse_choice(a, v, route_names,
                                        sizeof route_names / sizeof route_names[0])) >= 0;
    if (!strcmp(a, "--activation"))
        return (m->activation = parse_choice(a, v, activations,
                                             sizeof activations / sizeof activations[0])) >= 0;
    if (!strcmp(a, "--weight-dtype")) return parse_dtype(a, v, &m->weight_dtype);
    if (!strcmp(a, "--logits-dtype")) return parse_dtype(a, v, &m->logits_dtype);
    if (!strcmp(a, "--bias-dtype")) return parse_dtype(a, v, &m->bias_dtype);
    if (!strcmp(a, "--swiglu-alpha")) return parse_float(a, v, &m->swiglu_alpha);
    if (!strcmp(a, "--swiglu-limit")) return parse_float(a, v, &m->swiglu_limit);
    if (!strcmp(a, "--routed-scale")) {
        m->routed_scale_set = 1;
        return parse_float(a, v, &m->routed_scale);
    }
    *takes = 0;
    if (!strcmp(a, "--bias")) m->flags |= XATTN_MOE_BIAS;
    else if (!strcmp(a, "--renormalize")) m->flags |= XATTN_MOE_RENORMALIZE;
    else if (!strcmp(a, "--weights-on-input")) m->flags |= XATTN_MOE_WEIGHTS_ON_INPUT;
    else if (!strcmp(a, "--w1-interleaved")) m->flags |= XATTN_MOE_W1_INTERLEAVED;
    else if (!strcmp(a, "--b1")) m->flags |= XATTN_MOE_EXPERT_B1;
    else if (!strcmp(a, "--b2")) m->flags |= XATTN_MOE_EXPERT_B2;
    else return -1;
    return 1;
}

/* 1: parsed; 0: error (printed); -1: --help. */
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
    o->dqk = o->dv = -1;
    o->dtype = -1;
    int32_t d = 128;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return -1;
        if (!v && takes_value(a)) {
            fprintf(stderr, "xattn plan: %s needs a value\n", a);
            return 0;
        }
        if (!strcmp(a, "--moe")) {
            o->moe = 1;
            continue;
        }
        int moe_arg = parse_moe_arg(a, v, m, &takes);
        if (!moe_arg) return 0;
        if (moe_arg > 0) {
            o->moe_only = a;
            i += takes;
            continue;
        }
        takes = 1;
        /* --preset, --threads and --dtype serve both kinds of plan. */
        if (strcmp(a, "--preset") && strcmp(a, "--threads") && strcmp(a, "--dtype"))
            o->attn_only = a;
        if (!strcmp(a, "--preset")) o->preset = v, ok = v != NULL;
        else if (!strcmp(a, "--threads")) ok = parse_int(a, v, 0, 1 << 20, &o->threads);
        else if (!strcmp(a, "--batch")) ok = parse_int(a, v, 1, INT32_MAX, &o->batch);
        else if (!strcmp(a, "--sq")) ok = parse_int(a, v, 0, INT32_MAX, &o->sq);
        else if (!strcmp(a, "--sk")) ok = parse_int(a, v, 0, INT32_MAX, &o->sk);
        else if (!strcmp(a, "--hq")) ok = parse_int(a, v, 1, INT32_MAX, &o->hq);
        else if (!strcmp(a, "--hkv")) ok = parse_int(a, v, 1, INT32_MAX, &o->hkv);
        else if (!strcmp(a, "--d")) ok = parse_int(a, v, 1, INT32_MAX, &d);
        else if (!strcmp(a, "--dqk")) ok = parse_int(a, v, 1, INT32_MAX, &o->dqk);
        else if (!strcmp(a, "--dv")) ok = parse_int(a, v, 1, INT32_MAX, &o->dv);
        else if (!strcmp(a, "--page-size")) ok = parse_int(a, v, 1, INT32_MAX, &o->page_size);
        else if (!strcmp(a, "--softcap")) ok = parse_float(a, v, &o->softcap);
        else if (!strcmp(a, "--scale")) ok = parse_float(a, v, &o->scale);
        else if (!strcmp(a, "--window")) ok = parse_window(v, &o->wl, &o->wr), o->window = 1;
        else if (!strcmp(a, "--dtype")) ok = parse_dtype(a, v, &o->dtype);
        else {
            takes = 0;
            if (!strcmp(a, "--causal")) o->causal = 1;
            else if (!strcmp(a, "--ragged")) o->ragged = 1;
            else if (!strcmp(a, "--alibi")) o->alibi = 1;
            else if (!strcmp(a, "--sinks")) o->sinks = 1;
            else if (!strcmp(a, "--lse")) o->lse = 1;
            else {
                fprintf(stderr, "xattn plan: unknown option '%s' (see xattn plan --help)\n", a);
                return 0;
            }
        }
        if (!ok) return 0;
        i += takes;
    }
    if (o->sk < 0) o->sk = o->sq;
    if (o->hkv < 0) o->hkv = o->hq;
    if (o->dqk < 0) o->dqk = d;
    if (o->dv < 0) o->dv = d;
    if (o->threads && (!o->preset || strcmp(o->preset, "host"))) {
        fprintf(stderr, "xattn plan: --threads applies to --preset host only\n");
        return 0;
    }
    if (o->moe && o->attn_only) {
        fprintf(stderr, "xattn plan: %s applies to attention plans, not to --moe\n",
                o->attn_only);
        return 0;
    }
    if (!o->moe && o->moe_only) {
        fprintf(stderr, "xattn plan: %s applies to MoE plans: add --moe\n", o->moe_only);
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
static xattn_moe_desc make_moe_desc(const moe_opts *m, xattn_dtype dtype)
{
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
    d.routed_scaling_factor = m->routed_scale_set ? m->routed_scale : mm->routed_scale;
    d.align = m->align > 0 ? m->align : 0;
    return d;
}

static int fail(const char *what, xattn_status st)
{
    fprintf(stderr, "xattn plan: %s: %s: %s\n", what, xattn_status_string(st), xattn_last_error());
    return 1;
}

/* The MoE plan of a preset, through the planner directly. */
static int plan_moe_preset(const plan_opts *o, const xattn_device_caps *caps)
{
    xattn_moe_desc desc = make_moe_desc(&o->m, pick_dtype(o, caps->style));
    xattn_moe_problem prob;
    xattn_moe_plan_params params;
    xattn_status st = xattn_moe_problem_init(&desc, &prob);
    if (st != XATTN_OK) return fail("problem", st);
    st = xattn_plan_moe(caps, &prob, &params);
    if (st != XATTN_OK) return fail("plan", st);

    char text[PLAN_TEXT_BYTES];
    xattn_moe_params_format(&prob, &params, text, sizeof text);
    printf("preset       %s: %s\n%s", o->preset, caps->name, text);
    return 0;
}

static int plan_preset(const plan_opts *o)
{
    xattn_device_caps caps;
    if (!strcmp(o->preset, "host")) {
        xattn_host_cpu_caps(o->threads, &caps);
    } else if (!xattn_preset_caps(o->preset, &caps)) {
        fprintf(stderr, "xattn plan: unknown preset '%s'; presets: ", o->preset);
        for (const char *const *n = xattn_preset_names(); *n; n++)
            fprintf(stderr, "%s%s", *n, n[1] ? ", " : "\n");
        return 2;
    }
    if (o->moe) return plan_moe_preset(o, &caps);
    xattn_attn_desc desc = make_desc(o, pick_dtype(o, caps.style));
    xattn_attn_problem prob;
    xattn_attn_plan_params params;
    xattn_status st = xattn_attn_problem_init(&desc, &prob);
    if (st != XATTN_OK) return fail("problem", st);
    st = xattn_plan_attention(&caps, &prob, &params);
    if (st != XATTN_OK) return fail("plan", st);

    char text[PLAN_TEXT_BYTES];
    xattn_plan_params_format(&prob, &params, text, sizeof text);
    printf("preset       %s: %s\n%s", o->preset, caps.name, text);
    return 0;
}

/* The MoE plan the context's device gets, with its description. */
static int plan_moe_context(const plan_opts *o, xattn_context *ctx, const xattn_device_caps *caps)
{
    xattn_moe_desc desc = make_moe_desc(&o->m, pick_dtype(o, caps->style));
    xattn_moe_plan *plan = NULL;
    xattn_status st = xattn_moe_plan_create(ctx, &desc, &plan);
    if (st != XATTN_OK) return fail("plan", st);
    size_t needed = 0;
    char text[PLAN_TEXT_BYTES];
    st = xattn_moe_plan_describe(plan, text, sizeof text, &needed);
    if (st == XATTN_OK) fputs(text, stdout);
    if (st == XATTN_OK && needed >= sizeof text) fputs("\n(truncated)\n", stdout);
    int rc = st == XATTN_OK ? 0 : fail("describe", st);
    xattn_moe_plan_destroy(&plan);
    return rc;
}

static int plan_context(const plan_opts *o)
{
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create(&ctx);
    if (st != XATTN_OK) return fail("context", st);

    xattn_device_caps caps;
    st = xattn_context_caps(ctx, &caps);
    if (st != XATTN_OK) {
        xattn_context_destroy(&ctx);
        return fail("caps", st);
    }
    if (o->moe) {
        int rc = plan_moe_context(o, ctx, &caps);
        xattn_context_destroy(&ctx);
        return rc;
    }
    xattn_attn_desc desc = make_desc(o, pick_dtype(o, caps.style));
    xattn_plan *plan = NULL;
    st = xattn_plan_create(ctx, &desc, &plan);
    if (st != XATTN_OK) {
        int rc = fail("plan", st);
        xattn_context_destroy(&ctx);
        return rc;
    }
    size_t needed = 0;
    char text[PLAN_TEXT_BYTES];
    st = xattn_plan_describe(plan, text, sizeof text, &needed);
    if (st == XATTN_OK) fputs(text, stdout);
    if (st == XATTN_OK && needed >= sizeof text) fputs("\n(truncated)\n", stdout);
    int rc = st == XATTN_OK ? 0 : fail("describe", st);
    xattn_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
    return rc;
}

int xattn_cmd_plan(int argc, char **argv)
{
    plan_opts o;
    int r = parse_args(argc, argv, &o);
    if (r < 0) {
        plan_usage(stdout);
        return 0;
    }
    if (!r) return 2;
    return o.preset ? plan_preset(&o) : plan_context(&o);
}
