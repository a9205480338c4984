/* Which kernel builds exist (meson defines XATTN_CPU_HAVE_X86 when it built
 * the x86-64 variants) and which of them this CPU can run. */
#include "cpu_kernels.h"

#if defined(XATTN_CPU_HAVE_X86)
#  include <cpuid.h>
#endif

#if defined(XATTN_CPU_HAVE_X86) && !(defined(__x86_64__) && defined(__GNUC__))
#  error "x86-64 kernel variants need an x86-64 GCC-compatible compiler"
#endif

#if defined(XATTN_CPU_HAVE_X86)
/* F16C (CPUID.1:ECX bit 29); not every compiler's __builtin_cpu_supports
 * knows its name. */
static int have_f16c(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && ((ecx >> 29) & 1u);
}
#endif

int xattn_cpu_isa_list(const xattn_cpu_isa **out)
{
    static const xattn_cpu_isa generic = {"generic", 1, xattn_cpu_attn_generic,
                                         xattn_cpu_moe_experts_generic};
#if defined(XATTN_CPU_HAVE_X86)
    static const xattn_cpu_isa all[] = {
        {"avx512", 16, xattn_cpu_attn_avx512, xattn_cpu_moe_experts_avx512},
        {"avx2", 8, xattn_cpu_attn_avx2, xattn_cpu_moe_experts_avx2},
        {"generic", 1, xattn_cpu_attn_generic, xattn_cpu_moe_experts_generic},
    };
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               have_f16c();
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512dq");
    if (avx512) {
        *out = &all[0];
        return 3;
    }
    if (avx2) {
        *out = &all[1];
        return 2;
    }
#endif
    *out = &generic;
    return 1;
}
