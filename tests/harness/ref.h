#pragma once
/* The float64 reference of every attention primitive (docs/attention.md).
 *
 * Plain C written to be read against the contract, not to be fast. Inputs
 * are doubles holding exactly the values the backend saw (already rounded to
 * the dtype); all arithmetic is double. Layouts are logical and contiguous:
 * how the backend's tensors are strided, packed or paged in memory is the
 * harness's business, except that paged K/V are read through the block
 * table here, as the contract describes them. */
#include <stdint.h>

/* One attention problem over a batch of sequences.
 *
 * Sequence b has sq_b = cu_seqlens_q[b+1] − cu_seqlens_q[b] query rows and
 * sk_b = seqlens_k[b] keys. Key j of sequence b is stored at token row
 *   contiguous: cu_seqlens_k[b] + j
 *   paged:      block_table[b·max_pages_per_seq + j / page_size]·page_size
 *               + j % page_size
 * of the K and V arrays. */
typedef struct xattn_ref_attn {
    int32_t batch;
    int32_t num_q_heads, num_kv_heads; /* Hq, Hkv; Hq % Hkv == 0 */
    int32_t head_dim_qk, head_dim_v;   /* Dqk, Dv */
    const int32_t *cu_seqlens_q;       /* [B+1] */
    const int32_t *seqlens_k;          /* [B] */
    const int32_t *cu_seqlens_k;       /* [B+1], or NULL when paged */
    const int32_t *block_table;        /* [B, max_pages_per_seq], paged */
    int32_t max_pages_per_seq;
    int32_t page_size;
    double scale;                      /* already resolved (never 0) */
    double softcap;                    /* 0: none */
    int32_t window_left, window_right; /* −1: unbounded; causal is (−1, 0) */
    const double *alibi_slopes;        /* [Hq] or NULL */
    const double *sinks;               /* [Hq] or NULL */
} xattn_ref_attn;

/* Token row of key j of sequence b in the K/V arrays (see above). */
int64_t xattn_ref_key_row(const xattn_ref_attn *p, int32_t b, int32_t j);

/* Whether query row i of a sequence with sq queries and sk keys sees key j
 * (bottom-right aligned window). */
int xattn_ref_visible(const xattn_ref_attn *p, int64_t i, int64_t j, int64_t sq,
                      int64_t sk);

/* Attention. q [total_q, Hq, Dqk], k [rows, Hkv, Dqk], v [rows, Hkv, Dv],
 * o [total_q, Hq, Dv], lse [Hq, total_q] (may be NULL), where total_q =
 * cu_seqlens_q[B]. Only visible keys are read. A row that sees no key, or
 * whose visible scores are all −inf, gets O = 0 and LSE = −inf (also with
 * sinks: the sink alone is not a key). Otherwise IEEE arithmetic decides:
 * a NaN or +inf score or sink makes the row's O and LSE NaN, and a key of
 * weight 0 still multiplies its V row (0·NaN = NaN). Returns 0, or −1 when
 * out of memory. */
int xattn_ref_attention(const xattn_ref_attn *p, const double *q, const double *k,
                        const double *v, double *o, double *lse);

/* kv_append: k_new [n, Hkv, Dqk] and v_new [n, Hkv, Dv] into caches viewed
 * as token rows [num_pages·page_size, Hkv, D]; slot −1 skips the token. */
void xattn_ref_kv_append(int64_t n, int32_t num_kv_heads, int32_t head_dim_qk,
                         int32_t head_dim_v, const double *k_new,
                         const double *v_new, const int32_t *slots,
                         double *k_cache, double *v_cache);

/* merge_states: O [n, H, D], LSE [H, n]. When both LSE are −inf the merged
 * row is O = 0, LSE = −inf (two rows that saw no key). A side whose LSE is
 * −inf contributes nothing and its O is not read; otherwise IEEE arithmetic
 * decides (a NaN or +inf LSE gives a NaN row, a NaN in an O element of a
 * side that counts gives a NaN element). */
void xattn_ref_merge_states(int64_t n, int32_t heads, int32_t dim,
                            const double *o_a, const double *lse_a,
                            const double *o_b, const double *lse_b, double *o,
                            double *lse);
