/* kernels/moe_gemm_gpu.cl: not written yet. */
