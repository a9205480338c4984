#pragma once
/* Error recording and logging shared by the front end and every backend. */
#include <stdarg.h>

#include "xattn_core.h"
#include "internal_api.h"

#if defined(__GNUC__)
#  define XATTN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#  define XATTN_PRINTF(a, b)
#endif

/* Record a detail message for xattn_last_error() on this thread and return
 * status, so call sites read `return xattn_error(XATTN_ERR_..., "...")`. */
XATTN_INTERNAL xattn_status xattn_error(xattn_status status, const char *fmt, ...)
    XATTN_PRINTF(2, 3);

/* Clear this thread's message (called at the start of public entry points). */
XATTN_INTERNAL void xattn_error_clear(void);

/* Log at level if enabled (XATTN_LOG, xattn_log_set_level). */
XATTN_INTERNAL void xattn_log(xattn_log_level level, const char *fmt, ...)
    XATTN_PRINTF(2, 3);
XATTN_INTERNAL int xattn_log_enabled(xattn_log_level level);

/* Parse "error|warn|info|debug" (any case). Returns 0, or -1 if unknown. */
XATTN_INTERNAL int xattn_log_parse_level(const char *name, xattn_log_level *out);

/* Valid XATTN_LOG values, for messages. */
#define XATTN_LOG_VALUES "error|warn|info|debug"

/* Propagate a failing status: XATTN_TRY(expr); */
#define XATTN_TRY(expr)                                                        \
    do {                                                                       \
        xattn_status xattn_try_st_ = (expr);                                   \
        if (xattn_try_st_ != XATTN_OK) return xattn_try_st_;                   \
    } while (0)

#define XATTN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
