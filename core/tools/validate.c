/*
 * validate.c: `weft validate PATH...`, the offline check an operator (or a
 * CI job) runs before handing configuration to istiod.  It uses the very
 * loader istiod uses, so "ok" here means istiod will accept the files.
 */
#include "tools/tools.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: weft validate PATH...  (YAML files, or directories of *.yaml/*.yml)\n");
}

int wf_tool_validate(int argc, char **argv)
{
    wf_diags diags = {0};
    wf_config *cfg = NULL;
    int first = 1;

    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--") == 0)
        first = 2;
    if (argc <= first) {
        fprintf(stderr, "weft validate: no PATH given; usage: weft validate PATH...\n");
        return 2;
    }
    /* An unreadable path is a usage problem, not a config problem: say so
     * once and stop, so scripts can tell "bad config" (1) from "bad call" (2). */
    for (int i = first; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0 ||
            access(argv[i], R_OK | (S_ISDIR(st.st_mode) ? X_OK : 0)) < 0) {
            fprintf(stderr, "weft validate: cannot read %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
    }
    if (wf_config_load((const char *const *)(argv + first), (size_t)(argc - first), &cfg, &diags) <
        0) {
        wf_diags_print(&diags, stdout);
        wf_diags_free(&diags);
        fflush(stdout);
        return 1;
    }
    /* Fixed wording (no singular forms) so scripts can match it. */
    printf("ok: %zu resources in %zu files\n", wf_config_count(cfg), cfg->n_files);
    wf_config_free(cfg);
    wf_diags_free(&diags);
    fflush(stdout);
    return 0;
}
