/* Device presets for the planner and `xattn plan --preset`, and the caps of
 * the host CPU read at run time. Figures are the vendors' published numbers
 * (dense, no sparsity); peak FLOP/s for f16 is the matrix-unit rate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__linux__)
#  include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#  include <cpuid.h>
#endif

#include "plan.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

typedef struct preset {
    const char *name;
    xattn_device_caps caps;
} preset;

/* The GPU presets describe one device as its CUDA/HIP runtime reports it: a
 * group may use all of one SM's / CU's shared memory and registers. */
static const preset presets[] = {
    {"h100",
     {.name = "NVIDIA H100 SXM5 (preset)",
      .style = XATTN_DEVICE_STYLE_GPU,
      .compute_units = 132,
      .simd_width = 32,
      .local_mem_bytes = 227 * KIB, /* opt-in maximum per block */
      .cache_bytes = 50 * MIB,
      .max_threads_per_group = 1024,
      .registers_per_group = 65536,
      .matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16 | XATTN_MATRIX_TF32,
      .matrix_m = 16, .matrix_n = 8, .matrix_k = 16, /* mma.sync m16n8k16 */
      .vector_bytes = 16,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 67e12,
      .peak_flops_f16 = 989e12,
      .peak_bytes_per_s = 3.35e12}},
    /* The H200: the H100's SMs, clocks and matrix rates with 141 GB of
     * HBM3e at 4.8 TB/s. */
    {"h200",
     {.name = "NVIDIA H200 SXM (preset)",
      .style = XATTN_DEVICE_STYLE_GPU,
      .compute_units = 132,
      .simd_width = 32,
      .local_mem_bytes = 227 * KIB,
      .cache_bytes = 50 * MIB,
      .max_threads_per_group = 1024,
      .registers_per_group = 65536,
      .matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16 | XATTN_MATRIX_TF32,
      .matrix_m = 16, .matrix_n = 8, .matrix_k = 16,
      .vector_bytes = 16,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 67e12,
      .peak_flops_f16 = 989e12,
      .peak_bytes_per_s = 4.8e12}},
    {"a100",
     {.name = "NVIDIA A100 SXM4 (preset)",
      .style = XATTN_DEVICE_STYLE_GPU,
      .compute_units = 108,
      .simd_width = 32,
      .local_mem_bytes = 163 * KIB,
      .cache_bytes = 40 * MIB,
      .max_threads_per_group = 1024,
      .registers_per_group = 65536,
      .matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16 | XATTN_MATRIX_TF32,
      .matrix_m = 16, .matrix_n = 8, .matrix_k = 16,
      .vector_bytes = 16,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 19.5e12,
      .peak_flops_f16 = 312e12,
      .peak_bytes_per_s = 2.0e12}},
    /* CDNA MFMA also has 32x32x8; 16x16x16 runs at the same rate per CU and
     * is the finer quantum, so tiles for wide head dims still fit 64 KiB. */
    {"mi300x",
     {.name = "AMD Instinct MI300X (preset)",
      .style = XATTN_DEVICE_STYLE_GPU,
      .compute_units = 304,
      .simd_width = 64,
      .local_mem_bytes = 64 * KIB,
      .cache_bytes = 4 * MIB, /* L2 per XCD; 256 MiB Infinity Cache behind it */
      .max_threads_per_group = 1024,
      .registers_per_group = 131072, /* 512 KiB VGPR file per CU */
      .matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16 | XATTN_MATRIX_TF32,
      .matrix_m = 16, .matrix_n = 16, .matrix_k = 16,
      .vector_bytes = 16,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 163.4e12,
      .peak_flops_f16 = 1307.4e12,
      .peak_bytes_per_s = 5.3e12}},
    {"mi250x",
     {.name = "AMD Instinct MI250X, one GCD (preset)",
      .style = XATTN_DEVICE_STYLE_GPU,
      .compute_units = 110,
      .simd_width = 64,
      .local_mem_bytes = 64 * KIB,
      .cache_bytes = 8 * MIB,
      .max_threads_per_group = 1024,
      .registers_per_group = 131072,
      .matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16,
      .matrix_m = 16, .matrix_n = 16, .matrix_k = 16,
      .vector_bytes = 16,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 47.9e12,
      .peak_flops_f16 = 191.5e12,
      .peak_bytes_per_s = 1.6e12}},
    {"rx7900xtx",
     {.name = "AMD Radeon RX 7900 XTX (preset)",
      .style = XATTN_DEVICE_STYLE_GPU,
      .compute_units = 96,
      .simd_width = 32, /* wave32, HIP's default on RDNA */
      .local_mem_bytes = 64 * KIB,
      .cache_bytes = 6 * MIB,
      .max_threads_per_group = 1024,
      .registers_per_group = 98304, /* 2 × 192 KiB VGPR per CU */
      .matrix_dtypes = XATTN_MATRIX_F16 | XATTN_MATRIX_BF16,
      .matrix_m = 16, .matrix_n = 16, .matrix_k = 16, /* WMMA */
      .vector_bytes = 16,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 61e12,
      .peak_flops_f16 = 123e12,
      .peak_bytes_per_s = 960e9}},
    /* PoCL's CPU device on a generic 2-core AVX-512 machine at 2.5 GHz with
     * two FMA pipes: 2 · 2 · 16 lanes · 2 FLOP · 2.5 GHz. */
    {"pocl-cpu",
     {.name = "PoCL CPU, 2 cores AVX-512 (preset)",
      .style = XATTN_DEVICE_STYLE_CPU,
      .compute_units = 2,
      .simd_width = 16,
      .local_mem_bytes = 1 * MIB, /* L2 per core */
      .cache_bytes = 32 * KIB,    /* L1d per core */
      .max_threads_per_group = 4096, /* PoCL's work-group limit */
      .registers_per_group = 0,
      .matrix_dtypes = 0,
      .vector_bytes = 64,
      .has_f16 = 1, .has_bf16 = 1,
      .peak_flops_f32 = 320e9,
      .peak_flops_f16 = 320e9,
      .peak_bytes_per_s = 20e9}},
};

static const char *const preset_names[] = {
    "h100", "h200", "a100", "mi300x", "mi250x", "rx7900xtx", "pocl-cpu", "host", NULL,
};

const char *const *xattn_preset_names(void) { return preset_names; }

int xattn_preset_caps(const char *name, xattn_device_caps *out)
{
    if (!name || !out) return 0;
    if (!strcmp(name, "host")) {
        xattn_host_cpu_caps(0, out);
        return 1;
    }
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (!strcmp(name, presets[i].name)) {
            *out = presets[i].caps;
            return 1;
        }
    }
    return 0;
}

/* ---- host CPU ------------------------------------------------------------ */

/* Fallbacks when the OS does not say; deliberately modest. */
#define HOST_DEFAULT_L1D (32u * KIB)
#define HOST_DEFAULT_L2 (512u * KIB)
#define HOST_DEFAULT_HZ 2.5e9
/* Two FMA pipes per core is the norm for x86-64 and Arm server cores. */
#define HOST_FMA_PIPES 2.0
/* Rough sustained DRAM bandwidth per core, capped by a socket's worth;
 * `xattn bench` measures the real ceiling. */
#define HOST_BYTES_PER_CORE 10e9
#define HOST_BYTES_MAX 200e9

static uint32_t host_cores(void)
{
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return (uint32_t)n;
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1u;
}

/* Size in bytes of cpu0's cache at level with type "Data" or "Unified", from
 * sysfs; 0 if absent. */
static uint32_t sysfs_cache_bytes(int level)
{
    for (int index = 0; index < 8; index++) {
        char path[96], buf[32];
        int lvl = 0;
        FILE *f;

        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        if (!(f = fopen(path, "r"))) break;
        if (fscanf(f, "%d", &lvl) != 1) lvl = 0;
        fclose(f);
        if (lvl != level) continue;

        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
        if (!(f = fopen(path, "r"))) continue;
        int usable = fgets(buf, sizeof buf, f) &&
                     (!strncmp(buf, "Data", 4) || !strncmp(buf, "Unified", 7));
        fclose(f);
        if (!usable) continue;

        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        if (!(f = fopen(path, "r"))) continue;
        unsigned long size = 0;
        char unit = 0;
        int got = fscanf(f, "%lu%c", &size, &unit);
        fclose(f);
        if (got < 1) continue;
        if (got == 2 && (unit == 'K' || unit == 'k')) size *= KIB;
        else if (got == 2 && (unit == 'M' || unit == 'm')) size *= MIB;
        return size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
    }
    return 0;
}

static uint32_t host_cache_bytes(int level, uint32_t fallback)
{
    long v = -1;
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
    v = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
#endif
    if (v > 0) return v > (long)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    uint32_t s = sysfs_cache_bytes(level);
    return s ? s : fallback;
}

/* Nominal clock: cpufreq's maximum, else /proc/cpuinfo's "cpu MHz". */
static double host_hz(void)
{
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", "r");
    if (f) {
        unsigned long khz = 0;
        int ok = fscanf(f, "%lu", &khz) == 1;
        fclose(f);
        if (ok && khz > 0) return (double)khz * 1e3;
    }
    f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        double mhz = 0;
        while (fgets(line, sizeof line, f)) {
            if (!strncmp(line, "cpu MHz", 7)) {
                const char *colon = strchr(line, ':');
                if (colon) mhz = strtod(colon + 1, NULL);
                break;
            }
        }
        fclose(f);
        if (mhz > 0) return mhz * 1e6;
    }
    return HOST_DEFAULT_HZ;
}

/* f32 lanes of the widest vector unit the OS lets us use, and the lanes each
 * FMA pipe retires per cycle (AMD before Zen 5 splits 512-bit ops in two). */
static void host_simd(uint32_t *lanes, uint32_t *fma_lanes)
{
    *lanes = 4; /* SSE2 / NEON */
    *fma_lanes = 4;
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) *lanes = 16;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) *lanes = 8;
    *fma_lanes = *lanes;
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        unsigned family = (eax >> 8) & 0xfu;
        if (family == 0xfu) family += (eax >> 20) & 0xffu;
        if (__builtin_cpu_is("amd") && family < 0x1a && *lanes > 8) *fma_lanes = 8;
    }
#endif
}

void xattn_host_cpu_caps(int32_t num_threads, xattn_device_caps *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    uint32_t cores = host_cores();
    uint32_t threads = num_threads > 0 ? (uint32_t)num_threads : cores;
    uint32_t lanes, fma_lanes;
    host_simd(&lanes, &fma_lanes);

    snprintf(out->name, sizeof out->name, "host CPU, %u thread%s, %u-lane f32 SIMD", threads,
             threads == 1 ? "" : "s", lanes);
    out->style = XATTN_DEVICE_STYLE_CPU;
    out->compute_units = threads;
    out->simd_width = lanes;
    out->local_mem_bytes = host_cache_bytes(2, HOST_DEFAULT_L2);
    out->cache_bytes = host_cache_bytes(1, HOST_DEFAULT_L1D);
    out->max_threads_per_group = 1; /* a CPU worker is one thread */
    out->registers_per_group = 0;
    out->matrix_dtypes = 0;
    out->vector_bytes = lanes * 4u;
    /* Every kernel build converts f16 and bf16 (F16C where the ISA has it,
     * bit arithmetic otherwise), so the built-in backend takes all dtypes. */
    out->has_f16 = 1;
    out->has_bf16 = 1;

    /* Peaks count the cores actually used, but never more than exist. */
    double used = threads < cores ? threads : cores;
    out->peak_flops_f32 = used * HOST_FMA_PIPES * fma_lanes * 2.0 * host_hz();
    out->peak_flops_f16 = out->peak_flops_f32; /* converted to f32, then FMA */
    double bw = used * HOST_BYTES_PER_CORE;
    out->peak_bytes_per_s = bw < HOST_BYTES_MAX ? bw : HOST_BYTES_MAX;
}
