/* Placeholder: the moe kernels are being written (CUDA backend issue). */
