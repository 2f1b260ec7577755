/*
 * main.c: weft's one executable.  Parses the role (--role=NAME) or a tool
 * name (weft validate ...) and dispatches; everything else lives in the
 * role and tool files.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "roles/roles.h"
#include "tools/tools.h"

static const wf_role *const roles[] = {&wf_role_istiod, &wf_role_proxy, &wf_role_gateway,
                                       &wf_role_ca};

int wf_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("weft: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 2;
}

static void help(void)
{
    printf("weft %s: a service mesh in one executable\n\n"
           "usage:\n"
           "  weft --role=ROLE [flags]     run a role\n"
           "  weft validate PATH...        check Istio/weft YAML config (files or directories)\n"
           "  weft proxy-status [--istiod ADDR]  every proxy connected to istiod and its xDS sync state\n"
           "  weft token --ca-dir DIR --namespace NS --service-account SA [--ttl 1h] [--trust-domain TD]\n"
           "                               a bootstrap token: the CA issues that identity to its holder\n"
           "  weft --version | --help\n\n"
           "roles:\n",
           WF_VERSION);
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        printf("  --role=%-8s %s\n", roles[i]->name, roles[i]->summary);
        roles[i]->usage();
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    const char *role = NULL;
    int at = -1;

    if (argc < 2)
        return wf_usage_error("no role given: use --role=istiod|proxy|gateway|ca (see weft --help)");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        help();
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("weft %s\n", WF_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "validate") == 0)
        return wf_tool_validate(argc - 1, argv + 1);
    if (strcmp(argv[1], "proxy-status") == 0)
        return wf_tool_proxy_status(argc - 1, argv + 1);
    if (strcmp(argv[1], "token") == 0)
        return wf_tool_token(argc - 1, argv + 1);

    /* The role may be anywhere among the flags; it is taken out of argv. */
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--role=", 7) == 0) {
            role = argv[i] + 7;
            at = i;
        } else if (strcmp(argv[i], "--role") == 0 && i + 1 < argc) {
            role = argv[i + 1];
            at = i;
        } else if (strcmp(argv[i], "--help") == 0) {
            help();
            return 0;
        }
    }
    if (!role)
        return wf_usage_error("no role given: use --role=istiod|proxy|gateway|ca (see weft --help)");
    {
        int drop = strncmp(argv[at], "--role=", 7) == 0 ? 1 : 2;
        for (int i = at; i + drop < argc; i++)
            argv[i] = argv[i + drop];
        argc -= drop;
    }
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(role, roles[i]->name) == 0)
            return roles[i]->run(argc, argv, 1);
    return wf_usage_error("unknown role \"%s\": use --role=istiod|proxy|gateway|ca", role);
}
