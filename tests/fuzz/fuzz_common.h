#pragma once
/* What the fuzz harnesses share besides reading their bytes (fuzz_input.h):
 * the cpu context every input runs on, made once by LLVMFuzzerInitialize
 * (fuzz_common.c), and the start of each input. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_input.h"

/* The harness's cpu context, with two worker threads so that the thread
 * pool's barriers and dynamic work items run too. */
extern xattn_context *fz_ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An empty pool on fz_ctx, its values seeded by the input's size. */
fz_pool fz_pool_start(size_t size);
