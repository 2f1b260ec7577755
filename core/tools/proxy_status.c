/*
 * proxy_status.c: `weft proxy-status [--istiod ADDR]`, istioctl
 * proxy-status for weft.  Fetches /debug/syncz from istiod's monitoring
 * port with a plain blocking HTTP/1.0 GET and prints one row per
 * connected proxy:
 *
 *   NAME  NAMESPACE  CDS  LDS  EDS  ISTIOD  VERSION
 *
 * where each type is SYNCED (the version sent is ACKed), NOT SENT
 * (nothing sent yet), STALE (sent, not ACKed yet) or NACK (the last
 * response was rejected; the proxy keeps its previous config).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "roles/roles.h"
#include "tools/tools.h"
#include "util/flags.h"

#define MAX_BODY (64 * 1024 * 1024)
#define TIMEOUT_S 10

/* GET path from addr; returns the body (malloc'd) or NULL with a reason. */
static char *http_get(const char *addr, const char *path, size_t *len, char *err, size_t errlen)
{
    char host[256], req[512];
    int port, fd = -1;
    struct sockaddr_in sa;
    struct timeval tv = {TIMEOUT_S, 0};
    char *buf = NULL, *body;
    size_t n = 0, cap = 0;
    ssize_t k;
    int status = 0;

    if (wf_addr_split(addr, host, sizeof(host), &port) < 0) {
        snprintf(err, errlen, "%s is not HOST:PORT", addr);
        return NULL;
    }
    if (!host[0] || strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "%s: %s is not an IPv4 address", addr, host);
        return NULL;
    }
    if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(err, errlen, "cannot reach istiod's monitoring port at %s: %s", addr,
                 strerror(errno));
        goto fail;
    }
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
             addr);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        snprintf(err, errlen, "cannot send to %s: %s", addr, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb;
            cap = cap ? cap * 2 : 65536;
            if (cap > MAX_BODY || !(nb = realloc(buf, cap))) {
                snprintf(err, errlen, "answer from %s is too large", addr);
                goto fail;
            }
            buf = nb;
        }
        k = read(fd, buf + n, cap - n - 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            snprintf(err, errlen, "reading from %s: %s", addr, strerror(errno));
            goto fail;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    fd = -1;
    if (!buf) {
        snprintf(err, errlen, "%s closed the connection without answering", addr);
        return NULL;
    }
    buf[n] = 0;
    if (sscanf(buf, "HTTP/%*d.%*d %d", &status) != 1 || !(body = strstr(buf, "\r\n\r\n"))) {
        snprintf(err, errlen, "%s did not answer HTTP (is it istiod's --monitoring address?)",
                 addr);
        goto fail;
    }
    if (status != 200) {
        snprintf(err, errlen, "GET %s on %s: HTTP %d (is it istiod's --monitoring address?)",
                 path, addr, status);
        goto fail;
    }
    body += 4;
    *len = n - (size_t)(body - buf);
    memmove(buf, body, *len + 1);
    return buf;
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static const char *type_status(const json_t *t)
{
    const char *sent = json_string_value(json_object_get(t, "sent"));
    const char *acked = json_string_value(json_object_get(t, "acked"));

    if (json_string_value(json_object_get(t, "last_nack")))
        return "NACK";
    if (!sent)
        return "NOT SENT";
    if (acked && strcmp(sent, acked) == 0)
        return "SYNCED";
    return "STALE";
}

/* NAME: the pod part of an Istio node id (sidecar~ip~NAME.ns~...),
 * else the id itself. */
static void proxy_name(const char *id, const char *ns, char *out, size_t len)
{
    const char *p = id;
    size_t n, nl = ns ? strlen(ns) : 0;

    for (int i = 0; p && i < 2; i++)
        if ((p = strchr(p, '~')))
            p++;
    if (!p || !strchr(p, '~')) {
        snprintf(out, len, "%s", id);
        return;
    }
    n = strcspn(p, "~");
    if (nl && n > nl + 1 && p[n - nl - 1] == '.' && strncmp(p + n - nl, ns, nl) == 0)
        n -= nl + 1;
    snprintf(out, len, "%.*s", (int)n, p);
}

enum { C_NAME, C_NS, C_CDS, C_LDS, C_EDS, C_ISTIOD, C_VERSION, NCOLS };
static const char *const heads[NCOLS] = {"NAME", "NAMESPACE", "CDS", "LDS", "EDS", "ISTIOD",
                                         "VERSION"};

static int cmp_rows(const void *a, const void *b)
{
    char *const *x = a, *const *y = b;
    int c = strcmp(x[C_NS], y[C_NS]);

    return c ? c : strcmp(x[C_NAME], y[C_NAME]);
}

int wf_tool_proxy_status(int argc, char **argv)
{
    const char *addr = "127.0.0.1:15014";
    const wf_flag flags[] = {
        {"istiod", WF_FLAG_ADDR, &addr, 0, 0, "ADDR",
         "istiod's monitoring address (127.0.0.1:15014)"},
    };
    char err[512], *body;
    size_t len = 0, n;
    json_t *arr, *e;
    json_error_t jerr;
    char *(*rows)[NCOLS];
    size_t w[NCOLS];

    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: weft proxy-status [--istiod ADDR]\n");
            wf_flags_usage(flags, 1);
            return 0;
        }
    if (wf_flags_parse(flags, 1, argc, argv, 1, err, sizeof(err)) < 0)
        return wf_usage_error("%s", err);
    if (!(body = http_get(addr, "/debug/syncz", &len, err, sizeof(err)))) {
        fprintf(stderr, "weft: proxy-status: %s\n", err);
        return 1;
    }
    arr = json_loadb(body, len, 0, &jerr);
    free(body);
    if (!json_is_array(arr)) {
        fprintf(stderr, "weft: proxy-status: /debug/syncz on %s is not a JSON list: %s\n", addr,
                arr ? "another JSON value" : jerr.text);
        json_decref(arr);
        return 1;
    }
    n = json_array_size(arr);
    rows = calloc(n ? n : 1, sizeof(*rows));
    if (!rows) {
        json_decref(arr);
        fprintf(stderr, "weft: proxy-status: out of memory\n");
        return 1;
    }
    for (int c = 0; c < NCOLS; c++)
        w[c] = strlen(heads[c]);
    for (size_t i = 0; i < n; i++) {
        const char *id, *ns, *ver, *ist;
        char name[512];
        e = json_array_get(arr, i);
        id = json_string_value(json_object_get(e, "id"));
        ns = json_string_value(json_object_get(e, "namespace"));
        ver = json_string_value(json_object_get(e, "istio_version"));
        ist = json_string_value(json_object_get(e, "istiod"));
        proxy_name(id ? id : "?", ns, name, sizeof(name));
        rows[i][C_NAME] = strdup(name);
        rows[i][C_NS] = strdup(ns ? ns : "-");
        rows[i][C_CDS] = strdup(type_status(json_object_get(e, "CDS")));
        rows[i][C_LDS] = strdup(type_status(json_object_get(e, "LDS")));
        rows[i][C_EDS] = strdup(type_status(json_object_get(e, "EDS")));
        rows[i][C_ISTIOD] = strdup(ist ? ist : "-");
        rows[i][C_VERSION] = strdup(ver ? ver : "-");
        for (int c = 0; c < NCOLS; c++) {
            if (!rows[i][c]) {
                fprintf(stderr, "weft: proxy-status: out of memory\n");
                exit(1);
            }
            if (strlen(rows[i][c]) > w[c])
                w[c] = strlen(rows[i][c]);
        }
    }
    json_decref(arr);
    qsort(rows, n, sizeof(*rows), cmp_rows);
    for (int c = 0; c < NCOLS; c++)
        printf("%-*s%s", c == NCOLS - 1 ? 0 : (int)w[c], heads[c], c == NCOLS - 1 ? "\n" : "  ");
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < NCOLS; c++) {
            printf("%-*s%s", c == NCOLS - 1 ? 0 : (int)w[c], rows[i][c],
                   c == NCOLS - 1 ? "\n" : "  ");
            free(rows[i][c]);
        }
    free(rows);
    return 0;
}
