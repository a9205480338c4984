/* xattn bench: achieved FLOP/s and bytes/s of attention and MoE workloads
 * through the public API, against ceilings measured on the same device
 * (methodology and figures: docs/perf.md).
 *
 * Benchmarks only: nothing here checks results (that is `xattn check`), but
 * every call's status is checked and a failure is reported with
 * xattn_last_error().
 *
 * A run is a list of cases (one problem each) × repeats. This file has the
 * options, the ceilings, the attention cases and the output; the MoE layer
 * cases are in bench_moe.c. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "ceilings.h"
#include "commands.h"
#include "half.h"
#include "opts.h"
#include "xattn.h"

#define DEFAULT_REPEATS 5
#define DEFAULT_WARMUP 1
#define DEFAULT_SEED 1
#define MAX_CASES 8
/* A repeat shorter than this runs the workload several times (at most
 * MAX_RUNS_PER_REPEAT) between two clock reads. */
#define MIN_REPEAT_SECONDS 1e-3
#define MAX_RUNS_PER_REPEAT 1000
/* In a full run without --moe-mib, one MoE layer's weights may take this
 * fraction of the host's memory (the fallback when it cannot be read). */
#define MOE_MEMORY_FRACTION 4
#define MOE_FALLBACK_WEIGHT_MIB 4096
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* The serving-shaped decode batch, as vLLM and SGLang run decode: B
 * sequences at different lengths over one paged KV cache. Lengths are drawn
 * log-uniformly (many short, a long tail) between the longest / SPREAD and
 * the longest, from a fixed seed so every run has the same batch; pages are
 * handed out in a shuffled order, so a sequence's pages are not
 * contiguous. */
#define SERVING_BATCH 64
#define SERVING_PAGE_SIZE 16
#define SERVING_SPREAD 16
#define SERVING_LENGTH_SEED 0x5e7e1e55ull

/* The two sizes of a run. The default is short (seconds, a few hundred MiB)
 * so a first `xattn bench` answers quickly; --full runs the workloads at
 * the sizes docs/perf.md records. Every explicit option overrides both. */
typedef struct bench_profile {
    int prefill_len;      /* Sq = Sk of the prefill pair */
    int serving_max_len;  /* the serving batch's longest sequence */
    int bandwidth_mib;    /* each array of the bandwidth ceiling */
    int moe_mib;          /* one MoE layer's weights; 0: a share of host memory */
    int moe_tokens;       /* MoE T; 0: calibrated to about a second */
    const char *moe_only; /* the one MoE preset run; NULL: every one */
} bench_profile;

#define QUICK_PREFILL_LEN 1024
#define QUICK_SERVING_MAX_LEN 1024
#define QUICK_BANDWIDTH_MIB 128 /* 4x this host's L3, and any common L3 */
#define QUICK_MOE_MIB 256
#define QUICK_MOE_TOKENS 64
#define FULL_PREFILL_LEN 4096
#define FULL_SERVING_MAX_LEN 8192
#define FULL_BANDWIDTH_MIB 512

static const bench_profile quick_profile = {QUICK_PREFILL_LEN, QUICK_SERVING_MAX_LEN,
                                            QUICK_BANDWIDTH_MIB, QUICK_MOE_MIB,
                                            QUICK_MOE_TOKENS, "qwen3-30b-a3b"};
static const bench_profile full_profile = {FULL_PREFILL_LEN, FULL_SERVING_MAX_LEN,
                                           FULL_BANDWIDTH_MIB, 0, 0, NULL};

static const bench_profile *profile_of(const bench_options *o)
{
    return o->full ? &full_profile : &quick_profile;
}

typedef struct bench_case {
    char name[32];
    xattn_attn_desc desc;
    /* Paged KV (serving): the lengths, drawn from [len_lo, len_hi], and the
     * block table [B, max_pages_per_seq]; NULL for a uniform layout. */
    int32_t *seqlens;
    int32_t *block_table;
    int32_t len_lo, len_hi;
    int64_t total_k;
} bench_case;

/* The MoE layer cases of a run and their results. */
typedef struct bench_moe_cases {
    bench_moe_case cases[BENCH_MOE_MAX_CASES];
    bench_moe_result res[BENCH_MOE_MAX_CASES];
    int n;
} bench_moe_cases;

typedef struct bench_result {
    bench_status status;
    char message[512]; /* why it did not run */
    char plan[1024];   /* xattn_plan_describe, when planned */
    uint64_t flop, bytes; /* per run, exact */
    double median_s, min_s; /* per run */
    int repeats;
    int runs_per_repeat; /* runs timed together in one repeat */
    /* The read ceiling measured in this workload's window (passes right
     * before and right after its runs); 0 when not measured. */
    double window_best, window_median;
    int window_passes;
} bench_result;

/* ---- options ------------------------------------------------------------ */

static int parse_backend(const char *s, xattn_backend_kind *out)
{
    for (int k = 0; k < XATTN_BACKEND_COUNT; k++) {
        const char *name = xattn_backend_kind_name((xattn_backend_kind)k);
        if (name && !strcmp(s, name)) {
            *out = (xattn_backend_kind)k;
            return 0;
        }
    }
    fprintf(stderr, "xattn bench: --backend '%s': valid values are", s);
    for (int k = 0; k < XATTN_BACKEND_COUNT; k++) {
        const char *name = xattn_backend_kind_name((xattn_backend_kind)k);
        if (name) fprintf(stderr, " %s", name);
    }
    fprintf(stderr, "\n");
    return -1;
}

static int parse_backend_opt(void *opts, const char *value)
{
    bench_options *o = opts;
    o->backend_set = 1;
    return parse_backend(value, &o->backend);
}

static int parse_workloads(void *opts, const char *s)
{
    bench_options *o = opts;
    char buf[128];
    if (strlen(s) >= sizeof buf) goto bad;
    strcpy(buf, s);
    o->workloads = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "prefill"))
            o->workloads |= WORKLOAD_PREFILL;
        else if (!strcmp(tok, "decode"))
            o->workloads |= WORKLOAD_DECODE;
        else if (!strcmp(tok, "serving"))
            o->workloads |= WORKLOAD_SERVING;
        else if (!strcmp(tok, "moe"))
            o->workloads |= WORKLOAD_MOE;
        else if (!strcmp(tok, "all"))
            o->workloads |= WORKLOAD_ALL;
        else if (!strcmp(tok, "ceilings"))
            o->ceilings = 1;
        else
            goto bad;
    }
    if (o->workloads || o->ceilings) return 0;
bad:
    fprintf(stderr, "xattn bench: --workload '%s': expected a comma list of "
                    "prefill, decode, serving, moe, all, ceilings\n", s);
    return -1;
}

static int parse_sweep(void *opts, const char *value)
{
    (void)opts, (void)value;
    fprintf(stderr, "xattn bench: --sweep: not implemented yet\n");
    return -1;
}

#define OPT_STRUCT bench_options
static const xattn_opt bench_table[] = {
    OPT_FLAG("full", 0, full, 1, "the full-size workloads (minutes and 6 GiB; see\n"
                                 "below) instead of the short default run"),
    OPT_FLAG("quick", 0, full, 0, "the short default run (seconds, 0.5 GiB)"),
    OPT_CUSTOM("backend", 0, parse_backend_opt, "NAME",
               "auto|cpu|opencl|cuda|hip (default: XATTN_BACKEND)"),
    OPT_INT("device", device, 0, INT32_MAX, "N",
            "device index within the backend (default: XATTN_DEVICE)"),
    OPT_INT("threads", threads, 1, 1 << 16, "N", "CPU worker threads for the backend and the ceilings"),
    OPT_CUSTOM("workload", 0, parse_workloads, "LIST",
               "comma list of prefill, decode, serving, moe, all\n"
               "(default), ceilings"),
    OPT_DTYPE("dtype", dtype, "f32 (default), f16, bf16 (MoE: activations and logits)"),
    OPT_DTYPE("weight-dtype", weight_dtype, "MoE weights (default: --dtype)"),
    OPT_INT("repeats", repeats, 1, 1 << 20, "N",
            "timed runs per workload (default " STRINGIFY(DEFAULT_REPEATS) ")"),
    OPT_INT("warmup", warmup, 0, 1 << 20, "N",
            "untimed runs first (default " STRINGIFY(DEFAULT_WARMUP) ")"),
    OPT_FLAG("no-ceilings", 0, ceilings, 0, "skip the ceilings (no % columns)"),
    OPT_INT("bandwidth-mib", bandwidth_mib, 1, 1 << 20, "N",
            "size of each bandwidth array (default " STRINGIFY(QUICK_BANDWIDTH_MIB) ",\n"
            "--full " STRINGIFY(FULL_BANDWIDTH_MIB) ")"),
    OPT_U64("seed", seed, "N", "input seed (default " STRINGIFY(DEFAULT_SEED) ")"),
    OPT_FLAG("list", 0, list, 1, "print the workloads and their FLOP and byte counts"),
    OPT_FLAG("json", 0, json, 1, "print JSON on stdout instead of the table"),
    OPT_FLAG("verbose", 'v', verbose, 1, "also print each plan"),
    OPT_CUSTOM("sweep", 0, parse_sweep, NULL, "the planner's tile sweep (not implemented yet)"),

    OPT_HEADING("attention shapes (override every attention workload):"),
    OPT_INT("batch", shape.batch, 1, INT32_MAX, "N", "sequences B"),
    OPT_INT("sq", shape.sq, 1, INT32_MAX, "N", "query tokens per sequence"),
    OPT_INT("sk", shape.sk, 1, INT32_MAX, "N", "key tokens per sequence (serving: the longest)"),
    OPT_INT("hq", shape.hq, 1, INT32_MAX, "N", "query heads"),
    OPT_INT("hkv", shape.hkv, 1, INT32_MAX, "N", "KV heads"),
    OPT_INT("d", shape.d, 1, INT32_MAX, "N", "head dim of Q, K and V"),
    OPT_INT("dqk", shape.dqk, 1, INT32_MAX, "N", "head dim of Q and K (default --d), e.g. 192"),
    OPT_INT("dv", shape.dv, 1, INT32_MAX, "N", "head dim of V (default --d), e.g. 128"),
    OPT_FLAG("causal", 0, shape.causal, 1, "causal mask on in every attention workload\n"
                                           "(prefill runs both by default)"),
    OPT_FLAG("no-causal", 0, shape.causal, 0, "causal mask off in every attention workload"),
    OPT_INT("page-size", page_size, 1, INT32_MAX, "P",
            "serving: tokens per KV page (default " STRINGIFY(SERVING_PAGE_SIZE) ")"),

    OPT_HEADING("MoE layers:"),
    OPT_INT("tokens", moe.tokens, 1, INT32_MAX, "N",
            "tokens T (default " STRINGIFY(QUICK_MOE_TOKENS) "; --full: calibrated so\n"
            "that one forward takes about a second)"),
    OPT_INT("experts", moe.experts, 1, INT32_MAX, "N",
            "experts run, at most the model's (default: all\n"
            "whose weights fit in --moe-mib)"),
    OPT_INT("hidden", moe.hidden, 1, INT32_MAX, "N", "hidden size H of every MoE workload"),
    OPT_INT("inter", moe.inter, 1, INT32_MAX, "N", "expert FFN size I of every MoE workload"),
    OPT_INT("moe-mib", moe_mib, 1, 1 << 24, "N",
            "memory for one MoE layer's weights (default\n" STRINGIFY(QUICK_MOE_MIB)
            "; --full: a quarter of this host's memory)"),
};
#undef OPT_STRUCT

static void usage(FILE *f);
static const xattn_cmd bench_cmd = {"xattn bench", "[options]", bench_table,
                                    XATTN_OPTS_COUNT(bench_table), usage};

static void usage(FILE *f)
{
    xattn_opts_print_synopsis(f, &bench_cmd);
    fprintf(f,
        "\n"
        "Measures the device's FLOP/s and bytes/s ceilings, then times attention\n"
        "and MoE workloads through the public API and prints the achieved rates and\n"
        "the percentage of each ceiling (median of the repeats).\n"
        "\n");
    xattn_opts_print(f, &bench_cmd);
    fprintf(f,
        "\n"
        "Workloads (f32 unless --dtype); the default run, then --full:\n"
        "  prefill-causal, prefill  B=1 Hq=8 Hkv=8 D=128, Sq=Sk=" STRINGIFY(QUICK_PREFILL_LEN)
        " (--full " STRINGIFY(FULL_PREFILL_LEN) ")\n"
        "  decode                   B=1 Sq=1 Sk=16384 Hq=32 Hkv=8 D=128\n"
        "  serving-decode           B=" STRINGIFY(SERVING_BATCH) " Sq=1 Hq=32 Hkv=8 D=128, paged KV (page "
        STRINGIFY(SERVING_PAGE_SIZE) ",\n"
        "                           shuffled block table), lengths log-uniform in\n"
        "                           [" STRINGIFY(QUICK_SERVING_MAX_LEN) "/" STRINGIFY(SERVING_SPREAD)
        ", " STRINGIFY(QUICK_SERVING_MAX_LEN) "] (--full [" STRINGIFY(FULL_SERVING_MAX_LEN) "/"
        STRINGIFY(SERVING_SPREAD) ", " STRINGIFY(FULL_SERVING_MAX_LEN) "]), fixed seed\n"
        "  qwen3-30b-a3b            H=2048 I=768 E=128 k=8, softmax_topk renormalised\n"
        "                           (the default run: T=" STRINGIFY(QUICK_MOE_TOKENS)
        ", the experts that fit in\n"
        "                           " STRINGIFY(QUICK_MOE_MIB) " MiB)\n"
        "  mixtral-8x7b             H=4096 I=14336 E=8 k=2, softmax_topk renormalised\n"
        "                           (--full only)\n"
        "  deepseek-v3              H=7168 I=2048 E=256 k=8, sigmoid_grouped, bias,\n"
        "                           groups 8/4, renormalised, scale 2.5 (--full only)\n"
        "  gpt-oss                  H=2880 I=2880 E=128 k=4, topk_softmax; W1 gate/up\n"
        "                           interleaved, biases b1 and b2, clamped SwiGLU\n"
        "                           (--full only)\n"
        "  llama-4                  H=5120 I=8192 E=16 k=1, topk_sigmoid, weights on\n"
        "                           the input; a shared expert (I=8192) under it\n"
        "                           (--full only)\n"
        "Cost, measured on a 2-core x86-64 machine with 23 GiB: the default run about\n"
        "10 s and 0.5 GiB; --full 1 to 3 minutes (by the machine's other load) and\n"
        "6 GiB, most of it MoE weights (a quarter of host memory, at most 5.25 GiB\n"
        "per layer; --moe-mib lowers it).\n"
        "\n"
        "Attention: FLOPs = 2*(Dqk+Dv)*(visible query-key pairs)*Hq; bytes = Q, K, V\n"
        "read once + O written once (serving: K and V of the real lengths, plus the\n"
        "lengths and block-table entries read). MoE: expert GEMM FLOPs =\n"
        "2*rows*(2I*H + H*I) over the real rows (padding not counted); route,\n"
        "dispatch and combine bytes = each input read once + each output written\n"
        "once (the table says which). FLOP and byte counts are exact integers.\n"
        "Ceilings: for a CPU-style device (the cpu backend, OpenCL on PoCL) an FMA\n"
        "loop and a streaming read on this host; for a GPU-style device the\n"
        "backend's own kernels on the device (a copy, an f32 FMA loop, and a\n"
        "matrix-unit loop where it has one: CUDA bf16 mma.sync), about a second;\n"
        "the backend's caps (estimates, labelled so) when it has no such kernels.\n");
}

/* The memory one MoE layer's weights may take in a full run without
 * --moe-mib: a share of this host's memory, where the cpu backend's
 * buffers live. */
static size_t default_moe_weight_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return (size_t)MOE_FALLBACK_WEIGHT_MIB << 20;
    return (size_t)pages / MOE_MEMORY_FRACTION * (size_t)page;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_options(int argc, char **argv, bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->device = -1;
    o->dtype = XATTN_F32;
    o->weight_dtype = -1;
    o->repeats = DEFAULT_REPEATS;
    o->warmup = DEFAULT_WARMUP;
    o->workloads = WORKLOAD_ALL;
    o->ceilings = 1;
    o->page_size = SERVING_PAGE_SIZE;
    o->seed = DEFAULT_SEED;
    o->shape.causal = -1;

    int r = xattn_opts_parse(&bench_cmd, argc, argv, o, NULL);
    if (r != XATTN_OPTS_RUN) return r == XATTN_OPTS_HELP ? 1 : -1;
    const bench_profile *p = profile_of(o);
    if (o->weight_dtype < 0) o->weight_dtype = o->dtype;
    o->bandwidth_bytes = (size_t)(o->bandwidth_mib ? o->bandwidth_mib : p->bandwidth_mib) << 20;
    if (o->moe_mib)
        o->moe_weight_bytes = (size_t)o->moe_mib << 20;
    else if (p->moe_mib)
        o->moe_weight_bytes = (size_t)p->moe_mib << 20;
    else
        o->moe_weight_bytes = default_moe_weight_bytes();
    o->moe_default_tokens = p->moe_tokens;
    o->moe_only = p->moe_only;
    o->progress = isatty(STDERR_FILENO);
    return 0;
}

/* ---- workloads ------------------------------------------------------------ */

static xattn_attn_desc attn_desc(xattn_dtype dtype, int batch, int sq, int sk, int hq,
                                 int hkv, int d, int causal)
{
    xattn_attn_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.dtype = dtype;
    desc.batch = batch;
    desc.num_q_heads = hq;
    desc.num_kv_heads = hkv;
    desc.head_dim_qk = d;
    desc.head_dim_v = d;
    desc.q_layout = XATTN_Q_UNIFORM;
    desc.kv_layout = XATTN_KV_UNIFORM;
    desc.seqlen_q = sq;
    desc.seqlen_k = sk;
    desc.flags = causal ? XATTN_ATTN_CAUSAL : 0;
    return desc;
}

static void apply_shape(xattn_attn_desc *d, const bench_shape *s)
{
    if (s->batch) d->batch = s->batch;
    if (s->sq) d->seqlen_q = s->sq;
    if (s->sk) d->seqlen_k = s->sk;
    if (s->hq) d->num_q_heads = s->hq;
    if (s->hkv) d->num_kv_heads = s->hkv;
    if (s->d) d->head_dim_qk = d->head_dim_v = s->d;
    if (s->dqk) d->head_dim_qk = s->dqk;
    if (s->dv) d->head_dim_v = s->dv;
    if (s->causal >= 0)
        d->flags = s->causal ? (d->flags | XATTN_ATTN_CAUSAL) : (d->flags & ~XATTN_ATTN_CAUSAL);
}

/* The attention workloads: prefill, decode and the serving batch. A prefill runs as a causal
 * and a non-causal pair; --causal / --no-causal keep one of a pair, or set
 * the mask of a workload that has no pair. */
enum { LEN_PREFILL = -1, LEN_SERVING = -2 }; /* lengths the run's size sets */
static const struct design_workload {
    const char *name;
    unsigned group;   /* WORKLOAD_* */
    int paired;       /* one of a causal / non-causal pair */
    int paged;        /* the serving batch: paged KV, lengths drawn per sequence */
    int batch, sq, sk, hq, hkv, d, causal;
} design_workloads[] = {
    {"prefill-causal", WORKLOAD_PREFILL, 1, 0, 1, LEN_PREFILL, LEN_PREFILL, 8, 8, 128, 1},
    {"prefill", WORKLOAD_PREFILL, 1, 0, 1, LEN_PREFILL, LEN_PREFILL, 8, 8, 128, 0},
    {"decode", WORKLOAD_DECODE, 0, 0, 1, 1, 16384, 32, 8, 128, 0},
    {"serving-decode", WORKLOAD_SERVING, 0, 1, SERVING_BATCH, 1, LEN_SERVING, 32, 8, 128, 0},
};
_Static_assert(sizeof design_workloads / sizeof design_workloads[0] <= MAX_CASES,
               "MAX_CASES too small");

static int resolve_len(const bench_options *o, int len)
{
    if (len == LEN_PREFILL) return profile_of(o)->prefill_len;
    if (len == LEN_SERVING) return profile_of(o)->serving_max_len;
    return len;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) from the top 53 bits. */
static double uniform01(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* The serving batch of a paged case: B lengths log-uniform in [lo, hi]
 * (fixed seed), then every sequence's pages from one shuffled list of all
 * pages. Unused block-table columns hold 0 (never read). */
static int make_serving(bench_case *c, int32_t page_size)
{
    xattn_attn_desc *d = &c->desc;
    int32_t hi = d->seqlen_k, lo = hi / SERVING_SPREAD > 0 ? hi / SERVING_SPREAD : 1;
    int32_t B = d->batch;
    c->len_lo = lo;
    c->len_hi = hi;
    c->seqlens = malloc((size_t)B * sizeof *c->seqlens);
    if (!c->seqlens) return -1;
    uint64_t state = SERVING_LENGTH_SEED;
    int64_t pages = 0, max_pages = 0;
    int32_t longest = 0;
    c->total_k = 0;
    for (int32_t b = 0; b < B; b++) {
        double len = round(lo * exp(uniform01(&state) * log((double)hi / lo)));
        int32_t l = len < lo ? lo : len > hi ? hi : (int32_t)len;
        c->seqlens[b] = l;
        c->total_k += l;
        int64_t p = ((int64_t)l + page_size - 1) / page_size;
        pages += p;
        if (p > max_pages) max_pages = p;
        if (l > longest) longest = l;
    }
    if (pages > INT32_MAX || (int64_t)B * max_pages > INT32_MAX) return -1;
    d->kv_layout = XATTN_KV_PAGED;
    d->seqlen_k = longest; /* the batch's longest, as engines plan a step */
    d->page_size = page_size;
    d->num_pages = (int32_t)pages;
    d->max_pages_per_seq = (int32_t)max_pages;

    int32_t *perm = malloc((size_t)pages * sizeof *perm);
    c->block_table = calloc((size_t)B * (size_t)max_pages, sizeof *c->block_table);
    if (!perm || !c->block_table) {
        free(perm);
        return -1;
    }
    for (int32_t i = 0; i < (int32_t)pages; i++) perm[i] = i;
    for (int32_t i = (int32_t)pages - 1; i > 0; i--) { /* Fisher-Yates */
        int32_t j = (int32_t)(splitmix64(&state) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int64_t next = 0;
    for (int32_t b = 0; b < B; b++) {
        int64_t p = ((int64_t)c->seqlens[b] + page_size - 1) / page_size;
        for (int64_t j = 0; j < p; j++) c->block_table[(int64_t)b * max_pages + j] = perm[next++];
    }
    free(perm);
    return 0;
}

static void free_cases(bench_case *cases, int n)
{
    for (int i = 0; i < n; i++) {
        free(cases[i].seqlens);
        free(cases[i].block_table);
    }
}

/* The cases the options select; -1 (after printing why) when a serving
 * batch cannot be built. */
static int make_cases(const bench_options *o, bench_case *cases)
{
    int n = 0;
    const bench_shape *s = &o->shape;
    for (size_t i = 0; i < sizeof design_workloads / sizeof design_workloads[0]; i++) {
        const struct design_workload *w = &design_workloads[i];
        if (!(o->workloads & w->group)) continue;
        if (w->paired && s->causal >= 0 && s->causal != w->causal) continue;
        bench_case *c = &cases[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s%s", w->name,
                 !w->paired && s->causal == 1 ? "-causal" : "");
        c->desc = attn_desc(o->dtype, w->batch, resolve_len(o, w->sq), resolve_len(o, w->sk),
                            w->hq, w->hkv, w->d, w->causal);
        apply_shape(&c->desc, s);
        if (w->paged && make_serving(c, o->page_size)) {
            fprintf(stderr, "xattn bench: %s: cannot build a batch of %d sequences up to %d "
                            "tokens in pages of %d\n", c->name, (int)c->desc.batch,
                    (int)c->desc.seqlen_k, o->page_size);
            free_cases(cases, n);
            return -1;
        }
    }
    return n;
}

/* Query-key pairs a sequence's mask lets through (xattn_attn.h: row i sees
 * key j iff i + Sk - Sq - wl <= j <= i + Sk - Sq + wr; -1 = unbounded). */
static uint64_t visible_pairs(int64_t sq, int64_t sk, int64_t wl, int64_t wr)
{
    uint64_t pairs = 0;
    for (int64_t i = 0; i < sq; i++) {
        int64_t diag = i + sk - sq;
        int64_t lo = wl < 0 ? 0 : diag - wl;
        int64_t hi = wr < 0 ? sk - 1 : diag + wr;
        if (lo < 0) lo = 0;
        if (hi > sk - 1) hi = sk - 1;
        if (hi >= lo) pairs += (uint64_t)(hi - lo + 1);
    }
    return pairs;
}

/* a · b · c · d, or 1 (and *out untouched) on overflow. */
static int mul4(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t *out)
{
    uint64_t ab, abc, abcd;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc) ||
        __builtin_mul_overflow(abc, d, &abcd))
        return 1;
    *out = abcd;
    return 0;
}

/* FLOPs and bytes of one run, exact; -1 when a count passes 2^64. */
static int count_work(const bench_case *c, uint64_t *flop, uint64_t *bytes)
{
    const xattn_attn_desc *d = &c->desc;
    int64_t wl = -1, wr = -1;
    if (d->flags & XATTN_ATTN_WINDOW) {
        wl = d->window_left;
        wr = d->window_right;
    }
    if (d->flags & XATTN_ATTN_CAUSAL) wr = 0;
    uint64_t pairs = 0, keys = 0, tables = 0;
    if (c->seqlens) {
        /* Real lengths: page tails and unused block-table columns are not
         * work; the lengths and the block-table entries in use are read. */
        for (int32_t b = 0; b < d->batch; b++) {
            pairs += visible_pairs(d->seqlen_q, c->seqlens[b], wl, wr);
            keys += (uint64_t)c->seqlens[b];
            tables += sizeof(int32_t) *
                      (1 + ((uint64_t)c->seqlens[b] + d->page_size - 1) / d->page_size);
        }
    } else {
        pairs = (uint64_t)d->batch * visible_pairs(d->seqlen_q, d->seqlen_k, wl, wr);
        keys = (uint64_t)d->batch * (uint64_t)d->seqlen_k;
    }
    uint64_t es = xattn_dtype_size(d->dtype), dims = (uint64_t)d->head_dim_qk + d->head_dim_v;
    uint64_t q_rows = (uint64_t)d->batch * (uint64_t)d->seqlen_q;
    uint64_t q_bytes, kv_bytes;
    if (mul4(2, dims, pairs, (uint64_t)d->num_q_heads, flop) ||
        mul4(es, q_rows, (uint64_t)d->num_q_heads, dims, &q_bytes) ||
        mul4(es, keys, (uint64_t)d->num_kv_heads, dims, &kv_bytes) ||
        __builtin_add_overflow(q_bytes, kv_bytes, bytes) ||
        __builtin_add_overflow(*bytes, tables, bytes))
        return -1;
    return 0;
}

/* ---- progress --------------------------------------------------------------- */

void xattn_bench_show_progress(const char *what, int done, int total, void *user)
{
    const bench_options *o = user;
    if (!o->progress) return;
    fprintf(stderr, "\r\033[Kxattn bench: %s %d/%d", what, done, total);
    fflush(stderr);
}

void xattn_bench_end_progress(const bench_options *o)
{
    if (!o->progress) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

/* ---- context ------------------------------------------------------------------ */

static int open_context(const bench_options *o, xattn_context **ctx)
{
    xattn_status st;
    if (!o->backend_set && o->device < 0 && !o->threads) {
        st = xattn_context_create(ctx);
    } else {
        xattn_context_options opts;
        memset(&opts, 0, sizeof opts);
        opts.backend = o->backend;
        opts.device = o->device < 0 ? 0 : o->device;
        opts.num_threads = o->threads;
        /* The flags replace the environment; say so rather than ignore it. */
        const char *env_backend = getenv("XATTN_BACKEND");
        if (!o->backend_set && env_backend && *env_backend) {
            if (parse_backend(env_backend, &opts.backend)) {
                fprintf(stderr, "xattn bench: (from XATTN_BACKEND)\n");
                return -1;
            }
        }
        const char *env_device = getenv("XATTN_DEVICE");
        if (o->device < 0 && env_device && *env_device) {
            long long dev;
            if (xattn_opts_int("xattn bench", "XATTN_DEVICE", env_device, 0, INT32_MAX, &dev))
                return -1;
            opts.device = (int32_t)dev;
        }
        st = xattn_context_create_with(&opts, ctx);
    }
    if (st != XATTN_OK) {
        fprintf(stderr, "xattn bench: cannot create a context: %s: %s\n",
                xattn_status_string(st), xattn_last_error());
        return -1;
    }
    return 0;
}

/* ---- ceilings ----------------------------------------------------------------- */

/* One rate of the backend's measurement in the bench's form. */
static void rate_from_device(const xattn_ceiling *in, xattn_bench_rate *out)
{
    memset(out, 0, sizeof *out);
    out->rate = in->median;
    out->best = in->rate;
    out->repeats = in->repeats;
    out->threads = 0; /* the device's own, not this host's */
    snprintf(out->method, sizeof out->method, "%s", in->method);
}

/* A GPU's ceilings from the backend's own kernels (a copy, an FMA loop and
 * a matrix-unit loop where it has them). Returns -1 with c->caps_reason
 * when the backend measures none or the measurement failed. */
static int device_ceilings(const bench_options *o, xattn_context *ctx, bench_ceilings *c)
{
    xattn_bench_show_progress("ceiling: measuring on the device", 0, 1, (void *)o);
    xattn_ceilings d;
    xattn_status st = xattn_context_measure_ceilings(ctx, &d);
    xattn_bench_end_progress(o);
    if (st != XATTN_OK) {
        const char *why = xattn_last_error();
        snprintf(c->caps_reason, sizeof c->caps_reason, "%s: %s", xattn_status_string(st),
                 why && *why ? why : "(no detail message)");
        if (st != XATTN_ERR_UNSUPPORTED)
            fprintf(stderr, "xattn bench: device ceilings failed (%s); using the caps "
                            "estimates\n", c->caps_reason);
        return -1;
    }
    c->source = CEILINGS_DEVICE;
    rate_from_device(&d.flops_f32, &c->flops);
    rate_from_device(&d.bytes_per_s, &c->copy);
    rate_from_device(&d.flops_matrix, &c->matrix);
    c->matrix_dtype = d.flops_matrix.rate > 0 ? xattn_dtype_name(d.matrix_dtype) : NULL;
    c->device_seconds = d.seconds;
    /* f16/bf16 run on the matrix units where the backend measured them
     * (one rate for f16 and bf16: the units run both alike), else on FMAs
     * in f32 (the OpenCL kernels); a GPU's traffic is held against its copy
     * rate. */
    c->flop_rate = o->dtype != XATTN_F32 && c->matrix.best > 0 ? c->matrix.best : c->flops.best;
    c->byte_rate = c->copy.best;
    return 0;
}

static int measure_ceilings(const bench_options *o, xattn_context *ctx,
                            const xattn_device_caps *caps, bench_ceilings *c)
{
    memset(c, 0, sizeof *c);
    if (caps->style != XATTN_DEVICE_STYLE_CPU) {
        if (device_ceilings(o, ctx, c) == 0) return 0;
        /* The backend has no ceiling kernels (or they failed): use its
         * estimates and say so. */
        c->source = CEILINGS_CAPS;
        c->flop_rate = o->dtype == XATTN_F32 ? caps->peak_flops_f32 : caps->peak_flops_f16;
        c->byte_rate = caps->peak_bytes_per_s;
        return 0;
    }
    /* The device is this host's CPU (the cpu backend, or OpenCL on PoCL): use
     * as many threads as the backend does. f16/bf16 inputs are computed in
     * f32 on CPUs, so the f32 ceiling applies to every dtype. */
    int threads = o->threads ? o->threads
                             : (caps->compute_units ? (int)caps->compute_units
                                                    : omp_get_max_threads());
    int repeats = o->repeats > CEILING_MIN_REPEATS ? o->repeats : CEILING_MIN_REPEATS;
    c->source = CEILINGS_HOST;
    xattn_bench_flops_f32(threads, repeats, &c->flops, xattn_bench_show_progress, (void *)o);
    if (xattn_bench_bytes(threads, repeats, o->bandwidth_bytes, &c->read, &c->copy,
                          xattn_bench_show_progress, (void *)o)) {
        xattn_bench_end_progress(o);
        fprintf(stderr, "xattn bench: bandwidth ceiling: %s (try --bandwidth-mib)\n",
                c->read.method);
        return -1;
    }
    xattn_bench_end_progress(o);
    /* A ceiling is what the machine can do: other load only ever lowers a
     * rate, so the best repeat is the estimate (the median is printed too).
     * Attention traffic is almost all reads (decode: K and V), so the read
     * rate is the bytes/s ceiling; the copy rate is printed for reference. */
    c->flop_rate = c->flops.best;
    c->byte_rate = c->read.best;
    c->reader = xattn_bench_reader_create(threads, o->bandwidth_bytes);
    return 0;
}

/* ---- inputs and timing (shared with bench_moe.c) ------------------------------ */

/* A repeat of a short workload runs it several times, so that launch and
 * timer overheads do not dominate. */
int xattn_bench_runs_per_repeat(double seconds)
{
    if (seconds >= MIN_REPEAT_SECONDS) return 1;
    if (seconds * MAX_RUNS_PER_REPEAT < MIN_REPEAT_SECONDS) return MAX_RUNS_PER_REPEAT;
    return (int)(MIN_REPEAT_SECONDS / seconds) + 1;
}

void xattn_bench_fill_random(void *dst, xattn_dtype dtype, size_t n, float scale,
                             uint64_t *state)
{
    for (size_t i = 0; i < n; i++) {
        float x = scale * ((float)(splitmix64(state) >> 40) * (1.0f / 8388608.0f) - 1.0f);
        switch (dtype) {
        case XATTN_F16: ((uint16_t *)dst)[i] = xattn_f32_to_f16(x); break;
        case XATTN_BF16: ((uint16_t *)dst)[i] = xattn_f32_to_bf16(x); break;
        default: ((float *)dst)[i] = x; break;
        }
    }
}

int xattn_bench_fail(bench_status *status, char *message, size_t size, const char *call,
                     xattn_status st)
{
    *status = st == XATTN_ERR_UNSUPPORTED ? RUN_UNSUPPORTED : RUN_ERROR;
    const char *detail = xattn_last_error();
    snprintf(message, size, "%s: %s: %s", call, xattn_status_string(st),
             detail && *detail ? detail : "(no detail message)");
    return -1;
}

/* Passes of the read probe around a workload's runs, so its percentage
 * compares with the bandwidth of the same moment. */
void xattn_bench_window_passes(xattn_bench_reader *reader, int n, double *rates, int *count)
{
    for (int i = 0; i < n; i++) rates[(*count)++] = xattn_bench_reader_pass(reader);
}

/* ---- one attention workload ----------------------------------------------------- */

/* Record a failed call in r (see xattn_bench_fail). */
static int fail(bench_result *r, const char *call, xattn_status st)
{
    return xattn_bench_fail(&r->status, r->message, sizeof r->message, call, st);
}

typedef struct attn_buffers {
    xattn_buffer *q, *k, *v, *o, *workspace;
    xattn_buffer *block_table, *seqlens; /* paged */
} attn_buffers;

/* An i32 tensor of rank 1 or 2 holding host values. */
static int upload_i32(xattn_context *ctx, const int32_t *values, int32_t rank,
                      const int64_t *shape, xattn_buffer **buf, xattn_tensor *t, bench_result *r)
{
    size_t n = (size_t)shape[0] * (rank > 1 ? (size_t)shape[1] : 1);
    xattn_status st = xattn_buffer_alloc(ctx, n * sizeof *values, buf);
    if (st != XATTN_OK) return fail(r, "xattn_buffer_alloc", st);
    st = xattn_buffer_write(*buf, 0, values, n * sizeof *values);
    if (st != XATTN_OK) return fail(r, "xattn_buffer_write", st);
    *t = xattn_tensor_contiguous(*buf, 0, XATTN_I32, rank, shape);
    return 0;
}

static int alloc_tensor(xattn_context *ctx, xattn_dtype dtype,
                        const int64_t shape[4], uint64_t *seed, xattn_buffer **buf,
                        xattn_tensor *t, int random, bench_result *r)
{
    double elems = (double)shape[0] * shape[1] * shape[2] * shape[3];
    double bytes = elems * (double)xattn_dtype_size(dtype);
    if (bytes > (double)(SIZE_MAX / 2)) {
        r->status = RUN_ERROR;
        snprintf(r->message, sizeof r->message, "a tensor of %.3g bytes is too large", bytes);
        return -1;
    }
    xattn_status st = xattn_buffer_alloc(ctx, (size_t)bytes, buf);
    if (st != XATTN_OK) return fail(r, "xattn_buffer_alloc", st);
    *t = xattn_tensor_contiguous(*buf, 0, dtype, 4, shape);
    if (!random) return 0;
    void *host = malloc((size_t)bytes);
    if (!host) {
        r->status = RUN_ERROR;
        snprintf(r->message, sizeof r->message, "out of host memory (%.0f bytes)", bytes);
        return -1;
    }
    xattn_bench_fill_random(host, dtype, (size_t)elems, 1.0f, seed);
    st = xattn_buffer_write(*buf, 0, host, (size_t)bytes);
    free(host);
    if (st != XATTN_OK) return fail(r, "xattn_buffer_write", st);
    return 0;
}

/* Run attention n times back to back, then wait for the device; *seconds
 * is the time per run, wait included. */
static int run_batch(xattn_context *ctx, const xattn_plan *plan, const xattn_attn_args *args,
                     int n, double *seconds, bench_result *r)
{
    double t0 = xattn_bench_now();
    for (int i = 0; i < n; i++) {
        xattn_status st = xattn_attn_run(plan, args);
        if (st != XATTN_OK) return fail(r, "xattn_attn_run", st);
    }
    xattn_status st = xattn_context_synchronize(ctx);
    if (st != XATTN_OK) return fail(r, "xattn_context_synchronize", st);
    *seconds = (xattn_bench_now() - t0) / n;
    return 0;
}

static void run_attn_case(xattn_context *ctx, const bench_options *o, const bench_case *c,
                          xattn_bench_reader *reader, bench_result *r)
{
    double window[2 * CEILING_MIN_REPEATS];
    int nwin = 0;
    memset(r, 0, sizeof *r);
    const xattn_attn_desc *d = &c->desc;
    if (count_work(c, &r->flop, &r->bytes)) {
        r->status = RUN_ERROR;
        snprintf(r->message, sizeof r->message, "its FLOP or byte count passes 2^64");
        return;
    }

    xattn_plan *plan = NULL;
    attn_buffers b = {0};
    double *secs = NULL;
    xattn_status st = xattn_plan_create(ctx, d, &plan);
    if (st != XATTN_OK) {
        fail(r, "xattn_plan_create", st);
        goto done;
    }
    st = xattn_plan_describe(plan, r->plan, sizeof r->plan, NULL);
    if (st != XATTN_OK) {
        fail(r, "xattn_plan_describe", st);
        goto done;
    }

    xattn_attn_args args;
    memset(&args, 0, sizeof args);
    uint64_t seed = o->seed;
    const int64_t qs[4] = {d->batch, d->seqlen_q, d->num_q_heads, d->head_dim_qk};
    /* Uniform K and V [B, Sk, Hkv, D]; paged caches [num_pages, page_size, Hkv, D]. */
    const int paged = d->kv_layout == XATTN_KV_PAGED;
    const int64_t rows = paged ? d->num_pages : d->batch, cols = paged ? d->page_size : d->seqlen_k;
    const int64_t ks[4] = {rows, cols, d->num_kv_heads, d->head_dim_qk};
    const int64_t vs[4] = {rows, cols, d->num_kv_heads, d->head_dim_v};
    const int64_t os[4] = {d->batch, d->seqlen_q, d->num_q_heads, d->head_dim_v};
    const int64_t bt[2] = {d->batch, d->max_pages_per_seq};
    if (alloc_tensor(ctx, d->dtype, qs, &seed, &b.q, &args.q, 1, r) ||
        alloc_tensor(ctx, d->dtype, ks, &seed, &b.k, &args.k, 1, r) ||
        alloc_tensor(ctx, d->dtype, vs, &seed, &b.v, &args.v, 1, r) ||
        alloc_tensor(ctx, d->dtype, os, &seed, &b.o, &args.o, 0, r))
        goto done;
    if (paged && (upload_i32(ctx, c->block_table, 2, bt, &b.block_table, &args.block_table, r) ||
                  upload_i32(ctx, c->seqlens, 1, bt, &b.seqlens, &args.seqlens_k, r)))
        goto done;
    size_t ws = xattn_plan_workspace_size(plan);
    if (ws) {
        st = xattn_buffer_alloc(ctx, ws, &b.workspace);
        if (st != XATTN_OK) {
            fail(r, "xattn_buffer_alloc (workspace)", st);
            goto done;
        }
        args.workspace = b.workspace;
    }

    if (reader) xattn_bench_window_passes(reader, CEILING_MIN_REPEATS, window, &nwin);
    double t = 0.0;
    for (int i = 0; i < o->warmup; i++) {
        if (run_batch(ctx, plan, &args, 1, &t, r)) goto done;
        xattn_bench_show_progress(c->name, 0, o->repeats, (void *)o);
    }
    /* One more run sizes the batch of runs timed together in a repeat. */
    if (run_batch(ctx, plan, &args, 1, &t, r)) goto done;
    r->runs_per_repeat = xattn_bench_runs_per_repeat(t);
    secs = malloc((size_t)o->repeats * sizeof *secs);
    if (!secs) {
        r->status = RUN_ERROR;
        snprintf(r->message, sizeof r->message, "out of host memory");
        goto done;
    }
    for (int i = 0; i < o->repeats; i++) {
        if (run_batch(ctx, plan, &args, r->runs_per_repeat, &secs[i], r)) goto done;
        xattn_bench_show_progress(c->name, i + 1, o->repeats, (void *)o);
    }
    r->min_s = secs[0];
    for (int i = 1; i < o->repeats; i++)
        if (secs[i] < r->min_s) r->min_s = secs[i];
    r->median_s = xattn_bench_median(secs, o->repeats);
    r->repeats = o->repeats;
    r->status = RUN_OK;
    if (reader) {
        xattn_bench_window_passes(reader, CEILING_MIN_REPEATS, window, &nwin);
        r->window_passes = nwin;
        r->window_median = xattn_bench_median(window, nwin); /* sorts */
        r->window_best = window[nwin - 1];
    }
done:
    xattn_bench_end_progress(o);
    free(secs);
    xattn_buffer_free(&b.workspace);
    xattn_buffer_free(&b.seqlens);
    xattn_buffer_free(&b.block_table);
    xattn_buffer_free(&b.o);
    xattn_buffer_free(&b.v);
    xattn_buffer_free(&b.k);
    xattn_buffer_free(&b.q);
    xattn_plan_destroy(&plan);
}

/* ---- output ------------------------------------------------------------------ */

const char *xattn_bench_bound(const bench_ceilings *c, double flop, double bytes)
{
    if (c->flop_rate <= 0 || c->byte_rate <= 0 || bytes <= 0) return "-";
    /* Compute-bound when the arithmetic intensity passes the ridge point. */
    return flop / bytes >= c->flop_rate / c->byte_rate ? "compute" : "memory";
}

static void print_ceiling(const char *label, const xattn_bench_rate *r, double unit,
                          const char *unit_name, const char *note)
{
    char med[32], best[32], threads[32] = "";
    if (r->best > 0) {
        snprintf(med, sizeof med, "%.1f %s", r->rate / unit, unit_name);
        snprintf(best, sizeof best, "%.1f %s", r->best / unit, unit_name);
    } else {
        snprintf(med, sizeof med, "-");
        snprintf(best, sizeof best, "-");
    }
    if (r->threads) /* host probes; a device's kernels have no thread count here */
        snprintf(threads, sizeof threads, ", %d thread%s", r->threads, r->threads == 1 ? "" : "s");
    printf("%-16s %14s %14s  %s%s%s\n", label, best, med, r->method, threads, note);
}

/* The bytes/s a workload is compared with: the best read pass of its own
 * window when measured (other load only lowers a rate), else the global
 * ceiling. */
static double byte_ceiling(const bench_ceilings *c, const bench_result *r)
{
    return r->window_passes ? r->window_best : c->byte_rate;
}

void xattn_bench_print_pct(double achieved, double ceiling)
{
    if (ceiling > 0)
        printf(" %6.1f", 100.0 * achieved / ceiling);
    else
        printf(" %6s", "-");
}

void xattn_bench_print_indented(const char *text)
{
    while (*text) {
        size_t len = strcspn(text, "\n");
        printf("    %.*s\n", (int)len, text);
        text += len + (text[len] == '\n');
    }
}

/* Under a serving row: what the batch is (its Sk column is the longest). */
static void print_paged_note(const bench_case *c)
{
    if (!c->seqlens) return;
    const xattn_attn_desc *d = &c->desc;
    int32_t shortest = c->seqlens[0];
    for (int32_t b = 1; b < d->batch; b++)
        if (c->seqlens[b] < shortest) shortest = c->seqlens[b];
    printf("    paged KV, page %d, %d pages in a shuffled block table; Sk per sequence "
           "log-uniform\n    in [%d, %d], fixed seed: shortest %d, mean %.0f, longest %d, "
           "%lld keys in all\n",
           (int)d->page_size, (int)d->num_pages, (int)c->len_lo, (int)c->len_hi, (int)shortest,
           (double)c->total_k / d->batch, (int)d->seqlen_k, (long long)c->total_k);
}

static void print_attn_table(const bench_options *o, const bench_ceilings *c,
                             const bench_case *cases, const bench_result *res, int n)
{
    printf("%-16s %5s %6s %6s %4s %4s %4s %4s %-6s %10s %9s %6s %8s %6s  %s\n", "workload", "B",
           "Sq", "Sk", "Hq", "Hkv", "Dqk", "Dv", "causal", "ms", "GFLOP/s", "%FLOP", "GB/s",
           "%BW", "bound");
    for (int i = 0; i < n; i++) {
        const xattn_attn_desc *d = &cases[i].desc;
        const bench_result *r = &res[i];
        printf("%-16s %5d %6d %6d %4d %4d %4d %4d %-6s", cases[i].name, d->batch, d->seqlen_q,
               d->seqlen_k, d->num_q_heads, d->num_kv_heads, d->head_dim_qk, d->head_dim_v,
               d->flags & XATTN_ATTN_CAUSAL ? "yes" : "no");
        if (r->status != RUN_OK) {
            printf(" %s: %s\n", r->status == RUN_UNSUPPORTED ? "unsupported" : "ERROR",
                   r->message);
            print_paged_note(&cases[i]);
            continue;
        }
        double flops = (double)r->flop / r->median_s, bps = (double)r->bytes / r->median_s;
        printf(" %10.3f %9.1f", 1e3 * r->median_s, flops / FLOPS_PER_GFLOP);
        xattn_bench_print_pct(flops, o->ceilings ? c->flop_rate : 0);
        printf(" %8.1f", bps / BYTES_PER_GB);
        xattn_bench_print_pct(bps, o->ceilings ? byte_ceiling(c, r) : 0);
        printf("  %s\n", o->ceilings ? xattn_bench_bound(c, (double)r->flop, (double)r->bytes)
                                     : "-");
        print_paged_note(&cases[i]);
        if (r->window_passes)
            printf("    %%BW against the read ceiling of this workload's window: best %.1f GB/s, "
                   "median %.1f GB/s of %d passes just before and after its runs\n",
                   r->window_best / BYTES_PER_GB, r->window_median / BYTES_PER_GB,
                   r->window_passes);
        if (o->verbose && r->plan[0]) xattn_bench_print_indented(r->plan);
    }
}

static void print_table(const bench_options *o, xattn_context *ctx, const bench_ceilings *c,
                        const bench_case *cases, const bench_result *res, int n,
                        const bench_moe_cases *moe)
{
    printf("xattn bench %s: backend %s, device %s, dtype %s\n", xattn_version(),
           xattn_context_backend_name(ctx), xattn_context_device_name(ctx),
           xattn_dtype_name(o->dtype));
    printf("%s\n", o->full ? "full run (--full)"
                           : "the short default run; --full runs the full-size workloads");
    printf("median of %d run%s after %d warm-up; GFLOP/s = 1e9 FLOP/s, GB/s = 1e9 bytes/s\n\n",
           o->repeats, o->repeats == 1 ? "" : "s", o->warmup);
    const char *note = xattn_bench_build_note();
    if (note) printf("warning: %s\n\n", note);
    if (o->ceilings) {
        if (c->source == CEILINGS_HOST) {
            printf("ceilings: measured on this host (the device is this CPU)\n");
            printf("%-16s %14s %14s  %s\n", "ceiling", "best (used)", "median",
                   "measured with");
            print_ceiling("FLOP/s (f32)", &c->flops, FLOPS_PER_GFLOP, "GFLOP/s", "");
            print_ceiling("bytes/s", &c->read, BYTES_PER_GB, "GB/s", "");
            print_ceiling("bytes/s (copy)", &c->copy, BYTES_PER_GB, "GB/s", " (for reference)");
        } else if (c->source == CEILINGS_DEVICE) {
            printf("ceilings: measured on the device by the %s backend's kernels (%.2f s)\n",
                   xattn_context_backend_name(ctx), c->device_seconds);
            printf("%-16s %14s %14s  %s\n", "ceiling", "best", "median", "measured with");
            int matrix_used = o->dtype != XATTN_F32 && c->matrix.best > 0;
            print_ceiling("FLOP/s (f32)", &c->flops, FLOPS_PER_GFLOP, "GFLOP/s",
                          matrix_used ? "" : " (used)");
            char label[32];
            snprintf(label, sizeof label, "FLOP/s (%s)", c->matrix_dtype ? c->matrix_dtype
                                                                          : "matrix");
            print_ceiling(label, &c->matrix, FLOPS_PER_GFLOP, "GFLOP/s",
                          matrix_used ? " (used)" : "");
            print_ceiling("bytes/s (copy)", &c->copy, BYTES_PER_GB, "GB/s", " (used)");
        } else {
            printf("ceilings: estimates from the backend's caps (not measured):\n");
            printf("  FLOP/s %.1f GFLOP/s, bytes/s %.1f GB/s\n", c->flop_rate / FLOPS_PER_GFLOP,
                   c->byte_rate / BYTES_PER_GB);
            if (c->caps_reason[0]) printf("  not measured: %s\n", c->caps_reason);
        }
        printf("\n");
    }
    if (n) print_attn_table(o, c, cases, res, n);
    if (n && moe->n) printf("\n");
    if (moe->n) xattn_bench_moe_print_table(o, c, moe->cases, moe->res, moe->n);
}

void xattn_bench_json_pct(xattn_json *j, const char *key, int have, double achieved,
                          double ceiling)
{
    if (have && ceiling > 0)
        xattn_json_double(j, key, 100.0 * achieved / ceiling);
    else
        xattn_json_null(j, key);
}

int xattn_bench_json_status(xattn_json *j, bench_status status, const char *message)
{
    static const char *const names[] = {"ok", "unsupported", "error"};
    xattn_json_string(j, "status", names[status]);
    if (status == RUN_OK) return 0;
    xattn_json_string(j, "message", message);
    xattn_json_object_end(j);
    return 1;
}

void xattn_bench_json_window(xattn_json *j, int passes, double best, double median)
{
    if (!passes) {
        xattn_json_null(j, "window_bytes_per_s");
        return;
    }
    xattn_json_object_begin(j, "window_bytes_per_s");
    xattn_json_double(j, "best", best);
    xattn_json_double(j, "median", median);
    xattn_json_int(j, "passes", passes);
    xattn_json_object_end(j);
}

static void json_rate(xattn_json *j, const char *key, const xattn_bench_rate *r)
{
    xattn_json_object_begin(j, key);
    xattn_json_double(j, "median", r->rate);
    xattn_json_double(j, "best", r->best);
    xattn_json_int(j, "repeats", r->repeats);
    if (r->threads)
        xattn_json_int(j, "threads", r->threads);
    else
        xattn_json_null(j, "threads"); /* a device's kernels */
    xattn_json_string(j, "method", r->method);
    xattn_json_object_end(j);
}

static const char *run_name(const bench_options *o) { return o->full ? "full" : "default"; }

/* One attention workload; r NULL for --list (the shape and counts only). */
static void json_attn_case(xattn_json *j, const bench_options *o, const bench_ceilings *c,
                           const bench_case *bc, const bench_result *r)
{
    const xattn_attn_desc *d = &bc->desc;
    xattn_json_object_begin(j, NULL);
    xattn_json_string(j, "name", bc->name);
    xattn_json_string(j, "op", "attention");
    xattn_json_string(j, "dtype", xattn_dtype_name(d->dtype));
    xattn_json_int(j, "batch", d->batch);
    xattn_json_int(j, "seqlen_q", d->seqlen_q);
    xattn_json_int(j, "seqlen_k", d->seqlen_k);
    xattn_json_int(j, "num_q_heads", d->num_q_heads);
    xattn_json_int(j, "num_kv_heads", d->num_kv_heads);
    xattn_json_int(j, "head_dim_qk", d->head_dim_qk);
    xattn_json_int(j, "head_dim_v", d->head_dim_v);
    xattn_json_bool(j, "causal", (d->flags & XATTN_ATTN_CAUSAL) != 0);
    xattn_json_string(j, "kv_layout", bc->seqlens ? "paged" : "uniform");
    if (bc->seqlens) {
        xattn_json_int(j, "page_size", d->page_size);
        xattn_json_int(j, "num_pages", d->num_pages);
        xattn_json_int(j, "seqlen_k_lo", bc->len_lo);
        xattn_json_int(j, "seqlen_k_hi", bc->len_hi);
        xattn_json_int(j, "total_k", bc->total_k);
        xattn_json_array_begin(j, "seqlens_k");
        for (int32_t b = 0; b < d->batch; b++) xattn_json_int(j, NULL, bc->seqlens[b]);
        xattn_json_array_end(j);
    }
    uint64_t flop = 0, bytes = 0;
    if (r) {
        flop = r->flop;
        bytes = r->bytes;
    } else if (count_work(bc, &flop, &bytes)) {
        xattn_json_null(j, "flop");
        xattn_json_null(j, "bytes");
        xattn_json_object_end(j);
        return;
    }
    xattn_json_uint(j, "flop", flop);
    xattn_json_uint(j, "bytes", bytes);
    if (!r) {
        xattn_json_object_end(j);
        return;
    }
    if (xattn_bench_json_status(j, r->status, r->message)) return;
    double flops = (double)r->flop / r->median_s, bps = (double)r->bytes / r->median_s;
    xattn_json_double(j, "median_s", r->median_s);
    xattn_json_double(j, "min_s", r->min_s);
    xattn_json_int(j, "repeats", r->repeats);
    xattn_json_int(j, "runs_per_repeat", r->runs_per_repeat);
    xattn_json_double(j, "flops", flops);
    xattn_json_double(j, "bytes_per_s", bps);
    xattn_bench_json_pct(j, "flops_pct", o->ceilings, flops, c->flop_rate);
    xattn_bench_json_pct(j, "bytes_pct", o->ceilings, bps, byte_ceiling(c, r));
    xattn_bench_json_window(j, r->window_passes, r->window_best, r->window_median);
    xattn_json_string(j, "bound", o->ceilings ? xattn_bench_bound(c, (double)r->flop,
                                                                   (double)r->bytes)
                                              : "-");
    xattn_json_string(j, "plan", r->plan);
    xattn_json_object_end(j);
}

static void print_json(const bench_options *o, xattn_context *ctx, const bench_ceilings *c,
                       const bench_case *cases, const bench_result *res, int n,
                       const bench_moe_cases *moe)
{
    xattn_json j;
    xattn_json_init(&j, stdout);
    xattn_json_object_begin(&j, NULL);
    xattn_json_string(&j, "xattn_version", xattn_version());
    xattn_json_string(&j, "run", run_name(o));
    if (ctx) {
        xattn_json_string(&j, "backend", xattn_context_backend_name(ctx));
        xattn_json_string(&j, "device", xattn_context_device_name(ctx));
    }
    xattn_json_string(&j, "dtype", xattn_dtype_name(o->dtype));
    if (ctx) {
        xattn_json_int(&j, "repeats", o->repeats);
        xattn_json_int(&j, "warmup", o->warmup);
        xattn_json_uint(&j, "seed", o->seed);
        const char *note = xattn_bench_build_note();
        if (note) xattn_json_string(&j, "warning", note);
        if (!o->ceilings) {
            xattn_json_null(&j, "ceilings");
        } else {
            xattn_json_object_begin(&j, "ceilings");
            xattn_json_string(&j, "source", c->source == CEILINGS_HOST     ? "host"
                                            : c->source == CEILINGS_DEVICE ? "device"
                                                                           : "caps-estimate");
            xattn_json_double(&j, "flops", c->flop_rate);
            xattn_json_double(&j, "bytes_per_s", c->byte_rate);
            if (c->source == CEILINGS_HOST) {
                json_rate(&j, "flops_f32", &c->flops);
                json_rate(&j, "read_bytes_per_s", &c->read);
                json_rate(&j, "copy_bytes_per_s", &c->copy);
            } else if (c->source == CEILINGS_DEVICE) {
                xattn_json_double(&j, "seconds", c->device_seconds);
                json_rate(&j, "flops_f32", &c->flops);
                if (c->matrix.best > 0) {
                    json_rate(&j, "flops_matrix", &c->matrix);
                    xattn_json_string(&j, "matrix_dtype", c->matrix_dtype);
                } else {
                    xattn_json_null(&j, "flops_matrix");
                }
                json_rate(&j, "copy_bytes_per_s", &c->copy);
            } else if (c->caps_reason[0]) {
                xattn_json_string(&j, "not_measured", c->caps_reason);
            }
            xattn_json_object_end(&j);
        }
    }
    xattn_json_array_begin(&j, "workloads");
    for (int i = 0; i < n; i++) json_attn_case(&j, o, c, &cases[i], res ? &res[i] : NULL);
    for (int i = 0; i < moe->n; i++)
        xattn_bench_moe_print_json(&j, o, c, &moe->cases[i], res ? &moe->res[i] : NULL);
    xattn_json_array_end(&j);
    xattn_json_object_end(&j);
    xattn_json_finish(&j);
}

static void print_list(const bench_options *o, const bench_case *cases, int n)
{
    printf("%s run (%s)\n\n", o->full ? "full" : "default",
           o->full ? "without --full: the short default run" : "--full: the full-size one");
    if (!n) return;
    printf("%-16s %-5s %5s %6s %6s %4s %4s %4s %4s %-6s %12s %12s\n", "workload", "dtype", "B",
           "Sq", "Sk", "Hq", "Hkv", "Dqk", "Dv", "causal", "GFLOP", "MB");
    for (int i = 0; i < n; i++) {
        const xattn_attn_desc *d = &cases[i].desc;
        uint64_t flop, bytes;
        printf("%-16s %-5s %5d %6d %6d %4d %4d %4d %4d %-6s", cases[i].name,
               xattn_dtype_name(d->dtype), d->batch, d->seqlen_q, d->seqlen_k, d->num_q_heads,
               d->num_kv_heads, d->head_dim_qk, d->head_dim_v,
               d->flags & XATTN_ATTN_CAUSAL ? "yes" : "no");
        if (count_work(&cases[i], &flop, &bytes))
            printf(" %12s %12s\n", "overflow", "overflow");
        else
            printf(" %12.3f %12.3f\n", (double)flop / FLOPS_PER_GFLOP, (double)bytes / 1e6);
        print_paged_note(&cases[i]);
    }
}

/* ---- entry point ---------------------------------------------------------------- */

int xattn_cmd_bench(int argc, char **argv)
{
    bench_options o;
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;

    bench_case cases[MAX_CASES];
    int n = make_cases(&o, cases);
    if (n < 0) return 1;
    bench_moe_cases moe;
    moe.n = xattn_bench_moe_cases(&o, moe.cases);
    if (o.list) {
        if (o.json) {
            print_json(&o, NULL, NULL, cases, NULL, n, &moe);
        } else {
            print_list(&o, cases, n);
            if (n && moe.n) printf("\n");
            if (moe.n) xattn_bench_moe_print_list(moe.cases, moe.n);
        }
        free_cases(cases, n);
        return 0;
    }

    xattn_context *ctx = NULL;
    if (open_context(&o, &ctx)) {
        free_cases(cases, n);
        return 1;
    }
    xattn_device_caps caps;
    xattn_status st = xattn_context_caps(ctx, &caps);
    if (st != XATTN_OK) {
        fprintf(stderr, "xattn bench: xattn_context_caps: %s: %s\n", xattn_status_string(st),
                xattn_last_error());
        xattn_context_destroy(&ctx);
        free_cases(cases, n);
        return 1;
    }

    bench_ceilings ceil;
    memset(&ceil, 0, sizeof ceil);
    if (o.ceilings && measure_ceilings(&o, ctx, &caps, &ceil)) {
        xattn_context_destroy(&ctx);
        free_cases(cases, n);
        return 1;
    }

    bench_result res[MAX_CASES];
    int errors = 0, skipped = 0;
    for (int i = 0; i < n; i++) {
        run_attn_case(ctx, &o, &cases[i], ceil.reader, &res[i]);
        errors += res[i].status == RUN_ERROR;
        skipped += res[i].status == RUN_UNSUPPORTED;
    }
    for (int i = 0; i < moe.n; i++) {
        xattn_bench_moe_run(ctx, &o, &caps, &ceil, &moe.cases[i], &moe.res[i]);
        errors += moe.res[i].status == RUN_ERROR;
        skipped += moe.res[i].status == RUN_UNSUPPORTED;
    }

    int total = n + moe.n;
    if (o.json)
        print_json(&o, ctx, &ceil, cases, res, n, &moe);
    else {
        print_table(&o, ctx, &ceil, cases, res, n, &moe);
        if (skipped || errors)
            printf("\n%d of %d workloads ran; %d unsupported, %d failed\n",
                   total - skipped - errors, total, skipped, errors);
    }
    fflush(stdout);
    xattn_bench_reader_destroy(&ceil.reader);
    xattn_context_destroy(&ctx);
    free_cases(cases, n);
    return errors ? 1 : 0;
}
