#!/usr/bin/env bash
# Build the libFuzzer harnesses (tests/fuzz) with clang, AddressSanitizer
# and UndefinedBehaviorSanitizer, and run each for a bounded time from its
# committed corpus (tests/fuzz/corpus/<target>/). Prints each target's
# executions; a crash, leak, sanitizer report or timeout fails the run and
# leaves the input that caused it in the build directory.
#
# usage: tools/fuzz.sh [--no-deps] [--seconds N] [--merge] [BUILD_DIR] [TARGET...]
#   --no-deps    do not install clang and its libFuzzer runtime (Debian:
#                clang, libclang-rt-<version>-dev; root or sudo)
#   --seconds N  fuzzing time per target (default 75)
#   --merge      after fuzzing, fold the inputs that found new coverage into
#                the committed corpus (minimised; for a developer, not CI)
#   BUILD_DIR    default: build-fuzz
#   TARGET       attn, moe (default: both)
set -euo pipefail

deps=1 seconds=75 merge=0 build_dir=build-fuzz targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-deps) deps=0 ;;
        --seconds) seconds=$2; shift ;;
        --seconds=*) seconds=${1#--seconds=} ;;
        --merge) merge=1 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        attn|moe) targets+=("$1") ;;
        *) build_dir=$1 ;;
    esac
    shift
done
[ ${#targets[@]} -gt 0 ] || targets=(attn moe)

cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

apt_install() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { echo "fuzz.sh: need root or sudo to install $*" >&2; exit 1; }
        sudo=(sudo)
    fi
    step "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" </dev/null
}

# A trivial harness: does this clang link libFuzzer with the sanitizers?
fuzzer_links() {
    local d
    d=$(mktemp -d)
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
        >"$d/p.c"
    clang -fsanitize=fuzzer,address,undefined "$d/p.c" -o "$d/p" >/dev/null 2>&1
    local rc=$?
    rm -rf "$d"
    return $rc
}

if [ "$deps" = 1 ]; then
    command -v clang >/dev/null || apt_install clang
    if ! fuzzer_links; then
        major=$(clang -dumpversion | cut -d. -f1)
        apt_install "libclang-rt-$major-dev"
    fi
fi
fuzzer_links || { echo "fuzz.sh: clang cannot link libFuzzer here" >&2; exit 1; }

# LeakSanitizer needs ptrace, which some containers forbid: there leak
# checks are off, and the run says so.
leaks=1
if ! ASAN_OPTIONS=detect_leaks=1 bash -c 'd=$(mktemp -d); echo "int main(void){return 0;}" >"$d/p.c";
        clang -fsanitize=address "$d/p.c" -o "$d/p" && "$d/p"; rc=$?; rm -rf "$d"; exit $rc' \
        >/dev/null 2>&1; then
    leaks=0
    echo "fuzz.sh: LeakSanitizer does not work here; leak checks off" >&2
fi

setup_args=(-Dfuzz=true -Dtests=false -Dopencl=disabled -Dcuda=disabled -Dhip=disabled
            --buildtype=debugoptimized '-Db_sanitize=address,undefined' -Db_lundef=false)
step "meson setup $build_dir (clang, libFuzzer, ASan + UBSan)"
if [ -f "$build_dir/build.ninja" ]; then
    meson setup --reconfigure "$build_dir" "${setup_args[@]}" >/dev/null
else
    CC=clang meson setup "$build_dir" "${setup_args[@]}" >/dev/null
fi
step "ninja -C $build_dir"
ninja -C "$build_dir" $(printf 'tests/fuzz/fuzz_%s ' "${targets[@]}")

export ASAN_OPTIONS="detect_leaks=$leaks:abort_on_error=1:print_summary=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1"
# Never a module or setting from the caller's shell.
export XATTN_BACKEND_DIR="$PWD/$build_dir/no-modules-here"
unset XATTN_BACKEND XATTN_DEVICE XATTN_CPU_ISA XATTN_LOG

failed=0
for t in "${targets[@]}"; do
    corpus=tests/fuzz/corpus/$t
    work=$build_dir/fuzz-$t
    rm -rf "$work"
    mkdir -p "$work/new" "$work/crashes"
    step "fuzz_$t for $seconds s from $corpus ($(ls "$corpus" | wc -l) inputs)"
    # New inputs go to $work/new (the first directory), never into the
    # repository; -timeout: one input taking longer is a failure.
    set +e
    "$build_dir/tests/fuzz/fuzz_$t" "$work/new" "$corpus" \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -detect_leaks="$leaks" \
        -print_final_stats=1 -artifact_prefix="$work/crashes/" >"$work/log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
    echo "fuzz_$t: ${runs:-?} executions (${speed:-?}/s), ${cov:-cov: ?}, $(ls "$work/new" | wc -l) new inputs"
    if [ "$rc" != 0 ]; then
        failed=1
        echo "fuzz_$t FAILED (exit $rc); the end of its log:" >&2
        tail -n 60 "$work/log" >&2
        ls "$work/crashes"/* 2>/dev/null | sed 's/^/  input: /' >&2
        continue
    fi
    if [ "$merge" = 1 ]; then
        step "merge new coverage into $corpus"
        "$build_dir/tests/fuzz/fuzz_$t" -merge=1 "$corpus" "$work/new" >>"$work/log" 2>&1
        echo "$corpus: $(ls "$corpus" | wc -l) inputs"
    fi
done
[ "$failed" = 0 ] || exit 1
step "fuzz ok: ${targets[*]}"
