/* flags.c: the table-driven flag parser behind every role and tool. */
#include "util/flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int wf_addr_split(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon;
    char *end;
    long p;
    size_t hl;

    if (!addr || !*addr)
        return -1;
    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':')
            return -1;
        hl = (size_t)(rb - addr - 1);
        if (hl + 1 > hostlen)
            return -1;
        memcpy(host, addr + 1, hl);
        host[hl] = 0;
        colon = rb + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - addr);
        if (hl + 1 > hostlen)
            return -1;
        memcpy(host, addr, hl);
        host[hl] = 0;
        if (hl == 0)
            snprintf(host, hostlen, "0.0.0.0");
        else if (strcmp(host, "localhost") == 0)
            snprintf(host, hostlen, "127.0.0.1");
    }
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

static const wf_flag *find(const wf_flag *flags, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

int wf_flags_parse(const wf_flag *flags, size_t n, int argc, char **argv, int first, char *err,
                   size_t errlen)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *eq, *val = NULL;
        const wf_flag *f;
        size_t len;

        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument \"%s\" (flags start with --; see weft --help)", a);
            return -1;
        }
        a += 2;
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        f = find(flags, n, a, len);
        if (!f) {
            snprintf(err, errlen, "unknown flag --%.*s (see weft --help)", (int)len, a);
            return -1;
        }
        if (f->type == WF_FLAG_BOOL) {
            if (eq) {
                snprintf(err, errlen, "flag --%s takes no value", f->name);
                return -1;
            }
            *(int *)f->dst = 1;
            continue;
        }
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            snprintf(err, errlen, "flag --%s needs a value (%s)", f->name, f->metavar);
            return -1;
        }
        switch (f->type) {
        case WF_FLAG_STR:
            if (!*val) {
                snprintf(err, errlen, "flag --%s: empty value", f->name);
                return -1;
            }
            *(const char **)f->dst = val;
            break;
        case WF_FLAG_INT: {
            char *end;
            long v;
            errno = 0;
            v = strtol(val, &end, 10);
            if (errno || *end || end == val || v < f->min || v > f->max) {
                snprintf(err, errlen, "flag --%s: \"%s\" is not a whole number from %ld to %ld",
                         f->name, val, f->min, f->max);
                return -1;
            }
            *(long *)f->dst = v;
            break;
        }
        case WF_FLAG_ADDR: {
            char host[256];
            int port;
            if (wf_addr_split(val, host, sizeof(host), &port) < 0) {
                snprintf(err, errlen, "flag --%s: \"%s\" is not an address (HOST:PORT or :PORT)",
                         f->name, val);
                return -1;
            }
            *(const char **)f->dst = val;
            break;
        }
        case WF_FLAG_MULTI: {
            wf_strlist *l = f->dst;
            if (l->n == sizeof(l->v) / sizeof(l->v[0])) {
                snprintf(err, errlen, "flag --%s given too many times", f->name);
                return -1;
            }
            l->v[l->n++] = val;
            break;
        }
        case WF_FLAG_BOOL:
            break;
        }
    }
    return 0;
}

void wf_flags_usage(const wf_flag *flags, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char left[64];
        if (flags[i].type == WF_FLAG_BOOL)
            snprintf(left, sizeof(left), "--%s", flags[i].name);
        else
            snprintf(left, sizeof(left), "--%s %s", flags[i].name, flags[i].metavar);
        printf("    %-30s %s\n", left, flags[i].help);
    }
}
