/*
 * peer_auth.c: which mTLS mode a workload's inbound port takes from the
 * PeerAuthentications of the configuration (docs/resources.md, "TLS"),
 * resolved as Istio composes them:
 *
 *   1. start from PERMISSIVE;
 *   2. the mesh-wide policy (no selector, in MeshConfig.rootNamespace)
 *      replaces it when its mode is set;
 *   3. the namespace-wide policy (no selector, in the workload's namespace)
 *      replaces that when its mode is set;
 *   4. a policy of the workload's namespace whose selector matches the
 *      workload replaces that when its mode is set, and its portLevelMtls
 *      entry for the port (if any, and set) replaces that in turn.
 *
 * A mode UNSET (or no mtls at all) inherits from the level above.  A
 * selector with no labels selects the namespace, as in Istio; selector
 * policies in the root namespace apply to nobody (Istio ignores them).
 * Istio picks the oldest policy when several sit at one level; a file has
 * no creation time, so weft takes the first by name and says so.
 */
#include "translate/translate.h"

#include <stdarg.h>
#include <string.h>

#include "util/log.h"

#define warn wf__translate_warn

static int streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

static int has_selector(const wf_peer_authentication *pa)
{
    return pa->selector && pa->selector->n_match_labels > 0;
}

static const char *label_of(const char *const *labels, const char *k)
{
    for (size_t i = 0; labels && labels[2 * i]; i++)
        if (streq(labels[2 * i], k))
            return labels[2 * i + 1];
    return NULL;
}

static int selects(const wf_selector *sel, const char *const *labels)
{
    for (size_t i = 0; i < sel->n_match_labels; i++)
        if (!streq(label_of(labels, sel->match_labels[i].key), sel->match_labels[i].value))
            return 0;
    return 1;
}

/* The policy of namespace ns at one level (workload: with a selector that
 * selects labels; otherwise without selector); the first by name when
 * several apply, with a warning unless quiet. */
static const wf_peer_authentication *pick(const wf_config *cfg, const char *ns, int workload,
                                          const char *const *labels, int quiet)
{
    const wf_peer_authentication *best = NULL;
    size_t n = 0;

    for (size_t i = 0; i < cfg->n_peer_authentications; i++) {
        const wf_peer_authentication *pa = &cfg->peer_authentications[i];
        if (!streq(pa->meta.namespace_, ns) || has_selector(pa) != workload ||
            (workload && !selects(pa->selector, labels)))
            continue;
        n++;
        if (!best || strcmp(pa->meta.name, best->meta.name) < 0)
            best = pa;
    }
    if (n > 1 && !quiet)
        warn("%zu PeerAuthentications in namespace %s apply %s; using %s/%s, the first by "
             "name (Istio would take the oldest): keep one per level",
             n, ns, workload ? "to this workload" : "namespace-wide (no selector)", ns,
             best->meta.name);
    return best;
}

static int mode_set(const wf_peer_authentication *pa)
{
    return pa && pa->mtls_set && pa->mtls_mode != WF_MTLS_UNSET;
}

wf_mtls_mode wf__peer_auth_mode(const wf_config *cfg, const char *ns, const char *const *labels,
                                int port, int quiet)
{
    const char *root = cfg && cfg->mesh.root_namespace ? cfg->mesh.root_namespace : "istio-system";
    const wf_peer_authentication *pa;
    wf_mtls_mode mode = WF_MTLS_PERMISSIVE;

    if (!cfg)
        return mode;
    if (mode_set(pa = pick(cfg, root, 0, NULL, quiet)))
        mode = pa->mtls_mode;
    if (!ns || streq(ns, root))
        return mode; /* the root namespace's own workloads: the mesh-wide policy only */
    if (mode_set(pa = pick(cfg, ns, 0, NULL, quiet)))
        mode = pa->mtls_mode;
    if (!(pa = pick(cfg, ns, 1, labels, quiet)))
        return mode;
    if (mode_set(pa))
        mode = pa->mtls_mode;
    for (size_t i = 0; port > 0 && i < pa->n_port_level_mtls; i++)
        if (pa->port_level_mtls[i].port == (uint32_t)port) {
            if (pa->port_level_mtls[i].mode != WF_MTLS_UNSET)
                mode = pa->port_level_mtls[i].mode;
            break;
        }
    return mode;
}

wf_mtls_mode wf_peer_auth_mode(const wf_config *cfg, const char *ns, const char *const *labels,
                               int port)
{
    return wf__peer_auth_mode(cfg, ns, labels, port, 0);
}
