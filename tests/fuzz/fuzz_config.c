/*
 * fuzz_config.c: libFuzzer driver for the YAML config loader.  Any input
 * must load or be refused with diagnostics: never crash, leak or hang.
 *
 *   scons fuzz=1 && build-fuzz/fuzz/fuzz_config tests/fuzz/corpus/config
 */
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wf_config_buf b = {"fuzz.yaml", (const char *)data, size};
    wf_config *c = NULL;
    wf_diags d = {0};
    char line[2048];

    wf_config_load_bufs(&b, 1, &c, &d);
    for (size_t i = 0; i < d.n; i++)
        wf_diag_format(&d.v[i], line, sizeof(line));
    wf_config_free(c);
    wf_diags_free(&d);
    return 0;
}
