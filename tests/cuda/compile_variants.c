/* Every CUDA kernel variant the planner produces for the conformance
 * catalogue (attention and MoE), compiled through NVRTC for the h100
 * (sm_90a) and a100 (sm_80) presets, with no GPU: a compile error, a kernel
 * missing from its module, or a local-memory spill in a hot kernel
 * (attention, the expert GEMMs) fails the test.
 *
 * The variants come from the module's own cu_attn_variants,
 * cu_moe_variants, cu_ops_variants and cu_ceilings_variants (backends/cuda,
 * linked in as a static library), so this
 * compiles exactly what prepare would. Duplicates (the same source and
 * options) are compiled once per architecture, on a few threads. The
 * ptxas report that -Xptxas=-v puts in the program log gives each
 * kernel's registers and spills. Skipped, with the reason, when NVRTC
 * cannot be loaded. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cu.h"
#include "harness.h"
#include "plan.h"
#include "plan_moe.h"

enum { MAX_JOBS = 4096, WORKERS = 2 };

typedef struct job {
    cu_variant v;
    const char *arch;
    /* results */
    xattn_status st;
    char message[512];
    int spills;           /* hot kernels with spill stores or loads */
    int missing;          /* kernels named by the variant absent from the log */
    int max_regs;
} job;

static job jobs[MAX_JOBS];
static int njobs;
static const nvrtc_api *rtc;
static char rtc_reason[512];

static void add_job(const cu_variant *v, const char *arch)
{
    for (int i = 0; i < njobs; i++)
        if (jobs[i].arch == arch && !strcmp(jobs[i].v.source, v->source) &&
            !strcmp(jobs[i].v.options, v->options))
            return;
    if (njobs == MAX_JOBS) {
        fprintf(stderr, "compile_variants: more than %d variants\n", MAX_JOBS);
        return;
    }
    jobs[njobs].v = *v;
    jobs[njobs].arch = arch;
    njobs++;
}

static int32_t max_of(const int32_t *v, int n)
{
    int32_t m = 0;
    for (int i = 0; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* The descriptor a catalogue case plans with, as far as the variants
 * depend on it (dtype, head dims, and lengths for the KV split). */
static xattn_attn_desc case_desc(const hx_attn_case *a)
{
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = a->dtype;
    d.batch = a->batch;
    d.num_q_heads = a->hq;
    d.num_kv_heads = a->hkv;
    d.head_dim_qk = a->dqk;
    d.head_dim_v = a->dv;
    d.q_layout = a->q_layout;
    d.kv_layout = a->kv_layout;
    d.seqlen_q = a->q_layout == XATTN_Q_RAGGED ? max_of(a->sq_list, a->batch) : a->sq;
    d.seqlen_k = a->kv_layout != XATTN_KV_UNIFORM ? max_of(a->sk_list, a->batch) : a->sk;
    if (d.seqlen_q < 1) d.seqlen_q = 1;
    if (d.seqlen_k < 1) d.seqlen_k = 1;
    if (a->kv_layout == XATTN_KV_PAGED) {
        d.page_size = a->page_size;
        d.max_pages_per_seq = (d.seqlen_k + a->page_size - 1) / a->page_size;
        d.num_pages = d.max_pages_per_seq * a->batch;
    }
    d.flags = a->flags | (a->no_lse ? 0u : XATTN_ATTN_LSE);
    if (a->flags & XATTN_ATTN_WINDOW) {
        d.window_left = a->window_left;
        d.window_right = a->window_right;
    }
    d.scale = a->scale;
    d.softcap = a->softcap;
    return d;
}

/* Every variant of the catalogue for one preset; returns the cases that
 * could not be planned or had no variants (a failure). */
static int collect(const char *preset, const char *arch)
{
    xattn_device_caps caps;
    if (!xattn_preset_caps(preset, &caps)) {
        fprintf(stderr, "no preset %s\n", preset);
        return 1;
    }
    hx_catalogue cat;
    if (hx_catalogue_build(&cat) != 0) return 1;
    int bad = 0;
    cu_variant v[CU_MAX_VARIANTS];
    int n = 0;
    for (size_t i = 0; i < cat.count; i++) {
        const hx_case *c = &cat.cases[i];
        if (c->kind == HX_MOE) {
            xattn_moe_desc md = c->moe.desc;
            if (md.max_tokens < 1) md.max_tokens = c->moe.tokens > 0 ? c->moe.tokens + 8 : 8;
            struct xattn_moe_plan mp;
            memset(&mp, 0, sizeof mp);
            xattn_status st = xattn_moe_problem_init(&md, &mp.prob);
            if (st == XATTN_OK) st = xattn_plan_moe(&caps, &mp.prob, &mp.params);
            if (st == XATTN_OK) st = cu_moe_variants(&mp, &caps, v, &n);
            if (st != XATTN_OK) {
                fprintf(stderr, "%s on %s: %s: %s\n", c->name, preset, xattn_status_string(st),
                        xattn_last_error());
                bad++;
                continue;
            }
            for (int j = 0; j < n; j++) add_job(&v[j], arch);
            continue;
        }
        if (c->kind != HX_ATTN) continue;
        xattn_attn_desc d = case_desc(&c->attn);
        struct xattn_plan plan;
        memset(&plan, 0, sizeof plan);
        xattn_status st = xattn_attn_problem_init(&d, &plan.prob);
        if (st == XATTN_OK) st = xattn_plan_attention(&caps, &plan.prob, &plan.params);
        if (st == XATTN_OK) st = cu_attn_variants(&plan, &caps, v, &n);
        if (st != XATTN_OK) {
            fprintf(stderr, "%s on %s: %s: %s\n", c->name, preset, xattn_status_string(st),
                    xattn_last_error());
            bad++;
            continue;
        }
        for (int j = 0; j < n; j++) add_job(&v[j], arch);
    }
    hx_catalogue_free(&cat);
    for (xattn_dtype dt = XATTN_F32; dt <= XATTN_BF16; dt++) {
        if (cu_ops_variants(dt, v, &n) != XATTN_OK) {
            bad++;
            continue;
        }
        for (int j = 0; j < n; j++) add_job(&v[j], arch);
    }
    /* The bench's ceiling kernels (a spill would lower the ceiling). */
    if (cu_ceilings_variants(&caps, v, &n) != XATTN_OK) bad++;
    else
        for (int j = 0; j < n; j++) add_job(&v[j], arch);
    return bad;
}

/* Read the ptxas report of one module: per kernel "Compiling entry
 * function 'NAME'", then "N bytes spill stores, M bytes spill loads" and
 * "Used R registers". */
static void read_report(job *jb, const char *log)
{
    for (int k = 0; k < CU_MAX_KERNELS && jb->v.kernels[k]; k++) {
        char needle[160];
        snprintf(needle, sizeof needle, "Function properties for %s\n", jb->v.kernels[k]);
        const char *p = strstr(log, needle);
        if (!p) {
            jb->missing++;
            continue;
        }
        p += strlen(needle);
        /* NVRTC prefixes the line: "ptxas         .     0 bytes stack frame, ..." */
        const char *q = strstr(p, "bytes stack frame");
        while (q && q > p && q[-1] != '\n' && q[-1] != '.') q--;
        int frame = 0, stores = 0, loads = 0, regs = 0;
        if (!q || sscanf(q, " %d bytes stack frame, %d bytes spill stores, %d bytes spill loads",
                         &frame, &stores, &loads) != 3) {
            jb->missing++;
            continue;
        }
        const char *u = strstr(p, "Used ");
        if (u && sscanf(u, "Used %d registers", &regs) == 1 && regs > jb->max_regs)
            jb->max_regs = regs;
        if (jb->v.hot && (stores || loads)) jb->spills++;
    }
}

static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;
static int next_job;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&next_lock);
        int i = next_job < njobs ? next_job++ : -1;
        pthread_mutex_unlock(&next_lock);
        if (i < 0) return NULL;
        job *jb = &jobs[i];
        void *cubin = NULL;
        size_t size = 0;
        char *log = NULL;
        jb->st = cu_compile(rtc, jb->arch, jb->v.source, jb->v.options, &cubin, &size, &log);
        if (jb->st != XATTN_OK) snprintf(jb->message, sizeof jb->message, "%s", xattn_last_error());
        else read_report(jb, log ? log : "");
        free(cubin);
        free(log);
    }
}

static void compile_all(void **state)
{
    (void)state;
    if (!rtc) skip();
    int bad = collect("h100", "sm_90a") + collect("a100", "sm_80");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < WORKERS; i++) pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int failed = 0, spilled = 0, missing = 0, max_regs = 0;
    for (int i = 0; i < njobs; i++) {
        const job *jb = &jobs[i];
        if (jb->st != XATTN_OK) {
            printf("FAILED %s %s.cu%s: %s\n", jb->arch, jb->v.source, jb->v.options, jb->message);
            failed++;
        }
        if (jb->spills) {
            printf("SPILLS %s %s.cu%s\n", jb->arch, jb->v.source, jb->v.options);
            spilled++;
        }
        if (jb->missing) {
            printf("MISSING a kernel or its report: %s %s.cu%s\n", jb->arch, jb->v.source,
                   jb->v.options);
            missing++;
        }
        if (jb->max_regs > max_regs) max_regs = jb->max_regs;
    }
    /* Per source and architecture: how many variants, the most registers. */
    for (int i = 0; i < njobs; i++) {
        int seen = 0, count = 0, regs = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = jobs[j].arch == jobs[i].arch && !strcmp(jobs[j].v.source, jobs[i].v.source);
        if (seen) continue;
        for (int j = i; j < njobs; j++)
            if (jobs[j].arch == jobs[i].arch && !strcmp(jobs[j].v.source, jobs[i].v.source)) {
                count++;
                if (jobs[j].max_regs > regs) regs = jobs[j].max_regs;
            }
        printf("  %-7s %-16s %4d variants, at most %3d registers\n", jobs[i].arch,
               jobs[i].v.source, count, regs);
    }
    printf("compiled %d CUDA kernel variants (h100 sm_90a + a100 sm_80) with NVRTC %d.%d in "
           "%.1f s on %d threads: %d failed, %d hot with spills, %d missing a kernel, %d "
           "catalogue cases unplanned; at most %d registers\n",
           njobs, rtc->major, rtc->minor,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), WORKERS,
           failed, spilled, missing, bad, max_regs);
    assert_true(njobs > 0);
    assert_int_equal(bad, 0);
    assert_int_equal(failed, 0);
    assert_int_equal(spilled, 0);
    assert_int_equal(missing, 0);
}

int main(void)
{
    rtc = cu_nvrtc_load(rtc_reason, sizeof rtc_reason);
    if (!rtc) printf("NVRTC not available, so nothing to compile: %s\n", rtc_reason);
    const struct CMUnitTest tests[] = {cmocka_unit_test(compile_all)};
    return cmocka_run_group_tests_name("cuda-compile", tests, NULL, NULL);
}
