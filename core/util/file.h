/* file.h: reading a whole file into memory, with a size limit. */
#ifndef WF_UTIL_FILE_H
#define WF_UTIL_FILE_H

#include <stddef.h>

/*
 * Reads path into a malloc'd, NUL-terminated buffer (*out, owned by the
 * caller; *len bytes without the NUL; len may be NULL).  Returns 0, or a
 * negative errno: -EFBIG when the file is larger than max bytes.
 */
int wf_read_file(const char *path, size_t max, char **out, size_t *len);

#endif
