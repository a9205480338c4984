"""The C ABI through ctypes: the library, its structs, and Error.

Everything here mirrors api/xattn_core.h, xattn_attn.h, xattn_moe.h and
xattn_dlpack.h field for field; the rest of the package talks to libxattn
only through this module.
"""
from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_int32,
                    c_int64, c_size_t, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p)
from typing import Any

MAX_RANK = 4
WORKSPACE_ALIGN = 256

# xattn_status
OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_UNSUPPORTED = 2
ERR_INVALID_ENV = 5

# xattn_backend_kind, by name
BACKENDS = {"auto": 0, "cpu": 1, "opencl": 2, "cuda": 3, "hip": 4}

# xattn_dtype
F32, F16, BF16, I32 = 0, 1, 2, 3
DTYPE_NAMES = {F32: "f32", F16: "f16", BF16: "bf16", I32: "i32"}

# xattn_attn_desc.flags and layouts
ATTN_CAUSAL, ATTN_WINDOW, ATTN_ALIBI, ATTN_SINKS, ATTN_LSE = 1, 2, 4, 8, 16
Q_UNIFORM, Q_RAGGED = 0, 1
KV_UNIFORM, KV_RAGGED, KV_PAGED = 0, 1, 2

# xattn_moe_desc
MOE_ROUTES = {"softmax_topk": 0, "topk_softmax": 1, "sigmoid_grouped": 2, "topk_sigmoid": 3}
MOE_ACTIVATIONS = {"swiglu": 0, "geglu": 1, "swiglu_clamped": 2}
MOE_RENORMALIZE, MOE_BIAS, MOE_WEIGHTS_ON_INPUT = 1, 2, 4
MOE_W1_INTERLEAVED, MOE_EXPERT_B1, MOE_EXPERT_B2 = 8, 16, 32

# DLPack device types
DL_CPU, DL_CUDA, DL_CUDA_HOST, DL_OPENCL, DL_ROCM, DL_ROCM_HOST = 1, 2, 3, 4, 10, 11
DL_DEVICE_NAMES = {1: "kDLCPU", 2: "kDLCUDA", 3: "kDLCUDAHost", 4: "kDLOpenCL", 7: "kDLVulkan",
                   8: "kDLMetal", 9: "kDLVPI", 10: "kDLROCM", 11: "kDLROCMHost",
                   13: "kDLCUDAManaged", 14: "kDLOneAPI"}


class Error(Exception):
    """Every failure of an xattn call.

    ``status`` is the C status code, ``status_name`` its name
    (``"XATTN_ERR_INVALID_ARGUMENT"``, ...) and ``message`` the library's
    message naming the argument and the rule it broke.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = int(status)
        self.status_name = status_name(self.status)
        self.message = message
        super().__init__(f"{self.status_name}: {message}")


class Caps(Structure):
    """The C ``xattn_device_caps``, field for field."""

    _fields_ = [("name", c_char * 128), ("style", c_int), ("compute_units", c_uint32),
                ("simd_width", c_uint32), ("local_mem_bytes", c_uint32),
                ("cache_bytes", c_uint32), ("max_threads_per_group", c_uint32),
                ("registers_per_group", c_uint32), ("matrix_dtypes", c_uint32),
                ("matrix_m", c_uint32), ("matrix_n", c_uint32), ("matrix_k", c_uint32),
                ("vector_bytes", c_uint32), ("has_f16", c_uint32), ("has_bf16", c_uint32),
                ("peak_flops_f32", c_double), ("peak_flops_f16", c_double),
                ("peak_bytes_per_s", c_double)]


class ContextOptions(Structure):
    """The C ``xattn_context_options``, field for field."""

    _fields_ = [("backend", c_int), ("device", c_int32), ("native_queue", c_void_p),
                ("num_threads", c_int32)]


class Tensor(Structure):
    """The C ``xattn_tensor``, field for field."""

    _fields_ = [("buffer", c_void_p), ("offset", c_size_t), ("dtype", c_int), ("rank", c_int32),
                ("shape", c_int64 * MAX_RANK), ("stride", c_int64 * MAX_RANK)]


class AttnDesc(Structure):
    """The C ``xattn_attn_desc``, field for field."""

    _fields_ = [("dtype", c_int), ("batch", c_int32), ("num_q_heads", c_int32),
                ("num_kv_heads", c_int32), ("head_dim_qk", c_int32), ("head_dim_v", c_int32),
                ("q_layout", c_int), ("kv_layout", c_int), ("seqlen_q", c_int32),
                ("seqlen_k", c_int32), ("page_size", c_int32), ("num_pages", c_int32),
                ("max_pages_per_seq", c_int32), ("flags", c_uint32), ("window_left", c_int32),
                ("window_right", c_int32), ("scale", c_float), ("softcap", c_float)]


ATTN_TENSORS = ("q", "k", "v", "o", "lse", "cu_seqlens_q", "cu_seqlens_k", "block_table",
                "seqlens_k", "alibi_slopes", "sinks")


class AttnArgs(Structure):
    """The C ``xattn_attn_args``, field for field."""

    _fields_ = [(n, Tensor) for n in ATTN_TENSORS] + [  # type: ignore[assignment]
        ("workspace", c_void_p), ("workspace_offset", c_size_t)]


class MoeDesc(Structure):
    """The C ``xattn_moe_desc``, field for field."""

    _fields_ = [("max_tokens", c_int32), ("hidden", c_int32), ("num_experts", c_int32),
                ("top_k", c_int32), ("inter", c_int32), ("dtype", c_int),
                ("weight_dtype", c_int), ("logits_dtype", c_int), ("route", c_int),
                ("activation", c_int), ("flags", c_uint32), ("n_group", c_int32),
                ("topk_group", c_int32), ("routed_scaling_factor", c_float), ("align", c_int32),
                ("swiglu_alpha", c_float), ("swiglu_limit", c_float), ("bias_dtype", c_int)]


MOE_TENSORS = ("logits", "bias", "topk_ids", "topk_weights", "x", "expert_offsets", "x_perm",
               "row_token", "token_row", "w1", "w2", "y", "out")


class MoeArgs(Structure):
    """The C ``xattn_moe_args``, field for field."""

    _fields_ = ([(n, Tensor) for n in MOE_TENSORS] +  # type: ignore[assignment]
                [("accumulate", c_int32), ("workspace", c_void_p), ("workspace_offset", c_size_t),
                 ("b1", Tensor), ("b2", Tensor)])


# DLPack's stable C layout (v0.6 and later; the versioned struct of v1.0).
class DLDevice(Structure):
    """DLPack's DLDevice, field for field."""

    _fields_ = [("device_type", c_int32), ("device_id", c_int32)]


class DLDataType(Structure):
    """DLPack's DLDataType, field for field."""

    _fields_ = [("code", c_uint8), ("bits", c_uint8), ("lanes", c_uint16)]


class DLTensor(Structure):
    """DLPack's DLTensor, field for field."""

    _fields_ = [("data", c_void_p), ("device", DLDevice), ("ndim", c_int32),
                ("dtype", DLDataType), ("shape", POINTER(c_int64)),
                ("strides", POINTER(c_int64)), ("byte_offset", c_uint64)]


class DLManagedTensor(Structure):
    """DLPack's DLManagedTensor (0.x), field for field."""

    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", c_void_p), ("deleter", c_void_p)]


class DLPackVersion(Structure):
    """DLPack's DLPackVersion, field for field."""

    _fields_ = [("major", c_uint32), ("minor", c_uint32)]


class DLManagedTensorVersioned(Structure):
    """DLPack's DLManagedTensorVersioned (1.x), field for field."""

    _fields_ = [("version", DLPackVersion), ("manager_ctx", c_void_p), ("deleter", c_void_p),
                ("flags", c_uint64), ("dl_tensor", DLTensor)]


def _library_path() -> str:
    """XATTN_LIBRARY, else the copy inside this package (a pip install)."""
    env = os.environ.get("XATTN_LIBRARY")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib", "libxattn.so")
    if os.path.exists(here):
        return here
    return "libxattn.so.0"


def _load() -> ctypes.CDLL:
    path = _library_path()
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(
            f"xattn: cannot load libxattn ({path}): {e}. Install the package with "
            "`pip install .` from the source tree, or set XATTN_LIBRARY to a built "
            "libxattn.so") from e


lib = _load()

_VP = c_void_p
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "xattn_status_string": (c_char_p, [c_int]),
    "xattn_last_error": (c_char_p, []),
    "xattn_version": (c_char_p, []),
    "xattn_backend_probe": (c_int, [c_int, POINTER(c_int32), c_char_p, c_size_t]),
    "xattn_context_create": (c_int, [POINTER(_VP)]),
    "xattn_context_create_with": (c_int, [POINTER(ContextOptions), POINTER(_VP)]),
    "xattn_context_destroy": (None, [POINTER(_VP)]),
    "xattn_context_backend_name": (c_char_p, [_VP]),
    "xattn_context_device_name": (c_char_p, [_VP]),
    "xattn_context_caps": (c_int, [_VP, POINTER(Caps)]),
    "xattn_context_synchronize": (c_int, [_VP]),
    "xattn_buffer_alloc": (c_int, [_VP, c_size_t, POINTER(_VP)]),
    "xattn_buffer_wrap": (c_int, [_VP, _VP, c_size_t, POINTER(_VP)]),
    "xattn_buffer_free": (None, [POINTER(_VP)]),
    "xattn_buffer_write": (c_int, [_VP, c_size_t, _VP, c_size_t]),
    "xattn_buffer_read": (c_int, [_VP, c_size_t, _VP, c_size_t]),
    "xattn_tensor_from_dlpack": (c_int, [_VP, POINTER(DLTensor), POINTER(_VP), POINTER(Tensor)]),
    "xattn_plan_create": (c_int, [_VP, POINTER(AttnDesc), POINTER(_VP)]),
    "xattn_plan_workspace_size": (c_size_t, [_VP]),
    "xattn_plan_describe": (c_int, [_VP, c_char_p, c_size_t, POINTER(c_size_t)]),
    "xattn_plan_destroy": (None, [POINTER(_VP)]),
    "xattn_attn_run": (c_int, [_VP, POINTER(AttnArgs)]),
    "xattn_kv_append": (c_int, [_VP] + [POINTER(Tensor)] * 5),
    "xattn_merge_states": (c_int, [_VP] + [POINTER(Tensor)] * 6),
    "xattn_moe_plan_create": (c_int, [_VP, POINTER(MoeDesc), POINTER(_VP)]),
    "xattn_moe_workspace_size": (c_size_t, [_VP]),
    "xattn_moe_alignment": (c_int32, [_VP]),
    "xattn_moe_rows": (c_int64, [_VP, c_int64]),
    "xattn_moe_plan_describe": (c_int, [_VP, c_char_p, c_size_t, POINTER(c_size_t)]),
    "xattn_moe_plan_destroy": (None, [POINTER(_VP)]),
    "xattn_moe_route": (c_int, [_VP, POINTER(MoeArgs)]),
    "xattn_moe_dispatch": (c_int, [_VP, POINTER(MoeArgs)]),
    "xattn_moe_experts": (c_int, [_VP, POINTER(MoeArgs)]),
    "xattn_moe_combine": (c_int, [_VP, POINTER(MoeArgs)]),
    "xattn_moe_forward": (c_int, [_VP, POINTER(MoeArgs)]),
}
for _name, (_res, _args) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args


def status_name(status: int) -> str:
    """The C name of a status code ("XATTN_ERR_UNSUPPORTED")."""
    return lib.xattn_status_string(status).decode()


def last_error() -> str:
    """The calling thread's last C error message."""
    return (lib.xattn_last_error() or b"").decode(errors="replace")


def check(status: int, what: str = "") -> None:
    """Raise Error with the library's message unless status is XATTN_OK."""
    if status != OK:
        msg = last_error()
        raise Error(status, f"{what}: {msg}" if what else msg)


def describe(fn: Any, handle: int) -> str:
    """Text of xattn_plan_describe / xattn_moe_plan_describe."""
    needed = c_size_t(0)
    check(fn(handle, None, 0, ctypes.byref(needed)), "describe")
    buf = ctypes.create_string_buffer(needed.value + 1)
    check(fn(handle, buf, len(buf), None), "describe")
    return buf.value.decode(errors="replace")


# ctypes.pythonapi for DLPack capsules.
_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, c_char_p]
_api.PyCapsule_GetName.restype = c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_api.PyCapsule_IsValid.restype = c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, c_char_p]


DLPACK_FLAG_READ_ONLY = 1


def capsule_tensor(capsule: Any) -> "tuple[ctypes._Pointer[DLTensor], bool]":
    """The DLTensor inside a DLPack capsule, and whether the producer marked
    it read-only (DLPack 1.x). The capsule stays unconsumed: its own
    destructor calls the producer's deleter once it is collected, so the
    caller keeps it alive while the memory is in use."""
    if _api.PyCapsule_IsValid(capsule, b"dltensor"):
        p = _api.PyCapsule_GetPointer(capsule, b"dltensor")
        return ctypes.pointer(ctypes.cast(p, POINTER(DLManagedTensor)).contents.dl_tensor), False
    if _api.PyCapsule_IsValid(capsule, b"dltensor_versioned"):
        p = _api.PyCapsule_GetPointer(capsule, b"dltensor_versioned")
        m = ctypes.cast(p, POINTER(DLManagedTensorVersioned)).contents
        if m.version.major != 1:
            raise Error(ERR_UNSUPPORTED, f"DLPack version {m.version.major}.{m.version.minor}: "
                        "xattn reads DLPack 0.x and 1.x tensors")
        return ctypes.pointer(m.dl_tensor), bool(m.flags & DLPACK_FLAG_READ_ONLY)
    raise Error(ERR_INVALID_ARGUMENT, "__dlpack__ returned no DLPack capsule (expected a "
                "PyCapsule named 'dltensor' or 'dltensor_versioned')")


assert sys.maxsize > 2**32, "xattn needs a 64-bit Python"
