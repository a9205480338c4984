#pragma once
/* Conformance harness internals (xattn check). Never installed; the hx_
 * prefix marks harness-only code. The harness uses only the public API, so
 * the same code checks every backend. */
#include <stddef.h>
#include <stdint.h>

#include "xattn.h"

/* ---- random numbers: xoshiro256**, seeded through splitmix64 ---------- */

typedef struct hx_rng {
    uint64_t s[4];
} hx_rng;

void hx_rng_seed(hx_rng *r, uint64_t seed);
uint64_t hx_rng_next(hx_rng *r);
double hx_rng_uniform(hx_rng *r);            /* [0, 1) */
double hx_rng_normal(hx_rng *r);             /* N(0, 1) */
int64_t hx_rng_below(hx_rng *r, int64_t n);  /* [0, n), n ≥ 1 */
void hx_rng_shuffle(hx_rng *r, int32_t *a, int64_t n);
uint64_t hx_hash(const char *s);             /* FNV-1a */
uint64_t hx_mix(uint64_t a, uint64_t b);     /* splitmix64 of a ^ b */

/* ---- cases -------------------------------------------------------------- */

#define HX_MAX_BATCH 8
#define HX_NAME_MAX 112

typedef enum hx_kind {
    HX_REF = 0,       /* self-check of the float64 reference, backend-free */
    HX_ATTN = 1,
    HX_KV_APPEND = 2,
    HX_MERGE = 3,
    HX_MOE = 4,
    HX_REF_MOE = 5    /* self-check of the MoE reference, backend-free */
} hx_kind;

/* How operands sit in memory. Every layout is legal under the contract
 * ("arbitrary element strides for token and head"). */
typedef enum hx_mem {
    HX_MEM_CONTIG = 0,  /* row-major, one buffer per tensor */
    HX_MEM_PADDED,      /* gaps after each head, token and batch; 256 B offset */
    HX_MEM_ODD,         /* odd gaps and offsets: nothing is vector-aligned */
    HX_MEM_HEAD_MAJOR,  /* [B, H, S, D] / paged [pages, H, page_size, D] */
    HX_MEM_PACKED       /* Q, K, V slices of one QKV tensor; paged: K and V
                           caches interleaved per page in one buffer */
} hx_mem;

/* Non-finite inputs an attention case plants (hx_attn_case.nonfinite, a
 * mask), each at a fixed place of sequence 0 so that the reference and the
 * backend see the same: the rule they check is the one api/xattn_attn.h
 * states (NaN in, NaN out over the visible keys; nothing else is read). */
enum {
    HX_NF_Q_NAN = 1u << 0,     /* one element of a Q row (middle token, last head) */
    HX_NF_K_NAN = 1u << 1,     /* one element of a K row (middle key, KV head 0) */
    HX_NF_V_NAN = 1u << 2,     /* one element of the last key's V row, KV head 0 */
    HX_NF_K_INF = 1u << 3,     /* +inf in d 0 of a K row: scores ±inf by q's sign */
    HX_NF_UNREAD = 1u << 4,    /* NaN in every K/V row no query may read: keys no
                                  row sees, cache slots no sequence owns */
    HX_NF_SINK_NAN = 1u << 5,  /* sink of head 0 */
    HX_NF_SINK_INF = 1u << 6,  /* +inf sink of the last head */
    HX_NF_SLOPE_NAN = 1u << 7, /* ALiBi slope of head 0 */
    HX_NF_SLOPE_INF = 1u << 8  /* +inf slope of the last head (inf·0 at the diagonal) */
};

typedef struct hx_attn_case {
    xattn_dtype dtype;
    int32_t batch, hq, hkv, dqk, dv;
    xattn_q_layout q_layout;
    xattn_kv_layout kv_layout;
    int32_t sq, sk;                   /* uniform lengths */
    int32_t sq_list[HX_MAX_BATCH];    /* ragged Q lengths */
    int32_t sk_list[HX_MAX_BATCH];    /* ragged or paged K lengths */
    int32_t page_size;
    uint32_t flags;                   /* XATTN_ATTN_*; LSE added unless no_lse */
    int32_t window_left, window_right;
    float scale, softcap;
    hx_mem mem;
    double qk_std;                    /* std of Q and K entries */
    int no_lse;
    int reuse;                        /* run the plan again on a second batch */
    int32_t bound_extra;              /* plan bounds exceed the batch by this */
    uint32_t nonfinite;               /* HX_NF_* planted in the inputs */
} hx_attn_case;

typedef struct hx_kv_case {
    xattn_dtype dtype;
    int32_t n, hkv, dqk, dv, page_size, num_pages;
    int32_t skip_every;               /* every k-th slot is −1 (0: none) */
    hx_mem mem;
} hx_kv_case;

typedef enum hx_lse_mode {
    HX_LSE_NORMAL = 0,   /* moderate finite LSE values */
    HX_LSE_NEG_INF,      /* some −inf in a, in b, and in both */
    HX_LSE_LARGE,        /* |LSE| in the hundreds: e^LSE overflows fp32 */
    HX_LSE_NONFINITE     /* NaN and +inf LSE on either side, −inf beside NaN
                            O elements (not read), NaN O elements that count */
} hx_lse_mode;

typedef struct hx_merge_case {
    xattn_dtype dtype;
    int32_t n, heads, dim;
    hx_lse_mode lse_mode;
    int in_place;
    hx_mem mem;
} hx_merge_case;

/* The MoE call a case checks. */
typedef enum hx_moe_op {
    HX_MOE_ROUTE = 0,
    HX_MOE_DISPATCH,
    HX_MOE_EXPERTS,
    HX_MOE_COMBINE,
    HX_MOE_FORWARD
} hx_moe_op;

/* Non-finite inputs of a MoE case (api/xattn_moe.h says what they do). */
typedef enum hx_nonfinite {
    HX_FINITE = 0,
    HX_NONFINITE_LOGITS, /* route, forward: NaN, +inf or −inf in some tokens' logits,
                            every logit NaN in some */
    HX_NONFINITE_BIAS,   /* route, forward: a NaN entry in the route bias */
    HX_NONFINITE_X,      /* experts: a NaN in some real rows of x_perm */
} hx_nonfinite;

typedef struct hx_moe_case {
    hx_moe_op op;
    xattn_moe_desc desc;              /* the plan; max_tokens 0: the run's T (at least
                                         1, a few more when strided) */
    int32_t tokens;                   /* T of the run */
    int ties;                         /* logits (and bias) with deliberate exact ties */
    int32_t drop_every;               /* every n-th (token, slot) id is −1, and so is
                                         every slot of token 1 (0: none dropped) */
    int accumulate;                   /* combine, forward: out += result */
    int strided;                      /* row strides with gaps, odd offsets, a non-zero
                                         workspace offset, spare permuted rows */
    hx_nonfinite nonfinite;           /* NaN and infinities in some inputs */
} hx_moe_case;

typedef struct hx_case {
    char name[HX_NAME_MAX];
    hx_kind kind;
    hx_attn_case attn;
    hx_kv_case kv;
    hx_merge_case merge;
    hx_moe_case moe;
    int ref_test;                     /* HX_REF, HX_REF_MOE: which self-check */
    double cost;                      /* reference multiply-adds, for budgets */
} hx_case;

typedef struct hx_catalogue {
    hx_case *cases;
    size_t count, cap;
} hx_catalogue;

/* Build the catalogue. Returns 0, or −1 (message on stderr) on a bug in it
 * (duplicate names) or out of memory. */
int hx_catalogue_build(hx_catalogue *cat);
void hx_catalogue_free(hx_catalogue *cat);

/* ---- results ------------------------------------------------------------ */

typedef enum hx_status { HX_PASS = 0, HX_FAIL = 1, HX_SKIP = 2 } hx_status;

typedef struct hx_result {
    hx_status status;
    double nmse;        /* NAN: not measured */
    double lse_err;     /* NAN: not measured */
    double seconds;     /* backend time (plan + run), for -v */
    double ref_seconds;
    char message[1024]; /* why it failed; -v detail when it passed */
} hx_result;

/* Tolerances of docs/testing.md for a dtype. */
double hx_tol_nmse(xattn_dtype dt);
double hx_tol_lse(xattn_dtype dt);

void hx_result_fail(hx_result *res, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Record a failed API call: "what: STATUS: xattn_last_error()". Returns 1. */
int hx_api_fail(hx_result *res, const char *what, xattn_status st);

/* Run one case on a context (kind ≠ HX_REF); inputs from seed. */
void hx_run_attn(xattn_context *ctx, const hx_case *c, uint64_t seed, int verbose,
                 hx_result *res);
void hx_run_kv_append(xattn_context *ctx, const hx_case *c, uint64_t seed,
                      hx_result *res);
void hx_run_merge(xattn_context *ctx, const hx_case *c, uint64_t seed,
                  hx_result *res);
void hx_run_moe(xattn_context *ctx, const hx_case *c, uint64_t seed, int verbose,
                hx_result *res);
/* Self-checks of the reference against identities (HX_REF, HX_REF_MOE). */
void hx_run_ref_test(const hx_case *c, uint64_t seed, hx_result *res);
void hx_run_ref_moe_test(const hx_case *c, uint64_t seed, hx_result *res);
/* Names of the reference self-checks, NULL-terminated. */
extern const char *const hx_ref_test_names[];
extern const char *const hx_ref_moe_test_names[];

/* ---- host images of device tensors --------------------------------------- */

/* One device buffer and a host copy of all of its bytes. */
typedef struct hx_buf {
    xattn_buffer *dev;
    unsigned char *host;
    size_t bytes;
    void *map;        /* host-visible backends: the mapping the buffer wraps */
    size_t map_bytes;
} hx_buf;

/* A tensor view: what the API sees, plus which image it lives in. */
typedef struct hx_tensor {
    hx_buf *buf;
    size_t offset;       /* bytes */
    xattn_dtype dtype;
    int32_t rank;
    int64_t shape[XATTN_MAX_RANK];
    int64_t stride[XATTN_MAX_RANK];
} hx_tensor;

/* Poisoned bytes after the end of every buffer. */
#define HX_GUARD_BYTES 256

/* Poison byte: 0xff.. is a NaN in f32, f16 and bf16 and −1 in i32. */
#define HX_POISON 0xff

size_t hx_dtype_size(xattn_dtype dt);
/* Round v to dt, store it at p, return the stored value. */
double hx_store(void *p, xattn_dtype dt, double v);
double hx_load(const void *p, xattn_dtype dt);
/* Round to dt without storing. */
double hx_round(xattn_dtype dt, double v);

/* Set up a view; strides in elements. Returns the bytes the buffer needs. */
size_t hx_tensor_init(hx_tensor *t, hx_buf *buf, size_t offset, xattn_dtype dt,
                      int32_t rank, const int64_t *shape, const int64_t *stride);
/* Address of an element inside the host image. */
void *hx_tensor_at(const hx_tensor *t, const int64_t *idx);
/* The API's view of t. */
xattn_tensor hx_tensor_api(const hx_tensor *t);
/* Mark every byte t covers in mask (1 per byte of the buffer). */
void hx_tensor_mark(const hx_tensor *t, unsigned char *mask);

/* Layouts of docs/attention.md operands under a memory scheme (hx_mem); each returns
 * the bytes its buffer needs.
 * Q, O or contiguous K/V: uniform [b, s, h, d] or ragged [total, h, d]. */
size_t hx_seq_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, xattn_dtype dt, int uniform,
                     int64_t b, int64_t s, int64_t total, int64_t h, int64_t d);
/* LSE [h, n] f32: head-major, or transposed ([n, h] in memory, as FlashInfer
 * keeps it) under ODD and PACKED. */
size_t hx_lse_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, int64_t h, int64_t n);
/* Heads head0 .. head0 + h − 1 of a [rows, width, d] tensor (packed QKV). */
size_t hx_packed_tensor(hx_tensor *t, hx_buf *buf, xattn_dtype dt, int uniform, int64_t b,
                        int64_t s, int64_t total, int64_t h, int64_t d, int64_t width,
                        int64_t head0);
/* A paged cache [pages, page_size, h, d]; with HX_MEM_PACKED, K (which = 0)
 * and V (which = 1) of a page sit side by side in one buffer. */
size_t hx_page_tensor(hx_tensor *t, hx_buf *buf, hx_mem mem, xattn_dtype dt, int64_t pages,
                      int64_t ps, int64_t h, int64_t d, int which);

/* After a launch returned st: fail res naming call, else synchronise and add
 * the seconds since t0 to res. Returns 1 on failure. */
int hx_complete(xattn_context *ctx, xattn_status st, const char *call, double t0,
                hx_result *res);

/* Allocate bytes (plus a guard) of device buffer and a host image poisoned
 * with HX_POISON. On the cpu backend the buffer is host memory that ends
 * against an inaccessible page, so a read or write past it faults. */
int hx_buf_alloc(xattn_context *ctx, hx_buf *b, size_t bytes, hx_result *res);
void hx_buf_free(hx_buf *b);
int hx_buf_upload(hx_buf *b, hx_result *res);
int hx_buf_download(hx_buf *b, hx_result *res);

/* Read b back and fail res if it differs from the host image (an input the
 * backend wrote to). Returns 1 on failure. */
int hx_buf_check_unchanged(hx_buf *b, const char *what, hx_result *res);

/* Bytes of b outside every view marked in mask that are no longer the
 * poison: writes outside an output tensor. Returns the first such offset or
 * −1. */
int64_t hx_buf_first_stray(const hx_buf *b, const unsigned char *mask);

/* Compare got to ref (n values in rows of `row`, stored as dt): NMSE =
 * Σ(a−r)²/Σr² over all of it and per row (per row, differences within one
 * subnormal step of dt are not counted), the largest |a−r|, and the first
 * place where one is NaN/Inf and the other is not the same value (NaN
 * matches NaN). */
typedef struct hx_cmp {
    double nmse;             /* NAN when a non-finite mismatch was found */
    double max_abs;
    int64_t worst;           /* index of the largest |a−r| */
    int64_t first_nonfinite; /* −1: none */
    double worst_row_nmse;   /* largest NMSE of one row */
    int64_t worst_row;
} hx_cmp;
void hx_compare(const double *got, const double *ref, int64_t n, int64_t row, xattn_dtype dt,
                hx_cmp *out);

/* A row (one query token and head) may be this many times the tensor's NMSE
 * bound: loose enough for rounding noise in short rows, tight enough that
 * one wrong row cannot hide in a large tensor. */
#define HX_ROW_FACTOR 1000.0

/* 1 if the element at p (of dt) still holds the HX_POISON bytes: a NaN the
 * backend never wrote, as opposed to one it computed. Always 0 for f16,
 * where a computed NaN may have the same bytes. */
int hx_is_poison(const void *p, xattn_dtype dt);

/* Max |a−r| over LSE values; non-finite must match exactly (−inf rows). */
typedef struct hx_lse_cmp {
    double max_abs;
    int64_t worst;
    int64_t first_mismatch; /* −1: none; a non-finite that does not match */
} hx_lse_cmp;
void hx_compare_lse(const double *got, const double *ref, int64_t n, hx_lse_cmp *out);

double hx_now(void);
