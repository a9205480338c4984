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
    tried = 0
    for dev in jax.devices():
        if dev.platform == "gpu" and not xattn.info()["backends"]["cuda"]["devices"]:
            continue
        if dev.platform not in ("cpu", "gpu"):
            continue
        jq, jk, jv = (jax.device_put(a, dev) for a in (q, k, v))
        o = xattn.attention(jq, jk, jv, causal=True)
        assert isinstance(o, jax.Array), type(o)
        assert ref.rel_err(np.asarray(o), _want(q, k, v)) < 2e-5
        tried += 1
    assert tried >= 1
    with pytest.raises(xattn.Error, match="JAX arrays are immutable"):
        xattn.attention(jq, jk, jv, out=jq)


def test_jax_bf16_host_result(rng):
    """NumPy cannot export bfloat16 through DLPack: a new bf16 host result
    for a JAX caller is made of raw 16-bit words and still comes back as a
    JAX bf16 array."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    q, k, v = _qkv(rng)
    cpu = jax.devices("cpu")[0]
    jq, jk, jv = (jax.device_put(jnp.asarray(a, dtype=jnp.bfloat16), cpu) for a in (q, k, v))
    o = xattn.attention(jq, jk, jv, causal=True, context=xattn.Context("cpu"))
    assert isinstance(o, jax.Array) and o.dtype == jnp.bfloat16
    want = ref.attention(*(np.asarray(a.astype(jnp.float32))[0] for a in (jq, jk, jv)),
                         causal=True)[0][None]
    assert ref.rel_err(np.asarray(o.astype(jnp.float32)), want) < 2e-2
