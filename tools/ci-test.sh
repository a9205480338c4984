#!/usr/bin/env bash
# Build xattn with warnings as errors and run its test suite (`meson test`),
# then a smoke run of `xattn bench` on tiny shapes, the README's C example
# and (not with --sanitize) the Python package: pip install . into a venv
# under BUILD_DIR, its pytest suite and the README's Python examples. This
# is the README's test command and the body of .ci/run, so the two cannot
# drift apart.
#
# usage: tools/ci-test.sh [--no-deps] [--sanitize] [BUILD_DIR]
#   --no-deps    do not install the Debian packages (they are already there)
#   --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer build
#                (debugoptimized); any sanitizer report fails the run
#   BUILD_DIR    default: build-test, or build-asan with --sanitize
#
# Installing packages needs root (or sudo). Runs on Debian 12 and later.
set -euo pipefail

# What the build and the tests need, plus what the GPU-backend issues build
# against (OpenCL headers and loader, PoCL as a CPU OpenCL device; ROCm 5.2's
# HIP headers, runtime and hiprtc with the device libraries and code-object
# manager it compiles with, and LLVM 15's readelf/objdump, which the
# hip-compile test inspects the code objects with). The CUDA toolkit is not
# a Debian package here: install NVIDIA's where wanted.
PACKAGES=(gcc g++ meson ninja-build pkg-config libcmocka-dev libdlpack-dev
          ocl-icd-opencl-dev opencl-headers pocl-opencl-icd
          libamdhip64-dev libhiprtc-builtins5 rocm-device-libs libamd-comgr2 llvm-15
          python3-venv)

deps=1 sanitize=0 build_dir=
for arg in "$@"; do
    case "$arg" in
        --no-deps) deps=0 ;;
        --sanitize) sanitize=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "ci-test.sh: unknown option $arg" >&2; exit 2 ;;
        *) build_dir=$arg ;;
    esac
done
if [ -z "$build_dir" ]; then
    if [ "$sanitize" = 1 ]; then build_dir=build-asan; else build_dir=build-test; fi
fi

cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

install_deps() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
            missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        step "packages: all installed"
        return
    fi
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || {
            echo "ci-test.sh: need root or sudo to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    step "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

if [ "$deps" = 1 ]; then install_deps; fi

setup_args=(-Dtests=true)
if [ "$sanitize" = 1 ]; then
    # Not --werror here: sanitizer instrumentation at -O2 makes GCC warn
    # about code it cannot see through; the plain build is the warning gate.
    setup_args+=(--buildtype=debugoptimized '-Db_sanitize=address,undefined'
                 -Db_lundef=false)
    # halt_on_error: the first report fails the test. LeakSanitizer needs
    # ptrace, which some containers forbid; there it is off, and says so.
    leaks=1
    probe=$(mktemp -d)
    echo 'int main(void) { return 0; }' > "$probe/p.c"
    if ! { cc -fsanitize=address "$probe/p.c" -o "$probe/p" &&
           ASAN_OPTIONS=detect_leaks=1 "$probe/p"; } >/dev/null 2>&1; then
        leaks=0
        echo "ci-test.sh: LeakSanitizer does not work here; leak checks off" >&2
    fi
    rm -rf "$probe"
    export ASAN_OPTIONS="detect_leaks=$leaks:halt_on_error=1:abort_on_error=1:print_summary=1"
    export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1"
else
    setup_args+=(--werror)
fi

step "meson setup $build_dir ${setup_args[*]}"
if [ -f "$build_dir/build.ninja" ]; then
    meson setup --reconfigure "$build_dir" "${setup_args[@]}"
else
    meson setup "$build_dir" "${setup_args[@]}"
fi

step "ninja -C $build_dir"
ninja -C "$build_dir"

# The script installs PoCL, so the OpenCL backend must run here: a skipped
# OpenCL conformance run (no device) fails instead of passing quietly.
export XATTN_REQUIRE_BACKEND=opencl

step "meson test -C $build_dir"
meson test -C "$build_dir" --print-errorlogs

# The bench must run every code path, not measure anything: small shapes, one
# repeat, and no timing is checked (benchmarks are never tests). It fails on
# any failed call other than XATTN_ERR_UNSUPPORTED, and on malformed JSON.
# --full: every workload of the full run (all MoE presets), at these shapes.
step "xattn bench smoke run"
xattn=$build_dir/tools/xattn
json=$(mktemp)
"$xattn" bench --full --repeats 1 --warmup 1 --sq 64 --sk 96 --hq 4 --hkv 2 --d 64 \
    --tokens 16 --hidden 64 --inter 32 --experts 16 --bandwidth-mib 16 --json >"$json"
python3 -m json.tool "$json" >/dev/null
rm -f "$json"
"$xattn" bench --repeats 1 --warmup 0 --sq 33 --sk 70 --hq 4 --hkv 4 --d 64 \
    --dtype bf16 --no-ceilings --workload prefill
# MoE with T chosen by the bench itself and mixed dtypes. 16 experts: the
# DeepSeek-V3 preset's groups need a multiple of 8.
"$xattn" bench --full --repeats 1 --warmup 0 --workload moe --hidden 64 --inter 32 \
    --experts 16 --moe-mib 16 --dtype bf16 --weight-dtype f16 --no-ceilings
# The same workloads on OpenCL (PoCL), both kernel styles.
for style in cpu gpu; do
    XATTN_OPENCL_STYLE=$style "$xattn" bench --full --backend opencl --repeats 1 --warmup 0 \
        --sq 33 --sk 70 --hq 4 --hkv 2 --d 64 --tokens 16 --hidden 64 --inter 32 \
        --experts 16 --moe-mib 16 --dtype bf16 --weight-dtype f16 --no-ceilings
done

if [ "$sanitize" = 0 ]; then
    # The README's C example must compile against the public headers alone
    # and run on the backend XATTN_BACKEND picks (the CPU unless set).
    step "README example"
    dir=$(mktemp -d)
    awk '/^```c$/ { on = 1; next } /^```$/ { if (on) exit } on' README.md >"$dir/example.c"
    test -s "$dir/example.c"
    cc -std=c11 -Wall -Wextra -Wshadow -Wmissing-prototypes -Werror -Iapi \
        "$dir/example.c" -o "$dir/example" -L"$build_dir" -lxattn \
        -Wl,-rpath,"$PWD/$build_dir"
    "$dir/example"
    rm -rf "$dir"

    # The Python package: `pip install .` (meson-python and the test tools
    # come from PyPI) into a virtual environment, its tests against the
    # installed wheel (cpu and PoCL; PyTorch's are skipped where it is not
    # installed, and say so), then the README's Python examples; an example
    # that imports torch is skipped, with a note, where PyTorch is missing.
    step "Python package: pip install ., mypy and pytest"
    venv=$PWD/$build_dir/venv
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q . pytest numpy mypy
    # The package is typed (py.typed): its annotations must check.
    "$venv/bin/python" -m mypy --ignore-missing-imports --no-error-summary api/python/xattn
    (cd "$build_dir" && "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider \
        "$OLDPWD/tests/python")
    step "README Python examples"
    dir=$(mktemp -d)
    awk -v dir="$dir" '/^## Python$/ { sec = 1; next } /^## / { sec = 0 }
        sec && /^```python$/ { n++; on = 1; next } on && /^```$/ { on = 0; next }
        on { print > (dir "/example" n ".py") }' README.md
    ls "$dir"/example*.py >/dev/null
    for f in "$dir"/example*.py; do
        if grep -q '^import torch' "$f" && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
            echo "$(basename "$f"): skipped, PyTorch is not installed"
            continue
        fi
        (cd "$dir" && "$venv/bin/python" "$f")
        echo "$(basename "$f"): ok"
    done
    rm -rf "$dir"
fi

step "ok: $build_dir"
