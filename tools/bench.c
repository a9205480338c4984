/* xattn bench: achieved FLOP/s and bytes/s of attention and MoE workloads
 * through the public API, against ceilings measured on the same device
 * (DESIGN §7).
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
#include "commands.h"
#include "half.h"
#include "xattn.h"

#define DEFAULT_REPEATS 5
#define DEFAULT_WARMUP 1
#define DEFAULT_SEED 1
#define DEFAULT_BANDWIDTH_MIB 512 /* per array; two arrays, far above any L3 */
#define MAX_CASES 8
/* A repeat shorter than this runs the workload several times (at most
 * MAX_RUNS_PER_REPEAT) between two clock reads. */
#define MIN_REPEAT_SECONDS 1e-3
#define MAX_RUNS_PER_REPEAT 1000
/* Without --moe-mib, one MoE layer's weights may take this fraction of the
 * host's memory (the fallback when it cannot be read). */
#define MOE_MEMORY_FRACTION 4
#define MOE_FALLBACK_WEIGHT_MIB 4096

typedef struct bench_case {
    char name[32];
    xattn_attn_desc desc;
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
    double flop, bytes; /* per run */
    double median_s, min_s; /* per run */
    int repeats;
    int runs_per_repeat; /* runs timed together in one repeat */
    /* The read ceiling measured in this workload's window (passes right
     * before and right after its runs); 0 when not measured. */
    double window_best, window_median;
    int window_passes;
} bench_result;

/* ---- options ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: xattn bench [options]\n"
        "\n"
        "Measures the device's FLOP/s and bytes/s ceilings, then times attention\n"
        "and MoE workloads through the public API and prints the achieved rates and\n"
        "the percentage of each ceiling (median of the repeats).\n"
        "\n"
        "  --backend NAME      auto|cpu|opencl|cuda|hip (default: XATTN_BACKEND)\n"
        "  --device N          device index within the backend (default: XATTN_DEVICE)\n"
        "  --threads N         CPU worker threads for the backend and the ceilings\n"
        "  --workload LIST     comma list of prefill, decode, moe, all (default),\n"
        "                      ceilings\n"
        "  --dtype T           f32 (default), f16, bf16 (MoE: activations and logits)\n"
        "  --weight-dtype T    MoE weights (default: --dtype)\n"
        "  --repeats N         timed runs per workload (default %d)\n"
        "  --warmup N          untimed runs first (default %d)\n"
        "  --batch N --sq N --sk N --hq N --hkv N --d N\n"
        "                      override those sizes in every attention workload\n"
        "  --dqk N, --dv N     separate head dims (default --d), e.g. 192/128\n"
        "  --causal, --no-causal\n"
        "                      causal mask on / off in every attention workload\n"
        "                      (prefill runs both by default)\n"
        "  --tokens N          MoE tokens T (default: calibrated so that one forward\n"
        "                      takes about a second)\n"
        "  --experts N         MoE experts run, at most the model's (default: all\n"
        "                      whose weights fit in --moe-mib)\n"
        "  --hidden N --inter N\n"
        "                      override H and I in every MoE workload\n"
        "  --moe-mib N         memory for one MoE layer's weights (default: a\n"
        "                      quarter of this host's memory)\n"
        "  --no-ceilings       skip the ceilings (no %% columns)\n"
        "  --bandwidth-mib N   size of each bandwidth array (default %d)\n"
        "  --seed N            input seed (default %d)\n"
        "  --list              print the workloads and their FLOP and byte counts\n"
        "  --json              print JSON on stdout instead of the table\n"
        "  -v, --verbose       also print each plan\n"
        "\n"
        "Workloads (f32 unless --dtype):\n"
        "  prefill-causal, prefill  B=1 Hq=8 Hkv=8 Sq=Sk=4096 D=128\n"
        "  decode                   B=1 Sq=1 Sk=16384 Hq=32 Hkv=8 D=128\n"
        "  mixtral-8x7b             H=4096 I=14336 E=8 k=2, softmax_topk renormalised\n"
        "  qwen3-30b-a3b            H=2048 I=768 E=128 k=8, softmax_topk renormalised\n"
        "  deepseek-v3              H=7168 I=2048 E=256 k=8, sigmoid_grouped, bias,\n"
        "                           groups 8/4, renormalised, scale 2.5\n"
        "  gpt-oss                  H=2880 I=2880 E=128 k=4, topk_softmax; W1 gate/up\n"
        "                           interleaved, biases b1 and b2, clamped SwiGLU\n"
        "  llama-4                  H=5120 I=8192 E=16 k=1, topk_sigmoid, weights on\n"
        "                           the input; a shared expert (I=8192) under it\n"
        "Attention: FLOPs = 2*(Dqk+Dv)*(visible query-key pairs)*Hq; bytes = Q, K, V\n"
        "read once + O written once. MoE: expert GEMM FLOPs = 2*rows*(2I*H + H*I)\n"
        "over the real rows (padding not counted); route, dispatch and combine bytes\n"
        "= each input read once + each output written once (the table says which).\n"
        "The ceilings are measured on this host for CPU-style devices and taken from\n"
        "the backend's caps (estimates) for GPUs.\n",
        DEFAULT_REPEATS, DEFAULT_WARMUP, DEFAULT_BANDWIDTH_MIB, DEFAULT_SEED);
}

static int parse_long(const char *flag, const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "xattn bench: %s '%s': expected an integer in [%ld, %ld]\n", flag, s,
                min, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *flag, const char *s, int min, int max, int *out)
{
    long v;
    if (parse_long(flag, s, min, max, &v)) return -1;
    *out = (int)v;
    return 0;
}

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

static int parse_dtype(const char *flag, const char *s, xattn_dtype *out)
{
    static const xattn_dtype floats[] = {XATTN_F32, XATTN_F16, XATTN_BF16};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        if (!strcmp(s, xattn_dtype_name(floats[i]))) {
            *out = floats[i];
            return 0;
        }
    }
    fprintf(stderr, "xattn bench: %s '%s': valid values are f32 f16 bf16\n", flag, s);
    return -1;
}

static int parse_workloads(const char *s, bench_options *o)
{
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
        else if (!strcmp(tok, "moe"))
            o->workloads |= WORKLOAD_MOE;
        else if (!strcmp(tok, "all"))
            o->workloads |= WORKLOAD_ALL;
        else if (!strcmp(tok, "ceilings"))
            o->ceilings = 1;
        else
            goto bad;
    }
    return 0;
bad:
    fprintf(stderr, "xattn bench: --workload '%s': expected a comma list of "
                    "prefill, decode, moe, all, ceilings\n", s);
    return -1;
}

static const char *const value_flags[] = {
    "--backend", "--device", "--threads", "--dtype", "--weight-dtype", "--repeats",
    "--warmup", "--workload", "--bandwidth-mib", "--moe-mib", "--seed", "--batch", "--sq",
    "--sk", "--hq", "--hkv", "--d", "--dqk", "--dv", "--tokens", "--experts", "--hidden",
    "--inter",
};

static int is_value_flag(const char *flag)
{
    for (size_t i = 0; i < sizeof value_flags / sizeof value_flags[0]; i++)
        if (!strcmp(flag, value_flags[i])) return 1;
    return 0;
}

/* Handle one "--flag value" pair. Returns 0, or -1 after printing why. */
static int apply_value(bench_options *o, const char *flag, const char *value,
                       int *weight_dtype_set)
{
    static const struct {
        const char *flag;
        size_t offset;
    } shape_flags[] = {
        {"--batch", offsetof(bench_shape, batch)}, {"--sq", offsetof(bench_shape, sq)},
        {"--sk", offsetof(bench_shape, sk)},       {"--hq", offsetof(bench_shape, hq)},
        {"--hkv", offsetof(bench_shape, hkv)},     {"--d", offsetof(bench_shape, d)},
        {"--dqk", offsetof(bench_shape, dqk)},     {"--dv", offsetof(bench_shape, dv)},
    };
    static const struct {
        const char *flag;
        size_t offset;
    } moe_flags[] = {
        {"--tokens", offsetof(bench_moe_shape, tokens)},
        {"--experts", offsetof(bench_moe_shape, experts)},
        {"--hidden", offsetof(bench_moe_shape, hidden)},
        {"--inter", offsetof(bench_moe_shape, inter)},
    };
    for (size_t f = 0; f < sizeof shape_flags / sizeof shape_flags[0]; f++)
        if (!strcmp(flag, shape_flags[f].flag))
            return parse_int(flag, value, 1, INT32_MAX,
                             (int *)((char *)&o->shape + shape_flags[f].offset));
    for (size_t f = 0; f < sizeof moe_flags / sizeof moe_flags[0]; f++)
        if (!strcmp(flag, moe_flags[f].flag))
            return parse_int(flag, value, 1, INT32_MAX,
                             (int *)((char *)&o->moe + moe_flags[f].offset));
    if (!strcmp(flag, "--backend")) {
        o->backend_set = 1;
        return parse_backend(value, &o->backend);
    }
    if (!strcmp(flag, "--device")) return parse_int(flag, value, 0, INT32_MAX, &o->device);
    if (!strcmp(flag, "--threads")) return parse_int(flag, value, 1, 1 << 16, &o->threads);
    if (!strcmp(flag, "--dtype")) return parse_dtype(flag, value, &o->dtype);
    if (!strcmp(flag, "--weight-dtype")) {
        *weight_dtype_set = 1;
        return parse_dtype(flag, value, &o->weight_dtype);
    }
    if (!strcmp(flag, "--repeats")) return parse_int(flag, value, 1, 1 << 20, &o->repeats);
    if (!strcmp(flag, "--warmup")) return parse_int(flag, value, 0, 1 << 20, &o->warmup);
    if (!strcmp(flag, "--workload")) return parse_workloads(value, o);
    if (!strcmp(flag, "--bandwidth-mib")) {
        int mib;
        if (parse_int(flag, value, 1, 1 << 20, &mib)) return -1;
        o->bandwidth_bytes = (size_t)mib << 20;
        return 0;
    }
    if (!strcmp(flag, "--moe-mib")) {
        int mib;
        if (parse_int(flag, value, 1, 1 << 24, &mib)) return -1;
        o->moe_weight_bytes = (size_t)mib << 20;
        return 0;
    }
    if (!strcmp(flag, "--seed")) {
        long s;
        if (parse_long(flag, value, 0, INT32_MAX, &s)) return -1;
        o->seed = (uint64_t)s;
        return 0;
    }
    fprintf(stderr, "xattn bench: internal: unhandled option %s\n", flag);
    return -1;
}

/* The memory one MoE layer's weights may take without --moe-mib: a share
 * of this host's memory, where the cpu backend's buffers live. */
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
    o->repeats = DEFAULT_REPEATS;
    o->warmup = DEFAULT_WARMUP;
    o->workloads = WORKLOAD_ALL;
    o->ceilings = 1;
    o->bandwidth_bytes = (size_t)DEFAULT_BANDWIDTH_MIB << 20;
    o->seed = DEFAULT_SEED;
    o->shape.causal = -1;
    int no_ceilings = 0, weight_dtype_set = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(arg, "--json")) o->json = 1;
        else if (!strcmp(arg, "--list")) o->list = 1;
        else if (!strcmp(arg, "-v") || !strcmp(arg, "--verbose")) o->verbose = 1;
        else if (!strcmp(arg, "--causal")) o->shape.causal = 1;
        else if (!strcmp(arg, "--no-causal")) o->shape.causal = 0;
        else if (!strcmp(arg, "--no-ceilings")) no_ceilings = 1;
        else if (!strcmp(arg, "--sweep")) {
            fprintf(stderr, "xattn bench: --sweep: not implemented yet\n");
            return -1;
        } else {
            /* "--flag value" or "--flag=value" */
            char flag[32];
            const char *eq = strchr(arg, '=');
            size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
            if (len >= sizeof flag) len = sizeof flag - 1;
            memcpy(flag, arg, len);
            flag[len] = '\0';
            if (!is_value_flag(flag)) {
                fprintf(stderr, "xattn bench: unknown option '%s' (see --help)\n", arg);
                return -1;
            }
            const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value) {
                fprintf(stderr, "xattn bench: %s needs a value\n", flag);
                return -1;
            }
            if (apply_value(o, flag, value, &weight_dtype_set)) return -1;
        }
    }
    if (no_ceilings) o->ceilings = 0;
    if (!weight_dtype_set) o->weight_dtype = o->dtype;
    if (!o->moe_weight_bytes) o->moe_weight_bytes = default_moe_weight_bytes();
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

static void add_case(bench_case *cases, int *n, const char *name, xattn_attn_desc desc,
                     const bench_shape *shape)
{
    apply_shape(&desc, shape);
    bench_case *c = &cases[(*n)++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->desc = desc;
}

/* The DESIGN §7 workloads. A prefill runs as a causal and a non-causal
 * pair; --causal / --no-causal keep one of a pair, or set the mask of a
 * workload that has no pair. */
static const struct design_workload {
    const char *name;
    unsigned group;   /* WORKLOAD_* */
    int paired;       /* one of a causal / non-causal pair */
    int batch, sq, sk, hq, hkv, d, causal;
} design_workloads[] = {
    {"prefill-causal", WORKLOAD_PREFILL, 1, 1, 4096, 4096, 8, 8, 128, 1},
    {"prefill", WORKLOAD_PREFILL, 1, 1, 4096, 4096, 8, 8, 128, 0},
    {"decode", WORKLOAD_DECODE, 0, 1, 1, 16384, 32, 8, 128, 0},
};
_Static_assert(sizeof design_workloads / sizeof design_workloads[0] <= MAX_CASES,
               "MAX_CASES too small");

static int make_cases(const bench_options *o, bench_case *cases)
{
    int n = 0;
    const bench_shape *s = &o->shape;
    for (size_t i = 0; i < sizeof design_workloads / sizeof design_workloads[0]; i++) {
        const struct design_workload *w = &design_workloads[i];
        if (!(o->workloads & w->group)) continue;
        if (w->paired && s->causal >= 0 && s->causal != w->causal) continue;
        char name[32];
        snprintf(name, sizeof name, "%s%s", w->name,
                 !w->paired && s->causal == 1 ? "-causal" : "");
        add_case(cases, &n, name,
                 attn_desc(o->dtype, w->batch, w->sq, w->sk, w->hq, w->hkv, w->d, w->causal),
                 s);
    }
    return n;
}

/* Query-key pairs a sequence's mask lets through (DESIGN §4: row i sees key
 * j iff i + Sk - Sq - wl <= j <= i + Sk - Sq + wr; -1 = unbounded). */
static double visible_pairs(int64_t sq, int64_t sk, int64_t wl, int64_t wr)
{
    double pairs = 0.0;
    for (int64_t i = 0; i < sq; i++) {
        int64_t diag = i + sk - sq;
        int64_t lo = wl < 0 ? 0 : diag - wl;
        int64_t hi = wr < 0 ? sk - 1 : diag + wr;
        if (lo < 0) lo = 0;
        if (hi > sk - 1) hi = sk - 1;
        if (hi >= lo) pairs += (double)(hi - lo + 1);
    }
    return pairs;
}

static void count_work(const xattn_attn_desc *d, double *flop, double *bytes)
{
    int64_t wl = -1, wr = -1;
    if (d->flags & XATTN_ATTN_WINDOW) {
        wl = d->window_left;
        wr = d->window_right;
    }
    if (d->flags & XATTN_ATTN_CAUSAL) wr = 0;
    double pairs = (double)d->batch * visible_pairs(d->seqlen_q, d->seqlen_k, wl, wr);
    *flop = 2.0 * (double)(d->head_dim_qk + d->head_dim_v) * pairs * d->num_q_heads;
    double es = (double)xattn_dtype_size(d->dtype);
    double q = (double)d->batch * d->seqlen_q * d->num_q_heads;
    double kv = (double)d->batch * d->seqlen_k * d->num_kv_heads;
    *bytes = es * (q * d->head_dim_qk + kv * d->head_dim_qk + kv * d->head_dim_v +
                   q * d->head_dim_v);
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
            int dev;
            if (parse_int("XATTN_DEVICE", env_device, 0, INT32_MAX, &dev)) return -1;
            opts.device = dev;
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

static int measure_ceilings(const bench_options *o, const xattn_device_caps *caps,
                            bench_ceilings *c)
{
    memset(c, 0, sizeof *c);
    if (caps->style != XATTN_DEVICE_STYLE_CPU) {
        /* A GPU's own ceilings need device kernels that the public API does
         * not expose; use the backend's estimates and say so. */
        c->measured = 0;
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
    c->measured = 1;
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

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
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
} attn_buffers;

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
    count_work(d, &r->flop, &r->bytes);

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
    const int64_t ks[4] = {d->batch, d->seqlen_k, d->num_kv_heads, d->head_dim_qk};
    const int64_t vs[4] = {d->batch, d->seqlen_k, d->num_kv_heads, d->head_dim_v};
    const int64_t os[4] = {d->batch, d->seqlen_q, d->num_q_heads, d->head_dim_v};
    if (alloc_tensor(ctx, d->dtype, qs, &seed, &b.q, &args.q, 1, r) ||
        alloc_tensor(ctx, d->dtype, ks, &seed, &b.k, &args.k, 1, r) ||
        alloc_tensor(ctx, d->dtype, vs, &seed, &b.v, &args.v, 1, r) ||
        alloc_tensor(ctx, d->dtype, os, &seed, &b.o, &args.o, 0, r))
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
    char med[32], best[32];
    snprintf(med, sizeof med, "%.1f %s", r->rate / unit, unit_name);
    snprintf(best, sizeof best, "%.1f %s", r->best / unit, unit_name);
    printf("%-16s %14s %14s  %s, %d thread%s%s\n", label, best, med, r->method, r->threads,
           r->threads == 1 ? "" : "s", note);
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
            continue;
        }
        double flops = r->flop / r->median_s, bps = r->bytes / r->median_s;
        printf(" %10.3f %9.1f", 1e3 * r->median_s, flops / FLOPS_PER_GFLOP);
        xattn_bench_print_pct(flops, o->ceilings ? c->flop_rate : 0);
        printf(" %8.1f", bps / BYTES_PER_GB);
        xattn_bench_print_pct(bps, o->ceilings ? byte_ceiling(c, r) : 0);
        printf("  %s\n", o->ceilings ? xattn_bench_bound(c, r->flop, r->bytes) : "-");
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
    printf("median of %d run%s after %d warm-up; GFLOP/s = 1e9 FLOP/s, GB/s = 1e9 bytes/s\n\n",
           o->repeats, o->repeats == 1 ? "" : "s", o->warmup);
    const char *note = xattn_bench_build_note();
    if (note) printf("warning: %s\n\n", note);
    if (o->ceilings) {
        if (c->measured) {
            printf("%-16s %14s %14s  %s\n", "ceiling", "best (used)", "median",
                   "measured with");
            print_ceiling("FLOP/s (f32)", &c->flops, FLOPS_PER_GFLOP, "GFLOP/s", "");
            print_ceiling("bytes/s", &c->read, BYTES_PER_GB, "GB/s", "");
            print_ceiling("bytes/s (copy)", &c->copy, BYTES_PER_GB, "GB/s", " (for reference)");
        } else {
            printf("ceilings: estimates from the backend's caps (not measured):\n");
            printf("  FLOP/s %.1f GFLOP/s, bytes/s %.1f GB/s\n", c->flop_rate / FLOPS_PER_GFLOP,
                   c->byte_rate / BYTES_PER_GB);
        }
        printf("\n");
    }
    if (n) print_attn_table(o, c, cases, res, n);
    if (n && moe->n) printf("\n");
    if (moe->n) xattn_bench_moe_print_table(o, c, moe->cases, moe->res, moe->n);
}

void xattn_bench_json_string(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch == '\n')
            printf("\\n");
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

void xattn_bench_json_number(double v)
{
    if (isfinite(v))
        printf("%.6g", v);
    else
        printf("null");
}

static void json_rate(const char *key, const xattn_bench_rate *r, const char *sep)
{
    printf("    \"%s\": {\"median\": ", key);
    xattn_bench_json_number(r->rate);
    printf(", \"best\": ");
    xattn_bench_json_number(r->best);
    printf(", \"repeats\": %d, \"threads\": %d, \"method\": ", r->repeats, r->threads);
    xattn_bench_json_string(r->method);
    printf("}%s\n", sep);
}

static void print_json(const bench_options *o, xattn_context *ctx, const bench_ceilings *c,
                       const bench_case *cases, const bench_result *res, int n,
                       const bench_moe_cases *moe)
{
    printf("{\n  \"xattn_version\": ");
    xattn_bench_json_string(xattn_version());
    printf(",\n  \"backend\": ");
    xattn_bench_json_string(xattn_context_backend_name(ctx));
    printf(",\n  \"device\": ");
    xattn_bench_json_string(xattn_context_device_name(ctx));
    printf(",\n  \"dtype\": ");
    xattn_bench_json_string(xattn_dtype_name(o->dtype));
    printf(",\n  \"repeats\": %d,\n  \"warmup\": %d,\n  \"seed\": %" PRIu64 ",\n", o->repeats,
           o->warmup, o->seed);
    const char *note = xattn_bench_build_note();
    if (note) {
        printf("  \"warning\": ");
        xattn_bench_json_string(note);
        printf(",\n");
    }
    printf("  \"ceilings\": ");
    if (!o->ceilings) {
        printf("null,\n");
    } else {
        printf("{\n    \"source\": \"%s\",\n", c->measured ? "measured" : "caps-estimate");
        printf("    \"flops\": ");
        xattn_bench_json_number(c->flop_rate);
        printf(",\n    \"bytes_per_s\": ");
        xattn_bench_json_number(c->byte_rate);
        printf("%s\n", c->measured ? "," : "");
        if (c->measured) {
            json_rate("flops_f32", &c->flops, ",");
            json_rate("read_bytes_per_s", &c->read, ",");
            json_rate("copy_bytes_per_s", &c->copy, "");
        }
        printf("  },\n");
    }
    printf("  \"workloads\": [");
    for (int i = 0; i < n; i++) {
        const xattn_attn_desc *d = &cases[i].desc;
        const bench_result *r = &res[i];
        printf("%s\n    {\"name\": ", i ? "," : "");
        xattn_bench_json_string(cases[i].name);
        printf(", \"op\": \"attention\", \"dtype\": ");
        xattn_bench_json_string(xattn_dtype_name(d->dtype));
        printf(",\n     \"batch\": %d, \"seqlen_q\": %d, \"seqlen_k\": %d, \"num_q_heads\": %d, "
               "\"num_kv_heads\": %d, \"head_dim_qk\": %d, \"head_dim_v\": %d, "
               "\"causal\": %s,\n",
               d->batch, d->seqlen_q, d->seqlen_k, d->num_q_heads, d->num_kv_heads,
               d->head_dim_qk, d->head_dim_v, d->flags & XATTN_ATTN_CAUSAL ? "true" : "false");
        printf("     \"flop\": ");
        xattn_bench_json_number(r->flop);
        printf(", \"bytes\": ");
        xattn_bench_json_number(r->bytes);
        static const char *const names[] = {"ok", "unsupported", "error"};
        printf(", \"status\": \"%s\"", names[r->status]);
        if (r->status != RUN_OK) {
            printf(", \"message\": ");
            xattn_bench_json_string(r->message);
            printf("}");
            continue;
        }
        double flops = r->flop / r->median_s, bps = r->bytes / r->median_s;
        printf(",\n     \"median_s\": ");
        xattn_bench_json_number(r->median_s);
        printf(", \"min_s\": ");
        xattn_bench_json_number(r->min_s);
        printf(", \"repeats\": %d, \"runs_per_repeat\": %d, \"flops\": ", r->repeats,
               r->runs_per_repeat);
        xattn_bench_json_number(flops);
        printf(", \"bytes_per_s\": ");
        xattn_bench_json_number(bps);
        printf(",\n     \"flops_pct\": ");
        if (o->ceilings && c->flop_rate > 0)
            xattn_bench_json_number(100.0 * flops / c->flop_rate);
        else
            printf("null");
        printf(", \"bytes_pct\": ");
        if (o->ceilings && byte_ceiling(c, r) > 0)
            xattn_bench_json_number(100.0 * bps / byte_ceiling(c, r));
        else
            printf("null");
        printf(", \"window_bytes_per_s\": ");
        if (r->window_passes) {
            printf("{\"best\": ");
            xattn_bench_json_number(r->window_best);
            printf(", \"median\": ");
            xattn_bench_json_number(r->window_median);
            printf(", \"passes\": %d}", r->window_passes);
        } else {
            printf("null");
        }
        printf(", \"bound\": ");
        xattn_bench_json_string(o->ceilings ? xattn_bench_bound(c, r->flop, r->bytes) : "-");
        printf(", \"plan\": ");
        xattn_bench_json_string(r->plan);
        printf("}");
    }
    for (int i = 0; i < moe->n; i++) {
        printf("%s\n    ", n + i ? "," : "");
        xattn_bench_moe_print_json(o, c, &moe->cases[i], &moe->res[i]);
    }
    printf("%s]\n}\n", n + moe->n ? "\n  " : "");
}

static void print_list(const bench_case *cases, int n)
{
    printf("%-16s %-5s %5s %6s %6s %4s %4s %4s %4s %-6s %12s %12s\n", "workload", "dtype", "B",
           "Sq", "Sk", "Hq", "Hkv", "Dqk", "Dv", "causal", "GFLOP", "MB");
    for (int i = 0; i < n; i++) {
        const xattn_attn_desc *d = &cases[i].desc;
        double flop, bytes;
        count_work(d, &flop, &bytes);
        printf("%-16s %-5s %5d %6d %6d %4d %4d %4d %4d %-6s %12.3f %12.3f\n", cases[i].name,
               xattn_dtype_name(d->dtype), d->batch, d->seqlen_q, d->seqlen_k, d->num_q_heads,
               d->num_kv_heads, d->head_dim_qk, d->head_dim_v,
               d->flags & XATTN_ATTN_CAUSAL ? "yes" : "no", flop / FLOPS_PER_GFLOP,
               bytes / 1e6);
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
    bench_moe_cases moe;
    moe.n = xattn_bench_moe_cases(&o, moe.cases);
    if (o.list) {
        if (n) print_list(cases, n);
        if (n && moe.n) printf("\n");
        if (moe.n) xattn_bench_moe_print_list(moe.cases, moe.n);
        return 0;
    }

    xattn_context *ctx = NULL;
    if (open_context(&o, &ctx)) return 1;
    xattn_device_caps caps;
    xattn_status st = xattn_context_caps(ctx, &caps);
    if (st != XATTN_OK) {
        fprintf(stderr, "xattn bench: xattn_context_caps: %s: %s\n", xattn_status_string(st),
                xattn_last_error());
        xattn_context_destroy(&ctx);
        return 1;
    }

    bench_ceilings ceil;
    memset(&ceil, 0, sizeof ceil);
    if (o.ceilings && measure_ceilings(&o, &caps, &ceil)) {
        xattn_context_destroy(&ctx);
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
    return errors ? 1 : 0;
}
