/*
 * xattn — portable attention runtime. Umbrella header.
 */
#ifndef XATTN_H
#define XATTN_H

#include "xattn_core.h"
#include "xattn_attn.h"
#include "xattn_moe.h"

#endif /* XATTN_H */
