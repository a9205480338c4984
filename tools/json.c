/* The xattn commands' JSON writer (see json.h). */
#include "json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#define INDENT 2
/* %.17g always reads back as the same double (IEEE binary64). */
#define MAX_DOUBLE_DIGITS 17

void xattn_json_init(xattn_json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->members[0] = 0;
}

void xattn_json_finish(xattn_json *j) { fputc('\n', j->f); }

static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* The comma, newline and indentation before a value, and its key. */
static void begin_value(xattn_json *j, const char *key)
{
    if (j->depth > 0) {
        fputs(j->members[j->depth]++ ? ",\n" : "\n", j->f);
        fprintf(j->f, "%*s", INDENT * j->depth, "");
    }
    if (key) {
        put_string(j->f, key);
        fputs(": ", j->f);
    }
}

static void open_level(xattn_json *j, const char *key, char bracket)
{
    begin_value(j, key);
    fputc(bracket, j->f);
    /* Deeper levels than the writer tracks would only misplace commas;
     * no command nests that deep. */
    if (j->depth + 1 < XATTN_JSON_MAX_DEPTH) j->members[++j->depth] = 0;
}

static void close_level(xattn_json *j, char bracket)
{
    if (j->depth > 0 && j->members[j->depth]) fprintf(j->f, "\n%*s", INDENT * (j->depth - 1), "");
    if (j->depth > 0) j->depth--;
    fputc(bracket, j->f);
}

void xattn_json_object_begin(xattn_json *j, const char *key) { open_level(j, key, '{'); }
void xattn_json_object_end(xattn_json *j) { close_level(j, '}'); }
void xattn_json_array_begin(xattn_json *j, const char *key) { open_level(j, key, '['); }
void xattn_json_array_end(xattn_json *j) { close_level(j, ']'); }

void xattn_json_string(xattn_json *j, const char *key, const char *v)
{
    begin_value(j, key);
    if (v)
        put_string(j->f, v);
    else
        fputs("null", j->f);
}

void xattn_json_int(xattn_json *j, const char *key, int64_t v)
{
    begin_value(j, key);
    fprintf(j->f, "%" PRId64, v);
}

void xattn_json_uint(xattn_json *j, const char *key, uint64_t v)
{
    begin_value(j, key);
    fprintf(j->f, "%" PRIu64, v);
}

void xattn_json_format_double(double v, char *buf, size_t size)
{
    if (!isfinite(v)) {
        snprintf(buf, size, "null");
        return;
    }
    for (int digits = 1; digits <= MAX_DOUBLE_DIGITS; digits++) {
        snprintf(buf, size, "%.*g", digits, v);
        if (strtod(buf, NULL) == v) return;
    }
}

void xattn_json_double(xattn_json *j, const char *key, double v)
{
    char buf[40];
    xattn_json_format_double(v, buf, sizeof buf);
    begin_value(j, key);
    fputs(buf, j->f);
}

void xattn_json_bool(xattn_json *j, const char *key, int v)
{
    begin_value(j, key);
    fputs(v ? "true" : "false", j->f);
}

void xattn_json_null(xattn_json *j, const char *key)
{
    begin_value(j, key);
    fputs("null", j->f);
}
