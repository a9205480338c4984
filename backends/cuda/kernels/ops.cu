/* Placeholder: the ops kernels are being written (CUDA backend issue). */
