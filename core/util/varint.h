/*
 * varint.h: little-endian base-128 integers, as protobuf writes them (the
 * xDS codec) and as util/lz.h frames its streams.
 */
#ifndef WF_UTIL_VARINT_H
#define WF_UTIL_VARINT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes v takes. */
static inline size_t wf_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v at out (room for 10 bytes); returns the bytes written. */
static inline size_t wf_varint_put(uint8_t *out, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Reads a varint of p[*i..n) and advances *i: 0, or -1 when it runs past
 * n or past 64 bits. */
static inline int wf_varint_get(const uint8_t *p, size_t n, size_t *i, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 64 && *i < n; shift += 7) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

#endif
