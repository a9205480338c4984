"""Attention: the one-shot attention(), the paged plan/run wrappers,
kv_append, merge_states, and page-table conversion."""
from __future__ import annotations

import ctypes
import math
import threading
import weakref
from ctypes import c_void_p
from typing import Any, List, Optional, Tuple

from . import _capi as C
from ._capi import Error
from ._context import Context, default_context
from ._tensors import (Call, dlpack_device, dtype_code, empty_like, finish, host_ints, ints_like,
                       shape_of, transpose2, unsqueeze)

_PLAN_CACHE_SIZE = 64


class _Workspace:
    """A device buffer of the context's, freed with its owner."""

    def __init__(self, ctx: Context, size: int) -> None:
        buf = c_void_p()
        if size:
            C.check(C.lib.xattn_buffer_alloc(ctx.handle, size, ctypes.byref(buf)), "workspace")
        self.handle: Optional[int] = buf.value
        self.size = size
        self._finalizer = weakref.finalize(self, _free_buffer, buf.value)


def _free_buffer(handle: Optional[int]) -> None:
    h = c_void_p(handle)
    C.lib.xattn_buffer_free(ctypes.byref(h))


def _destroy_plan(handle: Optional[int]) -> None:
    h = c_void_p(handle)
    C.lib.xattn_plan_destroy(ctypes.byref(h))


class AttentionPlan:
    """A C attention plan (``xattn_plan``) with its own workspace."""

    def __init__(self, ctx: Context, desc: C.AttnDesc) -> None:
        handle = c_void_p()
        C.check(C.lib.xattn_plan_create(ctx.handle, ctypes.byref(desc), ctypes.byref(handle)),
                "plan")
        self.context = ctx
        self.desc = desc
        self.handle: int = handle.value or 0
        self._finalizer = weakref.finalize(self, _destroy_plan, handle.value)
        self.workspace = _Workspace(ctx, C.lib.xattn_plan_workspace_size(self.handle))
        self._lock = threading.Lock()

    def describe(self) -> str:
        """The plan's tiles, kernels and workspace, as ``xattn plan`` prints them."""
        return C.describe(C.lib.xattn_plan_describe, self.handle)

    def run(self, args: C.AttnArgs) -> None:
        """``xattn_attn_run`` with this plan's workspace (args' tensors
        already imported by a Call)."""
        args.workspace = self.workspace.handle
        args.workspace_offset = 0
        # One workspace: runs of this plan are queued one after another.
        with self._lock:
            C.check(C.lib.xattn_attn_run(self.handle, ctypes.byref(args)), "run")


def _desc_key(desc: C.AttnDesc) -> Tuple[Any, ...]:
    return tuple(getattr(desc, f[0]) for f in C.AttnDesc._fields_)


def _cached_plan(ctx: Context, desc: C.AttnDesc) -> AttentionPlan:
    key = ("attn",) + _desc_key(desc)
    with ctx._lock:
        plan = ctx._plans.pop(key, None)
        if plan is None:
            plan = AttentionPlan(ctx, desc)
        ctx._plans[key] = plan  # most recent last
        while len(ctx._plans) > _PLAN_CACHE_SIZE:
            ctx._plans.pop(next(iter(ctx._plans)))
        return plan


def _mask(desc: C.AttnDesc, causal: bool, window: Optional[Tuple[int, int]],
          softcap: Optional[float], scale: Optional[float]) -> None:
    if causal:
        desc.flags |= C.ATTN_CAUSAL
    if window is not None:
        left, right = (int(w) for w in window)
        if causal:
            right = 0  # FlashAttention's rule: causal wins over the right side
        desc.flags |= C.ATTN_WINDOW
        desc.window_left, desc.window_right = left, right
    desc.softcap = float(softcap or 0.0)
    desc.scale = float(scale or 0.0)


def _lse_rows(t: C.Tensor, name: str) -> C.Tensor:
    """An LSE kept as [..., rows, H] (FlashInfer's order) as the C view
    [H, rows]: leading dimensions merged, then transposed."""
    while t.rank > 2:
        if t.stride[0] != t.shape[1] * t.stride[1] and t.shape[0] > 1 and t.shape[1] > 1:
            raise Error(C.ERR_INVALID_ARGUMENT,
                        f"{name}: its leading dimensions do not merge into one (strides "
                        f"{[t.stride[i] for i in range(t.rank)]})")
        shape = [t.shape[0] * t.shape[1]] + [t.shape[i] for i in range(2, t.rank)]
        stride = [t.stride[1] if t.shape[1] > 1 else t.stride[0]] + \
            [t.stride[i] for i in range(2, t.rank)]
        t.rank -= 1
        for i in range(t.rank):
            t.shape[i], t.stride[i] = shape[i], stride[i]
    return transpose2(t)


def _bind_outputs(call: Call, args: C.AttnArgs, desc: C.AttnDesc, q: Any,
                  q_shape: Tuple[int, ...], out: Any, lse: Any) -> Tuple[Any, Any]:
    """out [..., Hq, Dv] and, with XATTN_ATTN_LSE, lse [..., Hq] f32 (new ones
    in q's library unless given) into args; returns both."""
    if out is None:
        out = empty_like(q, q_shape[:-1] + (desc.head_dim_v,), desc.dtype)
    args.o = call.tensor("out", out, output=True)
    if desc.flags & C.ATTN_LSE:
        if lse is None:
            lse = empty_like(q, q_shape[:-1], C.F32)
        args.lse = _lse_rows(call.tensor("lse", lse, output=True), "lse")
    return out, lse


def _results(desc: C.AttnDesc, q: Any, out: Any, lse: Any) -> Any:
    """out, or (out, lse) with XATTN_ATTN_LSE, in q's library."""
    out = finish(q, out)
    return (out, finish(q, lse)) if desc.flags & C.ATTN_LSE else out


def _longest(offsets: Any, name: str, given: Optional[int]) -> int:
    """given, else the longest sequence the offsets [B+1] describe (read on
    the host: a GPU tensor is waited for)."""
    if given is not None:
        return int(given)
    offs = host_ints(offsets, name)
    return max([b - a for a, b in zip(offs, offs[1:])] + [0])


def attention(q: Any, k: Any, v: Any, *, causal: bool = False,
              window: Optional[Tuple[int, int]] = None, softcap: Optional[float] = None,
              alibi_slopes: Any = None, sinks: Any = None, scale: Optional[float] = None,
              return_lse: bool = False, out: Any = None, lse: Any = None,
              cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
              max_seqlen_q: Optional[int] = None, max_seqlen_k: Optional[int] = None,
              context: Optional[Context] = None) -> Any:
    """Fused attention, FlashAttention's ``flash_attn_func`` /
    ``flash_attn_varlen_func`` in one call.

    Layouts (NHD): ``q`` [B, Sq, Hq, D], ``k`` [B, Sk, Hkv, D], ``v``
    [B, Sk, Hkv, Dv]; a single sequence may drop B ([S, H, D]). With
    ``cu_seqlens_q`` / ``cu_seqlens_k`` (i32 [B+1]) q and k/v are ragged,
    [total, H, D]; ``max_seqlen_*`` bound the lengths (read from the
    offsets when not given, which waits for them on a GPU).

    ``causal`` masks bottom-right aligned (query i of Sq sees keys up to
    i + Sk - Sq, FlashAttention 2.1+'s rule; PyTorch's ``is_causal`` is
    top-left aligned when Sq != Sk). ``window`` = (left, right) keys on either
    side, -1 unbounded (with ``causal``, right is 0, as in FlashAttention);
    ``softcap`` c gives c * tanh(s / c); ``alibi_slopes`` [Hq] f32;
    ``sinks`` [Hq] f32 (logits that join only the softmax denominator);
    ``scale`` None or 0 means 1/sqrt(D).

    Returns ``out`` [..., Hq, Dv] (written into ``out=`` when given, else a
    new tensor of q's library on q's device) and, with ``return_lse``, the
    natural-log LSE [..., Hq] f32 as well. Plans are cached by shape on the
    context (by default: cuda for CUDA tensors on the current stream, hip for
    ROCm ones, XATTN_BACKEND or cpu for host tensors).
    """
    ctx = context or default_context(dlpack_device(q, "q"))
    ctx.handle  # raises after close()
    with Call(ctx) as call:
        tq = call.tensor("q", q)
        tk = call.tensor("k", k)
        tv = call.tensor("v", v)
        q_shape = shape_of(tq)
        desc = C.AttnDesc()
        desc.dtype = tq.dtype
        args = C.AttnArgs()
        if cu_seqlens_q is not None:
            tcq = call.tensor("cu_seqlens_q", cu_seqlens_q)
            desc.q_layout = C.Q_RAGGED
            desc.batch = int(tcq.shape[0]) - 1 if tcq.rank == 1 else 0
            desc.seqlen_q = _longest(cu_seqlens_q, "cu_seqlens_q", max_seqlen_q)
            args.cu_seqlens_q = tcq
        else:
            if tq.rank == 3:
                unsqueeze(tq, 0)
            desc.batch = int(tq.shape[0])
            desc.seqlen_q = int(tq.shape[1])
        if cu_seqlens_k is not None:
            tck = call.tensor("cu_seqlens_k", cu_seqlens_k)
            desc.kv_layout = C.KV_RAGGED
            desc.seqlen_k = _longest(cu_seqlens_k, "cu_seqlens_k", max_seqlen_k)
            args.cu_seqlens_k = tck
        else:
            if tk.rank == 3:
                unsqueeze(tk, 0)
            if tv.rank == 3:
                unsqueeze(tv, 0)
            desc.seqlen_k = int(tk.shape[1])
            if cu_seqlens_q is not None:
                desc.batch = int(tk.shape[0])
        desc.num_q_heads = int(tq.shape[tq.rank - 2])
        desc.num_kv_heads = int(tk.shape[tk.rank - 2])
        desc.head_dim_qk = int(tq.shape[tq.rank - 1])
        desc.head_dim_v = int(tv.shape[tv.rank - 1])
        _mask(desc, causal, window, softcap, scale)
        if alibi_slopes is not None:
            desc.flags |= C.ATTN_ALIBI
            args.alibi_slopes = call.tensor("alibi_slopes", alibi_slopes)
        if sinks is not None:
            desc.flags |= C.ATTN_SINKS
            args.sinks = call.tensor("sinks", sinks)
        if return_lse or lse is not None:
            desc.flags |= C.ATTN_LSE
        out, lse = _bind_outputs(call, args, desc, q, q_shape, out, lse)
        if args.o.rank == 3 and cu_seqlens_q is None:
            unsqueeze(args.o, 0)
        args.q, args.k, args.v = tq, tk, tv
        _cached_plan(ctx, desc).run(args)
    return _results(desc, q, out, lse)


# ---- page tables ----------------------------------------------------------


def csr_to_block_table(indptr: Any, indices: Any, last_page_len: Any, page_size: int,
                       max_pages_per_seq: Optional[int] = None) -> Tuple[Any, Any]:
    """FlashInfer's CSR page table to xattn's (block_table, seqlens_k).

    Sequence b owns pages ``indices[indptr[b]:indptr[b+1]]``, the last one
    holding ``last_page_len[b]`` tokens (1..page_size; 0 for a sequence with
    no pages). Returns ``block_table`` [B, max_pages_per_seq] (unused
    entries -1) and ``seqlens_k`` [B], i32, in indptr's library and on its
    device (NumPy for lists).
    """
    ptr = host_ints(indptr, "indptr")
    idx = host_ints(indices, "indices")
    last = host_ints(last_page_len, "last_page_len")
    batch = len(ptr) - 1
    if batch < 1 or len(last) != batch:
        raise Error(C.ERR_INVALID_ARGUMENT, f"indptr: {len(ptr)} entries and last_page_len "
                    f"{len(last)}: expected B+1 and B, B >= 1")
    if page_size < 1:
        raise Error(C.ERR_INVALID_ARGUMENT, f"page_size: {page_size}, must be >= 1")
    counts = [b - a for a, b in zip(ptr, ptr[1:])]
    if ptr[0] != 0 or min(counts) < 0 or ptr[-1] > len(idx):
        raise Error(C.ERR_INVALID_ARGUMENT, "indptr: must start at 0, not decrease, and end "
                    f"within indices ({len(idx)} entries)")
    width = max(counts) if max_pages_per_seq is None else int(max_pages_per_seq)
    width = max(width, 1)
    table: List[int] = []
    lens: List[int] = []
    for b in range(batch):
        n = counts[b]
        if n > width:
            raise Error(C.ERR_INVALID_ARGUMENT, f"indptr: sequence {b} has {n} pages, more "
                        f"than max_pages_per_seq {width}")
        if n and not 1 <= last[b] <= page_size:
            raise Error(C.ERR_INVALID_ARGUMENT, f"last_page_len[{b}]: {last[b]}, must be in "
                        f"[1, page_size {page_size}] for a sequence with pages")
        table += idx[ptr[b]:ptr[b + 1]] + [-1] * (width - n)
        lens.append((n - 1) * page_size + last[b] if n else 0)
    return (ints_like(indptr, table, (batch, width)), ints_like(indptr, lens, (batch,)))


def _table_shape(block_table: Any, entries: int) -> Tuple[int, int]:
    """(rows, columns) of a block table given as a tensor or nested lists."""
    shape = getattr(block_table, "shape", None)
    if shape is None and isinstance(block_table, (list, tuple)):
        rows = len(block_table)
        shape = (rows, entries // rows if rows else 0)
    if shape is None or len(shape) != 2:
        raise Error(C.ERR_INVALID_ARGUMENT, "block_table: expected [B, max_pages_per_seq]")
    return int(shape[0]), int(shape[1])


def block_table_to_csr(block_table: Any, seqlens_k: Any,
                       page_size: int) -> Tuple[Any, Any, Any]:
    """xattn's (block_table, seqlens_k) to FlashInfer's (indptr, indices,
    last_page_len), i32, in block_table's library and on its device."""
    lens = host_ints(seqlens_k, "seqlens_k")
    flat = host_ints(block_table, "block_table")
    batch = len(lens)
    rows, width = _table_shape(block_table, len(flat))
    if batch < 1 or rows != batch:
        raise Error(C.ERR_INVALID_ARGUMENT, f"block_table: {rows} rows for {batch} sequences "
                    "(seqlens_k)")
    if page_size < 1:
        raise Error(C.ERR_INVALID_ARGUMENT, f"page_size: {page_size}, must be >= 1")
    indptr, indices, last = [0], [], []
    for b, n in enumerate(lens):
        pages = (n + page_size - 1) // page_size
        if n < 0 or pages > width:
            raise Error(C.ERR_INVALID_ARGUMENT, f"seqlens_k[{b}]: {n} needs {pages} pages, "
                        f"block_table rows have {width}")
        indices += flat[b * width:b * width + pages]
        indptr.append(len(indices))
        last.append(n - (pages - 1) * page_size if pages else 0)
    return (ints_like(block_table, indptr, (batch + 1,)),
            ints_like(block_table, indices, (len(indices),)),
            ints_like(block_table, last, (batch,)))


# ---- paged plan / run -------------------------------------------------------


def _split_kv(k_cache: Any, v_cache: Any) -> Tuple[Any, Any]:
    if v_cache is not None:
        return k_cache, v_cache
    if isinstance(k_cache, (tuple, list)) and len(k_cache) == 2:
        return k_cache[0], k_cache[1]
    # FlashInfer's combined cache [num_pages, 2, page_size, H, D].
    try:
        return k_cache[:, 0], k_cache[:, 1]
    except (TypeError, IndexError) as e:
        raise Error(C.ERR_INVALID_ARGUMENT, "k_cache: without v_cache, pass (k, v) or a "
                    f"[num_pages, 2, page_size, H, D] tensor ({e})") from None


class _Paged:
    _decode = True

    def __init__(self, context: Optional[Context] = None) -> None:
        self._context = context
        self._plan: Optional[AttentionPlan] = None
        self._tables: Tuple[Any, Any, Any] = (None, None, None)

    def _plan_common(self, ref: Any, batch_size: Optional[int], num_q_heads: int,
                     num_kv_heads: int, head_dim: int, page_size: int, num_pages: int,
                     dtype: Any, head_dim_v: Optional[int], max_seq_len: Optional[int],
                     max_pages_per_seq: Optional[int], causal: bool, window_left: int,
                     softcap: Optional[float], scale: Optional[float], alibi: bool, sinks: bool,
                     return_lse: bool, indptr: Any, indices: Any, last_page_len: Any,
                     block_table: Any, seqlens_k: Any) -> C.AttnDesc:
        if indptr is not None or indices is not None or last_page_len is not None:
            if indptr is None or indices is None or last_page_len is None:
                raise Error(C.ERR_INVALID_ARGUMENT, "indptr, indices, last_page_len: give all "
                            "three (FlashInfer's page table) or none")
            block_table, seqlens_k = csr_to_block_table(indptr, indices, last_page_len,
                                                        page_size, max_pages_per_seq)
        if block_table is not None:
            if seqlens_k is None:
                raise Error(C.ERR_INVALID_ARGUMENT, "seqlens_k: needed with block_table")
            lens = host_ints(seqlens_k, "seqlens_k")
            batch_size = len(lens)
            flat = host_ints(block_table, "block_table")
            rows, width = _table_shape(block_table, len(flat))
            if rows != batch_size:
                raise Error(C.ERR_INVALID_ARGUMENT, f"block_table: {rows} rows for "
                            f"{batch_size} sequences (seqlens_k)")
            max_pages_per_seq = max_pages_per_seq or width
            if isinstance(block_table, (list, tuple)):
                block_table = ints_like(block_table, flat, (rows, width))
            if isinstance(seqlens_k, (list, tuple)):
                seqlens_k = ints_like(seqlens_k, lens, (rows,))
            if max_seq_len is None:
                max_seq_len = max(lens + [1])
        if ref is None and block_table is not None and not isinstance(block_table, (list, tuple)):
            ref = block_table
        if self._context is None:
            self._context = (default_context(dlpack_device(ref, "page table"))
                             if ref is not None and hasattr(ref, "__dlpack_device__")
                             else default_context((C.DL_CPU, 0)))
        if batch_size is None or max_seq_len is None:
            raise Error(C.ERR_INVALID_ARGUMENT, "plan: give the page table (indptr/indices/"
                        "last_page_len or block_table/seqlens_k), or batch_size and max_seq_len")
        desc = C.AttnDesc()
        desc.dtype = dtype_code(dtype)
        desc.batch = int(batch_size)
        desc.num_q_heads, desc.num_kv_heads = int(num_q_heads), int(num_kv_heads)
        desc.head_dim_qk = int(head_dim)
        desc.head_dim_v = int(head_dim_v or head_dim)
        desc.kv_layout = C.KV_PAGED
        desc.seqlen_k = int(max_seq_len)
        desc.page_size, desc.num_pages = int(page_size), int(num_pages)
        desc.max_pages_per_seq = int(max_pages_per_seq or
                                     max(1, math.ceil(int(max_seq_len) / int(page_size))))
        window = (int(window_left), -1) if window_left >= 0 else None
        _mask(desc, causal, window, softcap, scale)
        if alibi:
            desc.flags |= C.ATTN_ALIBI
        if sinks:
            desc.flags |= C.ATTN_SINKS
        if return_lse:
            desc.flags |= C.ATTN_LSE
        self._tables = (block_table, seqlens_k, None)
        return desc

    @property
    def context(self) -> Context:
        """The context the plan runs on (known after plan())."""
        if self._context is None:
            raise Error(C.ERR_INVALID_ARGUMENT, "context: call plan() first")
        return self._context

    def describe(self) -> str:
        """The C plan's description (tiles, kernels, workspace)."""
        if self._plan is None:
            raise Error(C.ERR_INVALID_ARGUMENT, "describe: call plan() first")
        return self._plan.describe()

    def _run(self, q: Any, k_cache: Any, v_cache: Any, block_table: Any, seqlens_k: Any,
             qo_indptr: Any, out: Any, lse: Any, alibi_slopes: Any, sinks: Any) -> Any:
        plan = self._plan
        if plan is None:
            raise Error(C.ERR_INVALID_ARGUMENT, "run: call plan() first")
        desc = plan.desc
        k, v = _split_kv(k_cache, v_cache)
        block_table = self._tables[0] if block_table is None else block_table
        seqlens_k = self._tables[1] if seqlens_k is None else seqlens_k
        qo_indptr = self._tables[2] if qo_indptr is None else qo_indptr
        if block_table is None or seqlens_k is None:
            raise Error(C.ERR_INVALID_ARGUMENT, "run: block_table and seqlens_k were given "
                        "neither to plan() nor here")
        with Call(plan.context) as call:
            args = C.AttnArgs()
            tq = call.tensor("q", q)
            q_shape = shape_of(tq)
            if self._decode:
                unsqueeze(tq, 1)
            else:
                args.cu_seqlens_q = call.tensor("qo_indptr", qo_indptr)
            args.q = tq
            args.k, args.v = call.tensor("k_cache", k), call.tensor("v_cache", v)
            args.block_table = call.tensor("block_table", block_table)
            args.seqlens_k = call.tensor("seqlens_k", seqlens_k)
            if desc.flags & C.ATTN_ALIBI:
                args.alibi_slopes = call.tensor("alibi_slopes", alibi_slopes)
            if desc.flags & C.ATTN_SINKS:
                args.sinks = call.tensor("sinks", sinks)
            out, lse = _bind_outputs(call, args, desc, q, q_shape, out, lse)
            if self._decode:
                unsqueeze(args.o, 1)
            plan.run(args)
        return _results(desc, q, out, lse)


class PagedDecode(_Paged):
    """Batch decode over a paged KV cache, one query token per sequence
    (FlashInfer's ``BatchDecodeWithPagedKVCacheWrapper``).

    ``plan()`` is host work done once per batch shape and reused by every
    layer; ``run()`` only launches (no allocation on the device, no
    compilation, no synchronisation), so a decode step can be captured into
    a CUDA graph. Caches are NHD: [num_pages, page_size, Hkv, D].

    The context is ``context`` when given, else the default one for the
    page table's device (CUDA tensors: cuda on the current stream), else
    the host's (XATTN_BACKEND, cpu when unset). A plan made from a page table
    bounds the sequences by their current longest; pass ``max_seq_len`` to
    keep one plan while sequences grow.
    """

    def plan(self, *, num_q_heads: int, num_kv_heads: int, head_dim: int, page_size: int,
             num_pages: int, dtype: Any = "bf16", batch_size: Optional[int] = None,
             max_seq_len: Optional[int] = None, head_dim_v: Optional[int] = None,
             max_pages_per_seq: Optional[int] = None, window_left: int = -1,
             softcap: Optional[float] = None, scale: Optional[float] = None,
             alibi: bool = False, sinks: bool = False, return_lse: bool = False,
             indptr: Any = None, indices: Any = None, last_page_len: Any = None,
             block_table: Any = None, seqlens_k: Any = None) -> None:
        """Plan for a batch. Give the page table either as FlashInfer's CSR
        (``indptr`` [B+1], ``indices``, ``last_page_len`` [B]: converted here
        with csr_to_block_table) or as xattn's ``block_table`` [B, P] and
        ``seqlens_k`` [B]; ``run()`` uses it unless given another. Without a
        page table give ``batch_size`` and ``max_seq_len`` (the longest
        sequence a run may hold). ``num_pages`` is the caches' first
        dimension; ``window_left`` keys before the query (-1: all)."""
        desc = self._plan_common(indptr, batch_size, num_q_heads, num_kv_heads, head_dim,
                                 page_size, num_pages, dtype, head_dim_v, max_seq_len,
                                 max_pages_per_seq, False, window_left, softcap, scale, alibi,
                                 sinks, return_lse, indptr, indices, last_page_len, block_table,
                                 seqlens_k)
        desc.q_layout = C.Q_UNIFORM
        desc.seqlen_q = 1
        self._plan = AttentionPlan(self.context, desc)

    def run(self, q: Any, k_cache: Any, v_cache: Any = None, *, block_table: Any = None,
            seqlens_k: Any = None, out: Any = None, lse: Any = None, alibi_slopes: Any = None,
            sinks: Any = None) -> Any:
        """Attention of ``q`` [B, Hq, D] over the caches (``k_cache``,
        ``v_cache``; or ``(k, v)``; or FlashInfer's combined [num_pages, 2,
        page_size, Hkv, D]). Returns ``out`` [B, Hq, Dv] and, if planned
        with ``return_lse``, the LSE [B, Hq] f32."""
        return self._run(q, k_cache, v_cache, block_table, seqlens_k, None, out, lse,
                         alibi_slopes, sinks)


class PagedPrefill(_Paged):
    """Batch prefill (or chunked prefill, or speculative verification) of
    ragged queries over a paged KV cache (FlashInfer's
    ``BatchPrefillWithPagedKVCacheWrapper``). Queries are [total_q, Hq, D]
    with ``qo_indptr`` [B+1]; the mask is bottom-right aligned: the last
    query of a sequence is its last key."""

    _decode = False

    def plan(self, qo_indptr: Any, *, num_q_heads: int, num_kv_heads: int, head_dim: int,
             page_size: int, num_pages: int, dtype: Any = "bf16", causal: bool = False,
             max_seqlen_q: Optional[int] = None, batch_size: Optional[int] = None,
             max_seq_len: Optional[int] = None, head_dim_v: Optional[int] = None,
             max_pages_per_seq: Optional[int] = None, window_left: int = -1,
             softcap: Optional[float] = None, scale: Optional[float] = None,
             alibi: bool = False, sinks: bool = False, return_lse: bool = False,
             indptr: Any = None, indices: Any = None, last_page_len: Any = None,
             block_table: Any = None, seqlens_k: Any = None) -> None:
        """As PagedDecode.plan, with the query offsets ``qo_indptr`` [B+1]
        (kept for run()) and ``causal``."""
        offs = host_ints(qo_indptr, "qo_indptr")
        max_seqlen_q = max(_longest(offs, "qo_indptr", max_seqlen_q), 1)
        ref = qo_indptr if not isinstance(qo_indptr, (list, tuple)) else indptr
        desc = self._plan_common(ref, batch_size or len(offs) - 1, num_q_heads, num_kv_heads,
                                 head_dim, page_size, num_pages, dtype, head_dim_v, max_seq_len,
                                 max_pages_per_seq, causal, window_left, softcap, scale, alibi,
                                 sinks, return_lse, indptr, indices, last_page_len, block_table,
                                 seqlens_k)
        if isinstance(qo_indptr, (list, tuple)):
            qo_indptr = ints_like(self._tables[0] if self._tables[0] is not None else qo_indptr,
                                  offs, (len(offs),))
        self._tables = (self._tables[0], self._tables[1], qo_indptr)
        desc.q_layout = C.Q_RAGGED
        desc.seqlen_q = int(max_seqlen_q)
        self._plan = AttentionPlan(self.context, desc)

    def run(self, q: Any, k_cache: Any, v_cache: Any = None, *, qo_indptr: Any = None,
            block_table: Any = None, seqlens_k: Any = None, out: Any = None, lse: Any = None,
            alibi_slopes: Any = None, sinks: Any = None) -> Any:
        """Attention of ``q`` [total_q, Hq, D] over the caches. Returns
        ``out`` [total_q, Hq, Dv] and, with ``return_lse``, LSE [total_q, Hq]."""
        return self._run(q, k_cache, v_cache, block_table, seqlens_k, qo_indptr, out, lse,
                         alibi_slopes, sinks)


# ---- kv_append and merge_states ---------------------------------------------


def kv_append(k_new: Any, v_new: Any, slots: Any, k_cache: Any, v_cache: Any, *,
              context: Optional[Context] = None) -> None:
    """Write ``k_new`` [n, Hkv, Dqk] and ``v_new`` [n, Hkv, Dv] into the
    paged caches [num_pages, page_size, Hkv, D] at token slots ``slots``
    [n] i32 (page * page_size + offset; -1 skips a token)."""
    ctx = context or default_context(dlpack_device(k_cache, "k_cache"))
    with Call(ctx) as call:
        ts = [call.tensor("k_new", k_new), call.tensor("v_new", v_new),
              call.tensor("slots", slots), call.tensor("k_cache", k_cache, output=True),
              call.tensor("v_cache", v_cache, output=True)]
        C.check(C.lib.xattn_kv_append(ctx.handle, *[ctypes.byref(t) for t in ts]),
                "kv_append")


def merge_states(v_a: Any, s_a: Any, v_b: Any, s_b: Any, *, out: Any = None,
                 lse_out: Any = None, context: Optional[Context] = None) -> Tuple[Any, Any]:
    """Merge two attention results over disjoint key sets (FlashInfer's
    ``merge_state``): ``v_*`` [N, H, D], ``s_*`` their LSE [N, H] f32
    (natural log). Returns (v, s), into ``out`` / ``lse_out`` when given
    (which may be v_a / s_a: in place)."""
    ctx = context or default_context(dlpack_device(v_a, "v_a"))
    with Call(ctx) as call:
        ta, tb = call.tensor("v_a", v_a), call.tensor("v_b", v_b)
        sa, sb = transpose2(call.tensor("s_a", s_a)), transpose2(call.tensor("s_b", s_b))
        if out is None:
            out = empty_like(v_a, shape_of(ta), ta.dtype)
        if lse_out is None:
            lse_out = empty_like(v_a, (sa.shape[1], sa.shape[0]), C.F32)
        to = call.tensor("out", out, output=True)
        so = transpose2(call.tensor("lse_out", lse_out, output=True))
        C.check(C.lib.xattn_merge_states(ctx.handle, *[ctypes.byref(t) for t in
                                                       (ta, sa, tb, sb, to, so)]),
                "merge_states")
    return finish(v_a, out), finish(v_a, lse_out)

