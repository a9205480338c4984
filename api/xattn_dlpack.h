/*
 * xattn — DLPack interop: a DLTensor becomes an xattn_tensor on a wrapped
 * buffer without a copy, and an xattn_tensor is described as a DLTensor.
 *
 * Needs DLPack's header (<dlpack/dlpack.h>; Debian: libdlpack-dev); xattn.h
 * does not include this header, so only callers that use DLPack need it.
 * libxattn itself is built without it and reads DLTensor through DLPack's
 * stable C layout (v0.6 and later).
 *
 * Which DLPack devices a context takes depends on its backend:
 *   cpu     kDLCPU, kDLCUDAHost, kDLROCMHost (host memory), device_id 0
 *   cuda    kDLCUDA, device_id = the context's device index
 *   hip     kDLROCM, device_id = the context's device index
 *   opencl  none: kDLOpenCL leaves what data points to to the producer (a
 *           cl_mem, or a descriptor of its own) and does not say how
 *           device_id numbers OpenCL devices; wrap the cl_mem with
 *           xattn_buffer_wrap instead (XATTN_ERR_UNSUPPORTED here).
 * Dtypes: kDLFloat 32 (f32), kDLFloat 16 (f16), kDLBfloat 16 (bf16), kDLInt
 * 32 (i32), one lane.
 */
#ifndef XATTN_DLPACK_H
#define XATTN_DLPACK_H

#include <dlpack/dlpack.h>

#include "xattn_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Wrap the memory of dl as a new buffer of ctx, without copying, and
 * describe dl as a tensor over it.
 *
 * The buffer spans exactly the bytes the tensor's elements cover, starting
 * at dl->data + dl->byte_offset (its first element); *out gets that buffer,
 * offset 0, dl's dtype, rank and shape, and its strides in elements (NULL
 * strides: compact row-major). Strides must be positive (dims of size 0 or 1
 * excepted: their stride addresses nothing and becomes the compact one); any
 * order is taken here, and the call that uses the tensor checks its own
 * rules (overlap, innermost stride). A tensor with no elements may have
 * NULL data and gets a zero-byte buffer.
 *
 * Ownership: the caller frees *buf_out with xattn_buffer_free. xattn never
 * frees or keeps dl, its shape or strides; the DLPack producer must keep
 * the memory alive until the buffer is freed (for a DLManagedTensor, call
 * its deleter after xattn_buffer_free, not before).
 *
 * Errors: XATTN_ERR_INVALID_ARGUMENT (NULL pointers; a device type the
 * backend does not read or a device_id other than the context's; ndim
 * outside [1, XATTN_MAX_RANK]; lanes != 1; a dtype xattn lacks; NULL shape;
 * a negative size; a stride < 1; sizes that overflow; NULL data with
 * elements; data + byte_offset not aligned to the element size or wrapping
 * around), XATTN_ERR_UNSUPPORTED (the backend has no DLPack device type:
 * opencl), XATTN_ERR_OUT_OF_MEMORY. *buf_out and *out are written only on
 * success. Thread-safety: safe. */
XATTN_API xattn_status xattn_tensor_from_dlpack(xattn_context *ctx, const DLTensor *dl,
                                                xattn_buffer **buf_out, xattn_tensor *out);

/* Describe tensor as a DLTensor: data = the buffer's native pointer (a host
 * pointer on cpu; a device pointer on cuda and hip), byte_offset =
 * tensor->offset, the backend's first device type above with its
 * device_id, and shape and strides (elements) pointing INTO *tensor's own
 * arrays: *tensor must stay alive and unchanged while *out is used, and the
 * buffer must outlive both. Nothing is allocated and no reference is taken.
 * Errors: XATTN_ERR_INVALID_ARGUMENT (NULL pointers or buffer; dtype,
 * rank, negative size, stride < 1, offset not a multiple of the element
 * size, elements outside the buffer), XATTN_ERR_UNSUPPORTED (opencl: its
 * native handle is a cl_mem, not an address). *out is written only on
 * success. Thread-safety: safe. */
XATTN_API xattn_status xattn_tensor_to_dlpack(xattn_tensor *tensor, DLTensor *out);

#ifdef __cplusplus
}
#endif

#endif /* XATTN_DLPACK_H */
