/*
 * jpack.h: JSON values kept packed.
 *
 * Configuration that is held but rarely read (what the xDS client holds
 * between responses, what /config_dump shows of clusters and endpoints) is
 * kept as its compact JSON text, compressed (util/lz.h), inside a JSON
 * string: a jansson tree costs ten times the memory of its text, and the
 * text of a thousand clusters compresses about tenfold.  A packed value is
 * an ordinary json_t, so it is shared by reference counting like any
 * other; its string holds bytes, not text, and is only read by
 * wf_junpack.
 */
#ifndef WF_UTIL_JPACK_H
#define WF_UTIL_JPACK_H

#include <jansson.h>

/* v packed: a new JSON string holding its compact text; NULL for NULL or
 * out of memory. */
json_t *wf_jpack(const json_t *v);

/* The tree of a packed value: a new reference; NULL for NULL, a value that
 * is not packed text, or out of memory. */
json_t *wf_junpack(const json_t *packed);

#endif
