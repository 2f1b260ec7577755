/* lz.c: LZ77 over whole buffers; see lz.h. */
#include "util/lz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/varint.h"

#define MIN_MATCH 4
#define HASH_BITS_MIN 8
#define HASH_BITS_MAX 15 /* a table of positions as big as the input, up to 32768 */

size_t wf_lz_bound(size_t n)
{
    /* Matches never cost more than the bytes they stand for, so the worst
     * case is the input plus the header, the last run's count and the
     * terminator. */
    return n + 2 * 10 + 1;
}

static uint32_t hash4(const uint8_t *p, unsigned bits)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return (v * 2654435761u) >> (32 - bits);
}

size_t wf_lz_pack(const uint8_t *in, size_t n, uint8_t *out)
{
    unsigned bits = HASH_BITS_MIN;
    size_t *last, o = wf_varint_put(out, n), anchor = 0, i = 0;

    /* Small inputs (one assignment of a few hundred bytes) get a small
     * table: clearing 256 KB for each would cost more than packing. */
    while (bits < HASH_BITS_MAX && ((size_t)1 << bits) < n)
        bits++;
    if (!(last = calloc((size_t)1 << bits, sizeof(*last)))) /* position + 1, 0 = none */
        return 0;
    while (n >= MIN_MATCH && i <= n - MIN_MATCH) {
        uint32_t h = hash4(in + i, bits);
        size_t cand = last[h], len = 0;
        last[h] = i + 1;
        if (cand && memcmp(in + cand - 1, in + i, MIN_MATCH) == 0) {
            const uint8_t *a = in + cand - 1, *b = in + i;
            len = MIN_MATCH;
            while (i + len < n && a[len] == b[len])
                len++;
            /* A match is taken only when it costs no more than the bytes
             * it stands for, so output never outgrows wf_lz_bound. */
            if (wf_varint_len(i - anchor) + wf_varint_len(len - MIN_MATCH + 1) +
                    wf_varint_len(i - (cand - 1)) >
                len)
                len = 0;
        }
        if (!len) {
            i++;
            continue;
        }
        o += wf_varint_put(out + o, i - anchor);
        memcpy(out + o, in + anchor, i - anchor);
        o += i - anchor;
        o += wf_varint_put(out + o, len - MIN_MATCH + 1);
        o += wf_varint_put(out + o, i - (cand - 1));
        /* Positions inside the match are remembered too: the next copy of
         * this text finds its longest match from any of them. */
        for (size_t k = i + 1; k < i + len && k <= n - MIN_MATCH; k++)
            last[hash4(in + k, bits)] = k + 1;
        i += len;
        anchor = i;
    }
    o += wf_varint_put(out + o, n - anchor);
    memcpy(out + o, in + anchor, n - anchor);
    o += n - anchor;
    out[o++] = 0;
    free(last);
    return o;
}

size_t wf_lz_size(const uint8_t *in, size_t n)
{
    size_t pos = 0;
    uint64_t v;

    return wf_varint_get(in, n, &pos, &v) < 0 || v >= SIZE_MAX ? (size_t)-1 : (size_t)v;
}

int wf_lz_unpack(const uint8_t *in, size_t n, uint8_t *out, size_t outlen)
{
    size_t pos = 0, o = 0;
    uint64_t total, lit, m, dist;

    if (wf_varint_get(in, n, &pos, &total) < 0 || total != outlen)
        return -1;
    for (;;) {
        if (wf_varint_get(in, n, &pos, &lit) < 0 || lit > n - pos || lit > outlen - o)
            return -1;
        memcpy(out + o, in + pos, lit);
        pos += lit;
        o += lit;
        if (wf_varint_get(in, n, &pos, &m) < 0)
            return -1;
        if (m == 0)
            return o == outlen && pos == n ? 0 : -1;
        if (m > outlen || wf_varint_get(in, n, &pos, &dist) < 0 || dist == 0 || dist > o ||
            m + MIN_MATCH - 1 > outlen - o)
            return -1;
        m += MIN_MATCH - 1;
        /* Byte by byte: a match may overlap what it writes (a run). */
        for (size_t k = 0; k < m; k++, o++)
            out[o] = out[o - dist];
    }
}
