/* MoE cases: route, dispatch, experts and combine each on their own, and
 * the fused forward, through the public API on fresh inputs from the case's
 * seed, with outputs poisoned, against the float64 reference (ref_moe.h).
 *
 * What "correct" means per call (docs/testing.md):
 *   route     ids exact, except where reference scores tie within
 *             ROUTE_TIE_TOL (then any choice and order those scores allow,
 *             and exactly equal scores go to the lower index); weights NMSE
 *             ≤ 1e-10 against the reference weights of the ids returned.
 *   dispatch  expert_offsets, row_token, token_row and the permuted rows
 *             (zero padding included) bit-exact; rows past offsets[E] of
 *             x_perm are not looked at. With the weights on the input a row
 *             is the reference's exact w·x rounded to f32 and then to the
 *             dtype, as the contract forms it, so bit-exact too.
 *   experts   y rows below offsets[E] within the NMSE bound of the dtype,
 *             from the x_perm the reference dispatch makes.
 *   combine   out within the NMSE bound, from the y and weights uploaded
 *             (NaN in the rows of y no token_row points at).
 *   forward   out within the NMSE bound of the float64 chain route →
 *             dispatch → experts → combine (x_perm rounded as dispatch's).
 * Where the reference has a NaN (non-finite cases) the backend must have
 * one in the same place; the other values are compared as above.
 *
 * SWIGLU_CLAMPED has kinks at g = limit and u = ±limit, but no jumps: the
 * clamps are continuous with slope at most 1, so a rounding difference in
 * g or u near a kink moves h by no more than elsewhere, and no near-kink
 * handling is needed (unlike the route's near ties). Its cases draw x with
 * CLAMPED_X_STD so that a share of g and u lands past the limit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ref_moe.h"

/* Reference scores closer than this (relative to max(1, |score|)) are a tie
 * a backend may break either way (docs/testing.md). */
#define ROUTE_TIE_TOL 1e-6

/* Index outputs start as this value: neither an index nor −1, so an entry
 * left unwritten (a row_token or token_row that should be −1) shows. */
#define UNWRITTEN_INDEX INT32_MIN

/* Strided cases: elements between rows (and between experts of W1/W2),
 * elements before the first one, and permuted rows beyond what T needs. */
enum { GAP_ROW = 3, GAP_EXPERT = 5, LEAD = 3, SPARE_ROWS = 5, SPARE_TOKENS = 5 };

/* Fused forward inputs: draws of one token's logits before giving up on
 * finding one whose route has no near tie. */
enum { MAX_REDRAWS = 100 };

/* Standard deviations of the random inputs: x, and x under SWIGLU_CLAMPED
 * (gate and up columns then have about this deviation too, so with
 * GPT-OSS's limit 7 some 8% of the up and 4% of the gate values are
 * clamped); the expert biases. */
#define X_STD 1.0
#define CLAMPED_X_STD 4.0
#define EXPERT_BIAS_STD 0.5

enum {
    ARG_LOGITS, ARG_BIAS, ARG_IDS, ARG_WEIGHTS, ARG_X, ARG_OFFSETS, ARG_X_PERM,
    ARG_ROW_TOKEN, ARG_TOKEN_ROW, ARG_W1, ARG_W2, ARG_Y, ARG_OUT, ARG_B1, ARG_B2, NUM_ARGS
};

static const char *const arg_names[NUM_ARGS] = {
    "logits", "bias", "topk_ids", "topk_weights", "x", "expert_offsets", "x_perm",
    "row_token", "token_row", "w1", "w2", "y", "out", "b1", "b2",
};

/* One tensor of the call: its buffer and view, and its role. */
typedef struct operand {
    hx_buf buf;
    hx_tensor t;
    int used, written;
} operand;

/* Everything one case holds, logical and contiguous. Inputs hold the
 * rounded values the backend sees; ids, the maps, x_perm, y, weights and out
 * also carry the reference's intermediates and results (out starts as the
 * values accumulated into). */
typedef struct moe_run {
    const hx_moe_case *m;
    xattn_ref_moe ref;
    int64_t T, R;                  /* tokens; rows of x_perm, row_token, y */
    operand arg[NUM_ARGS];
    hx_buf ws;
    double *logits, *bias, *x, *w1, *w2, *weights, *out, *x_perm, *y, *b1, *b2;
    int32_t *ids, *offsets, *row_token, *token_row;
} moe_run;

/* ---- tensors ------------------------------------------------------------------ */

static int64_t numel(const hx_tensor *t)
{
    int64_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) n *= t->shape[d];
    return n;
}

/* Element e, counted row-major over the shape, of t's host image. */
static void *element(const hx_tensor *t, int64_t e)
{
    int64_t idx[XATTN_MAX_RANK];
    for (int32_t d = t->rank - 1; d >= 0; d--) {
        idx[d] = e % t->shape[d];
        e /= t->shape[d];
    }
    return hx_tensor_at(t, idx);
}

static void put(const hx_tensor *t, const double *v)
{
    for (int64_t e = 0; e < numel(t); e++) hx_store(element(t, e), t->dtype, v[e]);
}

static void put_index(const hx_tensor *t, const int32_t *v)
{
    for (int64_t e = 0; e < numel(t); e++) hx_store(element(t, e), XATTN_I32, v[e]);
}

static void get(const hx_tensor *t, double *v)
{
    for (int64_t e = 0; e < numel(t); e++) v[e] = hx_load(element(t, e), t->dtype);
}

static void get_index(const hx_tensor *t, int32_t *v)
{
    for (int64_t e = 0; e < numel(t); e++) v[e] = (int32_t)hx_load(element(t, e), XATTN_I32);
}

/* Lay operand i out: row-major, or with gaps after every row (and expert)
 * and a lead-in when strided. Returns the bytes its buffer needs. */
static size_t place(moe_run *run, int i, xattn_dtype dt, int32_t rank, const int64_t *shape)
{
    const int strided = run->m->strided;
    int64_t stride[XATTN_MAX_RANK];
    stride[rank - 1] = 1;
    for (int32_t d = rank - 2; d >= 0; d--) {
        int64_t gap = strided ? (d == rank - 2 ? GAP_ROW : GAP_EXPERT) : 0;
        stride[d] = stride[d + 1] * shape[d + 1] + gap;
    }
    const size_t offset = strided ? LEAD * hx_dtype_size(dt) : 0;
    run->arg[i].used = 1;
    return hx_tensor_init(&run->arg[i].t, &run->arg[i].buf, offset, dt, rank, shape, stride);
}

/* Which operands the call reads and writes, and their shapes. */
static void place_all(moe_run *run, size_t *bytes)
{
    const xattn_moe_desc *d = &run->m->desc;
    const int64_t T = run->T, R = run->R, E = d->num_experts, k = d->top_k, H = d->hidden;
    const int64_t I = d->inter;
    int in[NUM_ARGS] = {0}, out[NUM_ARGS] = {0};
    switch (run->m->op) {
    case HX_MOE_ROUTE:
        in[ARG_LOGITS] = 1;
        out[ARG_IDS] = out[ARG_WEIGHTS] = 1;
        break;
    case HX_MOE_DISPATCH:
        in[ARG_IDS] = in[ARG_X] = 1;
        in[ARG_WEIGHTS] = (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0;
        out[ARG_OFFSETS] = out[ARG_X_PERM] = out[ARG_ROW_TOKEN] = out[ARG_TOKEN_ROW] = 1;
        break;
    case HX_MOE_EXPERTS:
        in[ARG_X_PERM] = in[ARG_OFFSETS] = in[ARG_W1] = in[ARG_W2] = 1;
        out[ARG_Y] = 1;
        break;
    case HX_MOE_COMBINE:
        in[ARG_Y] = in[ARG_TOKEN_ROW] = 1;
        in[ARG_WEIGHTS] = !(d->flags & XATTN_MOE_WEIGHTS_ON_INPUT);
        out[ARG_OUT] = 1;
        break;
    case HX_MOE_FORWARD:
        in[ARG_LOGITS] = in[ARG_X] = in[ARG_W1] = in[ARG_W2] = 1;
        out[ARG_OUT] = 1;
        break;
    }
    if (in[ARG_LOGITS] && (d->flags & XATTN_MOE_BIAS)) in[ARG_BIAS] = 1;
    if (in[ARG_W1] && (d->flags & XATTN_MOE_EXPERT_B1)) in[ARG_B1] = 1;
    if (in[ARG_W2] && (d->flags & XATTN_MOE_EXPERT_B2)) in[ARG_B2] = 1;

    const int64_t s_logits[2] = {T, E}, s_bias[1] = {E}, s_tk[2] = {T, k}, s_th[2] = {T, H};
    const int64_t s_off[1] = {E + 1}, s_rh[2] = {R, H}, s_r[1] = {R};
    const int64_t s_w1[3] = {E, 2 * I, H}, s_w2[3] = {E, H, I}, s_b1[2] = {E, 2 * I};
    const int64_t s_b2[2] = {E, H};
    for (int i = 0; i < NUM_ARGS; i++) {
        if (!in[i] && !out[i]) continue;
        switch (i) {
        case ARG_LOGITS: bytes[i] = place(run, i, d->logits_dtype, 2, s_logits); break;
        case ARG_BIAS: bytes[i] = place(run, i, XATTN_F32, 1, s_bias); break;
        case ARG_IDS: bytes[i] = place(run, i, XATTN_I32, 2, s_tk); break;
        case ARG_WEIGHTS: bytes[i] = place(run, i, XATTN_F32, 2, s_tk); break;
        case ARG_X: bytes[i] = place(run, i, d->dtype, 2, s_th); break;
        case ARG_OFFSETS: bytes[i] = place(run, i, XATTN_I32, 1, s_off); break;
        case ARG_X_PERM: bytes[i] = place(run, i, d->dtype, 2, s_rh); break;
        case ARG_ROW_TOKEN: bytes[i] = place(run, i, XATTN_I32, 1, s_r); break;
        case ARG_TOKEN_ROW: bytes[i] = place(run, i, XATTN_I32, 2, s_tk); break;
        case ARG_W1: bytes[i] = place(run, i, d->weight_dtype, 3, s_w1); break;
        case ARG_W2: bytes[i] = place(run, i, d->weight_dtype, 3, s_w2); break;
        case ARG_Y: bytes[i] = place(run, i, d->dtype, 2, s_rh); break;
        case ARG_B1: bytes[i] = place(run, i, d->bias_dtype, 2, s_b1); break;
        case ARG_B2: bytes[i] = place(run, i, d->bias_dtype, 2, s_b2); break;
        default: bytes[i] = place(run, i, d->dtype, 2, s_th); break; /* ARG_OUT */
        }
        run->arg[i].written = out[i];
    }
}

/* ---- inputs --------------------------------------------------------------------- */

static double *doubles(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(double)); }
static int32_t *indices(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t)); }

static void fill_normal(hx_rng *rng, xattn_dtype dt, double std, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = hx_round(dt, std * hx_rng_normal(rng));
}

/* Token t's logits. With ties, tokens cycle through four patterns: all
 * equal; values on a coarse grid (ties everywhere); the k-th and (k+1)-th
 * largest made equal (a tie at the selection boundary); a few duplicated
 * values. best is scratch for k + 1 indices. */
/* Non-finite logits of token t (HX_NONFINITE_LOGITS), by t: every logit
 * NaN; one NaN; a NaN at the largest logit (which would win); one +inf;
 * one −inf; or none. */
static void poison_logits(const hx_moe_case *m, int64_t t, double *row)
{
    const int32_t E = m->desc.num_experts;
    enum { PATTERNS = 6 };
    switch (t % PATTERNS) {
    case 0:
        for (int32_t e = 0; e < E; e++) row[e] = NAN;
        break;
    case 1: row[(t * 7) % E] = NAN; break;
    case 2: {
        int32_t top = 0;
        for (int32_t e = 1; e < E; e++)
            if (row[e] > row[top]) top = e;
        row[top] = NAN;
        break;
    }
    case 3: row[(t * 3) % E] = INFINITY; break;
    case 4: row[(t * 5) % E] = -INFINITY; break;
    default: break;
    }
}

static void draw_logits(hx_rng *rng, const hx_moe_case *m, int64_t t, double *row,
                        int32_t *best)
{
    const xattn_dtype dt = m->desc.logits_dtype;
    const int32_t E = m->desc.num_experts, k = m->desc.top_k;
    const double std = 2.0;
    if (!m->ties) {
        fill_normal(rng, dt, std, row, E);
        if (m->nonfinite == HX_NONFINITE_LOGITS) poison_logits(m, t, row);
        return;
    }
    switch (t % 4) {
    case 0: {
        const double v = hx_round(dt, std * hx_rng_normal(rng));
        for (int32_t e = 0; e < E; e++) row[e] = v;
        break;
    }
    case 1:
        for (int32_t e = 0; e < E; e++)
            row[e] = hx_round(dt, round(2.0 * hx_rng_normal(rng)) / 2.0);
        break;
    case 2: {
        fill_normal(rng, dt, std, row, E);
        if (k >= E) break;
        xattn_ref_moe_top(row, NULL, E, k + 1, best);
        row[best[k]] = row[best[k - 1]];
        break;
    }
    default:
        fill_normal(rng, dt, std, row, E);
        for (int32_t n = 0; n < 1 + E / 8; n++) {
            /* One draw after the other: the seed must mean the same inputs
             * whatever order a compiler evaluates operands in. */
            const int64_t to = hx_rng_below(rng, E);
            const int64_t from = hx_rng_below(rng, E);
            row[to] = row[from];
        }
        break;
    }
    if (m->nonfinite == HX_NONFINITE_LOGITS) poison_logits(m, t, row);
}

static void draw_bias(hx_rng *rng, const hx_moe_case *m, double *bias)
{
    for (int32_t e = 0; e < m->desc.num_experts; e++)
        bias[e] = m->ties ? 0.25 * (e % 3) : hx_round(XATTN_F32, 0.1 * hx_rng_normal(rng));
    /* One NaN entry makes every token's weights NaN. */
    if (m->nonfinite == HX_NONFINITE_BIAS) bias[m->desc.num_experts / 3] = NAN;
}

/* Ids for dispatch, experts and combine: k distinct experts per token,
 * skewed towards low indices so that segments range from empty to large;
 * some dropped (−1) when the case says so. */
static void draw_ids(hx_rng *rng, const hx_moe_case *m, int64_t T, int32_t *ids)
{
    const int32_t E = m->desc.num_experts, k = m->desc.top_k;
    for (int64_t t = 0; t < T; t++)
        for (int32_t j = 0; j < k; j++) {
            int32_t e, fresh;
            do {
                const double u = hx_rng_uniform(rng);
                e = (int32_t)(E * u * u);
                fresh = 1;
                for (int32_t i = 0; i < j; i++) fresh &= ids[t * k + i] != e;
            } while (!fresh);
            ids[t * k + j] = e;
        }
    if (m->drop_every <= 0) return;
    for (int64_t i = m->drop_every - 1; i < T * k; i += m->drop_every) ids[i] = -1;
    if (T > 1)
        for (int32_t j = 0; j < k; j++) ids[k + j] = -1;
}

/* ---- route checks ------------------------------------------------------------- */

/* Where want is NaN, got must be NaN too: returns the first index where it
 * is not, or −1, and sets both to 0 at the matched NaNs so that hx_compare
 * judges the other values (and fails any NaN left in got). */
static int64_t match_nans(double *got, double *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (!isnan(want[i])) continue;
        if (!isnan(got[i])) return i;
        got[i] = want[i] = 0.0;
    }
    return -1;
}

static int near_tie(double a, double b)
{
    /* An infinite score (a NaN logit counts as −inf) ties only its equal. */
    if (isinf(a) || isinf(b)) return a == b;
    double scale = fmax(1.0, fmax(fabs(a), fabs(b)));
    return fabs(a - b) <= ROUTE_TIE_TOL * scale;
}

/* Whether i may rank before j by scores s: higher, or within the tie
 * tolerance; exactly equal scores rank the lower index first. */
static int may_precede(const double *s, int32_t i, int32_t j)
{
    if (s[i] == s[j]) return i < j;
    return s[i] > s[j] || near_tie(s[i], s[j]);
}

static int contains(const int32_t *a, int32_t n, int32_t v)
{
    for (int32_t i = 0; i < n; i++)
        if (a[i] == v) return 1;
    return 0;
}

/* One token's route as the checks see it. */
typedef struct token_route {
    const xattn_ref_moe *p;
    const double *score;       /* selection scores [E] */
    const double *group_score; /* [n_group], grouped modes */
    const int32_t *ids;        /* a choice to judge [k] */
    unsigned char *eligible;   /* [E] scratch */
    unsigned char *kept;       /* [n_group] scratch */
} token_route;

/* ids are k distinct experts among the eligible ones (NULL: all), ordered
 * by score, and none left out ranks before one chosen. */
static int pick_is_valid(const token_route *r, const unsigned char *eligible)
{
    const int32_t E = r->p->experts, k = r->p->top_k;
    for (int32_t j = 0; j < k; j++) {
        const int32_t c = r->ids[j];
        if (c < 0 || c >= E || (eligible && !eligible[c]) || contains(r->ids, j, c)) return 0;
        for (int32_t i = 0; i < j; i++)
            if (!may_precede(r->score, r->ids[i], c)) return 0;
    }
    for (int32_t n = 0; n < E; n++) {
        if ((eligible && !eligible[n]) || contains(r->ids, k, n)) continue;
        for (int32_t j = 0; j < k; j++)
            if (!may_precede(r->score, r->ids[j], n)) return 0;
    }
    return 1;
}

/* The kept groups in r->kept rank before every dropped one, and ids are a
 * valid pick among their experts. */
static int kept_groups_work(const token_route *r)
{
    const int32_t G = r->p->n_group, size = r->p->experts / G;
    for (int32_t g = 0; g < G; g++)
        for (int32_t h = 0; h < G; h++)
            if (r->kept[g] && !r->kept[h] && !may_precede(r->group_score, g, h)) return 0;
    for (int32_t e = 0; e < r->p->experts; e++) r->eligible[e] = r->kept[e / size];
    return pick_is_valid(r, r->eligible);
}

/* Add `need` more groups, from group `from` on, to r->kept until a set
 * works. The groups of the chosen experts are already in. */
static int search_groups(const token_route *r, int32_t need, int32_t from)
{
    if (need == 0) return kept_groups_work(r);
    for (int32_t g = from; g < r->p->n_group; g++) {
        if (r->kept[g]) continue;
        r->kept[g] = 1;
        int ok = search_groups(r, need - 1, g + 1);
        r->kept[g] = 0;
        if (ok) return 1;
    }
    return 0;
}

/* Whether a backend's ids are a choice the reference's scores allow: some
 * set of kept groups (grouped modes) that ranks first within the tie
 * tolerance, and within it a pick that does. */
static int ids_acceptable(const token_route *r)
{
    if (r->p->route != XATTN_MOE_ROUTE_SIGMOID_GROUPED) return pick_is_valid(r, NULL);
    const int32_t G = r->p->n_group, size = r->p->experts / G;
    memset(r->kept, 0, (size_t)G);
    int32_t touched = 0;
    for (int32_t j = 0; j < r->p->top_k; j++) {
        const int32_t c = r->ids[j];
        if (c < 0 || c >= r->p->experts) return 0;
        if (!r->kept[c / size]) touched++;
        r->kept[c / size] = 1;
    }
    if (touched > r->p->topk_group) return 0;
    return search_groups(r, r->p->topk_group - touched, 0);
}

/* Whether the reference's own route of a token (ids, kept groups) has no
 * scores at its boundary that tie within the tolerance without being
 * equal: then every conforming backend makes the same choice. */
static int route_is_clear(const token_route *r, const int32_t *kept_groups)
{
    const xattn_ref_moe *p = r->p;
    const int grouped = p->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED;
    if (grouped) {
        const int32_t G = p->n_group, size = p->experts / G;
        memset(r->kept, 0, (size_t)G);
        for (int32_t g = 0; g < p->topk_group; g++) r->kept[kept_groups[g]] = 1;
        for (int32_t g = 0; g < G; g++)
            for (int32_t h = 0; h < G; h++)
                if (r->kept[g] && !r->kept[h] && r->group_score[g] != r->group_score[h] &&
                    near_tie(r->group_score[g], r->group_score[h]))
                    return 0;
        for (int32_t e = 0; e < p->experts; e++) r->eligible[e] = r->kept[e / size];
    }
    for (int32_t n = 0; n < p->experts; n++) {
        if ((grouped && !r->eligible[n]) || contains(r->ids, p->top_k, n)) continue;
        for (int32_t j = 0; j < p->top_k; j++) {
            const double a = r->score[r->ids[j]], b = r->score[n];
            if (a != b && near_tie(a, b)) return 0;
        }
    }
    return 1;
}

/* Scratch for token_route. */
typedef struct route_scratch {
    double *score, *group_score;
    int32_t *ids, *kept_groups;
    unsigned char *eligible, *kept;
} route_scratch;

static void scratch_free(route_scratch *s)
{
    free(s->score);
    free(s->group_score);
    free(s->ids);
    free(s->kept_groups);
    free(s->eligible);
    free(s->kept);
    memset(s, 0, sizeof *s);
}

static int scratch_init(route_scratch *s, const xattn_ref_moe *p)
{
    const int32_t G = p->n_group > 0 ? p->n_group : 1;
    s->score = doubles(p->experts);
    s->group_score = doubles(G);
    s->ids = indices(p->top_k);
    s->kept_groups = indices(G);
    s->eligible = malloc((size_t)p->experts);
    s->kept = malloc((size_t)G);
    if (s->score && s->group_score && s->ids && s->kept_groups && s->eligible && s->kept)
        return 0;
    scratch_free(s);
    return -1;
}

/* Scores of one token's logits, and the reference's route of it. */
static token_route route_token(const xattn_ref_moe *p, route_scratch *s, const double *logits)
{
    token_route r = {p, s->score, s->group_score, s->ids, s->eligible, s->kept};
    xattn_ref_moe_select_scores(p, logits, s->score);
    if (p->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED) {
        xattn_ref_moe_group_scores(p, s->score, s->group_score);
        xattn_ref_moe_top(s->group_score, NULL, p->n_group, p->topk_group, s->kept_groups);
        const int32_t size = p->experts / p->n_group;
        memset(s->eligible, 0, (size_t)p->experts);
        for (int32_t g = 0; g < p->topk_group; g++)
            memset(s->eligible + (int64_t)s->kept_groups[g] * size, 1, (size_t)size);
    }
    xattn_ref_moe_top(s->score, p->route == XATTN_MOE_ROUTE_SIGMOID_GROUPED ? s->eligible : NULL,
                      p->experts, p->top_k, s->ids);
    return r;
}

static int fmt_ids(char *buf, size_t size, const int32_t *ids, int32_t k, const double *score,
                   int32_t E)
{
    int n = 0;
    for (int32_t j = 0; j < k && n >= 0 && (size_t)n < size; j++) {
        const int32_t e = ids[j];
        if (e >= 0 && e < E)
            n += snprintf(buf + n, size - (size_t)n, "%s%d (%.9g)", j ? ", " : "", e, score[e]);
        else
            n += snprintf(buf + n, size - (size_t)n, "%s%d (out of range)", j ? ", " : "", e);
    }
    return n;
}

static void check_route(moe_run *run, hx_result *res)
{
    const xattn_ref_moe *p = &run->ref;
    const int64_t T = run->T;
    const int32_t k = p->top_k, E = p->experts;
    int32_t *got_ids = indices(T * k);
    double *got_w = doubles(T * k), *want_w = doubles(T * k);
    route_scratch s;
    if (!got_ids || !got_w || !want_w || scratch_init(&s, p)) {
        hx_result_fail(res, "harness: out of host memory");
        goto done;
    }
    get_index(&run->arg[ARG_IDS].t, got_ids);
    get(&run->arg[ARG_WEIGHTS].t, got_w);
    for (int64_t t = 0; t < T; t++) {
        token_route r = route_token(p, &s, run->logits + t * E);
        const int32_t *got = got_ids + t * k;
        if (memcmp(got, r.ids, (size_t)k * sizeof *got)) {
            token_route judged = r;
            judged.ids = got;
            if (!ids_acceptable(&judged)) {
                char g[512], w[512];
                fmt_ids(g, sizeof g, got, k, r.score, E);
                fmt_ids(w, sizeof w, r.ids, k, r.score, E);
                hx_result_fail(res,
                               "topk_ids[t %lld] = {%s}, but the reference picks {%s} and "
                               "the scores do not tie within %.0e (expert (score))",
                               (long long)t, g, w, ROUTE_TIE_TOL);
                goto done;
            }
        }
        /* Weights of the experts the backend picked, whichever valid choice. */
        xattn_ref_moe_weights(p, run->logits + t * E, got, want_w + t * k);
    }
    const int64_t missing = match_nans(got_w, want_w, T * k);
    if (missing >= 0) {
        hx_result_fail(res, "topk_weights[t %lld, slot %lld] = %.9g, want NaN (the token's "
                            "routing inputs hold a NaN)",
                       (long long)(missing / k), (long long)(missing % k), got_w[missing]);
        goto done;
    }
    hx_cmp c;
    hx_compare(got_w, want_w, T * k, k, XATTN_F32, &c);
    res->nmse = c.nmse;
    const double tol = hx_tol_nmse(XATTN_F32);
    if (c.first_nonfinite >= 0 || !(c.nmse <= tol)) {
        const int64_t e = c.first_nonfinite >= 0 ? c.first_nonfinite : c.worst;
        hx_result_fail(res,
                       "topk_weights %s (NMSE %.3g, limit %.0e); %s at [t %lld, slot %lld] "
                       "(expert %d): got %.9g, want %.9g",
                       c.first_nonfinite >= 0 ? "has NaN/Inf the reference lacks" : "too far",
                       c.nmse, tol, c.first_nonfinite >= 0 ? "first" : "worst",
                       (long long)(e / k), (long long)(e % k), got_ids[e], got_w[e], want_w[e]);
    } else if (!(c.worst_row_nmse <= HX_ROW_FACTOR * tol)) {
        hx_result_fail(res, "topk_weights of token %lld too far (row NMSE %.3g, limit %.0e)",
                       (long long)c.worst_row, c.worst_row_nmse, HX_ROW_FACTOR * tol);
    }
done:
    scratch_free(&s);
    free(got_ids);
    free(got_w);
    free(want_w);
}

/* ---- dispatch checks ------------------------------------------------------------ */

/* First i where got and want differ, or −1. */
static int64_t first_diff(const int32_t *got, const int32_t *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) return i;
    return -1;
}

static const char *index_value(char *buf, size_t size, int32_t v)
{
    if (v == UNWRITTEN_INDEX) snprintf(buf, size, "unwritten");
    else snprintf(buf, size, "%d", v);
    return buf;
}

/* Expert whose segment holds row r (offsets of the reference), or −1. */
static int32_t expert_of_row(const moe_run *run, int64_t r)
{
    for (int32_t e = 0; e < run->ref.experts; e++)
        if (r >= run->offsets[e] && r < run->offsets[e + 1]) return e;
    return -1;
}

static void check_dispatch(moe_run *run, hx_result *res)
{
    const int64_t T = run->T, R = run->R;
    const int32_t E = run->ref.experts, k = run->ref.top_k, H = run->ref.hidden;
    int64_t most = R > T * k ? R : T * k;
    if (most < E + 1) most = E + 1;
    int32_t *got = indices(most);
    if (!got) {
        hx_result_fail(res, "harness: out of host memory");
        return;
    }
    char a[32], b[32];
    get_index(&run->arg[ARG_OFFSETS].t, got);
    int64_t i = first_diff(got, run->offsets, E + 1);
    if (i >= 0) {
        hx_result_fail(res, "expert_offsets[%lld] = %s, want %d (alignment %d)", (long long)i,
                       index_value(a, sizeof a, got[i]), run->offsets[i], run->ref.align);
        goto done;
    }
    get_index(&run->arg[ARG_ROW_TOKEN].t, got);
    i = first_diff(got, run->row_token, R);
    if (i >= 0) {
        const int32_t e = expert_of_row(run, i);
        if (e >= 0) snprintf(b, sizeof b, "expert %d", e);
        else snprintf(b, sizeof b, "past offsets[E]");
        hx_result_fail(res, "row_token[%lld] (%s) = %s, want %d", (long long)i, b,
                       index_value(a, sizeof a, got[i]), run->row_token[i]);
        goto done;
    }
    get_index(&run->arg[ARG_TOKEN_ROW].t, got);
    i = first_diff(got, run->token_row, T * k);
    if (i >= 0) {
        hx_result_fail(res, "token_row[t %lld, slot %lld] (expert %d) = %s, want %d",
                       (long long)(i / k), (long long)(i % k), run->ids[i],
                       index_value(a, sizeof a, got[i]), run->token_row[i]);
        goto done;
    }
    /* Permuted rows and zero padding, bit for bit. */
    const hx_tensor *xp = &run->arg[ARG_X_PERM].t;
    const size_t es = hx_dtype_size(xp->dtype);
    for (int64_t r = 0; r < run->offsets[E]; r++)
        for (int64_t d = 0; d < H; d++) {
            unsigned char want[4];
            const int64_t idx[2] = {r, d};
            const unsigned char *at = hx_tensor_at(xp, idx);
            hx_store(want, xp->dtype, run->x_perm[r * H + d]);
            if (memcmp(at, want, es)) {
                const int32_t tok = run->row_token[r];
                if (tok >= 0) snprintf(b, sizeof b, "token %d", tok);
                else snprintf(b, sizeof b, "padding");
                hx_result_fail(res, "x_perm[row %lld (expert %d, %s), d %lld] = %.9g, want %.9g",
                               (long long)r, expert_of_row(run, r), b, (long long)d,
                               hx_load(at, xp->dtype), run->x_perm[r * H + d]);
                goto done;
            }
        }
done:
    free(got);
}

/* ---- float outputs -------------------------------------------------------------- */

/* Compare n values of a [rows, H] output against the reference and fail
 * res with where it is worst. */
static void check_values(const char *what, double *got, double *want, int64_t n,
                         int32_t H, xattn_dtype dt, hx_result *res)
{
    const int64_t missing = match_nans(got, want, n);
    if (missing >= 0) {
        hx_result_fail(res, "%s[%lld, %lld] = %.9g, want NaN", what, (long long)(missing / H),
                       (long long)(missing % H), got[missing]);
        return;
    }
    hx_cmp c;
    hx_compare(got, want, n, H, dt, &c);
    res->nmse = c.nmse;
    const double tol = hx_tol_nmse(dt);
    if (c.first_nonfinite >= 0 || !(c.nmse <= tol)) {
        const int64_t e = c.first_nonfinite >= 0 ? c.first_nonfinite : c.worst;
        hx_result_fail(res, "%s %s (NMSE %.3g, limit %.0e); %s at [%lld, %lld]: got %.9g, "
                            "want %.9g",
                       what, c.first_nonfinite >= 0 ? "has NaN/Inf the reference lacks" : "too far",
                       c.nmse, tol, c.first_nonfinite >= 0 ? "first" : "worst",
                       (long long)(e / H), (long long)(e % H), got[e], want[e]);
    } else if (!(c.worst_row_nmse <= HX_ROW_FACTOR * tol)) {
        hx_result_fail(res, "%s row %lld too far (row NMSE %.3g, limit %.0e, tensor NMSE %.3g)",
                       what, (long long)c.worst_row, c.worst_row_nmse, HX_ROW_FACTOR * tol,
                       c.nmse);
    }
}

/* ---- inputs per call ------------------------------------------------------------- */

/* Rows of x_perm below offsets[E] as dispatch forms them with the weights
 * on the input: the reference's exact w·x rounded to f32, then to the
 * dtype (a no-op on unscaled rows, which hold rounded x already). */
static void round_permuted_rows(moe_run *run)
{
    const xattn_dtype dt = run->m->desc.dtype;
    const int64_t n = (int64_t)run->offsets[run->ref.experts] * run->ref.hidden;
    for (int64_t i = 0; i < n; i++)
        run->x_perm[i] = hx_round(dt, hx_round(XATTN_F32, run->x_perm[i]));
}

/* Route weights as a router might give them, for dispatch (weights on the
 * input) and combine. */
static void draw_weights(hx_rng *rng, double *w, int64_t n)
{
    for (int64_t i = 0; i < n; i++) w[i] = hx_round(XATTN_F32, 0.05 + 0.95 * hx_rng_uniform(rng));
}

/* Every input the call reads, drawn from rng, and what the reference makes
 * of them. */
static int make_inputs(moe_run *run, hx_rng *rng, hx_result *res)
{
    const hx_moe_case *m = run->m;
    const xattn_moe_desc *d = &m->desc;
    const xattn_ref_moe *p = &run->ref;
    const int64_t T = run->T, R = run->R, E = d->num_experts, k = d->top_k, H = d->hidden;
    const int64_t I = d->inter;
    const hx_moe_op op = m->op;
    const int needs_logits = op == HX_MOE_ROUTE || op == HX_MOE_FORWARD;
    const int needs_x = op == HX_MOE_DISPATCH || op == HX_MOE_EXPERTS || op == HX_MOE_FORWARD;
    const int needs_w = op == HX_MOE_EXPERTS || op == HX_MOE_FORWARD;
    const int on_input = (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) != 0;
    const double x_std = d->activation == XATTN_MOE_SWIGLU_CLAMPED ? CLAMPED_X_STD : X_STD;

    run->logits = doubles(T * E);
    run->bias = doubles(E);
    run->x = doubles(T * H);
    run->w1 = doubles(needs_w ? E * 2 * I * H : 0);
    run->w2 = doubles(needs_w ? E * H * I : 0);
    run->weights = doubles(T * k);
    run->out = doubles(T * H);
    run->x_perm = doubles(R * H);
    run->y = doubles(R * H);
    run->ids = indices(T * k);
    run->offsets = indices(E + 1);
    run->row_token = indices(R);
    run->token_row = indices(T * k);
    run->b1 = doubles(needs_w ? E * 2 * I : 0);
    run->b2 = doubles(needs_w ? E * H : 0);
    if (!run->logits || !run->bias || !run->x || !run->w1 || !run->w2 || !run->weights ||
        !run->out || !run->x_perm || !run->y || !run->ids || !run->offsets || !run->row_token ||
        !run->token_row || !run->b1 || !run->b2) {
        hx_result_fail(res, "harness: out of host memory");
        return 1;
    }

    if (needs_logits) {
        if (d->flags & XATTN_MOE_BIAS) {
            draw_bias(rng, m, run->bias);
            run->ref.bias = run->bias;
        }
        route_scratch s;
        int32_t *best = indices(k + 1);
        if (!best || scratch_init(&s, p)) {
            free(best);
            hx_result_fail(res, "harness: out of host memory");
            return 1;
        }
        for (int64_t t = 0; t < T; t++) {
            double *row = run->logits + t * E;
            draw_logits(rng, m, t, row, best);
            /* The fused forward hides its route: draw again until the
             * reference's choice is the only one a backend may make. */
            int draws = 1;
            while (op == HX_MOE_FORWARD) {
                token_route r = route_token(p, &s, row);
                if (route_is_clear(&r, s.kept_groups)) break;
                if (draws++ == MAX_REDRAWS) {
                    scratch_free(&s);
                    free(best);
                    hx_result_fail(res, "harness: no logits without a near tie for token %lld "
                                        "in %d draws", (long long)t, MAX_REDRAWS);
                    return 1;
                }
                draw_logits(rng, m, t, row, best);
            }
        }
        scratch_free(&s);
        free(best);
    }
    if (needs_x) fill_normal(rng, d->dtype, x_std, run->x, T * H);
    if (needs_w) {
        fill_normal(rng, d->weight_dtype, 1.0 / sqrt((double)H), run->w1, E * 2 * I * H);
        fill_normal(rng, d->weight_dtype, 1.0 / sqrt((double)I), run->w2, E * H * I);
        if (d->flags & XATTN_MOE_EXPERT_B1) {
            fill_normal(rng, d->bias_dtype, EXPERT_BIAS_STD, run->b1, E * 2 * I);
            run->ref.b1 = run->b1;
        }
        if (d->flags & XATTN_MOE_EXPERT_B2) {
            fill_normal(rng, d->bias_dtype, EXPERT_BIAS_STD, run->b2, E * H);
            run->ref.b2 = run->b2;
        }
    }

    switch (op) {
    case HX_MOE_ROUTE:
        break;
    case HX_MOE_FORWARD:
        if (xattn_ref_moe_route(p, T, run->logits, run->ids, run->weights)) {
            hx_result_fail(res, "harness: out of host memory");
            return 1;
        }
        xattn_ref_moe_dispatch(p, T, run->ids, on_input ? run->weights : NULL, run->x, R,
                               run->offsets, run->x_perm, run->row_token, run->token_row);
        if (on_input) round_permuted_rows(run);
        break;
    default: {
        /* Ids as a router might produce them, then the reference dispatch:
         * the maps, and x_perm with zero padding rows as experts reads it;
         * NaN in rows past offsets[E], which no call may use. */
        draw_ids(rng, m, T, run->ids);
        const int scaled = op == HX_MOE_DISPATCH && on_input;
        if (scaled) draw_weights(rng, run->weights, T * k);
        for (int64_t i = 0; i < R * H; i++) run->x_perm[i] = NAN;
        xattn_ref_moe_dispatch(p, T, run->ids, scaled ? run->weights : NULL,
                               op == HX_MOE_COMBINE ? NULL : run->x, R, run->offsets,
                               op == HX_MOE_COMBINE ? NULL : run->x_perm, run->row_token,
                               run->token_row);
        if (scaled) round_permuted_rows(run);
        if (op == HX_MOE_EXPERTS && m->nonfinite == HX_NONFINITE_X)
            for (int64_t r = 0; r < run->offsets[E]; r++)
                if (run->row_token[r] >= 0 && r % 5 == 2) run->x_perm[r * H + r % H] = NAN;
        break;
    }
    }

    if (op == HX_MOE_COMBINE) {
        /* y where token_row points, NaN in every other row. */
        for (int64_t i = 0; i < R * H; i++) run->y[i] = NAN;
        for (int64_t i = 0; i < T * k; i++) {
            const int32_t r = run->token_row[i];
            if (r >= 0) fill_normal(rng, d->dtype, 1.0, run->y + (int64_t)r * H, H);
        }
        if (!on_input) draw_weights(rng, run->weights, T * k);
    }
    if ((op == HX_MOE_COMBINE || op == HX_MOE_FORWARD) && m->accumulate)
        fill_normal(rng, d->dtype, 1.0, run->out, T * H);
    return 0;
}

/* Host images: inputs hold their values, outputs stay poisoned; index
 * outputs hold UNWRITTEN_INDEX, except with T = 0, where every output byte
 * must keep the poison (check_memory); out holds its old values when
 * accumulating. */
static void write_images(moe_run *run)
{
    for (int i = 0; i < NUM_ARGS; i++) {
        operand *o = &run->arg[i];
        if (!o->used) continue;
        const hx_tensor *t = &o->t;
        if (o->written) {
            if (t->dtype == XATTN_I32 && run->T > 0)
                for (int64_t e = 0; e < numel(t); e++)
                    hx_store(element(t, e), XATTN_I32, UNWRITTEN_INDEX);
            if (i == ARG_OUT && run->m->accumulate) put(t, run->out);
            continue;
        }
        switch (i) {
        case ARG_LOGITS: put(t, run->logits); break;
        case ARG_BIAS: put(t, run->bias); break;
        case ARG_IDS: put_index(t, run->ids); break;
        case ARG_WEIGHTS: put(t, run->weights); break;
        case ARG_X: put(t, run->x); break;
        case ARG_OFFSETS: put_index(t, run->offsets); break;
        case ARG_X_PERM: put(t, run->x_perm); break;
        case ARG_TOKEN_ROW: put_index(t, run->token_row); break;
        case ARG_W1: put(t, run->w1); break;
        case ARG_W2: put(t, run->w2); break;
        case ARG_Y: put(t, run->y); break;
        case ARG_B1: put(t, run->b1); break;
        case ARG_B2: put(t, run->b2); break;
        default: break;
        }
    }
}

/* ---- one case ------------------------------------------------------------------ */

static xattn_status call(const xattn_moe_plan *plan, const moe_run *run)
{
    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    xattn_tensor *field[NUM_ARGS] = {
        &a.logits, &a.bias, &a.topk_ids, &a.topk_weights, &a.x, &a.expert_offsets,
        &a.x_perm, &a.row_token, &a.token_row, &a.w1, &a.w2, &a.y, &a.out, &a.b1, &a.b2,
    };
    for (int i = 0; i < NUM_ARGS; i++)
        if (run->arg[i].used) *field[i] = hx_tensor_api(&run->arg[i].t);
    a.accumulate = run->m->accumulate;
    if (run->ws.dev) {
        a.workspace = run->ws.dev;
        a.workspace_offset = run->m->strided ? XATTN_WORKSPACE_ALIGN : 0;
    }
    switch (run->m->op) {
    case HX_MOE_ROUTE: return xattn_moe_route(plan, &a);
    case HX_MOE_DISPATCH: return xattn_moe_dispatch(plan, &a);
    case HX_MOE_EXPERTS: return xattn_moe_experts(plan, &a);
    case HX_MOE_COMBINE: return xattn_moe_combine(plan, &a);
    default: return xattn_moe_forward(plan, &a);
    }
}

/* The float64 result of experts, combine or forward, and the comparison. */
static void check_result(moe_run *run, hx_result *res)
{
    const xattn_ref_moe *p = &run->ref;
    const xattn_dtype dt = run->m->desc.dtype;
    const int64_t T = run->T, H = p->hidden, E = p->experts;
    const hx_moe_op op = run->m->op;
    const int64_t n = op == HX_MOE_EXPERTS ? run->offsets[E] * H : T * H;
    double *got = doubles(op == HX_MOE_EXPERTS ? run->R * H : n);
    if (!got) {
        hx_result_fail(res, "harness: out of host memory");
        return;
    }
    double t0 = hx_now();
    if (op != HX_MOE_COMBINE &&
        xattn_ref_moe_experts(p, run->offsets, run->x_perm, run->w1, run->w2, run->y)) {
        hx_result_fail(res, "harness: out of host memory");
        free(got);
        return;
    }
    if (op != HX_MOE_EXPERTS)
        xattn_ref_moe_combine(p, T, run->token_row,
                              (run->m->desc.flags & XATTN_MOE_WEIGHTS_ON_INPUT) ? NULL
                                                                               : run->weights,
                              run->y, run->m->accumulate, run->out);
    res->ref_seconds += hx_now() - t0;

    if (op == HX_MOE_EXPERTS) {
        /* Rows past offsets[E] are not the call's: compare the segments. */
        get(&run->arg[ARG_Y].t, got);
        check_values("y", got, run->y, n, p->hidden, dt, res);
    } else {
        get(&run->arg[ARG_OUT].t, got);
        check_values("out", got, run->out, n, p->hidden, dt, res);
    }
    free(got);
}

/* Bytes of output buffers outside their tensors must keep the poison; with
 * T = 0 the whole output must (the call is a no-op). Inputs must come back
 * as they went. */
static void check_memory(moe_run *run, hx_result *res)
{
    for (int i = 0; i < NUM_ARGS && res->status != HX_FAIL; i++) {
        operand *o = &run->arg[i];
        if (!o->used) continue;
        if (!o->written) {
            hx_buf_check_unchanged(&o->buf, arg_names[i], res);
            continue;
        }
        unsigned char *mask = calloc(o->buf.bytes, 1);
        if (!mask) {
            hx_result_fail(res, "harness: out of host memory");
            return;
        }
        if (run->T > 0) hx_tensor_mark(&o->t, mask);
        int64_t stray = hx_buf_first_stray(&o->buf, mask);
        if (stray >= 0 && run->T == 0)
            hx_result_fail(res, "%s: written at byte %lld, but T = 0 is a no-op", arg_names[i],
                           (long long)stray);
        else if (stray >= 0)
            hx_result_fail(res, "%s: byte %lld of its buffer, outside the tensor, was written",
                           arg_names[i], (long long)stray);
        free(mask);
    }
}

static void free_run(moe_run *run)
{
    for (int i = 0; i < NUM_ARGS; i++) hx_buf_free(&run->arg[i].buf);
    hx_buf_free(&run->ws);
    free(run->logits);
    free(run->bias);
    free(run->x);
    free(run->w1);
    free(run->w2);
    free(run->weights);
    free(run->out);
    free(run->x_perm);
    free(run->y);
    free(run->ids);
    free(run->offsets);
    free(run->row_token);
    free(run->token_row);
    free(run->b1);
    free(run->b2);
}

/* The reference's view of a plan's layer. */
static xattn_ref_moe ref_layer(const xattn_moe_desc *d, int32_t align)
{
    xattn_ref_moe p;
    memset(&p, 0, sizeof p);
    p.hidden = d->hidden;
    p.experts = d->num_experts;
    p.top_k = d->top_k;
    p.inter = d->inter;
    p.route = d->route;
    p.renormalize = (d->flags & XATTN_MOE_RENORMALIZE) != 0;
    p.n_group = d->n_group;
    p.topk_group = d->topk_group;
    p.scale = d->routed_scaling_factor != 0.0f ? (double)d->routed_scaling_factor : 1.0;
    p.align = align;
    p.activation = d->activation;
    if (d->activation == XATTN_MOE_SWIGLU_CLAMPED) {
        p.alpha = d->swiglu_alpha != 0.0f ? d->swiglu_alpha : XATTN_MOE_SWIGLU_ALPHA;
        p.limit = d->swiglu_limit != 0.0f ? d->swiglu_limit : XATTN_MOE_SWIGLU_LIMIT;
    }
    p.w1_interleaved = (d->flags & XATTN_MOE_W1_INTERLEAVED) != 0;
    return p;
}

/* Plan facts the reference depends on, as the header states them. */
static int check_plan(const xattn_moe_plan *plan, const xattn_moe_desc *d, moe_run *run,
                      hx_result *res)
{
    const int32_t align = xattn_moe_alignment(plan);
    if (align < 1 || align > XATTN_MOE_MAX_ALIGN || (d->align && align != d->align)) {
        hx_result_fail(res, "xattn_moe_alignment: %d, but desc.align is %d", align, d->align);
        return 1;
    }
    run->ref = ref_layer(d, align);
    const int64_t rows = xattn_moe_rows(plan, run->T);
    if (rows != xattn_ref_moe_rows(&run->ref, run->T)) {
        hx_result_fail(res, "xattn_moe_rows(plan, %lld) = %lld, want T*k + min(E, T*k)*(%d - 1) "
                            "= %lld", (long long)run->T, (long long)rows, align,
                       (long long)xattn_ref_moe_rows(&run->ref, run->T));
        return 1;
    }
    /* Strided cases hand dispatch, experts and combine more rows than T
     * needs, as a caller sizing for a larger batch would. */
    run->R = rows;
    if (run->m->strided) {
        const int64_t most = xattn_moe_rows(plan, d->max_tokens);
        run->R = rows + SPARE_ROWS < most ? rows + SPARE_ROWS : most;
    }
    return 0;
}

void hx_run_moe(xattn_context *ctx, const hx_case *c, uint64_t seed, int verbose,
                hx_result *res)
{
    const hx_moe_case *m = &c->moe;
    moe_run run;
    memset(&run, 0, sizeof run);
    run.m = m;
    run.T = m->tokens;
    xattn_moe_desc desc = m->desc;
    if (!desc.max_tokens) desc.max_tokens = (m->tokens > 0 ? m->tokens : 1) +
                                            (m->strided ? SPARE_TOKENS : 0);

    double t0 = hx_now();
    xattn_moe_plan *plan = NULL;
    xattn_status st = xattn_moe_plan_create(ctx, &desc, &plan);
    res->seconds += hx_now() - t0;
    if (st != XATTN_OK) {
        hx_api_fail(res, "xattn_moe_plan_create", st);
        return;
    }
    if (verbose) xattn_moe_plan_describe(plan, res->message, sizeof res->message, NULL);
    if (check_plan(plan, &desc, &run, res)) goto done;

    hx_rng rng;
    hx_rng_seed(&rng, seed);
    if (make_inputs(&run, &rng, res)) goto done;

    size_t bytes[NUM_ARGS] = {0};
    place_all(&run, bytes);
    enum { MIN_BUFFER = 16 }; /* empty tensors still get a (poisoned) buffer */
    for (int i = 0; i < NUM_ARGS; i++)
        if (run.arg[i].used &&
            hx_buf_alloc(ctx, &run.arg[i].buf, bytes[i] > MIN_BUFFER ? bytes[i] : MIN_BUFFER, res))
            goto done;
    const size_t ws = xattn_moe_workspace_size(plan);
    const size_t ws_offset = m->strided ? XATTN_WORKSPACE_ALIGN : 0;
    if (ws > 0 && hx_buf_alloc(ctx, &run.ws, ws + ws_offset, res)) goto done;
    write_images(&run);
    for (int i = 0; i < NUM_ARGS; i++)
        if (run.arg[i].used && hx_buf_upload(&run.arg[i].buf, res)) goto done;
    if (run.ws.dev && hx_buf_upload(&run.ws, res)) goto done;

    static const char *const call_names[] = {"xattn_moe_route", "xattn_moe_dispatch",
                                             "xattn_moe_experts", "xattn_moe_combine",
                                             "xattn_moe_forward"};
    t0 = hx_now();
    st = call(plan, &run);
    if (hx_complete(ctx, st, call_names[m->op], t0, res)) goto done;
    for (int i = 0; i < NUM_ARGS; i++)
        if (run.arg[i].written && hx_buf_download(&run.arg[i].buf, res)) goto done;

    if (run.T > 0) {
        switch (m->op) {
        case HX_MOE_ROUTE: check_route(&run, res); break;
        case HX_MOE_DISPATCH: check_dispatch(&run, res); break;
        default: check_result(&run, res); break;
        }
    }
    check_memory(&run, res);
done:
    free_run(&run);
    xattn_moe_plan_destroy(&plan);
}
