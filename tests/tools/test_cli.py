#!/usr/bin/env python3
"""The xattn tool's command line and JSON: one parser for every command
(--opt value and --opt=value alike, bad usage exits 2 with the usage), JSON
that parses strictly with counts as exact integers, and `xattn info` saying
why a backend module is absent.

usage: test_cli.py XATTN_EXE [--fake-hip-dir=DIR] NAME=STATE...
  STATE per backend module, from meson: built, not-in-version, not-built
  DIR holds the test-only fake module (tests/api) as libxattn-hip.so
"""
import json
import os
import subprocess
import sys

XATTN = sys.argv[1]
FAKE_HIP_DIR = next((a.split("=", 1)[1] for a in sys.argv[2:]
                     if a.startswith("--fake-hip-dir=")), None)
MODULE_STATES = dict(a.split("=", 1) for a in sys.argv[2:] if not a.startswith("--"))
# Nothing from the caller's shell: each run names what it needs.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("XATTN_")}
ENV["XATTN_BACKEND"] = "cpu"
FAILURES = []


def run(*args, env=None, rc=0):
    p = subprocess.run([XATTN, *args], capture_output=True, text=True,
                       env={**ENV, **(env or {})}, timeout=600)
    if p.returncode != rc:
        fail(f"xattn {' '.join(args)}: exit {p.returncode}, expected {rc}\n"
             f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}")
    return p


def fail(msg):
    FAILURES.append(msg)
    print("FAIL:", msg)


def reject_constant(name):
    raise ValueError(f"not JSON: {name}")


def parse(p, what):
    """Strict JSON: NaN and Infinity are not JSON (Python accepts them)."""
    try:
        return json.loads(p.stdout, parse_constant=reject_constant)
    except ValueError as e:
        fail(f"{what}: invalid JSON: {e}\n{p.stdout[:2000]}")
        return None


def expect(cond, msg):
    if not cond:
        fail(msg)


def exact(value, want, what):
    """An exact integer: an int in JSON (no decimal point, no exponent)."""
    expect(type(value) is int and value == want, f"{what}: {value!r}, expected the integer {want}")


# ---- one parser for every command ----------------------------------------

for cmd in ["info", "plan", "check", "bench"]:
    p = run(cmd, "--help")
    expect(p.stdout.startswith("usage: xattn " + cmd), f"{cmd} --help: {p.stdout[:80]!r}")
    expect(run(cmd, "-h").stdout == p.stdout, f"{cmd} -h differs from --help")
    expect(run("help", cmd).stdout == p.stdout, f"xattn help {cmd} differs from --help")
    for bad in (["--no-such-option"], ["stray-argument"]):
        q = run(cmd, *bad, rc=2)
        expect("usage: xattn " + cmd in q.stderr and q.stdout == "",
               f"{cmd} {bad}: no usage on stderr: {q.stderr!r}")

# Values: both spellings, and a bad or missing value is an error with the usage.
for args_eq, args_sep in [
    (["bench", "--list", "--json", "--sq=100", "--workload=prefill,serving"],
     ["bench", "--list", "--json", "--sq", "100", "--workload", "prefill,serving"]),
    (["plan", "--preset=a100", "--json", "--window=-1,0", "--dtype=f16"],
     ["plan", "--preset", "a100", "--json", "--window", "-1,0", "--dtype", "f16"]),
    (["plan", "--moe", "--preset=h100", "--model=deepseek-v3", "--tokens=7"],
     ["plan", "--moe", "--preset", "h100", "--model", "deepseek-v3", "--tokens", "7"]),
    (["check", "--list", "--filter=merge/finite"], ["check", "--list", "--filter", "merge/finite"]),
]:
    a, b = run(*args_eq), run(*args_sep)
    expect(a.stdout == b.stdout and a.stdout, f"{args_eq} and {args_sep} differ")
for bad in [["bench", "--repeats", "0"], ["bench", "--repeats=x"], ["bench", "--dtype", "f64"],
            ["bench", "--workload", "nope"], ["bench", "--repeats"], ["bench", "--list=1"],
            ["plan", "--sq", "-1"], ["plan", "--route", "nope", "--moe"],
            ["plan", "--scale", "nan"], ["plan", "--tokens", "5"],
            ["check", "--seed", "-1"], ["check", "--backend", "nope"], ["info", "--json=yes"]]:
    q = run(*bad, rc=2)
    expect(q.stderr.startswith("xattn "), f"{bad}: no message: {q.stderr!r}")

# ---- xattn --help ----------------------------------------------------------

p = run("--help")
for cmd in ["info", "plan", "check", "bench"]:
    expect(f"  {cmd} " in p.stdout, f"xattn --help does not list {cmd}")
run(rc=2)
run("no-such-command", rc=2)

# ---- info --json -----------------------------------------------------------

info = parse(run("info", "--json"), "info --json")
if info:
    names = [b["name"] for b in info["backends"]]
    expect(names == ["cpu", "opencl", "cuda", "hip"], f"info backends: {names}")
    for b in info["backends"]:
        exact(b["num_devices"], len(b["devices"]), f"{b['name']} num_devices")
        expect(b["available"] == (b["num_devices"] > 0), f"{b['name']} available")
        for d in b["devices"]:
            if "caps" in d:
                exact(d["caps"]["compute_units"], d["caps"]["compute_units"], "compute_units")
        state = MODULE_STATES.get(b["name"])
        reason = b["reason"] or ""
        if state == "not-in-version":
            expect("not part of this version of xattn" in reason,
                   f"{b['name']}: reason does not say it is not part of this version: {reason!r}")
        elif state == "not-built":
            expect("not built by this build of xattn" in reason,
                   f"{b['name']}: reason does not say this build lacks it: {reason!r}")
        elif state == "built":
            expect("not part of" not in reason and "not built by" not in reason,
                   f"{b['name']}: built, but the reason says otherwise: {reason!r}")
    expect(info["selected"]["backend"] == "cpu", f"info selected: {info['selected']}")
q = run("info", "--json", env={"XATTN_BACKEND": "nope"}, rc=1)
expect("XATTN_BACKEND" in q.stderr, f"info with a bad XATTN_BACKEND: {q.stderr!r}")

# ---- plan --json -----------------------------------------------------------

TWO_28 = 1 << 28
plan = parse(run("plan", "--preset", "h100", "--json", "--ragged", "--sq", str(TWO_28),
                 "--sk", "16"), "plan --json")
if plan:
    expect(plan["kind"] == "attention" and plan["preset"] == "h100" and plan["backend"] is None,
           f"plan: {plan['kind']}, {plan['preset']}, {plan['backend']}")
    exact(plan["problem"]["seqlen_q"], TWO_28, "plan problem.seqlen_q")
    expect(plan["problem"]["q_layout"] == "ragged", "plan q_layout")
    for key in ["block_q", "block_k", "kv_splits", "num_work", "workspace_bytes"]:
        expect(type(plan["plan"][key]) is int, f"plan.{key}: {plan['plan'][key]!r}")
    expect(plan["text"].startswith("preset       h100"), "plan text")
plan = parse(run("plan", "--json", "--sq", "64", "--sk", "96", "--hq", "4", "--hkv", "2",
                 "--d", "64", "--causal"), "plan --json on cpu")
if plan:
    expect(plan["backend"] == "cpu" and plan["preset"] is None, "plan on the cpu context")
    expect(plan["problem"]["causal"] is True and plan["problem"]["window_right"] == 0,
           "plan causal")
    expect(plan["text"].startswith("backend cpu"), "plan text on cpu")
moe = parse(run("plan", "--moe", "--json", "--preset", "mi300x", "--model", "qwen3-moe",
                "--tokens", str(TWO_28 // 8)), "plan --moe --json")
if moe:
    expect(moe["kind"] == "moe", "plan --moe kind")
    exact(moe["problem"]["max_tokens"], TWO_28 // 8, "plan --moe max_tokens")
    expect(type(moe["plan"]["max_rows"]) is int and moe["plan"]["max_rows"] >= TWO_28,
           f"plan --moe max_rows {moe['plan']['max_rows']!r}")
    expect(type(moe["plan"]["up"]["block_m"]) is int, "plan --moe up tiles")

# ---- bench --list --json ---------------------------------------------------

# f32, B=1, Sq=Sk=4096, H=32, D=128: Q+K+V+O = 4 * 2^12 * 2^5 * 2^7 * 4 = 2^28 bytes,
# 2*(Dqk+Dv)*Sq*Sk*Hq = 2^38 FLOPs (not causal).
listing = parse(run("bench", "--list", "--json", "--workload", "prefill", "--sq", "4096",
                    "--sk", "4096", "--hq", "32", "--hkv", "32", "--d", "128", "--no-causal"),
                "bench --list --json")
if listing:
    w = listing["workloads"]
    expect(len(w) == 1 and w[0]["name"] == "prefill", f"bench list: {[x['name'] for x in w]}")
    exact(w[0]["bytes"], TWO_28, "bench prefill bytes")
    exact(w[0]["flop"], 1 << 38, "bench prefill flop")

listing = parse(run("bench", "--list", "--json"), "bench --list --json (default run)")
if listing:
    expect(listing["run"] == "default", f"bench run: {listing['run']}")
    names = [x["name"] for x in listing["workloads"]]
    expect(names == ["prefill-causal", "prefill", "decode", "serving-decode", "qwen3-30b-a3b"],
           f"default run workloads: {names}")
    s = next(x for x in listing["workloads"] if x["name"] == "serving-decode")
    lens = s["seqlens_k"]
    expect(s["kv_layout"] == "paged" and s["batch"] == 64 and len(lens) == 64,
           f"serving: {s['kv_layout']}, B {s['batch']}, {len(lens)} lengths")
    expect(s["page_size"] == 16 and s["seqlen_q"] == 1, "serving: page 16, Sq 1")
    expect(len(set(lens)) > 32 and min(lens) >= s["seqlen_k_lo"] and
           max(lens) == s["seqlen_k"] <= s["seqlen_k_hi"], f"serving lengths: {lens}")
    exact(s["total_k"], sum(lens), "serving total_k")
    exact(s["num_pages"], sum((n + 15) // 16 for n in lens), "serving num_pages")
    # Q + O (f32, 64 x 32 heads x 128) + K and V of the real lengths (8 heads)
    # + the lengths and the block-table entries in use (i32).
    want = 4 * 64 * 32 * 256 + 4 * sum(lens) * 8 * 256 + 4 * (64 + s["num_pages"])
    exact(s["bytes"], want, "serving bytes")
    exact(s["flop"], 2 * 256 * sum(lens) * 32, "serving flop")
    # The batch is the same every run (fixed seed), whatever --seed says.
    again = parse(run("bench", "--list", "--json", "--workload", "serving", "--seed", "7"),
                  "bench --list --json --seed 7")
    if again:
        expect(again["workloads"][0]["seqlens_k"] == lens, "serving lengths depend on --seed")

full = parse(run("bench", "--list", "--json", "--full"), "bench --list --json --full")
if full:
    expect(full["run"] == "full", "bench --full run name")
    names = [x["name"] for x in full["workloads"] if x["op"] == "moe"]
    expect(len(names) >= 3 and "mixtral-8x7b" in names, f"--full MoE presets: {names}")
    p = next(x for x in full["workloads"] if x["name"] == "prefill")
    expect(p["seqlen_q"] == 4096, "--full prefill length")

# ---- bench ceilings: where they come from -----------------------------------

def check_rate(r, what, threads):
    if not isinstance(r, dict):
        fail(f"{what}: {r!r}")
        return
    expect(r["best"] > 0 and 0 < r["median"] <= r["best"], f"{what}: best {r['best']}, "
           f"median {r['median']}")
    expect(type(r["repeats"]) is int and r["repeats"] >= 1, f"{what} repeats")
    expect((type(r["threads"]) is int) if threads else r["threads"] is None,
           f"{what} threads: {r['threads']!r}")
    expect(isinstance(r["method"], str) and r["method"], f"{what} method")


# The cpu backend: an FMA loop and a read on this host.
b = parse(run("bench", "--workload", "ceilings", "--json", "--bandwidth-mib", "16",
              "--repeats", "1"), "bench ceilings --json on cpu")
if b:
    c = b["ceilings"]
    expect(c["source"] == "host", f"cpu ceilings source: {c['source']!r}")
    check_rate(c.get("flops_f32"), "cpu flops_f32", True)
    check_rate(c.get("read_bytes_per_s"), "cpu read_bytes_per_s", True)
    expect(c["flops"] == c["flops_f32"]["best"] and
           c["bytes_per_s"] == c["read_bytes_per_s"]["best"], "cpu ceilings used: the best")
    expect(b["workloads"] == [], "--workload ceilings runs no workload")
p = run("bench", "--workload", "ceilings", "--bandwidth-mib", "16", "--repeats", "1")
expect("ceilings: measured on this host" in p.stdout, f"cpu ceilings table:\n{p.stdout}")
b = parse(run("bench", "--workload", "ceilings", "--json", "--no-ceilings"),
          "bench --no-ceilings --json")
if b:
    expect(b["ceilings"] is None, "--no-ceilings: ceilings null")

# A GPU-style backend without ceiling kernels: the caps' estimates, labelled.
if FAKE_HIP_DIR:
    fake = {"XATTN_BACKEND": "hip", "XATTN_BACKEND_DIR": FAKE_HIP_DIR}
    b = parse(run("bench", "--workload", "ceilings", "--json", env=fake),
              "bench ceilings --json on the fake module")
    if b:
        c = b["ceilings"]
        expect(c["source"] == "caps-estimate", f"fake module ceilings source: {c['source']!r}")
        expect(c["flops"] > 0 and c["bytes_per_s"] > 0, "fake module: caps estimates")
        expect("flops_f32" not in c and "no ceiling kernels" in c.get("not_measured", ""),
               f"fake module: says why it did not measure: {c}")
    p = run("bench", "--workload", "ceilings", env=fake)
    expect("ceilings: estimates from the backend's caps (not measured)" in p.stdout,
           f"fake module ceilings table:\n{p.stdout}")

# OpenCL planned GPU-style (PoCL here): the module's copy and FMA kernels on
# the device, no matrix loop (OpenCL C has none).
opencl = info and next((x for x in info["backends"] if x["name"] == "opencl"), None)
if opencl and opencl["available"]:
    gpu = {"XATTN_BACKEND": "opencl", "XATTN_OPENCL_STYLE": "gpu"}
    b = parse(run("bench", "--workload", "ceilings", "--json", env=gpu),
              "bench ceilings --json on opencl, GPU style")
    if b:
        c = b["ceilings"]
        expect(c["source"] == "device", f"opencl gpu-style ceilings source: {c['source']!r}")
        check_rate(c.get("flops_f32"), "opencl flops_f32", False)
        check_rate(c.get("copy_bytes_per_s"), "opencl copy_bytes_per_s", False)
        if c["source"] == "device":
            expect(c["flops_matrix"] is None, f"opencl flops_matrix: {c['flops_matrix']!r}")
            expect(c["flops"] == c["flops_f32"]["best"] and
                   c["bytes_per_s"] == c["copy_bytes_per_s"]["best"], "opencl ceilings used")
            expect(0 < c["seconds"] < 60, f"opencl ceilings took {c['seconds']} s")
    p = run("bench", "--workload", "ceilings", env=gpu)
    expect("ceilings: measured on the device by the opencl backend's kernels" in p.stdout,
           f"opencl gpu-style ceilings table:\n{p.stdout}")

print(f"{len(FAILURES)} failure(s)")
sys.exit(1 if FAILURES else 0)
