#!/usr/bin/env bash
# CI on a GPU runner: build xattn with one GPU backend required, then run the
# conformance suite on that backend with XATTN_REQUIRE_BACKEND (so a runner
# whose GPU or driver is missing fails instead of passing by skipping), the
# backend's meson tests (when cmocka is installed), and `xattn bench`
# (a timing report, never a pass/fail gate).
#
# usage: tools/ci-gpu.sh hip|cuda [BUILD_DIR]
#   hip    an AMD runner with ROCm (5.x or 6.x): libamdhip64, hiprtc, the
#          device libraries and HIP's headers (Debian/Ubuntu: libamdhip64-dev
#          libhiprtc-builtins5 rocm-device-libs, or AMD's ROCm packages)
#   cuda   an NVIDIA runner with the driver, NVRTC and the CUDA headers
#   BUILD_DIR  default: build-ci-<backend>
#
# Environment: XATTN_CHECK_SEED (default 1), BENCH=0 skips the bench,
# BENCH_ARGS overrides the bench options (default: bf16, the short run).
# Exit status: 0 when the build, the check and the tests passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

backend=${1:-}
case "$backend" in
    hip|cuda) ;;
    -h|--help|'') sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; [ -n "$backend" ]; exit $? ;;
    *) echo "ci-gpu.sh: unknown backend '$backend' (hip or cuda)" >&2; exit 2 ;;
esac
build=${2:-build-ci-$backend}
seed=${XATTN_CHECK_SEED:-1}
status=0
step() { printf '\n==> %s\n' "$*"; }
failed() { echo "ci-gpu.sh: FAILED: $*" >&2; status=1; }

step "the machine"
if [ "$backend" = hip ]; then
    (command -v rocminfo >/dev/null && rocminfo | grep -E 'Marketing Name|  Name: +gfx' ) ||
        echo "rocminfo: not installed or no agent"
    ls /dev/kfd /dev/dri 2>&1 | head -n 5
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
fi

step "build ($build, -D$backend=enabled)"
tests=false
pkg-config --exists cmocka 2>/dev/null && tests=true
if ! meson setup "$build" --wipe -D"$backend"=enabled -Dtests=$tests >/dev/null 2>&1 &&
   ! meson setup "$build" -D"$backend"=enabled -Dtests=$tests; then
    echo "ci-gpu.sh: meson setup failed" >&2
    exit 1
fi
ninja -C "$build" || { echo "ci-gpu.sh: build failed" >&2; exit 1; }
xattn=$build/tools/xattn
XATTN_BACKEND=$backend "$xattn" info || failed "xattn info: the $backend backend has no device"

step "xattn check --backend $backend (XATTN_REQUIRE_BACKEND=$backend)"
XATTN_REQUIRE_BACKEND=$backend "$xattn" check --backend "$backend" --seed "$seed" ||
    failed "xattn check on $backend"

if [ "$tests" = true ]; then
    step "meson test --suite $backend"
    XATTN_REQUIRE_BACKEND=$backend meson test -C "$build" --suite "$backend" --print-errorlogs ||
        failed "meson tests of $backend"
else
    echo "cmocka not installed: the $backend meson tests are not built"
fi

if [ "${BENCH:-1}" != 0 ]; then
    step "xattn bench --backend $backend"
    # shellcheck disable=SC2086
    "$xattn" bench --backend "$backend" ${BENCH_ARGS:---dtype bf16} ||
        echo "ci-gpu.sh: the bench did not complete (not a failure of the run)"
fi
[ $status = 0 ] && step "ci-gpu.sh $backend: passed" || step "ci-gpu.sh $backend: FAILED"
exit $status
