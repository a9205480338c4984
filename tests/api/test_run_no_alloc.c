/* Runs allocate nothing (api/xattn_attn.h, api/xattn_moe.h: "launch-only").
 *
 * This test replaces malloc and its relatives in the process (the
 * executable's definitions come first in symbol lookup, so libxattn and
 * every library it uses call them) and, while a call is under test, makes
 * every allocation fail and counts it. Each call must return XATTN_OK with
 * no allocation attempted, and compute what it computes with allocation
 * working (the outputs are compared bit for bit with a second run).
 *
 * The library promises never to exit. With OpenMP worker threads a failed
 * allocation of the thread team inside a run made libgomp print "Out of
 * memory" and call exit(1); the CPU backend's threads now start with the
 * context. That is why each group below runs in a process of its own and
 * its first call is made under test: the first parallel region of a
 * process is where an OpenMP runtime allocates.
 *
 * The replacement cannot coexist with a sanitizer's own malloc, so
 * tests/api/meson.build builds this test only without sanitizers.
 *
 * usage: test_api_run_no_alloc attn-prefill|attn-decode|kv-append|
 *                              merge-states|moe   (XATTN_BACKEND=cpu) */
#include "api_test.h"

#include <errno.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the allocation interposer --------------------------------------------- */

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

static atomic_int refusing;
static atomic_long refused;

/* 1 (and counted) while a call is under test. */
static int refuse(void)
{
    if (!atomic_load_explicit(&refusing, memory_order_relaxed)) return 0;
    atomic_fetch_add(&refused, 1);
    return 1;
}

void *malloc(size_t n)
{
    if (refuse()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (refuse()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (refuse()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

void *reallocarray(void *p, size_t n, size_t size)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, bytes);
}

void *memalign(size_t align, size_t n)
{
    if (refuse()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }

int posix_memalign(void **out, size_t align, size_t n)
{
    if (refuse()) return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

/* Call expr with every allocation failing; it must return OK without
 * having tried one. */
#define UNDER_TEST(expr)                                                           \
    do {                                                                           \
        atomic_store(&refused, 0);                                                 \
        atomic_store(&refusing, 1);                                                \
        xattn_status st_ = (expr);                                                 \
        atomic_store(&refusing, 0);                                                \
        long n_ = atomic_load(&refused);                                           \
        if (n_) fail_msg("%s tried %ld allocation(s)", #expr, n_);                 \
        XT_ASSERT_STATUS(st_, XATTN_OK);                                           \
    } while (0)

/* ---- fixtures ------------------------------------------------------------------ */

enum {
    /* More worker threads than this machine may have cores: every parallel
     * region really runs on several threads. */
    THREADS = 4,
    MAX_BUFFERS = 48,
};

static xattn_context *ctx;
static xattn_buffer *bufs[MAX_BUFFERS];
static int nbufs;
static uint32_t seed = 12345;

static float uniform(void)
{
    seed = seed * 1664525u + 1013904223u;
    return (float)(seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

static int setup(void **state)
{
    (void)state;
    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_CPU;
    o.num_threads = THREADS;
    return xattn_context_create_with(&o, &ctx) == XATTN_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nbufs; i++) xattn_buffer_free(&bufs[i]);
    xattn_context_destroy(&ctx);
    return 0;
}

static xattn_buffer *keep(xattn_buffer *b)
{
    assert_true(nbufs < MAX_BUFFERS);
    bufs[nbufs++] = b;
    return b;
}

/* n f32 values uniform in [-1, 1). */
static xattn_tensor random_f32(int32_t rank, const int64_t *shape)
{
    size_t n = xt_elems(rank, shape);
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = uniform();
    xattn_tensor t = xt_tensor_f32(ctx, rank, shape, v);
    free(v);
    keep(t.buffer);
    return t;
}

static xattn_tensor blank(xattn_dtype dtype, int32_t rank, const int64_t *shape)
{
    xattn_buffer *b = keep(xt_buffer(ctx, xt_elems(rank, shape) * xattn_dtype_size(dtype), 0));
    return xattn_tensor_contiguous(b, 0, dtype, rank, shape);
}

static xattn_buffer *workspace(size_t bytes) { return bytes ? keep(xt_buffer(ctx, bytes, 0)) : NULL; }

static void expect_same(xattn_buffer *b, unsigned char *before, const char *what)
{
    unsigned char *after = xt_read_all(b);
    int same = memcmp(before, after, xattn_buffer_size(b)) == 0;
    free(before);
    free(after);
    if (!same) fail_msg("%s differs between the run under test and a normal one", what);
}

/* ---- attention ---------------------------------------------------------------- */

static void attention(int32_t batch, int32_t sq, int32_t sk, int32_t hq, int32_t hkv, int32_t d,
                      uint32_t flags)
{
    xattn_attn_desc desc = xt_attn_desc(batch, sq, sk, hq, hkv, d, flags | XATTN_ATTN_LSE);
    xattn_plan *plan = xt_plan(ctx, &desc);
    const int64_t qs[4] = {batch, sq, hq, d}, ks[4] = {batch, sk, hkv, d};
    const int64_t ls[2] = {hq, (int64_t)batch * sq};
    xattn_attn_args a = {0};
    a.q = random_f32(4, qs);
    a.k = random_f32(4, ks);
    a.v = random_f32(4, ks);
    a.o = blank(XATTN_F32, 4, qs);
    a.lse = blank(XATTN_F32, 2, ls);
    a.workspace = workspace(xattn_plan_workspace_size(plan));

    UNDER_TEST(xattn_attn_run(plan, &a));
    unsigned char *o = xt_read_all(a.o.buffer), *lse = xt_read_all(a.lse.buffer);
    XT_ASSERT_STATUS(xattn_attn_run(plan, &a), XATTN_OK);
    expect_same(a.o.buffer, o, "O");
    expect_same(a.lse.buffer, lse, "LSE");
    xattn_plan_destroy(&plan);
}

static void attn_prefill_allocates_nothing(void **state)
{
    (void)state;
    attention(1, 200, 200, 4, 2, 64, XATTN_ATTN_CAUSAL);
}

/* Decode splits the keys: the merge of the splits is a second phase. */
static void attn_decode_allocates_nothing(void **state)
{
    (void)state;
    attention(2, 1, 3000, 8, 2, 128, 0);
}

/* ---- kv_append and merge_states ------------------------------------------------ */

static void kv_append_allocates_nothing(void **state)
{
    (void)state;
    enum { NEW = 64, HKV = 8, D = 128, PAGES = 40, PAGE = 4 };
    const int64_t ns[3] = {NEW, HKV, D}, cs[4] = {PAGES, PAGE, HKV, D}, ss[1] = {NEW};
    xattn_tensor kn = random_f32(3, ns), vn = random_f32(3, ns);
    xattn_tensor kc = blank(XATTN_F32, 4, cs), vc = blank(XATTN_F32, 4, cs);
    int32_t slots[NEW];
    for (int t = 0; t < NEW; t++) slots[t] = t % 9 == 4 ? -1 : (t * 37) % (PAGES * PAGE);
    xattn_buffer *sb = keep(xt_buffer_i32(ctx, slots, NEW));
    xattn_tensor st = xattn_tensor_contiguous(sb, 0, XATTN_I32, 1, ss);

    UNDER_TEST(xattn_kv_append(ctx, &kn, &vn, &st, &kc, &vc));
    unsigned char *k = xt_read_all(kc.buffer), *v = xt_read_all(vc.buffer);
    XT_ASSERT_STATUS(xattn_kv_append(ctx, &kn, &vn, &st, &kc, &vc), XATTN_OK);
    expect_same(kc.buffer, k, "k_cache");
    expect_same(vc.buffer, v, "v_cache");
}

/* Checking more host-visible slots than fit on the stack for repeats takes
 * memory: without it, kv_append says so and writes nothing. */
static void kv_append_of_many_tokens_without_memory_fails_cleanly(void **state)
{
    (void)state;
    enum { NEW = 3000, HKV = 1, D = 8, PAGES = 1000, PAGE = 4 };
    const int64_t ns[3] = {NEW, HKV, D}, cs[4] = {PAGES, PAGE, HKV, D}, ss[1] = {NEW};
    xattn_tensor kn = random_f32(3, ns), vn = random_f32(3, ns);
    xattn_tensor kc = blank(XATTN_F32, 4, cs), vc = blank(XATTN_F32, 4, cs);
    xt_fill(kc.buffer, XT_SENTINEL_O);
    xt_fill(vc.buffer, XT_SENTINEL_O);
    int32_t *slots = malloc(NEW * sizeof *slots);
    assert_non_null(slots);
    for (int t = 0; t < NEW; t++) slots[t] = (t * 7 + 3) % (PAGES * PAGE);
    xattn_buffer *sb = keep(xt_buffer_i32(ctx, slots, NEW));
    xattn_tensor st = xattn_tensor_contiguous(sb, 0, XATTN_I32, 1, ss);

    atomic_store(&refusing, 1);
    xattn_status got = xattn_kv_append(ctx, &kn, &vn, &st, &kc, &vc);
    atomic_store(&refusing, 0);
    XT_ASSERT_STATUS(got, XATTN_ERR_OUT_OF_MEMORY);
    XT_ASSERT_ERROR_NAMES("slots");
    XT_ASSERT_UNTOUCHED(kc.buffer, XT_SENTINEL_O);
    XT_ASSERT_UNTOUCHED(vc.buffer, XT_SENTINEL_O);

    /* with memory: it runs, and a repeat far apart is still found */
    XT_ASSERT_STATUS(xattn_kv_append(ctx, &kn, &vn, &st, &kc, &vc), XATTN_OK);
    slots[NEW - 1] = slots[0];
    XT_ASSERT_STATUS(xattn_buffer_write(sb, 0, slots, NEW * sizeof *slots), XATTN_OK);
    XT_EXPECT_ERROR(xattn_kv_append(ctx, &kn, &vn, &st, &kc, &vc), XATTN_ERR_INVALID_ARGUMENT,
                    "slots");
    free(slots);
}

static void merge_states_allocates_nothing(void **state)
{
    (void)state;
    enum { N = 64, H = 8, D = 128 };
    const int64_t os[3] = {N, H, D}, ls[2] = {H, N};
    xattn_tensor oa = random_f32(3, os), ob = random_f32(3, os);
    xattn_tensor la = random_f32(2, ls), lb = random_f32(2, ls);
    xattn_tensor o = blank(XATTN_F32, 3, os), l = blank(XATTN_F32, 2, ls);

    UNDER_TEST(xattn_merge_states(ctx, &oa, &la, &ob, &lb, &o, &l));
    unsigned char *so = xt_read_all(o.buffer), *sl = xt_read_all(l.buffer);
    XT_ASSERT_STATUS(xattn_merge_states(ctx, &oa, &la, &ob, &lb, &o, &l), XATTN_OK);
    expect_same(o.buffer, so, "O");
    expect_same(l.buffer, sl, "LSE");
}

/* ---- MoE -------------------------------------------------------------------- */

/* Large enough that route, dispatch, the GEMMs and combine each run on
 * every thread. */
static void moe_calls_allocate_nothing(void **state)
{
    (void)state;
    enum { T = 512, H = 128, E = 32, K = 2, I = 64 };
    xattn_moe_desc d = xt_moe_desc(T, H, E, K, I);
    xattn_moe_plan *plan = NULL;
    XT_ASSERT_STATUS(xattn_moe_plan_create(ctx, &d, &plan), XATTN_OK);
    const int64_t R = xattn_moe_rows(plan, T);
    const int64_t lg[2] = {T, E}, xs[2] = {T, H}, ids[2] = {T, K}, offs[1] = {E + 1};
    const int64_t perm[2] = {R, H}, rt[1] = {R}, w1[3] = {E, 2 * I, H}, w2[3] = {E, H, I};
    xattn_buffer *ws = workspace(xattn_moe_workspace_size(plan));

    /* forward first: the first parallel regions of this process */
    xattn_moe_args f = {0};
    f.logits = random_f32(2, lg);
    f.x = random_f32(2, xs);
    f.w1 = random_f32(3, w1);
    f.w2 = random_f32(3, w2);
    f.out = blank(XATTN_F32, 2, xs);
    f.workspace = ws;
    UNDER_TEST(xattn_moe_forward(plan, &f));
    unsigned char *fwd = xt_read_all(f.out.buffer);

    /* then the four calls, each under test */
    xattn_moe_args a = {0};
    a.logits = f.logits;
    a.workspace = ws;
    a.topk_ids = blank(XATTN_I32, 2, ids);
    a.topk_weights = blank(XATTN_F32, 2, ids);
    UNDER_TEST(xattn_moe_route(plan, &a));

    xattn_moe_args b = {0};
    b.topk_ids = a.topk_ids;
    b.x = f.x;
    b.expert_offsets = blank(XATTN_I32, 1, offs);
    b.x_perm = blank(XATTN_F32, 2, perm);
    b.row_token = blank(XATTN_I32, 1, rt);
    b.token_row = blank(XATTN_I32, 2, ids);
    b.workspace = ws;
    UNDER_TEST(xattn_moe_dispatch(plan, &b));

    xattn_moe_args c = {0};
    c.x_perm = b.x_perm;
    c.expert_offsets = b.expert_offsets;
    c.w1 = f.w1;
    c.w2 = f.w2;
    c.y = blank(XATTN_F32, 2, perm);
    c.workspace = ws;
    UNDER_TEST(xattn_moe_experts(plan, &c));

    xattn_moe_args e = {0};
    e.y = c.y;
    e.topk_weights = a.topk_weights;
    e.token_row = b.token_row;
    e.out = blank(XATTN_F32, 2, xs);
    e.workspace = ws;
    UNDER_TEST(xattn_moe_combine(plan, &e));

    /* forward is the four calls; and again with allocation working */
    unsigned char *four = xt_read_all(e.out.buffer);
    assert_memory_equal(four, fwd, (size_t)T * H * sizeof(float));
    free(four);
    XT_ASSERT_STATUS(xattn_moe_forward(plan, &f), XATTN_OK);
    expect_same(f.out.buffer, fwd, "out");
    xattn_moe_plan_destroy(&plan);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        struct CMUnitTest tests[2];
    } groups[] = {
        {"attn-prefill", {cmocka_unit_test(attn_prefill_allocates_nothing)}},
        {"attn-decode", {cmocka_unit_test(attn_decode_allocates_nothing)}},
        {"kv-append",
         {cmocka_unit_test(kv_append_allocates_nothing),
          cmocka_unit_test(kv_append_of_many_tokens_without_memory_fails_cleanly)}},
        {"merge-states", {cmocka_unit_test(merge_states_allocates_nothing)}},
        {"moe", {cmocka_unit_test(moe_calls_allocate_nothing)}},
    };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (argc > 1 && !strcmp(argv[1], groups[i].name)) {
            size_t n = groups[i].tests[1].name ? 2 : 1;
            return _cmocka_run_group_tests(groups[i].name, groups[i].tests, n, setup,
                                           teardown);
        }
    fprintf(stderr, "usage: %s attn-prefill|attn-decode|kv-append|merge-states|moe\n", argv[0]);
    return 1;
}
