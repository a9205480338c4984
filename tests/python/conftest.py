"""Backends and tensor conversion for the Python package's tests.

Every test that takes the ``backend`` fixture runs once per backend: cpu
and opencl with NumPy (host) arrays, cuda with PyTorch CUDA tensors. A
backend without a device is skipped with its reason, unless
XATTN_REQUIRE_BACKEND names it: then the test fails.
"""
import os
import zlib

import numpy as np
import pytest

import xattn

_INFO = xattn.info()


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class Backend:
    """A backend name, its context, and array conversion for it."""

    def __init__(self, name):
        self.name = name
        self.ctx = xattn.Context(name)
        self.torch = _torch() if name == "cuda" else None

    def dev(self, a):
        """A NumPy array as this backend's tensor."""
        a = np.ascontiguousarray(a)
        if self.name == "cuda":
            return self.torch.from_numpy(a).cuda()
        return a

    def host(self, t):
        """Any result as a float64 NumPy array."""
        if self.torch is not None and isinstance(t, self.torch.Tensor):
            return t.detach().float().cpu().numpy().astype(np.float64)
        return np.asarray(t).astype(np.float64)

    def __repr__(self):
        return self.name


def _available(name):
    need = os.environ.get("XATTN_REQUIRE_BACKEND", "")
    n = _INFO["backends"][name]["devices"]
    if name == "cuda" and n:
        torch = _torch()
        if torch is None or not torch.cuda.is_available():
            return "no PyTorch with CUDA to make CUDA tensors"
    if n:
        return None
    reason = _INFO["backends"][name]["reason"] or "no device"
    if name in need.split(","):
        pytest.fail(f"XATTN_REQUIRE_BACKEND={need} but {name} has no device: {reason}")
    return reason


@pytest.fixture(scope="session", params=["cpu", "opencl", "cuda"])
def backend(request):
    why = _available(request.param)
    if why:
        pytest.skip(f"{request.param}: {why}")
    return Backend(request.param)


@pytest.fixture
def rng(request):
    # A test's own seed (stable across runs), or XATTN_TEST_SEED for all.
    seed = int(os.environ.get("XATTN_TEST_SEED", "0")) or zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
