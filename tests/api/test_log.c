/* Logging (docs/environment.md, xattn_log_set_callback): XATTN_LOG picks the level,
 * messages go to stderr or to the application's callback, never to stdout.
 *
 * The level is process-wide and read from the environment at start, so each
 * level runs as its own process: `test_log info` under XATTN_LOG=info and
 * `test_log error` under XATTN_LOG=error, both with XATTN_BACKEND=auto. */
#include "api_test.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_MESSAGES = 256, MESSAGE_SIZE = 512 };

typedef struct log_record {
    xattn_log_level level;
    char text[MESSAGE_SIZE];
} log_record;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static log_record records[MAX_MESSAGES];
static int num_records;
static int user_token;

static void collect(xattn_log_level level, const char *message, void *user)
{
    pthread_mutex_lock(&lock);
    if (user == &user_token && num_records < MAX_MESSAGES) {
        records[num_records].level = level;
        snprintf(records[num_records].text, MESSAGE_SIZE, "%s", message ? message : "(null)");
        num_records++;
    }
    pthread_mutex_unlock(&lock);
}

static int log_setup(void **state)
{
    (void)state;
    num_records = 0;
    xattn_log_set_callback(collect, &user_token);
    return 0;
}

static int log_teardown(void **state)
{
    (void)state;
    xattn_log_set_callback(NULL, NULL);
    xt_env_restore();
    return 0;
}

static void dump_records(void)
{
    for (int i = 0; i < num_records; i++)
        print_message("  [%d] %s\n", (int)records[i].level, records[i].text);
}

/* Number of records at level whose text names word (NULL: any text). */
static int count_records(xattn_log_level level, const char *word)
{
    int n = 0;
    for (int i = 0; i < num_records; i++)
        if (records[i].level == level && (!word || xt_mentions(records[i].text, word))) n++;
    return n;
}

static int count_above(xattn_log_level level)
{
    int n = 0;
    for (int i = 0; i < num_records; i++)
        if (records[i].level > level) n++;
    return n;
}

/* ---- XATTN_LOG=info ------------------------------------------------- */

static void test_info_level_logs_auto_backend_choice(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "auto");
    xattn_context *ctx = xt_context();
    const char *chosen = xattn_context_backend_name(ctx);
    int hits = count_records(XATTN_LOG_INFO, chosen);
    int debug = count_above(XATTN_LOG_INFO);
    if (hits == 0 || debug != 0) {
        dump_records();
        xattn_context_destroy(&ctx);
        fail_msg("want an info message naming \"%s\" and nothing above info; got %d and %d",
                 chosen, hits, debug);
    }
    xattn_context_destroy(&ctx);
}

static void test_plain_cpu_context_logs_no_warnings(void **state)
{
    (void)state;
    /* Nothing is wrong, so nothing is logged at warn or error. */
    xt_setenv("XATTN_BACKEND", "cpu");
    xattn_context *ctx = xt_context();
    int loud = count_records(XATTN_LOG_WARN, NULL) + count_records(XATTN_LOG_ERROR, NULL);
    xattn_context_destroy(&ctx);
    if (loud) {
        dump_records();
        fail_msg("%d warn/error messages for a plain cpu context", loud);
    }
}

static void test_set_level_overrides_environment(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "auto");
    XT_ASSERT_STATUS(xattn_log_set_level(XATTN_LOG_ERROR), XATTN_OK);
    xattn_context *ctx = NULL;
    xattn_status st = xattn_context_create(&ctx);
    int chatty = count_above(XATTN_LOG_ERROR);
    xattn_context_destroy(&ctx);
    xattn_log_set_level(XATTN_LOG_INFO);
    XT_ASSERT_STATUS(st, XATTN_OK);
    if (chatty) {
        dump_records();
        fail_msg("%d messages above error after xattn_log_set_level(ERROR)", chatty);
    }
}

/* Run fn with file descriptor fd redirected into a temporary file; return
 * the file's contents (malloc'ed). */
static char *capture_fd(int fd, void (*fn)(void))
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stdout);
    fflush(stderr);
    int saved = dup(fd);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), fd) >= 0);
    fn();
    fflush(stdout);
    fflush(stderr);
    assert_true(dup2(saved, fd) >= 0);
    close(saved);
    long size = ftell(tmp);
    if (size < 0) size = 0;
    char *text = calloc((size_t)size + 1, 1);
    assert_non_null(text);
    rewind(tmp);
    size_t got = fread(text, 1, (size_t)size, tmp);
    text[got] = '\0';
    fclose(tmp);
    return text;
}

static char chosen_backend[64];

static void create_auto_context(void)
{
    xattn_context *ctx = NULL;
    if (xattn_context_create(&ctx) == XATTN_OK)
        snprintf(chosen_backend, sizeof chosen_backend, "%s", xattn_context_backend_name(ctx));
    xattn_context_destroy(&ctx);
}

static void test_default_sink_is_stderr(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "auto");
    xattn_log_set_callback(NULL, NULL);
    chosen_backend[0] = '\0';
    char *err = capture_fd(STDERR_FILENO, create_auto_context);
    int ok = chosen_backend[0] && xt_mentions(err, chosen_backend);
    if (!ok) print_message("stderr was: \"%s\"\n", err);
    free(err);
    assert_true(chosen_backend[0] != '\0');
    assert_true(ok);
}

/* Failing and succeeding calls at debug level, with the stderr sink. */
static void exercise_library(void)
{
    xattn_log_set_callback(NULL, NULL);
    xattn_log_set_level(XATTN_LOG_DEBUG);
    xattn_context *ctx = NULL;
    (void)xattn_context_create(NULL);
    if (xattn_context_create(&ctx) == XATTN_OK) {
        xattn_buffer *buf = NULL;
        (void)xattn_buffer_alloc(ctx, 64, NULL);
        if (xattn_buffer_alloc(ctx, 64, &buf) == XATTN_OK) {
            unsigned char b[64] = {0};
            (void)xattn_buffer_write(buf, 0, b, sizeof b);
            (void)xattn_buffer_read(buf, 32, b, sizeof b);
            xattn_buffer_free(&buf);
        }
        xattn_attn_desc d;
        memset(&d, 0, sizeof d);
        xattn_plan *plan = NULL;
        (void)xattn_plan_create(ctx, &d, &plan);
        d.batch = 1;
        d.num_q_heads = d.num_kv_heads = 1;
        d.head_dim_qk = d.head_dim_v = 64;
        d.seqlen_q = d.seqlen_k = 4;
        if (xattn_plan_create(ctx, &d, &plan) == XATTN_OK) {
            char text[256];
            (void)xattn_plan_describe(plan, text, sizeof text, NULL);
            (void)xattn_attn_run(plan, NULL);
            xattn_plan_destroy(&plan);
        }
        xattn_context_destroy(&ctx);
    }
    xt_setenv("XATTN_BACKEND", "bogus");
    (void)xattn_context_create(&ctx);
    xattn_context_destroy(&ctx);
    xattn_log_set_level(XATTN_LOG_INFO);
}

static void test_library_never_writes_to_stdout(void **state)
{
    (void)state;
    char *out = capture_fd(STDOUT_FILENO, exercise_library);
    size_t n = strlen(out);
    if (n) print_message("stdout was: \"%s\"\n", out);
    free(out);
    assert_int_equal(n, 0);
}

/* ---- XATTN_LOG=error ------------------------------------------------ */

static void test_error_level_suppresses_info(void **state)
{
    (void)state;
    xt_setenv("XATTN_BACKEND", "auto");
    xattn_context *ctx = xt_context();
    xattn_context_destroy(&ctx);
    int chatty = count_above(XATTN_LOG_ERROR);
    if (chatty) {
        dump_records();
        fail_msg("%d messages above error under XATTN_LOG=error", chatty);
    }
}

#define L(f) cmocka_unit_test_setup_teardown(f, log_setup, log_teardown)

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const char *env = getenv("XATTN_LOG");
    if (!env || strcmp(env, mode) != 0) {
        fprintf(stderr, "usage: XATTN_LOG=<mode> %s <mode>, mode info or error\n", argv[0]);
        return 1;
    }
    if (!strcmp(mode, "info")) {
        const struct CMUnitTest tests[] = {
            L(test_info_level_logs_auto_backend_choice),
            L(test_plain_cpu_context_logs_no_warnings),
            L(test_set_level_overrides_environment),
            L(test_default_sink_is_stderr),
            L(test_library_never_writes_to_stdout),
        };
        return cmocka_run_group_tests_name("log (XATTN_LOG=info)", tests, NULL, NULL);
    }
    if (!strcmp(mode, "error")) {
        const struct CMUnitTest tests[] = {
            L(test_error_level_suppresses_info),
        };
        return cmocka_run_group_tests_name("log (XATTN_LOG=error)", tests, NULL, NULL);
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 1;
}
