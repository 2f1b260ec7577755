/*
 * lz.h: a small LZ77 byte compressor for configuration kept but rarely
 * read (util/jpack.h).  Such text repeats itself at length (a thousand
 * clusters differ in a name or two), so plain back-references shrink it
 * five to ten times; speed matters less than simplicity.
 *
 * Format: a varint of the original length, then sequences of
 *   varint literal count, the literals,
 *   varint (match length - 3), 0 ending the stream,
 *   varint distance back (1 = the byte before), when a match follows.
 * Varints are little-endian base 128.
 */
#ifndef WF_UTIL_LZ_H
#define WF_UTIL_LZ_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes wf_lz_pack writes for n bytes of input. */
size_t wf_lz_bound(size_t n);
/* Compresses in[0..n) into out (wf_lz_bound(n) bytes); returns its length,
 * or 0 on out of memory. */
size_t wf_lz_pack(const uint8_t *in, size_t n, uint8_t *out);
/* The original length a packed stream says it has, or (size_t)-1 when it
 * is not one. */
size_t wf_lz_size(const uint8_t *in, size_t n);
/* Decompresses in[0..n) into out (wf_lz_size bytes).  0, or -1 when the
 * stream is malformed (nothing is read or written out of bounds). */
int wf_lz_unpack(const uint8_t *in, size_t n, uint8_t *out, size_t outlen);

#endif
