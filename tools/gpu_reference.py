#!/usr/bin/env python3
"""Vendor-library yardstick for `xattn bench` on an NVIDIA GPU.

Times PyTorch's scaled_dot_product_attention with each of its fused backends
forced in turn (FlashAttention, cuDNN, memory-efficient; a backend that
refuses a shape prints "n/a"), on the shapes tools/device-gpu.sh benches
xattn with, and cuBLAS batched GEMMs shaped as the MoE layers' expert GEMMs
(rows per expert = T*k/E, the balanced load), and prints the rates with the
same FLOP and byte counts as `xattn bench`, so the two tables divide. Needs
PyTorch with CUDA; exits 77 without a device.
"""
import statistics
import sys

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # PyTorch < 2.3: only PyTorch's own choice
    SDPBackend = sdpa_kernel = None

# name, B, Sq, Sk, Hq, Hkv, D, causal: device-gpu.sh's bench shapes. Decode
# here is dense (SDPA has no paged KV); xattn's serving rows are paged.
WORKLOADS = [
    ("prefill-causal", 1, 8192, 8192, 32, 32, 128, True),
    ("prefill", 1, 8192, 8192, 32, 32, 128, False),
    ("decode-4k-b1", 1, 1, 4096, 32, 8, 128, False),
    ("decode-4k-b64", 64, 1, 4096, 32, 8, 128, False),
    ("decode-64k-b1", 1, 1, 65536, 32, 8, 128, False),
    ("decode-64k-b64", 64, 1, 65536, 32, 8, 128, False),
]
# name, T, H, I, E, k: the expert GEMMs of one MoE layer.
MOE = [
    ("qwen3-30b-a3b", 4096, 2048, 768, 128, 8),
    ("deepseek-v3", 4096, 7168, 2048, 256, 8),
]
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def visible_pairs(sq, sk, causal):
    if not causal:
        return sq * sk
    # Bottom-right aligned causal mask, as docs/attention.md's.
    return sum(min(sk, sk - sq + i + 1) for i in range(sq))


def time_ms(fn, repeats=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sdpa_backends():
    if sdpa_kernel is None:
        return [("auto", None)]
    return [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def attention(gen):
    print(f"{'workload':16} {'dtype':5} {'kernel':9} {'ms':>9} {'TFLOP/s':>9} {'GB/s':>8}")
    for name, b, sq, sk, hq, hkv, d, causal in WORKLOADS:
        for tname, dt in DTYPES.items():
            q = torch.randn(b, hq, sq, d, device="cuda", dtype=dt, generator=gen)
            k = torch.randn(b, hkv, sk, d, device="cuda", dtype=dt, generator=gen)
            v = torch.randn(b, hkv, sk, d, device="cuda", dtype=dt, generator=gen)
            flops = 2 * (d + d) * visible_pairs(sq, sk, causal) * hq * b
            nbytes = (q.numel() * 2 + k.numel() + v.numel()) * q.element_size()
            for kname, backend in sdpa_backends():
                # is_causal in PyTorch is top-left aligned; Sq == Sk here, where
                # the two alignments agree, and decode is never causal. GQA
                # through enable_gqa, or K/V repeated where a backend lacks it.
                def run(kk=k, vv=v, gqa=hkv != hq):
                    return F.scaled_dot_product_attention(q, kk, vv, is_causal=causal,
                                                          enable_gqa=gqa)
                try:
                    if backend is None:
                        ms = time_ms(run)
                    else:
                        with sdpa_kernel(backend):
                            try:
                                run()
                                fn = run
                            except RuntimeError:
                                if hkv == hq:
                                    raise
                                kr = k.repeat_interleave(hq // hkv, dim=1)
                                vr = v.repeat_interleave(hq // hkv, dim=1)
                                fn = lambda: run(kr, vr, False)  # noqa: E731
                                fn()
                                kname += "*"  # K/V repeated: more bytes moved
                            ms = time_ms(fn)
                except RuntimeError as e:
                    print(f"{name:16} {tname:5} {kname:9} {'n/a':>9}  "
                          f"({str(e).splitlines()[0][:60]})")
                    continue
                print(f"{name:16} {tname:5} {kname:9} {ms:9.3f} {flops / ms / 1e9:9.2f} "
                      f"{nbytes / ms / 1e6:8.1f}")
            del q, k, v
            torch.cuda.empty_cache()


def moe_gemms(gen):
    print()
    print("cuBLAS batched GEMMs shaped as the expert GEMMs (balanced load):")
    print(f"{'layer':16} {'dtype':5} {'gemm':8} {'ms':>9} {'TFLOP/s':>9}")
    for name, t, h, inter, e, k in MOE:
        rows = t * k // e
        for tname, dt in DTYPES.items():
            x = torch.randn(e, rows, h, device="cuda", dtype=dt, generator=gen)
            w1 = torch.randn(e, h, 2 * inter, device="cuda", dtype=dt, generator=gen)
            a = torch.randn(e, rows, inter, device="cuda", dtype=dt, generator=gen)
            w2 = torch.randn(e, inter, h, device="cuda", dtype=dt, generator=gen)
            for gname, fn, flops in (
                    ("gate/up", lambda: torch.bmm(x, w1), 2 * e * rows * h * 2 * inter),
                    ("down", lambda: torch.bmm(a, w2), 2 * e * rows * inter * h)):
                ms = time_ms(fn)
                print(f"{name:16} {tname:5} {gname:8} {ms:9.3f} {flops / ms / 1e9:9.2f}")
            del x, w1, a, w2
            torch.cuda.empty_cache()


def main():
    if not torch.cuda.is_available():
        print("gpu_reference.py: no CUDA device", file=sys.stderr)
        return 77
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    gen = torch.Generator(device="cuda").manual_seed(1)
    attention(gen)
    moe_gemms(gen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
