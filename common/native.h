#pragma once
/* What each backend's native buffer handle is: an address (host or device)
 * that byte arithmetic may move, or an opaque handle; and which DLPack
 * device types name memory its kernels can read. One row per backend; a new
 * backend fills in its row. */
#include <stdint.h>

#include "xattn_core.h"

/* DLPack device types (DLDeviceType; the values are fixed by DLPack). */
enum {
    XATTN_DL_CPU = 1,
    XATTN_DL_CUDA = 2,
    XATTN_DL_CUDA_HOST = 3,
    XATTN_DL_OPENCL = 4,
    XATTN_DL_ROCM = 10,
    XATTN_DL_ROCM_HOST = 11,
    XATTN_DL_CUDA_MANAGED = 13,
};

/* How a DLPack device_id must relate to the context. */
typedef enum xattn_dl_id_rule {
    XATTN_DL_ID_ZERO = 0,  /* host memory: DLPack sets device_id to 0 */
    XATTN_DL_ID_INDEX = 1, /* the context's device index */
} xattn_dl_id_rule;

enum { XATTN_DL_TYPES_MAX = 3 };

typedef struct xattn_dl_device_type {
    int32_t type;          /* XATTN_DL_*; 0 ends the list */
    xattn_dl_id_rule id;
} xattn_dl_device_type;

typedef struct xattn_native_kind {
    xattn_backend_kind backend;
    int is_address;        /* 1: a host or device address; 0: an opaque handle */
    const char *handle;    /* what xattn_buffer_native returns, for messages */
    /* DLPack device types this backend reads; the first is what
     * xattn_tensor_to_dlpack reports. Empty: no_dlpack says why. */
    xattn_dl_device_type dl[XATTN_DL_TYPES_MAX];
    const char *no_dlpack;
} xattn_native_kind;

/* The row of a concrete backend; NULL for AUTO or a value outside the enum. */
const xattn_native_kind *xattn_native_kind_of(xattn_backend_kind backend);

/* Name of a DLPack device type for messages ("kDLCUDA"), or NULL when
 * this file does not know it. */
const char *xattn_dl_device_type_name(int32_t type);
