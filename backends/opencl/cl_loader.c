/* The OpenCL runtime, loaded lazily with dlopen so that the module (and the
 * program that loads it) starts on machines without OpenCL: probing then
 * reports "runtime library missing" and zero devices. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "ocl.h"

/* The ICD loader's soname; the unversioned name is only in -dev packages. */
#define OCL_LIBRARY "libOpenCL.so.1"

/* Written once under pthread_once, read-only afterwards. */
static ocl_api loaded;
static const ocl_api *loaded_ok;
static char load_reason[256];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void)
{
    void *lib = dlopen(OCL_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(load_reason, sizeof load_reason, "runtime library missing: %s (%s)", OCL_LIBRARY,
                 why ? why : "dlopen failed");
        return;
    }
    static const struct {
        const char *name;
        size_t offset;
    } syms[] = {
#define SYM(f) {"cl" #f, offsetof(ocl_api, f)}
        SYM(GetPlatformIDs), SYM(GetPlatformInfo), SYM(GetDeviceIDs), SYM(GetDeviceInfo),
        SYM(CreateContext), SYM(RetainContext), SYM(ReleaseContext), SYM(CreateCommandQueue),
        SYM(GetCommandQueueInfo), SYM(RetainCommandQueue), SYM(ReleaseCommandQueue),
        SYM(CreateBuffer), SYM(ReleaseMemObject), SYM(EnqueueReadBuffer),
        SYM(EnqueueWriteBuffer), SYM(CreateProgramWithSource), SYM(CreateProgramWithBinary),
        SYM(BuildProgram), SYM(GetProgramInfo), SYM(GetProgramBuildInfo), SYM(ReleaseProgram),
        SYM(CreateKernel), SYM(ReleaseKernel), SYM(SetKernelArg), SYM(GetKernelWorkGroupInfo),
        SYM(EnqueueNDRangeKernel), SYM(Flush), SYM(Finish),
#undef SYM
    };
    for (size_t i = 0; i < XATTN_ARRAY_SIZE(syms); i++) {
        void *f = dlsym(lib, syms[i].name);
        if (!f) {
            snprintf(load_reason, sizeof load_reason,
                     "runtime library %s lacks %s (OpenCL 1.2 is needed)", OCL_LIBRARY,
                     syms[i].name);
            dlclose(lib);
            return;
        }
        /* object → function pointer, POSIX-style */
        memcpy((char *)&loaded + syms[i].offset, &f, sizeof f);
    }
    loaded_ok = &loaded; /* the library stays loaded: programs hold its code */
}

const ocl_api *ocl_load(char *reason, size_t reason_size)
{
    pthread_once(&load_once, load);
    if (!loaded_ok && reason_size) snprintf(reason, reason_size, "%s", load_reason);
    return loaded_ok;
}

const char *ocl_status_name(cl_int status)
{
    switch (status) {
#define NAME(s) case s: return #s
        NAME(CL_SUCCESS);
        NAME(CL_DEVICE_NOT_FOUND);
        NAME(CL_DEVICE_NOT_AVAILABLE);
        NAME(CL_COMPILER_NOT_AVAILABLE);
        NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE);
        NAME(CL_OUT_OF_RESOURCES);
        NAME(CL_OUT_OF_HOST_MEMORY);
        NAME(CL_PROFILING_INFO_NOT_AVAILABLE);
        NAME(CL_MEM_COPY_OVERLAP);
        NAME(CL_IMAGE_FORMAT_MISMATCH);
        NAME(CL_IMAGE_FORMAT_NOT_SUPPORTED);
        NAME(CL_BUILD_PROGRAM_FAILURE);
        NAME(CL_MAP_FAILURE);
        NAME(CL_MISALIGNED_SUB_BUFFER_OFFSET);
        NAME(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST);
        NAME(CL_COMPILE_PROGRAM_FAILURE);
        NAME(CL_LINKER_NOT_AVAILABLE);
        NAME(CL_LINK_PROGRAM_FAILURE);
        NAME(CL_DEVICE_PARTITION_FAILED);
        NAME(CL_KERNEL_ARG_INFO_NOT_AVAILABLE);
        NAME(CL_INVALID_VALUE);
        NAME(CL_INVALID_DEVICE_TYPE);
        NAME(CL_INVALID_PLATFORM);
        NAME(CL_INVALID_DEVICE);
        NAME(CL_INVALID_CONTEXT);
        NAME(CL_INVALID_QUEUE_PROPERTIES);
        NAME(CL_INVALID_COMMAND_QUEUE);
        NAME(CL_INVALID_HOST_PTR);
        NAME(CL_INVALID_MEM_OBJECT);
        NAME(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR);
        NAME(CL_INVALID_IMAGE_SIZE);
        NAME(CL_INVALID_SAMPLER);
        NAME(CL_INVALID_BINARY);
        NAME(CL_INVALID_BUILD_OPTIONS);
        NAME(CL_INVALID_PROGRAM);
        NAME(CL_INVALID_PROGRAM_EXECUTABLE);
        NAME(CL_INVALID_KERNEL_NAME);
        NAME(CL_INVALID_KERNEL_DEFINITION);
        NAME(CL_INVALID_KERNEL);
        NAME(CL_INVALID_ARG_INDEX);
        NAME(CL_INVALID_ARG_VALUE);
        NAME(CL_INVALID_ARG_SIZE);
        NAME(CL_INVALID_KERNEL_ARGS);
        NAME(CL_INVALID_WORK_DIMENSION);
        NAME(CL_INVALID_WORK_GROUP_SIZE);
        NAME(CL_INVALID_WORK_ITEM_SIZE);
        NAME(CL_INVALID_GLOBAL_OFFSET);
        NAME(CL_INVALID_EVENT_WAIT_LIST);
        NAME(CL_INVALID_EVENT);
        NAME(CL_INVALID_OPERATION);
        NAME(CL_INVALID_GL_OBJECT);
        NAME(CL_INVALID_BUFFER_SIZE);
        NAME(CL_INVALID_MIP_LEVEL);
        NAME(CL_INVALID_GLOBAL_WORK_SIZE);
        NAME(CL_INVALID_PROPERTY);
        NAME(CL_INVALID_IMAGE_DESCRIPTOR);
        NAME(CL_INVALID_COMPILER_OPTIONS);
        NAME(CL_INVALID_LINKER_OPTIONS);
        NAME(CL_INVALID_DEVICE_PARTITION_COUNT);
#undef NAME
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "CL_UNKNOWN_STATUS";
    }
}

xattn_status ocl_fail(cl_int err, const char *what)
{
    xattn_status st = XATTN_ERR_DEVICE;
    if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_HOST_MEMORY ||
        err == CL_INVALID_BUFFER_SIZE)
        st = XATTN_ERR_OUT_OF_MEMORY;
    return xattn_error(st, "opencl: %s failed: %s (%d)", what, ocl_status_name(err), (int)err);
}
