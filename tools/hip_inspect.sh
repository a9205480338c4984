#!/bin/sh
# Compile the HIP MFMA kernels with hiprtc (the compiler the hip module
# uses) for CDNA and RDNA targets and report, per variant: v_mfma
# instructions (llvm-objdump), VGPR/AGPR/SGPR counts, spills, scratch
# (private segment; llvm-readelf --notes on the code object) and LDS (static
# from the notes plus the dynamic size the options give).
#
# usage: tools/hip_inspect.sh [ARCH...]     (default: gfx90a gfx908 gfx1030)
#
# Never pass an architecture the installed hiprtc does not know (ROCm 5.2:
# gfx942 and gfx11xx abort the process). Needs hiprtc.h, libamdhip64, a C
# compiler and llvm-objdump/llvm-readelf (LLVM 15 names tried first). Exits
# non-zero when a variant fails to compile, when a CDNA attention or GEMM
# object has no v_mfma, or when one spills or uses scratch.
set -eu
cd "$(dirname "$0")/.."
K=backends/hip/kernels
ARCHS=${*:-gfx90a gfx908 gfx1030}
OBJDUMP=$(command -v llvm-objdump-15 || command -v llvm-objdump)
READELF=$(command -v llvm-readelf-15 || command -v llvm-readelf)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# A tiny hiprtc driver: rtc SOURCE OUT OPTIONS...
cat > "$TMP/rtc.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <hip/hiprtc.h>
int main(int argc, char **argv)
{
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *src = malloc((size_t)n + 1);
    if (!src || fread(src, 1, (size_t)n, f) != (size_t)n) return 2;
    src[n] = 0;
    fclose(f);
    hiprtcProgram p;
    if (hiprtcCreateProgram(&p, src, argv[1], 0, NULL, NULL) != HIPRTC_SUCCESS) return 2;
    hiprtcResult r = hiprtcCompileProgram(p, argc - 3, (const char **)argv + 3);
    size_t ls = 0;
    hiprtcGetProgramLogSize(p, &ls);
    if (ls > 1) {
        char *log = malloc(ls);
        if (log && hiprtcGetProgramLog(p, log) == HIPRTC_SUCCESS) fprintf(stderr, "%s\n", log);
    }
    if (r != HIPRTC_SUCCESS) {
        fprintf(stderr, "hiprtc: %s\n", hiprtcGetErrorString(r));
        return 1;
    }
    size_t cs = 0;
    hiprtcGetCodeSize(p, &cs);
    char *code = malloc(cs);
    if (!code || hiprtcGetCode(p, code) != HIPRTC_SUCCESS) return 2;
    FILE *o = fopen(argv[2], "wb");
    if (!o || fwrite(code, 1, cs, o) != cs) return 2;
    return fclose(o) != 0;
}
C
${CC:-cc} -O1 -D__HIP_PLATFORM_AMD__ -o "$TMP/rtc" "$TMP/rtc.c" -lamdhip64

# name | source | options (as the host would pass them for the plan;
# the attention rows follow `xattn plan --preset mi300x --dtype f16`; "mla
# Q_DIRECT" is the planner's MLA tile on the AMD presets, 32 rows with Q
# in registers; "mla q16k16" the 16-row tile it replaced). The meson test
# hip-compile does the same for every variant of the conformance
# catalogue; this tool is for trying options by hand.
VARIANTS='
attn d64 q128k64s2|attn_mfma|-DBQ=128 -DBK=64 -DKC=32 -DWARPS_M=4 -DWARPS_N=1 -DSTAGES=2 -DDQK=64 -DDV=64 -DDQK_PAD=64 -DDV_PAD=64
attn d128 q128k64s1|attn_mfma|-DBQ=128 -DBK=64 -DKC=32 -DWARPS_M=4 -DWARPS_N=1 -DSTAGES=1 -DDQK=128 -DDV=128 -DDQK_PAD=128 -DDV_PAD=128
attn d128 decode q16k32s2|attn_mfma|-DBQ=16 -DBK=32 -DKC=32 -DWARPS_M=1 -DWARPS_N=4 -DSTAGES=2 -DDQK=128 -DDV=128 -DDQK_PAD=128 -DDV_PAD=128
attn d256 q64k32s1|attn_mfma|-DBQ=64 -DBK=32 -DKC=32 -DWARPS_M=4 -DWARPS_N=1 -DSTAGES=1 -DDQK=256 -DDV=256 -DDQK_PAD=256 -DDV_PAD=256
attn d192/128 q64k64s1|attn_mfma|-DBQ=64 -DBK=64 -DKC=64 -DWARPS_M=4 -DWARPS_N=1 -DSTAGES=1 -DDQK=192 -DDV=128 -DDQK_PAD=192 -DDV_PAD=128
attn mla 576/512 q16k16s1|attn_mfma|-DBQ=16 -DBK=16 -DKC=16 -DWARPS_M=1 -DWARPS_N=4 -DSTAGES=1 -DDQK=576 -DDV=512 -DDQK_PAD=576 -DDV_PAD=512
attn mla Q_DIRECT q32k16s1|attn_mfma|-DBQ=32 -DBK=16 -DKC=16 -DWARPS_M=2 -DWARPS_N=2 -DSTAGES=1 -DDQK=576 -DDV=512 -DDQK_PAD=576 -DDV_PAD=512 -DQ_DIRECT=1
moe H4096 I14336 T512|moe_gemm_mfma|-DB=f16 -DB_F16=1 -DHAS_B1=1 -DHAS_B2=1 -DW1_IL=0 -DUP_BM=128 -DUP_BN=128 -DUP_BK=32 -DUP_THREADS=256 -DUP_STAGES=2 -DUP_WARPS_M=2 -DDOWN_BM=128 -DDOWN_BN=64 -DDOWN_BK=32 -DDOWN_THREADS=256 -DDOWN_STAGES=4 -DDOWN_WARPS_M=2
moe H4096 I14336 T4|moe_gemm_mfma|-DB=f32 -DB_F32=1 -DHAS_B1=0 -DHAS_B2=0 -DW1_IL=1 -DUP_BM=16 -DUP_BN=128 -DUP_BK=32 -DUP_THREADS=256 -DUP_STAGES=3 -DUP_WARPS_M=1 -DDOWN_BM=16 -DDOWN_BN=64 -DDOWN_BK=64 -DDOWN_THREADS=256 -DDOWN_STAGES=4 -DDOWN_WARPS_M=1
'

# Dynamic LDS of a variant in bytes, from its options (the kernels' own
# formulas: attn_mfma.hip and moe_gemm_mfma.hip headers).
lds_of() { # SOURCE OPTIONS
    echo "$2" | tr ' ' '\n' | sed -n 's/^-D\([A-Z_]*\)=\([0-9]*\)$/\1=\2/p' > "$TMP/opts"
    awk -F= -v src="$1" '{ v[$1] = $2 }
        function nb(s) { return s > 1 ? 2 : 1 }
        END {
            if (src == "attn_mfma") {
                q = v["Q_DIRECT"] ? 0 : v["BQ"] * v["DQK_PAD"]
                print 2 * (q + nb(v["STAGES"]) * v["BK"] * (v["DQK_PAD"] + v["DV_PAD"]))
            } else {
                up = nb(v["UP_STAGES"]) * (v["UP_BM"] + 2 * v["UP_BN"]) * v["UP_BK"] * 2
                down = nb(v["DOWN_STAGES"]) * (v["DOWN_BM"] + v["DOWN_BN"]) * v["DOWN_BK"] * 2
                print (up > down ? up : down)
            }
        }' "$TMP/opts"
}
LDS_LIMIT=65536

fail=0
printf '%-28s %-5s %-8s %6s %5s %5s %5s %7s %7s %8s %7s\n' variant dtype arch mfma vgpr agpr sgpr vspill sspill scratch lds
for arch in $ARCHS; do
    for dt in f16 bf16; do
        echo "$VARIANTS" | while IFS='|' read -r name src opts; do
            [ -n "$name" ] || continue
            [ -f "$K/$src.hip" ] || continue
            dflags="-DIO=$dt -DW=$dt"
            [ "$dt" = bf16 ] && dflags="$dflags -DIO_BF16=1 -DW_BF16=1"
            co="$TMP/k.co"
            # shellcheck disable=SC2086
            if ! "$TMP/rtc" "$K/$src.hip" "$co" --offload-arch=$arch -O3 $dflags $opts \
                >"$TMP/log" 2>&1; then
                printf '%-28s %-5s %-8s COMPILE FAILED\n' "$name" "$dt" "$arch"
                sed 's/^/    /' "$TMP/log" | head -20
                echo fail >> "$TMP/failed"
                continue
            fi
            mfma=$("$OBJDUMP" -d "$co" | grep -c 'v_mfma' || true)
            "$READELF" --notes "$co" > "$TMP/notes"
            # The largest value of a note over the object's kernels.
            note() { awk -v k="$1" '$1 == k":" || $1 == "- "k":" { if ($2 + 0 > m) m = $2 + 0 } $2 == k":" { if ($3 + 0 > m) m = $3 + 0 } END { print m + 0 }' "$TMP/notes"; }
            vgpr=$(note .vgpr_count); agpr=$(note .agpr_count); sgpr=$(note .sgpr_count)
            vsp=$(note .vgpr_spill_count); ssp=$(note .sgpr_spill_count)
            priv=$(note .private_segment_fixed_size)
            lds=$(( $(note .group_segment_fixed_size) + $(lds_of "$src" "$opts") ))
            printf '%-28s %-5s %-8s %6s %5s %5s %5s %7s %7s %8s %7s\n' "$name" "$dt" "$arch" \
                "$mfma" "$vgpr" "$agpr" "$sgpr" "$vsp" "$ssp" "$priv" "$lds"
            case "$arch" in
            gfx90a | gfx94*) cdna_hw=1 ;;
            gfx908) [ "$dt" = f16 ] && cdna_hw=1 || cdna_hw=0 ;;
            *) cdna_hw=0 ;;
            esac
            if [ "$cdna_hw" = 1 ] && [ "$mfma" -eq 0 ]; then
                echo "    error: no v_mfma in a CDNA object"; echo fail >> "$TMP/failed"
            fi
            if [ "$cdna_hw" = 1 ] && { [ "$vsp" -ne 0 ] || [ "$priv" -ne 0 ]; }; then
                echo "    error: spills or scratch"; echo fail >> "$TMP/failed"
            fi
            if [ "$lds" -gt "$LDS_LIMIT" ]; then
                echo "    error: LDS over $LDS_LIMIT bytes"; echo fail >> "$TMP/failed"
            fi
        done
    done
done
echo "(lds: static LDS from the notes + the dynamic LDS the kernel's formula gives for the options)"
[ ! -f "$TMP/failed" ]
