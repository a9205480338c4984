/* Status strings, the thread-local error message and logging. */
#include "error.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { ERROR_MESSAGE_SIZE = 1024, LOG_MESSAGE_SIZE = 1024 };

static _Thread_local char last_error[ERROR_MESSAGE_SIZE];

const char *xattn_status_string(xattn_status status)
{
    switch (status) {
    case XATTN_OK: return "XATTN_OK";
    case XATTN_ERR_INVALID_ARGUMENT: return "XATTN_ERR_INVALID_ARGUMENT";
    case XATTN_ERR_UNSUPPORTED: return "XATTN_ERR_UNSUPPORTED";
    case XATTN_ERR_OUT_OF_MEMORY: return "XATTN_ERR_OUT_OF_MEMORY";
    case XATTN_ERR_BACKEND_UNAVAILABLE: return "XATTN_ERR_BACKEND_UNAVAILABLE";
    case XATTN_ERR_INVALID_ENV: return "XATTN_ERR_INVALID_ENV";
    case XATTN_ERR_DEVICE: return "XATTN_ERR_DEVICE";
    case XATTN_ERR_COMPILE: return "XATTN_ERR_COMPILE";
    case XATTN_ERR_INTERNAL: return "XATTN_ERR_INTERNAL";
    case XATTN_ERR_WORKSPACE_TOO_SMALL: return "XATTN_ERR_WORKSPACE_TOO_SMALL";
    }
    return "XATTN_STATUS_UNKNOWN";
}

const char *xattn_last_error(void) { return last_error; }

const char *xattn_version(void) { return "0.1.0"; }

void xattn_error_clear(void) { last_error[0] = '\0'; }

xattn_status xattn_error(xattn_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    xattn_log(XATTN_LOG_DEBUG, "%s: %s", xattn_status_string(status), last_error);
    return status;
}

/* ---- logging: process-wide configuration, set once from XATTN_LOG ---- */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static atomic_int log_level = XATTN_LOG_WARN;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static xattn_log_fn log_fn;
static void *log_user;

static void log_init_from_env(void)
{
    const char *v = getenv("XATTN_LOG");
    if (!v || !*v) return;
    for (int i = 0; i < (int)XATTN_ARRAY_SIZE(level_names); i++)
        if (!strcasecmp(v, level_names[i])) atomic_store(&log_level, i);
    /* An unknown value is reported as an error by context creation. */
}

int xattn_log_parse_level(const char *v, xattn_log_level *out)
{
    for (int i = 0; i < (int)XATTN_ARRAY_SIZE(level_names); i++)
        if (!strcasecmp(v, level_names[i])) {
            *out = (xattn_log_level)i;
            return 0;
        }
    return -1;
}

int xattn_log_enabled(xattn_log_level level)
{
    pthread_once(&log_once, log_init_from_env);
    return (int)level <= atomic_load(&log_level);
}

void xattn_log_set_callback(xattn_log_fn fn, void *user)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user = user;
    pthread_mutex_unlock(&log_lock);
}

xattn_status xattn_log_set_level(xattn_log_level level)
{
    if ((int)level < XATTN_LOG_ERROR || level > XATTN_LOG_DEBUG)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT,
                           "level: %d is not an xattn_log_level (0..3)", (int)level);
    pthread_once(&log_once, log_init_from_env);
    atomic_store(&log_level, (int)level);
    return XATTN_OK;
}

void xattn_log(xattn_log_level level, const char *fmt, ...)
{
    /* Modules call this too: keep a bad level inside the name table. */
    if ((int)level < XATTN_LOG_ERROR) level = XATTN_LOG_ERROR;
    if ((int)level > XATTN_LOG_DEBUG) level = XATTN_LOG_DEBUG;
    if (!xattn_log_enabled(level)) return;
    char msg[LOG_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    xattn_log_fn fn = log_fn;
    void *user = log_user;
    pthread_mutex_unlock(&log_lock);
    if (fn)
        fn(level, msg, user);
    else
        fprintf(stderr, "xattn %s: %s\n", level_names[level], msg);
}
