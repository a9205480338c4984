#!/usr/bin/env python3
"""Vendor-library yardstick for `xattn bench` on an NVIDIA GPU.

Times PyTorch's scaled_dot_product_attention (FlashAttention / cuDNN /
memory-efficient kernels, whichever PyTorch picks) on the bench's attention
shapes and prints the same rates with the same FLOP and byte counts as
`xattn bench`, so the two tables divide. Needs PyTorch with CUDA.
"""
import statistics
import sys

import torch
import torch.nn.functional as F

# name, Sq, Sk, Hq, Hkv, D, causal (B = 1), as `xattn bench --list --full` says.
WORKLOADS = [
    ("prefill-causal", 4096, 4096, 8, 8, 128, True),
    ("prefill", 4096, 4096, 8, 8, 128, False),
    ("decode", 1, 16384, 32, 8, 128, False),
]
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def visible_pairs(sq, sk, causal):
    if not causal:
        return sq * sk
    # Bottom-right aligned causal mask, as docs/attention.md's.
    return sum(min(sk, sk - sq + i + 1) for i in range(sq))


def time_ms(fn, repeats=30, warmup=5):
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


def main():
    if not torch.cuda.is_available():
        print("gpu_reference.py: no CUDA device", file=sys.stderr)
        return 77
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'workload':16} {'dtype':5} {'ms':>9} {'TFLOP/s':>9} {'GB/s':>8}")
    gen = torch.Generator(device="cuda").manual_seed(1)
    for name, sq, sk, hq, hkv, d, causal in WORKLOADS:
        for tname, dt in DTYPES.items():
            q = torch.randn(1, hq, sq, d, device="cuda", dtype=dt, generator=gen)
            k = torch.randn(1, hkv, sk, d, device="cuda", dtype=dt, generator=gen)
            v = torch.randn(1, hkv, sk, d, device="cuda", dtype=dt, generator=gen)
            # is_causal in PyTorch is top-left aligned; Sq == Sk here, where
            # the two alignments agree, and decode is never causal.
            def run():
                return F.scaled_dot_product_attention(
                    q, k, v, is_causal=causal, enable_gqa=hkv != hq)
            ms = time_ms(run)
            flops = 2 * (d + d) * visible_pairs(sq, sk, causal) * hq
            nbytes = (q.numel() * 2 + k.numel() + v.numel()) * q.element_size()
            print(f"{name:16} {tname:5} {ms:9.3f} {flops / ms / 1e9:9.2f} "
                  f"{nbytes / ms / 1e6:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
