/* Object lifetimes (api/xattn_core.h, xattn_context_destroy): buffers and
 * plans keep their context alive, so a context, its buffers, its attention
 * plans and its MoE plans may be destroyed in any order, and each object
 * keeps working until it is freed, also after the caller's context handle
 * is gone. Runs on the backend XATTN_BACKEND names; the sanitizer build
 * turns any use after free into a failure. On the fake module
 * (XATTN_TEST_FAKE_MODULE names its file) counters inside the module also
 * show that the device closes exactly when the last object goes, and never
 * under a live buffer or plan. */
#include "api_test.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_backend.h"

/* ---- the fake module's counters ----------------------------------------- */

static xattn_fake_counts_fn fake_counts;

/* Find the counters of the fake module once a context has loaded it; no-op
 * on real backends. */
static void find_fake_counts(void)
{
    const char *path = getenv("XATTN_TEST_FAKE_MODULE");
    if (!path || !*path || fake_counts) return;
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!h) fail_msg("XATTN_TEST_FAKE_MODULE=%s is not loaded: %s", path, dlerror());
    void *sym = dlsym(h, XATTN_FAKE_COUNTS_SYMBOL);
    if (!sym) fail_msg("%s has no %s", path, XATTN_FAKE_COUNTS_SYMBOL);
    memcpy(&fake_counts, &sym, sizeof fake_counts); /* object → function pointer */
    dlclose(h); /* the registry keeps its own reference */
}

/* On the fake module: one device is open iff objects remain, and no device
 * ever closed under a live buffer or plan. */
static void check_device_open(int objects_left, const char *when, int step)
{
    if (!fake_counts) return;
    xattn_fake_counts c;
    fake_counts(&c);
    if (c.closes_with_live)
        fail_msg("%s, step %d: the device closed while %d buffer(s) and %d plan state(s) "
                 "were alive", when, step, c.buffers_live, c.states_live);
    if (c.devices_open != (objects_left > 0))
        fail_msg("%s, step %d: %d device(s) open with %d object(s) left", when, step,
                 c.devices_open, objects_left);
}

/* ---- the objects of one context ----------------------------------------- */

enum { B = 1, SQ = 3, SK = 9, HQ = 2, HKV = 1, D = 16 };
enum { Q_ELEMS = B * SQ * HQ * D, KV_ELEMS = B * SK * HKV * D };

static xattn_attn_desc attn_desc(void)
{
    return xt_attn_desc(B, SQ, SK, HQ, HKV, D, XATTN_ATTN_CAUSAL);
}

enum { MOE_T = 3, MOE_H = 16, MOE_E = 4, MOE_K = 2, MOE_I = 8 };

static xattn_moe_desc moe_desc(void)
{
    return xt_moe_desc(MOE_T, MOE_H, MOE_E, MOE_K, MOE_I);
}

/* The fake module has no MoE kernels; every real backend must have them. */
static int moe_expected(void)
{
    const char *v = getenv("XATTN_TEST_NO_MOE");
    return !(v && *v == '1');
}

enum { IT_CONTEXT, IT_BUFFER, IT_WRAPPED, IT_PLAN, IT_MOE_PLAN, IT_COUNT };
static const char *const item_names[IT_COUNT] = {"context", "buffer", "wrapped buffer",
                                                 "attention plan", "MoE plan"};

typedef struct objects {
    xattn_context *ctx;
    xattn_buffer *buffer, *wrapped;
    xattn_plan *plan;
    xattn_moe_plan *moe;
} objects;

static void make_objects(objects *o)
{
    memset(o, 0, sizeof *o);
    o->ctx = xt_context();
    find_fake_counts();
    o->buffer = xt_buffer(o->ctx, 256, 0);
    /* The wrapper shares the buffer's memory: a wrapped handle on every
     * backend (a cl_mem on OpenCL), freed without freeing the memory. */
    XT_ASSERT_STATUS(xattn_buffer_wrap(o->ctx, xattn_buffer_native(o->buffer), 256,
                                       &o->wrapped), XATTN_OK);
    xattn_attn_desc ad = attn_desc();
    XT_ASSERT_STATUS(xattn_plan_create(o->ctx, &ad, &o->plan), XATTN_OK);
    xattn_moe_desc md = moe_desc();
    if (moe_expected()) XT_ASSERT_STATUS(xattn_moe_plan_create(o->ctx, &md, &o->moe), XATTN_OK);
}

static int objects_left(const objects *o)
{
    return !!o->ctx + !!o->buffer + !!o->wrapped + !!o->plan + !!o->moe;
}

static void release(objects *o, int item)
{
    switch (item) {
    case IT_CONTEXT: xattn_context_destroy(&o->ctx); assert_null(o->ctx); break;
    case IT_BUFFER: xattn_buffer_free(&o->buffer); assert_null(o->buffer); break;
    case IT_WRAPPED: xattn_buffer_free(&o->wrapped); assert_null(o->wrapped); break;
    case IT_PLAN: xattn_plan_destroy(&o->plan); assert_null(o->plan); break;
    default: xattn_moe_plan_destroy(&o->moe); assert_null(o->moe); break;
    }
}

/* Next permutation in lexicographic order; 0 after the last. */
static int next_permutation(int *a, int n)
{
    int i = n - 2;
    while (i >= 0 && a[i] >= a[i + 1]) i--;
    if (i < 0) return 0;
    int j = n - 1;
    while (a[j] <= a[i]) j--;
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
    for (int l = i + 1, r = n - 1; l < r; l++, r--) {
        t = a[l];
        a[l] = a[r];
        a[r] = t;
    }
    return 1;
}

/* ---- any order ------------------------------------------------------------ */

/* Every order of destroying the context, a buffer, a wrapped buffer, an
 * attention plan and a MoE plan: the context first (what used to crash in
 * the later xattn_buffer_free), last, and everywhere between. */
static void test_objects_are_destroyed_safely_in_every_order(void **state)
{
    (void)state;
    int order[IT_COUNT];
    for (int i = 0; i < IT_COUNT; i++) order[i] = i;
    int orders = 0;
    do {
        objects o;
        make_objects(&o);
        char when[160];
        size_t len = 0;
        for (int i = 0; i < IT_COUNT; i++)
            len += (size_t)snprintf(when + len, sizeof when - len, "%s%s", i ? ", " : "order ",
                                    item_names[order[i]]);
        check_device_open(objects_left(&o), when, 0);
        for (int i = 0; i < IT_COUNT; i++) {
            release(&o, order[i]);
            check_device_open(objects_left(&o), when, i + 1);
        }
        assert_int_equal(objects_left(&o), 0);
        orders++;
    } while (next_permutation(order, IT_COUNT));
    assert_int_equal(orders, 120);
}

/* ---- objects keep working ------------------------------------------------- */

static void fill_f32(xattn_buffer *buf, size_t n, uint32_t seed)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    xattn_status st = xattn_buffer_write(buf, 0, v, n * sizeof *v);
    free(v);
    XT_ASSERT_STATUS(st, XATTN_OK);
}

/* Run attention into o and return what it wrote. */
static void run_attention(xattn_plan *plan, xattn_buffer *q, xattn_buffer *k, xattn_buffer *v,
                          xattn_buffer *o, xattn_buffer *ws, float *out)
{
    const int64_t qs[4] = {B, SQ, HQ, D}, ks[4] = {B, SK, HKV, D};
    xattn_attn_args a = xt_attn_args(q, k, v, o, 4, qs, ks);
    a.workspace = ws;
    xt_fill(o, XT_SENTINEL_O);
    XT_ASSERT_STATUS(xattn_attn_run(plan, &a), XATTN_OK);
    /* A blocking read waits for the run: no context handle is needed. */
    XT_ASSERT_STATUS(xattn_buffer_read(o, 0, out, Q_ELEMS * sizeof *out), XATTN_OK);
}

typedef struct moe_operands {
    xattn_buffer *logits, *x, *w1, *w2, *out, *ws;
} moe_operands;

static void run_moe(xattn_moe_plan *plan, const moe_operands *m, float *out)
{
    const int64_t ls[2] = {MOE_T, MOE_E}, xs[2] = {MOE_T, MOE_H};
    const int64_t w1s[3] = {MOE_E, 2 * MOE_I, MOE_H}, w2s[3] = {MOE_E, MOE_H, MOE_I};
    xattn_moe_args a;
    memset(&a, 0, sizeof a);
    a.logits = xattn_tensor_contiguous(m->logits, 0, XATTN_F32, 2, ls);
    a.x = xattn_tensor_contiguous(m->x, 0, XATTN_F32, 2, xs);
    a.w1 = xattn_tensor_contiguous(m->w1, 0, XATTN_F32, 3, w1s);
    a.w2 = xattn_tensor_contiguous(m->w2, 0, XATTN_F32, 3, w2s);
    a.out = xattn_tensor_contiguous(m->out, 0, XATTN_F32, 2, xs);
    a.workspace = m->ws;
    xt_fill(m->out, XT_SENTINEL_O);
    XT_ASSERT_STATUS(xattn_moe_forward(plan, &a), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(m->out, 0, out, MOE_T * MOE_H * sizeof *out), XATTN_OK);
}

static xattn_buffer *workspace_of(xattn_context *ctx, size_t bytes)
{
    return bytes ? xt_buffer(ctx, bytes, 0) : NULL;
}

/* After the caller destroys its context handle, plans still run on their
 * buffers and give the same bits as before; buffers are still written and
 * read; plans still describe themselves. Then everything is freed. */
static void test_objects_keep_working_after_context_destroy(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    find_fake_counts();
    xattn_attn_desc ad = attn_desc();
    xattn_plan *plan = NULL;
    XT_ASSERT_STATUS(xattn_plan_create(ctx, &ad, &plan), XATTN_OK);
    xattn_buffer *q = xt_buffer(ctx, Q_ELEMS * sizeof(float), 0);
    xattn_buffer *k = xt_buffer(ctx, KV_ELEMS * sizeof(float), 0);
    xattn_buffer *v = xt_buffer(ctx, KV_ELEMS * sizeof(float), 0);
    xattn_buffer *o = xt_buffer(ctx, Q_ELEMS * sizeof(float), 0);
    xattn_buffer *ws = workspace_of(ctx, xattn_plan_workspace_size(plan));
    fill_f32(q, Q_ELEMS, 1);
    fill_f32(k, KV_ELEMS, 2);
    fill_f32(v, KV_ELEMS, 3);

    xattn_moe_plan *moe = NULL;
    moe_operands m;
    memset(&m, 0, sizeof m);
    if (moe_expected()) {
        xattn_moe_desc md = moe_desc();
        XT_ASSERT_STATUS(xattn_moe_plan_create(ctx, &md, &moe), XATTN_OK);
        m.logits = xt_buffer(ctx, MOE_T * MOE_E * sizeof(float), 0);
        m.x = xt_buffer(ctx, MOE_T * MOE_H * sizeof(float), 0);
        m.w1 = xt_buffer(ctx, MOE_E * 2 * MOE_I * MOE_H * sizeof(float), 0);
        m.w2 = xt_buffer(ctx, MOE_E * MOE_H * MOE_I * sizeof(float), 0);
        m.out = xt_buffer(ctx, MOE_T * MOE_H * sizeof(float), 0);
        m.ws = workspace_of(ctx, xattn_moe_workspace_size(moe));
        fill_f32(m.logits, MOE_T * MOE_E, 4);
        fill_f32(m.x, MOE_T * MOE_H, 5);
        fill_f32(m.w1, MOE_E * 2 * MOE_I * MOE_H, 6);
        fill_f32(m.w2, MOE_E * MOE_H * MOE_I, 7);
    }

    /* The fake module plans but runs nothing: its runs are UNSUPPORTED. */
    int runs = !getenv("XATTN_TEST_FAKE_MODULE");
    float before[Q_ELEMS], after[Q_ELEMS];
    float moe_before[MOE_T * MOE_H], moe_after[MOE_T * MOE_H];
    if (runs) run_attention(plan, q, k, v, o, ws, before);
    if (moe) run_moe(moe, &m, moe_before);

    xattn_context_destroy(&ctx);
    assert_null(ctx);
    check_device_open(1, "after xattn_context_destroy", 0);

    if (runs) {
        run_attention(plan, q, k, v, o, ws, after);
        assert_memory_equal(before, after, sizeof before);
    }
    if (moe) {
        run_moe(moe, &m, moe_after);
        assert_memory_equal(moe_before, moe_after, sizeof moe_before);
    }
    const unsigned char bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    unsigned char back[8] = {0};
    XT_ASSERT_STATUS(xattn_buffer_write(o, 8, bytes, sizeof bytes), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(o, 8, back, sizeof back), XATTN_OK);
    assert_memory_equal(bytes, back, sizeof bytes);
    char text[512];
    XT_ASSERT_STATUS(xattn_plan_describe(plan, text, sizeof text, NULL), XATTN_OK);
    assert_true(strlen(text) > 0);
    if (moe) XT_ASSERT_STATUS(xattn_moe_plan_describe(moe, text, sizeof text, NULL), XATTN_OK);

    xattn_plan_destroy(&plan);
    xattn_moe_plan_destroy(&moe);
    xattn_buffer *all[] = {q, k, v, o, ws, m.logits, m.x, m.w1, m.w2, m.out, m.ws};
    enum { ALL = sizeof all / sizeof all[0] };
    int left = 0;
    for (int i = 0; i < ALL; i++) left += all[i] != NULL;
    for (int i = 0; i < ALL; i++) {
        check_device_open(left, "freeing the buffers", i);
        left -= all[i] != NULL;
        xattn_buffer_free(&all[i]);
    }
    check_device_open(0, "after the last buffer", ALL);
}

/* ---- threads ---------------------------------------------------------------- */

enum { THREADS = 4, BUFFERS_PER_THREAD = 8, ROUNDS = 16 };

typedef struct worker {
    pthread_barrier_t *start;
    xattn_buffer *bufs[BUFFERS_PER_THREAD];
    xattn_plan *plan;
} worker;

static void *worker_release(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    for (int i = 0; i < BUFFERS_PER_THREAD; i++) {
        xattn_buffer_free(&w->bufs[i]);
        if (i == BUFFERS_PER_THREAD / 2) xattn_plan_destroy(&w->plan);
    }
    return NULL;
}

/* Threads free buffers and plans of one context while the main thread
 * destroys the context: the references are atomic, and the device closes
 * once, after the last object. */
static void test_objects_are_released_concurrently_with_the_context(void **state)
{
    (void)state;
    for (int round = 0; round < ROUNDS; round++) {
        xattn_context *ctx = xt_context();
        find_fake_counts();
        pthread_barrier_t start;
        assert_int_equal(pthread_barrier_init(&start, NULL, THREADS + 1), 0);
        worker w[THREADS];
        pthread_t tid[THREADS];
        xattn_attn_desc ad = attn_desc();
        for (int t = 0; t < THREADS; t++) {
            w[t].start = &start;
            for (int i = 0; i < BUFFERS_PER_THREAD; i++)
                XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, 64u * (unsigned)(i + 1), &w[t].bufs[i]),
                                 XATTN_OK);
            XT_ASSERT_STATUS(xattn_plan_create(ctx, &ad, &w[t].plan), XATTN_OK);
        }
        for (int t = 0; t < THREADS; t++)
            assert_int_equal(pthread_create(&tid[t], NULL, worker_release, &w[t]), 0);
        pthread_barrier_wait(&start);
        xattn_context_destroy(&ctx);
        for (int t = 0; t < THREADS; t++) assert_int_equal(pthread_join(tid[t], NULL), 0);
        pthread_barrier_destroy(&start);
        check_device_open(0, "after the threads", round);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects_are_destroyed_safely_in_every_order),
        cmocka_unit_test(test_objects_keep_working_after_context_destroy),
        cmocka_unit_test(test_objects_are_released_concurrently_with_the_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
