/* The xattn commands' option parser: getopt_long over an xattn_opt table
 * (see opts.h). */
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xattn.h"

/* getopt_long's val for table entry i; above every short option's char. */
#define LONG_VAL_BASE 0x100
#define HELP_VAL 'h'
/* Help: option names in a column this wide, the help after them. */
#define HELP_NAME_COLUMN 24

static const xattn_dtype float_dtypes[] = {XATTN_F32, XATTN_F16, XATTN_BF16};

void xattn_opts_print_synopsis(FILE *f, const xattn_cmd *cmd)
{
    fprintf(f, "usage: %s %s\n", cmd->name, cmd->synopsis);
}

int xattn_opts_int(const char *cmd, const char *what, const char *s, long long lo, long long hi,
                   long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "%s: %s '%s': expected an integer in [%lld, %lld]\n", cmd, what,
                s ? s : "", lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u64(const char *cmd, const char *what, const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    /* strtoull accepts a sign and wraps "-1" around: digits only. */
    unsigned long long v = s && *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
    if (!s || *s < '0' || *s > '9' || *end || errno) {
        fprintf(stderr, "%s: %s '%s': expected an integer in [0, %llu]\n", cmd, what,
                s ? s : "", (unsigned long long)UINT64_MAX);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int parse_float(const char *cmd, const char *what, const char *s, float *out)
{
    char *end = NULL;
    errno = 0;
    float v = s ? strtof(s, &end) : 0.0f;
    if (!s || !*s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "%s: %s '%s': expected a finite number\n", cmd, what, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* Store one option's value; 0, or -1 after printing why. */
static int apply(const xattn_cmd *cmd, const xattn_opt *o, const char *value, void *opts)
{
    char what[64];
    snprintf(what, sizeof what, "--%s", o->name);
    void *field = (char *)opts + o->offset;
    long long v;
    switch (o->type) {
    case XATTN_OPT_HEADING: return 0;
    case XATTN_OPT_FLAG: *(int *)field = (int)o->lo; return 0;
    case XATTN_OPT_BITS: *(uint32_t *)field |= (uint32_t)o->lo; return 0;
    case XATTN_OPT_INT:
        if (xattn_opts_int(cmd->name, what, value, o->lo, o->hi, &v)) return -1;
        *(int *)field = (int)v;
        return 0;
    case XATTN_OPT_U64: return parse_u64(cmd->name, what, value, (uint64_t *)field);
    case XATTN_OPT_FLOAT: return parse_float(cmd->name, what, value, (float *)field);
    case XATTN_OPT_STRING: *(const char **)field = value; return 0;
    case XATTN_OPT_CHOICE:
        for (int i = 0; o->choices[i]; i++)
            if (!strcmp(value, o->choices[i])) {
                *(int *)field = i;
                return 0;
            }
        fprintf(stderr, "%s: %s '%s': expected one of ", cmd->name, what, value);
        for (int i = 0; o->choices[i]; i++)
            fprintf(stderr, "%s%s", o->choices[i], o->choices[i + 1] ? ", " : "\n");
        return -1;
    case XATTN_OPT_DTYPE:
        for (size_t i = 0; i < sizeof float_dtypes / sizeof float_dtypes[0]; i++)
            if (!strcmp(value, xattn_dtype_name(float_dtypes[i]))) {
                *(int *)field = (int)float_dtypes[i];
                return 0;
            }
        fprintf(stderr, "%s: %s '%s': expected f32, f16 or bf16\n", cmd->name, what, value);
        return -1;
    case XATTN_OPT_CUSTOM: return o->parse(opts, value);
    }
    return -1;
}

int xattn_opts_parse(const xattn_cmd *cmd, int argc, char **argv, void *opts, int *seen)
{
    size_t n = cmd->num_opts;
    struct option *longs = calloc(n + 2, sizeof *longs);
    /* "+": stop at the first argument that is not an option, which is then
     * reported; "h" and each short name, with ':' when it takes a value. */
    char *shorts = malloc(2 * n + 3);
    if (!longs || !shorts) {
        free(longs);
        free(shorts);
        fprintf(stderr, "%s: out of memory\n", cmd->name);
        return XATTN_OPTS_BAD;
    }
    size_t nl = 0, ns = 0;
    shorts[ns++] = '+';
    shorts[ns++] = HELP_VAL;
    longs[nl++] = (struct option){"help", no_argument, NULL, HELP_VAL};
    for (size_t i = 0; i < n; i++) {
        const xattn_opt *o = &cmd->opts[i];
        if (o->type == XATTN_OPT_HEADING) continue;
        int has_value = o->meta != NULL;
        longs[nl++] = (struct option){o->name, has_value ? required_argument : no_argument, NULL,
                                      LONG_VAL_BASE + (int)i};
        if (o->short_name) {
            shorts[ns++] = o->short_name;
            if (has_value) shorts[ns++] = ':';
        }
    }
    shorts[ns] = '\0';
    if (seen)
        for (size_t i = 0; i < n; i++) seen[i] = 0;

    /* getopt names the program after argv[0] in its messages. */
    char *argv0 = argv[0];
    argv[0] = (char *)cmd->name;
    optind = 1;
    opterr = 1;
    int result = XATTN_OPTS_RUN, c, order = 0;
    while (result == XATTN_OPTS_RUN && (c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        long idx = -1;
        if (c >= LONG_VAL_BASE) {
            idx = c - LONG_VAL_BASE;
        } else if (c == HELP_VAL) {
            cmd->help(stdout);
            result = XATTN_OPTS_HELP;
            break;
        } else if (c != '?' && c != ':') {
            for (size_t i = 0; i < n; i++)
                if (cmd->opts[i].short_name == c) idx = (long)i;
        }
        if (idx < 0) {
            /* getopt said why: unknown, ambiguous, or a missing value. */
            result = XATTN_OPTS_BAD;
            break;
        }
        if (apply(cmd, &cmd->opts[idx], optarg, opts)) {
            result = XATTN_OPTS_BAD;
            break;
        }
        order++;
        if (seen) seen[idx] = order;
    }
    if (result == XATTN_OPTS_RUN && optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", cmd->name, argv[optind]);
        result = XATTN_OPTS_BAD;
    }
    argv[0] = argv0;
    free(longs);
    free(shorts);
    if (result == XATTN_OPTS_BAD) {
        xattn_opts_print_synopsis(stderr, cmd);
        fprintf(stderr, "'%s --help' describes every option.\n", cmd->name);
    }
    return result;
}

int xattn_opts_seen(const xattn_cmd *cmd, const int *seen, const char *name)
{
    for (size_t i = 0; i < cmd->num_opts; i++)
        if (cmd->opts[i].name && !strcmp(cmd->opts[i].name, name)) return seen[i];
    return 0;
}

/* One help line (or a few, at the help's '\n's) with the name column. */
static void print_line(FILE *f, const char *names, const char *help)
{
    int w = fprintf(f, "  %s", names);
    if (w > HELP_NAME_COLUMN - 2) {
        fputc('\n', f);
        w = 0;
    }
    for (const char *p = help; *p;) {
        size_t len = strcspn(p, "\n");
        fprintf(f, "%*s%.*s\n", HELP_NAME_COLUMN - w, "", (int)len, p);
        w = 0;
        p += len + (p[len] == '\n');
    }
}

void xattn_opts_print(FILE *f, const xattn_cmd *cmd)
{
    print_line(f, "-h, --help", "this help");
    for (size_t i = 0; i < cmd->num_opts; i++) {
        const xattn_opt *o = &cmd->opts[i];
        if (o->type == XATTN_OPT_HEADING) {
            fprintf(f, "\n%s\n", o->help);
            continue;
        }
        char names[64];
        int len = 0;
        /* Long-only names line up with the long names of short options. */
        len = o->short_name ? snprintf(names, sizeof names, "-%c, ", o->short_name)
                            : snprintf(names, sizeof names, "    ");
        snprintf(names + len, sizeof names - (size_t)len, "--%s%s%s", o->name,
                 o->meta ? " " : "", o->meta ? o->meta : "");
        print_line(f, names, o->help);
    }
}
