/*
 * jpack.c: JSON values kept as their compact text (jpack.h).
 */
#include "util/jpack.h"

#include <stdlib.h>

json_t *wf_jpack(const json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_t *s = text ? json_string_nocheck(text) : NULL;

    free(text);
    return s;
}

json_t *wf_junpack(const json_t *packed)
{
    if (!json_is_string(packed))
        return NULL;
    return json_loadb(json_string_value(packed), json_string_length(packed), JSON_DECODE_ANY,
                      NULL);
}
