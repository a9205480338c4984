/* Every HIP kernel variant the planner produces for the conformance
 * catalogue (attention and MoE, planned for the mi250x preset) plus the
 * kv_append / merge_states modules, compiled through hiprtc for gfx90a,
 * gfx908 and gfx1030 with no GPU, and each code object inspected:
 *  - `llvm-readelf --notes` (the AMDGPU metadata): a hot kernel (attention,
 *    the expert GEMMs) with VGPR spills or scratch (private segment)
 *    fails (SGPR spills go to VGPR lanes, not memory, while VGPRs last:
 *    they are counted and listed, and any that reached memory shows as
 *    scratch), and so does any kernel whose static LDS plus the
 *    variant's dynamic LDS is over the 64 KiB of these devices, and an
 *    attention kernel whose by-value argument is not the size of the
 *    host's attn_args (attn.c);
 *  - `llvm-objdump -d`: a variant that declares itself MFMA (hip_variant
 *    .mfma: attn_mfma, moe_up_mfma/moe_down_mfma) must hold v_mfma
 *    instructions where the target has the instruction for its dtype:
 *    gfx90a always, gfx908 for f16 (it lacks the bf16_1k form; there, and
 *    on gfx1030, the source compiles to a trap the host never selects,
 *    and the module runs the portable kernels). The summary says how many
 *    code objects it checked.
 * The variants come from the module's own hip_attn_variants,
 * hip_moe_variants and hip_ops_variants (backends/hip, linked in as a
 * static library), so this compiles exactly what prepare would.
 * Duplicates (same source, options and architecture) are compiled once.
 * Fails, naming the package, when hiprtc or the LLVM tools are missing. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "hip.h"
#include "plan.h"
#include "plan_moe.h"

enum { MAX_JOBS = 4096, WORKERS = 2, LDS_LIMIT = 64 << 10 };

static const char *const archs[] = {"gfx90a", "gfx908", "gfx1030"};
#define PRESET "mi250x"

typedef struct job {
    const hip_variant *v;
    const char *arch;
    /* results */
    xattn_status st;
    char message[512];
    int kernels_seen;     /* kernels of the variant found in the metadata */
    int spills;           /* hot kernels with VGPR spills or scratch */
    int sgpr_spills;      /* hot kernels with SGPR spills (to VGPR lanes) */
    long vspill, sspill, scratch; /* the largest of its kernels */
    int lds_over;         /* kernels over the LDS limit */
    int no_mfma;          /* 1: declared MFMA but no v_mfma */
    int bad_args;         /* attention kernels whose argument is not attn_args' size */
    int mfma_checked;
    int max_vgpr, max_lds;
    double seconds;
} job;

static hip_variant variants[MAX_JOBS];
static int nvariants;
static job jobs[MAX_JOBS];
static int njobs;
static const hip_api *hip;
static char hip_reason[768];
static char readelf[256], objdump[256];

static const hip_variant *add_variant(const hip_variant *v)
{
    for (int i = 0; i < nvariants; i++)
        if (!strcmp(variants[i].source, v->source) && !strcmp(variants[i].options, v->options))
            return &variants[i];
    if (nvariants == MAX_JOBS) return NULL;
    variants[nvariants] = *v;
    return &variants[nvariants++];
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

/* Every distinct variant of the catalogue for the preset; returns the
 * cases that could not be planned (a failure). */
static int collect(const char *preset)
{
    xattn_device_caps caps;
    if (!xattn_preset_caps(preset, &caps)) {
        fprintf(stderr, "no preset %s\n", preset);
        return 1;
    }
    hx_catalogue cat;
    if (hx_catalogue_build(&cat) != 0) return 1;
    int bad = 0;
    hip_variant v[HIP_MAX_VARIANTS];
    int n = 0;
    for (size_t i = 0; i < cat.count; i++) {
        const hx_case *c = &cat.cases[i];
        xattn_status st;
        if (c->kind == HX_MOE) {
            xattn_moe_desc md = c->moe.desc;
            if (md.max_tokens < 1) md.max_tokens = c->moe.tokens > 0 ? c->moe.tokens + 8 : 8;
            struct xattn_moe_plan mp;
            memset(&mp, 0, sizeof mp);
            st = xattn_moe_problem_init(&md, &mp.prob);
            if (st == XATTN_OK) st = xattn_plan_moe(&caps, &mp.prob, &mp.params);
            if (st == XATTN_OK) st = hip_moe_variants(&mp, &caps, v, &n);
        } else if (c->kind == HX_ATTN) {
            xattn_attn_desc d = case_desc(&c->attn);
            struct xattn_plan plan;
            memset(&plan, 0, sizeof plan);
            st = xattn_attn_problem_init(&d, &plan.prob);
            if (st == XATTN_OK) st = xattn_plan_attention(&caps, &plan.prob, &plan.params);
            if (st == XATTN_OK) st = hip_attn_variants(&plan, &caps, v, &n);
        } else {
            continue;
        }
        if (st != XATTN_OK) {
            fprintf(stderr, "%s on %s: %s: %s\n", c->name, preset, xattn_status_string(st),
                    xattn_last_error());
            bad++;
            continue;
        }
        for (int j = 0; j < n; j++)
            if (!add_variant(&v[j])) bad++;
    }
    hx_catalogue_free(&cat);
    for (xattn_dtype dt = XATTN_F32; dt <= XATTN_BF16; dt++) {
        if (hip_ops_variants(dt, v, &n) != XATTN_OK) {
            bad++;
            continue;
        }
        for (int j = 0; j < n; j++)
            if (!add_variant(&v[j])) bad++;
    }
    return bad;
}

/* ---- the LLVM tools ------------------------------------------------------------ */

/* The first of names found on PATH (or as an absolute path), into out. */
static int find_tool(const char *const *names, char *out, size_t size)
{
    const char *path = getenv("PATH");
    for (; *names; names++) {
        if ((*names)[0] == '/') {
            if (access(*names, X_OK) == 0) {
                snprintf(out, size, "%s", *names);
                return 1;
            }
            continue;
        }
        for (const char *p = path ? path : "/usr/bin"; *p;) {
            size_t len = strcspn(p, ":");
            snprintf(out, size, "%.*s/%s", (int)len, p, *names);
            if (len && access(out, X_OK) == 0) return 1;
            p += len + (p[len] == ':');
        }
    }
    out[0] = '\0';
    return 0;
}

/* Run `tool args file` and return its whole stdout (malloc'd), or NULL. */
static char *run_tool(const char *tool, const char *args, const char *file)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s '%s' 2>/dev/null", tool, args, file);
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len < 4096) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    int rc = pclose(f);
    if (buf) buf[len] = '\0';
    if (rc != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* The integer after "key: " in text, from p to end, or -1. */
static long meta_int(const char *p, const char *end, const char *key)
{
    char needle[64];
    snprintf(needle, sizeof needle, "%s:", key);
    const char *q = strstr(p, needle);
    if (!q || q >= end) return -1;
    return strtol(q + strlen(needle), NULL, 10);
}

/* Read the metadata notes (YAML under "amdhsa.kernels:"): one map per
 * kernel, each opening with "\n  - ", holding ".name: NAME" and the
 * counts. */
static void inspect(job *jb, const char *notes)
{
    const char *list = strstr(notes, "amdhsa.kernels:");
    for (const char *p = list ? strstr(list, "\n  - ") : NULL; p;) {
        const char *next = strstr(p + 1, "\n  - ");
        const char *end = next ? next : p + strlen(p);
        const char *nm = strstr(p, "\n    .name:");
        if (nm && nm < end) {
            nm += strlen("\n    .name:");
            while (*nm == ' ') nm++;
            const size_t len = strcspn(nm, "\n");
            for (int k = 0; k < HIP_MAX_KERNELS && jb->v->kernels[k]; k++) {
                if (strlen(jb->v->kernels[k]) != len || strncmp(nm, jb->v->kernels[k], len))
                    continue;
                jb->kernels_seen++;
                const long vgpr = meta_int(p, end, ".vgpr_count");
                const long vspill = meta_int(p, end, ".vgpr_spill_count");
                const long sspill = meta_int(p, end, ".sgpr_spill_count");
                const long scratch = meta_int(p, end, ".private_segment_fixed_size");
                const long lds = meta_int(p, end, ".group_segment_fixed_size");
                if (vgpr > jb->max_vgpr) jb->max_vgpr = (int)vgpr;
                if (lds > jb->max_lds) jb->max_lds = (int)lds;
                if (vspill < 0 || sspill < 0 || scratch < 0 ||
                    (jb->v->hot && (vspill > 0 || scratch > 0)))
                    jb->spills++;
                if (jb->v->hot && sspill > 0) jb->sgpr_spills++;
                if (vspill > jb->vspill) jb->vspill = vspill;
                if (sspill > jb->sspill) jb->sspill = sspill;
                if (scratch > jb->scratch) jb->scratch = scratch;
                if (lds < 0 || (size_t)lds + jb->v->lds_bytes > LDS_LIMIT) jb->lds_over++;
                /* Attention kernels take attn_args by value: the first
                 * argument's size is the host struct's. */
                if (!strcmp(jb->v->source, "attn") || !strcmp(jb->v->source, "attn_mfma")) {
                    const char *args = strstr(p, ".args:");
                    if (!args || args > end || meta_int(args, end, ".size") !=
                                                   (long)hip_attn_args_bytes())
                        jb->bad_args++;
                }
            }
        }
        p = next;
    }
}

static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;
static int next_job;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *worker(void *arg)
{
    const char *dir = arg;
    for (;;) {
        pthread_mutex_lock(&next_lock);
        int i = next_job < njobs ? next_job++ : -1;
        pthread_mutex_unlock(&next_lock);
        if (i < 0) return NULL;
        job *jb = &jobs[i];
        void *code = NULL;
        size_t size = 0;
        const double t0 = now();
        jb->st = hip_compile(hip, jb->arch, jb->v->source, jb->v->options, &code, &size, NULL);
        jb->seconds = now() - t0;
        if (jb->st != XATTN_OK) {
            snprintf(jb->message, sizeof jb->message, "%s", xattn_last_error());
            continue;
        }
        char file[512];
        snprintf(file, sizeof file, "%s/%d.co", dir, i);
        FILE *f = fopen(file, "wb");
        int ok = f && fwrite(code, 1, size, f) == size;
        if (f) fclose(f);
        free(code);
        char *notes = ok ? run_tool(readelf, "--notes", file) : NULL;
        if (!notes) {
            jb->st = XATTN_ERR_INTERNAL;
            snprintf(jb->message, sizeof jb->message, "%s --notes failed on the code object",
                     readelf);
            unlink(file);
            continue;
        }
        inspect(jb, notes);
        free(notes);
        const int has_mfma = !strcmp(jb->arch, "gfx90a") ||
                             (!strcmp(jb->arch, "gfx908") && !strstr(jb->v->options, "-DIO_BF16=1"));
        if (jb->v->mfma && has_mfma) {
            char *dis = run_tool(objdump, "-d", file);
            jb->mfma_checked = 1;
            jb->no_mfma = !dis || !strstr(dis, "v_mfma");
            free(dis);
        }
        unlink(file);
    }
}

static void compile_all(void **state)
{
    (void)state;
    if (!hip) {
        printf("FAILED: hiprtc is not available, so nothing can be compiled: %s\n", hip_reason);
        fail();
    }
    static const char *const readelfs[] = {"llvm-readelf-15", "llvm-readelf",
                                           "/opt/rocm/llvm/bin/llvm-readelf", NULL};
    static const char *const objdumps[] = {"llvm-objdump-15", "llvm-objdump",
                                           "/opt/rocm/llvm/bin/llvm-objdump", NULL};
    if (!find_tool(readelfs, readelf, sizeof readelf) ||
        !find_tool(objdumps, objdump, sizeof objdump)) {
        printf("FAILED: llvm-readelf and llvm-objdump are needed to inspect the code objects "
               "(Debian: llvm-15)\n");
        fail();
    }
    const int bad = collect(PRESET);
    for (int i = 0; i < nvariants; i++)
        for (size_t a = 0; a < XATTN_ARRAY_SIZE(archs); a++) {
            jobs[njobs].v = &variants[i];
            jobs[njobs].arch = archs[a];
            njobs++;
        }
    char dir[] = "/tmp/xattn-hip-compile-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const double t0 = now();
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) pthread_create(&th[i], NULL, worker, dir);
    for (int i = 0; i < WORKERS; i++) pthread_join(th[i], NULL);
    const double seconds = now() - t0;
    rmdir(dir);

    int failed = 0, spilled = 0, sgpr_spilled = 0, lds_over = 0, missing = 0, no_mfma = 0, mfma_checked = 0;
    int bad_args = 0;
    for (int i = 0; i < njobs; i++) {
        const job *jb = &jobs[i];
        int declared = 0;
        while (declared < HIP_MAX_KERNELS && jb->v->kernels[declared]) declared++;
        if (jb->st != XATTN_OK) {
            printf("FAILED %s %s.hip%s: %s\n", jb->arch, jb->v->source, jb->v->options,
                   jb->message);
            failed++;
            continue;
        }
        if (jb->kernels_seen != declared) {
            printf("MISSING a kernel in the metadata: %s %s.hip%s\n", jb->arch, jb->v->source,
                   jb->v->options);
            missing++;
        }
        if (jb->spills) {
            printf("SPILLS or scratch in a hot kernel (%ld VGPRs spilled, %ld bytes of scratch): "
                   "%s %s.hip%s\n", jb->vspill, jb->scratch, jb->arch, jb->v->source,
                   jb->v->options);
            spilled++;
        }
        if (jb->sgpr_spills) {
            printf("sgpr spills to VGPR lanes (%ld): %s %s.hip%s\n", jb->sspill, jb->arch,
                   jb->v->source, jb->v->options);
            sgpr_spilled++;
        }
        if (jb->lds_over) {
            printf("LDS over %d bytes: %s %s.hip%s\n", LDS_LIMIT, jb->arch, jb->v->source,
                   jb->v->options);
            lds_over++;
        }
        if (jb->no_mfma) {
            printf("NO v_mfma in a variant meant for MFMA: %s %s.hip%s\n", jb->arch,
                   jb->v->source, jb->v->options);
            no_mfma++;
        }
        if (jb->bad_args) {
            printf("ARGUMENT of %s is not the %zu bytes of attn_args (attn.c): %s.hip%s\n",
                   jb->arch, hip_attn_args_bytes(), jb->v->source, jb->v->options);
            bad_args++;
        }
        mfma_checked += jb->mfma_checked;
    }
    /* Per source and architecture: variants, the most VGPRs and LDS, time. */
    for (size_t a = 0; a < XATTN_ARRAY_SIZE(archs); a++)
        for (int i = 0; i < njobs; i++) {
            if (jobs[i].arch != archs[a]) continue;
            int seen = 0;
            for (int j = 0; j < i && !seen; j++)
                seen = jobs[j].arch == archs[a] && !strcmp(jobs[j].v->source, jobs[i].v->source);
            if (seen) continue;
            int count = 0, vgpr = 0, lds = 0;
            double secs = 0.0;
            for (int j = i; j < njobs; j++)
                if (jobs[j].arch == archs[a] && !strcmp(jobs[j].v->source, jobs[i].v->source)) {
                    count++;
                    if (jobs[j].max_vgpr > vgpr) vgpr = jobs[j].max_vgpr;
                    if (jobs[j].max_lds + (int)jobs[j].v->lds_bytes > lds)
                        lds = jobs[j].max_lds + (int)jobs[j].v->lds_bytes;
                    secs += jobs[j].seconds;
                }
            printf("  %-8s %-12s %4d variants, at most %3d VGPRs and %5d bytes of LDS, "
                   "%.1f s of hiprtc\n", archs[a], jobs[i].v->source, count, vgpr, lds, secs);
        }
    printf("MFMA check: %d code objects of variants declared MFMA checked for v_mfma on "
           "gfx90a and (f16) gfx908\n", mfma_checked);
    printf("compiled %d HIP kernel variants (%d distinct, planned for %s) for gfx90a, gfx908 "
           "and gfx1030 with hiprtc of HIP %d.%d in %.1f s on %d threads, inspected with %s and "
           "%s: %d failed, %d missing a kernel, %d hot with VGPR spills or scratch (%d more with "
           "SGPR spills only), %d over %d bytes of LDS, %d lacking v_mfma, %d with attention "
           "arguments of another size, %d catalogue cases unplanned\n",
           njobs, nvariants, PRESET, hip->major, hip->minor, seconds, WORKERS, readelf, objdump,
           failed, missing, spilled, sgpr_spilled, lds_over, (int)LDS_LIMIT, no_mfma, bad_args,
           bad);
    assert_true(njobs > 0);
    assert_int_equal(bad, 0);
    assert_int_equal(failed, 0);
    assert_int_equal(missing, 0);
    assert_int_equal(spilled, 0);
    assert_int_equal(lds_over, 0);
    assert_int_equal(no_mfma, 0);
    assert_true(mfma_checked > 0); /* the catalogue has f16/bf16 attention and MoE */
    assert_int_equal(bad_args, 0);
}

int main(void)
{
    hip = hip_load(hip_reason, sizeof hip_reason);
    const struct CMUnitTest tests[] = {cmocka_unit_test(compile_all)};
    return cmocka_run_group_tests_name("hip-compile", tests, NULL, NULL);
}
