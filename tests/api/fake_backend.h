#pragma once
/* What the fake backend module counts, so tests can see when it opens and
 * closes devices and whether a device ever closed under a live buffer or
 * plan state. The test finds the counter function with dlsym. */
#define XATTN_FAKE_COUNTS_SYMBOL "xattn_fake_backend_counts"

typedef struct xattn_fake_counts {
    int devices_open;
    int buffers_live;
    int states_live;        /* plan states from attn_prepare not yet released */
    int closes_with_live;   /* device_close calls while buffers or states lived */
} xattn_fake_counts;

typedef void (*xattn_fake_counts_fn)(xattn_fake_counts *out);
