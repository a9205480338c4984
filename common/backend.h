#pragma once
/* The one door between the front end and a backend: a const vtable.
 * The table is append-only; a module whose abi_version differs from
 * XATTN_BACKEND_ABI_VERSION is rejected by the loader. */
#include <stdatomic.h>
#include <stdint.h>

#include "plan.h"
#include "plan_moe.h"
#include "xattn_attn.h"
#include "xattn_moe.h"

#define XATTN_BACKEND_ABI_VERSION 6u
#define XATTN_BACKEND_ENTRY_SYMBOL "xattn_backend_entry"

typedef struct xattn_device xattn_device; /* backend-defined */

/* A validated operand: native buffer handle + byte offset. */
typedef struct xattn_ref {
    void *native;   /* NULL when the operand is absent */
    size_t offset;  /* bytes */
} xattn_ref;

/* Q/K/V/O normalised to (batch-or-page, token, head) element strides. For
 * ragged layouts sb is 0 and rows start at cu_seqlens; for paged K/V, sb is
 * the page stride and st the token-in-page stride. */
typedef struct xattn_attn_operand {
    xattn_ref ref;
    int64_t sb, st, sh;
} xattn_attn_operand;

typedef struct xattn_attn_launch {
    xattn_attn_operand q, k, v, o;
    xattn_ref lse;             /* [Hq, total_q]: element (h, t) at h·lse_sh + t·lse_st */
    int64_t lse_sh, lse_st;
    int64_t total_q;           /* rows of Q (B·Sq when uniform) */
    int64_t total_k;           /* rows of K and V when ragged, so kernels can bound
                                  cu_seqlens_k contents they cannot trust (ABI 3) */
    xattn_ref cu_seqlens_q;    /* ragged Q */
    xattn_ref cu_seqlens_k;    /* ragged K */
    xattn_ref block_table;     /* paged */
    int64_t block_table_stride;/* elements between rows */
    xattn_ref seqlens_k;       /* paged */
    xattn_ref alibi_slopes;
    xattn_ref sinks;
    xattn_ref workspace;       /* plan.params.workspace_bytes available */
} xattn_attn_launch;

/* kv_append: new rows [n, Hkv, D] → caches [pages, page_size, Hkv, D]. */
typedef struct xattn_kv_append_launch {
    xattn_dtype dtype;
    int64_t n, num_kv_heads, dqk, dv, page_size, num_pages;
    xattn_ref k_new, v_new, slots, k_cache, v_cache;
    int64_t kn_st, kn_sh, vn_st, vn_sh;          /* new rows */
    int64_t kc_sp, kc_st, kc_sh, vc_sp, vc_st, vc_sh; /* caches */
} xattn_kv_append_launch;

/* merge_states: O [N, H, D] with token/head strides, LSE [H, N]. */
typedef struct xattn_merge_launch {
    xattn_dtype dtype;
    int64_t n, heads, dim;
    xattn_ref o_a, o_b, o, lse_a, lse_b, lse;
    int64_t oa_st, oa_sh, ob_st, ob_sh, o_st, o_sh;
    int64_t la_sh, la_st, lb_sh, lb_st, l_sh, l_st;
} xattn_merge_launch;

/* The four MoE primitives; xattn_moe_forward runs them in this order. */
typedef enum xattn_moe_op {
    XATTN_MOE_OP_ROUTE = 0,
    XATTN_MOE_OP_DISPATCH = 1,
    XATTN_MOE_OP_EXPERTS = 2,
    XATTN_MOE_OP_COMBINE = 3
} xattn_moe_op;

/* One MoE call, validated. Operands the op does not use are absent
 * (native == NULL): so topk_weights in dispatch means "scale the rows"
 * (XATTN_MOE_WEIGHTS_ON_INPUT) and its absence in combine "sum them
 * unweighted"; b1 and b2 are present exactly when the plan's flags ask.
 * Row strides are in elements; the innermost is 1.
 * Index contents are trusted: topk_ids in [-1, E), token_row in [-1, rows),
 * expert_offsets monotonic, aligned, ending at most at rows. */
typedef struct xattn_moe_launch {
    int64_t tokens;            /* T of this call, ≥ 1 (0 for experts, which sees rows) */
    int64_t rows;              /* R: rows of x_perm, row_token and y */
    xattn_ref logits, bias, topk_ids, topk_weights, x, expert_offsets;
    xattn_ref x_perm, row_token, token_row, w1, w2, y, out;
    int64_t logits_st, ids_st, weights_st, x_st, token_row_st; /* per token */
    int64_t x_perm_st, row_token_st, y_st, out_st;             /* per row / token */
    int64_t offsets_st;        /* between expert_offsets elements */
    int64_t w1_se, w1_sn;      /* W1: per expert, per output row */
    int64_t w2_se, w2_sn;      /* W2: per expert, per output row */
    int32_t accumulate;        /* combine: out += result */
    xattn_ref workspace;       /* plan.params.workspace_bytes available */
    /* ABI 4: expert biases (experts), in desc.bias_dtype. */
    xattn_ref b1, b2;          /* [E, 2I] and [E, H] */
    int64_t b1_se, b2_se;      /* per expert */
} xattn_moe_launch;

/* One ceiling measured on the device (measure_ceilings, ABI 5). */
typedef struct xattn_ceiling {
    double rate;               /* the best repeat: FLOP/s or bytes/s; 0: not measured */
    double median;             /* the median repeat */
    int32_t repeats;
    char method[96];           /* what ran: "copy 256 MiB to 256 MiB, 16-byte loads, ..." */
} xattn_ceiling;

/* The ceilings of a device as its own kernels reach them: other load only
 * ever lowers a rate, so rate is the best repeat. */
typedef struct xattn_ceilings {
    xattn_ceiling bytes_per_s;  /* device-memory copy: bytes read + bytes written */
    xattn_ceiling flops_f32;    /* f32 FMA loop; an FMA counts 2 FLOPs */
    xattn_ceiling flops_matrix; /* matrix-unit loop in matrix_dtype; rate 0: none */
    xattn_dtype matrix_dtype;   /* f16 or bf16 when flops_matrix was measured */
    double seconds;             /* wall time of the whole measurement */
} xattn_ceilings;

struct xattn_plan;
struct xattn_moe_plan;

typedef struct xattn_backend_vtable {
    uint32_t abi_version;      /* XATTN_BACKEND_ABI_VERSION */
    const char *name;          /* "cpu", "opencl", ... */

    /* Devices this backend can open now; 0 with a reason when its runtime
     * or hardware is missing. Never fails, never logs above debug. */
    int32_t (*probe)(char *reason, size_t reason_size);

    /* Open device index (validated < probe()); fill caps. opts->native_queue
     * may carry the caller's stream/queue. */
    xattn_status (*device_open)(int32_t index, const xattn_context_options *opts,
                                xattn_device **out, xattn_device_caps *caps);
    void (*device_close)(xattn_device *dev);
    xattn_status (*synchronize)(xattn_device *dev);

    /* Device memory. Offsets and sizes are validated by the front end. */
    xattn_status (*buffer_alloc)(xattn_device *dev, size_t bytes, void **native);
    void (*buffer_free)(xattn_device *dev, void *native);
    xattn_status (*buffer_write)(xattn_device *dev, void *native, size_t offset,
                                 const void *src, size_t bytes);
    xattn_status (*buffer_read)(xattn_device *dev, const void *native,
                                size_t offset, void *dst, size_t bytes);
    /* optional: if NULL, buffers are not host-visible and the front end
     * skips content checks (sequence lengths, block tables, slots). */
    void *(*buffer_host_ptr)(xattn_device *dev, void *native);

    /* Specialise and compile kernels for a plan; state is freed by
     * attn_release. Called once per plan, before any run. */
    xattn_status (*attn_prepare)(xattn_device *dev, const struct xattn_plan *plan,
                                 void **state);
    void (*attn_release)(xattn_device *dev, void *state);
    /* Launch only: no allocation, no compilation, no host sync. */
    xattn_status (*attn_run)(xattn_device *dev, const struct xattn_plan *plan,
                             const void *state, const xattn_attn_launch *launch);
    xattn_status (*kv_append)(xattn_device *dev, const xattn_kv_append_launch *l);
    xattn_status (*merge_states)(xattn_device *dev, const xattn_merge_launch *l);

    /* ---- ABI 2: MoE ---- */
    /* Specialise and compile the MoE kernels of a plan; freed by
     * moe_release. NULL: the backend has no MoE (plans are UNSUPPORTED). */
    xattn_status (*moe_prepare)(xattn_device *dev, const struct xattn_moe_plan *plan,
                                void **state);
    void (*moe_release)(xattn_device *dev, void *state);
    /* Launch one primitive: no allocation, no compilation, no host sync. */
    xattn_status (*moe_run)(xattn_device *dev, const struct xattn_moe_plan *plan,
                            const void *state, xattn_moe_op op, const xattn_moe_launch *l);

    /* ---- ABI 5: device ceilings ---- */
    /* Measure the device's copy bandwidth and FLOP rates with kernels written
     * to reach them, for `xattn bench` (never called from a run path): it
     * allocates and compiles, waits for the queue, and takes about a second
     * on a GPU. Fills *out (zeroed first). NULL: the backend has none (the
     * cpu backend; the tool measures the host itself). */
    xattn_status (*measure_ceilings)(xattn_device *dev, xattn_ceilings *out);
} xattn_backend_vtable;

typedef const xattn_backend_vtable *(*xattn_backend_entry_fn)(void);

struct xattn_context {
    /* The caller's handle plus one per live buffer and plan (context.h). */
    atomic_size_t refs;
    const xattn_backend_vtable *vt;
    xattn_backend_kind kind;
    xattn_device *dev;
    xattn_device_caps caps;
    int32_t device_index;
    int32_t num_threads;
};

struct xattn_buffer {
    xattn_context *ctx; /* holds a reference */
    void *native;
    void *host;      /* host-visible address, or NULL */
    size_t size;
    int owned;       /* 1: allocated by xattn, freed with the buffer */
};

struct xattn_plan {
    xattn_context *ctx; /* holds a reference */
    xattn_attn_problem prob;
    xattn_attn_plan_params params;
    void *state;     /* backend's, from attn_prepare */
};

struct xattn_moe_plan {
    xattn_context *ctx; /* holds a reference */
    xattn_moe_problem prob;
    xattn_moe_plan_params params;
    void *state;     /* backend's, from moe_prepare */
};

/* The built-in CPU backend. */
const xattn_backend_vtable *xattn_cpu_backend_entry(void);
