/* Placeholder: the attn kernels are being written (CUDA backend issue). */
