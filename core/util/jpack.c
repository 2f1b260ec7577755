/*
 * jpack.c: JSON values kept as their compact text, compressed (jpack.h).
 */
#include "util/jpack.h"

#include <stdlib.h>
#include <string.h>

#include "util/lz.h"

json_t *wf_jpack(const json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t n = text ? strlen(text) : 0;
    uint8_t *z = text ? malloc(wf_lz_bound(n)) : NULL;
    size_t zn = z ? wf_lz_pack((const uint8_t *)text, n, z) : 0;
    json_t *s = zn ? json_stringn_nocheck((const char *)z, zn) : NULL;

    free(z);
    free(text);
    return s;
}

json_t *wf_junpack(const json_t *packed)
{
    const uint8_t *z = (const uint8_t *)json_string_value(packed);
    size_t zn = json_string_length(packed), n = z ? wf_lz_size(z, zn) : (size_t)-1;
    char *text;
    json_t *v;

    if (n == (size_t)-1 || !(text = malloc(n ? n : 1)))
        return NULL;
    v = wf_lz_unpack(z, zn, (uint8_t *)text, n) == 0
            ? json_loadb(text, n, JSON_DECODE_ANY, NULL)
            : NULL;
    free(text);
    return v;
}
