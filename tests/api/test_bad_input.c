/* Bad input that needs no plan: contexts, the environment, buffers, plan
 * descriptors, kv_append and merge_states (docs/errors.md).
 *
 * Every case breaks exactly one documented rule and checks three things: the
 * documented status, a message naming the offending argument, and that the
 * caller's output memory (handles, buffers, host arrays) is untouched.
 * The context comes from the environment the test runs in (XATTN_BACKEND). */
#include "api_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Written into out-parameters before a call that must fail; never
 * dereferenced. */
#define CTX_SENTINEL ((xattn_context *)(uintptr_t)0x5e5e5e50u)
#define PLAN_SENTINEL ((xattn_plan *)(uintptr_t)0x5e5e5e60u)
#define BUF_SENTINEL ((xattn_buffer *)(uintptr_t)0x5e5e5e70u)

static xattn_context *g_ctx;

/* A backend without kernels yet may answer a valid call with UNSUPPORTED;
 * the built-in cpu backend must not. */
static xattn_status unsupported_unless_cpu(void)
{
    return strcmp(xattn_context_backend_name(g_ctx), "cpu") ? XATTN_ERR_UNSUPPORTED : XATTN_OK;
}

static int group_setup(void **state)
{
    (void)state;
    xattn_status st = xattn_context_create(&g_ctx);
    if (st != XATTN_OK) {
        fprintf(stderr, "cannot create a context: %s: %s\n",
                xattn_status_string(st), xattn_last_error());
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    xattn_context_destroy(&g_ctx);
    return 0;
}

/* ---- contexts ------------------------------------------------------- */

static void test_context_create_rejects_null_out(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_context_create(NULL), XATTN_ERR_INVALID_ARGUMENT, "out");
}

static void test_context_create_with_rejects_null_options(void **state)
{
    (void)state;
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create_with(NULL, &ctx), XATTN_ERR_INVALID_ARGUMENT,
                    "opts", "options");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_context_create_with_rejects_null_out(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU};
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, NULL), XATTN_ERR_INVALID_ARGUMENT, "out");
}

static void test_context_create_with_rejects_unknown_backend_kind(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = (xattn_backend_kind)42};
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, &ctx), XATTN_ERR_INVALID_ARGUMENT,
                    "backend");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_context_create_with_rejects_negative_device(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU, .device = -1};
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, &ctx), XATTN_ERR_INVALID_ARGUMENT,
                    "device");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_context_create_with_rejects_device_index_out_of_range(void **state)
{
    (void)state;
    int32_t n = 0;
    char reason[256];
    XT_ASSERT_STATUS(xattn_backend_probe(XATTN_BACKEND_CPU, &n, reason, sizeof reason),
                     XATTN_OK);
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU, .device = n};
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, &ctx), XATTN_ERR_INVALID_ARGUMENT,
                    "device");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_context_create_with_rejects_negative_num_threads(void **state)
{
    (void)state;
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU, .num_threads = -2};
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, &ctx), XATTN_ERR_INVALID_ARGUMENT,
                    "num_threads");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_context_create_with_rejects_native_queue_on_cpu(void **state)
{
    (void)state;
    int dummy_queue = 0;
    xattn_context_options opts = {.backend = XATTN_BACKEND_CPU, .native_queue = &dummy_queue};
    xattn_context *ctx = CTX_SENTINEL;
    XT_EXPECT_ERROR(xattn_context_create_with(&opts, &ctx), XATTN_ERR_INVALID_ARGUMENT,
                    "native_queue");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_context_caps_rejects_null_context(void **state)
{
    (void)state;
    xattn_device_caps caps;
    memset(&caps, XT_SENTINEL_HOST, sizeof caps);
    XT_EXPECT_ERROR(xattn_context_caps(NULL, &caps), XATTN_ERR_INVALID_ARGUMENT, "ctx");
    XT_ASSERT_HOST_UNTOUCHED(&caps, sizeof caps, XT_SENTINEL_HOST);
}

static void test_context_caps_rejects_null_out(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_context_caps(g_ctx, NULL), XATTN_ERR_INVALID_ARGUMENT, "out");
}

static void test_context_synchronize_rejects_null_context(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_context_synchronize(NULL), XATTN_ERR_INVALID_ARGUMENT, "ctx");
}

static void test_backend_probe_rejects_auto(void **state)
{
    (void)state;
    int32_t n = 1234;
    char reason[64];
    memset(reason, XT_SENTINEL_HOST, sizeof reason);
    XT_EXPECT_ERROR(xattn_backend_probe(XATTN_BACKEND_AUTO, &n, reason, sizeof reason),
                    XATTN_ERR_INVALID_ARGUMENT, "kind");
    assert_int_equal(n, 1234);
    XT_ASSERT_HOST_UNTOUCHED(reason, sizeof reason, XT_SENTINEL_HOST);
}

static void test_backend_probe_rejects_unknown_kind(void **state)
{
    (void)state;
    int32_t n = 1234;
    char reason[64];
    XT_EXPECT_ERROR(xattn_backend_probe((xattn_backend_kind)XATTN_BACKEND_COUNT, &n, reason,
                                        sizeof reason),
                    XATTN_ERR_INVALID_ARGUMENT, "kind");
    assert_int_equal(n, 1234);
}

static void test_backend_probe_rejects_null_num_devices(void **state)
{
    (void)state;
    char reason[64];
    XT_EXPECT_ERROR(xattn_backend_probe(XATTN_BACKEND_CPU, NULL, reason, sizeof reason),
                    XATTN_ERR_INVALID_ARGUMENT, "num_devices");
}

static void test_log_set_level_rejects_value_outside_enum(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_log_set_level((xattn_log_level)7), XATTN_ERR_INVALID_ARGUMENT,
                    "level");
    XT_EXPECT_ERROR(xattn_log_set_level((xattn_log_level)-1), XATTN_ERR_INVALID_ARGUMENT,
                    "level");
}

/* ---- environment ---------------------------------------------------- */

/* context_create under the current environment must fail with want and
 * leave *out alone. */
static void expect_env_rejected(xattn_status want)
{
    xattn_context *ctx = CTX_SENTINEL;
    xattn_status st = xattn_context_create(&ctx);
    if (st == XATTN_OK) xattn_context_destroy(&ctx);
    XT_ASSERT_STATUS(st, want);
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

static void test_env_rejects_unknown_backend(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "bogus");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_BACKEND");
    /* The message lists every valid value. */
    static const char *const valid[] = {"auto", "cpu", "opencl", "cuda", "hip"};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
        XT_ASSERT_ERROR_NAMES(valid[i]);
}

static void test_env_rejects_non_numeric_device(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_DEVICE", "abc");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_DEVICE");
}

static void test_env_rejects_device_with_trailing_garbage(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_DEVICE", "0x");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_DEVICE");
}

static void test_env_rejects_negative_device(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_DEVICE", "-1");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_DEVICE");
}

static void test_env_rejects_device_index_out_of_range(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_DEVICE", "99");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_DEVICE");
}

static void test_env_rejects_device_index_overflowing_int32(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_DEVICE", "4294967296");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_DEVICE");
}

static void test_env_rejects_unknown_log_level(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "cpu");
    xt_setenv("XATTN_LOG", "loud");
    expect_env_rejected(XATTN_ERR_INVALID_ENV);
    XT_ASSERT_ERROR_NAMES("XATTN_LOG");
    static const char *const valid[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
        XT_ASSERT_ERROR_NAMES(valid[i]);
}

/* XATTN_DEVICE is checked under auto too: no backend has device 99. */
static void test_env_rejects_device_index_out_of_range_under_auto(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "auto");
    xt_setenv("XATTN_DEVICE", "99");
    xattn_context *ctx = CTX_SENTINEL;
    xattn_status st = xattn_context_create(&ctx);
    if (st == XATTN_OK) xattn_context_destroy(&ctx);
    xt_check_status2(st, XATTN_ERR_INVALID_ENV, XATTN_ERR_BACKEND_UNAVAILABLE,
                     "xattn_context_create (XATTN_DEVICE=99, auto)", __FILE__, __LINE__);
    XT_ASSERT_ERROR_NAMES("XATTN_DEVICE");
    assert_ptr_equal(ctx, CTX_SENTINEL);
}

/* The suite runs with XATTN_BACKEND_DIR naming an empty directory, so no
 * GPU module can be found: an explicit choice of one is an error saying so,
 * never a fallback to the CPU. */
static void test_env_rejects_explicit_backend_without_module(void **state)
{
    (void)state;
    static const char *const gpu[] = {"hip", "cuda", "opencl"};
    for (size_t i = 0; i < sizeof gpu / sizeof gpu[0]; i++) {
        xt_setenv("XATTN_BACKEND", gpu[i]);
        expect_env_rejected(XATTN_ERR_BACKEND_UNAVAILABLE);
        XT_ASSERT_ERROR_NAMES(gpu[i]);
        XT_ASSERT_ERROR_NAMES("not found");
    }
}

/* ---- buffers -------------------------------------------------------- */

enum { BUF_BYTES = 256 };

static void test_buffer_alloc_rejects_null_context(void **state)
{
    (void)state;
    xattn_buffer *buf = BUF_SENTINEL;
    XT_EXPECT_ERROR(xattn_buffer_alloc(NULL, BUF_BYTES, &buf), XATTN_ERR_INVALID_ARGUMENT, "ctx");
    assert_ptr_equal(buf, BUF_SENTINEL);
}

static void test_buffer_alloc_rejects_null_out(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_buffer_alloc(g_ctx, BUF_BYTES, NULL), XATTN_ERR_INVALID_ARGUMENT, "out");
}

/* No device holds SIZE_MAX bytes. The header lists only OUT_OF_MEMORY for
 * sizes that cannot be allocated; a front end that rejects the size up front
 * as INVALID_ARGUMENT is also within the bad-input rules (docs/testing.md). */
static void test_buffer_alloc_rejects_size_max(void **state)
{
    (void)state;
    xattn_buffer *buf = BUF_SENTINEL;
    xt_check_status2(xattn_buffer_alloc(g_ctx, SIZE_MAX, &buf), XATTN_ERR_OUT_OF_MEMORY,
                     XATTN_ERR_INVALID_ARGUMENT, "xattn_buffer_alloc(SIZE_MAX)", __FILE__,
                     __LINE__);
    XT_ASSERT_ERROR_NAMES("bytes");
    assert_ptr_equal(buf, BUF_SENTINEL);
}

static void test_buffer_wrap_rejects_null_context(void **state)
{
    (void)state;
    unsigned char host[BUF_BYTES];
    xattn_buffer *buf = BUF_SENTINEL;
    XT_EXPECT_ERROR(xattn_buffer_wrap(NULL, host, sizeof host, &buf),
                    XATTN_ERR_INVALID_ARGUMENT, "ctx");
    assert_ptr_equal(buf, BUF_SENTINEL);
}

static void test_buffer_wrap_rejects_null_pointer(void **state)
{
    (void)state;
    xattn_buffer *buf = BUF_SENTINEL;
    XT_EXPECT_ERROR(xattn_buffer_wrap(g_ctx, NULL, BUF_BYTES, &buf),
                    XATTN_ERR_INVALID_ARGUMENT, "native");
    assert_ptr_equal(buf, BUF_SENTINEL);
}

/* A pointer plus a size that runs past the top of the address space
 * describes no memory (zero-byte buffers: test_empty_buffers.c). */
static void test_buffer_wrap_rejects_range_that_wraps_around(void **state)
{
    (void)state;
    xattn_buffer *buf = BUF_SENTINEL;
    void *top = (void *)(UINTPTR_MAX - 63);
    XT_EXPECT_ERROR(xattn_buffer_wrap(g_ctx, top, 64, &buf), XATTN_ERR_INVALID_ARGUMENT,
                    "native", "bytes");
    assert_ptr_equal(buf, BUF_SENTINEL);
    /* One byte shorter, its end address fits: accepted. */
    XT_ASSERT_STATUS(xattn_buffer_wrap(g_ctx, top, 63, &buf), XATTN_OK);
    xattn_buffer_free(&buf);
}

static void test_buffer_wrap_rejects_size_beyond_address_space(void **state)
{
    (void)state;
    unsigned char host[BUF_BYTES];
    xattn_buffer *buf = BUF_SENTINEL;
    XT_EXPECT_ERROR(xattn_buffer_wrap(g_ctx, host, SIZE_MAX, &buf), XATTN_ERR_INVALID_ARGUMENT,
                    "bytes");
    assert_ptr_equal(buf, BUF_SENTINEL);
}

static void test_buffer_wrap_rejects_null_out(void **state)
{
    (void)state;
    unsigned char host[BUF_BYTES];
    XT_EXPECT_ERROR(xattn_buffer_wrap(g_ctx, host, sizeof host, NULL),
                    XATTN_ERR_INVALID_ARGUMENT, "out");
}

static void test_buffer_write_rejects_null_buffer(void **state)
{
    (void)state;
    unsigned char src[16] = {0};
    XT_EXPECT_ERROR(xattn_buffer_write(NULL, 0, src, sizeof src), XATTN_ERR_INVALID_ARGUMENT,
                    "buf", "buffer");
}

static void test_buffer_write_rejects_null_source(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(g_ctx, BUF_BYTES, XT_SENTINEL_O);
    XT_EXPECT_ERROR(xattn_buffer_write(buf, 0, NULL, 16), XATTN_ERR_INVALID_ARGUMENT, "src");
    XT_ASSERT_UNTOUCHED(buf, XT_SENTINEL_O);
    xattn_buffer_free(&buf);
}

static void test_buffer_write_rejects_range_outside_buffer(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(g_ctx, BUF_BYTES, XT_SENTINEL_O);
    unsigned char src[32] = {0};
    /* Starts inside, ends 1 byte past the end: nothing may be written. */
    XT_EXPECT_ERROR(xattn_buffer_write(buf, BUF_BYTES - sizeof src + 1, src, sizeof src),
                    XATTN_ERR_INVALID_ARGUMENT, "offset", "bytes");
    XT_ASSERT_UNTOUCHED(buf, XT_SENTINEL_O);
    xattn_buffer_free(&buf);
}

static void test_buffer_write_rejects_offset_plus_size_overflow(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(g_ctx, BUF_BYTES, XT_SENTINEL_O);
    unsigned char src[32] = {0};
    XT_EXPECT_ERROR(xattn_buffer_write(buf, SIZE_MAX - 8, src, sizeof src),
                    XATTN_ERR_INVALID_ARGUMENT, "offset", "bytes");
    XT_ASSERT_UNTOUCHED(buf, XT_SENTINEL_O);
    xattn_buffer_free(&buf);
}

static void test_buffer_read_rejects_null_buffer(void **state)
{
    (void)state;
    unsigned char dst[16];
    memset(dst, XT_SENTINEL_HOST, sizeof dst);
    XT_EXPECT_ERROR(xattn_buffer_read(NULL, 0, dst, sizeof dst), XATTN_ERR_INVALID_ARGUMENT,
                    "buf", "buffer");
    XT_ASSERT_HOST_UNTOUCHED(dst, sizeof dst, XT_SENTINEL_HOST);
}

static void test_buffer_read_rejects_null_destination(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(g_ctx, BUF_BYTES, 0);
    XT_EXPECT_ERROR(xattn_buffer_read(buf, 0, NULL, 16), XATTN_ERR_INVALID_ARGUMENT, "dst");
    xattn_buffer_free(&buf);
}

static void test_buffer_read_rejects_range_outside_buffer(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(g_ctx, BUF_BYTES, 0x11);
    unsigned char dst[64];
    memset(dst, XT_SENTINEL_HOST, sizeof dst);
    XT_EXPECT_ERROR(xattn_buffer_read(buf, BUF_BYTES - sizeof dst + 1, dst, sizeof dst),
                    XATTN_ERR_INVALID_ARGUMENT, "offset", "bytes");
    XT_ASSERT_HOST_UNTOUCHED(dst, sizeof dst, XT_SENTINEL_HOST);
    xattn_buffer_free(&buf);
}

static void test_buffer_read_rejects_offset_plus_size_overflow(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(g_ctx, BUF_BYTES, 0x11);
    unsigned char dst[64];
    memset(dst, XT_SENTINEL_HOST, sizeof dst);
    XT_EXPECT_ERROR(xattn_buffer_read(buf, SIZE_MAX - 8, dst, sizeof dst),
                    XATTN_ERR_INVALID_ARGUMENT, "offset", "bytes");
    XT_ASSERT_HOST_UNTOUCHED(dst, sizeof dst, XT_SENTINEL_HOST);
    xattn_buffer_free(&buf);
}

/* ---- plan descriptors ----------------------------------------------- */

/* A descriptor every backend must accept: f32, B 2, Hq 4, Hkv 2, D 64. */
static xattn_attn_desc valid_desc(void)
{
    xattn_attn_desc d;
    memset(&d, 0, sizeof d);
    d.dtype = XATTN_F32;
    d.batch = 2;
    d.num_q_heads = 4;
    d.num_kv_heads = 2;
    d.head_dim_qk = 64;
    d.head_dim_v = 64;
    d.q_layout = XATTN_Q_UNIFORM;
    d.kv_layout = XATTN_KV_UNIFORM;
    d.seqlen_q = 3;
    d.seqlen_k = 5;
    return d;
}

static xattn_attn_desc valid_paged_desc(void)
{
    xattn_attn_desc d = valid_desc();
    d.kv_layout = XATTN_KV_PAGED;
    d.page_size = 3;
    d.num_pages = 6;
    d.max_pages_per_seq = 3;
    d.seqlen_k = 7;
    return d;
}

/* plan_create(desc) fails with want, names one of the words and leaves the
 * caller's handle alone. */
#define EXPECT_PLAN_REJECTED(desc, want, ...)                                   \
    do {                                                                        \
        xattn_plan *plan_ = PLAN_SENTINEL;                                      \
        xattn_attn_desc desc_ = (desc);                                         \
        xattn_status st_ = xattn_plan_create(g_ctx, &desc_, &plan_);            \
        if (st_ == XATTN_OK) xattn_plan_destroy(&plan_);                        \
        xt_check_status(st_, (want), "xattn_plan_create(" #desc ")", __FILE__, __LINE__); \
        XT_ASSERT_ERROR_NAMES(__VA_ARGS__);                                     \
        assert_ptr_equal(plan_, PLAN_SENTINEL);                                 \
    } while (0)

/* The reference descriptors pass validation; a backend without kernels yet
 * may still answer UNSUPPORTED, never INVALID_ARGUMENT. */
static void test_plan_accepts_valid_descriptors(void **state)
{
    (void)state;
    const xattn_attn_desc descs[] = {valid_desc(), valid_paged_desc()};
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++) {
        xattn_plan *plan = NULL;
        xattn_status st = xattn_plan_create(g_ctx, &descs[i], &plan);
        xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "xattn_plan_create(valid)",
                         __FILE__, __LINE__);
        if (st == XATTN_OK) {
            assert_non_null(plan);
            xattn_plan_destroy(&plan);
            assert_null(plan);
        } else {
            XT_ASSERT_ERROR_NAMES(xattn_context_backend_name(g_ctx));
        }
    }
}

static void test_plan_rejects_null_context(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    xattn_plan *plan = PLAN_SENTINEL;
    XT_EXPECT_ERROR(xattn_plan_create(NULL, &d, &plan), XATTN_ERR_INVALID_ARGUMENT, "ctx");
    assert_ptr_equal(plan, PLAN_SENTINEL);
}

static void test_plan_rejects_null_desc(void **state)
{
    (void)state;
    xattn_plan *plan = PLAN_SENTINEL;
    XT_EXPECT_ERROR(xattn_plan_create(g_ctx, NULL, &plan), XATTN_ERR_INVALID_ARGUMENT, "desc");
    assert_ptr_equal(plan, PLAN_SENTINEL);
}

static void test_plan_rejects_null_out(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    XT_EXPECT_ERROR(xattn_plan_create(g_ctx, &d, NULL), XATTN_ERR_INVALID_ARGUMENT, "out");
}

static void test_plan_rejects_zero_batch(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.batch = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "batch");
}

static void test_plan_rejects_negative_batch(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.batch = -3;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "batch");
}

static void test_plan_rejects_zero_q_heads(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.num_q_heads = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_q_heads");
}

static void test_plan_rejects_zero_kv_heads(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.num_kv_heads = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_kv_heads");
}

static void test_plan_rejects_negative_kv_heads(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.num_kv_heads = -2;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_kv_heads");
}

static void test_plan_rejects_hq_not_multiple_of_hkv(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.num_q_heads = 6;
    d.num_kv_heads = 4;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_kv_heads");
}

static void test_plan_rejects_hkv_greater_than_hq(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.num_q_heads = 2;
    d.num_kv_heads = 4;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_kv_heads");
}

static void test_plan_rejects_negative_seqlen_q(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.seqlen_q = -1;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "seqlen_q");
}

static void test_plan_rejects_negative_seqlen_k(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.seqlen_k = -7;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "seqlen_k");
}

static void test_plan_rejects_zero_head_dim(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.head_dim_qk = 0;
    d.head_dim_v = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "head_dim_qk", "head_dim_v");
}

static void test_plan_rejects_negative_head_dim_v(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.head_dim_v = -64;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "head_dim_v");
}

/* Head dims outside docs/attention.md's set are valid descriptors that no backend
 * has kernels for: UNSUPPORTED, naming the head dim. */
static void test_plan_rejects_head_dim_not_multiple_of_8(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.head_dim_qk = 12;
    d.head_dim_v = 12;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_UNSUPPORTED, "head_dim_qk", "head_dim_v", "head_dim");
}

static void test_plan_rejects_head_dim_above_256(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.head_dim_qk = 264;
    d.head_dim_v = 264;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_UNSUPPORTED, "head_dim_qk", "head_dim_v", "head_dim");
}

static void test_plan_rejects_head_dim_pair_192_64(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.head_dim_qk = 192;
    d.head_dim_v = 64;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_UNSUPPORTED, "head_dim_qk", "head_dim_v", "head_dim");
}

static void test_plan_rejects_i32_dtype(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.dtype = XATTN_I32;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "dtype");
}

static void test_plan_rejects_unknown_dtype(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.dtype = (xattn_dtype)42;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "dtype");
}

static void test_plan_rejects_unknown_q_layout(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.q_layout = (xattn_q_layout)5;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "q_layout");
}

static void test_plan_rejects_unknown_kv_layout(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.kv_layout = (xattn_kv_layout)5;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "kv_layout");
}

static void test_plan_rejects_unknown_flags(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.flags = 1u << 20;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "flags");
}

/* B·Sq·Hq·Dqk = 2^31·2^31·2^10·2^8 elements does not fit in int64. */
static void test_plan_rejects_q_size_overflowing_int64(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.batch = INT32_MAX;
    d.seqlen_q = INT32_MAX;
    d.num_q_heads = 1024;
    d.num_kv_heads = 1024;
    d.head_dim_qk = 256;
    d.head_dim_v = 256;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "batch", "seqlen_q", "num_q_heads",
                         "overflow", "overflows");
}

static void test_plan_rejects_kv_size_overflowing_int64(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.batch = INT32_MAX;
    d.seqlen_q = 1;
    d.seqlen_k = INT32_MAX;
    d.num_q_heads = 1024;
    d.num_kv_heads = 1024;
    d.head_dim_qk = 256;
    d.head_dim_v = 256;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "batch", "seqlen_k", "num_kv_heads",
                         "overflow", "overflows");
}

static void test_plan_rejects_paged_cache_size_overflowing_int64(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_paged_desc();
    d.num_pages = INT32_MAX;
    d.page_size = INT32_MAX;
    d.num_q_heads = 1024;
    d.num_kv_heads = 1024;
    d.head_dim_qk = 256;
    d.head_dim_v = 256;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_pages", "page_size",
                         "num_kv_heads", "overflow", "overflows");
}

static void test_plan_rejects_paged_zero_page_size(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_paged_desc();
    d.page_size = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "page_size");
}

static void test_plan_rejects_paged_negative_page_size(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_paged_desc();
    d.page_size = -16;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "page_size");
}

static void test_plan_rejects_paged_zero_num_pages(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_paged_desc();
    d.num_pages = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "num_pages");
}

static void test_plan_rejects_paged_zero_max_pages_per_seq(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_paged_desc();
    d.max_pages_per_seq = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "max_pages_per_seq");
}

static void test_plan_rejects_paged_seqlen_k_beyond_max_pages_times_page_size(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_paged_desc();
    d.seqlen_k = d.max_pages_per_seq * d.page_size + 1;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "seqlen_k", "max_pages_per_seq",
                         "page_size");
}

static void test_plan_rejects_window_left_below_minus_one(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.flags = XATTN_ATTN_WINDOW;
    d.window_left = -2;
    d.window_right = 0;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "window_left");
}

static void test_plan_rejects_window_right_below_minus_one(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.flags = XATTN_ATTN_WINDOW;
    d.window_left = 4;
    d.window_right = -5;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "window_right");
}

static void test_plan_rejects_causal_with_positive_window_right(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.flags = XATTN_ATTN_CAUSAL | XATTN_ATTN_WINDOW;
    d.window_left = 4;
    d.window_right = 2;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "window_right");
}

/* No parameter is silently ignored (docs/api.md): a window without the flag. */
static void test_plan_rejects_window_without_window_flag(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.window_left = 16;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "window_left");
}

static void test_plan_rejects_negative_softcap(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.softcap = -30.0f;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "softcap");
}

static void test_plan_rejects_nan_softcap(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.softcap = NAN;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "softcap");
}

static void test_plan_rejects_nan_scale(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.scale = NAN;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "scale");
}

static void test_plan_rejects_infinite_scale(void **state)
{
    (void)state;
    xattn_attn_desc d = valid_desc();
    d.scale = INFINITY;
    EXPECT_PLAN_REJECTED(d, XATTN_ERR_INVALID_ARGUMENT, "scale");
}

/* ---- kv_append ------------------------------------------------------ */

enum { KV_N = 3, KV_HEADS = 2, KV_DIM = 64, KV_PAGES = 4, KV_PAGE_SIZE = 4 };

typedef struct kv_fixture {
    xattn_buffer *k_new_buf, *v_new_buf, *slots_buf, *k_cache_buf, *v_cache_buf;
    xattn_tensor k_new, v_new, slots, k_cache, v_cache;
} kv_fixture;

static kv_fixture g_kv;

static void kv_set_slots(const int32_t *slots)
{
    XT_ASSERT_STATUS(xattn_buffer_write(g_kv.slots_buf, 0, slots, KV_N * sizeof *slots),
                     XATTN_OK);
}

static int kv_setup(void **state)
{
    (void)state;
    memset(&g_kv, 0, sizeof g_kv);
    const int64_t new_shape[3] = {KV_N, KV_HEADS, KV_DIM};
    const int64_t cache_shape[4] = {KV_PAGES, KV_PAGE_SIZE, KV_HEADS, KV_DIM};
    const int64_t slot_shape[1] = {KV_N};
    const size_t new_bytes = KV_N * KV_HEADS * KV_DIM * sizeof(float);
    const size_t cache_bytes = KV_PAGES * KV_PAGE_SIZE * KV_HEADS * KV_DIM * sizeof(float);
    const int32_t slots[KV_N] = {0, 5, 15};

    g_kv.k_new_buf = xt_buffer(g_ctx, new_bytes, 0);
    g_kv.v_new_buf = xt_buffer(g_ctx, new_bytes, 0);
    g_kv.k_cache_buf = xt_buffer(g_ctx, cache_bytes, XT_SENTINEL_O);
    g_kv.v_cache_buf = xt_buffer(g_ctx, cache_bytes, XT_SENTINEL_O);
    g_kv.slots_buf = xt_buffer_i32(g_ctx, slots, KV_N);
    g_kv.k_new = xattn_tensor_contiguous(g_kv.k_new_buf, 0, XATTN_F32, 3, new_shape);
    g_kv.v_new = xattn_tensor_contiguous(g_kv.v_new_buf, 0, XATTN_F32, 3, new_shape);
    g_kv.k_cache = xattn_tensor_contiguous(g_kv.k_cache_buf, 0, XATTN_F32, 4, cache_shape);
    g_kv.v_cache = xattn_tensor_contiguous(g_kv.v_cache_buf, 0, XATTN_F32, 4, cache_shape);
    g_kv.slots = xattn_tensor_contiguous(g_kv.slots_buf, 0, XATTN_I32, 1, slot_shape);
    return 0;
}

static int kv_teardown(void **state)
{
    (void)state;
    xattn_buffer_free(&g_kv.k_new_buf);
    xattn_buffer_free(&g_kv.v_new_buf);
    xattn_buffer_free(&g_kv.slots_buf);
    xattn_buffer_free(&g_kv.k_cache_buf);
    xattn_buffer_free(&g_kv.v_cache_buf);
    return 0;
}

static xattn_status kv_append(void)
{
    return xattn_kv_append(g_ctx, &g_kv.k_new, &g_kv.v_new, &g_kv.slots, &g_kv.k_cache,
                           &g_kv.v_cache);
}

#define EXPECT_KV_APPEND_REJECTED(...)                                          \
    do {                                                                        \
        XT_EXPECT_ERROR(kv_append(), XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__);  \
        XT_ASSERT_UNTOUCHED(g_kv.k_cache_buf, XT_SENTINEL_O);                   \
        XT_ASSERT_UNTOUCHED(g_kv.v_cache_buf, XT_SENTINEL_O);                   \
    } while (0)

static void test_kv_append_accepts_valid_input(void **state)
{
    (void)state;
    xattn_status st = kv_append();
    xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "kv_append(valid)", __FILE__,
                     __LINE__);
    if (st == XATTN_ERR_UNSUPPORTED) XT_ASSERT_ERROR_NAMES(xattn_context_backend_name(g_ctx));
}

static void test_kv_append_rejects_null_context(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_kv_append(NULL, &g_kv.k_new, &g_kv.v_new, &g_kv.slots,
                                    &g_kv.k_cache, &g_kv.v_cache),
                    XATTN_ERR_INVALID_ARGUMENT, "ctx");
    XT_ASSERT_UNTOUCHED(g_kv.k_cache_buf, XT_SENTINEL_O);
}

static void test_kv_append_rejects_null_tensor(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_kv_append(g_ctx, &g_kv.k_new, NULL, &g_kv.slots, &g_kv.k_cache,
                                    &g_kv.v_cache),
                    XATTN_ERR_INVALID_ARGUMENT, "v_new");
    XT_ASSERT_UNTOUCHED(g_kv.k_cache_buf, XT_SENTINEL_O);
    XT_ASSERT_UNTOUCHED(g_kv.v_cache_buf, XT_SENTINEL_O);
}

static void test_kv_append_rejects_absent_slots(void **state)
{
    (void)state;
    g_kv.slots.buffer = NULL;
    EXPECT_KV_APPEND_REJECTED("slots");
}

static void test_kv_append_rejects_slot_beyond_cache(void **state)
{
    (void)state;
    const int32_t slots[KV_N] = {0, KV_PAGES * KV_PAGE_SIZE, 2};
    kv_set_slots(slots);
    EXPECT_KV_APPEND_REJECTED("slots", "slot");
}

static void test_kv_append_rejects_slot_below_minus_one(void **state)
{
    (void)state;
    const int32_t slots[KV_N] = {0, -2, 2};
    kv_set_slots(slots);
    EXPECT_KV_APPEND_REJECTED("slots", "slot");
}

static void test_kv_append_rejects_repeated_slot(void **state)
{
    (void)state;
    const int32_t slots[KV_N] = {7, 1, 7};
    kv_set_slots(slots);
    EXPECT_KV_APPEND_REJECTED("slots", "slot");
}

static void test_kv_append_rejects_slots_not_i32(void **state)
{
    (void)state;
    g_kv.slots.dtype = XATTN_F32;
    EXPECT_KV_APPEND_REJECTED("slots");
}

static void test_kv_append_rejects_slots_length_mismatch(void **state)
{
    (void)state;
    g_kv.slots.shape[0] = KV_N - 1;
    EXPECT_KV_APPEND_REJECTED("slots");
}

static void test_kv_append_rejects_dtype_mismatch(void **state)
{
    (void)state;
    g_kv.k_new.dtype = XATTN_F16; /* caches are f32 */
    EXPECT_KV_APPEND_REJECTED("k_new", "k_cache");
}

static void test_kv_append_rejects_head_count_mismatch(void **state)
{
    (void)state;
    g_kv.v_new.shape[1] = 1; /* caches have KV_HEADS */
    g_kv.v_new.stride[0] = KV_DIM;
    EXPECT_KV_APPEND_REJECTED("v_new", "v_cache");
}

static void test_kv_append_rejects_cache_outside_buffer(void **state)
{
    (void)state;
    g_kv.k_cache.offset = sizeof(float);
    EXPECT_KV_APPEND_REJECTED("k_cache");
}

static void test_kv_append_rejects_new_rows_overlapping_cache(void **state)
{
    (void)state;
    /* k_new read from the first rows of k_cache itself. */
    g_kv.k_new.buffer = g_kv.k_cache_buf;
    EXPECT_KV_APPEND_REJECTED("k_cache", "k_new");
}

static void test_kv_append_rejects_cache_innermost_stride_not_one(void **state)
{
    (void)state;
    g_kv.v_cache.shape[3] = KV_DIM / 2;
    g_kv.v_cache.stride[3] = 2;
    g_kv.v_new.shape[2] = KV_DIM / 2;
    EXPECT_KV_APPEND_REJECTED("v_cache");
}

/* ---- merge_states --------------------------------------------------- */

enum { MG_N = 5, MG_HEADS = 4, MG_DIM = 64 };

typedef struct merge_fixture {
    xattn_buffer *o_a_buf, *o_b_buf, *lse_a_buf, *lse_b_buf, *o_buf, *lse_buf;
    xattn_tensor o_a, o_b, lse_a, lse_b, o, lse;
} merge_fixture;

static merge_fixture g_mg;

static int merge_setup(void **state)
{
    (void)state;
    memset(&g_mg, 0, sizeof g_mg);
    const int64_t o_shape[3] = {MG_N, MG_HEADS, MG_DIM};
    const int64_t lse_shape[2] = {MG_HEADS, MG_N};
    const size_t o_bytes = MG_N * MG_HEADS * MG_DIM * sizeof(float);
    const size_t lse_bytes = MG_N * MG_HEADS * sizeof(float);
    g_mg.o_a_buf = xt_buffer(g_ctx, o_bytes, 0);
    g_mg.o_b_buf = xt_buffer(g_ctx, o_bytes, 0);
    g_mg.lse_a_buf = xt_buffer(g_ctx, lse_bytes, 0);
    g_mg.lse_b_buf = xt_buffer(g_ctx, lse_bytes, 0);
    g_mg.o_buf = xt_buffer(g_ctx, o_bytes, XT_SENTINEL_O);
    g_mg.lse_buf = xt_buffer(g_ctx, lse_bytes, XT_SENTINEL_LSE);
    g_mg.o_a = xattn_tensor_contiguous(g_mg.o_a_buf, 0, XATTN_F32, 3, o_shape);
    g_mg.o_b = xattn_tensor_contiguous(g_mg.o_b_buf, 0, XATTN_F32, 3, o_shape);
    g_mg.o = xattn_tensor_contiguous(g_mg.o_buf, 0, XATTN_F32, 3, o_shape);
    g_mg.lse_a = xattn_tensor_contiguous(g_mg.lse_a_buf, 0, XATTN_F32, 2, lse_shape);
    g_mg.lse_b = xattn_tensor_contiguous(g_mg.lse_b_buf, 0, XATTN_F32, 2, lse_shape);
    g_mg.lse = xattn_tensor_contiguous(g_mg.lse_buf, 0, XATTN_F32, 2, lse_shape);
    return 0;
}

static int merge_teardown(void **state)
{
    (void)state;
    xattn_buffer_free(&g_mg.o_a_buf);
    xattn_buffer_free(&g_mg.o_b_buf);
    xattn_buffer_free(&g_mg.lse_a_buf);
    xattn_buffer_free(&g_mg.lse_b_buf);
    xattn_buffer_free(&g_mg.o_buf);
    xattn_buffer_free(&g_mg.lse_buf);
    return 0;
}

static xattn_status merge(void)
{
    return xattn_merge_states(g_ctx, &g_mg.o_a, &g_mg.lse_a, &g_mg.o_b, &g_mg.lse_b,
                              &g_mg.o, &g_mg.lse);
}

#define EXPECT_MERGE_REJECTED(...)                                              \
    do {                                                                        \
        XT_EXPECT_ERROR(merge(), XATTN_ERR_INVALID_ARGUMENT, __VA_ARGS__);      \
        XT_ASSERT_UNTOUCHED(g_mg.o_buf, XT_SENTINEL_O);                         \
        XT_ASSERT_UNTOUCHED(g_mg.lse_buf, XT_SENTINEL_LSE);                     \
    } while (0)

static void test_merge_states_accepts_valid_input(void **state)
{
    (void)state;
    xattn_status st = merge();
    xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "merge(valid)", __FILE__, __LINE__);
    if (st == XATTN_ERR_UNSUPPORTED) XT_ASSERT_ERROR_NAMES(xattn_context_backend_name(g_ctx));
}

static void test_merge_states_accepts_output_aliasing_input_a(void **state)
{
    (void)state;
    xattn_status st = xattn_merge_states(g_ctx, &g_mg.o_a, &g_mg.lse_a, &g_mg.o_b,
                                         &g_mg.lse_b, &g_mg.o_a, &g_mg.lse_a);
    xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "merge(in place)", __FILE__,
                     __LINE__);
}

/* LSE views take any element strides: here all three are [N, H] in memory
 * (FlashInfer's layout), the [H, N] view with strides (1, H). */
static void set_lse_transposed(xattn_tensor *t)
{
    t->stride[0] = 1;
    t->stride[1] = MG_HEADS;
}

static void test_merge_states_accepts_transposed_lse(void **state)
{
    (void)state;
    set_lse_transposed(&g_mg.lse_a);
    set_lse_transposed(&g_mg.lse_b);
    set_lse_transposed(&g_mg.lse);
    xattn_status st = merge();
    xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "merge(transposed lse)", __FILE__,
                     __LINE__);
}

static void test_merge_states_accepts_transposed_lse_in_place(void **state)
{
    (void)state;
    set_lse_transposed(&g_mg.lse_a);
    xattn_status st = xattn_merge_states(g_ctx, &g_mg.o_a, &g_mg.lse_a, &g_mg.o_b,
                                         &g_mg.lse_b, &g_mg.o_a, &g_mg.lse_a);
    xt_check_status2(st, XATTN_OK, unsupported_unless_cpu(), "merge(transposed, in place)",
                     __FILE__, __LINE__);
}

static void test_merge_states_rejects_lse_strides_overlapping(void **state)
{
    (void)state;
    g_mg.lse.stride[0] = 1;
    g_mg.lse.stride[1] = 1; /* head h of token t is head 0 of token t + h */
    EXPECT_MERGE_REJECTED("lse");
}

/* A transposed view of lse_a as the output is not "in place": it puts row
 * t's heads where lse_a keeps other rows. */
static void test_merge_states_rejects_lse_transposed_over_lse_a(void **state)
{
    (void)state;
    g_mg.lse = g_mg.lse_a;
    set_lse_transposed(&g_mg.lse);
    XT_EXPECT_ERROR(merge(), XATTN_ERR_INVALID_ARGUMENT, "lse");
    XT_ASSERT_UNTOUCHED(g_mg.lse_a_buf, 0);
    XT_ASSERT_UNTOUCHED(g_mg.o_buf, XT_SENTINEL_O);
}

/* Attention never has head dim 0; a merge of D = 0 rows has nothing to
 * weigh, so it is rejected rather than returning with LSE unwritten. */
static void test_merge_states_rejects_head_dim_zero(void **state)
{
    (void)state;
    g_mg.o_a.shape[2] = g_mg.o_b.shape[2] = g_mg.o.shape[2] = 0;
    XT_EXPECT_ERROR(merge(), XATTN_ERR_INVALID_ARGUMENT, "head dim");
    XT_ASSERT_ERROR_NAMES("o_a");
    XT_ASSERT_UNTOUCHED(g_mg.lse_buf, XT_SENTINEL_LSE);
}

static void test_merge_states_rejects_null_context(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_merge_states(NULL, &g_mg.o_a, &g_mg.lse_a, &g_mg.o_b, &g_mg.lse_b,
                                       &g_mg.o, &g_mg.lse),
                    XATTN_ERR_INVALID_ARGUMENT, "ctx");
    XT_ASSERT_UNTOUCHED(g_mg.o_buf, XT_SENTINEL_O);
}

static void test_merge_states_rejects_null_tensor(void **state)
{
    (void)state;
    XT_EXPECT_ERROR(xattn_merge_states(g_ctx, &g_mg.o_a, &g_mg.lse_a, NULL, &g_mg.lse_b,
                                       &g_mg.o, &g_mg.lse),
                    XATTN_ERR_INVALID_ARGUMENT, "o_b");
    XT_ASSERT_UNTOUCHED(g_mg.o_buf, XT_SENTINEL_O);
    XT_ASSERT_UNTOUCHED(g_mg.lse_buf, XT_SENTINEL_LSE);
}

static void test_merge_states_rejects_o_shape_mismatch(void **state)
{
    (void)state;
    g_mg.o_b.shape[0] = MG_N - 1;
    EXPECT_MERGE_REJECTED("o_b");
}

static void test_merge_states_rejects_lse_shape_mismatch(void **state)
{
    (void)state;
    /* [N, H] instead of [H, N]. */
    g_mg.lse_b.shape[0] = MG_N;
    g_mg.lse_b.shape[1] = MG_HEADS;
    g_mg.lse_b.stride[0] = MG_HEADS;
    EXPECT_MERGE_REJECTED("lse_b");
}

static void test_merge_states_rejects_dtype_mismatch(void **state)
{
    (void)state;
    g_mg.o_b.dtype = XATTN_F16;
    EXPECT_MERGE_REJECTED("o_b");
}

static void test_merge_states_rejects_lse_not_f32(void **state)
{
    (void)state;
    g_mg.lse_a.dtype = XATTN_F16;
    EXPECT_MERGE_REJECTED("lse_a");
}

static void test_merge_states_rejects_output_overlapping_input_b(void **state)
{
    (void)state;
    /* o lies over o_b, shifted by one row: neither in place nor disjoint. */
    const int64_t shape[3] = {MG_N - 1, MG_HEADS, MG_DIM};
    g_mg.o = xattn_tensor_contiguous(g_mg.o_b_buf, MG_HEADS * MG_DIM * sizeof(float),
                                     XATTN_F32, 3, shape);
    g_mg.o_a.shape[0] = g_mg.o_b.shape[0] = MG_N - 1;
    g_mg.lse_a.shape[1] = g_mg.lse_b.shape[1] = g_mg.lse.shape[1] = MG_N - 1;
    XT_EXPECT_ERROR(merge(), XATTN_ERR_INVALID_ARGUMENT, "o");
    XT_ASSERT_UNTOUCHED(g_mg.o_b_buf, 0);
    XT_ASSERT_UNTOUCHED(g_mg.lse_buf, XT_SENTINEL_LSE);
}

static void test_merge_states_rejects_overlapping_head_stride(void **state)
{
    (void)state;
    g_mg.o.stride[1] = MG_DIM / 2; /* heads of one row overlap */
    EXPECT_MERGE_REJECTED("o");
}

static void test_merge_states_rejects_output_outside_buffer(void **state)
{
    (void)state;
    g_mg.lse.offset = 2 * sizeof(float);
    EXPECT_MERGE_REJECTED("lse");
}

#define T(f) cmocka_unit_test_teardown(f, xt_env_teardown)
#define KV(f) cmocka_unit_test_setup_teardown(f, kv_setup, kv_teardown)
#define MG(f) cmocka_unit_test_setup_teardown(f, merge_setup, merge_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_context_create_rejects_null_out),
        T(test_context_create_with_rejects_null_options),
        T(test_context_create_with_rejects_null_out),
        T(test_context_create_with_rejects_unknown_backend_kind),
        T(test_context_create_with_rejects_negative_device),
        T(test_context_create_with_rejects_device_index_out_of_range),
        T(test_context_create_with_rejects_negative_num_threads),
        T(test_context_create_with_rejects_native_queue_on_cpu),
        T(test_context_caps_rejects_null_context),
        T(test_context_caps_rejects_null_out),
        T(test_context_synchronize_rejects_null_context),
        T(test_backend_probe_rejects_auto),
        T(test_backend_probe_rejects_unknown_kind),
        T(test_backend_probe_rejects_null_num_devices),
        T(test_log_set_level_rejects_value_outside_enum),

        T(test_env_rejects_unknown_backend),
        T(test_env_rejects_non_numeric_device),
        T(test_env_rejects_device_with_trailing_garbage),
        T(test_env_rejects_negative_device),
        T(test_env_rejects_device_index_out_of_range),
        T(test_env_rejects_device_index_overflowing_int32),
        T(test_env_rejects_unknown_log_level),
        T(test_env_rejects_device_index_out_of_range_under_auto),
        T(test_env_rejects_explicit_backend_without_module),

        T(test_buffer_alloc_rejects_null_context),
        T(test_buffer_alloc_rejects_null_out),
        T(test_buffer_alloc_rejects_size_max),
        T(test_buffer_wrap_rejects_null_context),
        T(test_buffer_wrap_rejects_null_pointer),
        T(test_buffer_wrap_rejects_range_that_wraps_around),
        T(test_buffer_wrap_rejects_size_beyond_address_space),
        T(test_buffer_wrap_rejects_null_out),
        T(test_buffer_write_rejects_null_buffer),
        T(test_buffer_write_rejects_null_source),
        T(test_buffer_write_rejects_range_outside_buffer),
        T(test_buffer_write_rejects_offset_plus_size_overflow),
        T(test_buffer_read_rejects_null_buffer),
        T(test_buffer_read_rejects_null_destination),
        T(test_buffer_read_rejects_range_outside_buffer),
        T(test_buffer_read_rejects_offset_plus_size_overflow),

        T(test_plan_accepts_valid_descriptors),
        T(test_plan_rejects_null_context),
        T(test_plan_rejects_null_desc),
        T(test_plan_rejects_null_out),
        T(test_plan_rejects_zero_batch),
        T(test_plan_rejects_negative_batch),
        T(test_plan_rejects_zero_q_heads),
        T(test_plan_rejects_zero_kv_heads),
        T(test_plan_rejects_negative_kv_heads),
        T(test_plan_rejects_hq_not_multiple_of_hkv),
        T(test_plan_rejects_hkv_greater_than_hq),
        T(test_plan_rejects_negative_seqlen_q),
        T(test_plan_rejects_negative_seqlen_k),
        T(test_plan_rejects_zero_head_dim),
        T(test_plan_rejects_negative_head_dim_v),
        T(test_plan_rejects_head_dim_not_multiple_of_8),
        T(test_plan_rejects_head_dim_above_256),
        T(test_plan_rejects_head_dim_pair_192_64),
        T(test_plan_rejects_i32_dtype),
        T(test_plan_rejects_unknown_dtype),
        T(test_plan_rejects_unknown_q_layout),
        T(test_plan_rejects_unknown_kv_layout),
        T(test_plan_rejects_unknown_flags),
        T(test_plan_rejects_q_size_overflowing_int64),
        T(test_plan_rejects_kv_size_overflowing_int64),
        T(test_plan_rejects_paged_cache_size_overflowing_int64),
        T(test_plan_rejects_paged_zero_page_size),
        T(test_plan_rejects_paged_negative_page_size),
        T(test_plan_rejects_paged_zero_num_pages),
        T(test_plan_rejects_paged_zero_max_pages_per_seq),
        T(test_plan_rejects_paged_seqlen_k_beyond_max_pages_times_page_size),
        T(test_plan_rejects_window_left_below_minus_one),
        T(test_plan_rejects_window_right_below_minus_one),
        T(test_plan_rejects_causal_with_positive_window_right),
        T(test_plan_rejects_window_without_window_flag),
        T(test_plan_rejects_negative_softcap),
        T(test_plan_rejects_nan_softcap),
        T(test_plan_rejects_nan_scale),
        T(test_plan_rejects_infinite_scale),

        KV(test_kv_append_accepts_valid_input),
        KV(test_kv_append_rejects_null_context),
        KV(test_kv_append_rejects_null_tensor),
        KV(test_kv_append_rejects_absent_slots),
        KV(test_kv_append_rejects_slot_beyond_cache),
        KV(test_kv_append_rejects_slot_below_minus_one),
        KV(test_kv_append_rejects_repeated_slot),
        KV(test_kv_append_rejects_slots_not_i32),
        KV(test_kv_append_rejects_slots_length_mismatch),
        KV(test_kv_append_rejects_dtype_mismatch),
        KV(test_kv_append_rejects_head_count_mismatch),
        KV(test_kv_append_rejects_cache_outside_buffer),
        KV(test_kv_append_rejects_new_rows_overlapping_cache),
        KV(test_kv_append_rejects_cache_innermost_stride_not_one),

        MG(test_merge_states_accepts_valid_input),
        MG(test_merge_states_accepts_output_aliasing_input_a),
        MG(test_merge_states_rejects_null_context),
        MG(test_merge_states_rejects_null_tensor),
        MG(test_merge_states_rejects_o_shape_mismatch),
        MG(test_merge_states_rejects_lse_shape_mismatch),
        MG(test_merge_states_rejects_dtype_mismatch),
        MG(test_merge_states_rejects_lse_not_f32),
        MG(test_merge_states_accepts_transposed_lse),
        MG(test_merge_states_accepts_transposed_lse_in_place),
        MG(test_merge_states_rejects_lse_strides_overlapping),
        MG(test_merge_states_rejects_lse_transposed_over_lse_a),
        MG(test_merge_states_rejects_head_dim_zero),
        MG(test_merge_states_rejects_output_overlapping_input_b),
        MG(test_merge_states_rejects_overlapping_head_stride),
        MG(test_merge_states_rejects_output_outside_buffer),
    };
    return cmocka_run_group_tests_name("bad input", tests, group_setup, group_teardown);
}
