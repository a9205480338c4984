/* The configure-time verdict on each backend module (see module_notes.h).
 * meson.build writes the table into the generated xattn_modules.h. */
#include "module_notes.h"

#include <stddef.h>
#include <string.h>

#include "xattn_modules.h"

static const struct {
    const char *name;
    const char *note; /* NULL: built */
} notes[] = {XATTN_MODULE_NOTES};

const char *xattn_module_note(const char *name)
{
    for (size_t i = 0; i < sizeof notes / sizeof notes[0]; i++)
        if (name && !strcmp(name, notes[i].name)) return notes[i].note;
    return NULL;
}
