/*
 * token.c: `weft token`, bootstrap tokens for workloads outside
 * Kubernetes.  Signs an ES256 JWT with the CA's key in --ca-dir (which must
 * already hold a CA: a token from a root nobody serves would be useless) for
 * one namespace and service account; the CA then issues that identity, and
 * only that, to whoever presents the token.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca/ca.h"
#include "config/config.h"
#include "roles/roles.h"
#include "tools/tools.h"
#include "util/flags.h"

int wf_tool_token(int argc, char **argv)
{
    static const char *ca_dir, *ns, *sa, *ttl_s, *td;
    static const wf_flag flags[] = {
        {"ca-dir", WF_FLAG_STR, &ca_dir, 0, 0, "DIR", "the CA's directory (required)"},
        {"namespace", WF_FLAG_STR, &ns, 0, 0, "NS", "the workload's namespace (required)"},
        {"service-account", WF_FLAG_STR, &sa, 0, 0, "SA",
         "the workload's service account (required)"},
        {"ttl", WF_FLAG_STR, &ttl_s, 0, 0, "DURATION", "how long the token is valid (1h)"},
        {"trust-domain", WF_FLAG_STR, &td, 0, 0, "TD",
         "the CA's trust domain, the token's audience (cluster.local)"},
    };
    char err[512], *cerr = NULL, *tok = NULL;
    int64_t ms;
    struct stat st;
    wf_ca *ca = NULL;
    int rc;

    ca_dir = ns = sa = NULL;
    ttl_s = "1h";
    td = WF_CA_DEFAULT_TRUST_DOMAIN;
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: weft token --ca-dir DIR --namespace NS --service-account SA "
               "[--ttl DURATION] [--trust-domain TD]\n");
        wf_flags_usage(flags, sizeof(flags) / sizeof(flags[0]));
        return 0;
    }
    if (wf_flags_parse(flags, sizeof(flags) / sizeof(flags[0]), argc, argv, 1, err, sizeof(err)) <
        0)
        return wf_usage_error("token: %s", err);
    if (!ca_dir || !ns || !sa)
        return wf_usage_error("token: needs --ca-dir DIR --namespace NS --service-account SA "
                              "(see weft token --help)");
    if (wf_duration_parse(ttl_s, &ms, err, sizeof(err)) < 0)
        return wf_usage_error("token: flag --ttl: %s", err);
    if (ms < 1000)
        return wf_usage_error("token: flag --ttl: \"%s\" is shorter than a second", ttl_s);
    if (ms / 1000 > 366L * 86400)
        return wf_usage_error("token: flag --ttl: \"%s\" is longer than a year; bootstrap tokens "
                              "should be short-lived",
                              ttl_s);
    /* Check the names as the CA will, before touching the key: usage errors. */
    {
        char id[1024];
        snprintf(id, sizeof(id), "spiffe://%s/ns/a/sa/b", td);
        if (wf_spiffe_parse(id, NULL, NULL) != 0)
            return wf_usage_error("token: --trust-domain \"%s\" is not a trust domain (lower-case "
                                  "letters, digits, '.', '-', '_')",
                                  td);
        snprintf(id, sizeof(id), "spiffe://x/ns/%s/sa/b", ns);
        if (strchr(ns, '/') || wf_spiffe_parse(id, NULL, NULL) != 0)
            return wf_usage_error("token: --namespace \"%s\" is not a Kubernetes namespace name "
                                  "(DNS-1123 label: lower-case letters, digits, '-', at most 63)",
                                  ns);
        snprintf(id, sizeof(id), "spiffe://x/ns/a/sa/%s", sa);
        if (strchr(sa, '/') || wf_spiffe_parse(id, NULL, NULL) != 0)
            return wf_usage_error("token: --service-account \"%s\" is not a Kubernetes service "
                                  "account name (DNS-1123 subdomain: lower-case letters, digits, "
                                  "'-', '.')",
                                  sa);
    }
    if (stat(ca_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "weft: token: --ca-dir %s: %s\n", ca_dir,
                errno == ENOENT ? "no such directory" : strerror(errno));
        return 1;
    }
    rc = wf_ca_load(ca_dir, td, &ca, &cerr);
    if (rc == WF_CA_NO_CA) {
        fprintf(stderr,
                "weft: token: no CA in %s: start `weft --role=ca --ca-dir %s` or istiod "
                "first\n",
                ca_dir, ca_dir);
        free(cerr);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "weft: token: %s\n", cerr ? cerr : "cannot load the CA");
        free(cerr);
        return 1;
    }
    rc = wf_ca_token_issue(ca, ns, sa, (long)(ms / 1000), &tok, &cerr);
    wf_ca_free(ca);
    if (rc != 0) {
        fprintf(stderr, "weft: token: %s\n", cerr ? cerr : "cannot sign the token");
        free(cerr);
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return fflush(stdout) == 0 ? 0 : 1;
}
