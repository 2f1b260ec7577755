/* file.c: see file.h. */
#include "util/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int wf_read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL, *nb;
    size_t n = 0, cap = 0, r;
    int e = 0;

    *out = NULL;
    if (!f)
        return -errno;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            if (!(nb = realloc(b, cap + 1))) {
                e = -ENOMEM;
                break;
            }
            b = nb;
        }
        r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n > max) {
            e = -EFBIG;
            break;
        }
        if (r == 0) {
            if (ferror(f))
                e = -EIO;
            break;
        }
    }
    fclose(f);
    if (e) {
        free(b);
        return e;
    }
    b[n] = 0;
    *out = b;
    if (len)
        *len = n;
    return 0;
}
