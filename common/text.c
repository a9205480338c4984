/* Text helpers of the describe functions (see text.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "text.h"

void xattn_text_put(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*len < size ? buf + *len : NULL, *len < size ? size - *len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

void xattn_text_put_bytes(char *buf, size_t size, size_t *len, size_t bytes)
{
    if (bytes >= (size_t)1 << 30)
        xattn_text_put(buf, size, len, "%zu (%.2f GiB)", bytes, (double)bytes / (1u << 30));
    else if (bytes >= (size_t)1 << 20)
        xattn_text_put(buf, size, len, "%zu (%.2f MiB)", bytes, (double)bytes / (1u << 20));
    else if (bytes >= 1024)
        xattn_text_put(buf, size, len, "%zu (%.1f KiB)", bytes, (double)bytes / 1024);
    else
        xattn_text_put(buf, size, len, "%zu", bytes);
}

xattn_status xattn_text_describe(const struct xattn_context *ctx,
                                 int (*format)(const void *arg, char *buf, size_t size),
                                 const void *arg, char *buf, size_t size, size_t *needed)
{
    if (!buf && size)
        return xattn_error(XATTN_ERR_INVALID_ARGUMENT, "buf: NULL with size %zu", size);
    char head[256];
    int n0 = snprintf(head, sizeof head, "backend %s, device %s\n", ctx->vt->name,
                      ctx->caps.name);
    int n1 = format(arg, NULL, 0);
    if (n0 < 0 || n1 < 0) return xattn_error(XATTN_ERR_INTERNAL, "plan: cannot format");
    if (needed) *needed = (size_t)n0 + (size_t)n1;
    if (size) {
        int w = snprintf(buf, size, "%s", head);
        if (w >= 0 && (size_t)w < size) format(arg, buf + w, size - (size_t)w);
    }
    return XATTN_OK;
}

int xattn_options_add(char *buf, size_t size, const char *fmt, ...)
{
    size_t len = strnlen(buf, size);
    if (len >= size) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - len) {
        buf[len] = '\0';
        return -1;
    }
    return 0;
}

int xattn_options_dtype(char *buf, size_t size, const char *prefix, xattn_dtype dtype)
{
    static const char *const upper[] = {"F32", "F16", "BF16", "I32"};
    static const char *const lower[] = {"f32", "f16", "bf16", "i32"};
    if ((unsigned)dtype >= XATTN_ARRAY_SIZE(upper)) return -1;
    return xattn_options_add(buf, size, " -D%s=%s -D%s_%s=1", prefix, lower[dtype], prefix,
                             upper[dtype]);
}
