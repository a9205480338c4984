#pragma once
/* Device ceilings for `xattn bench`: the copy bandwidth and FLOP rates a
 * backend's own kernels reach on its device (backend.h, measure_ceilings).
 * Internal: the tool calls it, no run path does, and no installed header
 * declares it. */
#include "backend.h"
#include "internal_api.h"

/* Measure ctx's device: waits for work already queued on the context,
 * allocates device memory, compiles and runs the backend's ceiling kernels
 * (about a second on a GPU), frees what it made. Fills *out (zeroed first).
 * Errors: XATTN_ERR_INVALID_ARGUMENT (NULL ctx or out), XATTN_ERR_UNSUPPORTED
 * when the backend measures none (the cpu backend: the tool measures the
 * host), else the backend's (XATTN_ERR_OUT_OF_MEMORY, XATTN_ERR_COMPILE,
 * XATTN_ERR_DEVICE). Thread-safety: safe, but rates measured while other
 * threads run work on the same device are low. */
XATTN_INTERNAL xattn_status xattn_context_measure_ceilings(xattn_context *ctx,
                                                          xattn_ceilings *out);

/* For the backends' ceiling kernels and the tool's host probes. */

/* Seconds on the monotonic clock. */
XATTN_INTERNAL double xattn_clock_seconds(void);

/* Sort v[0..n) ascending and return its median (0 when n ≤ 0). */
XATTN_INTERNAL double xattn_sorted_median(double *v, int n);

/* A ceiling from n rates of repeats: rate the best (other load only ever
 * lowers a rate), median the median. Sorts rates. */
XATTN_INTERNAL void xattn_ceiling_from_rates(xattn_ceiling *out, double *rates, int n);
