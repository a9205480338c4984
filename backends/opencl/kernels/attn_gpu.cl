/* kernels/attn_gpu.cl: not written yet. */
