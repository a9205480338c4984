/* xattn check: the conformance harness's command line. Runs the reference
 * self-checks, then every case on every selected backend, prints a table
 * and one summary line; exits non-zero on any failure. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "opts.h"

int xattn_cmd_check(int argc, char **argv);

enum { MAX_FILTERS = 32, NAME_WIDTH = 62, HX_EXIT_SKIPPED = 77 };

static const xattn_backend_kind all_backends[] = {XATTN_BACKEND_CPU, XATTN_BACKEND_OPENCL,
                                                  XATTN_BACKEND_CUDA, XATTN_BACKEND_HIP};
#define NUM_BACKENDS (sizeof all_backends / sizeof all_backends[0])

typedef struct options {
    int selected[NUM_BACKENDS];
    int required[NUM_BACKENDS];
    const char *filters[MAX_FILTERS];
    int num_filters;
    uint64_t seed;
    int32_t device; /* XATTN_DEVICE */
    int list, verbose;
    int any_backend; /* --backend given */
} options;

typedef struct tally {
    long passed, failed, skipped;
    long backend_runs; /* backends that ran their cases */
    char **failures; /* repro lines, printed again at the end */
    size_t num_failures;
} tally;

static int backend_index(const char *name, size_t len)
{
    for (size_t i = 0; i < NUM_BACKENDS; i++) {
        const char *n = xattn_backend_kind_name(all_backends[i]);
        if (n && strlen(n) == len && !strncmp(n, name, len)) return (int)i;
    }
    return -1;
}

/* Parse "a,b,c" into flags; returns −1 (and says why) on an unknown name. */
static int parse_backends(const char *list, int *flags, const char *what)
{
    const char *p = list;
    if (!*p) {
        fprintf(stderr, "xattn check: %s: empty (valid: cpu, opencl, cuda, hip)\n", what);
        return -1;
    }
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int i = backend_index(p, len);
        if (i < 0) {
            fprintf(stderr, "xattn check: %s: unknown backend '%.*s' (valid: cpu, opencl, "
                            "cuda, hip)\n", what, (int)len, p);
            return -1;
        }
        flags[i] = 1;
        p += len;
        if (*p == ',') p++;
    }
    return 0;
}

static int parse_backend_opt(void *opts, const char *value)
{
    options *o = opts;
    o->any_backend = 1;
    return parse_backends(value, o->selected, "--backend");
}

static int parse_filter_opt(void *opts, const char *value)
{
    options *o = opts;
    if (o->num_filters == MAX_FILTERS) {
        fprintf(stderr, "xattn check: at most %d --filter options\n", MAX_FILTERS);
        return -1;
    }
    o->filters[o->num_filters++] = value;
    return 0;
}

#define OPT_STRUCT options
static const xattn_opt check_table[] = {
    OPT_CUSTOM("backend", 0, parse_backend_opt, "NAME",
               "cpu, opencl, cuda or hip (repeat or comma-separate;\n"
               "default: all). A backend with no device is SKIPPED."),
    OPT_CUSTOM("filter", 0, parse_filter_opt, "SUBSTR",
               "only cases whose name contains SUBSTR (repeatable: any)"),
    OPT_U64("seed", seed, "N", "reproduce a run (default: a fresh seed, printed)"),
    OPT_FLAG("list", 0, list, 1, "print the case names and exit"),
    OPT_FLAG("verbose", 'v', verbose, 1, "plan descriptions, timings and the reference's cost"),
};
#undef OPT_STRUCT

static void usage(FILE *f);
static const xattn_cmd check_cmd = {
    "xattn check", "[--backend NAME]... [--filter SUBSTR]... [--seed N] [--list] [-v]",
    check_table, XATTN_OPTS_COUNT(check_table), usage};

static void usage(FILE *f)
{
    xattn_opts_print_synopsis(f, &check_cmd);
    fprintf(f,
            "\n"
            "Runs every primitive on every selected backend against the float64\n"
            "reference, on fresh random inputs from a printed seed, with outputs\n"
            "poisoned (NaN) before each run.\n"
            "\n");
    xattn_opts_print(f, &check_cmd);
    fprintf(f,
            "\n"
            "environment: XATTN_REQUIRE_BACKEND=NAME[,NAME] turns a skip of a selected\n"
            "             backend NAME into a failure.\n"
            "             XATTN_BACKEND=NAME (not auto), without --backend, selects and\n"
            "             requires that backend: unavailable is a failure, not a skip.\n"
            "             XATTN_DEVICE=N picks the device within each backend.\n"
            "tolerances:  NMSE f32 1e-10, f16 1e-6, bf16 4e-5 (one row: 1000x that);\n"
            "             LSE abs f32 1e-4, else 2e-3; NaN/Inf must match the reference.\n"
            "             MoE: route ids exact but where reference scores tie within\n"
            "             1e-6 (exact ties: lower index), weights NMSE 1e-10; dispatch\n"
            "             maps and permuted rows bit-exact.\n"
            "exit status: 0 all passed, 1 a failure, 2 bad usage, 77 every selected\n"
            "             backend was skipped (no device).\n");
}

/* 0: run; 1: --help printed; -1: bad usage (printed). */
static int parse_args(int argc, char **argv, options *o)
{
    int seen[XATTN_OPTS_COUNT(check_table)];
    int r = xattn_opts_parse(&check_cmd, argc, argv, o, seen);
    if (r != XATTN_OPTS_RUN) return r == XATTN_OPTS_HELP ? 1 : -1;
    int have_seed = xattn_opts_seen(&check_cmd, seen, "seed") != 0;
    /* An explicitly named backend must run: never a silent skip, and never a
     * silently ignored variable. */
    const char *env_backend = getenv("XATTN_BACKEND");
    if (!o->any_backend && env_backend && *env_backend && strcmp(env_backend, "auto")) {
        if (parse_backends(env_backend, o->selected, "XATTN_BACKEND")) return -1;
        for (size_t i = 0; i < NUM_BACKENDS; i++) o->required[i] |= o->selected[i];
    } else if (!o->any_backend) {
        for (size_t i = 0; i < NUM_BACKENDS; i++) o->selected[i] = 1;
    }
    const char *env_device = getenv("XATTN_DEVICE");
    if (env_device && *env_device) {
        char *end = NULL;
        long dev = strtol(env_device, &end, 10);
        if (*end || dev < 0 || dev > INT32_MAX) {
            fprintf(stderr, "xattn check: XATTN_DEVICE='%s' is not a device index (an integer "
                            ">= 0)\n", env_device);
            return -1;
        }
        o->device = (int32_t)dev;
    }
    const char *req = getenv("XATTN_REQUIRE_BACKEND");
    if (req && *req && parse_backends(req, o->required, "XATTN_REQUIRE_BACKEND")) return -1;
    if (!have_seed) {
        /* Fresh inputs every run; the seed is printed so any run repeats. */
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        o->seed = hx_mix((uint64_t)ts.tv_sec * 1000000007ull, (uint64_t)ts.tv_nsec) % 1000000000ull;
    }
    return 0;
}

static int matches(const options *o, const char *name)
{
    if (o->num_filters == 0) return 1;
    for (int i = 0; i < o->num_filters; i++)
        if (strstr(name, o->filters[i])) return 1;
    return 0;
}

/* Reference self-checks run once, before and without any backend. */
static int is_ref_check(const hx_case *c) { return c->kind == HX_REF || c->kind == HX_REF_MOE; }

static const char *case_dtype(const hx_case *c)
{
    xattn_dtype dt;
    switch (c->kind) {
    case HX_ATTN: dt = c->attn.dtype; break;
    case HX_KV_APPEND: dt = c->kv.dtype; break;
    case HX_MERGE: dt = c->merge.dtype; break;
    case HX_MOE:
        /* Route reads only logits; the other calls are named after x. */
        dt = c->moe.op == HX_MOE_ROUTE ? c->moe.desc.logits_dtype : c->moe.desc.dtype;
        break;
    default: return "f64";
    }
    return xattn_dtype_name(dt) ? xattn_dtype_name(dt) : "?";
}

static void fmt_num(char *buf, size_t size, double x)
{
    if (isnan(x)) snprintf(buf, size, "-");
    else snprintf(buf, size, "%.2e", x);
}

static void print_row(const char *name, const char *backend, const char *dtype,
                      const hx_result *r)
{
    char nmse[24], lse[24];
    fmt_num(nmse, sizeof nmse, r->nmse);
    fmt_num(lse, sizeof lse, r->lse_err);
    static const char *const status[] = {"PASS", "FAIL", "SKIPPED"};
    printf("%-*s %-7s %-5s %10s %10s  %s\n", NAME_WIDTH, name, backend, dtype, nmse, lse,
           status[r->status]);
}

static void record_failure(tally *t, const char *line)
{
    char **f = realloc(t->failures, (t->num_failures + 1) * sizeof *f);
    if (!f) return;
    t->failures = f;
    size_t n = strlen(line) + 1;
    t->failures[t->num_failures] = malloc(n);
    if (t->failures[t->num_failures]) memcpy(t->failures[t->num_failures++], line, n);
}

/* Print the result of one case and count it; a failure names the seed and
 * the command that repeats it. */
static void report(const options *o, tally *t, const hx_case *c, const char *backend,
                   const hx_result *r)
{
    print_row(c->name, backend, case_dtype(c), r);
    if (r->status == HX_FAIL) {
        t->failed++;
        char repro[512];
        snprintf(repro, sizeof repro, "xattn check%s%s --seed %llu --filter '%s'",
                 is_ref_check(c) ? "" : " --backend ", is_ref_check(c) ? "" : backend,
                 (unsigned long long)o->seed, c->name);
        printf("    FAIL %s [%s], seed %llu: %s\n    reproduce: %s\n", c->name, backend,
               (unsigned long long)o->seed, r->message, repro);
        char line[1024];
        snprintf(line, sizeof line, "%s [%s]: %s", c->name, backend, repro);
        record_failure(t, line);
    } else {
        t->passed++;
        if (o->verbose) {
            printf("    backend %.3f s, reference %.3f s, reference cost %.3g MAC\n", r->seconds,
                   r->ref_seconds, c->cost);
            /* The plan description, indented under its row. */
            for (const char *p = r->message; *p;) {
                size_t n = strcspn(p, "\n");
                printf("    | %.*s\n", (int)n, p);
                p += n;
                if (*p) p++;
            }
        }
    }
    fflush(stdout);
}

static hx_result fresh_result(void)
{
    hx_result r;
    memset(&r, 0, sizeof r);
    r.status = HX_PASS;
    r.nmse = NAN;
    r.lse_err = NAN;
    return r;
}

static uint64_t case_seed(const options *o, const hx_case *c)
{
    /* Per case, from the run's seed and the case's name: the same inputs
     * whatever --filter selects, and on every backend. */
    return hx_mix(o->seed, hx_hash(c->name));
}

static void run_backend(const options *o, tally *t, const hx_catalogue *cat, size_t bi,
                        long num_cases)
{
    const xattn_backend_kind kind = all_backends[bi];
    const char *bname = xattn_backend_kind_name(kind);
    char reason[512] = "";
    int32_t devices = 0;
    xattn_status st = xattn_backend_probe(kind, &devices, reason, sizeof reason);
    if (st != XATTN_OK) {
        const char *d = xattn_last_error();
        snprintf(reason, sizeof reason, "probe failed: %s%s%s", xattn_status_string(st),
                 d && *d ? ": " : "", d ? d : "");
        devices = 0;
    }
    if (devices <= 0) {
        if (!reason[0]) snprintf(reason, sizeof reason, "no device");
        hx_result r = fresh_result();
        r.status = o->required[bi] ? HX_FAIL : HX_SKIP;
        char label[64];
        snprintf(label, sizeof label, "(%ld cases)", num_cases);
        print_row(label, bname, "-", &r);
        if (o->required[bi]) {
            printf("    FAIL %s: no device (%s), and XATTN_BACKEND or XATTN_REQUIRE_BACKEND requires it\n", bname,
                   reason);
            t->failed += num_cases;
            char line[700];
            snprintf(line, sizeof line, "backend %s: no device (%s); required", bname, reason);
            record_failure(t, line);
        } else {
            printf("    SKIPPED %s: %s\n", bname, reason);
            t->skipped += num_cases;
        }
        fflush(stdout);
        return;
    }

    xattn_context_options opts;
    memset(&opts, 0, sizeof opts);
    opts.backend = kind;
    opts.device = o->device;
    xattn_context *ctx = NULL;
    st = xattn_context_create_with(&opts, &ctx);
    if (st != XATTN_OK) {
        hx_result r = fresh_result();
        hx_api_fail(&r, "xattn_context_create_with", st);
        char label[64];
        snprintf(label, sizeof label, "(%ld cases)", num_cases);
        print_row(label, bname, "-", &r);
        printf("    FAIL %s: %s (%d device(s) probed)\n", bname, r.message, devices);
        t->failed += num_cases;
        char line[1200];
        snprintf(line, sizeof line, "backend %s: %s", bname, r.message);
        record_failure(t, line);
        fflush(stdout);
        return;
    }
    t->backend_runs++;
    if (o->verbose) printf("# %s: %s\n", bname, xattn_context_device_name(ctx));

    for (size_t i = 0; i < cat->count; i++) {
        const hx_case *c = &cat->cases[i];
        if (is_ref_check(c) || !matches(o, c->name)) continue;
        hx_result r = fresh_result();
        const uint64_t seed = case_seed(o, c);
        switch (c->kind) {
        case HX_ATTN: hx_run_attn(ctx, c, seed, o->verbose, &r); break;
        case HX_KV_APPEND: hx_run_kv_append(ctx, c, seed, &r); break;
        case HX_MERGE: hx_run_merge(ctx, c, seed, &r); break;
        case HX_MOE: hx_run_moe(ctx, c, seed, o->verbose, &r); break;
        default: break;
        }
        report(o, t, c, bname, &r);
    }
    xattn_context_destroy(&ctx);
}

int xattn_cmd_check(int argc, char **argv)
{
    options o;
    memset(&o, 0, sizeof o);
    int pr = parse_args(argc, argv, &o);
    if (pr) return pr > 0 ? 0 : 2;

    hx_catalogue cat;
    if (hx_catalogue_build(&cat)) return 2;

    if (o.list) {
        double total = 0;
        for (size_t i = 0; i < cat.count; i++) {
            const hx_case *c = &cat.cases[i];
            if (!matches(&o, c->name)) continue;
            total += c->cost;
            if (o.verbose) printf("%-*s %10.3g\n", NAME_WIDTH, c->name, c->cost);
            else printf("%s\n", c->name);
        }
        if (o.verbose) printf("reference cost: %.3g multiply-adds\n", total);
        hx_catalogue_free(&cat);
        return 0;
    }

    long num_ref = 0, num_cases = 0;
    for (size_t i = 0; i < cat.count; i++) {
        if (!matches(&o, cat.cases[i].name)) continue;
        if (is_ref_check(&cat.cases[i])) num_ref++;
        else num_cases++;
    }
    if (num_ref + num_cases == 0) {
        fprintf(stderr, "xattn check: no case matches the filter ('xattn check --list')\n");
        hx_catalogue_free(&cat);
        return 1;
    }

    printf("xattn check: seed %llu (xattn check --seed %llu repeats this run)\n",
           (unsigned long long)o.seed, (unsigned long long)o.seed);
    printf("%-*s %-7s %-5s %10s %10s  %s\n", NAME_WIDTH, "case", "backend", "dtype", "NMSE",
           "LSE err", "status");
    fflush(stdout);

    tally t;
    memset(&t, 0, sizeof t);
    const double t0 = hx_now();
    for (size_t i = 0; i < cat.count; i++) {
        const hx_case *c = &cat.cases[i];
        if (!is_ref_check(c) || !matches(&o, c->name)) continue;
        hx_result r = fresh_result();
        if (c->kind == HX_REF_MOE) hx_run_ref_moe_test(c, case_seed(&o, c), &r);
        else hx_run_ref_test(c, case_seed(&o, c), &r);
        report(&o, &t, c, "ref", &r);
    }
    if (num_cases > 0)
        for (size_t b = 0; b < NUM_BACKENDS; b++)
            if (o.selected[b]) run_backend(&o, &t, &cat, b, num_cases);

    if (t.num_failures) {
        printf("\nfailures (seed %llu):\n", (unsigned long long)o.seed);
        for (size_t i = 0; i < t.num_failures; i++) printf("  %s\n", t.failures[i]);
    }
    if (o.verbose) printf("\nelapsed %.1f s\n", hx_now() - t0);
    printf("%ld passed, %ld failed, %ld skipped\n", t.passed, t.failed, t.skipped);
    fflush(stdout);
    for (size_t i = 0; i < t.num_failures; i++) free(t.failures[i]);
    free(t.failures);
    hx_catalogue_free(&cat);
    if (t.failed) return 1;
    /* Every selected backend skipped: tell meson (and automake-style
     * runners) that nothing was tested. */
    return t.backend_runs == 0 && t.skipped > 0 ? HX_EXIT_SKIPPED : 0;
}
