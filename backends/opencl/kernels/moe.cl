/* kernels/moe.cl: not written yet. */
