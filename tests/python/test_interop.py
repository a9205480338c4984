"""CuPy and JAX arrays through DLPack (skipped, with the reason, where the
library is not installed or has no device)."""
import numpy as np
import pytest

import reference as ref
import xattn


def _qkv(rng):
    return (rng.standard_normal((1, 12, 4, 32)).astype(np.float32),
            rng.standard_normal((1, 20, 2, 32)).astype(np.float32),
            rng.standard_normal((1, 20, 2, 32)).astype(np.float32))


def _want(q, k, v):
    return ref.attention(q[0], k[0], v[0], causal=True)[0][None]


def test_cupy_arrays(rng):
    cupy = pytest.importorskip("cupy")
    if not xattn.info()["backends"]["cuda"]["devices"]:
        pytest.skip("no CUDA device with xattn's cuda backend")
    q, k, v = _qkv(rng)
    o = xattn.attention(cupy.asarray(q), cupy.asarray(k), cupy.asarray(v), causal=True)
    assert isinstance(o, cupy.ndarray)
    assert ref.rel_err(cupy.asnumpy(o), _want(q, k, v)) < 2e-5


def test_jax_arrays(rng):
    jax = pytest.importorskip("jax")
    q, k, v = _qkv(rng)
    for dev in jax.devices():
        if dev.platform == "gpu" and not xattn.info()["backends"]["cuda"]["devices"]:
            continue
        if dev.platform not in ("cpu", "gpu"):
            continue
        jq, jk, jv = (jax.device_put(a, dev) for a in (q, k, v))
        o = xattn.attention(jq, jk, jv, causal=True)
        assert isinstance(o, jax.Array), type(o)
        assert ref.rel_err(np.asarray(o), _want(q, k, v)) < 2e-5
