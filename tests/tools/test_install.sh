#!/usr/bin/env bash
# An install works where it lands, with nothing in the environment: `meson
# install` into a temporary DESTDIR (a prefix that has moved since
# configure), then the installed xattn finds libxattn (run path relative to
# itself) and the backend modules (beside libxattn), and the README's example
# compiles with the flags of the installed pkg-config file and runs.
#
# usage: test_install.sh MESON BUILD_DIR SOURCE_DIR PREFIX LIBDIR SANITIZE MODULE...
#   MODULE: a backend module this build built (its devices must be listed)
set -euo pipefail
meson=$1 build=$2 src=$3 prefix=$4 libdir=$5 sanitize=$6
shift 6
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$meson" install -C "$build" --no-rebuild --quiet --destdir "$dest" >/dev/null
root=$dest$prefix
xattn=$root/bin/xattn
[ -x "$xattn" ] || fail "no $xattn after meson install"
case $libdir in /*) lib=$dest$libdir ;; *) lib=$root/$libdir ;; esac

# Nothing that would find the build tree or another install for it.
unset LD_LIBRARY_PATH XATTN_BACKEND_DIR XATTN_BACKEND XATTN_DEVICE XATTN_REQUIRE_BACKEND
info=$("$xattn" info) || fail "installed xattn info: exit $?"
head -3 <<<"$info"
grep -q "^  cpu     1 device" <<<"$info" || fail "installed xattn info has no cpu device"
for module in "$@"; do
    [ -f "$lib/xattn/libxattn-$module.so" ] || fail "no $lib/xattn/libxattn-$module.so"
    line=$(grep "^  $module " <<<"$info")
    echo "$line"
    case $line in
        *"not found"*) fail "the installed xattn did not find its $module module: $line" ;;
    esac
    # A backend with a device runs from the install too ("not available"
    # lines may name devices in their reason: "..., 0 devices)").
    case $line in
        *"not available"*) ;;
        *" device"*)
            XATTN_BACKEND=$module "$xattn" check --filter merge/finite_lse/n7 |
                tail -1 | grep -q "^[1-9][0-9]* passed, 0 failed, 0 skipped" ||
                fail "installed xattn check on $module" ;;
    esac
done

if [ "$sanitize" = none ]; then
    # A sanitized libxattn cannot be loaded into a program built without
    # the sanitizer runtime; tools/ci-test.sh compiles the example there.
    export PKG_CONFIG_PATH=$lib/pkgconfig
    awk '/^```c$/ { on = 1; next } /^```$/ { if (on) exit } on' "$src/README.md" >"$dest/example.c"
    test -s "$dest/example.c" || fail "no C example in README.md"
    # shellcheck disable=SC2046
    cc -std=c11 "$dest/example.c" -o "$dest/example" $(pkg-config --cflags --libs xattn) \
        -Wl,-rpath,"$(pkg-config --variable=libdir xattn)" || fail "example does not build"
    "$dest/example" || fail "example does not run"
fi
echo "ok: installed into $root"
