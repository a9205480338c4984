#pragma once
/* What the two halves of `xattn bench` share: bench.c (options, ceilings,
 * attention workloads, output) and bench_moe.c (MoE layer workloads). */
#include <stddef.h>
#include <stdint.h>

#include "bench_ceilings.h"
#include "json.h"
#include "xattn.h"

/* Read passes of the bandwidth probe on each side of a workload; also the
 * fewest repeats a ceiling is measured with. */
#define CEILING_MIN_REPEATS 5
#define BYTES_PER_GB 1e9
#define FLOPS_PER_GFLOP 1e9

/* Workload groups selected with --workload. */
enum {
    WORKLOAD_PREFILL = 1u << 0,
    WORKLOAD_DECODE = 1u << 1,
    WORKLOAD_MOE = 1u << 2,
    WORKLOAD_SERVING = 1u << 3,
    WORKLOAD_ALL = WORKLOAD_PREFILL | WORKLOAD_DECODE | WORKLOAD_MOE | WORKLOAD_SERVING,
};

/* Attention shape overrides; unset ones are 0 (causal: -1). */
typedef struct bench_shape {
    int batch, sq, sk, hq, hkv, d, dqk, dv, causal;
} bench_shape;

/* MoE overrides; unset ones are 0. */
typedef struct bench_moe_shape {
    int tokens;  /* T: skips the calibration */
    int experts; /* experts run, at most the model's */
    int hidden, inter;
} bench_moe_shape;

typedef struct bench_options {
    int backend_set;
    xattn_backend_kind backend;
    int device; /* -1: not given */
    int threads; /* 0: the backend's default (all cores) */
    int dtype;        /* an xattn_dtype */
    int weight_dtype; /* MoE weights: an xattn_dtype; -1 until set (then --dtype) */
    int repeats, warmup;
    unsigned workloads;
    int full;         /* --full: the full-size workloads; else the short default run */
    int ceilings;     /* measure ceilings */
    int json;
    int list;
    int verbose;
    int page_size;    /* serving: tokens per KV page */
    int bandwidth_mib, moe_mib; /* as given; 0: the run's default */
    size_t bandwidth_bytes;
    size_t moe_weight_bytes; /* memory one MoE layer's weights may take */
    const char *moe_only;    /* run only this MoE preset; NULL: every one */
    int moe_default_tokens;  /* T without --tokens; 0: calibrated */
    uint64_t seed;
    bench_shape shape;
    bench_moe_shape moe;
    int progress; /* stderr is a terminal */
} bench_options;

typedef enum bench_status { RUN_OK, RUN_UNSUPPORTED, RUN_ERROR } bench_status;

/* Where the ceilings come from. */
typedef enum bench_ceiling_source {
    CEILINGS_CAPS = 0, /* estimates from the backend's caps, not measured */
    CEILINGS_HOST,     /* measured on this host: the device is this CPU */
    CEILINGS_DEVICE,   /* measured on the device by the backend's own kernels */
} bench_ceiling_source;

typedef struct bench_ceilings {
    bench_ceiling_source source;
    xattn_bench_reader *reader; /* host: the read probe kept for the windows */
    xattn_bench_rate flops, read, copy; /* host: all three; device: flops and copy */
    xattn_bench_rate matrix;    /* device: the matrix-unit loop (rate 0: none) */
    const char *matrix_dtype;   /* device: what the matrix loop ran ("bf16"), or NULL */
    double device_seconds;      /* device: how long the backend's measurement took */
    char caps_reason[256];      /* caps: why nothing was measured */
    double flop_rate, byte_rate; /* the denominators of the % columns */
} bench_ceilings;

/* ---- helpers (bench.c) ----------------------------------------------------- */

/* A progress line on stderr when it is a terminal; user is the options. */
void xattn_bench_show_progress(const char *what, int done, int total, void *user);
void xattn_bench_end_progress(const bench_options *o);

/* Record a failed call in *status and message: UNSUPPORTED is a skip,
 * anything else an error. Returns -1. */
int xattn_bench_fail(bench_status *status, char *message, size_t size, const char *call,
                     xattn_status st);

/* n values uniform in [-scale, scale) in dtype. */
void xattn_bench_fill_random(void *dst, xattn_dtype dtype, size_t n, float scale,
                             uint64_t *state);

/* Runs of a workload to time together in one repeat when one run takes
 * `seconds`, so that launch and timer overheads do not dominate. */
int xattn_bench_runs_per_repeat(double seconds);

/* n passes of the read probe, appended to rates[*count]. */
void xattn_bench_window_passes(xattn_bench_reader *reader, int n, double *rates, int *count);

/* "compute" or "memory" from the ridge point of the ceilings, or "-". */
const char *xattn_bench_bound(const bench_ceilings *c, double flop, double bytes);

/* " %6.1f" of achieved / ceiling, or " -" without a ceiling. */
void xattn_bench_print_pct(double achieved, double ceiling);

/* Indented lines of a multi-line text (a plan) under a table row. */
void xattn_bench_print_indented(const char *text);

/* Percentage of achieved in ceiling as a JSON member, null without one. */
void xattn_bench_json_pct(xattn_json *j, const char *key, int have, double achieved,
                          double ceiling);

/* A workload's "status" member, and its "message" when it did not run; then
 * 1, with the workload's object ended. 0 when it ran. */
int xattn_bench_json_status(xattn_json *j, bench_status status, const char *message);

/* "window_bytes_per_s": the read probe's rate over the workload's window,
 * null when no pass ran. */
void xattn_bench_json_window(xattn_json *j, int passes, double best, double median);

/* ---- MoE layer workloads (bench_moe.c) ------------------------------------- */

#define BENCH_MOE_MAX_CASES 5

/* A model's MoE layer as it runs here: the model's H, I, k and routing,
 * with fewer experts where the weights would not fit. */
typedef struct bench_moe_case {
    const char *name;     /* "deepseek-v3" */
    const char *model;    /* "DeepSeek-V3" */
    int32_t model_experts;
    xattn_moe_desc desc;  /* num_experts: the experts run; max_tokens set when run */
    int32_t shared_inter; /* a shared expert of this FFN size runs over every token and the
                             routed layer adds to it (accumulate); 0: none */
    int tokens;           /* T from --tokens or the default run; 0: calibrated */
    const char *tokens_from; /* with tokens: where it came from */
    int shape_overridden; /* H or I from --hidden / --inter */
    int above_budget;     /* the fewest experts the routing allows exceed --moe-mib */
} bench_moe_case;

/* The timed primitives, in the order forward runs them, then forward (with
 * a shared expert: the shared expert, then forward adding to its output),
 * then the shared expert alone. */
enum { MOE_ROUTE, MOE_DISPATCH, MOE_EXPERTS, MOE_COMBINE, MOE_FORWARD, MOE_SHARED, MOE_STEPS };

typedef struct bench_moe_timing {
    uint64_t flop, bytes;   /* per run, exact */
    double median_s, min_s; /* per run */
    int repeats, runs_per_repeat;
} bench_moe_timing;

typedef struct bench_moe_result {
    bench_status status;
    char message[512];
    char plan[2048];
    int64_t tokens;
    const char *tokens_from; /* why this T: "--tokens", "calibrated", ... */
    int64_t rows;            /* real rows: (token, slot) pairs routed */
    int64_t padded_rows;     /* rows with padding: expert_offsets[E] */
    int32_t align;
    int32_t active_experts;  /* experts that got rows */
    size_t workspace_bytes;
    bench_moe_timing step[MOE_STEPS];
    double window_best, window_median; /* as in the attention results */
    int window_passes;
} bench_moe_result;

/* The MoE cases the options select; returns how many (≤ BENCH_MOE_MAX_CASES). */
int xattn_bench_moe_cases(const bench_options *o, bench_moe_case *cases);

/* Plan, calibrate T, and time every primitive and forward of one case. */
void xattn_bench_moe_run(xattn_context *ctx, const bench_options *o,
                         const xattn_device_caps *caps, const bench_ceilings *c,
                         const bench_moe_case *mc, bench_moe_result *r);

void xattn_bench_moe_print_list(const bench_moe_case *cases, int n);
void xattn_bench_moe_print_table(const bench_options *o, const bench_ceilings *c,
                                 const bench_moe_case *cases, const bench_moe_result *res,
                                 int n);
/* One element of the "workloads" array; r NULL for --list (the case only). */
void xattn_bench_moe_print_json(xattn_json *j, const bench_options *o, const bench_ceilings *c,
                                const bench_moe_case *mc, const bench_moe_result *r);
