/*
 * diag.c: configuration diagnostics, the one path every config error takes
 * to reach an operator: `file:line:col: Kind/namespace/name: field: message`.
 */
#include "config/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A copy of s safe to print on one line: control bytes become '?', so a
 * hostile key or value can never split or forge a diagnostic line. */
static char *clean_dup(const char *s, const char *dflt)
{
    char *r;

    if (!s || !*s)
        s = dflt;
    r = strdup(s);
    if (!r)
        return NULL;
    for (char *p = r; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return r;
}

void wf_diag_add(wf_diags *d, const char *file, int line, int col, const char *resource,
                 const char *field, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    wf_diag *dg;

    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 16;
        wf_diag *v = realloc(d->v, nc * sizeof(*v));
        if (!v)
            return; /* out of memory: the caller still fails the load */
        d->v = v;
        d->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dg = &d->v[d->n];
    dg->file = clean_dup(file, "-");
    dg->line = line < 0 ? 0 : line;
    dg->col = col < 0 ? 0 : col;
    dg->resource = clean_dup(resource, "-");
    dg->field = clean_dup(field, "-");
    dg->message = clean_dup(msg, "error");
    if (!dg->file || !dg->resource || !dg->field || !dg->message) {
        free(dg->file);
        free(dg->resource);
        free(dg->field);
        free(dg->message);
        return;
    }
    d->n++;
}

void wf_diag_format(const wf_diag *dg, char *buf, size_t len)
{
    if (dg->line > 0)
        snprintf(buf, len, "%s:%d:%d: %s: %s: %s", dg->file, dg->line, dg->col > 0 ? dg->col : 1,
                 dg->resource, dg->field, dg->message);
    else
        snprintf(buf, len, "%s: %s: %s: %s", dg->file, dg->resource, dg->field, dg->message);
}

void wf_diags_print(const wf_diags *d, FILE *f)
{
    char line[2048];

    for (size_t i = 0; i < d->n; i++) {
        wf_diag_format(&d->v[i], line, sizeof(line));
        fprintf(f, "%s\n", line);
    }
}

void wf_diags_free(wf_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->v[i].file);
        free(d->v[i].resource);
        free(d->v[i].field);
        free(d->v[i].message);
    }
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}
