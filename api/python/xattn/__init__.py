"""xattn: portable fused attention and Mixture-of-Experts.

A ctypes binding over libxattn's C API. Tensors come in through DLPack
(PyTorch, NumPy, CuPy, JAX), without a copy on the cpu, cuda and hip
backends; results are written into ``out=`` tensors or returned as new
tensors of the caller's library. Every failure raises :class:`Error`, with
the C status name and the library's message.

>>> import xattn, torch
>>> q = torch.randn(1, 128, 8, 64); k = torch.randn(1, 256, 2, 64); v = torch.randn(1, 256, 2, 64)
>>> o = xattn.attention(q, k, v, causal=True)
"""
from ._attention import (AttentionPlan, PagedDecode, PagedPrefill, attention, block_table_to_csr,
                         csr_to_block_table, kv_append, merge_states)
from ._capi import Error, status_name
from ._context import Context, default_context, info
from ._moe import MoE

Error.__module__ = "xattn"
__version__: str = info()["version"]

__all__ = ["AttentionPlan", "Context", "Error", "MoE", "PagedDecode", "PagedPrefill",
           "attention", "block_table_to_csr", "csr_to_block_table", "default_context", "info",
           "kv_append", "merge_states", "status_name", "__version__"]
