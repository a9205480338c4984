/* DLPack interop (api/xattn_dlpack.h) with hand-built DLTensors: the
 * library's mirror of DLPack's layout against the real dlpack.h; views
 * without a copy (contiguous, strided, transposed, offset, empty); every
 * rule of bad input; the reverse direction; and an attention run whose
 * Q/K/V/O come from DLTensors. Runs on cpu, on opencl (which has no DLPack
 * device type: a clear error) and on the fake module as hip (kDLROCM). */
#include "api_test.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xattn_dlpack.h"
#include "dlpack_abi.h" /* the library's mirror, checked against dlpack.h */

/* ---- the mirror's layout ------------------------------------------------- */

#define SAME_FIELD(mirror, real, mf, rf)                                         \
    _Static_assert(offsetof(mirror, mf) == offsetof(real, rf) &&               \
                       sizeof(((mirror *)0)->mf) == sizeof(((real *)0)->rf),   \
                   #mirror "." #mf " differs from DLPack's " #real "." #rf)

SAME_FIELD(xattn_dl_tensor, DLTensor, data, data);
SAME_FIELD(xattn_dl_tensor, DLTensor, device, device);
SAME_FIELD(xattn_dl_tensor, DLTensor, ndim, ndim);
SAME_FIELD(xattn_dl_tensor, DLTensor, dtype, dtype);
SAME_FIELD(xattn_dl_tensor, DLTensor, shape, shape);
SAME_FIELD(xattn_dl_tensor, DLTensor, strides, strides);
SAME_FIELD(xattn_dl_tensor, DLTensor, byte_offset, byte_offset);
SAME_FIELD(xattn_dl_device, DLDevice, device_type, device_type);
SAME_FIELD(xattn_dl_device, DLDevice, device_id, device_id);
SAME_FIELD(xattn_dl_dtype, DLDataType, code, code);
SAME_FIELD(xattn_dl_dtype, DLDataType, bits, bits);
SAME_FIELD(xattn_dl_dtype, DLDataType, lanes, lanes);
_Static_assert(sizeof(xattn_dl_tensor) == sizeof(DLTensor), "DLTensor size");
_Static_assert(sizeof(xattn_dl_device) == sizeof(DLDevice), "DLDevice size");
_Static_assert(sizeof(xattn_dl_dtype) == sizeof(DLDataType), "DLDataType size");
_Static_assert((int)XATTN_DL_FLOAT == (int)kDLFloat && (int)XATTN_DL_BFLOAT == (int)kDLBfloat &&
                   (int)XATTN_DL_INT == (int)kDLInt && (int)XATTN_DL_UINT == (int)kDLUInt,
               "DLDataTypeCode values");

/* The device-type values are runtime-checked too, so a failure names them. */
static void test_mirror_matches_dlpack_h(void **state)
{
    (void)state;
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.device.device_type = kDLCUDAManaged;
    t.device.device_id = 7;
    t.ndim = 3;
    t.dtype.code = kDLBfloat;
    t.dtype.bits = 16;
    t.dtype.lanes = 1;
    t.byte_offset = 12345;
    xattn_dl_tensor m;
    memcpy(&m, &t, sizeof m);
    assert_int_equal(m.device.device_type, 13);
    assert_int_equal(m.device.device_id, 7);
    assert_int_equal(m.ndim, 3);
    assert_int_equal(m.dtype.code, 4);
    assert_int_equal(m.byte_offset, 12345);
    assert_int_equal(kDLCPU, 1);
    assert_int_equal(kDLCUDA, 2);
    assert_int_equal(kDLCUDAHost, 3);
    assert_int_equal(kDLOpenCL, 4);
    assert_int_equal(kDLROCM, 10);
    assert_int_equal(kDLROCMHost, 11);
}

/* ---- helpers ---------------------------------------------------------------- */

/* The device type the context's backend takes (kDLROCM for the fake hip). */
static DLDeviceType own_device(void)
{
    return strcmp(xattn_context_backend_name(xt_ctx), "hip") ? kDLCPU : kDLROCM;
}

static DLTensor dl_tensor(void *data, int ndim, int64_t *shape, int64_t *strides,
                          DLDataTypeCode code, uint8_t bits)
{
    DLTensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.device.device_type = own_device();
    t.device.device_id = 0;
    t.ndim = ndim;
    t.dtype.code = (uint8_t)code;
    t.dtype.bits = bits;
    t.dtype.lanes = 1;
    t.shape = shape;
    t.strides = strides;
    return t;
}

#define BUF_SENTINEL ((xattn_buffer *)(uintptr_t)0x5e47)

/* The call fails with want, naming one of the words, and writes nothing. */
#define EXPECT_REJECTED(dl, want, ...)                                             \
    do {                                                                           \
        xattn_buffer *b_ = BUF_SENTINEL;                                           \
        xattn_tensor t_;                                                           \
        memset(&t_, XT_SENTINEL_HOST, sizeof t_);                                  \
        XT_EXPECT_ERROR(xattn_tensor_from_dlpack(xt_ctx, (dl), &b_, &t_), want,     \
                        __VA_ARGS__);                                              \
        assert_ptr_equal(b_, BUF_SENTINEL);                                        \
        XT_ASSERT_HOST_UNTOUCHED(&t_, sizeof t_, XT_SENTINEL_HOST);                \
    } while (0)

/* ---- views ---------------------------------------------------------------- */

/* [2, 3, 4] f32, NULL strides: compact row-major, no copy. */
static void test_contiguous_tensor_is_wrapped_without_a_copy(void **state)
{
    (void)state;
    float host[24];
    for (int i = 0; i < 24; i++) host[i] = (float)i;
    int64_t shape[3] = {2, 3, 4};
    DLTensor dl = dl_tensor(host, 3, shape, NULL, kDLFloat, 32);
    xattn_buffer *buf = NULL;
    xattn_tensor t;
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
    assert_ptr_equal(t.buffer, buf);
    assert_ptr_equal(xattn_buffer_native(buf), host);
    assert_int_equal(xattn_buffer_size(buf), sizeof host);
    assert_int_equal(t.offset, 0);
    assert_int_equal(t.dtype, XATTN_F32);
    assert_int_equal(t.rank, 3);
    const int64_t want_stride[3] = {12, 4, 1};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t.shape[i], shape[i]);
        assert_int_equal(t.stride[i], want_stride[i]);
    }
    /* The same memory: a write through xattn shows in the caller's array. */
    const float v = 42.5f;
    XT_ASSERT_STATUS(xattn_buffer_write(buf, 5 * sizeof v, &v, sizeof v), XATTN_OK);
    assert_true(host[5] == 42.5f);
    xattn_buffer_free(&buf);
    assert_true(host[23] == 23.0f); /* freeing the wrapper frees nothing */
}

/* Every other token of [8, 2, 4] with a byte offset of one token: the
 * buffer starts at the first element and spans the last one. */
static void test_strided_view_with_byte_offset(void **state)
{
    (void)state;
    float host[8 * 2 * 4];
    int64_t shape[3] = {4, 2, 4}, strides[3] = {16, 4, 1};
    DLTensor dl = dl_tensor(host, 3, shape, strides, kDLFloat, 32);
    dl.byte_offset = 8 * sizeof(float);
    xattn_buffer *buf = NULL;
    xattn_tensor t;
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
    assert_ptr_equal(xattn_buffer_native(buf), host + 8);
    assert_int_equal(xattn_buffer_size(buf), (3 * 16 + 1 * 4 + 3 + 1) * sizeof(float));
    for (int i = 0; i < 3; i++) assert_int_equal(t.stride[i], strides[i]);
    xattn_buffer_free(&buf);
}

/* FlashInfer's LSE is [total_q, Hq]; its transpose is xattn's [Hq,
 * total_q] with strides (1, Hq): taken as given (the call that uses it
 * checks its stride rules), spanning the whole array. */
static void test_transposed_view_keeps_its_strides(void **state)
{
    (void)state;
    enum { TQ = 5, HQ = 3 };
    float lse[TQ * HQ];
    int64_t shape[2] = {HQ, TQ}, strides[2] = {1, HQ};
    DLTensor dl = dl_tensor(lse, 2, shape, strides, kDLFloat, 32);
    xattn_buffer *buf = NULL;
    xattn_tensor t;
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
    assert_int_equal(t.shape[0], HQ);
    assert_int_equal(t.shape[1], TQ);
    assert_int_equal(t.stride[0], 1);
    assert_int_equal(t.stride[1], HQ);
    assert_int_equal(xattn_buffer_size(buf), sizeof lse);
    xattn_buffer_free(&buf);
}

/* Strides of dims of size 1 address nothing; frameworks put anything there
 * (even 0 or huge values). They become the compact strides. */
static void test_size_one_dims_get_compact_strides(void **state)
{
    (void)state;
    int32_t host[6];
    int64_t shape[4] = {1, 2, 1, 3}, strides[4] = {INT64_MAX, 3, -7, 1};
    DLTensor dl = dl_tensor(host, 4, shape, strides, kDLInt, 32);
    xattn_buffer *buf = NULL;
    xattn_tensor t;
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
    const int64_t want[4] = {6, 3, 3, 1};
    for (int i = 0; i < 4; i++) assert_int_equal(t.stride[i], want[i]);
    assert_int_equal(t.dtype, XATTN_I32);
    assert_int_equal(xattn_buffer_size(buf), sizeof host);
    xattn_buffer_free(&buf);
}

static void test_every_dtype_maps(void **state)
{
    (void)state;
    static const struct {
        DLDataTypeCode code;
        uint8_t bits;
        xattn_dtype want;
    } map[] = {{kDLFloat, 32, XATTN_F32}, {kDLFloat, 16, XATTN_F16},
               {kDLBfloat, 16, XATTN_BF16}, {kDLInt, 32, XATTN_I32}};
    int32_t host[4];
    int64_t shape[1] = {4};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        DLTensor dl = dl_tensor(host, 1, shape, NULL, map[i].code, map[i].bits);
        xattn_buffer *buf = NULL;
        xattn_tensor t;
        XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
        assert_int_equal(t.dtype, map[i].want);
        assert_int_equal(xattn_buffer_size(buf), 4 * xattn_dtype_size(map[i].want));
        xattn_buffer_free(&buf);
    }
}

/* Empty arrays may have NULL data (NumPy, DLPack): a zero-byte buffer. */
static void test_empty_tensor_with_null_data(void **state)
{
    (void)state;
    int64_t shape[2] = {0, 4};
    DLTensor dl = dl_tensor(NULL, 2, shape, NULL, kDLFloat, 32);
    xattn_buffer *buf = NULL;
    xattn_tensor t;
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
    assert_int_equal(xattn_buffer_size(buf), 0);
    assert_non_null(xattn_buffer_native(buf));
    assert_int_equal(t.shape[0], 0);
    xattn_buffer_free(&buf);
}

/* Pinned host memory of CUDA and ROCm is host memory to the cpu backend. */
static void test_cpu_takes_pinned_host_memory(void **state)
{
    (void)state;
    float host[4];
    int64_t shape[1] = {4};
    const DLDeviceType types[] = {kDLCUDAHost, kDLROCMHost};
    for (size_t i = 0; i < 2; i++) {
        DLTensor dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
        dl.device.device_type = types[i];
        xattn_buffer *buf = NULL;
        xattn_tensor t;
        XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, &t), XATTN_OK);
        xattn_buffer_free(&buf);
    }
}

/* ---- bad input ------------------------------------------------------------- */

static void test_rejects_null_arguments(void **state)
{
    (void)state;
    float host[4];
    int64_t shape[1] = {4};
    DLTensor dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
    xattn_buffer *buf = BUF_SENTINEL;
    xattn_tensor t;
    XT_EXPECT_ERROR(xattn_tensor_from_dlpack(NULL, &dl, &buf, &t), XATTN_ERR_INVALID_ARGUMENT,
                    "ctx");
    XT_EXPECT_ERROR(xattn_tensor_from_dlpack(xt_ctx, NULL, &buf, &t), XATTN_ERR_INVALID_ARGUMENT,
                    "dl");
    XT_EXPECT_ERROR(xattn_tensor_from_dlpack(xt_ctx, &dl, NULL, &t), XATTN_ERR_INVALID_ARGUMENT,
                    "buf_out");
    XT_EXPECT_ERROR(xattn_tensor_from_dlpack(xt_ctx, &dl, &buf, NULL), XATTN_ERR_INVALID_ARGUMENT,
                    "out");
    assert_ptr_equal(buf, BUF_SENTINEL);
    dl.shape = NULL;
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.shape");
}

static void test_rejects_a_device_type_the_backend_does_not_read(void **state)
{
    (void)state;
    float host[4];
    int64_t shape[1] = {4};
    DLTensor dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
    const DLDeviceType wrong[] = {own_device() == kDLCPU ? kDLCUDA : kDLCPU, kDLOpenCL,
                                  kDLVulkan, kDLCUDAManaged, (DLDeviceType)99};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        dl.device.device_type = wrong[i];
        EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.device.device_type");
    }
}

static void test_rejects_another_device_id(void **state)
{
    (void)state;
    float host[4];
    int64_t shape[1] = {4};
    DLTensor dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
    const int ids[] = {1, -1, 7};
    for (size_t i = 0; i < 3; i++) {
        dl.device.device_id = ids[i];
        EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.device.device_id");
    }
}

static void test_rejects_dtypes_xattn_lacks(void **state)
{
    (void)state;
    double host[4];
    int64_t shape[1] = {4};
    static const struct {
        DLDataTypeCode code;
        uint8_t bits;
    } bad[] = {{kDLFloat, 64}, {kDLFloat, 8}, {kDLInt, 8}, {kDLInt, 64},
               {kDLUInt, 32}, {kDLBfloat, 32}, {kDLComplex, 64}, {kDLOpaqueHandle, 64}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        DLTensor dl = dl_tensor(host, 1, shape, NULL, bad[i].code, bad[i].bits);
        EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.dtype");
    }
    DLTensor dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
    const uint16_t lanes[] = {0, 2, 4};
    for (size_t i = 0; i < 3; i++) {
        dl.dtype.lanes = lanes[i];
        EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.dtype.lanes");
    }
}

static void test_rejects_rank_outside_1_to_4(void **state)
{
    (void)state;
    float host[32];
    int64_t shape[5] = {2, 2, 2, 2, 2};
    const int ranks[] = {0, 5, -1};
    for (size_t i = 0; i < 3; i++) {
        DLTensor dl = dl_tensor(host, ranks[i], shape, NULL, kDLFloat, 32);
        EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.ndim");
    }
}

static void test_rejects_bad_shapes_and_strides(void **state)
{
    (void)state;
    float host[64];
    int64_t neg[2] = {4, -1};
    DLTensor dl = dl_tensor(host, 2, neg, NULL, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.shape");

    int64_t huge[3] = {INT64_MAX / 2, 4, 4}; /* element count overflows */
    dl = dl_tensor(host, 3, huge, NULL, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.shape");

    int64_t big[2] = {(int64_t)1 << 40, (int64_t)1 << 22}; /* 2^62 elements of 4 bytes */
    dl = dl_tensor(host, 2, big, NULL, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.shape", "dl.strides");

    int64_t shape[2] = {4, 4};
    int64_t far[2] = {INT64_MAX / 2, 1}; /* extent overflows */
    dl = dl_tensor(host, 2, shape, far, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.strides");

    int64_t negative[2] = {-4, 1}; /* a reversed view */
    dl = dl_tensor(host + 12, 2, shape, negative, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.strides");

    int64_t broadcast[2] = {0, 1}; /* an expanded view */
    dl = dl_tensor(host, 2, shape, broadcast, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.strides");
}

static void test_rejects_bad_data_pointers(void **state)
{
    (void)state;
    float host[8];
    int64_t shape[1] = {4};
    DLTensor dl = dl_tensor(NULL, 1, shape, NULL, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.data");

    dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
    dl.byte_offset = 2; /* f32 at a 2-byte boundary */
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.data", "dl.byte_offset");
    dl = dl_tensor((char *)host + 1, 1, shape, NULL, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.data", "dl.byte_offset");

    dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
    dl.byte_offset = UINT64_MAX - 3; /* past the top of the address space */
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.byte_offset");

    /* In range, but its 16 bytes run past the top of the address space. */
    dl = dl_tensor((void *)(UINTPTR_MAX - 7), 1, shape, NULL, kDLFloat, 32);
    EXPECT_REJECTED(&dl, XATTN_ERR_INVALID_ARGUMENT, "dl.data");
}

/* ---- the reverse --------------------------------------------------------- */

static void test_to_dlpack_describes_the_tensor_in_place(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(xt_ctx, 4096, 0);
    const int64_t shape[3] = {3, 2, 8};
    xattn_tensor t = xattn_tensor_contiguous(buf, 256, XATTN_BF16, 3, shape);
    t.stride[0] = 32; /* a gap between tokens */
    DLTensor dl;
    XT_ASSERT_STATUS(xattn_tensor_to_dlpack(&t, &dl), XATTN_OK);
    assert_ptr_equal(dl.data, xattn_buffer_native(buf));
    assert_int_equal(dl.byte_offset, 256);
    assert_int_equal(dl.device.device_type, own_device());
    assert_int_equal(dl.device.device_id, 0);
    assert_int_equal(dl.ndim, 3);
    assert_int_equal(dl.dtype.code, kDLBfloat);
    assert_int_equal(dl.dtype.bits, 16);
    assert_int_equal(dl.dtype.lanes, 1);
    assert_ptr_equal(dl.shape, t.shape); /* the tensor's own arrays */
    assert_ptr_equal(dl.strides, t.stride);

    /* And back: the same elements, through a new wrapper. */
    xattn_buffer *back = NULL;
    xattn_tensor t2;
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dl, &back, &t2), XATTN_OK);
    assert_ptr_equal(xattn_buffer_native(back), (char *)xattn_buffer_native(buf) + 256);
    assert_int_equal(xattn_buffer_size(back), (2 * 32 + 8 + 7 + 1) * 2);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t2.shape[i], t.shape[i]);
        assert_int_equal(t2.stride[i], t.stride[i]);
    }
    xattn_buffer_free(&back);
    xattn_buffer_free(&buf);
}

static void test_to_dlpack_rejects_bad_tensors(void **state)
{
    (void)state;
    xattn_buffer *buf = xt_buffer(xt_ctx, 64, 0);
    const int64_t shape[2] = {4, 4};
    DLTensor dl;
    memset(&dl, XT_SENTINEL_HOST, sizeof dl);
    xattn_tensor t = xattn_tensor_contiguous(buf, 0, XATTN_F32, 2, shape);
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(NULL, &dl), XATTN_ERR_INVALID_ARGUMENT, "tensor");
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&t, NULL), XATTN_ERR_INVALID_ARGUMENT, "out");
    xattn_tensor bad = t;
    bad.buffer = NULL;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT,
                    "tensor.buffer");
    bad = t;
    bad.rank = 0;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT, "tensor.rank");
    bad.rank = 5;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT, "tensor.rank");
    bad = t;
    bad.dtype = (xattn_dtype)17;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT,
                    "tensor.dtype");
    bad = t;
    bad.offset = 4; /* the last element is past the 64 bytes */
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT, "tensor");
    bad.offset = 2;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT,
                    "tensor.offset");
    bad = t;
    bad.stride[0] = -4;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT,
                    "tensor.stride");
    bad = t;
    bad.shape[1] = -1;
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&bad, &dl), XATTN_ERR_INVALID_ARGUMENT,
                    "tensor.shape");
    XT_ASSERT_HOST_UNTOUCHED(&dl, sizeof dl, XT_SENTINEL_HOST);
    xattn_buffer_free(&buf);
}

/* ---- attention on DLPack tensors -------------------------------------------- */

enum { B = 2, SQ = 5, SK = 19, HQ = 4, HKV = 2, D = 32 };
enum { Q_ELEMS = B * SQ * HQ * D, KV_ELEMS = B * SK * HKV * D };

static xattn_plan *attn_plan(void)
{
    xattn_attn_desc d = xt_attn_desc(B, SQ, SK, HQ, HKV, D, XATTN_ATTN_CAUSAL);
    return xt_plan(xt_ctx, &d);
}

static void fill(float *v, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
}

/* K and V live in one packed KV array [B, SK, 2, HKV, D] (a strided view
 * each, V at a byte offset), Q and O are plain arrays; all four come in as
 * DLTensors. The same run on copies in xattn buffers through
 * xattn_tensor_contiguous must give the same bits. */
static void test_attention_runs_on_dlpack_tensors(void **state)
{
    (void)state;
    float *q = malloc(Q_ELEMS * sizeof *q), *o = malloc(Q_ELEMS * sizeof *o);
    float *kv = malloc(2 * KV_ELEMS * sizeof *kv);
    float *k = malloc(KV_ELEMS * sizeof *k), *v = malloc(KV_ELEMS * sizeof *v);
    float *o_ref = malloc(Q_ELEMS * sizeof *o_ref);
    assert_true(q && o && kv && k && v && o_ref);
    fill(q, Q_ELEMS, 1);
    fill(kv, 2 * KV_ELEMS, 2);
    for (int t = 0; t < B * SK; t++)
        for (int i = 0; i < HKV * D; i++) {
            k[t * HKV * D + i] = kv[(t * 2 + 0) * HKV * D + i];
            v[t * HKV * D + i] = kv[(t * 2 + 1) * HKV * D + i];
        }
    memset(o, 0xA5, Q_ELEMS * sizeof *o);

    xattn_plan *plan = attn_plan();
    size_t ws_bytes = xattn_plan_workspace_size(plan);
    xattn_buffer *ws = ws_bytes ? xt_buffer(xt_ctx, ws_bytes, 0) : NULL;

    /* Through DLPack. */
    int64_t qshape[4] = {B, SQ, HQ, D}, kvshape[4] = {B, SK, HKV, D};
    int64_t kvstrides[4] = {SK * 2 * HKV * D, 2 * HKV * D, D, 1};
    DLTensor dq = dl_tensor(q, 4, qshape, NULL, kDLFloat, 32);
    DLTensor dk = dl_tensor(kv, 4, kvshape, kvstrides, kDLFloat, 32);
    DLTensor dv = dk;
    dv.byte_offset = HKV * D * sizeof(float);
    DLTensor dout = dl_tensor(o, 4, qshape, NULL, kDLFloat, 32);
    xattn_buffer *bufs[4] = {NULL};
    xattn_attn_args a;
    memset(&a, 0, sizeof a);
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dq, &bufs[0], &a.q), XATTN_OK);
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dk, &bufs[1], &a.k), XATTN_OK);
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dv, &bufs[2], &a.v), XATTN_OK);
    XT_ASSERT_STATUS(xattn_tensor_from_dlpack(xt_ctx, &dout, &bufs[3], &a.o), XATTN_OK);
    a.workspace = ws;
    XT_ASSERT_STATUS(xattn_attn_run(plan, &a), XATTN_OK);
    XT_ASSERT_STATUS(xattn_context_synchronize(xt_ctx), XATTN_OK);

    /* Through copies in xattn buffers. */
    xattn_buffer *bq = xt_buffer(xt_ctx, Q_ELEMS * sizeof(float), 0);
    xattn_buffer *bk = xt_buffer(xt_ctx, KV_ELEMS * sizeof(float), 0);
    xattn_buffer *bv = xt_buffer(xt_ctx, KV_ELEMS * sizeof(float), 0);
    xattn_buffer *bo = xt_buffer(xt_ctx, Q_ELEMS * sizeof(float), 0);
    XT_ASSERT_STATUS(xattn_buffer_write(bq, 0, q, Q_ELEMS * sizeof(float)), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(bk, 0, k, KV_ELEMS * sizeof(float)), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_write(bv, 0, v, KV_ELEMS * sizeof(float)), XATTN_OK);
    xattn_attn_args r;
    memset(&r, 0, sizeof r);
    r.q = xattn_tensor_contiguous(bq, 0, XATTN_F32, 4, qshape);
    r.k = xattn_tensor_contiguous(bk, 0, XATTN_F32, 4, kvshape);
    r.v = xattn_tensor_contiguous(bv, 0, XATTN_F32, 4, kvshape);
    r.o = xattn_tensor_contiguous(bo, 0, XATTN_F32, 4, qshape);
    r.workspace = ws;
    XT_ASSERT_STATUS(xattn_attn_run(plan, &r), XATTN_OK);
    XT_ASSERT_STATUS(xattn_buffer_read(bo, 0, o_ref, Q_ELEMS * sizeof(float)), XATTN_OK);

    assert_memory_equal(o, o_ref, Q_ELEMS * sizeof(float));
    int nonzero = 0;
    for (int i = 0; i < Q_ELEMS; i++) nonzero += o[i] != 0.0f;
    assert_true(nonzero > Q_ELEMS / 2);

    xattn_buffer *all[] = {bufs[0], bufs[1], bufs[2], bufs[3], bq, bk, bv, bo, ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) xattn_buffer_free(&all[i]);
    xattn_plan_destroy(&plan);
    free(q), free(o), free(kv), free(k), free(v), free(o_ref);
}

/* ---- opencl ------------------------------------------------------------------- */

/* OpenCL has no DLPack device type that names its buffers: both directions
 * are UNSUPPORTED, and the message says why and what to do instead. */
static void test_opencl_has_no_dlpack_device_type(void **state)
{
    (void)state;
    float host[4];
    int64_t shape[1] = {4};
    const DLDeviceType types[] = {kDLOpenCL, kDLCPU};
    for (size_t i = 0; i < 2; i++) {
        DLTensor dl = dl_tensor(host, 1, shape, NULL, kDLFloat, 32);
        dl.device.device_type = types[i];
        EXPECT_REJECTED(&dl, XATTN_ERR_UNSUPPORTED, "OpenCL");
        XT_ASSERT_ERROR_NAMES("xattn_buffer_wrap");
    }
    xattn_buffer *buf = xt_buffer(xt_ctx, 64, 0);
    xattn_tensor t = xattn_tensor_contiguous(buf, 0, XATTN_F32, 1, shape);
    DLTensor dl;
    memset(&dl, XT_SENTINEL_HOST, sizeof dl);
    XT_EXPECT_ERROR(xattn_tensor_to_dlpack(&t, &dl), XATTN_ERR_UNSUPPORTED, "OpenCL");
    XT_ASSERT_HOST_UNTOUCHED(&dl, sizeof dl, XT_SENTINEL_HOST);
    xattn_buffer_free(&buf);
}

int main(void)
{
    const struct CMUnitTest common_tests[] = {
        cmocka_unit_test(test_mirror_matches_dlpack_h),
        cmocka_unit_test(test_contiguous_tensor_is_wrapped_without_a_copy),
        cmocka_unit_test(test_strided_view_with_byte_offset),
        cmocka_unit_test(test_transposed_view_keeps_its_strides),
        cmocka_unit_test(test_size_one_dims_get_compact_strides),
        cmocka_unit_test(test_every_dtype_maps),
        cmocka_unit_test(test_empty_tensor_with_null_data),
        cmocka_unit_test(test_rejects_null_arguments),
        cmocka_unit_test(test_rejects_a_device_type_the_backend_does_not_read),
        cmocka_unit_test(test_rejects_another_device_id),
        cmocka_unit_test(test_rejects_dtypes_xattn_lacks),
        cmocka_unit_test(test_rejects_rank_outside_1_to_4),
        cmocka_unit_test(test_rejects_bad_shapes_and_strides),
        cmocka_unit_test(test_rejects_bad_data_pointers),
        cmocka_unit_test(test_to_dlpack_describes_the_tensor_in_place),
        cmocka_unit_test(test_to_dlpack_rejects_bad_tensors),
    };
    const struct CMUnitTest cpu_tests[] = {
        cmocka_unit_test(test_cpu_takes_pinned_host_memory),
        cmocka_unit_test(test_attention_runs_on_dlpack_tensors),
    };
    const struct CMUnitTest opencl_tests[] = {
        cmocka_unit_test(test_mirror_matches_dlpack_h),
        cmocka_unit_test(test_opencl_has_no_dlpack_device_type),
    };
    /* Each backend runs every test that applies to it; none is skipped. */
    xattn_context *probe = NULL;
    if (xattn_context_create(&probe) != XATTN_OK) {
        print_error("no context: %s\n", xattn_last_error());
        return 1;
    }
    char backend[16];
    snprintf(backend, sizeof backend, "%s", xattn_context_backend_name(probe));
    xattn_context_destroy(&probe);
    if (!strcmp(backend, "opencl"))
        return cmocka_run_group_tests_name("opencl", opencl_tests, xt_ctx_setup, xt_ctx_teardown);
    int failed = cmocka_run_group_tests_name("common", common_tests, xt_ctx_setup, xt_ctx_teardown);
    if (!strcmp(backend, "cpu"))
        failed += cmocka_run_group_tests_name("cpu", cpu_tests, xt_ctx_setup, xt_ctx_teardown);
    return failed;
}
