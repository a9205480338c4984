/* Placeholder: the attn_split kernels are being written (CUDA backend issue). */
