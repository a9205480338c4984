/* kernels/attn_split.cl: not written yet. */
