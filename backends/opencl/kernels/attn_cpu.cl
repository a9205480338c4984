/* kernels/attn_cpu.cl: not written yet. */
