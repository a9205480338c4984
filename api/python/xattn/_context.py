"""Contexts: one backend, one device, one stream; info()."""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import weakref
from ctypes import c_int32, c_void_p
from typing import Any, Dict, Optional, Tuple

from . import _capi as C
from ._capi import Error


def _stream_handle(stream: Any) -> int:
    """An int from a stream handle or a stream object (torch.cuda.Stream has
    cuda_stream, cupy's Stream has ptr)."""
    for attr in ("cuda_stream", "ptr", "handle"):
        if hasattr(stream, attr):
            return int(getattr(stream, attr))
    try:
        return int(stream)
    except (TypeError, ValueError):
        raise Error(C.ERR_INVALID_ARGUMENT, f"stream: {stream!r} is neither a stream handle "
                    "(int) nor an object with cuda_stream or ptr") from None


def current_stream(backend: str, device: int) -> int:
    """The stream a caller's library is queueing on now: PyTorch's current
    stream when torch is loaded, else CuPy's, else the default stream. The
    default stream comes back as 1 (CU_STREAM_LEGACY) on CUDA, so that xattn
    joins it instead of making a stream of its own."""
    handle = 0
    torch = sys.modules.get("torch")
    cupy = sys.modules.get("cupy")
    if torch is not None and torch.cuda.is_available():
        handle = int(torch.cuda.current_stream(device).cuda_stream)
    elif cupy is not None and backend == "cuda":
        with cupy.cuda.Device(device):
            handle = int(cupy.cuda.get_current_stream().ptr)
    if handle == 0 and backend == "cuda":
        handle = 1
    return handle


class Context:
    """A backend and device to run on, the C ``xattn_context``.

    ``backend`` is ``"cpu"``, ``"opencl"``, ``"cuda"``, ``"hip"`` or
    ``"auto"``; ``None`` reads ``XATTN_BACKEND`` (and ``XATTN_DEVICE``) as the
    C library does. ``device`` is the index within the backend. ``stream``
    (cuda, hip) is the stream every call is queued on: a handle, a
    ``torch.cuda.Stream`` or a CuPy stream; by default the caller's current
    stream when the context is made (PyTorch's, else CuPy's, else the
    default stream). ``num_threads`` sizes the cpu backend's worker pool
    (0: every core).

    A context may be closed before or after the plans made from it, in any
    order: the C library counts references, so nothing dangles.

    Calls are queued on the context's stream and return before the device
    has finished (cuda, hip): tensors must stay alive until then. PyTorch's
    caching allocator guarantees that for tensors used on the stream they
    were allocated on; for others, use ``Tensor.record_stream``, as with
    any multi-stream PyTorch code.
    """

    def __init__(self, backend: Optional[str] = None, device: int = 0,
                 stream: Any = None, num_threads: int = 0) -> None:
        handle = c_void_p()
        self.stream: int = 0  # the native queue handed over, 0 for the backend's own
        name = backend or os.environ.get("XATTN_BACKEND") or "auto"
        if backend is None and device == 0:
            device = env_device()
        if (backend is None and name == "auto" and stream is None and not num_threads
                and device == env_device()):
            # AUTO: cuda, hip, opencl, then cpu, as the C library picks.
            C.check(C.lib.xattn_context_create(ctypes.byref(handle)), "Context")
        else:
            if name not in C.BACKENDS:
                raise Error(C.ERR_INVALID_ARGUMENT, f"backend: '{name}' is not one of "
                            + ", ".join(C.BACKENDS))
            opts = C.ContextOptions()
            opts.backend = C.BACKENDS[name]
            opts.device = int(device)
            opts.num_threads = int(num_threads)
            if stream is not None:
                opts.native_queue = _stream_handle(stream) or None
            elif name in ("cuda", "hip"):
                opts.native_queue = current_stream(name, int(device)) or None
            C.check(C.lib.xattn_context_create_with(ctypes.byref(opts), ctypes.byref(handle)),
                    "Context")
            self.stream = int(opts.native_queue or 0)
        # The C handle lives until this object is collected: plans and
        # workspaces made from the context hold it (as the C ones hold the
        # C context), so close() only stops new use of this object.
        self.c_handle: int = handle.value or 0
        self._closed = False
        self._finalizer = weakref.finalize(self, _destroy_context, self.c_handle)
        self.backend: str = C.lib.xattn_context_backend_name(handle).decode()
        self.device: int = int(device)
        self.device_name: str = C.lib.xattn_context_device_name(handle).decode(errors="replace")
        self._lock = threading.Lock()
        self._plans: Dict[Tuple[Any, ...], Any] = {}

    @property
    def handle(self) -> int:
        """The C ``xattn_context *`` as an int (for the ctypes calls)."""
        if self._closed:
            raise Error(C.ERR_INVALID_ARGUMENT, "context: used after close()")
        return self.c_handle

    @property
    def caps(self) -> Dict[str, Any]:
        """The device's capabilities the planner plans from."""
        caps = C.Caps()
        C.check(C.lib.xattn_context_caps(self.handle, ctypes.byref(caps)), "caps")
        out: Dict[str, Any] = {}
        for field in C.Caps._fields_:
            name = field[0]
            value = getattr(caps, name)
            out[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
        out["style"] = "cpu" if caps.style == 1 else "gpu"
        return out

    @property
    def dlpack_device_types(self) -> Tuple[int, ...]:
        """DLPack device types this context reads in place (none on opencl:
        host tensors are staged through device buffers there)."""
        return {"cpu": (C.DL_CPU, C.DL_CUDA_HOST, C.DL_ROCM_HOST), "cuda": (C.DL_CUDA,),
                "hip": (C.DL_ROCM,)}.get(self.backend, ())

    def synchronize(self) -> None:
        """Wait until everything queued on the context's stream has finished."""
        C.check(C.lib.xattn_context_synchronize(self.handle), "synchronize")

    def close(self) -> None:
        """Stop using this context: later calls through it raise Error.
        Plans and MoE layers made from it keep working; the device is
        released when the last of them and this object are collected."""
        self._plans.clear()
        self._closed = True

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"xattn.Context(backend={self.backend!r}, device={self.device_name!r})"


def env_device() -> int:
    """XATTN_DEVICE as an int (0 when unset)."""
    value = os.environ.get("XATTN_DEVICE") or "0"
    try:
        return int(value)
    except ValueError:
        raise Error(C.ERR_INVALID_ENV, f"XATTN_DEVICE: '{value}' is not a device index "
                    "(0, 1, ...)") from None


def _destroy_context(handle: int) -> None:
    h = c_void_p(handle)
    C.lib.xattn_context_destroy(ctypes.byref(h))


_defaults: Dict[Tuple[str, int, int], Context] = {}
_defaults_lock = threading.Lock()


def default_context(dl_device: Tuple[int, int]) -> Context:
    """The context the one-shot functions use for tensors on dl_device (a
    ``__dlpack_device__()`` pair): cuda for CUDA tensors on the caller's
    current stream, hip for ROCm ones, and for host tensors XATTN_BACKEND
    (cpu when unset)."""
    dev_type, dev_id = int(dl_device[0]), int(dl_device[1])
    if dev_type == C.DL_CUDA:
        backend = "cuda"
    elif dev_type == C.DL_ROCM:
        backend = "hip"
    elif dev_type in (C.DL_CPU, C.DL_CUDA_HOST, C.DL_ROCM_HOST):
        backend = os.environ.get("XATTN_BACKEND") or "cpu"
        if backend == "auto":
            backend = "cpu"
        dev_id = env_device()
    else:
        raise Error(C.ERR_INVALID_ARGUMENT, "tensor on DLPack device "
                    f"{C.DL_DEVICE_NAMES.get(dev_type, dev_type)}: xattn reads host (kDLCPU), "
                    "CUDA (kDLCUDA) and ROCm (kDLROCM) tensors")
    stream = current_stream(backend, dev_id) if backend in ("cuda", "hip") else 0
    key = (backend, dev_id, stream)
    with _defaults_lock:
        ctx = _defaults.get(key)
        if ctx is None:
            ctx = Context(backend, device=dev_id, stream=stream or None)
            _defaults[key] = ctx
        return ctx


def info() -> Dict[str, Any]:
    """The library version and, for each backend, how many devices it has
    and, when none, why (the C ``xattn_backend_probe``)."""
    backends: Dict[str, Any] = {}
    for name in ("cpu", "opencl", "cuda", "hip"):
        n = c_int32(0)
        reason = ctypes.create_string_buffer(1024)
        C.check(C.lib.xattn_backend_probe(C.BACKENDS[name], ctypes.byref(n), reason,
                                          len(reason)), "probe")
        backends[name] = {"devices": n.value, "reason": reason.value.decode(errors="replace")}
    return {"version": C.lib.xattn_version().decode(), "library": C._library_path(),
            "backends": backends}
