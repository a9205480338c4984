/* Native handles and DLPack device types per backend (see native.h). */
#include <stddef.h>

#include "native.h"

static const xattn_native_kind kinds[] = {
    {XATTN_BACKEND_CPU, 1, "host pointer",
     /* Pinned host memory of CUDA or ROCm is host memory like any other. */
     {{XATTN_DL_CPU, XATTN_DL_ID_ZERO},
      {XATTN_DL_CUDA_HOST, XATTN_DL_ID_ZERO},
      {XATTN_DL_ROCM_HOST, XATTN_DL_ID_ZERO}},
     NULL},
    {XATTN_BACKEND_OPENCL, 0, "cl_mem",
     {{0, XATTN_DL_ID_ZERO}},
     /* kDLOpenCL exists, but producers disagree on what its data pointer is
      * (a cl_mem, or a producer's own buffer descriptor) and DLPack does not
      * say how device_id numbers OpenCL devices. */
     "OpenCL has no DLPack device type that says what its data pointer is "
     "(kDLOpenCL leaves it to the producer) or how device_id numbers devices; "
     "wrap the cl_mem with xattn_buffer_wrap instead"},
    /* Managed and pinned-host memory are left to those backends, which can
     * test what their kernels may read. */
    {XATTN_BACKEND_CUDA, 1, "CUDA device pointer",
     {{XATTN_DL_CUDA, XATTN_DL_ID_INDEX}},
     NULL},
    {XATTN_BACKEND_HIP, 1, "HIP device pointer",
     {{XATTN_DL_ROCM, XATTN_DL_ID_INDEX}},
     NULL},
};

const xattn_native_kind *xattn_native_kind_of(xattn_backend_kind backend)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].backend == backend) return &kinds[i];
    return NULL;
}

const char *xattn_dl_device_type_name(int32_t type)
{
    switch (type) {
    case XATTN_DL_CPU: return "kDLCPU";
    case XATTN_DL_CUDA: return "kDLCUDA";
    case XATTN_DL_CUDA_HOST: return "kDLCUDAHost";
    case XATTN_DL_OPENCL: return "kDLOpenCL";
    case XATTN_DL_ROCM: return "kDLROCM";
    case XATTN_DL_ROCM_HOST: return "kDLROCMHost";
    case XATTN_DL_CUDA_MANAGED: return "kDLCUDAManaged";
    }
    return NULL;
}
