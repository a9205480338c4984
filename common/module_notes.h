#pragma once
/* Why a backend module is absent from this build: the configure-time
 * verdict on each module (not written in this version, disabled, a header
 * missing), so a module that cannot be found is explained by its cause
 * rather than by the directories searched. */

/* NULL when this build built the module (a missing file is then an install
 * problem); else a clause such as "not part of this version of xattn
 * (0.1.0): the cuda backend is not written yet". Thread-safety: safe. */
const char *xattn_module_note(const char *name);
