#pragma once
/* DLPack's DLTensor as the library reads it, so libxattn builds without
 * dlpack.h. The layout is DLPack's stable C ABI (unchanged from v0.6 to
 * v1.x: data, device {type, id}, ndim, dtype {code, bits, lanes}, shape,
 * strides, byte_offset); tests/api/test_dlpack.c checks it field by field
 * against the real dlpack.h. api/xattn_dlpack.h declares the same functions
 * with DLPack's own types. */
#include <stdint.h>

#include "internal_api.h"
#include "xattn_core.h"

/* DLDataTypeCode values used here. */
enum { XATTN_DL_INT = 0, XATTN_DL_UINT = 1, XATTN_DL_FLOAT = 2, XATTN_DL_BFLOAT = 4 };

typedef struct xattn_dl_device {
    int32_t device_type; /* DLDeviceType, a C enum: int-sized */
    int32_t device_id;
} xattn_dl_device;

typedef struct xattn_dl_dtype {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} xattn_dl_dtype;

typedef struct xattn_dl_tensor {
    void *data;
    xattn_dl_device device;
    int32_t ndim;
    xattn_dl_dtype dtype;
    int64_t *shape;
    int64_t *strides; /* elements; NULL: compact row-major */
    uint64_t byte_offset;
} xattn_dl_tensor;

/* The public functions of api/xattn_dlpack.h, in these types (for the
 * library; a file that includes that header sees DLPack's types). */
#ifndef XATTN_DLPACK_H
XATTN_API xattn_status xattn_tensor_from_dlpack(xattn_context *ctx, const xattn_dl_tensor *dl,
                                                xattn_buffer **buf_out, xattn_tensor *out);
XATTN_API xattn_status xattn_tensor_to_dlpack(xattn_tensor *tensor, xattn_dl_tensor *out);
#endif
