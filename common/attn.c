/* Attention front end: validates every input once, plans, and hands
 * normalised operands to the backend. Backends never re-validate. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "context.h"
#include "error.h"
#include "tensor_check.h"
#include "text.h"

#define INVALID(...) xattn_error(XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__)

enum {
    MLA_DQK = 576,
    MLA_DV = 512,
    MAX_HEAD_DIM = 256,
    HEAD_DIM_STEP = 8,
    /* A head dim pair (192, 128) is the DeepSeek MLA-decompressed shape. */
    SPLIT_DQK = 192,
    SPLIT_DV = 128,
};

static const uint32_t known_flags = XATTN_ATTN_CAUSAL | XATTN_ATTN_WINDOW | XATTN_ATTN_ALIBI |
                                    XATTN_ATTN_SINKS | XATTN_ATTN_LSE;

static int head_dims_supported(int32_t dqk, int32_t dv)
{
    if (dqk == dv) return dqk % HEAD_DIM_STEP == 0 && dqk >= HEAD_DIM_STEP && dqk <= MAX_HEAD_DIM;
    return (dqk == SPLIT_DQK && dv == SPLIT_DV) || (dqk == MLA_DQK && dv == MLA_DV);
}

static int is_float_dtype(xattn_dtype t)
{
    return t == XATTN_F32 || t == XATTN_F16 || t == XATTN_BF16;
}

/* Widest element any tensor may have, in bytes: element counts must stay
 * addressable as byte offsets. */
enum { MAX_ELEMENT_BYTES = 8 };

/* 1 if the product of the non-negative factors, times MAX_ELEMENT_BYTES,
 * fits an int64. */
static int elems_fit(int n, const int64_t *f)
{
    int64_t r = MAX_ELEMENT_BYTES;
    for (int i = 0; i < n; i++)
        if (f[i] < 0 || __builtin_mul_overflow(r, f[i], &r)) return 0;
    return 1;
}

xattn_status xattn_attn_problem_init(const xattn_attn_desc *d, xattn_attn_problem *out)
{
    if (!d) return INVALID("desc: must not be NULL");
    if (!out) return INVALID("out: must not be NULL");
    if (!is_float_dtype(d->dtype))
        return INVALID("desc.dtype: %d is not f32, f16 or bf16", (int)d->dtype);
    if (d->batch < 1) return INVALID("desc.batch: %d, must be >= 1", (int)d->batch);
    if (d->num_q_heads < 1)
        return INVALID("desc.num_q_heads: %d, must be >= 1", (int)d->num_q_heads);
    if (d->num_kv_heads < 1)
        return INVALID("desc.num_kv_heads: %d, must be >= 1", (int)d->num_kv_heads);
    if (d->num_q_heads % d->num_kv_heads)
        return INVALID("desc.num_kv_heads: num_q_heads %d is not a multiple of num_kv_heads %d",
                       (int)d->num_q_heads, (int)d->num_kv_heads);
    if (d->head_dim_qk < 1)
        return INVALID("desc.head_dim_qk: %d, must be >= 1", (int)d->head_dim_qk);
    if (d->head_dim_v < 1) return INVALID("desc.head_dim_v: %d, must be >= 1", (int)d->head_dim_v);
    if (!head_dims_supported(d->head_dim_qk, d->head_dim_v))
        return xattn_error(XATTN_ERR_UNSUPPORTED,
                           "desc.head_dim_qk/head_dim_v: (%d, %d) is not supported; xattn "
                           "supports Dqk = Dv in 8, 16, ..., 256 and (192, 128), (576, 512)",
                           (int)d->head_dim_qk, (int)d->head_dim_v);
    if (d->q_layout != XATTN_Q_UNIFORM && d->q_layout != XATTN_Q_RAGGED)
        return INVALID("desc.q_layout: %d is not an xattn_q_layout", (int)d->q_layout);
    if (d->kv_layout != XATTN_KV_UNIFORM && d->kv_layout != XATTN_KV_RAGGED &&
        d->kv_layout != XATTN_KV_PAGED)
        return INVALID("desc.kv_layout: %d is not an xattn_kv_layout", (int)d->kv_layout);
    if (d->seqlen_q < 0) return INVALID("desc.seqlen_q: %d is negative", (int)d->seqlen_q);
    if (d->seqlen_k < 0) return INVALID("desc.seqlen_k: %d is negative", (int)d->seqlen_k);
    int64_t hd = d->head_dim_qk > d->head_dim_v ? d->head_dim_qk : d->head_dim_v;
    int64_t q_elems[] = {d->batch, d->seqlen_q, d->num_q_heads, hd};
    int64_t k_elems[] = {d->batch, d->seqlen_k, d->num_kv_heads, hd};
    if (!elems_fit(4, q_elems))
        return INVALID("desc.seqlen_q: batch x seqlen_q x heads x head_dim overflows");
    if (!elems_fit(4, k_elems))
        return INVALID("desc.seqlen_k: batch x seqlen_k x heads x head_dim overflows");

    if (d->kv_layout == XATTN_KV_PAGED) {
        if (d->page_size < 1) return INVALID("desc.page_size: %d, must be >= 1", (int)d->page_size);
        if (d->num_pages < 1) return INVALID("desc.num_pages: %d, must be >= 1", (int)d->num_pages);
        if (d->max_pages_per_seq < 1)
            return INVALID("desc.max_pages_per_seq: %d, must be >= 1", (int)d->max_pages_per_seq);
        if ((int64_t)d->seqlen_k > (int64_t)d->max_pages_per_seq * d->page_size)
            return INVALID("desc.seqlen_k: %d exceeds max_pages_per_seq %d x page_size %d",
                           (int)d->seqlen_k, (int)d->max_pages_per_seq, (int)d->page_size);
        int64_t cache[] = {d->num_pages, d->page_size, d->num_kv_heads, hd};
        if (!elems_fit(4, cache))
            return INVALID("desc.num_pages: num_pages x page_size x heads x head_dim overflows");
    } else if (d->page_size || d->num_pages || d->max_pages_per_seq) {
        return INVALID("desc.page_size/num_pages/max_pages_per_seq: set, but kv_layout is not "
                       "XATTN_KV_PAGED");
    }

    if (d->flags & ~known_flags)
        return INVALID("desc.flags: unknown bits 0x%x", (unsigned)(d->flags & ~known_flags));
    int32_t wl = -1, wr = -1;
    if (d->flags & XATTN_ATTN_WINDOW) {
        if (d->window_left < -1)
            return INVALID("desc.window_left: %d, must be >= -1 (-1 = unbounded)",
                           (int)d->window_left);
        if (d->window_right < -1)
            return INVALID("desc.window_right: %d, must be >= -1 (-1 = unbounded)",
                           (int)d->window_right);
        wl = d->window_left;
        wr = d->window_right;
    } else if (d->window_left || d->window_right) {
        return INVALID("desc.window_left/window_right: set, but XATTN_ATTN_WINDOW is not in flags");
    }
    if (d->flags & XATTN_ATTN_CAUSAL) {
        if ((d->flags & XATTN_ATTN_WINDOW) && wr != 0)
            return INVALID("desc.window_right: %d contradicts XATTN_ATTN_CAUSAL (which means 0)",
                           (int)wr);
        wr = 0;
    }
    if (!isfinite(d->scale)) return INVALID("desc.scale: not finite");
    if (!isfinite(d->softcap) || d->softcap < 0)
        return INVALID("desc.softcap: %g, must be finite and >= 0 (0 = none)", (double)d->softcap);

    memset(out, 0, sizeof *out);
    out->desc = *d;
    out->scale = d->scale != 0.0f ? d->scale : (float)(1.0 / sqrt((double)d->head_dim_qk));
    out->window_left = wl;
    out->window_right = wr;
    out->group = d->num_q_heads / d->num_kv_heads;
    return XATTN_OK;
}

xattn_status xattn_plan_create(xattn_context *ctx, const xattn_attn_desc *desc, xattn_plan **out)
{
    xattn_error_clear();
    if (!ctx) return INVALID("ctx: must not be NULL");
    if (!out) return INVALID("out: must not be NULL");
    xattn_attn_problem prob;
    XATTN_TRY(xattn_attn_problem_init(desc, &prob));
    if (prob.desc.dtype == XATTN_F16 && !ctx->caps.has_f16)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "desc.dtype: f16 is not supported by %s on %s",
                           ctx->vt->name, ctx->caps.name);
    if (prob.desc.dtype == XATTN_BF16 && !ctx->caps.has_bf16)
        return xattn_error(XATTN_ERR_UNSUPPORTED, "desc.dtype: bf16 is not supported by %s on %s",
                           ctx->vt->name, ctx->caps.name);

    xattn_plan *plan = calloc(1, sizeof *plan);
    if (!plan) return xattn_error(XATTN_ERR_OUT_OF_MEMORY, "plan: out of memory");
    plan->ctx = ctx;
    plan->prob = prob;
    xattn_status st = xattn_plan_attention(&ctx->caps, &prob, &plan->params);
    if (st == XATTN_OK) st = ctx->vt->attn_prepare(ctx->dev, plan, &plan->state);
    if (st != XATTN_OK) {
        free(plan);
        return st;
    }
    xattn_log(XATTN_LOG_DEBUG, "plan: block_q %d block_k %d splits %d work %lld ws %zu",
              (int)plan->params.block_q, (int)plan->params.block_k,
              (int)plan->params.kv_splits, (long long)plan->params.num_work,
              plan->params.workspace_bytes);
    xattn_context_retain(ctx);
    *out = plan;
    return XATTN_OK;
}

size_t xattn_plan_workspace_size(const xattn_plan *plan)
{
    return plan ? plan->params.workspace_bytes : 0;
}

static int format_plan(const void *plan, char *buf, size_t size)
{
    const xattn_plan *p = plan;
    return xattn_plan_params_format(&p->prob, &p->params, buf, size);
}

xattn_status xattn_plan_describe(const xattn_plan *plan, char *buf, size_t size, size_t *needed)
{
    xattn_error_clear();
    if (!plan) return INVALID("plan: must not be NULL");
    return xattn_text_describe(plan->ctx, format_plan, plan, buf, size, needed);
}

void xattn_plan_destroy(xattn_plan **plan)
{
    if (!plan || !*plan) return;
    xattn_plan *p = *plan;
    *plan = NULL;
    p->ctx->vt->attn_release(p->ctx->dev, p->state);
    xattn_context_release(p->ctx);
    free(p);
}

/* cu_seqlens [B+1]: starts at 0, non-decreasing, each length <= max_len,
 * ends at rows. Only checked when host-visible. */
static xattn_status check_cu_seqlens(const xattn_tensor *t, const char *name, int32_t batch,
                                     int32_t max_len, const char *max_name, int64_t rows)
{
    const int32_t *cu = xattn_host_i32(t);
    if (!cu) return XATTN_OK;
    int64_t s = t->stride[0];
    if (cu[0] != 0) return INVALID("%s: element 0 is %d, must be 0", name, (int)cu[0]);
    for (int32_t b = 0; b < batch; b++) {
        int64_t len = (int64_t)cu[(b + 1) * s] - cu[b * s];
        if (len < 0)
            return INVALID("%s: not monotonic: element %d (%d) < element %d (%d)", name,
                           (int)b + 1, (int)cu[(b + 1) * s], (int)b, (int)cu[b * s]);
        if (len > max_len)
            return INVALID("%s: sequence %d has length %lld > desc.%s %d", name, (int)b, (long long)len,
                           max_name, (int)max_len);
    }
    if (cu[batch * s] != rows)
        return INVALID("%s: last element %d != %lld rows of the tensor", name,
                       (int)cu[batch * s], (long long)rows);
    return XATTN_OK;
}

static xattn_status check_paged_tables(const xattn_attn_desc *d, const xattn_tensor *bt,
                                       const xattn_tensor *sk)
{
    const int32_t *lens = xattn_host_i32(sk);
    const int32_t *table = xattn_host_i32(bt);
    if (!lens) return XATTN_OK;
    for (int32_t b = 0; b < d->batch; b++) {
        int32_t len = lens[b * sk->stride[0]];
        if (len < 0 || len > d->seqlen_k)
            return INVALID("seqlens_k: sequence %d has length %d, must be in [0, desc.seqlen_k "
                           "%d]", (int)b, (int)len, (int)d->seqlen_k);
        if (!table) continue;
        int32_t pages = (int32_t)(((int64_t)len + d->page_size - 1) / d->page_size);
        for (int32_t p = 0; p < pages; p++) {
            int32_t page = table[b * bt->stride[0] + p];
            if (page < 0 || page >= d->num_pages)
                return INVALID("block_table: entry [%d, %d] = %d is outside [0, num_pages %d)",
                               (int)b, (int)p, (int)page, (int)d->num_pages);
        }
    }
    return XATTN_OK;
}

/* Strides of size-1 dimensions reach the backend as 0 (xattn_stride). */
static void operand(xattn_attn_operand *op, const xattn_tensor *t, int batched)
{
    op->ref = xattn_ref_of(t);
    if (batched) {
        op->sb = xattn_stride(t, 0);
        op->st = xattn_stride(t, 1);
        op->sh = xattn_stride(t, 2);
    } else {
        op->sb = 0;
        op->st = xattn_stride(t, 0);
        op->sh = xattn_stride(t, 1);
    }
}

xattn_status xattn_attn_run(const xattn_plan *plan, const xattn_attn_args *a)
{
    xattn_error_clear();
    if (!plan) return INVALID("plan: must not be NULL");
    if (!a) return INVALID("args: must not be NULL");
    const xattn_context *ctx = plan->ctx;
    const xattn_attn_desc *d = &plan->prob.desc;
    const int64_t B = d->batch, Hq = d->num_q_heads, Hkv = d->num_kv_heads;
    const int64_t Dqk = d->head_dim_qk, Dv = d->head_dim_v;
    const int q_uniform = d->q_layout == XATTN_Q_UNIFORM;

    /* Q and O */
    xattn_span sq, sk, sv, so, slse = {0}, sp[6] = {{0}};
    int64_t total_q;
    if (q_uniform) {
        int64_t qs[] = {B, d->seqlen_q, Hq, Dqk}, os[] = {B, d->seqlen_q, Hq, Dv};
        XATTN_TRY(xattn_check_tensor(ctx, &a->q, "q", d->dtype, 4, qs, &sq));
        XATTN_TRY(xattn_check_tensor(ctx, &a->o, "o", d->dtype, 4, os, &so));
        total_q = B * d->seqlen_q;
    } else {
        int64_t qs[] = {ANY, Hq, Dqk};
        XATTN_TRY(xattn_check_tensor(ctx, &a->q, "q", d->dtype, 3, qs, &sq));
        total_q = qs[0];
        int64_t os[] = {total_q, Hq, Dv};
        XATTN_TRY(xattn_check_tensor(ctx, &a->o, "o", d->dtype, 3, os, &so));
    }

    /* K and V */
    int64_t total_k = 0;
    if (d->kv_layout == XATTN_KV_UNIFORM) {
        int64_t ks[] = {B, d->seqlen_k, Hkv, Dqk}, vs[] = {B, d->seqlen_k, Hkv, Dv};
        XATTN_TRY(xattn_check_tensor(ctx, &a->k, "k", d->dtype, 4, ks, &sk));
        XATTN_TRY(xattn_check_tensor(ctx, &a->v, "v", d->dtype, 4, vs, &sv));
    } else if (d->kv_layout == XATTN_KV_RAGGED) {
        int64_t ks[] = {ANY, Hkv, Dqk};
        XATTN_TRY(xattn_check_tensor(ctx, &a->k, "k", d->dtype, 3, ks, &sk));
        total_k = ks[0];
        int64_t vs[] = {total_k, Hkv, Dv};
        XATTN_TRY(xattn_check_tensor(ctx, &a->v, "v", d->dtype, 3, vs, &sv));
    } else {
        int64_t ks[] = {d->num_pages, d->page_size, Hkv, Dqk};
        int64_t vs[] = {d->num_pages, d->page_size, Hkv, Dv};
        XATTN_TRY(xattn_check_tensor(ctx, &a->k, "k", d->dtype, 4, ks, &sk));
        XATTN_TRY(xattn_check_tensor(ctx, &a->v, "v", d->dtype, 4, vs, &sv));
    }

    /* Optional operands: present exactly when the plan uses them. */
    if (d->flags & XATTN_ATTN_LSE) {
        int64_t ls[] = {Hq, total_q};
        XATTN_TRY(xattn_check_tensor_strided(ctx, &a->lse, "lse", XATTN_F32, 2, ls, &slse));
    } else {
        XATTN_TRY(xattn_check_absent(&a->lse, "lse", "desc.flags lacks XATTN_ATTN_LSE"));
    }
    if (!q_uniform) {
        int64_t s[] = {B + 1};
        XATTN_TRY(xattn_check_tensor(ctx, &a->cu_seqlens_q, "cu_seqlens_q", XATTN_I32, 1, s, &sp[0]));
    } else {
        XATTN_TRY(xattn_check_absent(&a->cu_seqlens_q, "cu_seqlens_q", "desc.q_layout is uniform"));
    }
    if (d->kv_layout == XATTN_KV_RAGGED) {
        int64_t s[] = {B + 1};
        XATTN_TRY(xattn_check_tensor(ctx, &a->cu_seqlens_k, "cu_seqlens_k", XATTN_I32, 1, s, &sp[1]));
    } else {
        XATTN_TRY(xattn_check_absent(&a->cu_seqlens_k, "cu_seqlens_k", "desc.kv_layout is not ragged"));
    }
    if (d->kv_layout == XATTN_KV_PAGED) {
        int64_t bs[] = {B, d->max_pages_per_seq}, ss[] = {B};
        XATTN_TRY(xattn_check_tensor(ctx, &a->block_table, "block_table", XATTN_I32, 2, bs, &sp[2]));
        XATTN_TRY(xattn_check_tensor(ctx, &a->seqlens_k, "seqlens_k", XATTN_I32, 1, ss, &sp[3]));
    } else {
        XATTN_TRY(xattn_check_absent(&a->block_table, "block_table", "desc.kv_layout is not paged"));
        XATTN_TRY(xattn_check_absent(&a->seqlens_k, "seqlens_k", "desc.kv_layout is not paged"));
    }
    if (d->flags & XATTN_ATTN_ALIBI) {
        int64_t s[] = {Hq};
        XATTN_TRY(xattn_check_tensor(ctx, &a->alibi_slopes, "alibi_slopes", XATTN_F32, 1, s, &sp[4]));
    } else {
        XATTN_TRY(xattn_check_absent(&a->alibi_slopes, "alibi_slopes",
                               "desc.flags lacks XATTN_ATTN_ALIBI"));
    }
    if (d->flags & XATTN_ATTN_SINKS) {
        int64_t s[] = {Hq};
        XATTN_TRY(xattn_check_tensor(ctx, &a->sinks, "sinks", XATTN_F32, 1, s, &sp[5]));
    } else {
        XATTN_TRY(xattn_check_absent(&a->sinks, "sinks", "desc.flags lacks XATTN_ATTN_SINKS"));
    }

    /* Workspace */
    size_t ws = plan->params.workspace_bytes;
    xattn_span sws = {0};
    XATTN_TRY(xattn_check_workspace(ctx, a->workspace, a->workspace_offset, ws, &sws));

    /* Outputs must not overlap anything else the kernel touches. */
    const xattn_span *inputs[] = {&sq, &sk, &sv, &sp[0], &sp[1], &sp[2], &sp[3], &sp[4], &sp[5], &sws};
    const char *input_names[] = {"q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "block_table",
                                 "seqlens_k", "alibi_slopes", "sinks", "workspace"};
    const xattn_span *outputs[] = {&so, &slse, &sws};
    const char *output_names[] = {"o", "lse", "workspace"};
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(outputs); i++) {
        for (size_t j = 0; j < XATTN_ARRAY_SIZE(inputs); j++)
            if (outputs[i] != inputs[j] && xattn_spans_overlap(outputs[i], inputs[j]))
                return INVALID("%s: overlaps %s in memory", output_names[i],
                               input_names[j]);
        if (i == 0 && xattn_spans_overlap(&so, &slse)) return INVALID("o: overlaps lse");
    }

    /* Contents, where the memory is host-visible. */
    if (!q_uniform)
        XATTN_TRY(check_cu_seqlens(&a->cu_seqlens_q, "cu_seqlens_q", d->batch, d->seqlen_q,
                                   "seqlen_q", total_q));
    if (d->kv_layout == XATTN_KV_RAGGED)
        XATTN_TRY(check_cu_seqlens(&a->cu_seqlens_k, "cu_seqlens_k", d->batch, d->seqlen_k,
                                   "seqlen_k", total_k));
    if (d->kv_layout == XATTN_KV_PAGED)
        XATTN_TRY(check_paged_tables(d, &a->block_table, &a->seqlens_k));

    xattn_attn_launch l;
    memset(&l, 0, sizeof l);
    operand(&l.q, &a->q, q_uniform);
    operand(&l.o, &a->o, q_uniform);
    operand(&l.k, &a->k, d->kv_layout != XATTN_KV_RAGGED);
    operand(&l.v, &a->v, d->kv_layout != XATTN_KV_RAGGED);
    l.lse = xattn_ref_of(&a->lse);
    l.lse_sh = a->lse.buffer ? xattn_stride(&a->lse, 0) : 0;
    l.lse_st = a->lse.buffer ? xattn_stride(&a->lse, 1) : 0;
    l.total_q = total_q;
    l.total_k = total_k;
    l.cu_seqlens_q = xattn_ref_of(&a->cu_seqlens_q);
    l.cu_seqlens_k = xattn_ref_of(&a->cu_seqlens_k);
    l.block_table = xattn_ref_of(&a->block_table);
    l.block_table_stride = a->block_table.buffer ? xattn_stride(&a->block_table, 0) : 0;
    l.seqlens_k = xattn_ref_of(&a->seqlens_k);
    l.alibi_slopes = xattn_ref_of(&a->alibi_slopes);
    l.sinks = xattn_ref_of(&a->sinks);
    if (ws) {
        l.workspace.native = a->workspace->native;
        l.workspace.offset = a->workspace_offset;
    }
    if (total_q == 0) return XATTN_OK;
    return ctx->vt->attn_run(ctx->dev, plan, plan->state, &l);
}

/* ---- kv_append ------------------------------------------------------------ */

/* Heapsort: in place and without allocating, unlike qsort (glibc's
 * allocates a merge buffer for arrays over a kilobyte). */
static void sift_down(int32_t *v, int64_t root, int64_t n)
{
    for (int64_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && v[child + 1] > v[child]) child++;
        if (v[root] >= v[child]) return;
        int32_t t = v[root];
        v[root] = v[child];
        v[child] = t;
    }
}

static void sort_i32(int32_t *v, int64_t n)
{
    for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(v, i, n);
    for (int64_t end = n - 1; end > 0; end--) {
        int32_t t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end);
    }
}

/* Slots sorted on the stack up to this many (a decode step's batch), so
 * that kv_append allocates nothing for them; more are sorted on the heap. */
enum { KV_APPEND_STACK_SLOTS = 1024 };

/* Slots in [-1, capacity), none repeated (two tokens racing for one cache
 * row would be a silent wrong answer). Only checked when host-visible. */
static xattn_status check_slots(const xattn_tensor *slots, int64_t n, int64_t capacity)
{
    const int32_t *sh = xattn_host_i32(slots);
    if (!sh || n == 0) return XATTN_OK;
    int32_t on_stack[KV_APPEND_STACK_SLOTS];
    int32_t *sorted = n <= KV_APPEND_STACK_SLOTS ? on_stack : malloc((size_t)n * sizeof *sorted);
    if (!sorted)
        return xattn_error(XATTN_ERR_OUT_OF_MEMORY,
                           "slots: no memory to check %lld slots for repeats", (long long)n);
    int64_t used = 0;
    for (int64_t t = 0; t < n; t++) {
        int32_t s = sh[t * slots->stride[0]];
        if (s < -1 || s >= capacity) {
            if (sorted != on_stack) free(sorted);
            return INVALID("slots: entry %lld = %d is outside [-1, num_pages x page_size = %lld)",
                           (long long)t, (int)s, (long long)capacity);
        }
        if (s >= 0) sorted[used++] = s;
    }
    sort_i32(sorted, used);
    for (int64_t i = 1; i < used; i++)
        if (sorted[i] == sorted[i - 1]) {
            int32_t dup = sorted[i];
            if (sorted != on_stack) free(sorted);
            return INVALID("slots: slot %d is given to more than one token", (int)dup);
        }
    if (sorted != on_stack) free(sorted);
    return XATTN_OK;
}

xattn_status xattn_kv_append(xattn_context *ctx, const xattn_tensor *k_new,
                             const xattn_tensor *v_new, const xattn_tensor *slots,
                             const xattn_tensor *k_cache, const xattn_tensor *v_cache)
{
    xattn_error_clear();
    if (!ctx) return INVALID("ctx: must not be NULL");
    if (!k_new) return INVALID("k_new: must not be NULL");
    if (!v_new) return INVALID("v_new: must not be NULL");
    if (!slots) return INVALID("slots: must not be NULL");
    if (!k_cache) return INVALID("k_cache: must not be NULL");
    if (!v_cache) return INVALID("v_cache: must not be NULL");
    xattn_dtype dt = k_cache->dtype;
    if (!is_float_dtype(dt))
        return INVALID("k_cache: dtype %s is not f32, f16 or bf16", xattn_dtype_name(dt));
    xattn_span s_kn, s_vn, s_sl, s_kc, s_vc;
    int64_t kc[] = {ANY, ANY, ANY, ANY};
    XATTN_TRY(xattn_check_tensor(ctx, k_cache, "k_cache", dt, 4, kc, &s_kc));
    if (kc[0] < 1 || kc[1] < 1 || kc[2] < 1 || kc[3] < 1)
        return INVALID("k_cache: shape [%lld, %lld, %lld, %lld] has an empty dimension",
                       (long long)kc[0], (long long)kc[1], (long long)kc[2], (long long)kc[3]);
    int64_t vc[] = {kc[0], kc[1], kc[2], ANY};
    XATTN_TRY(xattn_check_tensor(ctx, v_cache, "v_cache", dt, 4, vc, &s_vc));
    if (vc[3] < 1) return INVALID("v_cache: head dim is 0");
    int64_t kn[] = {ANY, kc[2], kc[3]};
    XATTN_TRY(xattn_check_tensor(ctx, k_new, "k_new", dt, 3, kn, &s_kn));
    int64_t vn[] = {kn[0], kc[2], vc[3]};
    XATTN_TRY(xattn_check_tensor(ctx, v_new, "v_new", dt, 3, vn, &s_vn));
    int64_t sl[] = {kn[0]};
    XATTN_TRY(xattn_check_tensor(ctx, slots, "slots", XATTN_I32, 1, sl, &s_sl));
    const xattn_span *outs[] = {&s_kc, &s_vc};
    const xattn_span *ins[] = {&s_kn, &s_vn, &s_sl};
    const char *in_names[] = {"k_new", "v_new", "slots"};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            if (xattn_spans_overlap(outs[i], ins[j]))
                return INVALID("%s: overlaps %s", i ? "v_cache" : "k_cache", in_names[j]);
    if (xattn_spans_overlap(&s_kc, &s_vc)) return INVALID("v_cache: overlaps k_cache");

    XATTN_TRY(check_slots(slots, kn[0], kc[0] * kc[1]));
    if (kn[0] == 0) return XATTN_OK;

    xattn_kv_append_launch l = {
        .dtype = dt, .n = kn[0], .num_kv_heads = kc[2], .dqk = kc[3], .dv = vc[3],
        .page_size = kc[1], .num_pages = kc[0],
        .k_new = xattn_ref_of(k_new), .v_new = xattn_ref_of(v_new), .slots = xattn_ref_of(slots),
        .k_cache = xattn_ref_of(k_cache), .v_cache = xattn_ref_of(v_cache),
        .kn_st = xattn_stride(k_new, 0), .kn_sh = xattn_stride(k_new, 1),
        .vn_st = xattn_stride(v_new, 0), .vn_sh = xattn_stride(v_new, 1),
        .kc_sp = xattn_stride(k_cache, 0), .kc_st = xattn_stride(k_cache, 1),
        .kc_sh = xattn_stride(k_cache, 2),
        .vc_sp = xattn_stride(v_cache, 0), .vc_st = xattn_stride(v_cache, 1),
        .vc_sh = xattn_stride(v_cache, 2),
    };
    return ctx->vt->kv_append(ctx->dev, &l);
}

/* ---- merge_states --------------------------------------------------------- */

static int same_view(const xattn_tensor *a, const xattn_tensor *b)
{
    if (a->buffer != b->buffer || a->offset != b->offset || a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i] || a->stride[i] != b->stride[i]) return 0;
    return 1;
}

xattn_status xattn_merge_states(xattn_context *ctx, const xattn_tensor *o_a,
                                const xattn_tensor *lse_a, const xattn_tensor *o_b,
                                const xattn_tensor *lse_b, const xattn_tensor *o,
                                const xattn_tensor *lse)
{
    xattn_error_clear();
    if (!ctx) return INVALID("ctx: must not be NULL");
    const xattn_tensor *ts[] = {o_a, lse_a, o_b, lse_b, o, lse};
    const char *names[] = {"o_a", "lse_a", "o_b", "lse_b", "o", "lse"};
    for (int i = 0; i < 6; i++)
        if (!ts[i]) return INVALID("%s: must not be NULL", names[i]);
    xattn_dtype dt = o_a->dtype;
    if (!is_float_dtype(dt))
        return INVALID("o_a: dtype %s is not f32, f16 or bf16", xattn_dtype_name(dt));
    xattn_span s[6];
    int64_t os[] = {ANY, ANY, ANY};
    XATTN_TRY(xattn_check_tensor(ctx, o_a, "o_a", dt, 3, os, &s[0]));
    /* Attention has no D = 0; the merged LSE of such rows would be written
     * with no O beside it, so say so instead. */
    if (os[2] == 0)
        return INVALID("o_a: head dim (shape[2]) is 0; merge_states needs at least 1");
    int64_t ls[] = {os[1], os[0]};
    XATTN_TRY(xattn_check_tensor_strided(ctx, lse_a, "lse_a", XATTN_F32, 2, ls, &s[1]));
    XATTN_TRY(xattn_check_tensor(ctx, o_b, "o_b", dt, 3, os, &s[2]));
    XATTN_TRY(xattn_check_tensor_strided(ctx, lse_b, "lse_b", XATTN_F32, 2, ls, &s[3]));
    XATTN_TRY(xattn_check_tensor(ctx, o, "o", dt, 3, os, &s[4]));
    XATTN_TRY(xattn_check_tensor_strided(ctx, lse, "lse", XATTN_F32, 2, ls, &s[5]));
    /* In place (output == an input, element for element) is fine; any
     * other overlap of an output with an input is not. */
    for (int out = 4; out < 6; out++)
        for (int in = 0; in < 4; in++)
            if (xattn_spans_overlap(&s[out], &s[in]) && !same_view(ts[out], ts[in]))
                return INVALID("%s: overlaps %s without being the same tensor", names[out],
                               names[in]);
    if (xattn_spans_overlap(&s[4], &s[5])) return INVALID("o: overlaps lse");
    if (os[0] == 0 || os[1] == 0 || os[2] == 0) return XATTN_OK;

    xattn_merge_launch l = {
        .dtype = dt, .n = os[0], .heads = os[1], .dim = os[2],
        .o_a = xattn_ref_of(o_a), .o_b = xattn_ref_of(o_b), .o = xattn_ref_of(o),
        .lse_a = xattn_ref_of(lse_a), .lse_b = xattn_ref_of(lse_b), .lse = xattn_ref_of(lse),
        .oa_st = xattn_stride(o_a, 0), .oa_sh = xattn_stride(o_a, 1),
        .ob_st = xattn_stride(o_b, 0), .ob_sh = xattn_stride(o_b, 1),
        .o_st = xattn_stride(o, 0), .o_sh = xattn_stride(o, 1),
        .la_sh = xattn_stride(lse_a, 0), .la_st = xattn_stride(lse_a, 1),
        .lb_sh = xattn_stride(lse_b, 0), .lb_st = xattn_stride(lse_b, 1),
        .l_sh = xattn_stride(lse, 0), .l_st = xattn_stride(lse, 1),
    };
    return ctx->vt->merge_states(ctx->dev, &l);
}
