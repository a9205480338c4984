#pragma once
/* One command-line parser for every xattn command: getopt_long over a table
 * of options, one line each (name, type, the field its value goes to, its
 * range and its help line), so `--opt value` and `--opt=value` work alike
 * everywhere and the help text is printed from the same table that parses.
 *
 * A command defines OPT_STRUCT (its options struct) before using the
 * OPT_* macros below, then:
 *
 *     static const xattn_opt table[] = {
 *         OPT_INT("repeats", repeats, 1, 1 << 20, "N", "timed runs per workload"),
 *         OPT_FLAG("json", 0, json, 1, "print JSON on stdout"),
 *     };
 *     int r = xattn_opts_parse(&cmd, argc, argv, &opts, NULL);
 *     if (r != XATTN_OPTS_RUN) return r == XATTN_OPTS_HELP ? 0 : 2;
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum xattn_opt_type {
    XATTN_OPT_HEADING, /* not an option: a heading line in the help */
    XATTN_OPT_FLAG,    /* no value: int field = lo */
    XATTN_OPT_BITS,    /* no value: uint32_t field |= lo */
    XATTN_OPT_INT,     /* int field: an integer in [lo, hi] */
    XATTN_OPT_U64,     /* uint64_t field: a non-negative integer */
    XATTN_OPT_FLOAT,   /* float field: a finite number */
    XATTN_OPT_STRING,  /* const char * field: the value as given */
    XATTN_OPT_CHOICE,  /* int field: the index of the value in choices */
    XATTN_OPT_DTYPE,   /* int field: an xattn_dtype, f32, f16 or bf16 */
    XATTN_OPT_CUSTOM,  /* parse(opts, value); value NULL when meta is NULL */
} xattn_opt_type;

typedef struct xattn_opt {
    const char *name;            /* long name, without "--" */
    char short_name;             /* 'v' for -v, or 0 */
    xattn_opt_type type;
    size_t offset;               /* of the field in the command's options struct */
    long long lo, hi;            /* XATTN_OPT_INT: the range; FLAG, BITS: lo is the value */
    const char *const *choices;  /* XATTN_OPT_CHOICE: NULL-terminated names */
    /* XATTN_OPT_CUSTOM: 0, or -1 after printing why to stderr. */
    int (*parse)(void *opts, const char *value);
    const char *meta;            /* the value's name in the help ("N"); NULL: no value */
    const char *help;            /* one line; '\n' continues it on the next */
} xattn_opt;

#define OPT_HEADING(text) {.type = XATTN_OPT_HEADING, .help = (text)}
#define OPT_FLAG(n, s, field, value, h)                                                      \
    {.name = (n), .short_name = (s), .type = XATTN_OPT_FLAG,                                 \
     .offset = offsetof(OPT_STRUCT, field), .lo = (value), .help = (h)}
#define OPT_BITS(n, field, bits, h)                                                          \
    {.name = (n), .type = XATTN_OPT_BITS, .offset = offsetof(OPT_STRUCT, field),             \
     .lo = (bits), .help = (h)}
#define OPT_INT(n, field, min, max, m, h)                                                    \
    {.name = (n), .type = XATTN_OPT_INT, .offset = offsetof(OPT_STRUCT, field), .lo = (min), \
     .hi = (max), .meta = (m), .help = (h)}
#define OPT_U64(n, field, m, h)                                                              \
    {.name = (n), .type = XATTN_OPT_U64, .offset = offsetof(OPT_STRUCT, field), .meta = (m), \
     .help = (h)}
#define OPT_FLOAT(n, field, m, h)                                                            \
    {.name = (n), .type = XATTN_OPT_FLOAT, .offset = offsetof(OPT_STRUCT, field),            \
     .meta = (m), .help = (h)}
#define OPT_STRING(n, field, m, h)                                                           \
    {.name = (n), .type = XATTN_OPT_STRING, .offset = offsetof(OPT_STRUCT, field),           \
     .meta = (m), .help = (h)}
#define OPT_CHOICE(n, field, names, m, h)                                                    \
    {.name = (n), .type = XATTN_OPT_CHOICE, .offset = offsetof(OPT_STRUCT, field),           \
     .choices = (names), .meta = (m), .help = (h)}
#define OPT_DTYPE(n, field, h)                                                               \
    {.name = (n), .type = XATTN_OPT_DTYPE, .offset = offsetof(OPT_STRUCT, field),            \
     .meta = "T", .help = (h)}
#define OPT_CUSTOM(n, s, fn, m, h)                                                           \
    {.name = (n), .short_name = (s), .type = XATTN_OPT_CUSTOM, .parse = (fn), .meta = (m),   \
     .help = (h)}

#define XATTN_OPTS_COUNT(table) (sizeof(table) / sizeof((table)[0]))

/* A command: its name for messages, its synopsis and its option table. */
typedef struct xattn_cmd {
    const char *name;      /* "xattn bench" */
    const char *synopsis;  /* "[options]": printed after "usage: xattn bench " */
    const xattn_opt *opts;
    size_t num_opts;
    void (*help)(FILE *f); /* the full help, for --help */
} xattn_cmd;

enum { XATTN_OPTS_RUN = 0, XATTN_OPTS_HELP = 1, XATTN_OPTS_BAD = 2 };

/* Parse argv[1..argc) (argv[0] is the command word) into opts. -h and
 * --help print cmd->help on stdout (XATTN_OPTS_HELP). An unknown option, a
 * missing or bad value, or a positional argument prints why, the synopsis
 * and where the help is on stderr (XATTN_OPTS_BAD). seen, when not NULL, has num_opts
 * entries: seen[i] is 0, or the order (from 1) among the options given of
 * the last one that set table entry i. Long names may be abbreviated while unambiguous
 * (getopt_long's rule). Thread-safety: not safe (getopt's globals). */
int xattn_opts_parse(const xattn_cmd *cmd, int argc, char **argv, void *opts, int *seen);

/* seen[i] (see xattn_opts_parse) of the option named name; 0 when it was
 * not given or the table has no such option. */
int xattn_opts_seen(const xattn_cmd *cmd, const int *seen, const char *name);

/* The option lines of the table, aligned, with -h, --help first. */
void xattn_opts_print(FILE *f, const xattn_cmd *cmd);

/* "usage: xattn bench [options]" on f. */
void xattn_opts_print_synopsis(FILE *f, const xattn_cmd *cmd);

/* Strict integer in [lo, hi]: 0, or -1 after printing "<cmd>: <what> '<s>':
 * expected ..." to stderr. For custom parsers. */
int xattn_opts_int(const char *cmd, const char *what, const char *s, long long lo, long long hi,
                   long long *out);
