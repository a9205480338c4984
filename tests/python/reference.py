"""NumPy float64 references for the Python tests (the semantics of
docs/attention.md and docs/moe.md)."""
import numpy as np


def attention(q, k, v, causal=False, window=None, softcap=0.0, alibi=None, sinks=None,
              scale=None):
    """One sequence: q [Sq, Hq, D], k [Sk, Hkv, D], v [Sk, Hkv, Dv] ->
    (o [Sq, Hq, Dv], lse [Sq, Hq])."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    sq, hq, d = q.shape
    sk, hkv, dv = v.shape
    g = hq // hkv
    scale = 1.0 / np.sqrt(d) if not scale else scale
    wl, wr = (-1, -1) if window is None else window
    if causal:
        wr = 0
    o = np.zeros((sq, hq, dv))
    lse = np.full((sq, hq), -np.inf)
    i = np.arange(sq)[:, None] + sk - sq
    j = np.arange(sk)[None, :]
    visible = np.ones((sq, sk), dtype=bool)
    if wl >= 0:
        visible &= j >= i - wl
    if wr >= 0:
        visible &= j <= i + wr
    for h in range(hq):
        s = scale * q[:, h, :] @ k[:, h // g, :].T
        if softcap:
            s = softcap * np.tanh(s / softcap)
        if alibi is not None:
            s = s - alibi[h] * np.abs(i - j)
        s = np.where(visible, s, -np.inf)
        for r in range(sq):
            row = s[r][visible[r]]
            if row.size == 0:
                continue
            m = row.max()
            if sinks is not None:
                m = max(m, sinks[h])
            p = np.exp(s[r] - m)
            den = p.sum() + (np.exp(sinks[h] - m) if sinks is not None else 0.0)
            o[r, h] = (p / den) @ v[:, h // g, :]
            lse[r, h] = m + np.log(den)
    return o, lse


def silu(x):
    return x / (1.0 + np.exp(-x))


def moe_forward(logits, x, w1, w2, top_k, renormalize=True):
    """softmax_topk routing, swiglu experts: out [T, H]."""
    logits, x, w1, w2 = (np.asarray(a, dtype=np.float64) for a in (logits, x, w1, w2))
    t, e = logits.shape
    inter = w2.shape[2]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    out = np.zeros((t, x.shape[1]))
    for tok in range(t):
        ids = sorted(range(e), key=lambda i: (-logits[tok, i], i))[:top_k]
        wts = p[tok, ids]
        if renormalize:
            wts = wts / wts.sum()
        for ex, wt in zip(ids, wts):
            gu = w1[ex] @ x[tok]
            h = silu(gu[:inter]) * gu[inter:]
            out[tok] += wt * (w2[ex] @ h)
    return out


def rel_err(out, ref):
    out, ref = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert not np.isnan(out).any(), "NaN in the output"
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)


TOL = {"float32": 2e-5, "float16": 3e-3, "bfloat16": 2e-2}
