/*
 * pending.c: roles that later work fills in.  They refuse to start with a
 * clear message rather than pretending to run.
 */
#include "roles/roles.h"

#include <stdio.h>

static int not_built(const char *role)
{
    return wf_usage_error(
        "--role=%s is not built yet in this version; --role=proxy, --role=istiod and --role=ca "
        "run",
        role);
}

static int run_gateway(int argc, char **argv, int first)
{
    return not_built("gateway");
}

static void usage_pending(void)
{
    printf("    (not built yet)\n");
}

const wf_role wf_role_gateway = {"gateway", "ingress gateway (Gateway listeners, TLS termination)",
                                 run_gateway, usage_pending};
