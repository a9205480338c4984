/* MoE front end: validates every input once, plans, and hands normalised
 * operands to the backend (one launch per primitive). xattn_moe_forward
 * chains the four primitives through the plan's workspace. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "context.h"
#include "error.h"
#include "tensor_check.h"
#include "text.h"

#define INVALID(...) xattn_error(XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__)

static int is_float_dtype(xattn_dtype t)
{
    return t == XATTN_F32 || t == XATTN_F16 || t == XATTN_BF16;
}

static const uint32_t known_flags = XATTN_MOE_RENORMALIZE | XATTN_MOE_BIAS |
                                   XATTN_MOE_WEIGHTS_ON_INPUT | XATTN_MOE_W1_INTERLEAVED |
                                   XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2;
static const uint32_t expert_bias_flags = XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2;

static xattn_status check_dtype(xattn_dtype t, const char *name)
{
    if (!is_float_dtype(t)) return INVALID("desc.%s: %d is not f32, f16 or bf16", name, (int)t);
    return XATTN_OK;
}

/* swiglu_alpha and swiglu_limit: 0 or finite and positive under
 * SWIGLU_CLAMPED, 0 under any other activation (which would ignore them). */
static xattn_status check_activation_params(const xattn_moe_desc *d)
{
    const struct {
        float v;
        const char *name;
    } params[] = {{d->swiglu_alpha, "swiglu_alpha"}, {d->swiglu_limit, "swiglu_limit"}};
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(params); i++) {
        const float v = params[i].v;
        if (d->activation != XATTN_MOE_SWIGLU_CLAMPED) {
            if (v != 0.0f)
                return INVALID("desc.%s: %g given, but activation is not "
                               "XATTN_MOE_SWIGLU_CLAMPED", params[i].name, (double)v);
        } else if (!isfinite(v) || v < 0.0f) {
            return INVALID("desc.%s: %g, must be finite and > 0 (0: the GPT-OSS value)",
                           params[i].name, (double)v);
        }
    }
    return XATTN_OK;
}

xattn_status xattn_moe_problem_init(const xattn_moe_desc *d, xattn_moe_problem *out)
{
    if (!d) return INVALID("desc: must not be NULL");
    if (!out) return INVALID("out: must not be NULL");
    if (d->max_tokens < 1) return INVALID("desc.max_tokens: %d, must be >= 1", (int)d->max_tokens);
    if (d->hidden < 1) return INVALID("desc.hidden: %d, must be >= 1", (int)d->hidden);
    if (d->num_experts < 1)
        return INVALID("desc.num_experts: %d, must be >= 1", (int)d->num_experts);
    if (d->top_k < 1) return INVALID("desc.top_k: %d, must be >= 1", (int)d->top_k);
    if (d->top_k > d->num_experts)
        return INVALID("desc.top_k: %d is larger than num_experts %d", (int)d->top_k,
                       (int)d->num_experts);
    if (d->inter < 1) return INVALID("desc.inter: %d, must be >= 1", (int)d->inter);
    XATTN_TRY(check_dtype(d->dtype, "dtype"));
    XATTN_TRY(check_dtype(d->weight_dtype, "weight_dtype"));
    XATTN_TRY(check_dtype(d->logits_dtype, "logits_dtype"));
    if (d->activation != XATTN_MOE_SWIGLU && d->activation != XATTN_MOE_GEGLU &&
        d->activation != XATTN_MOE_SWIGLU_CLAMPED)
        return INVALID("desc.activation: %d is not an xattn_moe_activation", (int)d->activation);
    XATTN_TRY(check_activation_params(d));
    if (d->flags & ~known_flags)
        return INVALID("desc.flags: unknown bits 0x%x", (unsigned)(d->flags & ~known_flags));
    if (d->flags & expert_bias_flags) {
        if (!is_float_dtype(d->bias_dtype))
            return INVALID("desc.bias_dtype: %d is not f32, f16 or bf16", (int)d->bias_dtype);
    } else if (d->bias_dtype != XATTN_F32) {
        return INVALID("desc.bias_dtype: %d given, but desc.flags has neither "
                       "XATTN_MOE_EXPERT_B1 nor XATTN_MOE_EXPERT_B2", (int)d->bias_dtype);
    }
    if (d->align < 0 || d->align > XATTN_MOE_MAX_ALIGN)
        return INVALID("desc.align: %d, must be 0 (planner's choice) or 1..%d", (int)d->align,
                       XATTN_MOE_MAX_ALIGN);
    if (!isfinite(d->routed_scaling_factor) || d->routed_scaling_factor < 0)
        return INVALID("desc.routed_scaling_factor: %g, must be finite and >= 0 (0 means 1)",
                       (double)d->routed_scaling_factor);

    switch (d->route) {
    case XATTN_MOE_ROUTE_SIGMOID_GROUPED: {
        if (d->n_group < 1) return INVALID("desc.n_group: %d, must be >= 1", (int)d->n_group);
        if (d->num_experts % d->n_group)
            return INVALID("desc.n_group: num_experts %d is not divisible by n_group %d",
                           (int)d->num_experts, (int)d->n_group);
        if (d->topk_group < 1 || d->topk_group > d->n_group)
            return INVALID("desc.topk_group: %d, must be in [1, n_group %d]",
                           (int)d->topk_group, (int)d->n_group);
        int32_t kept = d->topk_group * (d->num_experts / d->n_group);
        if (d->top_k > kept)
            return INVALID("desc.top_k: %d is larger than the %d experts the topk_group %d "
                           "kept groups hold", (int)d->top_k, (int)kept, (int)d->topk_group);
        break;
    }
    case XATTN_MOE_ROUTE_SOFTMAX_TOPK:
    case XATTN_MOE_ROUTE_TOPK_SOFTMAX:
    case XATTN_MOE_ROUTE_TOPK_SIGMOID:
        if (d->n_group || d->topk_group)
            return INVALID("desc.n_group/topk_group: set, but route is not "
                           "XATTN_MOE_ROUTE_SIGMOID_GROUPED");
        if (d->flags & XATTN_MOE_BIAS)
            return INVALID("desc.flags: XATTN_MOE_BIAS needs route "
                           "XATTN_MOE_ROUTE_SIGMOID_GROUPED");
        break;
    default:
        return INVALID("desc.route: %d is not an xattn_moe_route_mode", (int)d->route);
    }

    memset(out, 0, sizeof *out);
    out->desc = *d;
    out->scale = d->routed_scaling_factor != 0.0f ? d->routed_scaling_factor : 1.0f;
    if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        out->alpha = d->swiglu_alpha != 0.0f ? d->swiglu_alpha : XATTN_MOE_SWIGLU_ALPHA;
        out->limit = d->swiglu_limit != 0.0f ? d->swiglu_limit : XATTN_MOE_SWIGLU_LIMIT;
    }
    return XATTN_OK;
}

static xattn_status check_device_dtype(const xattn_context *ctx, xattn_dtype t, const char *name)
{
    if ((t == XATTN_F16 && !ctx->caps.has_f16) || (t == XATTN_BF16 && !ctx->caps.has_bf16))
        return xattn_error(XATTN_ERR_UNSUPPORTED, "desc.%s: %s is not supported by %s on %s",
                           name, xattn_dtype_name(t), ctx->vt->name, ctx->caps.name);
    return XATTN_OK;
}

xattn_status xattn_moe_plan_create(xattn_context *ctx, const xattn_moe_desc *desc,
                                   xattn_moe_plan **out)
{
    xattn_error_clear();
    if (!ctx) return INVALID("ctx: must not be NULL");
    if (!out) return INVALID("out: must not be NULL");
    xattn_moe_problem prob;
    XATTN_TRY(xattn_moe_problem_init(desc, &prob));
    XATTN_TRY(check_device_dtype(ctx, prob.desc.dtype, "dtype"));
    XATTN_TRY(check_device_dtype(ctx, prob.desc.weight_dtype, "weight_dtype"));
    XATTN_TRY(check_device_dtype(ctx, prob.desc.logits_dtype, "logits_dtype"));
    if (prob.desc.flags & expert_bias_flags)
        XATTN_TRY(check_device_dtype(ctx, prob.desc.bias_dtype, "bias_dtype"));
    if (!ctx->vt->moe_prepare || !ctx->vt->moe_run)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "moe: the %s backend has no MoE kernels",
                           ctx->vt->name);

    xattn_moe_plan *plan = calloc(1, sizeof *plan);
    if (!plan) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "plan: out of memory");
    plan->ctx = ctx;
    plan->prob = prob;
    xattn_status st = xattn_plan_moe(&ctx->caps, &prob, &plan->params);
    if (st == XATTN_OK) st = ctx->vt->moe_prepare(ctx->dev, plan, &plan->state);
    if (st != XATTN_OK) {
        free(plan);
        return st;
    }
    xattn_log(XATTN_LOG_DEBUG, "moe plan: align %d rows %lld ws %zu", (int)plan->params.align,
              (long long)plan->params.max_rows, plan->params.workspace_bytes);
    xattn_context_retain(ctx);
    *out = plan;
    return XATTN_OK;
}

size_t xattn_moe_workspace_size(const xattn_moe_plan *plan)
{
    return plan ? plan->params.workspace_bytes : 0;
}

int32_t xattn_moe_alignment(const xattn_moe_plan *plan) { return plan ? plan->params.align : 0; }

int64_t xattn_moe_rows(const xattn_moe_plan *plan, int64_t num_tokens)
{
    if (!plan || num_tokens < 0 || num_tokens > plan->prob.desc.max_tokens) return -1;
    return xattn_moe_rows_for(&plan->prob, plan->params.align, num_tokens);
}

static int format_plan(const void *plan, char *buf, size_t size)
{
    const xattn_moe_plan *p = plan;
    return xattn_moe_params_format(&p->prob, &p->params, buf, size);
}

xattn_status xattn_moe_plan_describe(const xattn_moe_plan *plan, char *buf, size_t size,
                                     size_t *needed)
{
    xattn_error_clear();
    if (!plan) return INVALID("plan: must not be NULL");
    return xattn_text_describe(plan->ctx, format_plan, plan, buf, size, needed);
}

void xattn_moe_plan_destroy(xattn_moe_plan **plan)
{
    if (!plan || !*plan) return;
    xattn_moe_plan *p = *plan;
    *plan = NULL;
    p->ctx->vt->moe_release(p->ctx->dev, p->state);
    xattn_context_release(p->ctx);
    free(p);
}

/* ---- argument checks ------------------------------------------------------ */

/* The operands of xattn_moe_args, in one table so each call can say which it
 * reads and writes and reject the rest. */
enum {
    ARG_LOGITS, ARG_BIAS, ARG_TOPK_IDS, ARG_TOPK_WEIGHTS, ARG_X, ARG_EXPERT_OFFSETS,
    ARG_X_PERM, ARG_ROW_TOKEN, ARG_TOKEN_ROW, ARG_W1, ARG_W2, ARG_Y, ARG_OUT, ARG_B1, ARG_B2,
    ARG_COUNT
};

static const char *const arg_names[ARG_COUNT] = {
    "logits", "bias", "topk_ids", "topk_weights", "x", "expert_offsets",
    "x_perm", "row_token", "token_row", "w1", "w2", "y", "out", "b1", "b2",
};

static const xattn_tensor *arg_tensor(const xattn_moe_args *a, int i)
{
    const xattn_tensor *t[ARG_COUNT] = {
        &a->logits, &a->bias, &a->topk_ids, &a->topk_weights, &a->x, &a->expert_offsets,
        &a->x_perm, &a->row_token, &a->token_row, &a->w1, &a->w2, &a->y, &a->out,
        &a->b1, &a->b2,
    };
    return t[i];
}

#define BIT(i) (1u << (i))

/* What one call reads (ins) and writes (outs), validated. */
typedef struct moe_call {
    const char *name;
    uint32_t ins, outs;
    xattn_span spans[ARG_COUNT];
    xattn_span workspace;
    int64_t tokens, rows;  /* −1 until a tensor fixes them */
} moe_call;

/* Shape of operand i for the plan, with T and R as found so far (ANY where
 * not yet known); returns the rank and fills dtype. */
static int32_t arg_shape(const xattn_moe_problem *p, const moe_call *c, int i, int64_t *shape,
                         xattn_dtype *dtype)
{
    const xattn_moe_desc *d = &p->desc;
    int64_t T = c->tokens, R = c->rows;
    switch (i) {
    case ARG_LOGITS: *dtype = d->logits_dtype; shape[0] = T; shape[1] = d->num_experts; return 2;
    case ARG_BIAS: *dtype = XATTN_F32; shape[0] = d->num_experts; return 1;
    case ARG_TOPK_IDS: *dtype = XATTN_I32; shape[0] = T; shape[1] = d->top_k; return 2;
    case ARG_TOPK_WEIGHTS: *dtype = XATTN_F32; shape[0] = T; shape[1] = d->top_k; return 2;
    case ARG_X: *dtype = d->dtype; shape[0] = T; shape[1] = d->hidden; return 2;
    case ARG_EXPERT_OFFSETS: *dtype = XATTN_I32; shape[0] = (int64_t)d->num_experts + 1; return 1;
    case ARG_X_PERM: *dtype = d->dtype; shape[0] = R; shape[1] = d->hidden; return 2;
    case ARG_ROW_TOKEN: *dtype = XATTN_I32; shape[0] = R; return 1;
    case ARG_TOKEN_ROW: *dtype = XATTN_I32; shape[0] = T; shape[1] = d->top_k; return 2;
    case ARG_W1:
        *dtype = d->weight_dtype;
        shape[0] = d->num_experts;
        shape[1] = 2 * (int64_t)d->inter;
        shape[2] = d->hidden;
        return 3;
    case ARG_W2:
        *dtype = d->weight_dtype;
        shape[0] = d->num_experts;
        shape[1] = d->hidden;
        shape[2] = d->inter;
        return 3;
    case ARG_Y: *dtype = d->dtype; shape[0] = R; shape[1] = d->hidden; return 2;
    case ARG_B1:
        *dtype = d->bias_dtype;
        shape[0] = d->num_experts;
        shape[1] = 2 * (int64_t)d->inter;
        return 2;
    case ARG_B2: *dtype = d->bias_dtype; shape[0] = d->num_experts; shape[1] = d->hidden; return 2;
    default: *dtype = d->dtype; shape[0] = T; shape[1] = d->hidden; return 2; /* ARG_OUT */
    }
}

/* Operands whose first dimension is T, and those whose first is R. */
static const uint32_t token_args = BIT(ARG_LOGITS) | BIT(ARG_TOPK_IDS) | BIT(ARG_TOPK_WEIGHTS) |
                                   BIT(ARG_X) | BIT(ARG_TOKEN_ROW) | BIT(ARG_OUT);
static const uint32_t row_args = BIT(ARG_X_PERM) | BIT(ARG_ROW_TOKEN) | BIT(ARG_Y);

/* Why a call does not use operand i, where the flags decide it: a call
 * that would read it under a flag the plan lacks, or combine with the
 * weights on the input. */
static const char *unused_reason(const xattn_moe_desc *d, const moe_call *c, int i)
{
    switch (i) {
    case ARG_BIAS:
        return (c->ins & BIT(ARG_LOGITS)) ? " (desc.flags lacks XATTN_MOE_BIAS)" : "";
    case ARG_B1: return (c->ins & BIT(ARG_W1)) ? " (desc.flags lacks XATTN_MOE_EXPERT_B1)" : "";
    case ARG_B2: return (c->ins & BIT(ARG_W2)) ? " (desc.flags lacks XATTN_MOE_EXPERT_B2)" : "";
    case ARG_TOPK_WEIGHTS:
        if ((d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) && !strcmp(c->name, "combine"))
            return " (desc.flags has XATTN_MOE_WEIGHTS_ON_INPUT: dispatch applies the weights)";
        if (!strcmp(c->name, "dispatch")) return " (desc.flags lacks XATTN_MOE_WEIGHTS_ON_INPUT)";
        return "";
    default: return "";
    }
}

/* Check every operand of a call: the used ones against the plan, the unused
 * ones absent; T within max_tokens and R within [rows(T), max_rows]; the
 * workspace; and no output sharing memory with another operand. */
static xattn_status check_call(const xattn_moe_plan *plan, const xattn_moe_args *a, moe_call *c)
{
    const xattn_context *ctx = plan->ctx;
    const xattn_moe_desc *d = &plan->prob.desc;
    if ((d->flags & XATTN_MOE_BIAS) && (c->ins & BIT(ARG_LOGITS))) c->ins |= BIT(ARG_BIAS);
    if ((d->flags & XATTN_MOE_EXPERT_B1) && (c->ins & BIT(ARG_W1))) c->ins |= BIT(ARG_B1);
    if ((d->flags & XATTN_MOE_EXPERT_B2) && (c->ins & BIT(ARG_W2))) c->ins |= BIT(ARG_B2);
    uint32_t used = c->ins | c->outs;
    c->tokens = c->rows = ANY;
    for (int i = 0; i < ARG_COUNT; i++) {
        const xattn_tensor *t = arg_tensor(a, i);
        if (!(used & BIT(i))) {
            char why[160];
            snprintf(why, sizeof why, "xattn_moe_%s does not use it%s", c->name,
                     unused_reason(d, c, i));
            XATTN_TRY(xattn_check_absent(t, arg_names[i], why));
            continue;
        }
        int64_t shape[XATTN_MAX_RANK];
        xattn_dtype dtype;
        int32_t rank = arg_shape(&plan->prob, c, i, shape, &dtype);
        XATTN_TRY(xattn_check_tensor(ctx, t, arg_names[i], dtype, rank, shape, &c->spans[i]));
        if ((token_args & BIT(i)) && c->tokens == ANY) {
            c->tokens = shape[0];
            if (c->tokens > d->max_tokens)
                return INVALID("%s: %lld tokens, more than the plan's max_tokens %d",
                               arg_names[i], (long long)c->tokens, (int)d->max_tokens);
        }
        if ((row_args & BIT(i)) && c->rows == ANY) {
            c->rows = shape[0];
            if (c->rows > plan->params.max_rows)
                return INVALID("%s: %lld rows, more than the plan's %lld (xattn_moe_rows for "
                               "max_tokens)", arg_names[i], (long long)c->rows,
                               (long long)plan->params.max_rows);
        }
    }
    if (c->tokens != ANY && c->rows != ANY) {
        int64_t need = xattn_moe_rows_for(&plan->prob, plan->params.align, c->tokens);
        if (c->rows < need)
            return INVALID("%s: %lld rows, fewer than the %lld that %lld tokens may need "
                           "(xattn_moe_rows)", (used & BIT(ARG_X_PERM)) ? "x_perm" : "y",
                           (long long)c->rows, (long long)need, (long long)c->tokens);
    }
    XATTN_TRY(xattn_check_workspace(ctx, a->workspace, a->workspace_offset,
                                    plan->params.workspace_bytes, &c->workspace));
    for (int o = 0; o < ARG_COUNT; o++) {
        if (!(c->outs & BIT(o))) continue;
        for (int i = 0; i < ARG_COUNT; i++)
            if (i != o && (used & BIT(i)) && xattn_spans_overlap(&c->spans[o], &c->spans[i]))
                return INVALID("%s: overlaps %s in memory", arg_names[o], arg_names[i]);
        if (xattn_spans_overlap(&c->spans[o], &c->workspace))
            return INVALID("%s: overlaps the workspace", arg_names[o]);
    }
    for (int i = 0; i < ARG_COUNT; i++)
        if ((used & BIT(i)) && xattn_spans_overlap(&c->spans[i], &c->workspace))
            return INVALID("%s: overlaps the workspace", arg_names[i]);
    return XATTN_OK;
}

/* Index contents, where the memory is host-visible. */

/* topk_ids [T, k]: every entry in [−1, E). */
static xattn_status check_ids(const xattn_tensor *t, int64_t tokens, int32_t k, int32_t experts)
{
    const int32_t *p = xattn_host_i32(t);
    if (!p) return XATTN_OK;
    for (int64_t i = 0; i < tokens; i++)
        for (int32_t j = 0; j < k; j++) {
            int32_t v = p[i * t->stride[0] + j];
            if (v < -1 || v >= experts)
                return INVALID("topk_ids: entry [%lld, %d] = %d is outside [-1, num_experts %d)",
                               (long long)i, (int)j, (int)v, (int)experts);
        }
    return XATTN_OK;
}

/* token_row [T, k]: every entry in [−1, R). */
static xattn_status check_token_row(const xattn_tensor *t, int64_t tokens, int32_t k,
                                    int64_t rows)
{
    const int32_t *p = xattn_host_i32(t);
    if (!p) return XATTN_OK;
    for (int64_t i = 0; i < tokens; i++)
        for (int32_t j = 0; j < k; j++) {
            int32_t v = p[i * t->stride[0] + j];
            if (v < -1 || v >= rows)
                return INVALID("token_row: entry [%lld, %d] = %d is outside [-1, %lld rows of y)",
                               (long long)i, (int)j, (int)v, (long long)rows);
        }
    return XATTN_OK;
}

/* expert_offsets [E+1]: 0 first, non-decreasing, each segment a multiple
 * of the plan's alignment, ending within the R rows. */
static xattn_status check_offsets(const xattn_tensor *t, int32_t experts, int32_t align,
                                  int64_t rows)
{
    const int32_t *p = xattn_host_i32(t);
    if (!p) return XATTN_OK;
    int64_t s = t->stride[0];
    if (p[0] != 0) return INVALID("expert_offsets: element 0 is %d, must be 0", (int)p[0]);
    for (int32_t e = 0; e < experts; e++) {
        int64_t len = (int64_t)p[(e + 1) * s] - p[e * s];
        if (len < 0)
            return INVALID("expert_offsets: not monotonic: element %d (%d) < element %d (%d)",
                           (int)e + 1, (int)p[(e + 1) * s], (int)e, (int)p[e * s]);
        if (len % align)
            return INVALID("expert_offsets: expert %d has %lld rows, not a multiple of the "
                           "plan's alignment %d", (int)e, (long long)len, (int)align);
    }
    if (p[experts * s] > rows)
        return INVALID("expert_offsets: last element %d is past the %lld rows of x_perm",
                       (int)p[experts * s], (long long)rows);
    return XATTN_OK;
}

/* The launch of a validated call: operands the call uses, from the args. */
static void fill_launch(const xattn_moe_args *a, const moe_call *c, xattn_moe_launch *l)
{
    memset(l, 0, sizeof *l);
    uint32_t used = c->ins | c->outs;
    xattn_ref *refs[ARG_COUNT] = {
        &l->logits, &l->bias, &l->topk_ids, &l->topk_weights, &l->x, &l->expert_offsets,
        &l->x_perm, &l->row_token, &l->token_row, &l->w1, &l->w2, &l->y, &l->out,
        &l->b1, &l->b2,
    };
    int64_t *row_strides[ARG_COUNT] = {
        &l->logits_st, NULL, &l->ids_st, &l->weights_st, &l->x_st, &l->offsets_st,
        &l->x_perm_st, &l->row_token_st, &l->token_row_st, &l->w1_se, &l->w2_se, &l->y_st,
        &l->out_st, &l->b1_se, &l->b2_se,
    };
    for (int i = 0; i < ARG_COUNT; i++) {
        if (!(used & BIT(i))) continue;
        const xattn_tensor *t = arg_tensor(a, i);
        *refs[i] = xattn_ref_of(t);
        if (row_strides[i]) *row_strides[i] = t->stride[0];
    }
    if (used & BIT(ARG_W1)) l->w1_sn = a->w1.stride[1];
    if (used & BIT(ARG_W2)) l->w2_sn = a->w2.stride[1];
    l->tokens = c->tokens == ANY ? 0 : c->tokens;
    l->rows = c->rows == ANY ? 0 : c->rows;
    l->accumulate = a->accumulate;
    if (c->workspace.buffer) {
        l->workspace.native = c->workspace.buffer->native;
        l->workspace.offset = c->workspace.begin;
    }
}

static xattn_status start_call(const xattn_moe_plan *plan, const xattn_moe_args *a)
{
    xattn_error_clear();
    if (!plan) return INVALID("plan: must not be NULL");
    if (!a) return INVALID("args: must not be NULL");
    if (a->accumulate != 0 && a->accumulate != 1)
        return INVALID("args.accumulate: %d, must be 0 or 1", (int)a->accumulate);
    return XATTN_OK;
}

static xattn_status launch(const xattn_moe_plan *plan, xattn_moe_op op, const xattn_moe_launch *l)
{
    const xattn_context *ctx = plan->ctx;
    return ctx->vt->moe_run(ctx->dev, plan, plan->state, op, l);
}

/* accumulate is meaningful only for the calls that write out. */
static xattn_status check_no_accumulate(const xattn_moe_args *a, const char *call)
{
    if (a->accumulate)
        return INVALID("args.accumulate: set, but xattn_moe_%s does not write out", call);
    return XATTN_OK;
}

xattn_status xattn_moe_route(const xattn_moe_plan *plan, const xattn_moe_args *a)
{
    XATTN_TRY(start_call(plan, a));
    XATTN_TRY(check_no_accumulate(a, "route"));
    moe_call c = {.name = "route", .ins = BIT(ARG_LOGITS),
                  .outs = BIT(ARG_TOPK_IDS) | BIT(ARG_TOPK_WEIGHTS)};
    XATTN_TRY(check_call(plan, a, &c));
    if (c.tokens == 0) return XATTN_OK;
    xattn_moe_launch l;
    fill_launch(a, &c, &l);
    return launch(plan, XATTN_MOE_OP_ROUTE, &l);
}

xattn_status xattn_moe_dispatch(const xattn_moe_plan *plan, const xattn_moe_args *a)
{
    XATTN_TRY(start_call(plan, a));
    XATTN_TRY(check_no_accumulate(a, "dispatch"));
    const xattn_moe_desc *d = &plan->prob.desc;
    moe_call c = {.name = "dispatch", .ins = BIT(ARG_TOPK_IDS) | BIT(ARG_X),
                  .outs = BIT(ARG_EXPERT_OFFSETS) | BIT(ARG_X_PERM) | BIT(ARG_ROW_TOKEN) |
                          BIT(ARG_TOKEN_ROW)};
    if (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) c.ins |= BIT(ARG_TOPK_WEIGHTS);
    XATTN_TRY(check_call(plan, a, &c));
    XATTN_TRY(check_ids(&a->topk_ids, c.tokens, d->top_k, d->num_experts));
    if (c.tokens == 0) return XATTN_OK;
    xattn_moe_launch l;
    fill_launch(a, &c, &l);
    return launch(plan, XATTN_MOE_OP_DISPATCH, &l);
}

xattn_status xattn_moe_experts(const xattn_moe_plan *plan, const xattn_moe_args *a)
{
    XATTN_TRY(start_call(plan, a));
    XATTN_TRY(check_no_accumulate(a, "experts"));
    moe_call c = {.name = "experts",
                  .ins = BIT(ARG_X_PERM) | BIT(ARG_EXPERT_OFFSETS) | BIT(ARG_W1) | BIT(ARG_W2),
                  .outs = BIT(ARG_Y)};
    XATTN_TRY(check_call(plan, a, &c));
    XATTN_TRY(check_offsets(&a->expert_offsets, plan->prob.desc.num_experts, plan->params.align,
                            c.rows));
    if (c.rows == 0) return XATTN_OK;
    xattn_moe_launch l;
    fill_launch(a, &c, &l);
    return launch(plan, XATTN_MOE_OP_EXPERTS, &l);
}

xattn_status xattn_moe_combine(const xattn_moe_plan *plan, const xattn_moe_args *a)
{
    XATTN_TRY(start_call(plan, a));
    moe_call c = {.name = "combine",
                  .ins = BIT(ARG_Y) | BIT(ARG_TOPK_WEIGHTS) | BIT(ARG_TOKEN_ROW),
                  .outs = BIT(ARG_OUT)};
    if (plan->prob.desc.flags & XATTN_MOE_WEIGHTS_ON_INPUT) c.ins &= ~BIT(ARG_TOPK_WEIGHTS);
    XATTN_TRY(check_call(plan, a, &c));
    XATTN_TRY(check_token_row(&a->token_row, c.tokens, plan->prob.desc.top_k, c.rows));
    if (c.tokens == 0) return XATTN_OK;
    xattn_moe_launch l;
    fill_launch(a, &c, &l);
    return launch(plan, XATTN_MOE_OP_COMBINE, &l);
}

/* A workspace region as an operand. */
static xattn_ref ws_ref(const xattn_moe_launch *base, size_t offset)
{
    xattn_ref r = {base->workspace.native, base->workspace.offset + offset};
    return r;
}

xattn_status xattn_moe_forward(const xattn_moe_plan *plan, const xattn_moe_args *a)
{
    XATTN_TRY(start_call(plan, a));
    moe_call c = {.name = "forward",
                  .ins = BIT(ARG_LOGITS) | BIT(ARG_X) | BIT(ARG_W1) | BIT(ARG_W2),
                  .outs = BIT(ARG_OUT)};
    XATTN_TRY(check_call(plan, a, &c));
    if (c.tokens == 0) return XATTN_OK;

    /* The caller's operands, then the intermediates in the workspace regions
     * of plan_moe.h, contiguous. */
    const xattn_moe_desc *d = &plan->prob.desc;
    const xattn_moe_plan_params *p = &plan->params;
    xattn_moe_launch l;
    fill_launch(a, &c, &l);
    l.rows = xattn_moe_rows_for(&plan->prob, p->align, c.tokens);
    l.topk_ids = ws_ref(&l, p->ids_offset);
    l.topk_weights = ws_ref(&l, p->weights_offset);
    l.expert_offsets = ws_ref(&l, p->offsets_offset);
    l.row_token = ws_ref(&l, p->row_token_offset);
    l.token_row = ws_ref(&l, p->token_row_offset);
    l.x_perm = ws_ref(&l, p->x_perm_offset);
    l.y = ws_ref(&l, p->y_offset);
    l.ids_st = l.weights_st = l.token_row_st = d->top_k;
    l.offsets_st = l.row_token_st = 1;
    l.x_perm_st = l.y_st = d->hidden;

    /* Each op sees only its own operands, as after a separate call. With
     * the weights on the input, dispatch reads them and combine does not. */
    const int on_input = (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0;
    xattn_moe_launch route = l, dispatch = l, experts = l, combine = l;
    route.x = route.expert_offsets = route.x_perm = route.row_token = route.token_row =
        route.w1 = route.w2 = route.y = route.out = route.b1 = route.b2 = (xattn_ref){0};
    route.accumulate = 0;
    dispatch.logits = dispatch.bias = dispatch.w1 = dispatch.w2 = dispatch.y = dispatch.out =
        dispatch.b1 = dispatch.b2 = (xattn_ref){0};
    if (!on_input) dispatch.topk_weights = (xattn_ref){0};
    dispatch.accumulate = 0;
    experts.logits = experts.bias = experts.topk_ids = experts.topk_weights = experts.x =
        experts.row_token = experts.token_row = experts.out = (xattn_ref){0};
    experts.accumulate = 0;
    combine.logits = combine.bias = combine.topk_ids = combine.x = combine.expert_offsets =
        combine.x_perm = combine.row_token = combine.w1 = combine.w2 = combine.b1 =
            combine.b2 = (xattn_ref){0};
    if (on_input) combine.topk_weights = (xattn_ref){0};
    XATTN_TRY(launch(plan, XATTN_MOE_OP_ROUTE, &route));
    XATTN_TRY(launch(plan, XATTN_MOE_OP_DISPATCH, &dispatch));
    XATTN_TRY(launch(plan, XATTN_MOE_OP_EXPERTS, &experts));
    return launch(plan, XATTN_MOE_OP_COMBINE, &combine);
}
