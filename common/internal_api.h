#pragma once
/* Internal functions that backend modules, the xattn tool and the tests link
 * against. libxattn exports them, but they are not its public API or ABI:
 * they may change in any release, and no installed header declares them. */
#include "xattn_core.h"

#define XATTN_INTERNAL XATTN_API
