/* kernels/moe_gemm_cpu.cl: not written yet. */
