/* Placeholder: the moe_gemm kernels are being written (CUDA backend issue). */
