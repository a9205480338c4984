/* Timing helpers shared by the backends' ceiling measurements
 * (measure_ceilings) and the tool's host probes. */
#include "ceilings.h"

#include <stdlib.h>
#include <time.h>

double xattn_clock_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double xattn_sorted_median(double *v, int n)
{
    if (n <= 0) return 0.0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void xattn_ceiling_from_rates(xattn_ceiling *out, double *rates, int n)
{
    out->median = xattn_sorted_median(rates, n);
    out->rate = n > 0 ? rates[n - 1] : 0.0;
    out->repeats = n > 0 ? n : 0;
}
