/*
 * headers.h: HTTP header lists as the data path keeps them (arena-backed
 * name/value pairs, pseudo-headers first), and the pieces of HTTP/1.1 that
 * both directions share: assembling headers from llhttp's split callbacks,
 * hop-by-hop headers, reason phrases.
 */
#ifndef WF_HTTP1_HEADERS_H
#define WF_HTTP1_HEADERS_H

#include <stdint.h>

#include <weft/filter.h>

#include "util/arena.h"

typedef struct wf_hdr {
    wf_str name, value;
} wf_hdr;

typedef struct wf_hdrs {
    wf_hdr *v;
    uint32_t n, cap;
} wf_hdrs;

/* Appends one header (copied into a).  Returns 0, or -1 at the arena limit. */
int wf_hdrs_add(wf_arena *a, wf_hdrs *h, const char *n, size_t nl, const char *v, size_t vl);
/* First value of name (case-insensitive); returns 1 if found. */
int wf_hdrs_get(const wf_hdrs *h, const char *n, size_t nl, wf_str *out);
/* Removes every value of name; returns how many. */
int wf_hdrs_remove(wf_hdrs *h, const char *n, size_t nl);

/* llhttp delivers a header name or value in pieces; these grow the last
 * header.  *in_value tracks which part came last.  Return 0 or -1. */
int wf_hdrs_on_field(wf_arena *a, wf_hdrs *h, int *in_value, const char *at, size_t len);
int wf_hdrs_on_value(wf_arena *a, wf_hdrs *h, int *in_value, const char *at, size_t len);

/* Appends to an arena string, keeping it NUL-terminated. */
int wf_str_append(wf_arena *a, wf_str *str, const char *at, size_t len);

/* Connection-level headers a proxy must not forward (RFC 9110 7.6.1), plus
 * the framing and Host headers it writes itself. */
int wf_http_hop_by_hop(const wf_str *name);
const char *wf_http_reason(int status);

#endif
