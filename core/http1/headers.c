/* headers.c: header lists and shared HTTP/1.1 pieces; see headers.h. */
#include "http1/headers.h"

#include <string.h>
#include <strings.h>

int wf_hdrs_add(wf_arena *a, wf_hdrs *h, const char *n, size_t nl, const char *v, size_t vl)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 16;
        wf_hdr *nv = wf_arena_grow(a, h->v, sizeof(wf_hdr) * h->cap, sizeof(wf_hdr) * cap);
        if (!nv)
            return -1;
        h->v = nv;
        h->cap = cap;
    }
    h->v[h->n].name.p = wf_arena_strndup(a, n, nl);
    h->v[h->n].value.p = wf_arena_strndup(a, v, vl);
    if (!h->v[h->n].name.p || !h->v[h->n].value.p)
        return -1;
    h->v[h->n].name.len = nl;
    h->v[h->n].value.len = vl;
    h->n++;
    return 0;
}

int wf_hdrs_get(const wf_hdrs *h, const char *n, size_t nl, wf_str *out)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->v[i].name.len == nl && strncasecmp(h->v[i].name.p, n, nl) == 0) {
            *out = h->v[i].value;
            return 1;
        }
    return 0;
}

int wf_hdrs_remove(wf_hdrs *h, const char *n, size_t nl)
{
    uint32_t j = 0;
    int removed = 0;

    for (uint32_t i = 0; i < h->n; i++) {
        if (h->v[i].name.len == nl && strncasecmp(h->v[i].name.p, n, nl) == 0)
            removed++;
        else
            h->v[j++] = h->v[i];
    }
    h->n = j;
    return removed;
}

int wf_str_append(wf_arena *a, wf_str *str, const char *at, size_t len)
{
    char *n = wf_arena_grow(a, (char *)str->p, str->p ? str->len + 1 : 0, str->len + len + 1);

    if (!n)
        return -1;
    memcpy(n + str->len, at, len);
    str->p = n;
    str->len += len;
    n[str->len] = 0;
    return 0;
}

int wf_hdrs_on_field(wf_arena *a, wf_hdrs *h, int *in_value, const char *at, size_t len)
{
    if (*in_value || h->n == 0) {
        if (wf_hdrs_add(a, h, "", 0, "", 0) < 0)
            return -1;
        *in_value = 0;
    }
    return wf_str_append(a, &h->v[h->n - 1].name, at, len);
}

int wf_hdrs_on_value(wf_arena *a, wf_hdrs *h, int *in_value, const char *at, size_t len)
{
    *in_value = 1;
    return h->n ? wf_str_append(a, &h->v[h->n - 1].value, at, len) : -1;
}

int wf_http_hop_by_hop(const wf_str *n)
{
    static const char *const hop[] = {"connection",        "keep-alive",     "proxy-connection",
                                      "te",                "transfer-encoding", "upgrade",
                                      "content-length",    "host",           "expect",
                                      "proxy-authorization"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (n->len == strlen(hop[i]) && strncasecmp(n->p, hop[i], n->len) == 0)
            return 1;
    return 0;
}

const char *wf_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}
