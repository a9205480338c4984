/* The case catalogue: every axis of docs/testing.md from a sensible base, and a
 * few combinations, not a cross product. Names read like the contract:
 *   attn/<kv layout>/<mask+features>/<memory>/<lengths>/<head dims>/<gqa>/<dtype>
 *   kv_append/<page size>/<rows>/<heads>/<dims>[/<memory>]/<dtype>
 *   merge/<lse kind>/<shape>/<dim>[/<memory>]/<dtype>
 *   moe/<call>/<model>/t<tokens>[+options]/<what the call depends on>/<dtypes>
 * Budget: the float64 reference is the cost; hx_case.cost counts its
 * multiply-adds and `xattn check --list -v` prints it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static const xattn_dtype dtypes[3] = {XATTN_F32, XATTN_F16, XATTN_BF16};

static const char *dt_name(xattn_dtype dt)
{
    return dt == XATTN_F32 ? "f32" : dt == XATTN_F16 ? "f16" : "bf16";
}

static const char *mem_name(hx_mem mem, int paged)
{
    switch (mem) {
    case HX_MEM_PADDED: return "padded";
    case HX_MEM_ODD: return "odd_strides";
    case HX_MEM_HEAD_MAJOR: return paged ? "hnd" : "bhsd";
    case HX_MEM_PACKED: return paged ? "packed_kv" : "packed_qkv";
    default: return NULL;
    }
}

static hx_case *push(hx_catalogue *cat)
{
    if (cat->count == cat->cap) {
        size_t cap = cat->cap ? 2 * cat->cap : 256;
        hx_case *p = realloc(cat->cases, cap * sizeof *p);
        if (!p) return NULL;
        cat->cases = p;
        cat->cap = cap;
    }
    hx_case *c = &cat->cases[cat->count++];
    memset(c, 0, sizeof *c);
    return c;
}

static int set_name(hx_case *c, const char *name)
{
    if (strlen(name) >= sizeof c->name) {
        fprintf(stderr, "xattn check: catalogue bug: case name too long: %s\n", name);
        return -1;
    }
    memcpy(c->name, name, strlen(name) + 1);
    return 0;
}

/* ---- attention ------------------------------------------------------------ */

static int32_t max_len(const int32_t *x, int32_t n)
{
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

static void fmt_window(char *buf, size_t size, int32_t w)
{
    if (w < 0) snprintf(buf, size, "inf");
    else snprintf(buf, size, "%d", w);
}

/* Visible (query, key) pairs of one sequence. */
static double visible_pairs(const hx_attn_case *a, int64_t sq, int64_t sk)
{
    int64_t wl = -1, wr = (a->flags & XATTN_ATTN_CAUSAL) ? 0 : -1;
    if (a->flags & XATTN_ATTN_WINDOW) wl = a->window_left, wr = a->window_right;
    double n = 0;
    for (int64_t i = 0; i < sq; i++) {
        int64_t lo = wl < 0 ? 0 : i + sk - sq - wl, hi = wr < 0 ? sk - 1 : i + sk - sq + wr;
        if (lo < 0) lo = 0;
        if (hi > sk - 1) hi = sk - 1;
        if (hi >= lo) n += (double)(hi - lo + 1);
    }
    return n;
}

static int attn_add(hx_catalogue *cat, hx_attn_case a)
{
    /* Defaults. */
    if (!a.batch) a.batch = 1;
    if (!a.hkv) a.hkv = a.hq;
    if (!a.dv) a.dv = a.dqk;
    if (a.qk_std == 0.0) a.qk_std = 1.4;
    hx_case *c = push(cat);
    if (!c) return -1;
    c->kind = HX_ATTN;
    c->attn = a;

    const int uq = a.q_layout == XATTN_Q_UNIFORM;
    const int32_t *sqs = a.sq_list, *sks = a.sk_list;
    double cost = 0;
    for (int32_t b = 0; b < a.batch; b++) {
        int64_t sq = uq ? a.sq : sqs[b];
        int64_t sk = a.kv_layout == XATTN_KV_UNIFORM ? a.sk : sks[b];
        cost += visible_pairs(&a, sq, sk);
    }
    c->cost = cost * a.hq * (a.dqk + a.dv) * (a.reuse ? 2 : 1);

    char kv[32] = "", mask[48], feat[160] = "", mem[32] = "", seq[48], dims[24];
    const int paged = a.kv_layout == XATTN_KV_PAGED;
    if (paged) snprintf(kv, sizeof kv, "%spaged_p%d/", uq ? "" : "varlen_", a.page_size);
    else if (!uq && a.kv_layout == XATTN_KV_RAGGED) snprintf(kv, sizeof kv, "varlen/");
    else if (!uq) snprintf(kv, sizeof kv, "varlen_q/");
    else if (a.kv_layout == XATTN_KV_RAGGED) snprintf(kv, sizeof kv, "varlen_k/");

    if (a.flags & XATTN_ATTN_WINDOW) {
        char l[16], r[16];
        fmt_window(l, sizeof l, a.window_left);
        fmt_window(r, sizeof r, a.window_right);
        snprintf(mask, sizeof mask, "window_l%s_r%s", l, r);
    } else {
        snprintf(mask, sizeof mask, "%s", (a.flags & XATTN_ATTN_CAUSAL) ? "causal" : "full");
    }
    size_t f = 0;
    if (a.softcap > 0)
        f += (size_t)snprintf(feat + f, sizeof feat - f, "+softcap%g", (double)a.softcap);
    if (a.flags & XATTN_ATTN_ALIBI) f += (size_t)snprintf(feat + f, sizeof feat - f, "+alibi");
    if (a.flags & XATTN_ATTN_SINKS) f += (size_t)snprintf(feat + f, sizeof feat - f, "+sinks");
    if (a.scale != 0) f += (size_t)snprintf(feat + f, sizeof feat - f, "+scale%g", (double)a.scale);
    if (a.no_lse) f += (size_t)snprintf(feat + f, sizeof feat - f, "+no_lse");
    if (a.reuse) f += (size_t)snprintf(feat + f, sizeof feat - f, "+plan_reuse");
    static const char *const nf_names[] = {"nan_q",  "nan_k",    "nan_v",     "inf_k",    "nan_unread",
                                           "nan_sink", "inf_sink", "nan_slope", "inf_slope"};
    for (size_t i = 0; i < sizeof nf_names / sizeof nf_names[0]; i++)
        if (a.nonfinite & (1u << i))
            f += (size_t)snprintf(feat + f, sizeof feat - f, "+%s", nf_names[i]);
    if (mem_name(a.mem, paged)) snprintf(mem, sizeof mem, "%s/", mem_name(a.mem, paged));

    const int32_t msq = uq ? a.sq : max_len(sqs, a.batch);
    const int32_t msk = a.kv_layout == XATTN_KV_UNIFORM ? a.sk : max_len(sks, a.batch);
    if (a.batch > 1) snprintf(seq, sizeof seq, "b%d_sq%d_sk%d", a.batch, msq, msk);
    else snprintf(seq, sizeof seq, "sq%d_sk%d", msq, msk);
    if (a.dqk == a.dv) snprintf(dims, sizeof dims, "d%d", a.dqk);
    else snprintf(dims, sizeof dims, "d%d_%d", a.dqk, a.dv);
    char name[512];
    snprintf(name, sizeof name, "attn/%s%s%s/%s%s/%s/gqa%d/%s", kv, mask, feat, mem, seq, dims,
             a.hq / a.hkv, dt_name(a.dtype));
    return set_name(c, name);
}

/* Shorthands for the catalogue below. */
#define ATTN(...) ret |= attn_add(cat, (hx_attn_case){__VA_ARGS__})
#define CAUSAL .flags = XATTN_ATTN_CAUSAL
#define WINDOW(l, r) .flags = XATTN_ATTN_WINDOW, .window_left = (l), .window_right = (r)
#define RAGGED_Q .q_layout = XATTN_Q_RAGGED
#define RAGGED_K .kv_layout = XATTN_KV_RAGGED
#define PAGED(p) .kv_layout = XATTN_KV_PAGED, .page_size = (p)

static int attn_cases(hx_catalogue *cat)
{
    int ret = 0;

    /* Sequence lengths (docs/testing.md), full and causal, every dtype; the two
     * largest pairs once or twice (the float64 reference is O(Sq·Sk)). */
    static const int32_t pairs[][2] = {{1, 1},     {1, 339},   {3, 1024}, {113, 203},
                                       {128, 217}, {239, 1},   {256, 512}, {512, 256},
                                       {799, 3}};
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++)
        for (int t = 0; t < 3; t++) {
            ATTN(.dtype = dtypes[t], .hq = 2, .hkv = 1, .dqk = 64, .sq = pairs[p][0],
                 .sk = pairs[p][1]);
            ATTN(.dtype = dtypes[t], .hq = 2, .hkv = 1, .dqk = 64, .sq = pairs[p][0],
                 .sk = pairs[p][1], CAUSAL);
        }
    ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = 64, .sq = 1023, .sk = 1024);
    ATTN(.dtype = XATTN_F16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 1023, .sk = 1024, CAUSAL);
    ATTN(.dtype = XATTN_BF16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 1023, .sk = 1024, CAUSAL);
    ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = 64, .sq = 2048, .sk = 2048, CAUSAL);
    ATTN(.dtype = XATTN_BF16, .hq = 1, .hkv = 1, .dqk = 64, .sq = 2048, .sk = 2048);

    /* Head dims: every multiple of 8 up to 256 once (dtype rotating), then
     * the named ones and the MLA pairs in every dtype. */
    for (int32_t d = 8, i = 0; d <= 256; d += 8, i++)
        ATTN(.dtype = dtypes[i % 3], .hq = 2, .hkv = 1, .dqk = d, .sq = 37, .sk = 61, CAUSAL);
    static const int32_t named[][2] = {{8, 8},   {40, 40},   {64, 64},   {72, 72},
                                       {80, 80}, {96, 96},   {128, 128}, {160, 160},
                                       {192, 192}, {256, 256}, {192, 128}};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        for (int t = 0; t < 3; t++)
            ATTN(.dtype = dtypes[t], .hq = 4, .hkv = 1, .dqk = named[i][0], .dv = named[i][1],
                 .sq = 113, .sk = 203);
    /* DeepSeek MLA with absorbed weights: one latent KV head, the softmax
     * scale of the 192-wide q·k. */
    for (int t = 0; t < 3; t++)
        ATTN(.dtype = dtypes[t], .hq = 4, .hkv = 1, .dqk = 576, .dv = 512, .sq = 113, .sk = 203,
             CAUSAL, .scale = 0.07216878f);
    ATTN(.dtype = XATTN_BF16, .hq = 16, .hkv = 1, .dqk = 576, .dv = 512, .batch = 3,
         PAGED(64), .sq = 1, .sk_list = {1000, 1, 129}, .scale = 0.07216878f);

    /* GQA ratios, prefill in every dtype and decode. */
    static const int32_t ratios[] = {1, 4, 7, 8, 16};
    for (size_t r = 0; r < 5; r++) {
        const int32_t hkv = ratios[r] == 16 ? 1 : 2;
        for (int t = 0; t < 3; t++)
            ATTN(.dtype = dtypes[t], .hq = ratios[r] * hkv, .hkv = hkv, .dqk = 128, .sq = 128,
                 .sk = 217, CAUSAL);
        ATTN(.dtype = dtypes[(r + 1) % 3], .hq = ratios[r] * hkv, .hkv = hkv, .dqk = 128,
             .batch = 3, .sq = 1, .sk = 700);
    }

    /* Paged K/V: every page size, a shuffled block table, sequence lengths
     * that are not page multiples, and an empty sequence. Decode (uniform
     * Q, one token) and chunked prefill (ragged Q). */
    static const int32_t page_sizes[] = {1, 3, 16, 64, 256};
    for (int i = 0; i < 5; i++) {
        ATTN(.dtype = dtypes[i % 3], .hq = 8, .hkv = 2, .dqk = 128, .batch = 5,
             PAGED(page_sizes[i]), .sq = 1, .sk_list = {339, 0, 1024, 77, 1});
        ATTN(.dtype = dtypes[(i + 1) % 3], .hq = 8, .hkv = 2, .dqk = 64, .batch = 5, RAGGED_Q,
             PAGED(page_sizes[i]), CAUSAL, .sq_list = {113, 5, 0, 64, 1},
             .sk_list = {203, 5, 17, 300, 0});
    }
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 128, .batch = 5, PAGED(16), .sq = 1,
         .sk_list = {339, 0, 1024, 77, 1}, .flags = XATTN_ATTN_CAUSAL);
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 2, .dqk = 128, .batch = 4, PAGED(16), CAUSAL,
         .sq = 16, .sk_list = {300, 40, 16, 5});
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 128, .batch = 5, PAGED(16), .sq = 1,
         .sk_list = {339, 0, 1024, 77, 1}, .mem = HX_MEM_HEAD_MAJOR);
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 4, .dqk = 64, .batch = 3, PAGED(64), .sq = 1,
         .sk_list = {500, 64, 65}, .mem = HX_MEM_PACKED);
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 5, RAGGED_Q, PAGED(3),
         CAUSAL, .sq_list = {113, 5, 0, 64, 1}, .sk_list = {203, 5, 17, 300, 0},
         .mem = HX_MEM_PADDED);
    ATTN(.dtype = XATTN_F16, .hq = 6, .hkv = 2, .dqk = 40, .batch = 3, RAGGED_Q, PAGED(16),
         CAUSAL, .sq_list = {30, 7, 1}, .sk_list = {90, 7, 50}, .mem = HX_MEM_ODD);
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 4, RAGGED_Q, PAGED(16),
         CAUSAL, .sq_list = {50, 1, 17, 0}, .sk_list = {120, 33, 17, 9}, .reuse = 1,
         .bound_extra = 40);
    /* Head dims whose whole output tile is one float4 per work-item of a
     * GPU-style group, with a query tile the rows do not fill: the last
     * store of such a kernel is a branch to its end. f32, with and without
     * LSE; and decode, where rows past one sequence's tile are the next
     * sequence's. */
    for (int32_t d = 8; d <= 16; d += 8) {
        for (int lse = 0; lse < 2; lse++)
            ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = d, .batch = 3, PAGED(4), .sq = 2,
                 .sk_list = {7, 16, 0}, .no_lse = !lse);
        ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 1, .dqk = d, .batch = 3, PAGED(4), .sq = 1,
             .sk_list = {7, 16, 0});
    }

    /* Windows (bottom-right aligned), including rows that see no key. */
    ATTN(.dtype = XATTN_F16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 256, .sk = 512, WINDOW(64, 0));
    ATTN(.dtype = XATTN_BF16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 256, .sk = 512,
         WINDOW(32, 32));
    ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = 64, .sq = 512, .sk = 256,
         WINDOW(100, 0));
    ATTN(.dtype = XATTN_F16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 113, .sk = 203, WINDOW(0, 0));
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 2, .dqk = 128, .sq = 128, .sk = 217,
         WINDOW(16, -1));
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 2, .dqk = 128, .sq = 128, .sk = 217,
         WINDOW(-1, 16));
    ATTN(.dtype = XATTN_BF16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 200, .sk = 50, WINDOW(10, 5));
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 1, .dqk = 128, .batch = 2, .sq = 1, .sk = 339,
         WINDOW(31, 0));
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         WINDOW(20, 0), .sq_list = {37, 0, 1, 130, 64, 0}, .sk_list = {100, 45, 339, 130, 0, 0});

    /* Soft cap, with scores large enough that tanh bends them. */
    ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = 64, .sq = 113, .sk = 203, .softcap = 5.0f,
         .qk_std = 2.5);
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 2, .dqk = 128, .sq = 256, .sk = 512, CAUSAL,
         .softcap = 30.0f, .qk_std = 3.0);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 2, .dqk = 256, .batch = 2, .sq = 1, .sk = 2000,
         .softcap = 50.0f, .qk_std = 3.5);
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         CAUSAL, .softcap = 20.0f, .qk_std = 3.0, .sq_list = {37, 0, 1, 130, 64, 0},
         .sk_list = {100, 45, 339, 130, 0, 0});

    /* ALiBi, where Sq ≠ Sk makes the alignment visible. */
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 1, .dqk = 64, .sq = 113, .sk = 203,
         .flags = XATTN_ATTN_ALIBI);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 1, .dqk = 64, .sq = 128, .sk = 217,
         .flags = XATTN_ATTN_ALIBI | XATTN_ATTN_CAUSAL);
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 4, .dqk = 64, .sq = 512, .sk = 256,
         .flags = XATTN_ATTN_ALIBI | XATTN_ATTN_CAUSAL);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 2, .dqk = 64, .sq = 512, .sk = 256,
         .flags = XATTN_ATTN_ALIBI);
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 1, .dqk = 64, .sq = 128, .sk = 217,
         .flags = XATTN_ATTN_ALIBI | XATTN_ATTN_WINDOW, .window_left = 32, .window_right = 32);
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 8, .dqk = 128, .batch = 2, .sq = 1, .sk = 339,
         .flags = XATTN_ATTN_ALIBI);
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         .flags = XATTN_ATTN_ALIBI | XATTN_ATTN_CAUSAL, .sq_list = {37, 0, 1, 130, 64, 0},
         .sk_list = {100, 45, 339, 130, 0, 0});
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 2, .dqk = 128, .batch = 5, PAGED(16), .sq = 1,
         .sk_list = {339, 0, 1024, 77, 1}, .flags = XATTN_ATTN_ALIBI);

    /* Sinks: denominator only; LSE includes them; with rows that see no key
     * (O = 0, LSE = −inf: the sink alone is not a key). */
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 1, .dqk = 64, .sq = 128, .sk = 217,
         .flags = XATTN_ATTN_SINKS);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 1, .dqk = 64, .sq = 128, .sk = 217,
         .flags = XATTN_ATTN_SINKS | XATTN_ATTN_CAUSAL);
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 1, .dqk = 64, .sq = 239, .sk = 1,
         .flags = XATTN_ATTN_SINKS | XATTN_ATTN_CAUSAL);
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         .flags = XATTN_ATTN_SINKS | XATTN_ATTN_CAUSAL, .sq_list = {37, 0, 1, 130, 64, 0},
         .sk_list = {100, 45, 339, 130, 0, 0});
    /* GPT-OSS: sliding window 128 with sinks, paged decode. */
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 1, .dqk = 64, .batch = 3, PAGED(16), .sq = 1,
         .sk_list = {2000, 150, 1},
         .flags = XATTN_ATTN_SINKS | XATTN_ATTN_WINDOW, .window_left = 127, .window_right = 0);
    /* Everything at once, on padded strides. */
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 64, .batch = 2, .sq = 113, .sk = 203,
         .flags = XATTN_ATTN_SINKS | XATTN_ATTN_WINDOW | XATTN_ATTN_ALIBI, .window_left = 50,
         .window_right = 0, .softcap = 10.0f, .qk_std = 2.0, .mem = HX_MEM_PADDED);

    /* Varlen batches with zero-length sequences: (0 queries, some keys),
     * (some queries, 0 keys: every row sees nothing), (0, 0). */
    for (int t = 0; t < 3; t++) {
        ATTN(.dtype = dtypes[t], .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
             .sq_list = {37, 0, 1, 130, 64, 0}, .sk_list = {100, 45, 339, 130, 0, 0});
        ATTN(.dtype = dtypes[t], .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
             CAUSAL, .sq_list = {37, 0, 1, 130, 64, 0}, .sk_list = {100, 45, 339, 130, 0, 0});
    }
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 2, .dqk = 96, .batch = 4, RAGGED_Q, CAUSAL,
         .sq_list = {150, 1, 0, 77}, .sk = 150);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 2, .dqk = 96, .batch = 4, RAGGED_K, CAUSAL,
         .sq = 20, .sk_list = {150, 20, 0, 7});
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         CAUSAL, .sq_list = {37, 0, 1, 130, 64, 3}, .sk_list = {100, 45, 339, 130, 0, 3},
         .reuse = 1, .bound_extra = 17);

    /* Ragged Q far below its bound: a run costs its real lengths (tiles
     * numbered from cu_seqlens_q, not from the plan), decode-sized ragged
     * rows (narrow tiles, lockstep items) and a bound of a million rows. */
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 128, .batch = 4, RAGGED_Q, PAGED(16),
         .sq_list = {1, 0, 2, 1}, .sk_list = {300, 20, 1000, 0});
    ATTN(.dtype = XATTN_BF16, .hq = 16, .hkv = 2, .dqk = 64, .batch = 3, RAGGED_Q, RAGGED_K,
         CAUSAL, .sq_list = {3, 1, 4}, .sk_list = {3000, 1, 40}, .bound_extra = 5);
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 1, .dqk = 64, .batch = 3, RAGGED_Q, RAGGED_K,
         CAUSAL, .sq_list = {10, 0, 7}, .sk_list = {50, 3, 7}, .bound_extra = 1000000);

    /* Split-KV decode: long Sk, one query, few heads. */
    for (int t = 0; t < 3; t++)
        ATTN(.dtype = dtypes[t], .hq = 4, .hkv = 1, .dqk = 128, .sq = 1, .sk = 8192);
    ATTN(.dtype = XATTN_F16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 1, .sk = 32768);
    ATTN(.dtype = XATTN_F32, .hq = 1, .hkv = 1, .dqk = 256, .sq = 1, .sk = 16384);
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 1, .dqk = 128, .batch = 2, .sq = 4, .sk = 16384,
         CAUSAL);
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 128, .batch = 2, PAGED(16), .sq = 1,
         .sk_list = {20000, 3000});

    /* Strides: slices of a packed QKV tensor, padded, odd (unaligned) and
     * head-major ([B, H, S, D]) layouts. */
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 2, .sq = 128, .sk = 128,
         CAUSAL, .mem = HX_MEM_PACKED);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 4, .dqk = 128, .batch = 3, RAGGED_Q, RAGGED_K,
         CAUSAL, .sq_list = {90, 1, 33}, .sk_list = {90, 1, 33}, .mem = HX_MEM_PACKED);
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 1, .dqk = 64, .batch = 2, .sq = 113, .sk = 203,
         .mem = HX_MEM_PADDED);
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 2, .dqk = 40, .sq = 37, .sk = 61, CAUSAL,
         .mem = HX_MEM_ODD);
    ATTN(.dtype = XATTN_BF16, .hq = 2, .hkv = 1, .dqk = 80, .sq = 113, .sk = 203,
         .mem = HX_MEM_ODD);
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 2, .dqk = 64, .batch = 2, .sq = 256, .sk = 512,
         CAUSAL, .mem = HX_MEM_HEAD_MAJOR);
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         CAUSAL, .sq_list = {37, 0, 1, 130, 64, 0}, .sk_list = {100, 45, 339, 130, 0, 0},
         .mem = HX_MEM_HEAD_MAJOR);

    /* Decode through every head dim (split-KV and decode kernels are often
     * specialised apart from prefill). */
    for (int32_t d = 8, i = 0; d <= 256; d += 8, i++)
        ATTN(.dtype = dtypes[(i + 1) % 3], .hq = 4, .hkv = 1, .dqk = d, .batch = 2, .sq = 1,
             .sk = 777);
    ATTN(.dtype = XATTN_F16, .hq = 16, .hkv = 1, .dqk = 192, .dv = 128, .batch = 2, .sq = 1,
         .sk = 777);
    ATTN(.dtype = XATTN_F32, .hq = 16, .hkv = 1, .dqk = 576, .dv = 512, .sq = 1, .sk = 4099,
         .scale = 0.07216878f);

    /* Features combined, on each K/V layout and in every dtype. */
    static const struct {
        uint32_t flags;
        int32_t wl, wr;
        float softcap;
    } combos[] = {
        {XATTN_ATTN_CAUSAL | XATTN_ATTN_SINKS, -1, -1, 15.0f},
        {XATTN_ATTN_WINDOW | XATTN_ATTN_ALIBI, 40, 8, 0.0f},
        {XATTN_ATTN_WINDOW | XATTN_ATTN_ALIBI | XATTN_ATTN_SINKS, 70, 0, 25.0f},
    };
    for (int f = 0; f < 3; f++)
        for (int t = 0; t < 3; t++) {
            ATTN(.dtype = dtypes[t], .hq = 6, .hkv = 2, .dqk = 80, .batch = 2, .sq = 113,
                 .sk = 203, .flags = combos[f].flags, .window_left = combos[f].wl,
                 .window_right = combos[f].wr, .softcap = combos[f].softcap, .qk_std = 2.0);
            ATTN(.dtype = dtypes[t], .hq = 6, .hkv = 2, .dqk = 80, .batch = 6, RAGGED_Q,
                 RAGGED_K, .sq_list = {37, 0, 1, 130, 64, 0},
                 .sk_list = {100, 45, 339, 130, 0, 0}, .flags = combos[f].flags,
                 .window_left = combos[f].wl, .window_right = combos[f].wr,
                 .softcap = combos[f].softcap, .qk_std = 2.0);
            ATTN(.dtype = dtypes[t], .hq = 7, .hkv = 1, .dqk = 128, .batch = 4, RAGGED_Q,
                 PAGED(page_sizes[(f + t) % 5]), .sq_list = {113, 1, 0, 40},
                 .sk_list = {203, 1000, 9, 40}, .flags = combos[f].flags,
                 .window_left = combos[f].wl, .window_right = combos[f].wr,
                 .softcap = combos[f].softcap, .qk_std = 2.0);
        }

    /* Non-finite inputs (api/xattn_attn.h): NaN in, NaN out over the visible
     * keys; a +inf score or sink is NaN too, a −inf score a key of weight 0;
     * nothing outside the visible keys is read. Prefill (diagonal tiles that
     * mask some rows of a key and not others), decode with and without
     * split-KV, paged and ragged batches. */
#define NF(x) .nonfinite = (x)
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 2, .dqk = 64, .sq = 113, .sk = 203, CAUSAL,
         NF(HX_NF_Q_NAN));
    ATTN(.dtype = XATTN_BF16, .hq = 4, .hkv = 2, .dqk = 64, .sq = 113, .sk = 203, CAUSAL,
         NF(HX_NF_K_NAN));
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 2, .dqk = 64, .sq = 128, .sk = 128, CAUSAL,
         NF(HX_NF_V_NAN));
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 2, .dqk = 128, .sq = 100, .sk = 100,
         WINDOW(20, 20), NF(HX_NF_V_NAN | HX_NF_K_NAN));
    ATTN(.dtype = XATTN_F32, .hq = 4, .hkv = 1, .dqk = 64, .sq = 113, .sk = 203,
         NF(HX_NF_K_INF));
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 1, .dqk = 64, .sq = 113, .sk = 203, .softcap = 5.0f,
         NF(HX_NF_K_INF));
    ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = 64, .sq = 256, .sk = 512, WINDOW(64, 0),
         NF(HX_NF_UNREAD));
    ATTN(.dtype = XATTN_BF16, .hq = 2, .hkv = 1, .dqk = 64, .sq = 200, .sk = 50,
         .flags = XATTN_ATTN_WINDOW | XATTN_ATTN_SINKS, .window_left = 10, .window_right = 5,
         NF(HX_NF_UNREAD | HX_NF_SINK_NAN | HX_NF_SINK_INF));
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 1, .dqk = 64, .sq = 128, .sk = 217,
         .flags = XATTN_ATTN_ALIBI | XATTN_ATTN_CAUSAL, NF(HX_NF_SLOPE_NAN | HX_NF_SLOPE_INF));
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 2, .dqk = 128, .batch = 5, PAGED(16), .sq = 1,
         .sk_list = {339, 0, 1024, 77, 1}, NF(HX_NF_UNREAD | HX_NF_K_NAN));
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 64, .batch = 5, RAGGED_Q, PAGED(3),
         CAUSAL, .sq_list = {113, 5, 0, 64, 1}, .sk_list = {203, 5, 17, 300, 0},
         NF(HX_NF_UNREAD | HX_NF_V_NAN | HX_NF_Q_NAN));
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 2, .dqk = 64, .batch = 6, RAGGED_Q, RAGGED_K,
         CAUSAL, .sq_list = {37, 0, 1, 130, 64, 0}, .sk_list = {100, 45, 339, 130, 0, 0},
         NF(HX_NF_Q_NAN | HX_NF_K_NAN | HX_NF_UNREAD));
    for (int t = 0; t < 3; t++)
        ATTN(.dtype = dtypes[t], .hq = 4, .hkv = 1, .dqk = 128, .sq = 1, .sk = 8192,
             NF(t == 0 ? HX_NF_K_NAN : t == 1 ? HX_NF_V_NAN | HX_NF_K_INF : HX_NF_Q_NAN));
    ATTN(.dtype = XATTN_BF16, .hq = 8, .hkv = 1, .dqk = 128, .batch = 2, .sq = 4, .sk = 16384,
         CAUSAL, NF(HX_NF_V_NAN));
    ATTN(.dtype = XATTN_F16, .hq = 8, .hkv = 1, .dqk = 64, .batch = 2, .sq = 4, .sk = 300,
         CAUSAL, NF(HX_NF_V_NAN));
    ATTN(.dtype = XATTN_F32, .hq = 8, .hkv = 2, .dqk = 128, .batch = 2, PAGED(16), .sq = 1,
         .sk_list = {20000, 3000}, NF(HX_NF_UNREAD | HX_NF_K_INF));
#undef NF

    /* Explicit scale, no LSE, uniform batches. */
    ATTN(.dtype = XATTN_F32, .hq = 2, .hkv = 1, .dqk = 64, .sq = 113, .sk = 203, .scale = 0.05f);
    ATTN(.dtype = XATTN_F16, .hq = 4, .hkv = 1, .dqk = 128, .sq = 128, .sk = 217, CAUSAL,
         .no_lse = 1);
    ATTN(.dtype = XATTN_F32, .hq = 6, .hkv = 3, .dqk = 96, .batch = 3, .sq = 64, .sk = 96,
         CAUSAL);
    return ret;
}

/* ---- kv_append ------------------------------------------------------------ */

static int kv_add(hx_catalogue *cat, hx_kv_case k)
{
    if (!k.dv) k.dv = k.dqk;
    hx_case *c = push(cat);
    if (!c) return -1;
    c->kind = HX_KV_APPEND;
    c->kv = k;
    c->cost = (double)k.num_pages * k.page_size * k.hkv * (k.dqk + k.dv);
    char dims[24], mem[24] = "";
    if (k.dqk == k.dv) snprintf(dims, sizeof dims, "d%d", k.dqk);
    else snprintf(dims, sizeof dims, "d%d_%d", k.dqk, k.dv);
    if (mem_name(k.mem, 1)) snprintf(mem, sizeof mem, "/%s", mem_name(k.mem, 1));
    snprintf(c->name, sizeof c->name, "kv_append/p%d/n%d%s/hkv%d/%s%s/%s", k.page_size, k.n,
             k.skip_every ? "_skip" : "", k.hkv, dims, mem, dt_name(k.dtype));
    return 0;
}

#define KV(...) ret |= kv_add(cat, (hx_kv_case){__VA_ARGS__})

static int kv_cases(hx_catalogue *cat)
{
    int ret = 0;
    static const int32_t page_sizes[] = {1, 3, 16, 64, 256};
    for (int i = 0; i < 5; i++)
        KV(.dtype = dtypes[i % 3], .n = 7, .hkv = 2, .dqk = 128, .page_size = page_sizes[i],
           .num_pages = page_sizes[i] < 8 ? 16 : 4, .skip_every = 3);
    KV(.dtype = XATTN_F16, .n = 1, .hkv = 8, .dqk = 128, .page_size = 16, .num_pages = 6);
    KV(.dtype = XATTN_BF16, .n = 300, .hkv = 2, .dqk = 64, .page_size = 16, .num_pages = 24,
       .skip_every = 7);
    KV(.dtype = XATTN_F32, .n = 9, .hkv = 1, .dqk = 192, .dv = 128, .page_size = 64,
       .num_pages = 3, .skip_every = 4);
    KV(.dtype = XATTN_BF16, .n = 5, .hkv = 1, .dqk = 576, .dv = 512, .page_size = 64,
       .num_pages = 2);
    KV(.dtype = XATTN_F32, .n = 33, .hkv = 4, .dqk = 64, .page_size = 16, .num_pages = 5,
       .skip_every = 5, .mem = HX_MEM_PADDED);
    KV(.dtype = XATTN_F16, .n = 13, .hkv = 2, .dqk = 40, .page_size = 3, .num_pages = 9,
       .skip_every = 4, .mem = HX_MEM_ODD);
    KV(.dtype = XATTN_BF16, .n = 20, .hkv = 4, .dqk = 128, .page_size = 16, .num_pages = 4,
       .mem = HX_MEM_HEAD_MAJOR);
    KV(.dtype = XATTN_F16, .n = 20, .hkv = 2, .dqk = 128, .page_size = 16, .num_pages = 4,
       .skip_every = 6, .mem = HX_MEM_PACKED);
    for (int t = 0; t < 3; t++)
        KV(.dtype = dtypes[t], .n = 64, .hkv = 8, .dqk = 96, .page_size = 32, .num_pages = 4,
           .skip_every = 9);
    return ret;
}

/* ---- merge_states ------------------------------------------------------------ */

static int merge_add(hx_catalogue *cat, hx_merge_case m)
{
    hx_case *c = push(cat);
    if (!c) return -1;
    c->kind = HX_MERGE;
    c->merge = m;
    c->cost = (double)m.n * m.heads * m.dim;
    static const char *const modes[] = {"finite_lse", "neg_inf_lse", "large_lse",
                                        "nonfinite"};
    char mem[24] = "";
    if (mem_name(m.mem, 0)) snprintf(mem, sizeof mem, "/%s", mem_name(m.mem, 0));
    snprintf(c->name, sizeof c->name, "merge/%s%s/n%d_h%d/d%d%s/%s", modes[m.lse_mode],
             m.in_place ? "+in_place" : "", m.n, m.heads, m.dim, mem, dt_name(m.dtype));
    return 0;
}

#define MERGE(...) ret |= merge_add(cat, (hx_merge_case){__VA_ARGS__})

static int merge_cases(hx_catalogue *cat)
{
    int ret = 0;
    for (int t = 0; t < 3; t++) {
        MERGE(.dtype = dtypes[t], .n = 7, .heads = 8, .dim = 128);
        MERGE(.dtype = dtypes[t], .n = 64, .heads = 8, .dim = 128, .lse_mode = HX_LSE_NEG_INF);
        MERGE(.dtype = dtypes[t], .n = 64, .heads = 2, .dim = 64, .lse_mode = HX_LSE_LARGE);
    }
    MERGE(.dtype = XATTN_F32, .n = 1, .heads = 1, .dim = 8);
    MERGE(.dtype = XATTN_F32, .n = 513, .heads = 4, .dim = 64);
    MERGE(.dtype = XATTN_BF16, .n = 16, .heads = 16, .dim = 512);
    MERGE(.dtype = XATTN_F16, .n = 33, .heads = 8, .dim = 128, .in_place = 1);
    MERGE(.dtype = XATTN_BF16, .n = 33, .heads = 4, .dim = 64, .in_place = 1,
          .lse_mode = HX_LSE_NEG_INF, .mem = HX_MEM_PADDED);
    MERGE(.dtype = XATTN_F32, .n = 40, .heads = 4, .dim = 96, .lse_mode = HX_LSE_NEG_INF,
          .mem = HX_MEM_PADDED);
    MERGE(.dtype = XATTN_F16, .n = 40, .heads = 4, .dim = 40, .mem = HX_MEM_ODD);
    MERGE(.dtype = XATTN_BF16, .n = 40, .heads = 4, .dim = 64, .in_place = 1,
          .lse_mode = HX_LSE_NEG_INF, .mem = HX_MEM_ODD);
    MERGE(.dtype = XATTN_BF16, .n = 40, .heads = 4, .dim = 64, .mem = HX_MEM_HEAD_MAJOR);
    /* Non-finite LSE and O (api/xattn_attn.h): NaN in, NaN out; +inf is NaN;
     * a side of LSE −inf is not read. */
    for (int t = 0; t < 3; t++)
        MERGE(.dtype = dtypes[t], .n = 64, .heads = 4, .dim = 64, .lse_mode = HX_LSE_NONFINITE);
    MERGE(.dtype = XATTN_F32, .n = 40, .heads = 4, .dim = 40, .lse_mode = HX_LSE_NONFINITE,
          .in_place = 1, .mem = HX_MEM_ODD);
    return ret;
}

/* ---- MoE ------------------------------------------------------------------------ */

/* The routing and expert form of a model (docs/moe.md names them):
 * flags hold both; activation is the model's unless a case sets another. */
typedef struct moe_model {
    const char *name;
    int32_t experts, top_k;
    xattn_moe_route_mode route;
    uint32_t flags;
    int32_t n_group, topk_group;
    float scale;
    xattn_moe_activation activation;
} moe_model;

#define RENORM XATTN_MOE_RENORMALIZE
#define BIAS XATTN_MOE_BIAS
#define SWIGLU XATTN_MOE_SWIGLU
/* GPT-OSS experts: W1 gate/up rows interleaved, both biases, clamped
 * SwiGLU; Llama-4: the route weight on the expert's input. */
#define GPT_OSS_FORM (XATTN_MOE_W1_INTERLEAVED | XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)
static const moe_model mixtral = {"mixtral", 8, 2, XATTN_MOE_ROUTE_SOFTMAX_TOPK, RENORM, 0, 0, 0,
                                  SWIGLU};
static const moe_model qwen3 = {"qwen3-moe", 128, 8, XATTN_MOE_ROUTE_SOFTMAX_TOPK, RENORM, 0, 0,
                                0, SWIGLU};
static const moe_model deepseek = {"deepseek-v3", 256, 8, XATTN_MOE_ROUTE_SIGMOID_GROUPED,
                                   RENORM | BIAS, 8, 4, 2.5f, SWIGLU};
static const moe_model gpt_oss = {"gpt-oss", 128, 4, XATTN_MOE_ROUTE_TOPK_SOFTMAX, GPT_OSS_FORM,
                                  0, 0, 0, XATTN_MOE_SWIGLU_CLAMPED};
static const moe_model llama4 = {"llama-4", 16, 1, XATTN_MOE_ROUTE_TOPK_SIGMOID,
                                 XATTN_MOE_WEIGHTS_ON_INPUT, 0, 0, 0, SWIGLU};
/* E = 60 and softmax_topk without renormalisation (Qwen1.5-MoE-A2.7B). */
static const moe_model qwen15 = {"qwen1.5-moe", 60, 4, XATTN_MOE_ROUTE_SOFTMAX_TOPK, 0, 0, 0, 0,
                                 SWIGLU};
/* Grouped routing off the DeepSeek path: no bias, no renormalisation,
 * groups of 10; groups of one expert (group score = its b); one group. */
static const moe_model grouped60 = {"grouped-e60-g6", 60, 6, XATTN_MOE_ROUTE_SIGMOID_GROUPED, 0,
                                    6, 2, 0, SWIGLU};
static const moe_model singletons = {"grouped-singletons", 16, 4,
                                     XATTN_MOE_ROUTE_SIGMOID_GROUPED, RENORM | BIAS, 16, 6, 1.5f,
                                     SWIGLU};
static const moe_model one_group = {"grouped-one-group", 32, 3, XATTN_MOE_ROUTE_SIGMOID_GROUPED,
                                    BIAS, 1, 1, 0, SWIGLU};
#undef RENORM
#undef BIAS
#undef SWIGLU

static const char *act_name(xattn_moe_activation a)
{
    switch (a) {
    case XATTN_MOE_GEGLU: return "geglu";
    case XATTN_MOE_SWIGLU_CLAMPED: return "swiglu_clamped";
    default: return "swiglu";
    }
}

/* The expert form after the activation: "+a1.5" / "+lim2" (SWIGLU_CLAMPED
 * parameters given), "+il" (W1 interleaved), "+b1b2" (biases). */
static void expert_form(const xattn_moe_desc *d, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "%s", act_name(d->activation));
    if (n < size && d->swiglu_alpha != 0.0f)
        n += (size_t)snprintf(buf + n, size - n, "+a%g", (double)d->swiglu_alpha);
    if (n < size && d->swiglu_limit != 0.0f)
        n += (size_t)snprintf(buf + n, size - n, "+lim%g", (double)d->swiglu_limit);
    if (n < size && (d->flags & XATTN_MOE_W1_INTERLEAVED))
        n += (size_t)snprintf(buf + n, size - n, "+il");
    if (n < size && (d->flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)))
        snprintf(buf + n, size - n, "+%s%s", (d->flags & XATTN_MOE_EXPERT_B1) ? "b1" : "",
                 (d->flags & XATTN_MOE_EXPERT_B2) ? "b2" : "");
}

static const char *nonfinite_name(hx_nonfinite n)
{
    switch (n) {
    case HX_NONFINITE_LOGITS: return "+nan_inf_logits";
    case HX_NONFINITE_BIAS: return "+nan_bias";
    case HX_NONFINITE_X: return "+nan_x";
    default: return "";
    }
}

/* Rows the reference computes for T tokens (align 0, the planner's choice,
 * counted as 1). */
static double moe_rows(const xattn_moe_desc *d, int32_t T)
{
    const double pairs = (double)T * d->top_k;
    const double align = d->align > 0 ? d->align : 1;
    return pairs + (pairs < d->num_experts ? pairs : d->num_experts) * (align - 1);
}

static int moe_add(hx_catalogue *cat, const moe_model *model, hx_moe_case m)
{
    xattn_moe_desc *d = &m.desc;
    d->num_experts = model->experts;
    d->top_k = model->top_k;
    d->route = model->route;
    d->flags |= model->flags;
    d->n_group = model->n_group;
    d->topk_group = model->topk_group;
    d->routed_scaling_factor = model->scale;
    if (d->activation == XATTN_MOE_SWIGLU) d->activation = model->activation;
    if (!d->hidden) d->hidden = 64;
    if (!d->inter) d->inter = 32;
    hx_case *c = push(cat);
    if (!c) return -1;
    c->kind = HX_MOE;
    c->moe = m;

    const double T = m.tokens, E = d->num_experts, k = d->top_k, H = d->hidden;
    const double route = T * E * (k + 3), rows = moe_rows(d, m.tokens);
    const double experts = rows * 3.0 * H * d->inter, combine = T * k * H;
    static const char *const calls[] = {"route", "dispatch", "experts", "combine", "forward"};
    const double costs[] = {route, rows * H, experts, combine,
                            route + rows * H + experts + combine};
    c->cost = costs[m.op];

    char opts[96], shape[32] = "", act[48] = "", form[40], align[16] = "", dts[48];
    char bound[24] = "";
    if (d->max_tokens) snprintf(bound, sizeof bound, "_of%d", d->max_tokens);
    /* Weights on the input matter to the calls that scale or sum rows. */
    const int on_input = (d->flags & XATTN_MOE_WEIGHTS_ON_INPUT) && m.op != HX_MOE_ROUTE &&
                         m.op != HX_MOE_EXPERTS;
    snprintf(opts, sizeof opts, "t%d%s%s%s%s%s%s", m.tokens, bound, m.ties ? "+ties" : "",
             m.drop_every ? "+dropped" : "", m.accumulate ? "+accumulate" : "",
             on_input ? "+w_on_input" : "", nonfinite_name(m.nonfinite));
    const int gemm = m.op == HX_MOE_EXPERTS || m.op == HX_MOE_FORWARD;
    if (m.op != HX_MOE_ROUTE) {
        if (gemm) snprintf(shape, sizeof shape, "/h%d_i%d", d->hidden, d->inter);
        else snprintf(shape, sizeof shape, "/h%d", d->hidden);
    }
    expert_form(d, form, sizeof form);
    if (gemm) snprintf(act, sizeof act, "/%s", form);
    if (m.op != HX_MOE_ROUTE && m.op != HX_MOE_COMBINE) {
        if (d->align) snprintf(align, sizeof align, "/align%d", d->align);
        else snprintf(align, sizeof align, "/align_auto");
    }
    /* Dtypes: the call's main one, then weights and logits where they
     * differ and matter. */
    if (m.op == HX_MOE_ROUTE) {
        snprintf(dts, sizeof dts, "%s", dt_name(d->logits_dtype));
    } else {
        size_t n = (size_t)snprintf(dts, sizeof dts, "%s", dt_name(d->dtype));
        if (gemm && d->weight_dtype != d->dtype)
            n += (size_t)snprintf(dts + n, sizeof dts - n, "_w%s", dt_name(d->weight_dtype));
        if (gemm && (d->flags & (XATTN_MOE_EXPERT_B1 | XATTN_MOE_EXPERT_B2)))
            n += (size_t)snprintf(dts + n, sizeof dts - n, "_b%s", dt_name(d->bias_dtype));
        if (m.op == HX_MOE_FORWARD && d->logits_dtype != d->dtype)
            snprintf(dts + n, sizeof dts - n, "_logits%s", dt_name(d->logits_dtype));
    }
    char name[2 * HX_NAME_MAX];
    snprintf(name, sizeof name, "moe/%s/%s/%s%s%s%s%s/%s", calls[m.op], model->name, opts, shape,
             act, align, m.strided ? "/strided" : "", dts);
    return set_name(c, name);
}

#define MOE(model, ...) ret |= moe_add(cat, &(model), (hx_moe_case){__VA_ARGS__})

static int moe_cases(hx_catalogue *cat)
{
    int ret = 0;
    const moe_model *models[] = {&mixtral, &qwen3, &deepseek, &gpt_oss, &llama4,
                                 &qwen15, &grouped60, &singletons, &one_group};
    const int num_models = (int)(sizeof models / sizeof models[0]);

    /* Route: every model at T = 0, 1, 7 and 513, every logits dtype, with
     * deliberate ties; strided on some. */
    for (int i = 0; i < num_models; i++) {
        const moe_model *mo = models[i];
        MOE(*mo, .op = HX_MOE_ROUTE, .tokens = 0);
        MOE(*mo, .op = HX_MOE_ROUTE, .tokens = 1, .desc.logits_dtype = dtypes[i % 3]);
        MOE(*mo, .op = HX_MOE_ROUTE, .tokens = 7, .desc.logits_dtype = dtypes[(i + 1) % 3],
            .strided = i % 2);
        MOE(*mo, .op = HX_MOE_ROUTE, .tokens = 513, .desc.logits_dtype = dtypes[(i + 2) % 3]);
        MOE(*mo, .op = HX_MOE_ROUTE, .tokens = 513, .ties = 1,
            .desc.logits_dtype = dtypes[i % 3]);
    }
    MOE(deepseek, .op = HX_MOE_ROUTE, .tokens = 64, .ties = 1, .strided = 1,
        .desc.logits_dtype = XATTN_BF16);
    /* NaN in, NaN out: NaN, +inf and −inf logits in every mode (every
     * logits dtype), and a NaN route bias. */
    for (int i = 0; i < num_models; i++)
        MOE(*models[i], .op = HX_MOE_ROUTE, .tokens = 33, .nonfinite = HX_NONFINITE_LOGITS,
            .desc.logits_dtype = dtypes[i % 3], .strided = i == 2);
    MOE(deepseek, .op = HX_MOE_ROUTE, .tokens = 7, .nonfinite = HX_NONFINITE_BIAS);
    MOE(singletons, .op = HX_MOE_ROUTE, .tokens = 7, .nonfinite = HX_NONFINITE_BIAS,
        .desc.logits_dtype = XATTN_F16);

    /* Dispatch: T = 0, 1, 7, 513; alignment 1, 16, 64 and the planner's;
     * every dtype; dropped ids; experts from one to 256, most of them empty
     * when T·k is small. */
    static const int32_t aligns[] = {1, 16, 64};
    static const int32_t lengths[] = {0, 1, 7, 513};
    for (int t = 0; t < 4; t++)
        for (int a = 0; a < 3; a++)
            MOE(mixtral, .op = HX_MOE_DISPATCH, .tokens = lengths[t], .desc.align = aligns[a],
                .desc.dtype = dtypes[(t + a) % 3], .drop_every = t % 2 ? 5 : 0);
    MOE(deepseek, .op = HX_MOE_DISPATCH, .tokens = 513, .desc.align = 16, .drop_every = 7,
        .desc.dtype = XATTN_BF16, .desc.hidden = 128);
    MOE(deepseek, .op = HX_MOE_DISPATCH, .tokens = 7, .desc.align = 64, .desc.dtype = XATTN_F16);
    MOE(llama4, .op = HX_MOE_DISPATCH, .tokens = 513, .desc.align = 1, .desc.hidden = 256);
    MOE(qwen3, .op = HX_MOE_DISPATCH, .tokens = 513, .desc.dtype = XATTN_F16);
    MOE(qwen3, .op = HX_MOE_DISPATCH, .tokens = 7, .desc.max_tokens = 513, .desc.align = 16);
    MOE(qwen15, .op = HX_MOE_DISPATCH, .tokens = 7, .desc.align = 16, .drop_every = 3,
        .strided = 1, .desc.hidden = 100);
    MOE(gpt_oss, .op = HX_MOE_DISPATCH, .tokens = 40, .desc.align = 1, .drop_every = 2,
        .strided = 1, .desc.dtype = XATTN_BF16);
    /* More than 8 MiB of permuted rows: the CPU backend writes them with
     * streaming stores from there on (moe_ops.c, STREAM_MIN_BYTES). */
    MOE(qwen3, .op = HX_MOE_DISPATCH, .tokens = 513, .desc.hidden = 520, .drop_every = 9);
    /* Weights on the input (Llama-4's form, and with k > 1): each row
     * scaled as it is copied; past 8 MiB through the streaming path, once
     * with rows that streaming stores cannot take (odd H in f16). */
    MOE(llama4, .op = HX_MOE_DISPATCH, .tokens = 7, .desc.align = 16, .desc.dtype = XATTN_F16,
        .strided = 1);
    MOE(llama4, .op = HX_MOE_DISPATCH, .tokens = 40, .desc.align = 0, .drop_every = 2,
        .desc.dtype = XATTN_BF16);
    MOE(llama4, .op = HX_MOE_DISPATCH, .tokens = 513, .desc.align = 1, .desc.hidden = 4104);
    MOE(llama4, .op = HX_MOE_DISPATCH, .tokens = 513, .desc.align = 1, .desc.hidden = 8195,
        .desc.dtype = XATTN_F16);
    MOE(qwen3, .op = HX_MOE_DISPATCH, .tokens = 33, .desc.align = 16, .drop_every = 5,
        .desc.dtype = XATTN_BF16, .desc.flags = XATTN_MOE_WEIGHTS_ON_INPUT, .strided = 1);

    /* Experts: every activation × weight dtype, both activations, each
     * alignment; segments from empty to hundreds of rows; sizes that are
     * not multiples of a vector. */
    for (int x = 0; x < 3; x++)
        for (int w = 0; w < 3; w++)
            MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 33, .desc.dtype = dtypes[x],
                .desc.weight_dtype = dtypes[w], .desc.activation = (x + w) % 2,
                .desc.align = aligns[(x + 2 * w) % 3], .desc.hidden = 128, .desc.inter = 64);
    MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 513, .desc.align = 16, .desc.hidden = 256,
        .desc.inter = 128, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16);
    MOE(qwen3, .op = HX_MOE_EXPERTS, .tokens = 513, .desc.hidden = 64, .desc.inter = 32,
        .desc.dtype = XATTN_F16, .desc.weight_dtype = XATTN_F16,
        .desc.activation = XATTN_MOE_GEGLU);
    MOE(deepseek, .op = HX_MOE_EXPERTS, .tokens = 7, .desc.align = 64, .desc.hidden = 64,
        .desc.inter = 32, .desc.weight_dtype = XATTN_BF16);
    MOE(llama4, .op = HX_MOE_EXPERTS, .tokens = 1, .desc.align = 1, .desc.hidden = 256,
        .desc.inter = 128);
    MOE(llama4, .op = HX_MOE_EXPERTS, .tokens = 0, .desc.align = 16);
    MOE(qwen15, .op = HX_MOE_EXPERTS, .tokens = 61, .desc.align = 16, .desc.hidden = 100,
        .desc.inter = 36, .desc.dtype = XATTN_F16, .desc.weight_dtype = XATTN_BF16,
        .desc.activation = XATTN_MOE_GEGLU);
    MOE(gpt_oss, .op = HX_MOE_EXPERTS, .tokens = 40, .desc.align = 1, .desc.hidden = 72,
        .desc.inter = 40, .strided = 1, .desc.weight_dtype = XATTN_F16);
    MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 50, .desc.hidden = 128, .desc.inter = 64,
        .strided = 1, .desc.dtype = XATTN_BF16, .desc.activation = XATTN_MOE_GEGLU);
    /* Reductions of many K steps (the GPU kernels' pipelines wrap around
     * their buffers) over tiles of several warps each way: 16-bit weights
     * with K a multiple of a 16-byte chunk, and not. */
    MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 129, .desc.align = 0, .desc.hidden = 512,
        .desc.inter = 128, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16);
    MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 65, .desc.align = 0, .desc.hidden = 516,
        .desc.inter = 132, .desc.dtype = XATTN_F16, .desc.weight_dtype = XATTN_F16,
        .desc.activation = XATTN_MOE_GEGLU);
    /* GPT-OSS's experts: every bias dtype, activation and weight dtype
     * mixed; the clamp at the GPT-OSS limit and at smaller ones, another
     * alpha; segments of one to a few hundred rows (T 1, 33, 513); the
     * biases and the layout one at a time on other activations; NaN in x. */
    for (int b = 0; b < 3; b++)
        MOE(gpt_oss, .op = HX_MOE_EXPERTS, .tokens = 33, .desc.dtype = dtypes[b],
            .desc.weight_dtype = dtypes[(b + 1) % 3], .desc.bias_dtype = dtypes[(b + 2) % 3],
            .desc.swiglu_limit = b == 1 ? 0.0f : 2.0f, .desc.align = aligns[b],
            .desc.hidden = 128, .desc.inter = 72);
    MOE(gpt_oss, .op = HX_MOE_EXPERTS, .tokens = 513, .desc.align = 16, .desc.hidden = 96,
        .desc.inter = 48, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16,
        .desc.bias_dtype = XATTN_BF16);
    MOE(gpt_oss, .op = HX_MOE_EXPERTS, .tokens = 1, .desc.align = 1, .desc.hidden = 136,
        .desc.inter = 40, .desc.swiglu_alpha = 1.0f, .desc.swiglu_limit = 1.5f);
    MOE(gpt_oss, .op = HX_MOE_EXPERTS, .tokens = 0, .desc.align = 16);
    MOE(gpt_oss, .op = HX_MOE_EXPERTS, .tokens = 33, .desc.align = 1, .desc.hidden = 64,
        .desc.inter = 40, .desc.swiglu_limit = 2.0f, .nonfinite = HX_NONFINITE_X);
    MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 65, .desc.align = 16, .desc.hidden = 64,
        .desc.inter = 48, .desc.flags = XATTN_MOE_EXPERT_B2, .desc.bias_dtype = XATTN_F16);
    MOE(mixtral, .op = HX_MOE_EXPERTS, .tokens = 65, .desc.align = 1, .desc.hidden = 72,
        .desc.inter = 36, .desc.flags = XATTN_MOE_EXPERT_B1 | XATTN_MOE_W1_INTERLEAVED,
        .desc.activation = XATTN_MOE_GEGLU, .desc.dtype = XATTN_BF16,
        .desc.weight_dtype = XATTN_BF16, .desc.bias_dtype = XATTN_BF16);
    MOE(qwen15, .op = HX_MOE_EXPERTS, .tokens = 33, .desc.align = 16, .desc.hidden = 64,
        .desc.inter = 32, .desc.flags = XATTN_MOE_W1_INTERLEAVED, .desc.dtype = XATTN_F16,
        .strided = 1);

    /* Combine: every dtype, with and without accumulate, dropped ids. */
    for (int t = 0; t < 3; t++) {
        MOE(mixtral, .op = HX_MOE_COMBINE, .tokens = 513, .desc.dtype = dtypes[t],
            .desc.hidden = 128, .desc.align = 16);
        MOE(deepseek, .op = HX_MOE_COMBINE, .tokens = 33, .desc.dtype = dtypes[t],
            .accumulate = 1, .drop_every = 5, .desc.align = 1);
    }
    MOE(qwen15, .op = HX_MOE_COMBINE, .tokens = 7, .accumulate = 1, .drop_every = 3,
        .desc.hidden = 100, .desc.dtype = XATTN_F16, .strided = 1);
    MOE(llama4, .op = HX_MOE_COMBINE, .tokens = 1, .desc.hidden = 256, .desc.dtype = XATTN_BF16);
    MOE(llama4, .op = HX_MOE_COMBINE, .tokens = 0, .accumulate = 1);
    MOE(gpt_oss, .op = HX_MOE_COMBINE, .tokens = 40, .drop_every = 2, .strided = 1,
        .desc.dtype = XATTN_BF16);
    /* Weights on the input: rows summed unweighted. */
    MOE(llama4, .op = HX_MOE_COMBINE, .tokens = 513, .accumulate = 1, .desc.hidden = 128,
        .desc.dtype = XATTN_F16, .desc.align = 16);
    MOE(qwen15, .op = HX_MOE_COMBINE, .tokens = 33, .drop_every = 3, .strided = 1,
        .desc.hidden = 100, .desc.dtype = XATTN_BF16, .desc.flags = XATTN_MOE_WEIGHTS_ON_INPUT);

    /* The fused forward: every model, mixed dtypes, ties, accumulate. */
    MOE(mixtral, .op = HX_MOE_FORWARD, .tokens = 513, .desc.hidden = 256, .desc.inter = 128,
        .desc.align = 16, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16,
        .desc.logits_dtype = XATTN_F32);
    MOE(mixtral, .op = HX_MOE_FORWARD, .tokens = 7, .desc.hidden = 128, .desc.inter = 64,
        .desc.align = 1, .accumulate = 1, .ties = 1);
    MOE(qwen3, .op = HX_MOE_FORWARD, .tokens = 513, .desc.hidden = 128, .desc.inter = 64,
        .desc.align = 16, .desc.dtype = XATTN_F32, .desc.weight_dtype = XATTN_BF16,
        .desc.logits_dtype = XATTN_BF16);
    MOE(qwen3, .op = HX_MOE_FORWARD, .tokens = 1, .desc.max_tokens = 513, .desc.hidden = 128,
        .desc.inter = 64, .desc.align = 64, .desc.dtype = XATTN_F16,
        .desc.weight_dtype = XATTN_F16);
    MOE(deepseek, .op = HX_MOE_FORWARD, .tokens = 513, .desc.align = 16,
        .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16, .desc.logits_dtype = XATTN_F32);
    MOE(deepseek, .op = HX_MOE_FORWARD, .tokens = 7, .ties = 1, .accumulate = 1,
        .desc.align = 64, .desc.dtype = XATTN_F32, .desc.weight_dtype = XATTN_F16);
    MOE(gpt_oss, .op = HX_MOE_FORWARD, .tokens = 513, .desc.hidden = 128, .desc.inter = 64,
        .desc.align = 1, .desc.dtype = XATTN_F16, .desc.weight_dtype = XATTN_BF16,
        .desc.logits_dtype = XATTN_F16, .desc.activation = XATTN_MOE_GEGLU);
    MOE(llama4, .op = HX_MOE_FORWARD, .tokens = 513, .desc.hidden = 256, .desc.inter = 128,
        .desc.align = 0, .accumulate = 1);
    MOE(llama4, .op = HX_MOE_FORWARD, .tokens = 0, .desc.align = 16);
    MOE(qwen15, .op = HX_MOE_FORWARD, .tokens = 513, .desc.hidden = 100, .desc.inter = 36,
        .desc.align = 16, .ties = 1, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_F32,
        .desc.logits_dtype = XATTN_BF16, .desc.activation = XATTN_MOE_GEGLU);
    MOE(grouped60, .op = HX_MOE_FORWARD, .tokens = 77, .desc.hidden = 72, .desc.inter = 40,
        .desc.align = 1, .strided = 1, .desc.dtype = XATTN_F16, .desc.weight_dtype = XATTN_F32,
        .desc.logits_dtype = XATTN_BF16);
    MOE(singletons, .op = HX_MOE_FORWARD, .tokens = 33, .ties = 1, .desc.align = 0,
        .desc.dtype = XATTN_F32, .desc.weight_dtype = XATTN_F32);
    MOE(one_group, .op = HX_MOE_FORWARD, .tokens = 7, .desc.align = 64, .accumulate = 1,
        .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_F16,
        .desc.activation = XATTN_MOE_GEGLU);
    /* The layers as GPT-OSS and Llama-4 compute them, and with the old
     * forms' options mixed in; NaN in, NaN out through the whole layer. */
    MOE(gpt_oss, .op = HX_MOE_FORWARD, .tokens = 513, .desc.hidden = 128, .desc.inter = 64,
        .desc.align = 0, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16,
        .desc.logits_dtype = XATTN_BF16, .desc.bias_dtype = XATTN_BF16);
    MOE(gpt_oss, .op = HX_MOE_FORWARD, .tokens = 7, .desc.hidden = 72, .desc.inter = 40,
        .desc.align = 16, .accumulate = 1, .desc.swiglu_limit = 2.0f, .strided = 1);
    MOE(gpt_oss, .op = HX_MOE_FORWARD, .tokens = 0, .desc.align = 1);
    MOE(llama4, .op = HX_MOE_FORWARD, .tokens = 33, .desc.hidden = 128, .desc.inter = 64,
        .desc.align = 1, .desc.dtype = XATTN_BF16, .desc.weight_dtype = XATTN_BF16,
        .nonfinite = HX_NONFINITE_LOGITS);
    MOE(llama4, .op = HX_MOE_FORWARD, .tokens = 7, .desc.hidden = 64, .desc.inter = 32,
        .desc.align = 16, .strided = 1, .desc.dtype = XATTN_F16,
        .desc.flags = GPT_OSS_FORM, .desc.activation = XATTN_MOE_SWIGLU_CLAMPED,
        .desc.bias_dtype = XATTN_F16);
    MOE(qwen3, .op = HX_MOE_FORWARD, .tokens = 33, .desc.hidden = 64, .desc.inter = 32,
        .desc.align = 16, .desc.flags = XATTN_MOE_WEIGHTS_ON_INPUT, .ties = 1);
    MOE(mixtral, .op = HX_MOE_FORWARD, .tokens = 33, .desc.hidden = 64, .desc.inter = 32,
        .desc.align = 1, .nonfinite = HX_NONFINITE_LOGITS, .desc.dtype = XATTN_F16,
        .desc.logits_dtype = XATTN_F16);
    MOE(deepseek, .op = HX_MOE_FORWARD, .tokens = 7, .desc.align = 16,
        .nonfinite = HX_NONFINITE_BIAS, .desc.hidden = 64, .desc.inter = 32);
    return ret;
}

/* ---- the catalogue ------------------------------------------------------------ */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const hx_case *)a)->name, ((const hx_case *)b)->name);
}

int hx_catalogue_build(hx_catalogue *cat)
{
    memset(cat, 0, sizeof *cat);
    for (int i = 0; hx_ref_test_names[i]; i++) {
        hx_case *c = push(cat);
        if (!c) goto oom;
        c->kind = HX_REF;
        c->ref_test = i;
        snprintf(c->name, sizeof c->name, "%s", hx_ref_test_names[i]);
    }
    for (int i = 0; hx_ref_moe_test_names[i]; i++) {
        hx_case *c = push(cat);
        if (!c) goto oom;
        c->kind = HX_REF_MOE;
        c->ref_test = i;
        snprintf(c->name, sizeof c->name, "%s", hx_ref_moe_test_names[i]);
    }
    if (attn_cases(cat) || kv_cases(cat) || merge_cases(cat) || moe_cases(cat)) goto oom;

    /* Names identify cases (--filter, the seed of each case): no twins. */
    hx_case *sorted = malloc(cat->count * sizeof *sorted);
    if (!sorted) goto oom;
    memcpy(sorted, cat->cases, cat->count * sizeof *sorted);
    qsort(sorted, cat->count, sizeof *sorted, cmp_names);
    for (size_t i = 1; i < cat->count; i++)
        if (!strcmp(sorted[i - 1].name, sorted[i].name)) {
            fprintf(stderr, "xattn check: catalogue bug: two cases named %s\n", sorted[i].name);
            free(sorted);
            hx_catalogue_free(cat);
            return -1;
        }
    free(sorted);
    return 0;
oom:
    fprintf(stderr, "xattn check: cannot build the catalogue (out of memory, or a bug above)\n");
    hx_catalogue_free(cat);
    return -1;
}

void hx_catalogue_free(hx_catalogue *cat)
{
    free(cat->cases);
    memset(cat, 0, sizeof *cat);
}
