"""MoE, contexts, errors, DLPack handling and lifetimes."""
import ctypes
import gc

import numpy as np
import pytest

import reference as ref
import xattn
from xattn import _capi


def _rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _moe_inputs(rng, T=24, H=32, inter=16, E=8):
    return (_rand(rng, T, E), _rand(rng, T, H), _rand(rng, E, 2 * inter, H, scale=0.2),
            _rand(rng, E, H, inter, scale=0.2))


def test_moe_forward_and_steps(backend, rng):
    logits, x, w1, w2 = _moe_inputs(rng)
    T, H = x.shape
    moe = xattn.MoE(hidden=H, inter=16, num_experts=8, top_k=2, max_tokens=64, dtype="f32",
                    renormalize=True, context=backend.ctx)
    want = ref.moe_forward(logits, x, w1, w2, top_k=2)
    d = {n: backend.dev(a) for n, a in (("logits", logits), ("x", x), ("w1", w1), ("w2", w2))}
    out = moe.forward(d["logits"], d["x"], d["w1"], d["w2"])
    assert ref.rel_err(backend.host(out), want) < 2e-5
    # The four steps give the same layer.
    ids, wts = moe.route(d["logits"])
    assert tuple(ids.shape) == (T, 2) and tuple(wts.shape) == (T, 2)
    offsets, x_perm, row_token, token_row = moe.dispatch(ids, d["x"])
    assert tuple(x_perm.shape) == (moe.rows(T), H)
    off = backend.host(offsets).astype(int)
    assert off[0] == 0 and (np.diff(off) % moe.alignment == 0).all()
    y = moe.experts(x_perm, offsets, d["w1"], d["w2"])
    out2 = moe.combine(y, token_row, wts)
    assert ref.rel_err(backend.host(out2), want) < 2e-5
    # accumulate adds to out.
    base = rng.standard_normal((T, H)).astype(np.float32)
    acc = backend.dev(base.copy())
    moe.combine(y, token_row, wts, out=acc, accumulate=True)
    assert ref.rel_err(backend.host(acc), want + base) < 2e-5
    assert f"align        {moe.alignment} rows" in moe.describe()


def test_moe_grouped_routing_matches_steps(backend, rng):
    """DeepSeek-V3-style routing: the route step's picks respect the kept groups."""
    E, k = 16, 4
    moe = xattn.MoE(hidden=16, inter=8, num_experts=E, top_k=k, max_tokens=8, dtype="f32",
                    route="sigmoid_grouped", n_group=4, topk_group=2, bias=True,
                    renormalize=True, routed_scaling_factor=2.5, context=backend.ctx)
    logits, bias = _rand(rng, 8, E), _rand(rng, E, scale=0.1)
    ids, wts = moe.route(backend.dev(logits), backend.dev(bias))
    ids, wts = backend.host(ids).astype(int), backend.host(wts)
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    for t in range(8):
        b = s[t] + bias
        groups = [sorted(b[g * 4:(g + 1) * 4])[-2:] for g in range(4)]
        kept = sorted(range(4), key=lambda g: (-sum(groups[g]), g))[:2]
        cand = [e for e in range(E) if e // 4 in kept]
        want = sorted(cand, key=lambda e: (-b[e], e))[:k]
        assert list(ids[t]) == want
        np.testing.assert_allclose(wts[t], 2.5 * s[t, want] / s[t, want].sum(), rtol=1e-5)


def test_info_and_context():
    info = xattn.info()
    assert info["version"] == xattn.__version__
    assert info["backends"]["cpu"]["devices"] >= 1
    assert set(info["backends"]) == {"cpu", "opencl", "cuda", "hip"}
    with xattn.Context("cpu", num_threads=2) as ctx:
        assert ctx.backend == "cpu"
        caps = ctx.caps
        assert caps["style"] == "cpu" and caps["compute_units"] >= 1
        ctx.synchronize()
    with pytest.raises(xattn.Error, match="used after close"):
        ctx.synchronize()


def test_errors_carry_status_and_message(rng):
    ctx = xattn.Context("cpu")
    q, k, v = _rand(rng, 1, 4, 2, 16), _rand(rng, 1, 8, 2, 32), _rand(rng, 1, 8, 2, 16)
    with pytest.raises(xattn.Error) as e:
        xattn.attention(q, k, v, context=ctx)  # head dims of q and k differ
    assert e.value.status == 1 and e.value.status_name == "XATTN_ERR_INVALID_ARGUMENT"
    assert "XATTN_ERR_INVALID_ARGUMENT" in str(e.value) and e.value.message
    with pytest.raises(xattn.Error, match="backend: 'tpu'"):
        xattn.Context("tpu")
    with pytest.raises(xattn.Error, match="route"):
        xattn.MoE(hidden=8, inter=8, num_experts=4, top_k=2, max_tokens=4, route="best")
    with pytest.raises(xattn.Error, match="top_k"):  # the C planner's message
        xattn.MoE(hidden=8, inter=8, num_experts=4, top_k=5, max_tokens=4, dtype="f32",
                  context=ctx)
    assert xattn.status_name(2) == "XATTN_ERR_UNSUPPORTED"


def test_bad_dtype_and_shape(backend, rng):
    q = _rand(rng, 1, 4, 2, 16)
    k = v = _rand(rng, 1, 8, 2, 16)
    d = backend.dev
    # Mixed dtypes: the C library names the tensor.
    with pytest.raises(xattn.Error, match="k: dtype f16, expected f32"):
        xattn.attention(d(q), d(k.astype(np.float16)), d(v), context=backend.ctx)
    # int64 offsets: xattn's index tensors are i32.
    cu = np.array([0, 4], dtype=np.int64)
    with pytest.raises(xattn.Error, match="cu_seqlens_q: .*(64 bits|bits 64)"):
        xattn.attention(d(q[0]), d(k[0]), d(v[0]), cu_seqlens_q=d(cu), max_seqlen_q=4,
                        context=backend.ctx)
    # out of the wrong shape.
    with pytest.raises(xattn.Error, match=r"o: shape\[3\] = 8, expected 16"):
        xattn.attention(d(q), d(k), d(v), out=d(np.zeros((1, 4, 2, 8), np.float32)),
                        context=backend.ctx)
    # Not a tensor at all.
    with pytest.raises(xattn.Error, match="not a DLPack tensor"):
        xattn.attention([[1.0]], d(k), d(v), context=backend.ctx)


class _FakeCuda:
    """A DLPack producer that says its memory is on a CUDA device."""

    def __init__(self):
        self.shape_arr = (ctypes.c_int64 * 1)(4)
        self.mem = (ctypes.c_float * 4)()
        m = _capi.DLManagedTensor()
        m.dl_tensor.data = ctypes.addressof(self.mem)
        m.dl_tensor.device.device_type = _capi.DL_CUDA
        m.dl_tensor.ndim = 1
        m.dl_tensor.dtype.code, m.dl_tensor.dtype.bits, m.dl_tensor.dtype.lanes = 2, 32, 1
        m.dl_tensor.shape = self.shape_arr
        self.managed = m
        new = ctypes.pythonapi.PyCapsule_New
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        self._new = new

    def __dlpack_device__(self):
        return (_capi.DL_CUDA, 0)

    def __dlpack__(self, stream=None):
        return self._new(ctypes.addressof(self.managed), b"dltensor", None)


def test_wrong_device_is_refused():
    """A CUDA tensor on a cpu or opencl context: a clear error, no access."""
    q = np.zeros((1, 4, 2, 16), np.float32)
    for name in ("cpu", "opencl"):
        if xattn.info()["backends"][name]["devices"] == 0:
            continue
        with pytest.raises(xattn.Error) as e:
            xattn.attention(q, q, q, alibi_slopes=_FakeCuda(), context=xattn.Context(name))
        assert e.value.status_name == "XATTN_ERR_INVALID_ARGUMENT"
        assert "alibi_slopes" in e.value.message
        assert "CUDA" in e.value.message or "device" in e.value.message


def test_default_context_follows_the_tensors(rng, monkeypatch):
    q = _rand(rng, 1, 3, 2, 8)
    monkeypatch.delenv("XATTN_BACKEND", raising=False)
    o = xattn.attention(q, q, q)
    assert xattn.default_context((1, 0)).backend == "cpu"
    assert ref.rel_err(o[0], ref.attention(q[0], q[0], q[0])[0]) < 2e-5


def test_lifetimes_in_any_order(rng):
    """Plans and contexts freed in any order by the collector keep working
    until the last reference goes."""
    for order in range(3):
        ctx = xattn.Context("cpu")
        moe = xattn.MoE(hidden=16, inter=8, num_experts=4, top_k=2, max_tokens=4, dtype="f32",
                        context=ctx)
        dec = xattn.PagedDecode(context=ctx)
        dec.plan(block_table=np.array([[0, 1]], np.int32), seqlens_k=np.array([5], np.int32),
                 num_q_heads=2, num_kv_heads=2, head_dim=8, page_size=4, num_pages=2,
                 dtype="f32")
        if order == 0:
            ctx.close()
        del ctx
        gc.collect()
        kc = _rand(rng, 2, 4, 2, 8)
        o = dec.run(_rand(rng, 1, 2, 8), kc, kc)
        assert np.isfinite(o).all()
        logits, x, w1, w2 = _moe_inputs(rng, T=4, H=16, inter=8, E=4)
        assert np.isfinite(moe.forward(logits, x, w1, w2)).all()
        if order == 1:
            del moe
            gc.collect()
            del dec
        else:
            del dec
            gc.collect()
            del moe
        gc.collect()


def test_opencl_stages_host_tensors(rng):
    if xattn.info()["backends"]["opencl"]["devices"] == 0:
        pytest.skip("opencl: " + xattn.info()["backends"]["opencl"]["reason"])
    ctx = xattn.Context("opencl")
    assert ctx.dlpack_device_types == ()
    q, k, v = _rand(rng, 1, 5, 2, 16), _rand(rng, 1, 9, 2, 16), _rand(rng, 1, 9, 2, 16)
    canvas = np.full((1, 5, 4, 16), 3.0, np.float32)
    out = canvas[:, :, 1:3]
    xattn.attention(q, k, v, out=out, context=ctx)
    assert (canvas[:, :, 0] == 3.0).all() and (canvas[:, :, 3] == 3.0).all()
    assert ref.rel_err(out[0], ref.attention(q[0], k[0], v[0])[0]) < 2e-5



def test_read_only_inputs_and_outputs(backend, rng):
    q, k = _rand(rng, 1, 4, 2, 16), _rand(rng, 1, 8, 2, 16)
    if backend.name == "cuda":
        pytest.skip("read-only flags are a host (NumPy) matter")
    for a in (q, k):
        a.setflags(write=False)
    o = xattn.attention(q, k, k, context=backend.ctx)  # read-only inputs are fine
    assert ref.rel_err(o[0], ref.attention(q[0], k[0], k[0])[0]) < 2e-5
    out = np.zeros((1, 4, 2, 16), np.float32)
    out.setflags(write=False)
    with pytest.raises(xattn.Error, match="out: read-only"):
        xattn.attention(q, k, k, out=out, context=backend.ctx)


def test_in_place_through_another_view(backend, rng):
    """merge_states in place with out= a new view object of the same memory."""
    if backend.name == "cuda":
        pytest.skip("host views")
    n, h, d = 5, 2, 8
    va, vb = _rand(rng, n, h, d), _rand(rng, n, h, d)
    sa, sb = _rand(rng, n, h), _rand(rng, n, h)
    want = (np.exp(sa)[..., None] * va + np.exp(sb)[..., None] * vb) / \
        (np.exp(sa) + np.exp(sb))[..., None]
    xattn.merge_states(va, sa, vb, sb, out=va[:], lse_out=sa[:], context=backend.ctx)
    assert ref.rel_err(va, want) < 2e-5


def test_dtype_spellings():
    import numpy
    code = xattn._tensors.dtype_code
    assert code("bf16") == code("bfloat16") == 2
    assert code(numpy.float32) == code(numpy.dtype("float32")) == code("f32") == 0
    assert code(numpy.float16) == 1 and code("int32") == 3
    for bad in (True, "float64", numpy.float64, 7):
        with pytest.raises(xattn.Error, match="dtype"):
            code(bad)


def test_moe_accumulate_needs_out(rng):
    moe = xattn.MoE(hidden=16, inter=8, num_experts=4, top_k=2, max_tokens=4, dtype="f32")
    logits, x, w1, w2 = _moe_inputs(rng, T=4, H=16, inter=8, E=4)
    with pytest.raises(xattn.Error, match="accumulate"):
        moe.forward(logits, x, w1, w2, accumulate=True)


def test_bad_device_variable(monkeypatch):
    monkeypatch.setenv("XATTN_DEVICE", "first")
    with pytest.raises(xattn.Error) as e:
        xattn.Context()
    assert e.value.status_name == "XATTN_ERR_INVALID_ENV"
