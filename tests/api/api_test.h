#pragma once
/* Helpers shared by the API test suites: status and message checks that
 * report the caller's file:line, sentinel-filled buffers that prove caller
 * memory was left untouched, and environment changes undone on teardown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "xattn.h"

/* 1 if text contains word, case-insensitively, bounded on both sides by a
 * character that cannot be part of an identifier ("args.q.stride" names "q";
 * "seqlens_k" does not name "seqlen_k"). */
int xt_mentions(const char *text, const char *word);

void xt_check_status(xattn_status got, xattn_status want, const char *expr,
                     const char *file, int line);

/* Fails unless xattn_last_error() names at least one of the words. */
void xt_check_error_names(const char *file, int line, ...);

/* Fails unless status is one of want_a / want_b. */
void xt_check_status2(xattn_status got, xattn_status want_a, xattn_status want_b,
                      const char *expr, const char *file, int line);

#define XT_ASSERT_STATUS(expr, want) \
    xt_check_status((expr), (want), #expr, __FILE__, __LINE__)

/* The call returns want and its message names one of the words. */
#define XT_EXPECT_ERROR(expr, want, ...)                                       \
    do {                                                                       \
        xt_check_status((expr), (want), #expr, __FILE__, __LINE__);            \
        xt_check_error_names(__FILE__, __LINE__, __VA_ARGS__, (const char *)NULL); \
    } while (0)

#define XT_ASSERT_ERROR_NAMES(...) \
    xt_check_error_names(__FILE__, __LINE__, __VA_ARGS__, (const char *)NULL)

/* Sentinel byte patterns for output memory. */
enum { XT_SENTINEL_O = 0xA5, XT_SENTINEL_LSE = 0x5A, XT_SENTINEL_HOST = 0xC3 };

/* Fill a whole buffer with byte (through xattn_buffer_write). */
void xt_fill(xattn_buffer *buf, unsigned char byte);

/* Fails unless every byte of buf still holds byte. */
void xt_check_filled(xattn_buffer *buf, unsigned char byte, const char *what,
                     const char *file, int line);
#define XT_ASSERT_UNTOUCHED(buf, byte) \
    xt_check_filled((buf), (byte), #buf, __FILE__, __LINE__)

/* Fails unless every byte of host memory p[0..n) equals byte. */
void xt_check_host_filled(const void *p, size_t n, unsigned char byte,
                          const char *what, const char *file, int line);
#define XT_ASSERT_HOST_UNTOUCHED(p, n, byte) \
    xt_check_host_filled((p), (n), (byte), #p, __FILE__, __LINE__)

/* Set (value != NULL) or unset an environment variable; every change is
 * undone by xt_env_restore(), which teardowns call so that a failing test
 * cannot leak its environment into the next one. */
void xt_setenv(const char *name, const char *value);
void xt_env_restore(void);
int xt_env_teardown(void **state);

/* Buffer of bytes allocated through ctx and filled with byte; asserts OK. */
xattn_buffer *xt_buffer(xattn_context *ctx, size_t bytes, unsigned char byte);

/* Buffer holding a copy of n int32 values. */
xattn_buffer *xt_buffer_i32(xattn_context *ctx, const int32_t *v, size_t n);

/* Buffer holding a copy of n f32 values. */
xattn_buffer *xt_buffer_f32(xattn_context *ctx, const float *v, size_t n);

/* Contiguous f32 tensor of the shape in a buffer of its own holding v (its
 * elements in order); asserts OK. */
xattn_tensor xt_tensor_f32(xattn_context *ctx, int32_t rank, const int64_t *shape,
                           const float *v);

/* Elements of a shape: the product of shape[0..rank). */
size_t xt_elems(int32_t rank, const int64_t *shape);

/* malloc'd copy of every byte of a buffer (a blocking read); asserts OK. */
unsigned char *xt_read_all(xattn_buffer *buf);

/* Context from the environment the test runs in; asserts OK. */
xattn_context *xt_context(void);

/* Context on the cpu backend with its own number of threads; asserts OK. */
xattn_context *xt_cpu_context(int32_t threads);

/* A suite's one context: xt_ctx_setup (a cmocka group setup) makes it from
 * the environment, xt_ctx_teardown destroys it. */
extern xattn_context *xt_ctx;
int xt_ctx_setup(void **state);
int xt_ctx_teardown(void **state);

/* f32 attention with uniform Q and KV, head_dim_qk = head_dim_v = d. */
xattn_attn_desc xt_attn_desc(int32_t batch, int32_t seqlen_q, int32_t seqlen_k,
                             int32_t num_q_heads, int32_t num_kv_heads, int32_t d,
                             uint32_t flags);

/* Arguments of an f32 run with nothing but Q, K, V and O: contiguous
 * tensors at offset 0 of their buffers, Q and O of shape qs, K and V of ks. */
xattn_attn_args xt_attn_args(xattn_buffer *q, xattn_buffer *k, xattn_buffer *v, xattn_buffer *o,
                             int32_t rank, const int64_t *qs, const int64_t *ks);

/* Attention plan of desc on ctx; asserts OK. */
xattn_plan *xt_plan(xattn_context *ctx, const xattn_attn_desc *desc);

/* f32 MoE (weights and logits too): softmax-then-top-k routing,
 * renormalised, SwiGLU experts. */
xattn_moe_desc xt_moe_desc(int32_t max_tokens, int32_t hidden, int32_t num_experts,
                           int32_t top_k, int32_t inter);

/* Bytes spanned by a tensor (offset + largest element + 1 element). */
size_t xt_tensor_extent(const xattn_tensor *t);
