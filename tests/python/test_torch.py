"""PyTorch: agreement with scaled_dot_product_attention, and on a CUDA
device the caller's stream and CUDA-graph capture. Skipped (with the
reason) where PyTorch is not installed."""
import numpy as np
import pytest

import xattn

torch = pytest.importorskip("torch")
F = torch.nn.functional

_DEVICES = ["cpu"]
if torch.cuda.is_available() and xattn.info()["backends"]["cuda"]["devices"]:
    _DEVICES.append("cuda")


def _err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _sdpa(q, k, v, **kw):
    """SDPA on xattn's NHD layout, K/V heads repeated for GQA."""
    g = q.shape[2] // k.shape[2]
    k, v = (t.repeat_interleave(g, dim=2) for t in (k, v))
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       **kw)
    return o.transpose(1, 2)


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_sdpa_agreement(device, dtype):
    if device == "cpu" and dtype != torch.float32:
        pytest.skip("reduced precision is checked on the GPU (PyTorch's CPU SDPA upcasts "
                    "differently)")
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}[dtype]
    gen = torch.Generator().manual_seed(7)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    B, hq, hkv, d = 2, 8, 2, 64
    # Sq == Sk: both causal conventions agree.
    q, k, v = rand(B, 96, hq, d), rand(B, 96, hkv, d), rand(B, 96, hkv, d)
    for causal in (False, True):
        want = _sdpa(q.float(), k.float(), v.float(), is_causal=causal)
        assert _err(xattn.attention(q, k, v, causal=causal), want) < tol
    # Sq < Sk (a chunk of prefill after a cached prefix): xattn's causal is
    # bottom-right aligned, which is SDPA with the shifted mask, not is_causal.
    q = rand(B, 24, hq, d)
    k, v = rand(B, 80, hkv, d), rand(B, 80, hkv, d)
    mask = torch.ones(24, 80, dtype=torch.bool, device=device).tril(diagonal=80 - 24)
    got = xattn.attention(q, k, v, causal=True)
    assert _err(got, _sdpa(q.float(), k.float(), v.float(), attn_mask=mask)) < tol
    assert _err(got, _sdpa(q.float(), k.float(), v.float(), is_causal=True)) > 0.05
    # A scale of one's own, and out= in the caller's tensor.
    out = torch.empty_like(q)
    assert xattn.attention(q, k, v, scale=0.3, out=out) is out
    assert _err(out, _sdpa(q.float(), k.float(), v.float(), scale=0.3)) < tol


def test_torch_cpu_round_trip():
    """CPU tensors go in without a copy; new outputs are torch tensors."""
    q = torch.randn(1, 16, 4, 32)
    kv = torch.randn(1, 16, 4, 32)
    o, lse = xattn.attention(q, kv, kv, return_lse=True)
    assert isinstance(o, torch.Tensor) and o.dtype == q.dtype and lse.dtype == torch.float32
    assert lse.shape == (1, 16, 4)
    out = torch.zeros(1, 16, 4, 32)
    xattn.attention(q, kv, kv, out=out)
    assert torch.equal(out, o)


@pytest.mark.skipif("cuda" not in _DEVICES, reason="no CUDA device with xattn's cuda backend")
def test_cuda_stream_and_graph_capture():
    """The caller's stream, and a paged decode step captured into a CUDA
    graph and replayed."""
    dev = torch.device("cuda")
    B, hq, hkv, d, page, num_pages = 4, 32, 8, 128, 16, 64
    gen = torch.Generator().manual_seed(3)
    kc = torch.randn(num_pages, page, hkv, d, generator=gen).to(dev, torch.bfloat16)
    vc = torch.randn(num_pages, page, hkv, d, generator=gen).to(dev, torch.bfloat16)
    lens = [1, 70, 200, 33]
    pages = [(n + page - 1) // page for n in lens]
    indptr = torch.tensor(np.cumsum([0] + pages), dtype=torch.int32, device=dev)
    indices = torch.randperm(num_pages, generator=gen)[:sum(pages)].to(dev, torch.int32)
    last = torch.tensor([n - (p - 1) * page for n, p in zip(lens, pages)], dtype=torch.int32,
                        device=dev)
    s = torch.cuda.Stream()
    ctx = xattn.Context("cuda", stream=s)
    assert ctx.stream == s.cuda_stream
    dec = xattn.PagedDecode(context=ctx)
    dec.plan(indptr=indptr, indices=indices, last_page_len=last, num_q_heads=hq,
             num_kv_heads=hkv, head_dim=d, page_size=page, num_pages=num_pages, dtype="bf16")
    q = torch.randn(B, hq, d, generator=gen).to(dev, torch.bfloat16)
    out = torch.empty_like(q)
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        eager = dec.run(q, kc, vc).clone()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            dec.run(q, kc, vc, out=out)
    for _ in range(3):
        out.fill_(float("nan"))
        g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    # Against the gathered reference.
    table = indices.cpu().tolist()
    ptr = indptr.cpu().tolist()
    for b, n in enumerate(lens):
        ks = kc[table[ptr[b]:ptr[b + 1]]].reshape(-1, hkv, d)[:n]
        vs = vc[table[ptr[b]:ptr[b + 1]]].reshape(-1, hkv, d)[:n]
        want = _sdpa(q[b][None, None].float(), ks[None].float(), vs[None].float())[0, 0]
        assert _err(out[b], want) < 2e-2
    # One-shot calls follow the current stream.
    k1 = torch.randn(B, 50, hkv, d, generator=gen).to(dev, torch.bfloat16)
    v1 = torch.randn(B, 50, hkv, d, generator=gen).to(dev, torch.bfloat16)
    with torch.cuda.stream(s):
        assert xattn.default_context((2, 0)).stream == s.cuda_stream
        o = xattn.attention(q[:, None], k1, v1)
    torch.cuda.synchronize()
    assert _err(o, _sdpa(q[:, None].float(), k1.float(), v1.float())) < 2e-2
