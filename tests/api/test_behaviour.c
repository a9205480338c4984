/* API behaviour (docs/errors.md, api/xattn_core.h): fixed status values and
 * names, thread-local error messages, destroy functions, buffers that wrap
 * host memory without copying, contexts from options, probes, tensors. */
#include "api_test.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- status codes ---------------------------------------------------- */

static const struct {
    xattn_status status;
    int value;
    const char *name;
} statuses[] = {
    {XATTN_OK, 0, "XATTN_OK"},
    {XATTN_ERR_INVALID_ARGUMENT, 1, "XATTN_ERR_INVALID_ARGUMENT"},
    {XATTN_ERR_UNSUPPORTED, 2, "XATTN_ERR_UNSUPPORTED"},
    {XATTN_ERR_OUT_OF_MEMORY, 3, "XATTN_ERR_OUT_OF_MEMORY"},
    {XATTN_ERR_BACKEND_UNAVAILABLE, 4, "XATTN_ERR_BACKEND_UNAVAILABLE"},
    {XATTN_ERR_INVALID_ENV, 5, "XATTN_ERR_INVALID_ENV"},
    {XATTN_ERR_DEVICE, 6, "XATTN_ERR_DEVICE"},
    {XATTN_ERR_COMPILE, 7, "XATTN_ERR_COMPILE"},
    {XATTN_ERR_INTERNAL, 8, "XATTN_ERR_INTERNAL"},
    {XATTN_ERR_WORKSPACE_TOO_SMALL, 9, "XATTN_ERR_WORKSPACE_TOO_SMALL"},
};
enum { NUM_STATUSES = sizeof statuses / sizeof statuses[0] };

static void test_status_values_are_fixed(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_STATUSES; i++)
        assert_int_equal((int)statuses[i].status, statuses[i].value);
}

static void test_status_strings_are_the_enum_names(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_STATUSES; i++) {
        const char *s = xattn_status_string(statuses[i].status);
        assert_non_null(s);
        assert_string_equal(s, statuses[i].name);
    }
}

static void test_status_strings_are_unique_and_non_empty(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_STATUSES; i++) {
        const char *a = xattn_status_string(statuses[i].status);
        assert_true(a[0] != '\0');
        for (int j = i + 1; j < NUM_STATUSES; j++)
            assert_string_not_equal(a, xattn_status_string(statuses[j].status));
    }
}

static void test_status_string_of_unknown_value(void **state)
{
    (void)state;
    assert_string_equal(xattn_status_string((xattn_status)10), "XATTN_STATUS_UNKNOWN");
    assert_string_equal(xattn_status_string((xattn_status)-1), "XATTN_STATUS_UNKNOWN");
    assert_string_equal(xattn_status_string((xattn_status)1000), "XATTN_STATUS_UNKNOWN");
}

static void test_version_matches_header_macros(void **state)
{
    (void)state;
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", XATTN_VERSION_MAJOR, XATTN_VERSION_MINOR,
             XATTN_VERSION_PATCH);
    assert_string_equal(xattn_version(), want);
}

/* ---- thread-local error message ---------------------------------------- */

typedef struct thread_job {
    pthread_barrier_t *barrier;
    int which;          /* 0: bad log level, 1: NULL out, 2: no call at all */
    xattn_status status;
    char message[256];
} thread_job;

static void *error_thread(void *arg)
{
    thread_job *job = arg;
    if (job->which == 0)
        job->status = xattn_log_set_level((xattn_log_level)99);
    else if (job->which == 1)
        job->status = xattn_context_create(NULL);
    else
        job->status = XATTN_OK;
    /* Both threads have failed before either reads its message. */
    pthread_barrier_wait(job->barrier);
    snprintf(job->message, sizeof job->message, "%s", xattn_last_error());
    return NULL;
}

static void test_last_error_is_thread_local(void **state)
{
    (void)state;
    /* This thread's own message must survive the other threads' failures. */
    assert_int_equal(xattn_buffer_alloc(NULL, 0, NULL), XATTN_ERR_INVALID_ARGUMENT);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", xattn_last_error());
    assert_true(mine[0] != '\0');

    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, 3), 0);
    thread_job jobs[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].barrier = &barrier;
        jobs[i].which = i;
        assert_int_equal(pthread_create(&threads[i], NULL, error_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&barrier);

    assert_int_equal(jobs[0].status, XATTN_ERR_INVALID_ARGUMENT);
    assert_int_equal(jobs[1].status, XATTN_ERR_INVALID_ARGUMENT);
    if (!xt_mentions(jobs[0].message, "level") || xt_mentions(jobs[0].message, "out"))
        fail_msg("thread 0 sees \"%s\", not its own log-level error", jobs[0].message);
    if (!xt_mentions(jobs[1].message, "out") || xt_mentions(jobs[1].message, "level"))
        fail_msg("thread 1 sees \"%s\", not its own NULL-out error", jobs[1].message);
    if (jobs[2].message[0] != '\0')
        fail_msg("a thread that made no failing call sees \"%s\"", jobs[2].message);
    assert_string_equal(xattn_last_error(), mine);
}

/* ---- destroy functions ----------------------------------------------- */

static void test_destroy_functions_accept_null(void **state)
{
    (void)state;
    xattn_context *ctx = NULL;
    xattn_buffer *buf = NULL;
    xattn_plan *plan = NULL;
    xattn_context_destroy(NULL);
    xattn_context_destroy(&ctx);
    xattn_buffer_free(NULL);
    xattn_buffer_free(&buf);
    xattn_plan_destroy(NULL);
    xattn_plan_destroy(&plan);
    assert_null(ctx);
    assert_null(buf);
    assert_null(plan);
}

static void test_context_destroy_clears_handle(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    xattn_context_destroy(&ctx);
    assert_null(ctx);
}

static void test_buffer_free_clears_handle(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    xattn_buffer *buf = xt_buffer(ctx, 128, 0);
    xattn_buffer_free(&buf);
    assert_null(buf);
    xattn_context_destroy(&ctx);
}

/* ---- buffers --------------------------------------------------------- */

static void test_buffer_round_trip_and_alignment(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    enum { N = 1000 };
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, N, &buf), XATTN_OK);
    assert_int_equal(xattn_buffer_size(buf), N);
    assert_non_null(xattn_buffer_native(buf));
    if (!strcmp(xattn_context_backend_name(ctx), "cpu"))
        assert_int_equal((uintptr_t)xattn_buffer_native(buf) % 64, 0);

    unsigned char src[N], dst[N];
    for (int i = 0; i < N; i++) src[i] = (unsigned char)(i * 7 + 3);
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 0, src, N), XATTN_OK);
    /* A partial write at an offset changes only its range. */
    unsigned char patch[10];
    memset(patch, 0xEE, sizeof patch);
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 500, patch, sizeof patch), XATTN_OK);
    memcpy(src + 500, patch, sizeof patch);
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 0, dst, N), XATTN_OK);
    assert_memory_equal(dst, src, N);
    /* A read at an offset, ending exactly at the end of the buffer. */
    XT_ASSERT_STATUS(xattn_buffer_read(buf, N - 16, dst, 16), XATTN_OK);
    assert_memory_equal(dst, src + N - 16, 16);
    xattn_buffer_free(&buf);
    xattn_context_destroy(&ctx);
}

static void test_buffer_wrap_uses_host_memory_without_copy(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU};
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create_with(&opts, &ctx), XATTN_OK);

    enum { N = 256 };
    unsigned char *host = malloc(N);
    assert_non_null(host);
    memset(host, 0, N);
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_wrap(ctx, host, N, &buf), XATTN_OK);
    assert_ptr_equal(xattn_buffer_native(buf), host);
    assert_int_equal(xattn_buffer_size(buf), N);

    /* Written through the pointer, read through the API. */
    for (int i = 0; i < N; i++) host[i] = (unsigned char)(255 - i);
    unsigned char dst[N];
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 0, dst, N), XATTN_OK);
    assert_memory_equal(dst, host, N);

    /* Written through the API, seen through the pointer. */
    const unsigned char word[4] = {1, 2, 3, 4};
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 100, word, sizeof word), XATTN_OK);
    assert_memory_equal(host + 100, word, sizeof word);

    /* Freeing the wrapper leaves the caller's memory alone (ASan would report
     * a double free below otherwise). */
    xattn_buffer_free(&buf);
    assert_null(buf);
    assert_int_equal(host[100], 1);
    free(host);
    xattn_context_destroy(&ctx);
}

static void test_buffer_size_and_native_of_null(void **state)
{
    (void)state;
    assert_int_equal(xattn_buffer_size(NULL), 0);
    assert_null(xattn_buffer_native(NULL));
}

/* ---- contexts -------------------------------------------------------- */

static void test_context_create_with_does_not_read_backend_env(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "bogus");
    xt_setenv("XATTN_DEVICE", "abc");
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU};
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create_with(&opts, &ctx), XATTN_OK);
    assert_string_equal(xattn_context_backend_name(ctx), "cpu");
    xattn_context_destroy(&ctx);
}

static void test_context_from_env_cpu(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_DEVICE", "0");
    xattn_context *ctx = xt_context();
    assert_string_equal(xattn_context_backend_name(ctx), "cpu");
    xattn_context_destroy(&ctx);
}

static void test_context_reports_names_and_caps(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU, .num_threads = 1};
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create_with(&opts, &ctx), XATTN_OK);
    assert_string_equal(xattn_context_backend_name(ctx), "cpu");
    const char *dev = xattn_context_device_name(ctx);
    assert_non_null(dev);
    assert_true(dev[0] != '\0');
    xattn_device_caps caps;
    memset(&caps, 0, sizeof caps);
    XT_ASSERT_STATUS(xattn_context_caps(ctx, &caps), XATTN_OK);
    assert_string_equal(caps.name, dev);
    assert_int_equal(caps.style, XATTN_DEVICE_STYLE_CPU);
    assert_true(caps.compute_units >= 1);
    assert_true(caps.simd_width >= 1);
    XT_ASSERT_STATUS(xattn_context_synchronize(ctx), XATTN_OK);
    xattn_context_destroy(&ctx);
}

static void test_backend_kind_names(void **state)
{
    (void)state;
    assert_string_equal(xattn_backend_kind_name(XATTN_BACKEND_AUTO), "auto");
    assert_string_equal(xattn_backend_kind_name(XATTN_BACKEND_CPU), "cpu");
    assert_string_equal(xattn_backend_kind_name(XATTN_BACKEND_OPENCL), "opencl");
    assert_string_equal(xattn_backend_kind_name(XATTN_BACKEND_CUDA), "cuda");
    assert_string_equal(xattn_backend_kind_name(XATTN_BACKEND_HIP), "hip");
    assert_null(xattn_backend_kind_name((xattn_backend_kind)XATTN_BACKEND_COUNT));
    assert_null(xattn_backend_kind_name((xattn_backend_kind)-1));
}

static void test_backend_probe_cpu_has_a_device(void **state)
{
    (void)state;
    int32_t n = -1;
    char reason[256];
    XT_ASSERT_STATUS(xattn_backend_probe(XATTN_BACKEND_CPU, &n, reason, sizeof reason),
                     XATTN_OK);
    assert_true(n >= 1);
}

/* A missing GPU module, runtime or device is zero devices and a reason,
 * never an error (docs/api.md). */
static void test_backend_probe_gpu_backends_explain_zero_devices(void **state)
{
    (void)state;
    const xattn_backend_kind kinds[] = {XATTN_BACKEND_OPENCL, XATTN_BACKEND_CUDA,
                                        XATTN_BACKEND_HIP};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        int32_t n = -1;
        char reason[512];
        memset(reason, 'x', sizeof reason);
        XT_ASSERT_STATUS(xattn_backend_probe(kinds[i], &n, reason, sizeof reason), XATTN_OK);
        assert_true(n >= 0);
        assert_non_null(memchr(reason, '\0', sizeof reason));
        if (n == 0 && reason[0] == '\0')
            fail_msg("%s: zero devices and no reason", xattn_backend_kind_name(kinds[i]));
        print_message("probe %s: %d device(s) %s\n", xattn_backend_kind_name(kinds[i]), n,
                      reason);
    }
}

static void test_backend_probe_truncates_reason_to_its_buffer(void **state)
{
    (void)state;
    int32_t n = -1;
    char reason[8];
    memset(reason, 'x', sizeof reason);
    /* hip: no module in a plain build, so there is a reason to truncate. */
    XT_ASSERT_STATUS(xattn_backend_probe(XATTN_BACKEND_HIP, &n, reason, 4), XATTN_OK);
    assert_non_null(memchr(reason, '\0', 4));
    assert_int_equal(reason[4], 'x');
}

/* ---- dtypes and tensors ---------------------------------------------- */

static void test_dtype_sizes_and_names(void **state)
{
    (void)state;
    assert_int_equal(xattn_dtype_size(XATTN_F32), 4);
    assert_int_equal(xattn_dtype_size(XATTN_F16), 2);
    assert_int_equal(xattn_dtype_size(XATTN_BF16), 2);
    assert_int_equal(xattn_dtype_size(XATTN_I32), 4);
    assert_int_equal(xattn_dtype_size((xattn_dtype)17), 0);
    assert_string_equal(xattn_dtype_name(XATTN_F32), "f32");
    assert_string_equal(xattn_dtype_name(XATTN_F16), "f16");
    assert_string_equal(xattn_dtype_name(XATTN_BF16), "bf16");
    assert_string_equal(xattn_dtype_name(XATTN_I32), "i32");
}

static void test_tensor_contiguous_is_row_major(void **state)
{
    (void)state;
    const int64_t shape[4] = {2, 3, 4, 5};
    xattn_buffer *fake = (xattn_buffer *)(uintptr_t)0x1000; /* never dereferenced */
    xattn_tensor t = xattn_tensor_contiguous(fake, 128, XATTN_F16, 4, shape);
    assert_ptr_equal(t.buffer, fake);
    assert_int_equal(t.offset, 128);
    assert_int_equal(t.dtype, XATTN_F16);
    assert_int_equal(t.rank, 4);
    const int64_t want[4] = {60, 20, 5, 1};
    for (int d = 0; d < 4; d++) {
        assert_int_equal(t.shape[d], shape[d]);
        assert_int_equal(t.stride[d], want[d]);
    }
}

static void test_tensor_contiguous_clamps_rank(void **state)
{
    (void)state;
    const int64_t shape[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    xattn_tensor t = xattn_tensor_contiguous(NULL, 0, XATTN_F32, 8, shape);
    assert_int_equal(t.rank, XATTN_MAX_RANK);
    assert_int_equal(t.stride[XATTN_MAX_RANK - 1], 1);
    t = xattn_tensor_contiguous(NULL, 0, XATTN_F32, -3, shape);
    assert_int_equal(t.rank, 0);
}

static void test_log_set_level_accepts_every_level(void **state)
{
    (void)state;
    for (int l = XATTN_LOG_ERROR; l <= XATTN_LOG_DEBUG; l++)
        XT_ASSERT_STATUS(xattn_log_set_level((xattn_log_level)l), XATTN_OK);
    XT_ASSERT_STATUS(xattn_log_set_level(XATTN_LOG_WARN), XATTN_OK);
}

/* ---- concurrency: one plan, two threads (xattn_attn_run's contract) ---- */

enum { CC_SQ = 96, CC_SK = 777, CC_HQ = 4, CC_HKV = 2, CC_D = 64, CC_RUNS = 100 };

typedef struct cc_job {
    const xattn_plan *plan;
    xattn_attn_args args;
    xattn_status st;
} cc_job;

static void *cc_run(void *arg)
{
    cc_job *j = arg;
    j->st = XATTN_OK;
    for (int i = 0; i < CC_RUNS && j->st == XATTN_OK; i++) j->st = xattn_attn_run(j->plan, &j->args);
    return NULL;
}

/* Inputs of job j (distinct per job, so a mixed-up workspace shows). */
static void cc_args(xattn_context *ctx, size_t ws_bytes, int j, xattn_attn_args *a)
{
    const int64_t qs[4] = {1, CC_SQ, CC_HQ, CC_D}, ks[4] = {1, CC_SK, CC_HKV, CC_D};
    size_t qn = (size_t)CC_SQ * CC_HQ * CC_D, kn = (size_t)CC_SK * CC_HKV * CC_D;
    float *q = malloc(qn * sizeof *q), *k = malloc(kn * sizeof *k), *v = malloc(kn * sizeof *v);
    assert_non_null(q);
    assert_non_null(k);
    assert_non_null(v);
    for (size_t i = 0; i < qn; i++) q[i] = (float)((i * 7 + (size_t)j * 13) % 17) / 17.0f - 0.5f;
    for (size_t i = 0; i < kn; i++) k[i] = (float)((i * 5 + (size_t)j * 3) % 19) / 19.0f - 0.5f;
    for (size_t i = 0; i < kn; i++) v[i] = (float)((i * 11 + (size_t)j) % 23) / 23.0f - 0.5f;
    xattn_buffer *bq = xt_buffer(ctx, qn * 4, 0), *bk = xt_buffer(ctx, kn * 4, 0);
    xattn_buffer *bv = xt_buffer(ctx, kn * 4, 0), *bo = xt_buffer(ctx, qn * 4, 0);
    XT_ASSERT_STATUS(xattn_buffer_write(bq, 0, q, qn * 4), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(bk, 0, k, kn * 4), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(bv, 0, v, kn * 4), XATTN_OK);
    free(q);
    free(k);
    free(v);
    memset(a, 0, sizeof *a);
    a->q = xattn_tensor_contiguous(bq, 0, XATTN_F32, 4, qs);
    a->k = xattn_tensor_contiguous(bk, 0, XATTN_F32, 4, ks);
    a->v = xattn_tensor_contiguous(bv, 0, XATTN_F32, 4, ks);
    a->o = xattn_tensor_contiguous(bo, 0, XATTN_F32, 4, qs);
    a->workspace = ws_bytes ? xt_buffer(ctx, ws_bytes, 0) : NULL;
}

static void cc_free(xattn_attn_args *a)
{
    xattn_buffer *bufs[] = {a->q.buffer, a->k.buffer, a->v.buffer, a->o.buffer, a->workspace};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) xattn_buffer_free(&bufs[i]);
}

static void test_plan_runs_concurrently_with_own_workspaces(void **state)
{
    (void)state;
    xattn_context *ctx = xt_context();
    xattn_attn_desc d = {0};
    d.dtype = XATTN_F32;
    d.batch = 1;
    d.num_q_heads = CC_HQ;
    d.num_kv_heads = CC_HKV;
    d.head_dim_qk = d.head_dim_v = CC_D;
    d.seqlen_q = CC_SQ;
    d.seqlen_k = CC_SK;
    d.flags = XATTN_ATTN_CAUSAL;
    xattn_plan *plan = NULL;
    XT_ASSERT_STATUS(xattn_plan_create(ctx, &d, &plan), XATTN_OK);
    size_t ws = xattn_plan_workspace_size(plan);

    enum { JOBS = 2 };
    size_t on = (size_t)CC_SQ * CC_HQ * CC_D;
    float *serial[JOBS], *concurrent = malloc(on * sizeof *concurrent);
    assert_non_null(concurrent);
    cc_job jobs[JOBS];
    for (int j = 0; j < JOBS; j++) {
        jobs[j].plan = plan;
        cc_args(ctx, ws, j, &jobs[j].args);
        XT_ASSERT_STATUS(xattn_attn_run(plan, &jobs[j].args), XATTN_OK);
        serial[j] = malloc(on * sizeof *serial[j]);
        assert_non_null(serial[j]);
        XT_ASSERT_STATUS(xattn_buffer_read(jobs[j].args.o.buffer, 0, serial[j], on * 4),
                         XATTN_OK);
    }
    pthread_t th[JOBS];
    for (int j = 0; j < JOBS; j++) assert_int_equal(pthread_create(&th[j], NULL, cc_run, &jobs[j]), 0);
    for (int j = 0; j < JOBS; j++) assert_int_equal(pthread_join(th[j], NULL), 0);
    for (int j = 0; j < JOBS; j++) {
        XT_ASSERT_STATUS(jobs[j].st, XATTN_OK);
        XT_ASSERT_STATUS(xattn_buffer_read(jobs[j].args.o.buffer, 0, concurrent, on * 4),
                         XATTN_OK);
        /* Same plan, same inputs: bit-identical to the serial run. */
        assert_memory_equal(concurrent, serial[j], on * sizeof *concurrent);
        free(serial[j]);
        cc_free(&jobs[j].args);
    }
    free(concurrent);
    xattn_plan_destroy(&plan);
    xattn_context_destroy(&ctx);
}

#define T(f) cmocka_unit_test_teardown(f, xt_env_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_status_values_are_fixed),
        T(test_status_strings_are_the_enum_names),
        T(test_status_strings_are_unique_and_non_empty),
        T(test_status_string_of_unknown_value),
        T(test_version_matches_header_macros),
        T(test_last_error_is_thread_local),
        T(test_destroy_functions_accept_null),
        T(test_context_destroy_clears_handle),
        T(test_buffer_free_clears_handle),
        T(test_buffer_round_trip_and_alignment),
        T(test_buffer_wrap_uses_host_memory_without_copy),
        T(test_buffer_size_and_native_of_null),
        T(test_context_create_with_does_not_read_backend_env),
        T(test_context_from_env_cpu),
        T(test_context_reports_names_and_caps),
        T(test_backend_kind_names),
        T(test_backend_probe_cpu_has_a_device),
        T(test_backend_probe_gpu_backends_explain_zero_devices),
        T(test_backend_probe_truncates_reason_to_its_buffer),
        T(test_dtype_sizes_and_names),
        T(test_tensor_contiguous_is_row_major),
        T(test_tensor_contiguous_clamps_rank),
        T(test_log_set_level_accepts_every_level),
        T(test_plan_runs_concurrently_with_own_workspaces),
    };
    return cmocka_run_group_tests_name("api behaviour", tests, NULL, NULL);
}
