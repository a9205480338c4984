"""attention(), the paged wrappers, kv_append and merge_states against the
NumPy float64 reference, on every backend with a device."""
import numpy as np
import pytest

import reference as ref
import xattn


def _rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("opts", [
    {},
    {"causal": True},
    {"window": (7, 3)},
    {"causal": True, "window": (5, -1), "softcap": 3.0},
    {"alibi": True, "causal": True},
    {"sinks": True, "scale": 0.2},
], ids=["full", "causal", "window", "causal_window_softcap", "alibi", "sinks_scale"])
def test_attention_uniform(backend, rng, dtype, opts):
    B, sq, sk, hq, hkv, d = 2, 19, 33, 4, 2, 32
    q = _rand(rng, B, sq, hq, d, dtype=dtype)
    k = _rand(rng, B, sk, hkv, d, dtype=dtype)
    v = _rand(rng, B, sk, hkv, d, dtype=dtype)
    alibi = (rng.uniform(0.05, 0.5, hq).astype(np.float32) if opts.get("alibi") else None)
    sinks = rng.standard_normal(hq).astype(np.float32) if opts.get("sinks") else None
    kw = {n: opts[n] for n in ("causal", "window", "softcap", "scale") if n in opts}
    o, lse = xattn.attention(
        backend.dev(q), backend.dev(k), backend.dev(v), return_lse=True, context=backend.ctx,
        alibi_slopes=None if alibi is None else backend.dev(alibi),
        sinks=None if sinks is None else backend.dev(sinks), **kw)
    assert tuple(o.shape) == (B, sq, hq, d) and tuple(lse.shape) == (B, sq, hq)
    o, lse = backend.host(o), backend.host(lse)
    for b in range(B):
        ro, rl = ref.attention(q[b], k[b], v[b], alibi=alibi, sinks=sinks, **kw)
        assert ref.rel_err(o[b], ro) < ref.TOL[dtype]
        finite = np.isfinite(rl)
        assert (np.isfinite(lse[b]) == finite).all()
        np.testing.assert_allclose(lse[b][finite], rl[finite], rtol=1e-4, atol=1e-4)


def test_attention_single_sequence_and_out(backend, rng):
    """[S, H, D] without a batch dimension, written into out=."""
    q, k, v = _rand(rng, 9, 8, 64), _rand(rng, 40, 2, 64), _rand(rng, 40, 2, 64)
    out = backend.dev(np.full((9, 8, 64), np.nan, dtype=np.float32))
    got = xattn.attention(backend.dev(q), backend.dev(k), backend.dev(v), causal=True,
                          out=out, context=backend.ctx)
    assert got is out
    assert ref.rel_err(backend.host(out), ref.attention(q, k, v, causal=True)[0]) < 2e-5


def test_attention_varlen(backend, rng):
    lens_q, lens_k = [5, 0, 17, 1], [9, 4, 17, 30]
    cq, ck = np.cumsum([0] + lens_q).astype(np.int32), np.cumsum([0] + lens_k).astype(np.int32)
    hq, hkv, d, dv = 6, 3, 48, 48
    q, k, v = _rand(rng, cq[-1], hq, d), _rand(rng, ck[-1], hkv, d), _rand(rng, ck[-1], hkv, dv)
    o, lse = xattn.attention(backend.dev(q), backend.dev(k), backend.dev(v), causal=True,
                             cu_seqlens_q=backend.dev(cq), cu_seqlens_k=backend.dev(ck),
                             max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k),
                             return_lse=True, context=backend.ctx)
    o, lse = backend.host(o), backend.host(lse)
    assert o.shape == (cq[-1], hq, dv) and lse.shape == (cq[-1], hq)
    for b in range(4):
        qs, ks = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        ro, rl = ref.attention(q[qs], k[ks], v[ks], causal=True)
        if lens_q[b]:
            assert ref.rel_err(o[qs], ro) < 2e-5
            np.testing.assert_allclose(lse[qs], rl, rtol=1e-4, atol=1e-4)


def test_strided_views_round_trip(rng):
    """NumPy views with free token and head strides go in without a copy,
    and out= views write exactly their own elements."""
    big = _rand(rng, 2, 30, 6, 32)
    q = big[:, ::2, 1:5, :]  # strided tokens, offset heads
    k, v = _rand(rng, 2, 21, 2, 32), _rand(rng, 2, 21, 2, 32)
    canvas = np.full((2, 15, 8, 32), -7.0, dtype=np.float32)
    out = canvas[:, :, 2:6, :]
    xattn.attention(q, k, v, out=out, context=xattn.Context("cpu"))
    assert (canvas[:, :, :2] == -7.0).all() and (canvas[:, :, 6:] == -7.0).all()
    for b in range(2):
        assert ref.rel_err(out[b], ref.attention(q[b], k[b], v[b])[0]) < 2e-5


def _paged_cache(rng, lens, page_size, hkv, d, num_pages=None):
    """A shuffled page pool, the FlashInfer CSR table over it, and each
    sequence's gathered K/V."""
    pages = [(n + page_size - 1) // page_size for n in lens]
    num_pages = num_pages or sum(pages) + 3
    perm = rng.permutation(num_pages)[:sum(pages)].astype(np.int32)
    indptr = np.cumsum([0] + pages).astype(np.int32)
    last = np.array([n - (p - 1) * page_size if p else 0 for n, p in zip(lens, pages)],
                    dtype=np.int32)
    kc, vc = _rand(rng, num_pages, page_size, hkv, d), _rand(rng, num_pages, page_size, hkv, d)
    seq_k = [kc[perm[indptr[b]:indptr[b + 1]]].reshape(-1, hkv, d)[:n] for b, n in
             enumerate(lens)]
    seq_v = [vc[perm[indptr[b]:indptr[b + 1]]].reshape(-1, hkv, d)[:n] for b, n in
             enumerate(lens)]
    return kc, vc, indptr, perm, last, seq_k, seq_v


@pytest.mark.parametrize("table", ["csr", "block_table", "combined_cache"])
def test_paged_decode(backend, rng, table):
    lens, page_size, hq, hkv, d = [1, 37, 100, 16, 64], 16, 8, 2, 64
    kc, vc, indptr, indices, last, seq_k, seq_v = _paged_cache(rng, lens, page_size, hkv, d)
    q = _rand(rng, len(lens), hq, d)
    dec = xattn.PagedDecode(context=backend.ctx)
    common = dict(num_q_heads=hq, num_kv_heads=hkv, head_dim=d, page_size=page_size,
                  num_pages=kc.shape[0], dtype="f32", return_lse=True)
    if table == "block_table":
        bt, sl = xattn.csr_to_block_table(indptr, indices, last, page_size)
        dec.plan(block_table=backend.dev(bt), seqlens_k=backend.dev(sl), **common)
    else:
        dec.plan(indptr=backend.dev(indptr), indices=backend.dev(indices),
                 last_page_len=backend.dev(last), **common)
    if table == "combined_cache":
        o, lse = dec.run(backend.dev(q), backend.dev(np.stack([kc, vc], axis=1)))
    else:
        o, lse = dec.run(backend.dev(q), (backend.dev(kc), backend.dev(vc)))
    o, lse = backend.host(o), backend.host(lse)
    assert o.shape == (len(lens), hq, d) and lse.shape == (len(lens), hq)
    for b in range(len(lens)):
        ro, rl = ref.attention(q[b][None], seq_k[b], seq_v[b])
        assert ref.rel_err(o[b], ro[0]) < 2e-5
        np.testing.assert_allclose(lse[b], rl[0], rtol=1e-4, atol=1e-4)
    assert "block_q" in dec.describe()


def test_paged_decode_plan_reused_across_layers(backend, rng):
    """One plan, several layers' caches (run() takes any caches of the
    planned shape)."""
    lens, page_size, hq, hkv, d = [20, 3], 4, 4, 4, 32
    dec = xattn.PagedDecode(context=backend.ctx)
    kc, vc, indptr, indices, last, _, _ = _paged_cache(rng, lens, page_size, hkv, d)
    dec.plan(indptr=backend.dev(indptr), indices=backend.dev(indices),
             last_page_len=backend.dev(last), num_q_heads=hq, num_kv_heads=hkv, head_dim=d,
             page_size=page_size, num_pages=kc.shape[0], dtype="float32")
    for _layer in range(3):
        kc, vc = _rand(rng, *kc.shape), _rand(rng, *vc.shape)
        q = _rand(rng, 2, hq, d)
        o = backend.host(dec.run(backend.dev(q), backend.dev(kc), backend.dev(vc)))
        for b, n in enumerate(lens):
            pages = indices[indptr[b]:indptr[b + 1]]
            ks, vs = kc[pages].reshape(-1, hkv, d)[:n], vc[pages].reshape(-1, hkv, d)[:n]
            assert ref.rel_err(o[b], ref.attention(q[b][None], ks, vs)[0][0]) < 2e-5


def test_paged_prefill(backend, rng):
    lens_q, lens_k, page_size, hq, hkv, d = [3, 12, 1], [40, 12, 7], 8, 4, 1, 64
    kc, vc, indptr, indices, last, seq_k, seq_v = _paged_cache(rng, lens_k, page_size, hkv, d)
    qo = np.cumsum([0] + lens_q).astype(np.int32)
    q = _rand(rng, qo[-1], hq, d)
    pre = xattn.PagedPrefill(context=backend.ctx)
    pre.plan(backend.dev(qo), indptr=backend.dev(indptr), indices=backend.dev(indices),
             last_page_len=backend.dev(last), num_q_heads=hq, num_kv_heads=hkv, head_dim=d,
             page_size=page_size, num_pages=kc.shape[0], dtype="f32", causal=True)
    o = backend.host(pre.run(backend.dev(q), backend.dev(kc), backend.dev(vc)))
    for b in range(3):
        s = slice(qo[b], qo[b + 1])
        assert ref.rel_err(o[s], ref.attention(q[s], seq_k[b], seq_v[b], causal=True)[0]) < 2e-5


def test_page_table_conversion_round_trip(rng):
    lens, page_size = [0, 1, 16, 17, 50], 16
    _, _, indptr, indices, last, _, _ = _paged_cache(rng, lens, page_size, 1, 8)
    bt, sl = xattn.csr_to_block_table(indptr, indices, last, page_size, max_pages_per_seq=5)
    assert bt.dtype == np.int32 and bt.shape == (5, 5) and list(sl) == lens
    assert list(bt[1]) == [indices[0], -1, -1, -1, -1]
    ip2, ix2, last2 = xattn.block_table_to_csr(bt, sl, page_size)
    assert list(ip2) == list(indptr) and list(ix2) == list(indices) and list(last2) == list(last)
    # Lists go in too, and come back as NumPy arrays.
    bt3, sl3 = xattn.csr_to_block_table([0, 2], [7, 3], [1], 4)
    assert bt3.tolist() == [[7, 3]] and sl3.tolist() == [5]
    with pytest.raises(xattn.Error, match="last_page_len"):
        xattn.csr_to_block_table([0, 2], [7, 3], [5], 4, max_pages_per_seq=2)
    with pytest.raises(xattn.Error, match="indptr"):
        xattn.csr_to_block_table([1, 2], [7, 3], [2], 4)
    with pytest.raises(xattn.Error, match="seqlens_k"):
        xattn.block_table_to_csr([[1]], [9], 4)


def test_kv_append(backend, rng):
    num_pages, page_size, hkv, d = 6, 4, 2, 16
    kc, vc = _rand(rng, num_pages, page_size, hkv, d), _rand(rng, num_pages, page_size, hkv, d)
    kn, vn = _rand(rng, 5, hkv, d), _rand(rng, 5, hkv, d)
    slots = np.array([3, 22, -1, 8, 0], dtype=np.int32)
    dk, dv = backend.dev(kc), backend.dev(vc)
    xattn.kv_append(backend.dev(kn), backend.dev(vn), backend.dev(slots), dk, dv,
                    context=backend.ctx)
    want_k, want_v = kc.reshape(-1, hkv, d).copy(), vc.reshape(-1, hkv, d).copy()
    for t, s in enumerate(slots):
        if s >= 0:
            want_k[s], want_v[s] = kn[t], vn[t]
    np.testing.assert_array_equal(backend.host(dk).reshape(-1, hkv, d), want_k)
    np.testing.assert_array_equal(backend.host(dv).reshape(-1, hkv, d), want_v)


@pytest.mark.parametrize("in_place", [False, True])
def test_merge_states(backend, rng, in_place):
    n, h, d = 13, 4, 24
    q, k = _rand(rng, n, h, d), _rand(rng, 50, h, d)
    v = _rand(rng, 50, h, d)
    oa, la = ref.attention(q, k[:20], v[:20])
    ob, lb = ref.attention(q, k[20:], v[20:])
    want_o, want_l = ref.attention(q, k, v)
    va, sa = backend.dev(oa.astype(np.float32)), backend.dev(la.astype(np.float32))
    kw = {"out": va, "lse_out": sa} if in_place else {}
    o, s = xattn.merge_states(va, sa, backend.dev(ob.astype(np.float32)),
                              backend.dev(lb.astype(np.float32)), context=backend.ctx, **kw)
    if in_place:
        assert o is va and s is sa
    assert ref.rel_err(backend.host(o), want_o) < 2e-5
    np.testing.assert_allclose(backend.host(s), want_l, rtol=1e-5, atol=1e-5)


def test_plans_cached_by_shape(backend, rng):
    q, k, v = _rand(rng, 1, 4, 2, 16), _rand(rng, 1, 8, 2, 16), _rand(rng, 1, 8, 2, 16)
    xattn.attention(backend.dev(q), backend.dev(k), backend.dev(v), context=backend.ctx)
    plans = dict(backend.ctx._plans)
    for _ in range(2):
        xattn.attention(backend.dev(q), backend.dev(k), backend.dev(v), context=backend.ctx)
    assert len(backend.ctx._plans) == len(plans)
    assert all(backend.ctx._plans[key] is plan for key, plan in plans.items())


def test_interleaved_outputs(backend, rng):
    """K and V views of one combined cache [pages, 2, page, H, D] written by
    one call: each output gets exactly its own elements (on opencl, where
    outputs are copied back, too)."""
    kv = _rand(rng, 5, 2, 4, 2, 8)
    kn, vn = _rand(rng, 3, 2, 8), _rand(rng, 3, 2, 8)
    slots = np.array([1, 9, 18], dtype=np.int32)
    dkv = backend.dev(kv)
    xattn.kv_append(backend.dev(kn), backend.dev(vn), backend.dev(slots), dkv[:, 0], dkv[:, 1],
                    context=backend.ctx)
    want = kv.copy()
    for t, s in enumerate(slots):
        want[s // 4, 0, s % 4], want[s // 4, 1, s % 4] = kn[t], vn[t]
    np.testing.assert_array_equal(backend.host(dkv), want)


def test_empty_tensors(backend, rng):
    """Tensors with no elements (NumPy exports zero strides for them): a
    ragged batch of empty sequences and a merge of no rows."""
    d = backend.dev
    q = np.zeros((0, 2, 16), np.float32)
    k = _rand(rng, 6, 2, 16)
    o = xattn.attention(d(q), d(k), d(k), cu_seqlens_q=d(np.array([0, 0], np.int32)),
                        cu_seqlens_k=d(np.array([0, 6], np.int32)), max_seqlen_q=1,
                        max_seqlen_k=6, context=backend.ctx)
    assert tuple(o.shape) == (0, 2, 16)
    v, s = xattn.merge_states(d(np.zeros((0, 2, 8), np.float32)), d(np.zeros((0, 2), np.float32)),
                              d(np.zeros((0, 2, 8), np.float32)), d(np.zeros((0, 2), np.float32)),
                              context=backend.ctx)
    assert tuple(v.shape) == (0, 2, 8) and tuple(s.shape) == (0, 2)
