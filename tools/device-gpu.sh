#!/usr/bin/env bash
# Build xattn on a GPU machine that reaches no package registry, then run the
# conformance suite, the GPU backends' tests and the benchmarks there. Every
# log lands in /tmp/xattn-gpu-logs, packed into $OUT/logs.tgz at the end (the
# device tool brings back only a few files); the summary table is printed last.
#
# usage: tools/device-gpu.sh [STEP...]
#   steps (default: all, in this order): probe deps build verify python
#   bench ref test
#   verify check, graph and sanitize at once (correctness only: their
#          timings are not read)
#   probe  what the machine has: GPU, driver, nvcc, OpenCL loader and ICDs
#   deps   unpack carried Debian packages from .debs/ (OpenCL headers and
#          loader, cmocka, pkgconf; fetch them on a Debian machine with
#          `apt-get download ...`) without overwriting any file already there,
#          and register NVIDIA's OpenCL driver if no ICD file names it
#   build  meson + ninja (the Python packages do) into build-gpu
#   check  `xattn check` on every GPU backend that has a module, required
#   graph  the cuda-graph test: a paged decode step and a MoE forward captured
#          into a CUDA graph and replayed (when the cuda module is built)
#   sanitize  compute-sanitizer memcheck and racecheck over a small subset of
#          the suite on the cuda backend (when its module is built)
#   python pip install . (meson-python carried in .whl/), then the Python
#          tests (tests/python) and the README's Python examples
#   profile  ncu (Nsight Compute) on the cuda paged decode, causal prefill
#          and MoE expert GEMM kernels of three bench runs (not by default)
#   test   the meson tests of those backends (needs cmocka)
#   bench  `xattn bench` on those backends, bf16, at the shapes step_bench
#          lists (BENCH_FULL=1: also the --full f32 and bf16 tables)
#   ref    PyTorch's SDPA (flash, cuDNN, memory-efficient) and cuBLAS GEMMs on
#          the bench's shapes, the vendor-library yardstick
#          (tools/gpu_reference.py)
#
# Environment: XATTN_GPU_BACKENDS (default: opencl, plus cuda/hip when their
# modules are built), XATTN_CHECK_SEED (default 1), STEP_TIMEOUT seconds.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

logs=/tmp/xattn-gpu-logs
rm -rf "$logs"
mkdir -p "$logs"
# shellcheck disable=SC2100  # a file name, not arithmetic
build=build-gpu
xattn=$build/tools/xattn
seed=${XATTN_CHECK_SEED:-1}
step_timeout=${STEP_TIMEOUT:-300}
export XATTN_CACHE_DIR=${XATTN_CACHE_DIR:-/tmp/xattn-cache}

note() { printf '\n==> %s\n' "$*"; }
# One line per step in summary.log (appends, so background steps count too).
record() { printf '%-34s %s\n' "$1" "$2" >>"$logs/summary.log"; }

# Run "$@" under the step timeout, output to the terminal and $logs/$name.log;
# record the exit status and wall time.
run_logged() {
    local name=$1; shift
    local t0=$SECONDS rc
    timeout "$step_timeout" "$@" >"$logs/$name.log" 2>&1
    rc=$?
    tail -n 25 "$logs/$name.log"
    record "$name" "rc=$rc  $((SECONDS - t0)) s"
    return $rc
}

step_probe() {
    note probe
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
            --format=csv 2>&1
        nvcc --version 2>&1 | tail -n 2
        gcc --version | head -n 1
        nproc
        echo "ICD files:"; ls -l /etc/OpenCL/vendors 2>&1
        echo "OpenCL libraries:"
        find / -xdev \( -name 'libnvidia-opencl.so*' -o -name 'libOpenCL.so*' \) \
            2>/dev/null | head -n 20
        echo "CL headers:"; ls -d /usr/include/CL /usr/local/cuda/include/CL 2>&1
        python3 -m mesonbuild.mesonmain --version 2>&1
    } | tee "$logs/probe.log"
}

step_deps() {
    note deps
    local root=/tmp/xattn-debs f lib
    mkdir -p "$root"
    for f in .debs/*.deb; do
        [ -e "$f" ] && dpkg-deb -x "$f" "$root"
    done
    # No clobbering: what the image has wins over the carried packages.
    [ -d "$root/usr" ] && cp -rn "$root/usr/." /usr/
    ldconfig
    if ! grep -qs nvidia /etc/OpenCL/vendors/*.icd; then
        lib=$(find / -xdev -name 'libnvidia-opencl.so.1' 2>/dev/null | head -n 1)
        if [ -n "$lib" ]; then
            mkdir -p /etc/OpenCL/vendors
            echo "$lib" >/etc/OpenCL/vendors/nvidia.icd
            echo "registered $lib"
        else
            echo "no libnvidia-opencl.so.1 on this machine"
        fi
    fi
    # NVRTC may sit outside the loader's path (a toolkit under /usr/local/cuda,
    # or PyTorch's wheel): the cuda module dlopens it by soname.
    if ! ldconfig -p | grep -q 'libnvrtc\.so\.1[23]'; then
        lib=$(find /usr/local/cuda* / -xdev -name 'libnvrtc.so.1[23]' 2>/dev/null | head -n 1)
        if [ -n "$lib" ]; then
            dirname "$lib" >/etc/ld.so.conf.d/xattn-nvrtc.conf
            ldconfig
            echo "NVRTC: $lib"
        fi
    fi
    # meson and ninja come as Python packages here.
    mkdir -p /tmp/xattn-bin
    if ! command -v meson >/dev/null; then
        printf '#!/bin/sh\nexec python3 -m mesonbuild.mesonmain "$@"\n' >/tmp/xattn-bin/meson
        chmod +x /tmp/xattn-bin/meson
    fi
    if ! command -v ninja >/dev/null; then
        ln -sf "$(python3 -c 'import ninja; print(ninja.BIN_DIR)')/ninja" /tmp/xattn-bin/ninja
    fi
}

step_build() {
    note build
    local tests=false
    pkg-config --exists cmocka 2>/dev/null && tests=true
    rm -rf "$build"
    run_logged build-setup meson setup "$build" -Dtests=$tests || return 1
    run_logged build-ninja ninja -C "$build" || return 1
    "$xattn" info >"$logs/info.log" 2>&1
    cat "$logs/info.log"
}

gpu_backends() {
    if [ -n "${XATTN_GPU_BACKENDS:-}" ]; then
        echo "$XATTN_GPU_BACKENDS" | tr ',' ' '
        return
    fi
    local b
    for b in opencl cuda hip; do
        [ -e "$build/backends/$b/libxattn-$b.so" ] && echo "$b"
    done
}

# The suite in three processes at once (the float64 reference is the CPU's
# work); each part fails on its own.
step_check() {
    local b part
    for b in $(gpu_backends); do
        note "check $b"
        for part in attn moe 'ref kv_append merge'; do
            # shellcheck disable=SC2046,SC2086
            XATTN_REQUIRE_BACKEND=$b run_logged "check-$b-${part%% *}" \
                "$xattn" check --backend "$b" --seed "$seed" \
                $(printf -- '--filter %s ' $part) &
        done
    done
    wait
    grep -h -E ' (FAIL|ERROR)' "$logs"/check-*.log | head -n 40
}

# The correctness steps at once: every backend's suite, the graph test and
# compute-sanitizer share the machine (16 cores here), which a lease's few
# minutes need.
step_verify() {
    step_check &
    step_graph &
    step_sanitize &
    wait
}

# compute-sanitizer on a few cases of each CUDA kernel: out-of-bounds or
# misaligned accesses (memcheck) and shared-memory races (racecheck).
step_sanitize() {
    [ -e "$build/backends/cuda/libxattn-cuda.so" ] || return 0
    command -v compute-sanitizer >/dev/null || { record sanitize "no compute-sanitizer"; return; }
    local tool filters
    filters=(--filter attn/paged --filter attn/varlen/causal/b3 --filter attn/causal+sinks
             --filter kv/ --filter merge/finite)
    for tool in memcheck racecheck; do
        note "compute-sanitizer $tool"
        XATTN_REQUIRE_BACKEND=cuda run_logged "sanitize-$tool" compute-sanitizer \
            --tool "$tool" --error-exitcode 3 "$xattn" check --backend cuda --seed "$seed" \
            "${filters[@]}"
    done
}

step_test() {
    [ -e "$build/tests" ] || { record test "no cmocka: not built"; return; }
    local b names
    for b in $(gpu_backends); do
        note "meson test ($b)"
        names=$(meson test -C "$build" --list 2>/dev/null | awk '{print $NF}' |
                grep -E -- "(^|-)$b(-|\$)" | grep -v -e '^conformance' -e '-emu$' |
                tr '\n' ' ')
        echo "tests: $names"
        [ -n "$names" ] || { record "test-$b" "no tests found"; continue; }
        # shellcheck disable=SC2086
        XATTN_REQUIRE_BACKEND=$b run_logged "test-$b" \
            meson test -C "$build" --print-errorlogs $names
    done
}

# The CUDA issue's shapes, bf16, on every GPU backend (cuda and opencl side
# by side): prefill B=1 Hq=Hkv=32 S=8192 D=128 causal and not; decode Sq=1
# Hq=32 Hkv=8 at Sk 4096 and 65536, B=1 dense and B 1 and 64 paged (page 16,
# lengths log-uniform up to Sk); the Qwen3-30B-A3B and DeepSeek-V3 MoE layers
# at T=4096 (with the experts that fit in --moe-mib). BENCH_FULL=1 adds the
# old `--full` f32 and bf16 tables.
step_bench() {
    local b sk batch
    local common=(--dtype bf16 --repeats "${BENCH_REPEATS:-10}" --warmup 2)
    for b in $(gpu_backends); do
        note "bench $b"
        # The device's own ceilings (copy, FMA loop, bf16 mma.sync on cuda):
        # the denominators of the decode target and of every % column.
        run_logged "bench-$b-ceilings" "$xattn" bench --backend "$b" --dtype bf16 \
            --workload ceilings
        run_logged "bench-$b-prefill" "$xattn" bench --backend "$b" "${common[@]}" \
            --workload prefill --batch 1 --sq 8192 --sk 8192 --hq 32 --hkv 32 --d 128
        for sk in 4096 65536; do
            run_logged "bench-$b-decode-$sk" "$xattn" bench --backend "$b" "${common[@]}" \
                --no-ceilings --workload decode --batch 1 --sk "$sk" --hq 32 --hkv 8 --d 128
            for batch in 1 64; do
                run_logged "bench-$b-paged-$sk-b$batch" "$xattn" bench --backend "$b" \
                    "${common[@]}" --no-ceilings --workload serving --batch "$batch" \
                    --sk "$sk" --hq 32 --hkv 8 --d 128 --page-size 16
            done
        done
        # --full brings DeepSeek-V3 in (and the other --full layers with it).
        run_logged "bench-$b-moe" "$xattn" bench --backend "$b" "${common[@]}" --no-ceilings \
            --full --workload moe --tokens 4096 --moe-mib "${BENCH_MOE_MIB:-8192}"
        if [ "${BENCH_FULL:-0}" = 1 ]; then
            local dt
            for dt in f32 bf16; do
                run_logged "bench-$b-full-$dt" "$xattn" bench --full --backend "$b" \
                    --dtype "$dt" --moe-mib 8192 --repeats 5
            done
        fi
    done
}

# The cuda-graph test (tests/cuda/test_graph.c): a decode step and a MoE
# forward captured into a CUDA graph and replayed, bit for bit. Plain C, so
# without cmocka (no tests built) it is compiled here against the build.
step_graph() {
    [ -e "$build/backends/cuda/libxattn-cuda.so" ] || return 0
    note "cuda graph capture"
    local exe=$build/tests/cuda/test-cuda-graph
    if [ ! -x "$exe" ]; then
        exe=$build/test-cuda-graph
        run_logged graph-build cc -std=c11 -O2 -Iapi tests/cuda/test_graph.c \
            -o "$exe" -L"$build" -lxattn -ldl -Wl,-rpath,"$PWD/$build" || return 1
    fi
    XATTN_BACKEND_DIR=$build/backends/cuda run_logged cuda-graph "$exe"
}

# The Python package: built and installed by pip from this tree (meson-python
# and pyproject-metadata carried as wheels in .whl/, since the machine reaches
# no registry), then its tests with CUDA (PyTorch, CuPy, JAX) and host tensors
# on every backend with a device, and the README's Python examples.
step_python() {
    note "Python package"
    local site=/tmp/xattn-pydeps pkg=/tmp/xattn-py
    rm -rf "$site" "$pkg"
    if ls .whl/meson_python-*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl
    fi
    PATH=$site/bin:$PATH PYTHONPATH=$site run_logged python-install python3 -m pip install --no-index \
        --no-build-isolation --no-deps --target "$pkg" . || return 1
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    (cd "$build" && PYTHONPATH=$pkg XATTN_REQUIRE_BACKEND=cuda,opencl run_logged python-tests \
        python3 -m pytest -q -rs -p no:cacheprovider ../tests/python)
    local dir f
    dir=$(mktemp -d)
    awk -v dir="$dir" '/^## Python$/ { sec = 1; next } /^## / { sec = 0 }
        sec && /^```python$/ { n++; on = 1; next } on && /^```$/ { on = 0; next }
        on { print > (dir "/example" n ".py") }' README.md
    for f in "$dir"/example*.py; do
        (cd "$dir" && PYTHONPATH=$pkg run_logged "readme-$(basename "$f" .py)" python3 "$f")
    done
}

# Nsight Compute on the cuda kernels of three bench runs (one launch each,
# after the warm-up): the paged decode at B=64 Sk<=65536, the causal prefill
# at S=8192, and the default MoE layers' expert GEMMs. Speed of light,
# occupancy, launch, warp stalls and memory sections; --clock-control none
# (the card's clocks are left alone).
step_profile() {
    [ -e "$build/backends/cuda/libxattn-cuda.so" ] || return 0
    command -v ncu >/dev/null || { record profile "no ncu"; return; }
    local ncu=(ncu --clock-control none --launch-skip 1 --launch-count 1
               --section SpeedOfLight --section LaunchStats --section Occupancy
               --section WarpStateStats --section MemoryWorkloadAnalysis)
    local bench=("$xattn" bench --backend cuda --dtype bf16 --repeats 1 --warmup 1
                 --no-ceilings)
    note "ncu"
    run_logged profile-decode "${ncu[@]}" -k regex:attn_mma "${bench[@]}" \
        --workload serving --batch 64 --sk 65536 --hq 32 --hkv 8 --d 128 --page-size 16
    run_logged profile-prefill "${ncu[@]}" -k regex:attn_mma "${bench[@]}" \
        --workload prefill --causal --batch 1 --sq 8192 --sk 8192 --hq 32 --hkv 32 --d 128
    run_logged profile-moe-up "${ncu[@]}" -k regex:moe_up "${bench[@]}" --workload moe \
        --tokens 4096
    run_logged profile-moe-down "${ncu[@]}" -k regex:moe_down "${bench[@]}" --workload moe \
        --tokens 4096
}

step_ref() {
    note "PyTorch reference"
    run_logged torch-ref python3 tools/gpu_reference.py
}

pack() {
    note summary
    cat "$logs/summary.log"
    if [ -n "${OUT:-}" ]; then tar czf "$OUT/logs.tgz" -C "$logs" .; fi
}
# Stopped by an outer timeout: the logs so far still come back.
trap 'pack; exit 124' TERM INT

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(probe deps build verify python bench ref test)
export PATH=/tmp/xattn-bin:$PATH
for s in "${steps[@]}"; do
    case "$s" in
        probe|deps|build|check|verify|graph|sanitize|test|bench|ref|python|profile) "step_$s" ;;
        *) echo "device-gpu.sh: unknown step $s" >&2; exit 2 ;;
    esac
done
pack
