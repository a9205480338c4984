/* The CUDA module under CUDA graph capture, on a real device.
 *
 * Serving engines (vLLM, SGLang, TensorRT-LLM) capture a decode step into a
 * CUDA graph once and replay it every token, so a run must be launch-only on
 * the context's stream: no allocation, no synchronisation, no host copy, no
 * compilation. This program opens a cuda context on its own stream, runs a
 * paged bf16 decode step and a bf16 MoE forward eagerly, captures the same
 * calls into a graph, replays it over poisoned outputs and compares the
 * results bit for bit. Plain C (no cmocka), so it runs on a GPU machine that
 * has no test libraries; exit 0 pass, 1 fail, 77 skip (no driver, no device,
 * or a driver without the graph API), with the reason printed.
 *
 * The driver is opened with dlopen (XATTN_CUDA_DRIVER_PATH, else
 * libcuda.so.1), as the module itself does, so the test needs no toolkit. */
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xattn.h"

#define SKIP 77

/* The driver API's types, as opaque as the module's cu.h keeps them. */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

#define CU_STREAM_NON_BLOCKING 1u
#define CU_STREAM_CAPTURE_MODE_THREAD_LOCAL 1

static struct cu_api {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamDestroy)(CUstream);
    CUresult (*StreamSynchronize)(CUstream);
    CUresult (*StreamBeginCapture)(CUstream, int);
    CUresult (*StreamEndCapture)(CUstream, CUgraph *);
    CUresult (*GraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*GraphLaunch)(CUgraphExec, CUstream);
    CUresult (*GraphExecDestroy)(CUgraphExec);
    CUresult (*GraphDestroy)(CUgraph);
} cu;

static int failures;

/* Load the driver and open device 0's primary context; SKIP with the
 * reason when there is no driver, no device or no graph API. */
static int load_driver(CUdevice *dev, CUcontext *ctx)
{
    const char *path = getenv("XATTN_CUDA_DRIVER_PATH");
    if (!path || !*path) path = "libcuda.so.1";
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("[  SKIPPED ] cuda-graph: no CUDA driver (%s)\n", dlerror());
        return SKIP;
    }
    static const struct { const char *name; size_t off; } syms[] = {
#define SYM(field, name) {name, offsetof(struct cu_api, field)}
        SYM(Init, "cuInit"),
        SYM(DeviceGetCount, "cuDeviceGetCount"),
        SYM(DeviceGet, "cuDeviceGet"),
        SYM(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
        SYM(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
        SYM(CtxSetCurrent, "cuCtxSetCurrent"),
        SYM(StreamCreate, "cuStreamCreate"),
        SYM(StreamDestroy, "cuStreamDestroy_v2"),
        SYM(StreamSynchronize, "cuStreamSynchronize"),
        SYM(StreamBeginCapture, "cuStreamBeginCapture_v2"),
        SYM(StreamEndCapture, "cuStreamEndCapture"),
        SYM(GraphInstantiateWithFlags, "cuGraphInstantiateWithFlags"),
        SYM(GraphLaunch, "cuGraphLaunch"),
        SYM(GraphExecDestroy, "cuGraphExecDestroy"),
        SYM(GraphDestroy, "cuGraphDestroy"),
#undef SYM
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *f = dlsym(lib, syms[i].name);
        if (!f) {
            printf("[  SKIPPED ] cuda-graph: the driver %s has no %s\n", path, syms[i].name);
            return SKIP;
        }
        memcpy((char *)&cu + syms[i].off, &f, sizeof f);
    }
    int n = 0;
    CUresult r = cu.Init(0);
    if (r == 0) r = cu.DeviceGetCount(&n);
    if (r != 0 || n < 1) {
        printf("[  SKIPPED ] cuda-graph: no CUDA device (cuInit/cuDeviceGetCount: %d, %d devices)\n",
               r, n);
        return SKIP;
    }
    r = cu.DeviceGet(dev, 0);
    if (r == 0) r = cu.DevicePrimaryCtxRetain(ctx, *dev);
    if (r == 0) r = cu.CtxSetCurrent(*ctx);
    if (r != 0) {
        printf("[  SKIPPED ] cuda-graph: device 0's primary context: CUresult %d\n", r);
        return SKIP;
    }
    return 0;
}

#define CHECK(what, expr)                                                               \
    do {                                                                                \
        xattn_status st_ = (expr);                                                      \
        if (st_ != XATTN_OK) {                                                          \
            printf("    %s: %s: %s\n", what, xattn_status_string(st_), xattn_last_error()); \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

#define CHECK_CU(what, expr)                                                            \
    do {                                                                                \
        CUresult r_ = (expr);                                                           \
        if (r_ != 0) {                                                                  \
            printf("    %s: CUresult %d\n", what, r_);                                  \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

static uint32_t rng = 12345u;
static float urand(void) /* in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / 8388608.0f - 1.0f;
}

/* A device buffer of n bf16 values drawn in [-scale, scale). */
static xattn_status bf16_buffer(xattn_context *ctx, size_t n, float scale, xattn_buffer **out)
{
    uint16_t *h = malloc(n * sizeof *h + 1);
    if (!h) return XATTN_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n; i++) h[i] = xattn_f32_to_bf16(scale * urand());
    xattn_status st = xattn_buffer_alloc(ctx, n * sizeof *h, out);
    if (st == XATTN_OK) st = xattn_buffer_write(*out, 0, h, n * sizeof *h);
    free(h);
    return st;
}

static xattn_status i32_buffer(xattn_context *ctx, const int32_t *v, size_t n, xattn_buffer **out)
{
    xattn_status st = xattn_buffer_alloc(ctx, n * sizeof *v, out);
    if (st == XATTN_OK) st = xattn_buffer_write(*out, 0, v, n * sizeof *v);
    return st;
}

/* The step under test: one call (or a few) that only enqueues work. */
typedef xattn_status (*step_fn)(const void *plan, const void *args);
static xattn_status attn_step(const void *plan, const void *args)
{
    return xattn_attn_run(plan, args);
}
static xattn_status moe_step(const void *plan, const void *args)
{
    return xattn_moe_forward(plan, args);
}

/* Run step eagerly, then captured into a graph and replayed twice over a
 * poisoned output; the output must match the eager one bit for bit. */
static int eager_vs_graph(const char *name, xattn_context *ctx, CUstream stream, step_fn step,
                          const void *plan, const void *args, xattn_buffer *out)
{
    size_t bytes = xattn_buffer_size(out);
    unsigned char *eager = malloc(bytes + 1), *replay = malloc(bytes + 1),
                  *poison = malloc(bytes + 1);
    if (!eager || !replay || !poison) {
        printf("    %s: out of host memory\n", name);
        free(eager), free(replay), free(poison);
        return 1;
    }
    memset(poison, 0xff, bytes); /* bf16 NaN: a value no run leaves behind */
    int rc = 1;
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;
    xattn_status st = xattn_buffer_write(out, 0, poison, bytes);
    if (st == XATTN_OK) st = step(plan, args);
    if (st == XATTN_OK) st = xattn_context_synchronize(ctx);
    if (st == XATTN_OK) st = xattn_buffer_read(out, 0, eager, bytes);
    if (st != XATTN_OK) {
        printf("    %s eager: %s: %s\n", name, xattn_status_string(st), xattn_last_error());
        goto done;
    }
    if (!memcmp(eager, poison, bytes)) {
        printf("    %s eager: the output was not written\n", name);
        goto done;
    }
    st = xattn_buffer_write(out, 0, poison, bytes);
    if (st != XATTN_OK) goto done;
    CUresult r = cu.StreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    if (r != 0) {
        printf("    %s: cuStreamBeginCapture: %d\n", name, r);
        goto done;
    }
    st = step(plan, args);
    r = cu.StreamEndCapture(stream, &graph); /* always: it ends the capture */
    if (st != XATTN_OK || r != 0) {
        printf("    %s capture: run %s (%s), cuStreamEndCapture %d (a run that synchronises, "
               "allocates or copies to the host breaks capture)\n",
               name, xattn_status_string(st), st == XATTN_OK ? "" : xattn_last_error(), r);
        goto done;
    }
    r = cu.GraphInstantiateWithFlags(&exec, graph, 0);
    if (r != 0) {
        printf("    %s: cuGraphInstantiateWithFlags: %d\n", name, r);
        goto done;
    }
    for (int rep = 0; rep < 2; rep++) {
        if (xattn_buffer_write(out, 0, poison, bytes) != XATTN_OK) goto done;
        r = cu.GraphLaunch(exec, stream);
        if (r == 0) r = cu.StreamSynchronize(stream);
        if (r != 0) {
            printf("    %s: cuGraphLaunch/cuStreamSynchronize (replay %d): %d\n", name, rep, r);
            goto done;
        }
        if (xattn_buffer_read(out, 0, replay, bytes) != XATTN_OK) goto done;
        if (memcmp(eager, replay, bytes)) {
            size_t i = 0;
            while (eager[i] == replay[i]) i++;
            printf("    %s: replay %d differs from the eager run at byte %zu of %zu\n", name,
                   rep, i, bytes);
            goto done;
        }
    }
    rc = 0;
done:
    if (exec) cu.GraphExecDestroy(exec);
    if (graph) cu.GraphDestroy(graph);
    free(eager), free(replay), free(poison);
    return rc;
}

/* Paged bf16 decode: B = 4, Hq = 32, Hkv = 8, D = 128, page 16, ragged
 * lengths up to 1000 over shuffled pages (long enough for split-KV). */
static int test_paged_decode(xattn_context *ctx, CUstream stream)
{
    enum { B = 4, HQ = 32, HKV = 8, D = 128, PAGE = 16, MAXP = 63 };
    const int32_t seqlens[B] = {1000, 1, 517, 16};
    int32_t pages = 0, table[B * MAXP];
    for (int b = 0; b < B; b++) pages += (seqlens[b] + PAGE - 1) / PAGE;
    /* A shuffled pool: sequences do not own contiguous pages. */
    int32_t *perm = malloc(sizeof *perm * (size_t)pages);
    if (!perm) return 1;
    for (int32_t i = 0; i < pages; i++) perm[i] = i;
    for (int32_t i = pages - 1; i > 0; i--) {
        int32_t j = (int32_t)((urand() + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int b = 0, next = 0; b < B; b++)
        for (int p = 0; p < MAXP; p++)
            table[b * MAXP + p] = p < (seqlens[b] + PAGE - 1) / PAGE ? perm[next++] : 0;
    free(perm);

    xattn_attn_desc d = {
        .dtype = XATTN_BF16, .batch = B, .num_q_heads = HQ, .num_kv_heads = HKV,
        .head_dim_qk = D, .head_dim_v = D, .q_layout = XATTN_Q_UNIFORM,
        .kv_layout = XATTN_KV_PAGED, .seqlen_q = 1, .seqlen_k = 1000, .page_size = PAGE,
        .num_pages = pages, .max_pages_per_seq = MAXP};
    xattn_plan *plan = NULL;
    CHECK("decode plan", xattn_plan_create(ctx, &d, &plan));
    xattn_buffer *q, *k, *v, *o, *bt, *sl, *ws = NULL;
    CHECK("q", bf16_buffer(ctx, (size_t)B * HQ * D, 1.0f, &q));
    CHECK("k", bf16_buffer(ctx, (size_t)pages * PAGE * HKV * D, 1.0f, &k));
    CHECK("v", bf16_buffer(ctx, (size_t)pages * PAGE * HKV * D, 1.0f, &v));
    CHECK("o", xattn_buffer_alloc(ctx, (size_t)B * HQ * D * 2, &o));
    CHECK("block table", i32_buffer(ctx, table, B * MAXP, &bt));
    CHECK("seqlens", i32_buffer(ctx, seqlens, B, &sl));
    size_t wsz = xattn_plan_workspace_size(plan);
    if (wsz) CHECK("workspace", xattn_buffer_alloc(ctx, wsz, &ws));

    xattn_attn_args a = {0};
    a.q = xattn_tensor_contiguous(q, 0, XATTN_BF16, 4, (int64_t[]){B, 1, HQ, D});
    a.k = xattn_tensor_contiguous(k, 0, XATTN_BF16, 4, (int64_t[]){pages, PAGE, HKV, D});
    a.v = xattn_tensor_contiguous(v, 0, XATTN_BF16, 4, (int64_t[]){pages, PAGE, HKV, D});
    a.o = xattn_tensor_contiguous(o, 0, XATTN_BF16, 4, (int64_t[]){B, 1, HQ, D});
    a.block_table = xattn_tensor_contiguous(bt, 0, XATTN_I32, 2, (int64_t[]){B, MAXP});
    a.seqlens_k = xattn_tensor_contiguous(sl, 0, XATTN_I32, 1, (int64_t[]){B});
    a.workspace = ws;

    char desc[2048] = "";
    xattn_plan_describe(plan, desc, sizeof desc, NULL);
    printf("    plan:\n%s\n", desc);
    int rc = eager_vs_graph("paged decode", ctx, stream, attn_step, plan, &a, o);
    xattn_buffer *bufs[] = {q, k, v, o, bt, sl, ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
    xattn_plan_destroy(&plan);
    return rc;
}

/* bf16 MoE forward: T = 200 tokens, H = 512, E = 16, top-4, I = 256,
 * softmax then top-k, renormalised (a Qwen3-MoE layer in miniature). */
static int test_moe_forward(xattn_context *ctx, CUstream stream)
{
    enum { T = 200, H = 512, E = 16, K = 4, I = 256 };
    xattn_moe_desc d = {
        .max_tokens = T, .hidden = H, .num_experts = E, .top_k = K, .inter = I,
        .dtype = XATTN_BF16, .weight_dtype = XATTN_BF16, .logits_dtype = XATTN_BF16,
        .route = XATTN_MOE_ROUTE_SOFTMAX_TOPK, .activation = XATTN_MOE_SWIGLU,
        .flags = XATTN_MOE_RENORMALIZE};
    xattn_moe_plan *plan = NULL;
    CHECK("moe plan", xattn_moe_plan_create(ctx, &d, &plan));
    xattn_buffer *logits, *x, *w1, *w2, *out, *ws = NULL;
    CHECK("logits", bf16_buffer(ctx, (size_t)T * E, 4.0f, &logits));
    CHECK("x", bf16_buffer(ctx, (size_t)T * H, 1.0f, &x));
    CHECK("w1", bf16_buffer(ctx, (size_t)E * 2 * I * H, 0.05f, &w1));
    CHECK("w2", bf16_buffer(ctx, (size_t)E * H * I, 0.05f, &w2));
    CHECK("out", xattn_buffer_alloc(ctx, (size_t)T * H * 2, &out));
    size_t wsz = xattn_moe_workspace_size(plan);
    if (wsz) CHECK("workspace", xattn_buffer_alloc(ctx, wsz, &ws));

    xattn_moe_args a = {0};
    a.logits = xattn_tensor_contiguous(logits, 0, XATTN_BF16, 2, (int64_t[]){T, E});
    a.x = xattn_tensor_contiguous(x, 0, XATTN_BF16, 2, (int64_t[]){T, H});
    a.w1 = xattn_tensor_contiguous(w1, 0, XATTN_BF16, 3, (int64_t[]){E, 2 * I, H});
    a.w2 = xattn_tensor_contiguous(w2, 0, XATTN_BF16, 3, (int64_t[]){E, H, I});
    a.out = xattn_tensor_contiguous(out, 0, XATTN_BF16, 2, (int64_t[]){T, H});
    a.workspace = ws;

    char desc[2048] = "";
    xattn_moe_plan_describe(plan, desc, sizeof desc, NULL);
    printf("    plan:\n%s\n", desc);
    int rc = eager_vs_graph("moe forward", ctx, stream, moe_step, plan, &a, out);
    xattn_buffer *bufs[] = {logits, x, w1, w2, out, ws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
    xattn_moe_plan_destroy(&plan);
    return rc;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    CUdevice dev = 0;
    CUcontext cuctx = NULL;
    int rc = load_driver(&dev, &cuctx);
    if (rc) return rc;
    CUstream stream = NULL;
    CUresult r = cu.StreamCreate(&stream, CU_STREAM_NON_BLOCKING);
    if (r != 0) {
        printf("[  FAILED  ] cuda-graph: cuStreamCreate: %d\n", r);
        return 1;
    }
    xattn_context_options opts = {.backend = XATTN_BACKEND_CUDA, .native_queue = stream};
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create_with(&opts, &ctx);
    if (st != XATTN_OK) {
        /* A device exists, so the module must open it. */
        printf("[  FAILED  ] cuda-graph: context: %s: %s\n", xattn_status_string(st),
               xattn_last_error());
        return 1;
    }
    printf("[==========] cuda-graph on %s\n", xattn_context_device_name(ctx));
    static const struct { const char *name; int (*fn)(xattn_context *, CUstream); } tests[] = {
        {"paged_decode_bf16", test_paged_decode},
        {"moe_forward_bf16", test_moe_forward},
    };
    int n = (int)(sizeof tests / sizeof tests[0]);
    for (int i = 0; i < n; i++) {
        printf("[ RUN      ] %s\n", tests[i].name);
        int f = tests[i].fn(ctx, stream);
        printf("%s %s\n", f ? "[  FAILED  ]" : "[       OK ]", tests[i].name);
        failures += f != 0;
    }
    xattn_context_destroy(&ctx);
    cu.StreamSynchronize(stream);
    cu.StreamDestroy(stream);
    cu.DevicePrimaryCtxRelease(dev);
    printf("[  PASSED  ] %d test(s).\n", n - failures);
    if (failures) printf("[  FAILED  ] %d test(s).\n", failures);
    return failures ? 1 : 0;
}
