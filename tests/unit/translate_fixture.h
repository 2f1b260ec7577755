/*
 * translate_fixture.h: the sidecar the unit tests translate for (included
 * by the tests that need a translated bundle).
 */
#ifndef WF_TEST_TRANSLATE_FIXTURE_H
#define WF_TEST_TRANSLATE_FIXTURE_H

#include <stdio.h>

#include "translate/translate.h"

/* A sidecar in namespace ns, service account "sa", outbound 127.0.0.1:15001,
 * inbound 127.0.0.1:15006. */
static inline wf_proxy_info sidecar(const char *ns, const char *const *labels, int app_port)
{
    return (wf_proxy_info){.role = "proxy",
                           .namespace_ = ns,
                           .service_account = "sa",
                           .labels = labels,
                           .outbound_addr = "127.0.0.1",
                           .outbound_port = 15001,
                           .inbound_addr = "127.0.0.1",
                           .inbound_port = 15006,
                           .app_port = app_port};
}

/* c translated for p, or NULL (the reason printed) when c is NULL or
 * translation fails. */
static inline json_t *translate_for(const wf_config *c, const wf_proxy_info *p)
{
    char err[256];
    json_t *b = c ? wf_translate(c, p, err, sizeof(err)) : NULL;

    if (c && !b)
        fprintf(stderr, "wf_translate failed: %s\n", err);
    return b;
}

#endif
