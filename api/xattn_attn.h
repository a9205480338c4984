/*
 * xattn — fused attention: plans, run, kv_append, merge_states.
 *
 * Semantics (in full in docs/attention.md): s = scale·q·k, optional soft
 * cap c·tanh(s/c), optional ALiBi s -= m_h·|i + Sk − Sq − j|; query row i
 * of a sequence sees key j iff i + Sk − Sq − wl ≤ j ≤ i + Sk − Sq + wr
 * (bottom-right aligned);
 * optional per-head sink logits join the softmax denominator only.
 * O = Σ p_j v_j, LSE = log Σ exp(s_j) (natural log, sink included). A row
 * that sees no key gets O = 0 and LSE = −inf. Accumulation is fp32; f32
 * inputs use IEEE fp32 arithmetic throughout.
 *
 * Non-finite inputs. A row's result is what the formulas give in IEEE
 * arithmetic over its visible keys only: a key outside the row's mask,
 * window or sequence does not affect it, whatever it holds (keys no row of
 * the call sees, cache slots no sequence owns and unused block-table
 * columns are not read at all). Over the visible keys, NaN in is NaN out:
 *  - a NaN score (NaN in the Q row or in a visible K row, a NaN ALiBi slope,
 *    an infinite slope times the distance 0 at the diagonal) makes the
 *    row's O and LSE NaN; so does a +inf score (the softmax would compute
 *    inf − inf) and a NaN or +inf sink;
 *  - a −inf score is a key of weight 0; a row whose visible scores are all
 *    −inf is one that sees no key (O = 0, LSE = −inf, no V row used);
 *  - every visible key multiplies its V row, even at weight 0, so a NaN in
 *    element d of a visible V row makes element d of the row's O NaN
 *    (0·NaN = NaN, as softmax(QKᵀ)·V gives in PyTorch); the other elements
 *    are unaffected;
 *  - with a soft cap, s is capped first: c·tanh(±inf/c) = ±c is finite.
 * A row that sees no key gets O = 0 and LSE = −inf whatever its sink.
 */
#ifndef XATTN_ATTN_H
#define XATTN_ATTN_H

#include "xattn_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Alignment of xattn_attn_args.workspace_offset, in bytes. */
#define XATTN_WORKSPACE_ALIGN 256

/* How K and V are laid out. */
typedef enum xattn_kv_layout {
    XATTN_KV_UNIFORM = 0, /* K [B, Sk, Hkv, Dqk], V [B, Sk, Hkv, Dv] */
    XATTN_KV_RAGGED = 1,  /* K [total_k, Hkv, Dqk] + cu_seqlens_k[B+1] */
    XATTN_KV_PAGED = 2    /* K [num_pages, page_size, Hkv, Dqk] + block_table
                             [B, max_pages_per_seq] + seqlens_k[B] */
} xattn_kv_layout;

/* How Q and O are laid out. */
typedef enum xattn_q_layout {
    XATTN_Q_UNIFORM = 0, /* Q [B, Sq, Hq, Dqk], O [B, Sq, Hq, Dv] */
    XATTN_Q_RAGGED = 1   /* Q [total_q, Hq, Dqk] + cu_seqlens_q[B+1] */
} xattn_q_layout;

/* xattn_attn_desc.flags */
#define XATTN_ATTN_CAUSAL (1u << 0) /* window_right = 0 */
#define XATTN_ATTN_WINDOW (1u << 1) /* use window_left / window_right */
#define XATTN_ATTN_ALIBI (1u << 2)  /* args.alibi_slopes [Hq] f32 */
#define XATTN_ATTN_SINKS (1u << 3)  /* args.sinks [Hq] f32 */
#define XATTN_ATTN_LSE (1u << 4)    /* write args.lse [Hq, total_q] f32 */

/* The problem a plan is made for. Zero-initialise, then fill. Uniform
 * layouts must match B, Sq and Sk exactly at run time; for ragged and paged
 * layouts seqlen_q / seqlen_k are bounds, and the plan runs any batch of B
 * sequences within them.
 *
 * Every run takes exactly B sequences (cu_seqlens [B+1], block_table and
 * seqlens_k [B], uniform Q [B, ...]). To run fewer with a plan made for B,
 * pad the batch with empty sequences: a ragged Q gives them no rows (repeat
 * the last cu_seqlens_q entry); a ragged K no keys (repeat the last
 * cu_seqlens_k entry); a paged K seqlens_k = 0. Rows of a uniform Q in a
 * padding sequence then see no key (O = 0, LSE = −inf): ignore them.
 *
 * Paged K/V: sequence b reads only the first ceil(seqlens_k[b] / page_size)
 * entries of block_table row b; the other entries are never read and may
 * hold anything (−1, say). */
typedef struct xattn_attn_desc {
    xattn_dtype dtype;          /* of Q, K, V and O: f32, f16 or bf16 */
    int32_t batch;              /* B ≥ 1, exactly the sequences of a run */
    int32_t num_q_heads;        /* Hq */
    int32_t num_kv_heads;       /* Hkv, Hq % Hkv == 0 */
    int32_t head_dim_qk;        /* Dqk */
    int32_t head_dim_v;         /* Dv */
    xattn_q_layout q_layout;
    xattn_kv_layout kv_layout;
    int32_t seqlen_q;           /* uniform: Sq; ragged: max over the batch */
    int32_t seqlen_k;           /* uniform: Sk; otherwise max over the batch */
    int32_t page_size;          /* paged: tokens per page, any value ≥ 1 */
    int32_t num_pages;          /* paged: pages in the caches */
    int32_t max_pages_per_seq;  /* paged: columns of block_table */
    uint32_t flags;             /* XATTN_ATTN_* */
    int32_t window_left;        /* with XATTN_ATTN_WINDOW: ≥ 0, or −1 unbounded */
    int32_t window_right;       /* with XATTN_ATTN_WINDOW: ≥ 0, or −1 unbounded */
    float scale;                /* 0: 1/sqrt(Dqk) */
    float softcap;              /* 0: none; > 0: s = c·tanh(s/c) */
} xattn_attn_desc;

/* Tensors for one run. Absent optional tensors have buffer == NULL. Every
 * tensor accepts arbitrary element strides for token and head; the innermost
 * stride is 1, except for lse, which takes any strides: an LSE kept as
 * [total_q, Hq] in memory (FlashInfer's layout) is the [Hq, total_q] view
 * with strides (1, Hq). Strides are positive and no two elements of one
 * tensor share an address. */
typedef struct xattn_attn_args {
    xattn_tensor q, k, v, o;
    xattn_tensor lse;           /* [Hq, total_q] f32, any strides, with
                                   XATTN_ATTN_LSE */
    xattn_tensor cu_seqlens_q;  /* [B+1] i32, with XATTN_Q_RAGGED */
    xattn_tensor cu_seqlens_k;  /* [B+1] i32, with XATTN_KV_RAGGED */
    xattn_tensor block_table;   /* [B, max_pages_per_seq] i32, paged */
    xattn_tensor seqlens_k;     /* [B] i32, paged */
    xattn_tensor alibi_slopes;  /* [Hq] f32, with XATTN_ATTN_ALIBI */
    xattn_tensor sinks;         /* [Hq] f32, with XATTN_ATTN_SINKS */
    xattn_buffer *workspace;    /* ≥ xattn_plan_workspace_size bytes; may be
                                   given (and is unused) when that is 0. Runs
                                   in flight at once need disjoint workspaces. */
    size_t workspace_offset;    /* bytes, a multiple of XATTN_WORKSPACE_ALIGN */
} xattn_attn_args;

typedef struct xattn_plan xattn_plan;

/* Plan an attention problem for the context's device: validates desc,
 * chooses the kernel style and tiles, specialises and compiles kernels.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (a field breaks a rule; the message
 * names it), XATTN_ERR_UNSUPPORTED (head dims or dtype the backend lacks),
 * XATTN_ERR_OUT_OF_MEMORY, XATTN_ERR_COMPILE, XATTN_ERR_INVALID_ENV (a
 * backend setting such as XATTN_CPU_ISA has a bad value).
 * Thread-safety: safe. */
XATTN_API xattn_status xattn_plan_create(xattn_context *ctx,
                                         const xattn_attn_desc *desc,
                                         xattn_plan **out);

/* Workspace bytes xattn_attn_run needs (may be 0; also 0 for a NULL plan).
 * Errors: none. Thread-safety: safe. */
XATTN_API size_t xattn_plan_workspace_size(const xattn_plan *plan);

/* Human-readable plan into buf (always NUL-terminated when size > 0);
 * *needed, if not NULL, receives the full length.
 * Errors: XATTN_ERR_INVALID_ARGUMENT. Thread-safety: safe. */
XATTN_API xattn_status xattn_plan_describe(const xattn_plan *plan, char *buf,
                                           size_t size, size_t *needed);

/* Destroy a plan and drop its reference to the context, which this may
 * close (see xattn_context_destroy). Accepts NULL. Thread-safety: not
 * concurrently with a run of the same plan. */
XATTN_API void xattn_plan_destroy(xattn_plan **plan);

/* Run attention. Launch-only: no allocation, no compilation; on GPU
 * backends it is asynchronous on the context's queue. Inputs are checked
 * against the plan first; sequence lengths and block tables are checked
 * when their memory is host-visible.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (shapes, dtypes, strides, overlaps,
 * cu_seqlens not monotonic, block-table entry out of range, ...),
 * XATTN_ERR_WORKSPACE_TOO_SMALL, XATTN_ERR_DEVICE.
 * Thread-safety: a plan may be run concurrently from several threads, each
 * run with its own workspace (or disjoint workspace_offset ranges). */
XATTN_API xattn_status xattn_attn_run(const xattn_plan *plan,
                                      const xattn_attn_args *args);

/* Write new rows into paged caches: k_new [n, Hkv, Dqk] and v_new
 * [n, Hkv, Dv] go to token slot[t] = page·page_size + offset of
 * k_cache/v_cache [num_pages, page_size, Hkv, D]; slot −1 skips the token.
 * Dtypes of new rows and caches match; slots are i32 [n].
 * Errors: XATTN_ERR_INVALID_ARGUMENT (shapes, dtypes; a slot out of range
 * or given to two tokens, when host-visible), XATTN_ERR_OUT_OF_MEMORY (only
 * to check more than 1024 host-visible slots for repeats: up to that
 * kv_append allocates nothing), XATTN_ERR_UNSUPPORTED (dtype on this
 * backend), XATTN_ERR_DEVICE.
 * Thread-safety: safe on distinct caches. */
XATTN_API xattn_status xattn_kv_append(xattn_context *ctx,
                                       const xattn_tensor *k_new,
                                       const xattn_tensor *v_new,
                                       const xattn_tensor *slots,
                                       const xattn_tensor *k_cache,
                                       const xattn_tensor *v_cache);

/* Merge two partial attention results over disjoint key sets:
 * LSE = log(e^LSE_a + e^LSE_b), O = (e^LSE_a O_a + e^LSE_b O_b) / e^LSE.
 * Both LSE −inf (two states over no key) gives O = 0, LSE = −inf. Else a
 * side whose LSE is −inf has weight 0 and its O is not read; a NaN or +inf
 * LSE on either side makes the row's O and LSE NaN (+inf is no state
 * attention produces: it would be the LSE of a +inf score); a NaN element
 * of an O that is read makes that element of O NaN, even where its weight
 * rounds to 0.
 * O tensors [N, H, D] (one float dtype, innermost stride 1, D ≥ 1), LSE
 * tensors [H, N] f32 with any strides ([N, H] in memory is the view with
 * strides (1, H)). o and lse may be the same tensors as o_a and lse_a (in
 * place: the same view, element for element), but must not otherwise
 * overlap an input. Errors: XATTN_ERR_INVALID_ARGUMENT (also D = 0),
 * XATTN_ERR_UNSUPPORTED, XATTN_ERR_DEVICE.
 * Thread-safety: safe. */
XATTN_API xattn_status xattn_merge_states(xattn_context *ctx,
                                          const xattn_tensor *o_a,
                                          const xattn_tensor *lse_a,
                                          const xattn_tensor *o_b,
                                          const xattn_tensor *lse_b,
                                          const xattn_tensor *o,
                                          const xattn_tensor *lse);

#ifdef __cplusplus
}
#endif

#endif /* XATTN_ATTN_H */
