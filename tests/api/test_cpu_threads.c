/* The CPU backend's worker threads (backends/cpu/cpu_pool.h): started with
 * a context and stopped with it, shared by every caller of that context,
 * usable in a child process after fork(), and (argument "start-failure")
 * a failure to start them is a status from context creation, never an
 * exit. */
#include "api_test.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
    THREADS = 4,
    CALLERS = 6,
    ROUNDS = 12,
    /* A child that blocks fails after this long. */
    CHILD_SECONDS = 30,
    /* Long enough for idle workers to stop spinning and sleep. */
    SLEEP_US = 20000,
    SQ = 2, SK = 2000, HQ = 4, HKV = 2, D = 64, /* decode: KV splits, merged after a barrier */
    MN = 80, MH = 6, MD = 64, /* merge_states: enough rows for every thread */
};

static int threads_of_this_process(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Polls of settled_threads, SETTLE_POLL_US apart: pthread_join returns when a
 * thread has cleared its id, shortly before the kernel drops it from
 * /proc/self/task, so a count right after a join can still include it. */
enum { SETTLE_POLLS = 2000, SETTLE_POLL_US = 500 };

/* The thread count once it equals want, or after about a second the count
 * it has then (a thread that never stops still fails the comparison). */
static int settled_threads(int want)
{
    int n = threads_of_this_process();
    for (int i = 0; n != want && i < SETTLE_POLLS; i++) {
        usleep(SETTLE_POLL_US);
        n = threads_of_this_process();
    }
    return n;
}

static void contexts_start_and_stop_their_threads(void **state)
{
    (void)state;
    /* a first context, so that a runtime's own helper threads (a
     * sanitizer's) are there before the count */
    xattn_context *first = xt_cpu_context(THREADS);
    xattn_context_destroy(&first);
    const int before = threads_of_this_process();
    for (int i = 0; i < 20; i++) {
        xattn_context *ctx = xt_cpu_context(THREADS);
        xattn_device_caps caps;
        XT_ASSERT_STATUS(xattn_context_caps(ctx, &caps), XATTN_OK);
        assert_int_equal(caps.compute_units, THREADS);
        assert_int_equal(threads_of_this_process(), before + THREADS - 1);
        if (i % 2) usleep(SLEEP_US); /* stopped while asleep, not spinning */
        xattn_context_destroy(&ctx);
        assert_int_equal(settled_threads(before), before);
    }
    xattn_context *one = xt_cpu_context(1); /* the caller alone: no worker */
    assert_int_equal(threads_of_this_process(), before);
    xattn_context_destroy(&one);
}

/* ---- one context, many callers ---------------------------------------------- */

static float value(size_t i, int salt) { return (float)((i * 7 + (size_t)salt * 13) % 23) / 23.0f - 0.5f; }

static xattn_tensor filled(xattn_context *ctx, int32_t rank, const int64_t *shape, int salt)
{
    size_t n = xt_elems(rank, shape);
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = value(i, salt);
    xattn_tensor t = xt_tensor_f32(ctx, rank, shape, v);
    free(v);
    return t;
}

/* One caller's work: attention (dynamic items, a barrier before the split
 * merge) and merge_states (a static share), with its own buffers. */
typedef struct caller {
    xattn_context *ctx;
    const xattn_plan *plan;
    xattn_attn_args a;
    xattn_tensor oa, la, ob, lb, o, l;
    xattn_status st;
} caller;

static void caller_init(caller *c, xattn_context *ctx, const xattn_plan *plan, int salt)
{
    memset(c, 0, sizeof *c);
    c->ctx = ctx;
    c->plan = plan;
    const int64_t qs[4] = {1, SQ, HQ, D}, ks[4] = {1, SK, HKV, D};
    c->a.q = filled(ctx, 4, qs, salt);
    c->a.k = filled(ctx, 4, ks, salt + 1);
    c->a.v = filled(ctx, 4, ks, salt + 2);
    c->a.o = filled(ctx, 4, qs, 0);
    size_t ws = xattn_plan_workspace_size(plan);
    c->a.workspace = ws ? xt_buffer(ctx, ws, 0) : NULL;
    const int64_t os[3] = {MN, MH, MD}, ls[2] = {MH, MN};
    c->oa = filled(ctx, 3, os, salt + 3);
    c->ob = filled(ctx, 3, os, salt + 4);
    c->la = filled(ctx, 2, ls, salt + 5);
    c->lb = filled(ctx, 2, ls, salt + 6);
    c->o = filled(ctx, 3, os, 0);
    c->l = filled(ctx, 2, ls, 0);
}

static void caller_free(caller *c)
{
    xattn_buffer *b[] = {c->a.q.buffer, c->a.k.buffer, c->a.v.buffer, c->a.o.buffer,
                         c->a.workspace, c->oa.buffer, c->ob.buffer, c->la.buffer,
                         c->lb.buffer, c->o.buffer, c->l.buffer};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) xattn_buffer_free(&b[i]);
}

static xattn_status caller_step(caller *c)
{
    xattn_status st = xattn_attn_run(c->plan, &c->a);
    if (st == XATTN_OK) st = xattn_merge_states(c->ctx, &c->oa, &c->la, &c->ob, &c->lb, &c->o, &c->l);
    return st;
}

static void *caller_main(void *arg)
{
    caller *c = arg;
    c->st = XATTN_OK;
    for (int i = 0; i < ROUNDS && c->st == XATTN_OK; i++) c->st = caller_step(c);
    return NULL;
}

static void expect_contents(xattn_buffer *b, unsigned char *want)
{
    unsigned char *got = xt_read_all(b);
    assert_memory_equal(got, want, xattn_buffer_size(b));
    free(got);
    free(want);
}

static xattn_plan *splitting_plan(xattn_context *ctx)
{
    xattn_attn_desc d = xt_attn_desc(1, SQ, SK, HQ, HKV, D, XATTN_ATTN_CAUSAL);
    return xt_plan(ctx, &d);
}

static void callers_share_one_contexts_threads(void **state)
{
    (void)state;
    xattn_context *ctx = xt_cpu_context(THREADS);
    xattn_plan *plan = splitting_plan(ctx);
    caller c[CALLERS];
    unsigned char *o_want[CALLERS], *m_want[CALLERS], *l_want[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        caller_init(&c[i], ctx, plan, 10 * i);
        XT_ASSERT_STATUS(caller_step(&c[i]), XATTN_OK);
        o_want[i] = xt_read_all(c[i].a.o.buffer);
        m_want[i] = xt_read_all(c[i].o.buffer);
        l_want[i] = xt_read_all(c[i].l.buffer);
    }
    pthread_t t[CALLERS];
    for (int i = 0; i < CALLERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    for (int i = 0; i < CALLERS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    /* once more after the workers have gone to sleep */
    usleep(SLEEP_US);
    XT_ASSERT_STATUS(caller_step(&c[0]), XATTN_OK);
    for (int i = 0; i < CALLERS; i++) {
        XT_ASSERT_STATUS(c[i].st, XATTN_OK);
        expect_contents(c[i].a.o.buffer, o_want[i]);
        expect_contents(c[i].o.buffer, m_want[i]);
        expect_contents(c[i].l.buffer, l_want[i]);
        caller_free(&c[i]);
    }
    xattn_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
}

/* ---- fork ----------------------------------------------------------------- */

/* The workers stay in the parent; a child runs its calls on its one
 * thread, with the same results, instead of waiting for workers that do
 * not exist there. */
static void child_of_fork_runs_on_its_own_thread(void **state)
{
    (void)state;
    xattn_context *ctx = xt_cpu_context(THREADS);
    xattn_plan *plan = splitting_plan(ctx);
    caller c;
    caller_init(&c, ctx, plan, 7);
    XT_ASSERT_STATUS(caller_step(&c), XATTN_OK);
    unsigned char *o_want = xt_read_all(c.a.o.buffer), *m_want = xt_read_all(c.o.buffer);
    const size_t on = xattn_buffer_size(c.a.o.buffer), mn = xattn_buffer_size(c.o.buffer);
    xt_fill(c.a.o.buffer, 0);
    xt_fill(c.o.buffer, 0);

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_SECONDS); /* default action: killed, which the parent sees */
        int ok = caller_step(&c) == XATTN_OK;
        unsigned char *o = malloc(on), *m = malloc(mn);
        ok = ok && o && m && xattn_buffer_read(c.a.o.buffer, 0, o, on) == XATTN_OK &&
             xattn_buffer_read(c.o.buffer, 0, m, mn) == XATTN_OK && !memcmp(o, o_want, on) &&
             !memcmp(m, m_want, mn);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child %s %d", WIFEXITED(status) ? "exited with" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    /* and the parent's threads still work */
    XT_ASSERT_STATUS(caller_step(&c), XATTN_OK);
    expect_contents(c.a.o.buffer, o_want);
    expect_contents(c.o.buffer, m_want);
    caller_free(&c);
    xattn_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
}

/* ---- failure to start threads -------------------------------------------------- */

/* With the address space capped just above what the process uses, thread
 * stacks cannot be mapped: context creation says so and leaves nothing
 * behind. (A sanitizer reserves terabytes of shadow memory up front, so
 * the cap cannot be applied under one: tests/api/meson.build runs this
 * case only without sanitizers.) */
static void thread_start_failure_is_a_status(void **state)
{
    (void)state;
    enum { THREADS_ASKED = 64, HEADROOM = 24 << 20 };
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld", &pages), 1);
    fclose(f);
    const int before = threads_of_this_process();
    struct rlimit old, cap;
    assert_int_equal(getrlimit(RLIMIT_AS, &old), 0);
    cap = old;
    cap.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + HEADROOM;
    assert_int_equal(setrlimit(RLIMIT_AS, &cap), 0);

    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_CPU;
    o.num_threads = THREADS_ASKED;
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create_with(&o, &ctx);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", xattn_last_error());
    assert_int_equal(setrlimit(RLIMIT_AS, &old), 0);

    XT_ASSERT_STATUS(st, XATTN_ERR_OUT_OF_MEMORY);
    assert_null(ctx);
    if (!xt_mentions(msg, "thread")) fail_msg("message \"%s\" does not name the threads", msg);
    assert_int_equal(settled_threads(before), before);
    ctx = xt_cpu_context(THREADS); /* and without the cap it works */
    xattn_context_destroy(&ctx);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "start-failure")) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(thread_start_failure_is_a_status, xt_env_teardown),
        };
        return cmocka_run_group_tests_name("cpu threads: start failure", tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(contexts_start_and_stop_their_threads, xt_env_teardown),
        cmocka_unit_test_teardown(callers_share_one_contexts_threads, xt_env_teardown),
        cmocka_unit_test_teardown(child_of_fork_runs_on_its_own_thread, xt_env_teardown),
    };
    return cmocka_run_group_tests_name("cpu threads", tests, NULL, NULL);
}
