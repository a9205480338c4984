#!/usr/bin/env python3
"""`xattn --help` lists every environment variable that libxattn, its
backend modules, the tool and the conformance harness read, and nothing
they do not read: the sources are scanned for getenv("NAME") and for
getenv(MACRO) with `#define MACRO "NAME"` in the same file, so the help
cannot drift from the code.

usage: test_env_help.py XATTN_EXE SOURCE_ROOT
"""
import pathlib
import re
import subprocess
import sys

XATTN, ROOT = sys.argv[1], pathlib.Path(sys.argv[2])
DIRS = ["common", "backends", "tools", "tests/harness"]

read = {}
for d in DIRS:
    for path in sorted((ROOT / d).rglob("*")):
        if path.suffix not in (".c", ".h"):
            continue
        text = path.read_text(errors="replace")
        macros = dict(re.findall(r'#\s*define\s+([A-Za-z_]\w*)\s+"([^"]+)"', text))
        for arg in re.findall(r"\bgetenv\s*\(\s*([^)]*?)\s*\)", text):
            m = re.fullmatch(r'"([^"]+)"', arg)
            name = m.group(1) if m else macros.get(arg)
            if name is None:
                sys.exit(f"{path}: getenv({arg}): cannot tell which variable it reads "
                         f"(use a string literal or a #define in the same file)")
            read.setdefault(name, str(path.relative_to(ROOT)))

if not read:
    sys.exit(f"no getenv call found under {ROOT}: wrong source root?")
help_text = subprocess.run([XATTN, "--help"], capture_output=True, text=True,
                           check=True).stdout
env_part = help_text.split("environment", 1)[-1]
listed = set(re.findall(r"^  ([A-Z][A-Z0-9_]*)=", env_part, re.M))
failures = 0
for name, where in sorted(read.items()):
    if name not in listed:
        print(f"FAIL: {name} (read in {where}) is not in `xattn --help`")
        failures += 1
for name in sorted(listed - set(read)):
    print(f"FAIL: `xattn --help` lists {name}, which no source reads")
    failures += 1
print(f"{len(read)} variables read, {len(listed)} listed, {failures} failure(s)")
sys.exit(1 if failures else 0)
