#pragma once
/* Appending text to a caller's buffer with snprintf semantics, for the
 * describe functions (plan.c, plan_moe.c). */
#include <stddef.h>

#include "error.h"

/* Format into buf at *len; *len tracks the full length even past size, so
 * a first pass with size 0 measures. */
void xattn_text_put(char *buf, size_t size, size_t *len, const char *fmt, ...)
    XATTN_PRINTF(4, 5);

/* A byte count, with KiB/MiB/GiB in parentheses from 1 KiB on. */
void xattn_text_put_bytes(char *buf, size_t size, size_t *len, size_t bytes);

/* Kernel build options (" -DIO=bf16 -DBQ=64 ..."), shared by the GPU
 * modules: appends printf-style to the NUL-terminated text in buf (size
 * bytes); returns 0, or -1 (buf unchanged) when it would not fit. */
XATTN_INTERNAL int xattn_options_add(char *buf, size_t size, const char *fmt, ...)
    XATTN_PRINTF(3, 4);

/* Appends the dtype switches every kernel source knows for dtype under
 * macro prefix: "IO" and bf16 give " -DIO=bf16 -DIO_BF16=1". 0 or -1. */
XATTN_INTERNAL int xattn_options_dtype(char *buf, size_t size, const char *prefix,
                                       xattn_dtype dtype);

struct xattn_context;

/* The describe functions' contract: "backend B, device D\n" then the text
 * format(arg, buf, size) writes (snprintf semantics) into buf, always
 * NUL-terminated when size > 0; *needed, if not NULL, gets the full length.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (buf NULL with size > 0),
 * XATTN_ERR_INTERNAL (formatting failed). */
xattn_status xattn_text_describe(const struct xattn_context *ctx,
                                 int (*format)(const void *arg, char *buf, size_t size),
                                 const void *arg, char *buf, size_t size, size_t *needed);
