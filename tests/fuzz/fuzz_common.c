/* The cpu context and per-input pool of the fuzz harnesses (fuzz_common.h). */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FZ_THREADS = 2 };

xattn_context *fz_ctx;

/* libFuzzer calls this once before any input (so does fuzz_main.c); with
 * no context there is nothing to fuzz, and libFuzzer reports the abort. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xattn_context_options o = {0};
    o.backend = XATTN_BACKEND_CPU;
    o.num_threads = FZ_THREADS;
    if (xattn_context_create_with(&o, &fz_ctx) != XATTN_OK) {
        fprintf(stderr, "%s: no cpu context: %s\n", *argc > 0 ? (*argv)[0] : "fuzz",
                xattn_last_error());
        abort();
    }
    return 0;
}

fz_pool fz_pool_start(size_t size)
{
    fz_pool pool;
    memset(&pool, 0, sizeof pool);
    pool.ctx = fz_ctx;
    pool.seed = (uint32_t)size * 2654435761u; /* Knuth's multiplicative hash */
    return pool;
}
