/* Harness plumbing: random numbers, dtype rounding, host images of device
 * buffers, comparisons and tolerances. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "half.h"
#include "harness.h"

/* ---- random numbers ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t hx_mix(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ b;
    return splitmix64(&x);
}

uint64_t hx_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

void hx_rng_seed(hx_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t hx_rng_next(hx_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double hx_rng_uniform(hx_rng *r) { return (double)(hx_rng_next(r) >> 11) * 0x1p-53; }

double hx_rng_normal(hx_rng *r)
{
    /* Box–Muller; one of the pair is enough here. */
    double u = 1.0 - hx_rng_uniform(r); /* (0, 1] */
    double v = hx_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

int64_t hx_rng_below(hx_rng *r, int64_t n) { return (int64_t)(hx_rng_next(r) % (uint64_t)n); }

void hx_rng_shuffle(hx_rng *r, int32_t *a, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = hx_rng_below(r, i + 1);
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- dtypes -------------------------------------------------------------- */

size_t hx_dtype_size(xattn_dtype dt)
{
    switch (dt) {
    case XATTN_F32: return 4;
    case XATTN_F16: return 2;
    case XATTN_BF16: return 2;
    case XATTN_I32: return 4;
    }
    return 0;
}

double hx_store(void *p, xattn_dtype dt, double v)
{
    switch (dt) {
    case XATTN_F32: {
        float f = (float)v;
        memcpy(p, &f, 4);
        return f;
    }
    case XATTN_F16: {
        uint16_t h = xattn_f32_to_f16((float)v);
        memcpy(p, &h, 2);
        return xattn_f16_to_f32(h);
    }
    case XATTN_BF16: {
        uint16_t h = xattn_f32_to_bf16((float)v);
        memcpy(p, &h, 2);
        return xattn_bf16_to_f32(h);
    }
    case XATTN_I32: {
        int32_t i = (int32_t)v;
        memcpy(p, &i, 4);
        return i;
    }
    }
    return NAN;
}

double hx_load(const void *p, xattn_dtype dt)
{
    switch (dt) {
    case XATTN_F32: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    case XATTN_F16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return xattn_f16_to_f32(h);
    }
    case XATTN_BF16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return xattn_bf16_to_f32(h);
    }
    case XATTN_I32: {
        int32_t i;
        memcpy(&i, p, 4);
        return i;
    }
    }
    return NAN;
}

double hx_round(xattn_dtype dt, double v)
{
    unsigned char tmp[4];
    return hx_store(tmp, dt, v);
}

/* ---- tensors and buffers --------------------------------------------------- */

size_t hx_tensor_init(hx_tensor *t, hx_buf *buf, size_t offset, xattn_dtype dt,
                      int32_t rank, const int64_t *shape, const int64_t *stride)
{
    memset(t, 0, sizeof *t);
    t->buf = buf;
    t->offset = offset;
    t->dtype = dt;
    t->rank = rank;
    int64_t last = 0, empty = 0;
    for (int32_t d = 0; d < rank; d++) {
        t->shape[d] = shape[d];
        t->stride[d] = stride[d];
        if (shape[d] == 0) empty = 1;
        else last += (shape[d] - 1) * stride[d];
    }
    return offset + (empty ? 0 : (size_t)(last + 1) * hx_dtype_size(dt));
}

void *hx_tensor_at(const hx_tensor *t, const int64_t *idx)
{
    int64_t e = 0;
    for (int32_t d = 0; d < t->rank; d++) e += idx[d] * t->stride[d];
    return t->buf->host + t->offset + (size_t)e * hx_dtype_size(t->dtype);
}

xattn_tensor hx_tensor_api(const hx_tensor *t)
{
    xattn_tensor x;
    memset(&x, 0, sizeof x);
    x.buffer = t->buf->dev;
    x.offset = t->offset;
    x.dtype = t->dtype;
    x.rank = t->rank;
    for (int32_t d = 0; d < t->rank; d++) {
        x.shape[d] = t->shape[d];
        x.stride[d] = t->stride[d];
    }
    return x;
}

void hx_tensor_mark(const hx_tensor *t, unsigned char *mask)
{
    int64_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) n *= t->shape[d];
    const size_t es = hx_dtype_size(t->dtype);
    int64_t idx[XATTN_MAX_RANK] = {0};
    for (int64_t e = 0; e < n; e++) {
        unsigned char *p = hx_tensor_at(t, idx);
        memset(mask + (p - t->buf->host), 1, es);
        for (int32_t d = t->rank - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

int hx_complete(xattn_context *ctx, xattn_status st, const char *call, double t0,
                hx_result *res)
{
    if (st != XATTN_OK) return hx_api_fail(res, call, st);
    st = xattn_context_synchronize(ctx);
    if (st != XATTN_OK) return hx_api_fail(res, "xattn_context_synchronize", st);
    res->seconds += hx_now() - t0;
    return 0;
}

/* Host memory whose last byte sits (to f32 alignment) just before a
 * PROT_NONE page, wrapped as the buffer: the allocator's rounding would
 * otherwise hide a kernel reading past the end of its last tensor. */
static int guarded_wrap(xattn_context *ctx, hx_buf *b, hx_result *res)
{
    enum { ALIGN = 4 }; /* the widest element; f32 loads stay aligned */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = (b->bytes + ALIGN - 1) / ALIGN * ALIGN;
    size_t data_pages = (bytes + page - 1) / page;
    b->map_bytes = (data_pages + 1) * page;
    void *map = mmap(NULL, b->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (map == MAP_FAILED) {
        hx_result_fail(res, "harness: cannot map %zu bytes", b->map_bytes);
        return 1;
    }
    b->map = map;
    unsigned char *guard = (unsigned char *)map + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0) {
        hx_result_fail(res, "harness: cannot protect the guard page");
        return 1;
    }
    xattn_status st = xattn_buffer_wrap(ctx, guard - bytes, b->bytes, &b->dev);
    if (st != XATTN_OK) return hx_api_fail(res, "xattn_buffer_wrap", st);
    return 0;
}

int hx_buf_alloc(xattn_context *ctx, hx_buf *b, size_t bytes, hx_result *res)
{
    memset(b, 0, sizeof *b);
    /* A poisoned guard after the last tensor: a write past the end shows as
     * a stray byte, a read past it as NaN. Host memory gets a guard page
     * instead, which also catches reads whose lanes are thrown away. */
    const int host_visible = !strcmp(xattn_context_backend_name(ctx), "cpu");
    if (!host_visible) bytes += HX_GUARD_BYTES;
    b->host = malloc(bytes);
    if (!b->host) {
        hx_result_fail(res, "harness: out of host memory (%zu bytes)", bytes);
        return 1;
    }
    memset(b->host, HX_POISON, bytes);
    b->bytes = bytes;
    if (host_visible) return guarded_wrap(ctx, b, res);
    xattn_status st = xattn_buffer_alloc(ctx, bytes, &b->dev);
    if (st != XATTN_OK) return hx_api_fail(res, "xattn_buffer_alloc", st);
    return 0;
}

void hx_buf_free(hx_buf *b)
{
    xattn_buffer_free(&b->dev);
    if (b->map) munmap(b->map, b->map_bytes);
    b->map = NULL;
    free(b->host);
    b->host = NULL;
}

int hx_buf_upload(hx_buf *b, hx_result *res)
{
    xattn_status st = xattn_buffer_write(b->dev, 0, b->host, b->bytes);
    return st != XATTN_OK ? hx_api_fail(res, "xattn_buffer_write", st) : 0;
}

int hx_buf_download(hx_buf *b, hx_result *res)
{
    xattn_status st = xattn_buffer_read(b->dev, 0, b->host, b->bytes);
    return st != XATTN_OK ? hx_api_fail(res, "xattn_buffer_read", st) : 0;
}

int hx_buf_check_unchanged(hx_buf *b, const char *what, hx_result *res)
{
    unsigned char *now = malloc(b->bytes);
    if (!now) {
        hx_result_fail(res, "harness: out of host memory (%zu bytes)", b->bytes);
        return 1;
    }
    xattn_status st = xattn_buffer_read(b->dev, 0, now, b->bytes);
    if (st != XATTN_OK) {
        free(now);
        return hx_api_fail(res, "xattn_buffer_read", st);
    }
    for (size_t i = 0; i < b->bytes; i++) {
        if (now[i] != b->host[i]) {
            hx_result_fail(res, "%s: input buffer modified at byte %zu", what, i);
            free(now);
            return 1;
        }
    }
    free(now);
    return 0;
}

int64_t hx_buf_first_stray(const hx_buf *b, const unsigned char *mask)
{
    for (size_t i = 0; i < b->bytes; i++)
        if (!mask[i] && b->host[i] != HX_POISON) return (int64_t)i;
    return -1;
}

/* ---- layouts ---------------------------------------------------------------- */

/* Q, O or contiguous K/V: uniform [B, S, H, D] or ragged [total, H, D]. */
size_t hx_seq_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, xattn_dtype dt, int uniform,
                         int64_t b, int64_t s, int64_t total, int64_t h, int64_t d)
{
    const size_t es = hx_dtype_size(dt);
    int64_t sh, st, sb;
    size_t offset = 0;
    switch (mem) {
    case HX_MEM_PADDED:
        sh = d + 8, st = h * sh + 16, sb = s * st + 32, offset = 256;
        break;
    case HX_MEM_ODD:
        sh = d + 3, st = h * sh + 5, sb = s * st + 7, offset = 3 * es;
        break;
    case HX_MEM_HEAD_MAJOR:
        st = d, sh = (uniform ? (s > 0 ? s : 1) : (total > 0 ? total : 1)) * d, sb = h * sh;
        break;
    default:
        sh = d, st = h * d, sb = s * st;
        break;
    }
    if (uniform) {
        const int64_t shape[4] = {b, s, h, d}, stride[4] = {sb, st, sh, 1};
        return hx_tensor_init(t, buf, offset, dt, 4, shape, stride);
    }
    const int64_t shape[3] = {total, h, d}, stride[3] = {st, sh, 1};
    return hx_tensor_init(t, buf, offset, dt, 3, shape, stride);
}

/* LSE [h, n] f32. ODD and PACKED keep it transposed, as FlashInfer does
 * ([n, h] in memory: innermost stride h, ODD with a gap per token and an
 * odd offset); the others head-major, PADDED with a gap per head. */
size_t hx_lse_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, int64_t h, int64_t n)
{
    const int64_t shape[2] = {h, n};
    int64_t stride[2] = {n, 1};
    size_t offset = 0;
    switch (mem) {
    case HX_MEM_PADDED:
        stride[0] = n + 5, offset = 256;
        break;
    case HX_MEM_ODD:
        stride[0] = 1, stride[1] = h + 3, offset = 4;
        break;
    case HX_MEM_PACKED:
        stride[0] = 1, stride[1] = h;
        break;
    default:
        break;
    }
    return hx_tensor_init(t, buf, offset, XATTN_F32, 2, shape, stride);
}

/* Q, K and V as slices of one [rows, Hq + 2·Hkv, D] tensor. */
size_t hx_packed_tensor(hx_tensor *t, hx_buf *buf, xattn_dtype dt, int uniform, int64_t b,
                            int64_t s, int64_t total, int64_t h, int64_t d, int64_t width,
                            int64_t head0)
{
    const size_t offset = (size_t)(head0 * d) * hx_dtype_size(dt);
    const int64_t st = width * d;
    if (uniform) {
        const int64_t shape[4] = {b, s, h, d}, stride[4] = {s * st, st, d, 1};
        return hx_tensor_init(t, buf, offset, dt, 4, shape, stride);
    }
    const int64_t shape[3] = {total, h, d}, stride[3] = {st, d, 1};
    return hx_tensor_init(t, buf, offset, dt, 3, shape, stride);
}

/* A paged cache [pages, page_size, H, D]. PACKED puts K and V of a page
 * side by side in one buffer; which selects the V half. */
size_t hx_page_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, xattn_dtype dt, int64_t pages,
                          int64_t ps, int64_t h, int64_t d, int which)
{
    const size_t es = hx_dtype_size(dt);
    int64_t sh, st, sp;
    size_t offset = 0;
    switch (mem) {
    case HX_MEM_PADDED:
        sh = d + 8, st = h * sh + 16, sp = ps * st + 32, offset = 256;
        break;
    case HX_MEM_ODD:
        sh = d + 3, st = h * sh + 5, sp = ps * st + 7, offset = 3 * es;
        break;
    case HX_MEM_HEAD_MAJOR:
        st = d, sh = ps * d, sp = h * ps * d;
        break;
    case HX_MEM_PACKED:
        sh = d, st = h * d, sp = 2 * ps * h * d, offset = which ? (size_t)(ps * h * d) * es : 0;
        break;
    default:
        sh = d, st = h * d, sp = ps * h * d;
        break;
    }
    const int64_t shape[4] = {pages, ps, h, d}, stride[4] = {sp, st, sh, 1};
    return hx_tensor_init(t, buf, offset, dt, 4, shape, stride);
}

/* ---- comparisons ------------------------------------------------------------ */

/* Spacing of the output format's subnormals: the finest step it can
 * represent near zero. */
static double subnormal_step(xattn_dtype dt)
{
    switch (dt) {
    case XATTN_F16: return ldexp(1.0, -24);
    case XATTN_BF16: return ldexp(1.0, -133);
    default: return ldexp(1.0, -149);
    }
}

/* Equal infinities, or NaN against NaN. */
static int same_nonfinite(double a, double b) { return a == b || (isnan(a) && isnan(b)); }

int hx_is_poison(const void *p, xattn_dtype dt)
{
    /* An f16 NaN that a backend computed may be all ones too (PoCL's
     * vstore_half stores NaN as 0xffff): undecidable, so not claimed.
     * Unwritten f16 elements still fail where a finite value is due, and
     * the f32 and bf16 cases run the same kernels. */
    if (dt == XATTN_F16) return 0;
    const unsigned char *b = p;
    for (size_t i = 0; i < hx_dtype_size(dt); i++)
        if (b[i] != HX_POISON) return 0;
    return 1;
}

void hx_compare(const double *got, const double *ref, int64_t n, int64_t row, xattn_dtype dt,
                hx_cmp *out)
{
    const double step = subnormal_step(dt);
    double err = 0.0, norm = 0.0, row_err = 0.0, row_norm = 0.0;
    out->max_abs = 0.0;
    out->worst = -1;
    out->first_nonfinite = -1;
    out->worst_row_nmse = 0.0;
    out->worst_row = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) {
            if (!same_nonfinite(got[i], ref[i]) && out->first_nonfinite < 0)
                out->first_nonfinite = i;
        } else {
            double d = got[i] - ref[i];
            err += d * d;
            norm += ref[i] * ref[i];
            /* A row of tiny values (e.g. a sink taking nearly all the
             * probability) lands in the format's subnormals, where one step
             * is a large relative error; that rounding is not the kernel's. */
            double dr = fabs(d) > step ? fabs(d) - step : 0.0;
            row_err += dr * dr;
            row_norm += ref[i] * ref[i];
            if (fabs(d) > out->max_abs || out->worst < 0) {
                out->max_abs = fabs(d);
                out->worst = i;
            }
        }
        if ((i + 1) % row == 0) {
            double r = row_norm > 0.0 ? row_err / row_norm : row_err > 0.0 ? INFINITY : 0.0;
            if (r > out->worst_row_nmse) {
                out->worst_row_nmse = r;
                out->worst_row = i / row;
            }
            row_err = row_norm = 0.0;
        }
    }
    if (out->first_nonfinite >= 0) out->nmse = NAN;
    else if (norm > 0.0) out->nmse = err / norm;
    else out->nmse = err > 0.0 ? INFINITY : 0.0;
}

void hx_compare_lse(const double *got, const double *ref, int64_t n, hx_lse_cmp *out)
{
    out->max_abs = 0.0;
    out->worst = -1;
    out->first_mismatch = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) {
            if (!same_nonfinite(got[i], ref[i]) && out->first_mismatch < 0)
                out->first_mismatch = i;
            continue;
        }
        double d = fabs(got[i] - ref[i]);
        if (d > out->max_abs || out->worst < 0) {
            out->max_abs = d;
            out->worst = i;
        }
    }
    if (out->first_mismatch >= 0) out->max_abs = INFINITY;
}

double hx_tol_nmse(xattn_dtype dt)
{
    switch (dt) {
    case XATTN_F32: return 1e-10;
    case XATTN_F16: return 1e-6;
    case XATTN_BF16: return 4e-5;
    default: return 0.0;
    }
}

double hx_tol_lse(xattn_dtype dt) { return dt == XATTN_F32 ? 1e-4 : 2e-3; }

/* ---- results ------------------------------------------------------------------ */

void hx_result_fail(hx_result *res, const char *fmt, ...)
{
    if (res->status == HX_FAIL) return; /* keep the first reason */
    res->status = HX_FAIL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof res->message, fmt, ap);
    va_end(ap);
}

int hx_api_fail(hx_result *res, const char *what, xattn_status st)
{
    const char *detail = xattn_last_error();
    hx_result_fail(res, "%s: %s%s%s", what, xattn_status_string(st),
                   detail && *detail ? ": " : "", detail ? detail : "");
    return 1;
}

double hx_now(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
