"""Mixture of Experts: route, dispatch, experts, combine, forward."""
from __future__ import annotations

import ctypes
import threading
import weakref
from ctypes import c_void_p
from typing import Any, Dict, Optional, Tuple

from . import _capi as C
from ._capi import Error
from ._context import Context, default_context
from ._tensors import Call, dtype_code, empty_like, finish


def _destroy_moe_plan(handle: Optional[int]) -> None:
    h = c_void_p(handle)
    C.lib.xattn_moe_plan_destroy(ctypes.byref(h))


def _need_out(accumulate: bool) -> None:
    if accumulate:
        raise Error(C.ERR_INVALID_ARGUMENT, "out: accumulate=True adds to out, so out must be "
                    "given")


def _free_buffer(handle: Optional[int]) -> None:
    h = c_void_p(handle)
    C.lib.xattn_buffer_free(ctypes.byref(h))


class MoE:
    """One Mixture-of-Experts layer, planned once for the context's device.

    The layer: ``hidden`` H, ``inter`` I (expert FFN size), ``num_experts``
    E, ``top_k`` k, at most ``max_tokens`` tokens a call. ``route`` is
    ``"softmax_topk"`` (Mixtral, Qwen3), ``"topk_softmax"`` (GPT-OSS),
    ``"sigmoid_grouped"`` (DeepSeek-V3, with ``n_group``/``topk_group`` and
    ``bias`` for the correction bias) or ``"topk_sigmoid"`` (Llama-4);
    ``activation`` is ``"swiglu"``, ``"geglu"`` or ``"swiglu_clamped"``
    (GPT-OSS, ``swiglu_alpha``/``swiglu_limit``). ``weights_on_input`` scales
    the permuted rows instead of the outputs (Llama-4);
    ``w1_interleaved`` takes W1's gate and up rows interleaved (GPT-OSS);
    ``expert_b1`` / ``expert_b2`` add per-expert biases. Dtypes are names
    ("bf16") or library dtypes; ``weight_dtype`` and ``logits_dtype``
    default to ``dtype``.

    Shapes: logits [T, E], x [T, H], W1 [E, 2I, H], W2 [E, H, I], b1 [E, 2I],
    b2 [E, H]; R = rows(T) permuted rows. Each method returns its outputs,
    written into the tensors given as keywords or new ones in the caller's
    library. The context defaults to the one for host tensors
    (XATTN_BACKEND, else cpu); pass ``context=`` for a GPU.
    """

    def __init__(self, *, hidden: int, inter: int, num_experts: int, top_k: int,
                 max_tokens: int, dtype: Any = "bf16", weight_dtype: Any = None,
                 logits_dtype: Any = None, route: str = "softmax_topk",
                 activation: str = "swiglu", renormalize: bool = False, bias: bool = False,
                 n_group: int = 0, topk_group: int = 0, routed_scaling_factor: float = 0.0,
                 weights_on_input: bool = False, w1_interleaved: bool = False,
                 expert_b1: bool = False, expert_b2: bool = False, bias_dtype: Any = None,
                 swiglu_alpha: float = 0.0, swiglu_limit: float = 0.0, align: int = 0,
                 context: Optional[Context] = None) -> None:
        if route not in C.MOE_ROUTES:
            raise Error(C.ERR_INVALID_ARGUMENT, f"route: '{route}' is not one of "
                        + ", ".join(C.MOE_ROUTES))
        if activation not in C.MOE_ACTIVATIONS:
            raise Error(C.ERR_INVALID_ARGUMENT, f"activation: '{activation}' is not one of "
                        + ", ".join(C.MOE_ACTIVATIONS))
        d = C.MoeDesc()
        d.max_tokens, d.hidden, d.num_experts = int(max_tokens), int(hidden), int(num_experts)
        d.top_k, d.inter = int(top_k), int(inter)
        d.dtype = dtype_code(dtype)
        d.weight_dtype = dtype_code(weight_dtype if weight_dtype is not None else dtype)
        d.logits_dtype = dtype_code(logits_dtype if logits_dtype is not None else dtype)
        d.route = C.MOE_ROUTES[route]
        d.activation = C.MOE_ACTIVATIONS[activation]
        for on, flag in ((renormalize, C.MOE_RENORMALIZE), (bias, C.MOE_BIAS),
                         (weights_on_input, C.MOE_WEIGHTS_ON_INPUT),
                         (w1_interleaved, C.MOE_W1_INTERLEAVED), (expert_b1, C.MOE_EXPERT_B1),
                         (expert_b2, C.MOE_EXPERT_B2)):
            if on:
                d.flags |= flag
        d.n_group, d.topk_group = int(n_group), int(topk_group)
        d.routed_scaling_factor = float(routed_scaling_factor)
        d.align = int(align)
        d.swiglu_alpha, d.swiglu_limit = float(swiglu_alpha), float(swiglu_limit)
        d.bias_dtype = dtype_code(bias_dtype) if bias_dtype is not None else C.F32
        self.context = context or default_context((C.DL_CPU, 0))
        handle = c_void_p()
        C.check(C.lib.xattn_moe_plan_create(self.context.handle, ctypes.byref(d),
                                            ctypes.byref(handle)), "MoE")
        self.desc: C.MoeDesc = d
        self._handle: int = handle.value or 0
        self._finalizer = weakref.finalize(self, _destroy_moe_plan, handle.value)
        size = C.lib.xattn_moe_workspace_size(self._handle)
        ws = c_void_p()
        if size:
            C.check(C.lib.xattn_buffer_alloc(self.context.handle, size, ctypes.byref(ws)),
                    "workspace")
        self._workspace = ws.value
        self._ws_finalizer = weakref.finalize(self, _free_buffer, ws.value)
        self._lock = threading.Lock()

    @property
    def alignment(self) -> int:
        """Rows each expert's segment is padded to a multiple of."""
        return int(C.lib.xattn_moe_alignment(self._handle))

    def rows(self, num_tokens: int) -> int:
        """Permuted rows R that x_perm, row_token and y need for T tokens."""
        r = int(C.lib.xattn_moe_rows(self._handle, int(num_tokens)))
        if r < 0:
            raise Error(C.ERR_INVALID_ARGUMENT, f"num_tokens: {num_tokens} is outside "
                        f"[0, max_tokens {self.desc.max_tokens}]")
        return r

    def describe(self) -> str:
        """The plan: alignment, GEMM kernels and tiles, workspace."""
        return C.describe(C.lib.xattn_moe_plan_describe, self._handle)

    def _call(self, fn: Any, what: str, tensors: Dict[str, Tuple[Any, bool]],
              accumulate: bool = False) -> None:
        with Call(self.context) as call:
            args = C.MoeArgs()
            for name, (obj, output) in tensors.items():
                setattr(args, name, call.tensor(name, obj, output=output))
            args.accumulate = 1 if accumulate else 0
            args.workspace = self._workspace
            with self._lock:
                C.check(fn(self._handle, ctypes.byref(args)), what)

    def _tokens(self, t: Any, name: str) -> int:
        shape = getattr(t, "shape", None)
        if shape is None or len(shape) < 1:
            raise Error(C.ERR_INVALID_ARGUMENT, f"{name}: expected a tensor [T, ...]")
        return int(shape[0])

    def route(self, logits: Any, bias: Any = None, *, topk_ids: Any = None,
              topk_weights: Any = None) -> Tuple[Any, Any]:
        """Pick k experts per token: returns (topk_ids [T, k] i32,
        topk_weights [T, k] f32)."""
        T, k = self._tokens(logits, "logits"), self.desc.top_k
        if topk_ids is None:
            topk_ids = empty_like(logits, (T, k), C.I32)
        if topk_weights is None:
            topk_weights = empty_like(logits, (T, k), C.F32)
        self._call(C.lib.xattn_moe_route, "route",
                   {"logits": (logits, False), "bias": (bias, False),
                    "topk_ids": (topk_ids, True), "topk_weights": (topk_weights, True)})
        return finish(logits, topk_ids), finish(logits, topk_weights)

    def dispatch(self, topk_ids: Any, x: Any, topk_weights: Any = None, *,
                 expert_offsets: Any = None, x_perm: Any = None, row_token: Any = None,
                 token_row: Any = None) -> Tuple[Any, Any, Any, Any]:
        """Group the tokens' rows by expert. Returns (expert_offsets [E+1],
        x_perm [R, H], row_token [R], token_row [T, k]); ``topk_weights``
        only with weights_on_input."""
        T, d = self._tokens(x, "x"), self.desc
        R = self.rows(T)
        if expert_offsets is None:
            expert_offsets = empty_like(x, (d.num_experts + 1,), C.I32)
        if x_perm is None:
            x_perm = empty_like(x, (R, d.hidden), d.dtype)
        if row_token is None:
            row_token = empty_like(x, (R,), C.I32)
        if token_row is None:
            token_row = empty_like(x, (T, d.top_k), C.I32)
        self._call(C.lib.xattn_moe_dispatch, "dispatch",
                   {"topk_ids": (topk_ids, False), "x": (x, False),
                    "topk_weights": (topk_weights, False),
                    "expert_offsets": (expert_offsets, True), "x_perm": (x_perm, True),
                    "row_token": (row_token, True), "token_row": (token_row, True)})
        return (finish(x, expert_offsets), finish(x, x_perm), finish(x, row_token),
                finish(x, token_row))

    def experts(self, x_perm: Any, expert_offsets: Any, w1: Any, w2: Any, b1: Any = None,
                b2: Any = None, *, y: Any = None) -> Any:
        """The expert FFNs over the permuted rows: returns y [R, H]."""
        if y is None:
            y = empty_like(x_perm, (self._tokens(x_perm, "x_perm"), self.desc.hidden),
                           self.desc.dtype)
        self._call(C.lib.xattn_moe_experts, "experts",
                   {"x_perm": (x_perm, False), "expert_offsets": (expert_offsets, False),
                    "w1": (w1, False), "w2": (w2, False), "b1": (b1, False),
                    "b2": (b2, False), "y": (y, True)})
        return finish(x_perm, y)

    def combine(self, y: Any, token_row: Any, topk_weights: Any = None, *, out: Any = None,
                accumulate: bool = False) -> Any:
        """Weighted sum of each token's k rows: returns out [T, H] (added to
        ``out`` with accumulate)."""
        if out is None:
            _need_out(accumulate)
            out = empty_like(y, (self._tokens(token_row, "token_row"), self.desc.hidden),
                             self.desc.dtype)
        self._call(C.lib.xattn_moe_combine, "combine",
                   {"y": (y, False), "token_row": (token_row, False),
                    "topk_weights": (topk_weights, False), "out": (out, True)}, accumulate)
        return finish(y, out)

    def forward(self, logits: Any, x: Any, w1: Any, w2: Any, bias: Any = None, b1: Any = None,
                b2: Any = None, *, out: Any = None, accumulate: bool = False) -> Any:
        """The whole layer (route, dispatch, experts, combine; intermediates
        in the plan's workspace): returns out [T, H]."""
        if out is None:
            _need_out(accumulate)
            out = empty_like(x, (self._tokens(x, "x"), self.desc.hidden), self.desc.dtype)
        self._call(C.lib.xattn_moe_forward, "forward",
                   {"logits": (logits, False), "bias": (bias, False), "x": (x, False),
                    "w1": (w1, False), "w2": (w2, False), "b1": (b1, False),
                    "b2": (b2, False), "out": (out, True)}, accumulate)
        return finish(x, out)

    def __repr__(self) -> str:
        d = self.desc
        return (f"xattn.MoE(H={d.hidden}, I={d.inter}, E={d.num_experts}, k={d.top_k}, "
                f"backend={self.context.backend!r})")

