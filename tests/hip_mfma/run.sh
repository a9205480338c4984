#!/bin/sh
# Build and run the MFMA kernels on the wave64 emulator, one build per tile
# configuration and dtype, each with fibers in a shuffled order and once
# more through the unaligned-load path.
# usage: run.sh CLANGXX KERNEL_DIR
set -eu
CXX=$1
K=$2
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0

build_run() { # NAME SOURCE KERNEL FLAGS
    if ! "$CXX" -std=c++17 -O1 -w -DXATTN_HIP_EMU=1 -DKERNEL="\"$3\"" $4 -I"$HERE" \
        "$HERE/$2" -o "$TMP/t" 2> "$TMP/log"; then
        echo "$1: build failed"; head -20 "$TMP/log"; fail=1; return
    fi
    for mode in SHUFFLE UNALIGNED; do
        if env "$mode=1" "$TMP/t" > "$TMP/out" 2>&1; then
            echo "$1 ($mode): $(tail -n 1 "$TMP/out")"
        else
            echo "$1 ($mode): FAILED"; cat "$TMP/out"; fail=1
        fi
    done
}

# Tiles: two row bands; one band and two Dv halves (decode); Q straight to
# registers with head dims that are not powers of two and Dv padded; Q
# re-read from LDS with 64-key tiles in two chunks.
ATTN_TILES='
-DBQ=32 -DBK=32 -DKC=16 -DWARPS_M=2 -DWARPS_N=1 -DSTAGES=2 -DDQK=64 -DDV=64 -DDQK_PAD=64 -DDV_PAD=64
-DBQ=16 -DBK=32 -DKC=32 -DWARPS_M=1 -DWARPS_N=2 -DSTAGES=1 -DDQK=64 -DDV=64 -DDQK_PAD=64 -DDV_PAD=64
-DBQ=32 -DBK=16 -DKC=16 -DWARPS_M=2 -DWARPS_N=2 -DSTAGES=1 -DDQK=80 -DDV=48 -DDQK_PAD=80 -DDV_PAD=64 -DQ_DIRECT=1
-DBQ=64 -DBK=64 -DKC=32 -DWARPS_M=2 -DWARPS_N=1 -DSTAGES=1 -DDQK=128 -DDV=128 -DDQK_PAD=128 -DDV_PAD=128 -DQ_REGS=0
'
MOE_TILES='
-DB=f32 -DB_F32=1 -DHAS_B1=1 -DHAS_B2=1 -DW1_IL=0 -DUP_BM=32 -DUP_BN=32 -DUP_BK=32 -DUP_THREADS=256 -DUP_STAGES=2 -DUP_WARPS_M=2 -DDOWN_BM=32 -DDOWN_BN=32 -DDOWN_BK=16 -DDOWN_THREADS=128 -DDOWN_STAGES=1 -DDOWN_WARPS_M=1
-DB=IO -DB_IO=1 -DHAS_B1=1 -DHAS_B2=0 -DW1_IL=1 -DUP_BM=16 -DUP_BN=64 -DUP_BK=64 -DUP_THREADS=256 -DUP_STAGES=1 -DUP_WARPS_M=1 -DDOWN_BM=16 -DDOWN_BN=16 -DDOWN_BK=32 -DDOWN_THREADS=64 -DDOWN_STAGES=3 -DDOWN_WARPS_M=1
'
for dt in f16 bf16; do
    up=$(echo "$dt" | tr a-z A-Z)
    dflags="-DIO=$dt -DW=$dt -DIO_$up=1 -DW_$up=1"
    n=0
    while read -r tile; do
        [ -n "$tile" ] || continue
        n=$((n + 1))
        build_run "attn $dt tile $n" attn_test.cpp "$K/attn_mfma.hip" "$dflags $tile"
    done <<EOT
$ATTN_TILES
EOT
    n=0
    while read -r tile; do
        [ -n "$tile" ] || continue
        n=$((n + 1))
        tile=$(echo "$tile" | sed "s/-DB=IO -DB_IO=1/-DB=$dt -DB_$up=1/")
        build_run "moe $dt tile $n" moe_test.cpp "$K/moe_gemm_mfma.hip" "$dflags $tile"
    done <<EOT
$MOE_TILES
EOT
done
exit $fail
