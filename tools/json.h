#pragma once
/* A small streaming JSON writer for the xattn commands' --json output
 * (bench, info, plan): one member per line, commas and indentation kept by
 * the writer, strings escaped, integers printed exactly (counts are int64
 * or uint64, never doubles) and doubles as the shortest decimal that reads
 * back as the same double; a non-finite double is null (JSON has no NaN). */
#include <stdint.h>
#include <stdio.h>

#define XATTN_JSON_MAX_DEPTH 16

typedef struct xattn_json {
    FILE *f;
    int depth;
    int members[XATTN_JSON_MAX_DEPTH]; /* written so far at each open level */
} xattn_json;

/* Start a document on f; the first call after it opens the top value. */
void xattn_json_init(xattn_json *j, FILE *f);
/* End the document: a newline after the top value. */
void xattn_json_finish(xattn_json *j);

/* key: the member name inside an object; NULL at the top and in arrays. */
void xattn_json_object_begin(xattn_json *j, const char *key);
void xattn_json_object_end(xattn_json *j);
void xattn_json_array_begin(xattn_json *j, const char *key);
void xattn_json_array_end(xattn_json *j);

void xattn_json_string(xattn_json *j, const char *key, const char *v); /* NULL: null */
void xattn_json_int(xattn_json *j, const char *key, int64_t v);
void xattn_json_uint(xattn_json *j, const char *key, uint64_t v);
void xattn_json_double(xattn_json *j, const char *key, double v);
void xattn_json_bool(xattn_json *j, const char *key, int v);
void xattn_json_null(xattn_json *j, const char *key);

/* The shortest "%.Ng" of v that strtod reads back as v ("null" when not
 * finite), into buf (at least 32 bytes). */
void xattn_json_format_double(double v, char *buf, size_t size);
