"""Caller tensors in and out: DLPack import, staging on opencl, allocation
in the caller's library, and the view changes the wrappers need."""
from __future__ import annotations

import ctypes
import itertools
import sys
from ctypes import c_void_p
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import _capi as C
from ._capi import Error
from ._context import Context

_HOST = (C.DL_CPU, C.DL_CUDA_HOST, C.DL_ROCM_HOST)
_DL_DTYPES = {(2, 32): C.F32, (2, 16): C.F16, (4, 16): C.BF16, (0, 32): C.I32}
_DTYPE_SIZE = {C.F32: 4, C.F16: 2, C.BF16: 2, C.I32: 4}
_DTYPE_BY_NAME = {"f32": C.F32, "float32": C.F32, "f16": C.F16, "float16": C.F16,
                  "half": C.F16, "bf16": C.BF16, "bfloat16": C.BF16, "i32": C.I32,
                  "int32": C.I32}


def dtype_code(dtype: Any) -> int:
    """An xattn dtype from a name ("bf16", "float16"), a NumPy, ml_dtypes or
    JAX dtype or type (numpy.float32), or a PyTorch dtype (torch.bfloat16)."""
    if isinstance(dtype, int) and not isinstance(dtype, bool) and dtype in C.DTYPE_NAMES:
        return dtype
    name = None
    if not isinstance(dtype, (str, bool)) and "numpy" in sys.modules:
        try:
            name = sys.modules["numpy"].dtype(dtype).name
        except TypeError:
            name = None
    if name is None:
        name = str(getattr(dtype, "name", dtype)).split(".")[-1].lower()
    if isinstance(dtype, bool) or name not in _DTYPE_BY_NAME:
        raise Error(C.ERR_INVALID_ARGUMENT, f"dtype: {dtype!r} is not one of f32, f16, bf16, i32")
    return _DTYPE_BY_NAME[name]


def dlpack_device(obj: Any, name: str) -> Tuple[int, int]:
    """``obj.__dlpack_device__()``, or Error when obj is no DLPack tensor."""
    if not hasattr(obj, "__dlpack_device__") or not hasattr(obj, "__dlpack__"):
        raise Error(C.ERR_INVALID_ARGUMENT,
                    f"{name}: a {type(obj).__module__}.{type(obj).__name__} is not a DLPack "
                    "tensor (pass a PyTorch, NumPy, CuPy or JAX array)")
    dev = obj.__dlpack_device__()
    return int(dev[0]), int(dev[1])


def _export(obj: Any, name: str, stream: Optional[int]) -> Any:
    """A DLPack capsule of obj: DLPack 1.x first (it carries the read-only
    flag, and NumPy exports read-only arrays only so), else the legacy one."""
    kw = {"stream": stream} if stream else {}
    try:
        try:
            return obj.__dlpack__(max_version=(1, 0), **kw)
        except TypeError:
            return obj.__dlpack__(**kw)
    except (BufferError, TypeError, ValueError, RuntimeError) as e:
        raise Error(C.ERR_INVALID_ARGUMENT,
                    f"{name}: cannot be exported through DLPack: {e}") from None


class _Staged:
    """An opencl device buffer holding a copy of a host tensor's span."""

    def __init__(self, buf: int, host: int, span: int, shape: List[int], strides: List[int],
                 esize: int) -> None:
        self.buf, self.host, self.span = buf, host, span
        self.shape, self.strides, self.esize = shape, strides, esize

    def read_back(self) -> None:
        """Copy the device's copy back into the host tensor: the whole span
        when the elements tile it, else only the tensor's own elements (the
        gaps may be another output's, as K and V views of one cache are)."""
        n = 1
        for d in self.shape:
            n *= d
        if n * self.esize == self.span:
            C.check(C.lib.xattn_buffer_read(self.buf, 0, self.host, self.span), "read back")
            return
        tmp = (ctypes.c_char * self.span)()
        base = ctypes.addressof(tmp)
        C.check(C.lib.xattn_buffer_read(self.buf, 0, base, self.span), "read back")
        rank = len(self.shape)
        rows = self.strides[-1] == 1
        run = (self.shape[-1] if rows else 1) * self.esize
        dims = range(rank - 1) if rows else range(rank)
        for idx in itertools.product(*(range(self.shape[d]) for d in dims)):
            off = sum(i * self.strides[d] for i, d in zip(idx, dims)) * self.esize
            ctypes.memmove(self.host + off, base + off, run)


class Call:
    """The tensors of one C call, imported into ctx. Holds the caller's
    objects and their capsules until the call is done, then frees the
    wrapping buffers; on opencl, host tensors are copied into device buffers
    and outputs copied back when the call ends. The same memory named twice
    (an in-place output, however the caller spelled the view) becomes one C
    tensor on one buffer, as the C calls require."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._keep: List[Any] = []
        self._buffers: List[int] = []
        self._readback: List[_Staged] = []
        self._seen: Dict[Tuple[Any, ...], Tuple[C.Tensor, Optional[_Staged]]] = {}

    def __enter__(self) -> "Call":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None:
                for staged in self._readback:
                    staged.read_back()
        finally:
            for buf in self._buffers:
                h = c_void_p(buf)
                C.lib.xattn_buffer_free(ctypes.byref(h))
            self._buffers.clear()
            self._readback.clear()
            self._seen.clear()
            self._keep.clear()

    def tensor(self, name: str, obj: Any, output: bool = False) -> C.Tensor:
        """obj as a C tensor (absent for None)."""
        if obj is None:
            return C.Tensor()
        if isinstance(obj, HostArray):
            return self._host_array(name, obj, output)
        if output and _library(obj) in ("jax", "jaxlib"):
            raise Error(C.ERR_INVALID_ARGUMENT, f"{name}: JAX arrays are immutable; leave "
                        f"{name} unset and use the array returned")
        dev = dlpack_device(obj, name)
        ctx = self.ctx
        if ctx.backend == "opencl" and dev[0] not in _HOST:
            raise Error(C.ERR_INVALID_ARGUMENT,
                        f"{name}: a {C.DL_DEVICE_NAMES.get(dev[0], dev[0])} tensor on an opencl "
                        "context: opencl reads host tensors (kDLCPU), copied through device "
                        "buffers; pass host memory, or use the cuda or hip backend")
        stream = ctx.stream if dev[0] in ctx.dlpack_device_types and dev[0] not in _HOST else 0
        capsule = _export(obj, name, stream)
        self._keep.append((obj, capsule))
        dlp, read_only = C.capsule_tensor(capsule)
        if output and read_only:
            raise Error(C.ERR_INVALID_ARGUMENT,
                        f"{name}: read-only (DLPack's read-only flag); an output must be writable")
        dl = dlp.contents
        shape = [dl.shape[i] for i in range(max(dl.ndim, 0))] if dl.shape else []
        empty = any(n == 0 for n in shape)
        strides = ([dl.strides[i] for i in range(len(shape))] if dl.strides and not empty
                   else compact_strides(shape))
        key = ((dl.data or 0) + dl.byte_offset, dev, dl.dtype.code, dl.dtype.bits,
               dl.dtype.lanes, tuple(shape), tuple(strides))
        seen = self._seen.get(key)
        if seen is not None:
            if output and seen[1] is not None and seen[1] not in self._readback:
                self._readback.append(seen[1])
            return _copy(seen[0])
        staged = None
        if ctx.backend == "opencl":
            t, staged = self._staged(name, dl, shape, strides, output)
        else:
            if empty and dl.strides:
                # No elements: NumPy 2 exports zero strides, which address
                # nothing here; the compact ones say the same.
                plain = C.DLTensor()
                ctypes.pointer(plain)[0] = dl
                plain.strides = None
                dlp = ctypes.pointer(plain)
                self._keep.append(plain)
            buf = c_void_p()
            t = C.Tensor()
            C.check(C.lib.xattn_tensor_from_dlpack(ctx.c_handle, dlp, ctypes.byref(buf),
                                                   ctypes.byref(t)), name)
            self._buffers.append(buf.value or 0)
        self._seen[key] = (_copy(t), staged)
        return t

    def _host_array(self, name: str, obj: "HostArray", output: bool) -> C.Tensor:
        """A result array of our own (always an output, so on opencl its
        device buffer needs no copy in)."""
        arr = obj.array
        host, size = int(arr.ctypes.data), int(arr.nbytes)
        buf = c_void_p()
        if self.ctx.backend == "opencl":
            C.check(C.lib.xattn_buffer_alloc(self.ctx.c_handle, size, ctypes.byref(buf)), name)
            if output and size:
                self._readback.append(_Staged(buf.value or 0, host, size, list(arr.shape),
                                              compact_strides(arr.shape), 2))
        else:
            C.check(C.lib.xattn_buffer_wrap(self.ctx.c_handle, host if size else None, size,
                                            ctypes.byref(buf)), name)
        self._buffers.append(buf.value or 0)
        self._keep.append(obj)
        t = C.Tensor()
        t.buffer, t.dtype, t.rank = buf.value, obj.code, arr.ndim
        for i, (n, st) in enumerate(zip(arr.shape, compact_strides(arr.shape))):
            t.shape[i], t.stride[i] = n, st
        return t

    def _staged(self, name: str, dl: C.DLTensor, shape: List[int], strides: List[int],
                output: bool) -> Tuple[C.Tensor, Optional[_Staged]]:
        if not 1 <= dl.ndim <= C.MAX_RANK:
            raise Error(C.ERR_INVALID_ARGUMENT,
                        f"{name}: ndim {dl.ndim} is outside [1, {C.MAX_RANK}]")
        key = (dl.dtype.code, dl.dtype.bits)
        if dl.dtype.lanes != 1 or key not in _DL_DTYPES:
            raise Error(C.ERR_INVALID_ARGUMENT,
                        f"{name}: DLPack dtype (code {key[0]}, bits {key[1]}, lanes "
                        f"{dl.dtype.lanes}) is not f32, f16, bf16 or i32")
        dtype = _DL_DTYPES[key]
        esize = _DTYPE_SIZE[dtype]
        for n, st in zip(shape, strides):
            if n < 0:
                raise Error(C.ERR_INVALID_ARGUMENT, f"{name}: negative size {n}")
            if n > 1 and st < 1:
                raise Error(C.ERR_INVALID_ARGUMENT,
                            f"{name}: stride {st} (strides must be positive)")
        span = 0
        if all(n > 0 for n in shape):
            span = (1 + sum((n - 1) * st for n, st in zip(shape, strides))) * esize
        buf = c_void_p()
        C.check(C.lib.xattn_buffer_alloc(self.ctx.c_handle, span, ctypes.byref(buf)), name)
        self._buffers.append(buf.value or 0)
        host = (dl.data or 0) + dl.byte_offset
        staged = None
        if span:
            C.check(C.lib.xattn_buffer_write(buf, 0, host, span), name)
            staged = _Staged(buf.value or 0, host, span, shape, strides, esize)
            if output:
                self._readback.append(staged)
        t = C.Tensor()
        t.buffer = buf.value
        t.dtype = dtype
        t.rank = dl.ndim
        for i in range(dl.ndim):
            t.shape[i] = shape[i]
            t.stride[i] = strides[i] if shape[i] > 1 else 1
        return t, staged


def _copy(t: C.Tensor) -> C.Tensor:
    c = C.Tensor()
    ctypes.pointer(c)[0] = t
    return c


class HostArray:
    """A new host result NumPy cannot hand over through DLPack (bf16: NumPy
    exports no bfloat16), kept as raw 16-bit words and wrapped directly."""

    def __init__(self, shape: Tuple[int, ...], code: int) -> None:
        import numpy
        self.array = numpy.empty(shape, dtype="uint16")
        self.code = code
        self.shape = shape

    def value(self) -> Any:
        """The words as the dtype they hold (ml_dtypes' bfloat16)."""
        return self.array.view(_dtype_for("numpy", self.code))


def compact_strides(shape: Sequence[int]) -> List[int]:
    """Row-major strides in elements."""
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * max(int(shape[i + 1]), 1)
    return strides


def shape_of(t: C.Tensor) -> Tuple[int, ...]:
    """A C tensor's shape."""
    return tuple(t.shape[i] for i in range(t.rank))


def unsqueeze(t: C.Tensor, dim: int) -> C.Tensor:
    """t with a dimension of size 1 inserted at dim (a view)."""
    if t.rank >= C.MAX_RANK:
        raise Error(C.ERR_INVALID_ARGUMENT, f"rank {t.rank} tensor: no room for another dimension")
    shape = list(shape_of(t))
    strides = [t.stride[i] for i in range(t.rank)]
    shape.insert(dim, 1)
    strides.insert(dim, strides[dim] * shape[dim + 1] if dim < len(strides) else 1)
    t.rank += 1
    for i in range(t.rank):
        t.shape[i] = shape[i]
        t.stride[i] = strides[i]
    return t


def transpose2(t: C.Tensor) -> C.Tensor:
    """A rank-2 tensor's transposed view ([N, H] in memory as [H, N])."""
    if t.rank != 2:
        raise Error(C.ERR_INVALID_ARGUMENT, f"rank {t.rank}: expected a rank-2 tensor")
    t.shape[0], t.shape[1] = t.shape[1], t.shape[0]
    t.stride[0], t.stride[1] = t.stride[1], t.stride[0]
    return t


def _library(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _dtype_for(lib: str, code: int) -> Any:
    if lib == "torch":
        import torch
        return {C.F32: torch.float32, C.F16: torch.float16, C.BF16: torch.bfloat16,
                C.I32: torch.int32}[code]
    if code == C.BF16:
        try:
            import ml_dtypes
        except ImportError:
            raise Error(C.ERR_UNSUPPORTED, "bf16 output: NumPy has no bfloat16 (install "
                        "ml_dtypes, or pass out=)") from None
        return ml_dtypes.bfloat16
    return {C.F32: "float32", C.F16: "float16", C.I32: "int32"}[code]


def empty_like(ref: Any, shape: Sequence[int], code: int) -> Any:
    """A new tensor of shape and xattn dtype code, in ref's library and on
    ref's device. JAX arrays are immutable: for them it is a NumPy (host)
    or PyTorch/CuPy (CUDA) array, which finish() turns into a JAX array."""
    lib = _library(ref)
    shape = tuple(int(n) for n in shape)
    if lib == "torch":
        import torch
        return torch.empty(shape, dtype=_dtype_for("torch", code), device=ref.device)
    if lib == "numpy":
        import numpy
        return numpy.empty(shape, dtype=_dtype_for("numpy", code))
    if lib == "cupy":
        import cupy
        with cupy.cuda.Device(ref.device.id):
            return cupy.empty(shape, dtype=_dtype_for("cupy", code))
    dev = dlpack_device(ref, "tensor")
    if dev[0] in _HOST:
        if code == C.BF16:
            return HostArray(shape, code)
        import numpy
        return numpy.empty(shape, dtype=_dtype_for("numpy", code))
    if "torch" in sys.modules or _importable("torch"):
        import torch
        return torch.empty(shape, dtype=_dtype_for("torch", code),
                           device=torch.device("cuda", dev[1]))
    import cupy
    with cupy.cuda.Device(dev[1]):
        return cupy.empty(shape, dtype=_dtype_for("cupy", code))


def finish(ref: Any, arr: Any) -> Any:
    """arr in ref's library (JAX: a JAX array over arr's memory)."""
    if isinstance(arr, HostArray):
        arr = arr.value()
        if _library(ref) in ("jax", "jaxlib"):
            import jax.numpy as jnp
            return jnp.asarray(arr)
        return arr
    if _library(ref) in ("jax", "jaxlib") and _library(arr) != _library(ref):
        import jax.numpy as jnp
        return jnp.from_dlpack(arr)
    return arr


def host_ints(obj: Any, name: str) -> List[int]:
    """The values of a small integer tensor, on the host (for plans)."""
    if isinstance(obj, (list, tuple)):
        import numpy
        return [int(v) for v in numpy.asarray(obj, dtype="int64").reshape(-1).tolist()]
    lib = _library(obj)
    if lib == "torch":
        return [int(v) for v in obj.detach().cpu().reshape(-1).tolist()]
    if lib == "cupy":
        return [int(v) for v in obj.get().reshape(-1).tolist()]
    if hasattr(obj, "tolist"):
        import numpy
        return [int(v) for v in numpy.asarray(obj).reshape(-1).tolist()]
    raise Error(C.ERR_INVALID_ARGUMENT, f"{name}: expected a list or an integer tensor")


def ints_like(ref: Any, values: Sequence[int], shape: Sequence[int]) -> Any:
    """An i32 tensor holding values, in ref's library and on its device (a
    NumPy array when ref is a list)."""
    if isinstance(ref, (list, tuple)):
        import numpy
        return numpy.asarray(values, dtype="int32").reshape(tuple(shape))
    lib = _library(ref)
    if lib == "torch":
        import torch
        return torch.tensor(list(values), dtype=torch.int32, device=ref.device).reshape(
            tuple(shape))
    if lib == "cupy":
        import cupy
        with cupy.cuda.Device(ref.device.id):
            return cupy.asarray(values, dtype="int32").reshape(tuple(shape))
    import numpy
    arr = numpy.asarray(values, dtype="int32").reshape(tuple(shape))
    return finish(ref, arr)


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None
