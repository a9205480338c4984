/* Shared helpers of the API test suites (see api_test.h). */
#include "api_test.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

int xt_mentions(const char *text, const char *word)
{
    size_t n = strlen(word);
    if (!text || n == 0) return 0;
    for (const char *p = text; *p; p++) {
        if (strncasecmp(p, word, n) != 0) continue;
        int left_ok = p == text || !is_ident_char(p[-1]);
        int right_ok = !is_ident_char(p[n]);
        if (left_ok && right_ok) return 1;
    }
    return 0;
}

void xt_check_status(xattn_status got, xattn_status want, const char *expr,
                     const char *file, int line)
{
    if (got == want) return;
    print_error("%s:%d: %s\n  returned %s, expected %s\n  last error: \"%s\"\n",
                file, line, expr, xattn_status_string(got),
                xattn_status_string(want), xattn_last_error());
    fail();
}

void xt_check_status2(xattn_status got, xattn_status want_a, xattn_status want_b,
                      const char *expr, const char *file, int line)
{
    if (got == want_a || got == want_b) return;
    print_error("%s:%d: %s\n  returned %s, expected %s or %s\n  last error: \"%s\"\n",
                file, line, expr, xattn_status_string(got),
                xattn_status_string(want_a), xattn_status_string(want_b),
                xattn_last_error());
    fail();
}

void xt_check_error_names(const char *file, int line, ...)
{
    const char *msg = xattn_last_error();
    char wanted[512] = "";
    va_list ap;
    va_start(ap, line);
    int found = 0;
    for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *)) {
        if (msg && xt_mentions(msg, w)) found = 1;
        size_t len = strlen(wanted);
        snprintf(wanted + len, sizeof wanted - len, "%s\"%s\"", len ? " or " : "", w);
    }
    va_end(ap);
    if (found) return;
    print_error("%s:%d: last error does not name %s\n  last error: \"%s\"\n",
                file, line, wanted, msg ? msg : "(NULL)");
    fail();
}

void xt_fill(xattn_buffer *buf, unsigned char byte)
{
    size_t n = xattn_buffer_size(buf);
    assert_true(n > 0);
    unsigned char *tmp = malloc(n);
    assert_non_null(tmp);
    memset(tmp, byte, n);
    xattn_status st = xattn_buffer_write(buf, 0, tmp, n);
    free(tmp);
    XT_ASSERT_STATUS(st, XATTN_OK);
}

void xt_check_host_filled(const void *p, size_t n, unsigned char byte,
                          const char *what, const char *file, int line)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == byte) continue;
        print_error("%s:%d: caller memory %s was modified: byte %zu is 0x%02x, "
                    "sentinel 0x%02x\n", file, line, what, i, b[i], byte);
        fail();
    }
}

void xt_check_filled(xattn_buffer *buf, unsigned char byte, const char *what,
                     const char *file, int line)
{
    size_t n = xattn_buffer_size(buf);
    assert_true(n > 0);
    unsigned char *tmp = malloc(n);
    assert_non_null(tmp);
    memset(tmp, (unsigned char)~byte, n);
    xattn_status st = xattn_buffer_read(buf, 0, tmp, n);
    if (st != XATTN_OK) {
        free(tmp);
        xt_check_status(st, XATTN_OK, "xattn_buffer_read (sentinel check)", file, line);
        return;
    }
    /* Copy out so the failure path can free before longjmp-ing. */
    size_t bad = n;
    for (size_t i = 0; i < n; i++)
        if (tmp[i] != byte) {
            bad = i;
            break;
        }
    unsigned char got = bad < n ? tmp[bad] : 0;
    free(tmp);
    if (bad == n) return;
    print_error("%s:%d: caller memory %s was modified: byte %zu is 0x%02x, "
                "sentinel 0x%02x\n", file, line, what, bad, got, byte);
    fail();
}

/* ---- environment ----------------------------------------------------- */

enum { XT_MAX_ENV = 16 };

static struct {
    char *name;
    char *old; /* NULL: was unset */
} saved_env[XT_MAX_ENV];
static int saved_count;

void xt_setenv(const char *name, const char *value)
{
    int known = 0;
    for (int i = 0; i < saved_count; i++)
        if (!strcmp(saved_env[i].name, name)) known = 1;
    if (!known) {
        assert_true(saved_count < XT_MAX_ENV);
        const char *old = getenv(name);
        saved_env[saved_count].name = strdup(name);
        saved_env[saved_count].old = old ? strdup(old) : NULL;
        saved_count++;
    }
    if (value)
        assert_int_equal(setenv(name, value, 1), 0);
    else
        assert_int_equal(unsetenv(name), 0);
}

void xt_env_restore(void)
{
    for (int i = saved_count - 1; i >= 0; i--) {
        if (saved_env[i].old)
            setenv(saved_env[i].name, saved_env[i].old, 1);
        else
            unsetenv(saved_env[i].name);
        free(saved_env[i].name);
        free(saved_env[i].old);
    }
    saved_count = 0;
}

int xt_env_teardown(void **state)
{
    (void)state;
    xt_env_restore();
    return 0;
}

/* ---- objects --------------------------------------------------------- */

xattn_buffer *xt_buffer(xattn_context *ctx, size_t bytes, unsigned char byte)
{
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, bytes, &buf), XATTN_OK);
    assert_non_null(buf);
    xt_fill(buf, byte);
    return buf;
}

xattn_buffer *xt_buffer_i32(xattn_context *ctx, const int32_t *v, size_t n)
{
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, n * sizeof *v, &buf), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 0, v, n * sizeof *v), XATTN_OK);
    return buf;
}

xattn_buffer *xt_buffer_f32(xattn_context *ctx, const float *v, size_t n)
{
    xattn_buffer *buf = NULL;
    XT_ASSERT_STATUS(xattn_buffer_alloc(ctx, n * sizeof *v, &buf), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 0, v, n * sizeof *v), XATTN_OK);
    return buf;
}

xattn_tensor xt_tensor_f32(xattn_context *ctx, int32_t rank, const int64_t *shape,
                           const float *v)
{
    xattn_buffer *buf = xt_buffer_f32(ctx, v, xt_elems(rank, shape));
    return xattn_tensor_contiguous(buf, 0, XATTN_F32, rank, shape);
}

size_t xt_elems(int32_t rank, const int64_t *shape)
{
    size_t n = 1;
    for (int32_t i = 0; i < rank; i++) n *= (size_t)shape[i];
    return n;
}

unsigned char *xt_read_all(xattn_buffer *buf)
{
    size_t n = xattn_buffer_size(buf);
    unsigned char *p = malloc(n);
    assert_non_null(p);
    XT_ASSERT_STATUS(xattn_buffer_read(buf, 0, p, n), XATTN_OK);
    return p;
}

xattn_context *xt_context(void)
{
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create(&ctx), XATTN_OK);
    assert_non_null(ctx);
    return ctx;
}

xattn_context *xt_cpu_context(int32_t threads)
{
    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_CPU;
    o.num_threads = threads;
    xattn_context *ctx = NULL;
    XT_ASSERT_STATUS(xattn_context_create_with(&o, &ctx), XATTN_OK);
    return ctx;
}

xattn_context *xt_ctx;

int xt_ctx_setup(void **state)
{
    (void)state;
    return xattn_context_create(&xt_ctx) == XATTN_OK ? 0 : -1;
}

int xt_ctx_teardown(void **state)
{
    (void)state;
    xattn_context_destroy(&xt_ctx);
    return 0;
}

xattn_attn_desc xt_attn_desc(int32_t batch, int32_t seqlen_q, int32_t seqlen_k,
                             int32_t num_q_heads, int32_t num_kv_heads, int32_t d,
                             uint32_t flags)
{
    xattn_attn_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.dtype = XATTN_F32;
    desc.batch = batch;
    desc.num_q_heads = num_q_heads;
    desc.num_kv_heads = num_kv_heads;
    desc.head_dim_qk = desc.head_dim_v = d;
    desc.q_layout = XATTN_Q_UNIFORM;
    desc.kv_layout = XATTN_KV_UNIFORM;
    desc.seqlen_q = seqlen_q;
    desc.seqlen_k = seqlen_k;
    desc.flags = flags;
    return desc;
}

xattn_attn_args xt_attn_args(xattn_buffer *q, xattn_buffer *k, xattn_buffer *v, xattn_buffer *o,
                             int32_t rank, const int64_t *qs, const int64_t *ks)
{
    xattn_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = xattn_tensor_contiguous(q, 0, XATTN_F32, rank, qs);
    a.k = xattn_tensor_contiguous(k, 0, XATTN_F32, rank, ks);
    a.v = xattn_tensor_contiguous(v, 0, XATTN_F32, rank, ks);
    a.o = xattn_tensor_contiguous(o, 0, XATTN_F32, rank, qs);
    return a;
}

xattn_plan *xt_plan(xattn_context *ctx, const xattn_attn_desc *desc)
{
    xattn_plan *plan = NULL;
    XT_ASSERT_STATUS(xattn_plan_create(ctx, desc, &plan), XATTN_OK);
    return plan;
}

xattn_moe_desc xt_moe_desc(int32_t max_tokens, int32_t hidden, int32_t num_experts,
                           int32_t top_k, int32_t inter)
{
    xattn_moe_desc d;
    memset(&d, 0, sizeof d);
    d.max_tokens = max_tokens;
    d.hidden = hidden;
    d.num_experts = num_experts;
    d.top_k = top_k;
    d.inter = inter;
    d.dtype = d.weight_dtype = d.logits_dtype = XATTN_F32;
    d.route = XATTN_MOE_ROUTE_SOFTMAX_TOPK;
    d.activation = XATTN_MOE_SWIGLU;
    d.flags = XATTN_MOE_RENORMALIZE;
    return d;
}

size_t xt_tensor_extent(const xattn_tensor *t)
{
    size_t last = 0;
    for (int32_t d = 0; d < t->rank; d++)
        if (t->shape[d] > 0) last += (size_t)((t->shape[d] - 1) * t->stride[d]);
    return t->offset + (last + 1) * xattn_dtype_size(t->dtype);
}
