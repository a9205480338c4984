#pragma once
/* Context lifetime. A context is reference-counted: the caller's handle
 * holds one reference and every buffer, attention plan and MoE plan made
 * from it holds another, so objects may be destroyed in any order (a
 * garbage-collected binding cannot order them) and the device closes when
 * the last reference goes. */
#include "backend.h"

/* Take a reference for an object made from ctx. Thread-safety: safe. */
void xattn_context_retain(xattn_context *ctx);

/* Drop a reference; the last one closes the device and frees ctx.
 * Thread-safety: safe; ctx must not be used by the caller afterwards. */
void xattn_context_release(xattn_context *ctx);
