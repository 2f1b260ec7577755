/*
 * config_test.c: the configuration loader (core/config).  Good fixtures
 * must parse into the right fields and Istio's defaults; every class of bad
 * input must produce exactly the documented diagnostic lines; hostile input
 * must never crash.  Run from the repository root (fixture paths are
 * relative): build/tests/config_test.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "test.h"

#define D "tests/unit/testdata/config/"

/* ---- helpers ---------------------------------------------------------------- */

static wf_config *load_paths(const char *const *paths, size_t n)
{
    wf_config *c = NULL;
    wf_diags d = {0};

    if (wf_config_load(paths, n, &c, &d) != 0) {
        fprintf(stderr, "unexpected diagnostics:\n");
        wf_diags_print(&d, stderr);
    }
    CHECK(c != NULL);
    CHECK_INT(d.n, 0);
    wf_diags_free(&d);
    return c;
}

static wf_config *load1(const char *path)
{
    return load_paths(&path, 1);
}

/* Loads paths, expects failure and exactly the lines in want (NULL-ended). */
static void expect_paths(const char *const *paths, size_t n, const char *const *want)
{
    wf_config *c = (wf_config *)1;
    wf_diags d = {0};
    char line[2048];
    size_t i;

    CHECK_INT(wf_config_load(paths, n, &c, &d), -1);
    CHECK(c == NULL);
    for (i = 0; want[i]; i++) {
        if (i >= d.n) {
            fprintf(stderr, "missing diagnostic: %s\n", want[i]);
            test_current_failed = 1;
            continue;
        }
        wf_diag_format(&d.v[i], line, sizeof(line));
        CHECK_STR(line, want[i]);
    }
    for (; i < d.n; i++) {
        wf_diag_format(&d.v[i], line, sizeof(line));
        fprintf(stderr, "unexpected diagnostic: %s\n", line);
        test_current_failed = 1;
    }
    wf_diags_free(&d);
}

static void expect1(const char *path, const char *const *want)
{
    expect_paths(&path, 1, want);
}

/* Writes text to a new temporary file; returns its path (static storage,
 * a few at a time). */
static const char *tmp_yaml(const char *text, size_t len)
{
    static char paths[8][64];
    static int next;
    char *p = paths[next++ % 8];
    int fd;

    snprintf(p, 64, "/tmp/wf_config_test_XXXXXX");
    fd = mkstemp(p);
    if (fd < 0)
        return NULL;
    if (write(fd, text, len) != (ssize_t)len)
        CHECK(0);
    close(fd);
    return p;
}

/* Loads inline YAML; returns the config or NULL, with diagnostics in *d. */
static wf_config *load_text(const char *text, wf_diags *d)
{
    const char *p = tmp_yaml(text, strlen(text));
    wf_config *c = NULL;

    CHECK(p != NULL);
    if (!p)
        return NULL;
    wf_config_load(&p, 1, &c, d);
    unlink(p);
    return c;
}

/* Loads inline YAML that must fail with one diagnostic whose text after
 * "path:" is `want` (so tests need not know the temporary file's name). */
static void expect_text(const char *text, const char *want)
{
    wf_diags d = {0};
    wf_config *c = load_text(text, &d);
    char line[2048];

    CHECK(c == NULL);
    wf_config_free(c);
    CHECK_INT(d.n, 1);
    if (d.n >= 1) {
        const char *rest;
        wf_diag_format(&d.v[0], line, sizeof(line));
        rest = strchr(line, ':');
        CHECK_STR(rest ? rest + 1 : line, want);
    }
    if (d.n > 1) {
        for (size_t i = 0; i < d.n; i++) {
            wf_diag_format(&d.v[i], line, sizeof(line));
            fprintf(stderr, "  got: %s\n", line);
        }
    }
    wf_diags_free(&d);
}

static const wf_virtual_service *vs_named(const wf_config *c, const char *ns, const char *name)
{
    for (size_t i = 0; i < c->n_virtual_services; i++)
        if (!strcmp(c->virtual_services[i].meta.namespace_, ns) &&
            !strcmp(c->virtual_services[i].meta.name, name))
            return &c->virtual_services[i];
    return NULL;
}

static const wf_destination_rule *dr_named(const wf_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_destination_rules; i++)
        if (!strcmp(c->destination_rules[i].meta.name, name))
            return &c->destination_rules[i];
    return NULL;
}

static const wf_service_entry *se_named(const wf_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_service_entries; i++)
        if (!strcmp(c->service_entries[i].meta.name, name))
            return &c->service_entries[i];
    return NULL;
}

static const char *kv(const wf_kv *v, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].key, key))
            return v[i].value;
    return NULL;
}

/* ---- good configuration ---------------------------------------------------- */

TEST(good_directory_counts)
{
    wf_config *c = load1(D "good");

    if (!c)
        return;
    /* .hidden.yaml and README.txt are skipped; 03-weft.yml is read. */
    CHECK_INT(c->n_files, 3);
    CHECK_STR(c->files[0], D "good/01-networking.yaml");
    CHECK_STR(c->files[2], D "good/03-weft.yml");
    CHECK_INT(c->n_virtual_services, 2);
    CHECK_INT(c->n_destination_rules, 2);
    CHECK_INT(c->n_service_entries, 2);
    CHECK_INT(c->n_workload_entries, 1);
    CHECK_INT(c->n_gateways, 1);
    CHECK_INT(c->n_peer_authentications, 1);
    CHECK_INT(c->n_authorization_policies, 2);
    CHECK_INT(c->n_request_authentications, 1);
    CHECK_INT(c->n_filter_plugins, 1);
    CHECK(c->mesh.present);
    CHECK_INT(c->n_resources, 14);
    CHECK_INT(wf_config_count(c), 14);
    wf_config_free(c);
}

TEST(good_virtual_service_fields)
{
    wf_config *c = load1(D "good/01-networking.yaml");
    const wf_virtual_service *vs;
    const wf_http_route *r;
    const wf_http_match *m;

    if (!c)
        return;
    vs = vs_named(c, "prod", "reviews");
    CHECK(vs != NULL);
    if (!vs)
        goto out;
    CHECK_STR(vs->meta.api_version, "networking.istio.io/v1beta1");
    CHECK_STR(kv(vs->meta.labels, vs->meta.n_labels, "app"), "reviews");
    CHECK_STR(kv(vs->meta.annotations, vs->meta.n_annotations, "owner"), "team-a");
    CHECK_STR(vs->meta.pos.file, D "good/01-networking.yaml");
    CHECK_INT(vs->meta.pos.line, 3);
    CHECK_INT(vs->meta.pos.col, 1);
    CHECK_INT(vs->meta.name_pos.line, 6);
    CHECK_INT(vs->meta.name_pos.col, 9);
    CHECK_INT(vs->n_hosts, 2);
    CHECK_STR(vs->hosts[0], "reviews.prod.svc.cluster.local");
    CHECK_STR(vs->hosts_raw[0], "reviews");
    CHECK_STR(vs->hosts[1], "reviews.example.com");
    CHECK_INT(vs->n_gateways, 3);
    CHECK_STR(vs->gateways[0], "mesh");
    CHECK_STR(vs->gateways[1], "prod/public");
    CHECK_STR(vs->gateways_raw[1], "public");
    CHECK_STR(vs->gateways[2], "other/gw");
    CHECK_INT(vs->n_export_to, 1);
    CHECK_STR(vs->export_to[0], ".");
    CHECK_INT(vs->n_http, 5);
    CHECK_INT(vs->n_tls, 1);
    CHECK_INT(vs->n_tcp, 1);
    if (vs->n_http < 5 || vs->n_tls < 1 || vs->n_tcp < 1)
        goto out;

    r = &vs->http[0];
    CHECK_STR(r->name, "full");
    CHECK_INT(r->n_match, 1);
    m = &r->match[0];
    CHECK_STR(m->name, "m0");
    CHECK_INT(m->uri.kind, WF_SM_PREFIX);
    CHECK_STR(m->uri.value, "/api");
    CHECK_INT(m->scheme.kind, WF_SM_EXACT);
    CHECK_STR(m->scheme.value, "https");
    CHECK_INT(m->method.kind, WF_SM_EXACT);
    CHECK_INT(m->authority.kind, WF_SM_REGEX);
    CHECK_STR(m->authority.value, "api\\..*");
    CHECK_INT(m->n_headers, 2);
    CHECK_STR(m->headers[0].name, "x-user");
    CHECK_INT(m->headers[0].match.kind, WF_SM_EXACT);
    CHECK_STR(m->headers[0].match.value, "jason");
    CHECK_STR(m->headers[1].name, "x-present");
    CHECK_INT(m->headers[1].match.kind, WF_SM_NONE);
    CHECK_INT(m->n_without_headers, 1);
    CHECK_INT(m->without_headers[0].match.kind, WF_SM_PREFIX);
    CHECK_INT(m->n_query_params, 1);
    CHECK_INT(m->query_params[0].match.kind, WF_SM_REGEX);
    CHECK_INT(m->port, 9080);
    CHECK_STR(kv(m->source_labels, m->n_source_labels, "app"), "productpage");
    CHECK_STR(m->source_namespace, "front");
    CHECK_INT(m->n_gateways, 1);
    CHECK_STR(m->gateways[0], "prod/public");
    CHECK_INT(m->ignore_uri_case, 1);
    CHECK_STR(m->stat_prefix, "full0");

    CHECK_INT(r->n_route, 2);
    CHECK_STR(r->route[0].destination.host, "reviews.prod.svc.cluster.local");
    CHECK_STR(r->route[0].destination.host_raw, "reviews");
    CHECK_STR(r->route[0].destination.subset, "v1");
    CHECK_INT(r->route[0].destination.port, 9080);
    CHECK_INT(r->route[0].destination.subset_pos.line, 53);
    CHECK_INT(r->route[0].destination.subset_pos.col, 17);
    CHECK_INT(r->route[0].weight, 75);
    CHECK(r->route[0].headers != NULL);
    if (r->route[0].headers) {
        const wf_headers *h = r->route[0].headers;
        CHECK_STR(kv(h->request.set, h->request.n_set, "x-a"), "1");
        CHECK_STR(kv(h->request.add, h->request.n_add, "x-b"), "two");
        CHECK_INT(h->request.n_remove, 1);
        CHECK_STR(h->request.remove[0], "x-c");
        CHECK_INT(h->response.n_remove, 1);
        CHECK_STR(h->response.remove[0], "server");
    }
    CHECK_STR(r->route[1].destination.host, "reviews.other.svc.cluster.local");
    CHECK(r->route[1].destination.subset == NULL);
    CHECK_INT(r->route[1].destination.port, 0);
    CHECK_INT(r->route[1].weight, 25);
    CHECK(r->rewrite && r->rewrite->uri && !strcmp(r->rewrite->uri, "/v1/api"));
    CHECK(r->rewrite && r->rewrite->authority &&
          !strcmp(r->rewrite->authority, "reviews.internal"));
    CHECK_INT(r->timeout_ms, 1500);
    CHECK(r->retries != NULL);
    if (r->retries) {
        CHECK_INT(r->retries->attempts, 3);
        CHECK_INT(r->retries->per_try_timeout_ms, 1); /* 500us rounds up to 1ms */
        CHECK_STR(r->retries->retry_on, "gateway-error,connect-failure");
        CHECK_INT(r->retries->retry_remote_localities, 1);
        CHECK_INT(r->retries->retry_remote_localities_set, 1);
    }
    CHECK(r->fault && r->fault->delay && r->fault->abort);
    if (r->fault && r->fault->delay && r->fault->abort) {
        CHECK_INT(r->fault->delay->fixed_delay_ms, 120000);
        CHECK(r->fault->delay->percentage_set);
        CHECK(fabs(r->fault->delay->percentage - 12.5) < 1e-9);
        CHECK_INT(r->fault->delay->percent, -1);
        CHECK_INT(r->fault->abort->http_status, 503);
        CHECK(fabs(r->fault->abort->percentage - 0.1) < 1e-9);
        CHECK(r->fault->abort->grpc_status == NULL);
    }
    CHECK(r->mirror != NULL);
    if (r->mirror) {
        CHECK_STR(r->mirror->host, "shadow.prod.svc.cluster.local");
        CHECK_INT(r->mirror->port, 80);
    }
    CHECK(r->mirror_percentage_set);
    CHECK(fabs(r->mirror_percentage - 50) < 1e-9);
    CHECK(r->cors_policy != NULL);
    if (r->cors_policy) {
        const wf_cors_policy *cp = r->cors_policy;
        CHECK_INT(cp->n_allow_origins, 2);
        CHECK_INT(cp->allow_origins[0].kind, WF_SM_EXACT);
        CHECK_INT(cp->allow_origins[1].kind, WF_SM_REGEX);
        CHECK_INT(cp->n_allow_methods, 2);
        CHECK_STR(cp->allow_methods[1], "POST");
        CHECK_STR(cp->allow_headers[0], "x-a");
        CHECK_STR(cp->expose_headers[0], "x-b");
        CHECK_INT(cp->max_age_ms, 24LL * 3600 * 1000);
        CHECK_INT(cp->allow_credentials, 0);
        CHECK_INT(cp->allow_credentials_set, 1);
        CHECK_INT(cp->unmatched_preflights, WF_CORS_PREFLIGHT_IGNORE);
    }
    CHECK(r->headers && kv(r->headers->request.set, r->headers->request.n_set, "x-route"));

    r = &vs->http[1];
    CHECK(r->redirect != NULL);
    if (r->redirect) {
        CHECK_STR(r->redirect->uri, "/new");
        CHECK_STR(r->redirect->authority, "new.example.com");
        CHECK_INT(r->redirect->derive_port_set, 1);
        CHECK_INT(r->redirect->derive_port, WF_REDIRECT_PORT_FROM_REQUEST_PORT);
        CHECK_STR(r->redirect->scheme, "https");
        CHECK_INT(r->redirect->redirect_code, 308);
    }
    CHECK_INT(r->timeout_ms, -1);
    CHECK(r->retries == NULL);

    r = &vs->http[2];
    CHECK(r->direct_response != NULL);
    if (r->direct_response) {
        CHECK_INT(r->direct_response->status, 200);
        CHECK_INT(r->direct_response->has_body, 1);
        CHECK_STR(r->direct_response->body_string, "pong");
    }

    r = &vs->http[3];
    CHECK(r->delegate != NULL);
    if (r->delegate) {
        CHECK_STR(r->delegate->name, "ratings-routes");
        CHECK_STR(r->delegate->namespace_, "prod");
    }

    r = &vs->http[4];
    CHECK_INT(r->n_mirrors, 1);
    if (r->n_mirrors) {
        CHECK_STR(r->mirrors[0].destination.host, "shadow.prod.svc.cluster.local");
        CHECK_STR(r->mirrors[0].destination.subset, "v2");
        CHECK(fabs(r->mirrors[0].percentage - 5) < 1e-9);
    }
    CHECK(r->rewrite && r->rewrite->uri_regex_match &&
          !strcmp(r->rewrite->uri_regex_match, "^/service/([^/]+)(/.*)$"));
    CHECK(r->rewrite && r->rewrite->uri_regex_rewrite &&
          !strcmp(r->rewrite->uri_regex_rewrite, "\\2/instance/\\1"));
    /* A lone destination keeps weight 0 (unset); Istio reads it as 100. */
    CHECK_INT(r->route[0].weight, 0);

    CHECK_INT(vs->tls[0].n_match, 1);
    CHECK_STR(vs->tls[0].match[0].sni_hosts[0], "reviews.example.com");
    CHECK_INT(vs->tls[0].match[0].port, 443);
    CHECK_INT(vs->tls[0].route[0].destination.port, 9443);
    CHECK_STR(vs->tcp[0].match[0].source_subnet, "10.0.0.0/8");
    CHECK_INT(vs->tcp[0].match[0].port, 27017);
    CHECK_STR(vs->tcp[0].route[0].destination.host, "mongo.backend.svc.cluster.local");
    CHECK_INT(vs->tcp[0].route[0].weight, 100);

    /* The delegate has no hosts and that is fine. */
    vs = vs_named(c, "prod", "ratings-routes");
    CHECK(vs && vs->n_hosts == 0);
out:
    wf_config_free(c);
}

TEST(good_destination_rule_fields)
{
    wf_config *c = load1(D "good/01-networking.yaml");
    const wf_destination_rule *dr;
    const wf_traffic_policy *tp;

    if (!c)
        return;
    dr = dr_named(c, "reviews");
    CHECK(dr != NULL);
    if (!dr || !dr->traffic_policy)
        goto out;
    CHECK_STR(dr->host, "reviews.prod.svc.cluster.local");
    CHECK_STR(dr->host_raw, "reviews");
    CHECK_STR(dr->export_to[0], "*");
    CHECK(dr->workload_selector &&
          kv(dr->workload_selector->match_labels, dr->workload_selector->n_match_labels, "app"));
    tp = dr->traffic_policy;
    CHECK(tp->load_balancer && tp->load_balancer->consistent_hash);
    if (tp->load_balancer && tp->load_balancer->consistent_hash) {
        const wf_consistent_hash *h = tp->load_balancer->consistent_hash;
        CHECK_INT(tp->load_balancer->simple_set, 0);
        CHECK_INT(h->kind, WF_HASH_COOKIE);
        CHECK_STR(h->cookie_name, "session");
        CHECK_STR(h->cookie_path, "/");
        CHECK_INT(h->cookie_ttl_ms, 60000);
        CHECK_INT(h->use_ring_hash, 1);
        CHECK_INT(h->minimum_ring_size, 1024);
        CHECK_INT(h->maglev_table_size, -1);
        CHECK_INT(tp->load_balancer->warmup_duration_ms, 30000);
    }
    if (tp->load_balancer && tp->load_balancer->locality_lb_setting) {
        const wf_locality_lb *l = tp->load_balancer->locality_lb_setting;
        CHECK_INT(l->enabled, 1);
        CHECK_INT(l->enabled_set, 1);
        CHECK_INT(l->n_distribute, 1);
        CHECK_INT(l->distribute[0].n_to, 2);
        CHECK_STR(l->distribute[0].to[1].key, "us-west/zone2/*");
        CHECK_INT(l->distribute[0].to_weights[0], 80);
        CHECK_INT(l->distribute[0].to_weights[1], 20);
        CHECK_STR(l->failover[0].to, "eu-west");
        CHECK_STR(l->failover_priority[0], "topology.kubernetes.io/region");
    } else {
        CHECK(0);
    }
    CHECK(tp->connection_pool && tp->connection_pool->tcp && tp->connection_pool->http);
    if (tp->connection_pool && tp->connection_pool->tcp && tp->connection_pool->http) {
        const wf_tcp_pool *t = tp->connection_pool->tcp;
        const wf_http_pool *h = tp->connection_pool->http;
        CHECK_INT(t->max_connections, 100);
        CHECK_INT(t->connect_timeout_ms, 30);
        CHECK(t->tcp_keepalive && t->tcp_keepalive->probes == 3 &&
              t->tcp_keepalive->time_ms == 7200000 && t->tcp_keepalive->interval_ms == 75000);
        CHECK_INT(t->max_connection_duration_ms, 3600000);
        CHECK_INT(t->idle_timeout_ms, 300000);
        CHECK_INT(h->http1_max_pending_requests, 1024);
        CHECK_INT(h->http2_max_requests, 2048);
        CHECK_INT(h->max_requests_per_connection, 10);
        CHECK_INT(h->max_retries, 4);
        CHECK_INT(h->idle_timeout_ms, 60000);
        CHECK_INT(h->h2_upgrade_policy, WF_H2_UPGRADE);
        CHECK_INT(h->use_client_protocol, 1);
        CHECK_INT(h->max_concurrent_streams, 100);
    }
    CHECK(tp->outlier_detection != NULL);
    if (tp->outlier_detection) {
        const wf_outlier_detection *o = tp->outlier_detection;
        CHECK_INT(o->split_external_local_origin_errors, 1);
        CHECK_INT(o->consecutive_local_origin_failures, 2);
        CHECK_INT(o->consecutive_gateway_errors, 3);
        CHECK_INT(o->consecutive_5xx_errors, 5);
        CHECK_INT(o->consecutive_errors, -1);
        CHECK_INT(o->interval_ms, 10000);
        CHECK_INT(o->base_ejection_time_ms, 30000);
        CHECK_INT(o->max_ejection_percent, 40);
        CHECK_INT(o->min_health_percent, 20);
    }
    CHECK(tp->tls && tp->tls->mode == WF_CLIENT_TLS_ISTIO_MUTUAL);
    if (tp->tls) {
        CHECK_STR(tp->tls->sni, "reviews.prod");
        CHECK_STR(tp->tls->subject_alt_names[0], "spiffe://cluster.local/ns/prod/sa/reviews");
        CHECK_INT(tp->tls->insecure_skip_verify_set, 1);
        CHECK_INT(tp->tls->insecure_skip_verify, 0);
    }
    CHECK_INT(tp->n_port_level_settings, 2);
    if (tp->n_port_level_settings == 2) {
        CHECK_INT(tp->port_level_settings[0].port, 9080);
        CHECK(tp->port_level_settings[0].load_balancer &&
              tp->port_level_settings[0].load_balancer->simple == WF_LB_LEAST_REQUEST &&
              tp->port_level_settings[0].load_balancer->simple_set);
        CHECK_INT(tp->port_level_settings[1].port, 9443);
        CHECK(tp->port_level_settings[1].tls &&
              tp->port_level_settings[1].tls->mode == WF_CLIENT_TLS_SIMPLE);
    }
    CHECK(tp->tunnel && !strcmp(tp->tunnel->protocol, "CONNECT") &&
          !strcmp(tp->tunnel->target_host, "10.1.2.3") && tp->tunnel->target_port == 8443);
    CHECK(tp->proxy_protocol && tp->proxy_protocol->version == WF_PROXY_PROTOCOL_V2);
    CHECK_INT(dr->n_subsets, 2);
    if (dr->n_subsets == 2) {
        CHECK_STR(dr->subsets[0].name, "v1");
        CHECK_STR(kv(dr->subsets[0].labels, dr->subsets[0].n_labels, "version"), "v1");
        CHECK(dr->subsets[0].traffic_policy == NULL);
        CHECK(dr->subsets[1].traffic_policy && dr->subsets[1].traffic_policy->load_balancer &&
              dr->subsets[1].traffic_policy->load_balancer->simple == WF_LB_RANDOM);
    }
out:
    wf_config_free(c);
}

TEST(good_service_and_workload_entries)
{
    wf_config *c = load1(D "good/01-networking.yaml");
    const wf_service_entry *se;
    const wf_workload_entry *we;

    if (!c)
        return;
    se = se_named(c, "external-api");
    CHECK(se != NULL);
    if (se) {
        CHECK_STR(se->hosts[0], "api.example.com");
        CHECK_STR(se->addresses[0], "192.168.10.1/32");
        CHECK_INT(se->n_ports, 1);
        CHECK_INT(se->ports[0].number, 443);
        CHECK_STR(se->ports[0].name, "https");
        CHECK_STR(se->ports[0].protocol, "TLS");
        CHECK_INT(se->ports[0].target_port, 8443);
        CHECK_INT(se->location, WF_SE_MESH_EXTERNAL);
        CHECK_INT(se->resolution, WF_SE_RESOLUTION_DNS);
        CHECK_STR(se->export_to[0], ".");
        CHECK_STR(se->subject_alt_names[0], "api.example.com");
        CHECK_INT(se->n_endpoints, 1);
        if (se->n_endpoints) {
            const wf_workload_entry_spec *ep = &se->endpoints[0];
            CHECK_STR(ep->address, "127.0.0.1");
            CHECK_INT(ep->n_ports, 1);
            CHECK_STR(ep->ports[0].key, "https");
            CHECK_INT(ep->port_numbers[0], 18443);
            CHECK_STR(ep->network, "net1");
            CHECK_STR(ep->locality, "us-east/a");
            CHECK_INT(ep->weight, 3);
            CHECK_STR(ep->service_account, "api");
        }
    }
    se = se_named(c, "vm-reviews");
    CHECK(se && se->location == WF_SE_MESH_INTERNAL && se->resolution == WF_SE_RESOLUTION_STATIC);
    CHECK(se && se->workload_selector &&
          kv(se->workload_selector->match_labels, se->workload_selector->n_match_labels, "app"));
    CHECK_INT(c->n_workload_entries, 1);
    if (c->n_workload_entries) {
        we = &c->workload_entries[0];
        CHECK_STR(we->meta.name, "reviews-vm-1");
        CHECK_STR(we->spec.address, "10.0.0.7");
        CHECK_INT(we->spec.n_ports, 2);
        CHECK_INT(we->spec.port_numbers[1], 19090);
        CHECK_STR(we->spec.network, "vm-net");
        CHECK_STR(we->spec.locality, "us-east/zone-a");
        CHECK_INT(we->spec.weight, 5);
        CHECK_STR(we->spec.service_account, "reviews");
        CHECK_INT(we->spec.pos.line, 331);
    }
    wf_config_free(c);
}

TEST(good_gateway_fields)
{
    wf_config *c = load1(D "good/01-networking.yaml");
    const wf_server *s;

    if (!c)
        return;
    CHECK_INT(c->n_gateways, 1);
    if (!c->n_gateways || c->gateways[0].n_servers != 1)
        goto out;
    CHECK_STR(kv(c->gateways[0].selector, c->gateways[0].n_selector, "istio"), "ingressgateway");
    s = &c->gateways[0].servers[0];
    CHECK_INT(s->port.number, 443);
    CHECK_STR(s->port.name, "https");
    CHECK_STR(s->port.protocol, "HTTPS");
    CHECK_INT(s->port.target_port, 8443);
    CHECK_STR(s->bind, "0.0.0.0");
    CHECK_STR(s->hosts[0], "prod/*.example.com");
    CHECK_STR(s->name, "https-server");
    CHECK_STR(s->default_endpoint, "127.0.0.1:8080");
    CHECK(s->tls != NULL);
    if (s->tls) {
        CHECK_INT(s->tls->mode, WF_SERVER_TLS_MUTUAL);
        CHECK_STR(s->tls->credential_name, "example-cert");
        CHECK_INT(s->tls->min_protocol_version, WF_TLSV1_2);
        CHECK_INT(s->tls->max_protocol_version, WF_TLSV1_3);
        CHECK_STR(s->tls->cipher_suites[0], "ECDHE-ECDSA-AES128-GCM-SHA256");
        CHECK_INT(s->tls->https_redirect, 0);
    }
out:
    wf_config_free(c);
}

TEST(good_security_fields)
{
    wf_config *c = load1(D "good/02-security.yaml");
    const wf_peer_authentication *pa;
    const wf_authorization_policy *ap;
    const wf_request_authentication *ra;

    if (!c)
        return;
    CHECK_INT(c->n_peer_authentications, 1);
    CHECK_INT(c->n_authorization_policies, 2);
    CHECK_INT(c->n_request_authentications, 1);
    if (!c->n_peer_authentications || c->n_authorization_policies != 2 ||
        !c->n_request_authentications)
        goto out;
    pa = &c->peer_authentications[0];
    CHECK(pa->selector && pa->selector->n_match_labels == 1);
    CHECK_INT(pa->mtls_set, 1);
    CHECK_INT(pa->mtls_mode, WF_MTLS_STRICT);
    CHECK_INT(pa->n_port_level_mtls, 2);
    if (pa->n_port_level_mtls == 2) {
        CHECK_INT(pa->port_level_mtls[0].port, 9080);
        CHECK_INT(pa->port_level_mtls[0].mode, WF_MTLS_PERMISSIVE);
        CHECK_INT(pa->port_level_mtls[1].port, 9443);
        CHECK_INT(pa->port_level_mtls[1].mode, WF_MTLS_DISABLE);
    }
    ap = &c->authorization_policies[0];
    CHECK_INT(ap->action, WF_AUTHZ_DENY);
    CHECK_INT(ap->n_rules, 1);
    if (ap->n_rules == 1) {
        const wf_authz_rule *r = &ap->rules[0];
        CHECK_INT(r->n_from, 2);
        CHECK_INT(r->n_to, 1);
        CHECK_INT(r->n_when, 1);
        if (r->n_from == 2 && r->n_to == 1 && r->n_when == 1) {
            CHECK_STR(r->from[0].principals[0], "cluster.local/ns/prod/sa/productpage");
            CHECK_STR(r->from[0].not_namespaces[0], "test");
            CHECK_STR(r->from[0].ip_blocks[0], "10.0.0.0/8");
            CHECK_STR(r->from[1].request_principals[0], "*");
            CHECK_INT(r->to[0].n_methods, 2);
            CHECK_STR(r->to[0].paths[0], "/reviews/*");
            CHECK_STR(r->to[0].not_ports[0], "9999");
            CHECK_STR(r->when[0].key, "request.headers[x-version]");
            CHECK_INT(r->when[0].n_values, 2);
            CHECK_STR(r->when[0].not_values[0], "v0");
        }
    }
    ap = &c->authorization_policies[1];
    CHECK_INT(ap->action, WF_AUTHZ_CUSTOM);
    CHECK_STR(ap->provider_name, "my-ext-authz");
    CHECK_INT(ap->n_target_refs, 1);
    if (ap->n_target_refs == 1) {
        CHECK_STR(ap->target_refs[0].kind, "Gateway");
        CHECK_STR(ap->target_refs[0].group, "gateway.networking.k8s.io");
        CHECK_STR(ap->target_refs[0].name, "public");
    }
    CHECK_INT(ap->n_rules, 1);
    ra = &c->request_authentications[0];
    CHECK_INT(ra->n_jwt_rules, 1);
    if (ra->n_jwt_rules == 1) {
        const wf_jwt_rule *j = &ra->jwt_rules[0];
        CHECK_STR(j->issuer, "https://issuer.example.com");
        CHECK_INT(j->n_audiences, 2);
        CHECK_STR(j->jwks_uri, "https://issuer.example.com/jwks.json");
        CHECK_INT(j->n_from_headers, 1);
        CHECK_STR(j->from_headers[0].prefix, "Bearer ");
        CHECK_STR(j->from_params[0], "access_token");
        CHECK_STR(j->from_cookies[0], "session");
        CHECK_STR(j->output_payload_to_header, "x-jwt-payload");
        CHECK_INT(j->forward_original_token, 1);
        CHECK_STR(j->output_claim_to_headers[0].claim, "sub");
        CHECK_INT(j->timeout_ms, 5000);
    }
out:
    wf_config_free(c);
}

TEST(good_mesh_and_plugin)
{
    wf_config *c = load1(D "good/03-weft.yml");
    const wf_mesh_config *m;
    const wf_filter_plugin *p;
    json_t *j;

    if (!c)
        return;
    m = &c->mesh;
    CHECK_INT(m->present, 1);
    CHECK_STR(m->meta.name, "mesh");
    CHECK_STR(m->trust_domain, "example.org");
    CHECK_STR(m->root_namespace, "mesh-root");
    CHECK_STR(m->access_log_file, "/dev/stdout");
    CHECK_INT(m->access_log_encoding, WF_ACCESS_LOG_JSON);
    CHECK_STR(m->access_log_format, "%REQ(:METHOD)% %RESPONSE_CODE%");
    CHECK_INT(m->enable_tracing, 1);
    CHECK(fabs(m->tracing_sampling - 25.5) < 1e-9);
    CHECK_INT(m->max_path_tag_length, 128);
    CHECK_STR(m->zipkin_address, "127.0.0.1:9411");
    CHECK_INT(m->n_custom_tags, 3);
    if (m->n_custom_tags == 3) {
        CHECK_STR(m->custom_tags[0].tag, "env_tag");
        CHECK_INT(m->custom_tags[0].kind, WF_TAG_ENVIRONMENT);
        CHECK_STR(m->custom_tags[0].value, "POD_NAME");
        CHECK_STR(m->custom_tags[0].default_value, "unknown");
        CHECK_INT(m->custom_tags[1].kind, WF_TAG_LITERAL);
        CHECK_STR(m->custom_tags[1].value, "v1");
        CHECK_INT(m->custom_tags[2].kind, WF_TAG_HEADER);
        CHECK_STR(m->custom_tags[2].value, "x-request-id");
        CHECK(m->custom_tags[2].default_value == NULL);
    }
    CHECK_INT(m->outbound_mode, WF_OUTBOUND_REGISTRY_ONLY);
    CHECK_INT(m->n_filter_chain, 3);
    if (m->n_filter_chain == 3) {
        CHECK_STR(m->filter_chain[0], "metrics");
        CHECK_STR(m->filter_chain[2], "router");
    }

    CHECK_INT(c->n_filter_plugins, 1);
    if (!c->n_filter_plugins)
        goto out;
    p = &c->filter_plugins[0];
    CHECK_STR(p->module, "example");
    CHECK_INT(p->phase, WF_PHASE_AUTHZ);
    CHECK_INT(p->priority, -5);
    CHECK(p->selector && p->selector->n_match_labels == 1);
    j = p->plugin_config;
    CHECK(json_is_object(j));
    CHECK(json_is_integer(json_object_get(j, "int")) &&
          json_integer_value(json_object_get(j, "int")) == 42);
    CHECK(json_integer_value(json_object_get(j, "neg")) == -7);
    CHECK(json_is_real(json_object_get(j, "float")) &&
          json_real_value(json_object_get(j, "float")) == 2.5);
    CHECK(json_is_true(json_object_get(j, "yes")));
    CHECK(json_is_false(json_object_get(j, "no")));
    CHECK(json_is_string(json_object_get(j, "quoted_int")) &&
          !strcmp(json_string_value(json_object_get(j, "quoted_int")), "42"));
    CHECK(json_is_string(json_object_get(j, "quoted_bool")));
    CHECK(json_is_null(json_object_get(j, "nothing")));
    CHECK(json_is_array(json_object_get(j, "list")) &&
          json_array_size(json_object_get(j, "list")) == 3);
    CHECK(json_is_string(json_array_get(json_object_get(j, "list"), 1)));
    CHECK(json_is_string(json_object_get(json_object_get(json_object_get(j, "nested"), "a"), "b")));
out:
    wf_config_free(c);
}

TEST(defaults)
{
    wf_diags d = {0};
    wf_config *c = load_text("apiVersion: networking.istio.io/v1\n"
                             "kind: ServiceEntry\n"
                             "metadata: {name: se}\n"
                             "spec:\n"
                             "  hosts: [a.example.com]\n"
                             "  ports: [{number: 80, name: http}]\n"
                             "  endpoints: [{address: 127.0.0.1}]\n"
                             "---\n"
                             "apiVersion: networking.istio.io/v1\n"
                             "kind: DestinationRule\n"
                             "metadata: {name: dr}\n"
                             "spec: {host: a.example.com}\n"
                             "---\n"
                             "apiVersion: networking.istio.io/v1\n"
                             "kind: WorkloadEntry\n"
                             "metadata: {name: we}\n"
                             "spec: {address: 10.0.0.1}\n"
                             "---\n"
                             "apiVersion: networking.istio.io/v1\n"
                             "kind: VirtualService\n"
                             "metadata: {name: vs}\n"
                             "spec:\n"
                             "  hosts: [a.example.com]\n"
                             "  http:\n"
                             "  - redirect: {uri: /x}\n"
                             "    fault: {abort: {httpStatus: 500}}\n"
                             "---\n"
                             "apiVersion: weft.io/v1alpha1\n"
                             "kind: FilterPlugin\n"
                             "metadata: {name: fp}\n"
                             "spec: {module: example}\n",
                             &d);

    CHECK(c != NULL);
    wf_diags_print(&d, stderr);
    wf_diags_free(&d);
    if (!c)
        return;
    CHECK_INT(c->n_service_entries, 1);
    CHECK_STR(c->service_entries[0].meta.namespace_, "default");
    CHECK_INT(c->service_entries[0].location, WF_SE_MESH_EXTERNAL);
    CHECK_INT(c->service_entries[0].resolution, WF_SE_RESOLUTION_NONE);
    CHECK(c->service_entries[0].ports[0].protocol == NULL);
    CHECK_INT(c->service_entries[0].endpoints[0].weight, 0);
    CHECK_INT(c->n_destination_rules, 1);
    CHECK(c->destination_rules[0].traffic_policy == NULL);
    CHECK_INT(c->destination_rules[0].n_subsets, 0);
    CHECK_STR(c->destination_rules[0].host, "a.example.com");
    CHECK_INT(c->workload_entries[0].spec.weight, 0);
    CHECK_INT(c->n_virtual_services, 1);
    if (c->n_virtual_services && c->virtual_services[0].n_http) {
        const wf_http_route *r = &c->virtual_services[0].http[0];
        CHECK(r->redirect && r->redirect->redirect_code == 301 && !r->redirect->derive_port_set);
        CHECK_INT(r->timeout_ms, -1);
        CHECK(r->fault && r->fault->abort && !r->fault->abort->percentage_set);
        CHECK(r->fault && !r->fault->delay);
        CHECK_INT(r->mirror_percentage_set, 0);
    }
    CHECK_INT(c->filter_plugins[0].phase, WF_PHASE_UNSPECIFIED);
    CHECK_INT(c->filter_plugins[0].priority, 0);
    CHECK(c->filter_plugins[0].plugin_config == NULL);
    CHECK(c->filter_plugins[0].selector == NULL);
    /* No MeshConfig: every mesh default is filled. */
    CHECK_INT(c->mesh.present, 0);
    CHECK_STR(c->mesh.trust_domain, "cluster.local");
    CHECK_STR(c->mesh.root_namespace, "istio-system");
    CHECK_STR(c->mesh.access_log_file, "");
    CHECK_INT(c->mesh.access_log_encoding, WF_ACCESS_LOG_TEXT);
    CHECK(c->mesh.access_log_format == NULL);
    CHECK_INT(c->mesh.enable_tracing, 0);
    CHECK(fabs(c->mesh.tracing_sampling - 1.0) < 1e-9);
    CHECK(c->mesh.zipkin_address == NULL);
    CHECK_INT(c->mesh.outbound_mode, WF_OUTBOUND_ALLOW_ANY);
    CHECK_INT(c->mesh.n_filter_chain, 1);
    CHECK_STR(c->mesh.filter_chain[0], "router");
    CHECK_INT(c->n_resources, 5);
    wf_config_free(c);
}

TEST(mesh_defaults_with_partial_meshconfig)
{
    wf_diags d = {0};
    wf_config *c = load_text("apiVersion: weft.io/v1alpha1\n"
                             "kind: MeshConfig\n"
                             "spec: {enableTracing: true}\n",
                             &d);

    CHECK(c != NULL);
    wf_diags_free(&d);
    if (!c)
        return;
    CHECK_INT(c->mesh.present, 1);
    CHECK_STR(c->mesh.meta.name, "default");
    CHECK_INT(c->mesh.enable_tracing, 1);
    CHECK_STR(c->mesh.trust_domain, "cluster.local");
    CHECK(fabs(c->mesh.tracing_sampling - 1.0) < 1e-9);
    CHECK_INT(c->mesh.n_filter_chain, 1);
    CHECK_STR(c->mesh.filter_chain[0], "router");
    CHECK_INT(c->mesh.max_path_tag_length, -1);
    wf_config_free(c);
}

TEST(host_resolution)
{
    char *h;

    h = wf_config_resolve_host("reviews", "prod");
    CHECK_STR(h, "reviews.prod.svc.cluster.local");
    free(h);
    h = wf_config_resolve_host("reviews.prod", "default");
    CHECK_STR(h, "reviews.prod");
    free(h);
    h = wf_config_resolve_host("*", "default");
    CHECK_STR(h, "*");
    free(h);
    h = wf_config_resolve_host("*.example.com", "default");
    CHECK_STR(h, "*.example.com");
    free(h);
}

TEST(durations)
{
    static const struct {
        const char *s;
        int64_t ms;
    } ok[] = {{"1.5s", 1500},   {"100ms", 100}, {"2m", 120000},     {"1h", 3600000},
              {"500us", 1},     {"0s", 0},      {"0", 0},           {"1h30m", 5400000},
              {"1500000ns", 2}, {"0.25s", 250}, {"10\xc2\xb5s", 1}, {"3000ms", 3000}};
    static const char *const bad[] = {
        "", "1.5", "10", "s", "1sec", "-1s", "1.s5", "1 s", "99999999999999999999h", "1d"};
    char err[256];
    int64_t ms;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ms = -7;
        CHECK_INT(wf_duration_parse(ok[i].s, &ms, err, sizeof(err)), 0);
        CHECK_INT(ms, ok[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (wf_duration_parse(bad[i], &ms, err, sizeof(err)) != -1) {
            fprintf(stderr, "duration \"%s\" accepted\n", bad[i]);
            test_current_failed = 1;
        }
    }
    wf_duration_parse("1sec", &ms, err, sizeof(err));
    CHECK_STR(err, "invalid duration \"1sec\": expected a number and a unit (h, m, s, ms, us, "
                   "ns), such as \"1.5s\", \"100ms\" or \"2m\"");
}

TEST(regexes)
{
    static const char *const ok[] = {
        "^/api/v[0-9]+$", "(?i)foo",  "a|b",          "[(?=]", "\\(?!x\\)",
        "(?P<name>x)",    "\\d{2,3}", "[[:alpha:]]+", "x*?",   ".*"};
    static const char *const bad[] = {"(a",      "(a)\\1",    "(?=x)",  "(?!x)", "(?<=x)y",
                                      "(?<!x)y", "(?>x)",     "a++",    "x*+",   "(?R)",
                                      "(*ANY)a", "(?(1)a|b)", "\\k<n>", "["};
    char err[512];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (wf_regex_check(ok[i], err, sizeof(err)) != 0) {
            fprintf(stderr, "regex \"%s\" refused: %s\n", ok[i], err);
            test_current_failed = 1;
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (wf_regex_check(bad[i], err, sizeof(err)) != -1) {
            fprintf(stderr, "regex \"%s\" accepted\n", bad[i]);
            test_current_failed = 1;
        }
    }
}

TEST(multi_document_and_yaml_details)
{
    wf_diags d = {0};
    /* Leading "---", an empty document, comments, an anchor and alias, a
     * flow map, a !!str tag and a quoted number where a string is wanted. */
    wf_config *c = load_text("---\n"
                             "---\n"
                             "# nothing\n"
                             "---\n"
                             "apiVersion: networking.istio.io/v1\n"
                             "kind: WorkloadEntry\n"
                             "metadata:\n"
                             "  name: we1\n"
                             "  labels: &l {app: x, version: \"1\"}\n"
                             "spec: {address: !!str 10.0.0.1, labels: *l}\n"
                             "...\n"
                             "---\n"
                             "apiVersion: networking.istio.io/v1\n"
                             "kind: WorkloadEntry\n"
                             "metadata: {name: we2}\n"
                             "spec:\n"
                             "  labels: {n: !!str 1}\n",
                             &d);

    CHECK(c != NULL);
    wf_diags_print(&d, stderr);
    wf_diags_free(&d);
    if (!c)
        return;
    CHECK_INT(c->n_workload_entries, 2);
    if (c->n_workload_entries == 2) {
        const wf_workload_entry *we = &c->workload_entries[0];
        CHECK_INT(we->spec.n_labels, 2);
        CHECK_STR(kv(we->spec.labels, we->spec.n_labels, "version"), "1");
        CHECK_STR(we->spec.address, "10.0.0.1");
        CHECK_STR(kv(c->workload_entries[1].spec.labels, c->workload_entries[1].spec.n_labels, "n"),
                  "1");
    }
    wf_config_free(c);
}

TEST(several_paths_in_order)
{
    const char *paths[] = {D "good/03-weft.yml", D "good/02-security.yaml"};
    wf_config *c = load_paths(paths, 2);

    if (!c)
        return;
    CHECK_INT(c->n_files, 2);
    CHECK_STR(c->files[0], D "good/03-weft.yml");
    CHECK_INT(c->n_resources, 6);
    wf_config_free(c);
}

/* ---- bad configuration: exact lines --------------------------------------- */

TEST(bad_malformed_yaml)
{
    static const char *const want[] = {
        D "bad/malformed.yaml:5:2: -: -: invalid YAML: did not find expected key (while parsing "
          "a block mapping at line 1 column 1)",
        NULL};
    expect1(D "bad/malformed.yaml", want);
}

TEST(bad_wrong_types)
{
#define F D "bad/wrong_types.yaml:"
    static const char *const want[] = {
        F "5:11: VirtualService/default/types: metadata.labels: expected a map, got a list",
        F "7:10: VirtualService/default/types: spec.hosts: expected a list, got a string",
        F "9:5: VirtualService/default/types: spec.http: expected a list, got a map",
        F "19:22: VirtualService/default/types2: spec.http[0].match[0].ignoreUriCase: expected a "
          "boolean (true or false), got a string",
        F "20:13: VirtualService/default/types2: spec.http[0].match[0].port: expected an "
          "integer, got a string",
        F "21:12: VirtualService/default/types2: spec.http[0].match[0].uri: expected a map with "
          "one of exact, prefix or regex, got a string",
        F "24:15: VirtualService/default/types2: spec.http[0].route[0].destination.host: "
          "expected a string, got an integer (quote it: \"42\")",
        F "25:15: VirtualService/default/types2: spec.http[0].route[0].weight: expected an "
          "integer, got a string",
        F "26:14: VirtualService/default/types2: spec.http[0].timeout: expected a string, got "
          "an integer (quote it: \"10\")",
        F "35:5: DestinationRule/default/types3: spec.subsets: expected a list, got a map",
        F "38:27: DestinationRule/default/types3: spec.trafficPolicy.outlierDetection."
          "maxEjectionPercent: expected an integer, got a number",
        NULL};
#undef F
    expect1(D "bad/wrong_types.yaml", want);
}

TEST(bad_unknown_fields)
{
#define F D "bad/unknown_fields.yaml:"
    static const char *const want[] = {
        F "5:3: VirtualService/default/typos: metadata.namespce: unknown field \"namespce\"; did "
          "you mean \"namespace\"?",
        F "7:3: VirtualService/default/typos: spec.hostz: unknown field \"hostz\"; did you mean "
          "\"hosts\"?",
        F "7:3: VirtualService/default/typos: spec.hosts: required field is missing (only a "
          "VirtualService used as a delegate may leave out hosts)",
        F "9:5: VirtualService/default/typos: spec.http[0].rout: unknown field \"rout\"; did you "
          "mean \"route\"?",
        F "9:5: VirtualService/default/typos: spec.http[0]: one of route, redirect, "
          "directResponse or delegate is required",
        F "14:9: VirtualService/default/typos: spec.http[0].match[0].uri.prefx: unknown field "
          "\"prefx\"; did you mean \"prefix\"?",
        F "15:7: VirtualService/default/typos: spec.http[0].match[0].frobnicate: unknown field "
          "\"frobnicate\" (known fields: name, uri, scheme, method, authority, headers, "
          "withoutHeaders, queryParams, port, sourceLabels, gateways, sourceNamespace, "
          "ignoreUriCase, statPrefix)",
        F "16:1: VirtualService/default/typos: specs: unknown field \"specs\"; did you mean "
          "\"spec\"?",
        NULL};
#undef F
    expect1(D "bad/unknown_fields.yaml", want);
}

TEST(bad_enums)
{
#define F D "bad/bad_enums.yaml:"
    static const char *const want[] = {
        F "9:15: DestinationRule/default/enums: spec.trafficPolicy.loadBalancer.simple: invalid "
          "value \"round_robin\"; allowed values: UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, "
          "ROUND_ROBIN, LEAST_REQUEST",
        F "11:13: DestinationRule/default/enums: spec.trafficPolicy.tls.mode: invalid value "
          "\"MUTUAL_TLS\"; allowed values: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",
        F "22:15: ServiceEntry/default/enums: spec.ports[0].protocol: invalid value \"HTTPX\"; "
          "allowed values: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, MYSQL, REDIS, TCP, TLS, UDP",
        F "23:13: ServiceEntry/default/enums: spec.location: invalid value \"EXTERNAL\"; allowed "
          "values: MESH_EXTERNAL, MESH_INTERNAL",
        F "24:15: ServiceEntry/default/enums: spec.resolution: expected one of NONE, STATIC, DNS, "
          "DNS_ROUND_ROBIN, got an integer",
        F "32:11: PeerAuthentication/default/enums: spec.mtls.mode: invalid value \"strict\"; "
          "allowed values: UNSET, DISABLE, PERMISSIVE, STRICT",
        NULL};
#undef F
    expect1(D "bad/bad_enums.yaml", want);
}

TEST(bad_duplicates_across_files)
{
    static const char *const paths[] = {D "bad/duplicates-a.yaml", D "bad/duplicates-b.yaml"};
    static const char *const want[] = {
        D "bad/duplicates-b.yaml:5:9: VirtualService/default/reviews: metadata.name: duplicate "
          "VirtualService default/reviews (first defined at " D "bad/duplicates-a.yaml:4:9)",
        NULL};
    wf_config *c;

    expect_paths(paths, 2, want);
    /* Each file alone is fine: same name in another namespace or kind. */
    c = load1(D "bad/duplicates-a.yaml");
    CHECK(c && c->n_virtual_services == 2 && c->n_destination_rules == 1);
    wf_config_free(c);
}

TEST(bad_dangling_references)
{
#define F D "bad/dangling.yaml:"
    static const char *const want[] = {
        F "15:17: VirtualService/default/reviews: spec.http[0].route[1].destination.subset: "
          "subset \"v3\" is not defined by any DestinationRule for host "
          "reviews.default.svc.cluster.local",
        F "19:15: VirtualService/default/reviews: spec.http[0].mirror.subset: subset \"v9\" is "
          "not defined by any DestinationRule for host reviews.default.svc.cluster.local",
        F "24:7: VirtualService/default/reviews: spec.http[1].delegate: delegate VirtualService "
          "prod/ratings-routes is not defined",
        F "43:11: DestinationRule/default/reviews: spec.subsets[2].name: subset \"v1\" is "
          "defined twice (first at line 39 column 11)",
        NULL};
#undef F
    expect1(D "bad/dangling.yaml", want);
}

TEST(bad_missing_required)
{
#define F D "bad/required.yaml:"
    static const char *const want[] = {
        F "4:3: VirtualService/default/-: metadata.name: required field is missing",
        F "10:9: VirtualService/default/-: spec.http[0].route[0].destination.host: required "
          "field is missing",
        F "17:3: VirtualService/default/no-hosts: spec.hosts: required field is missing (only a "
          "VirtualService used as a delegate may leave out hosts)",
        F "27:3: DestinationRule/default/no-host: spec.host: required field is missing",
        F "28:5: DestinationRule/default/no-host: spec.subsets[0].name: required field is "
          "missing",
        F "35:3: ServiceEntry/default/no-hosts-no-ports: spec.hosts: required field is missing",
        F "35:3: ServiceEntry/default/no-hosts-no-ports: spec.ports: required field is missing",
        F "44:5: VirtualService/default/no-action: spec.http[0]: one of route, redirect, "
          "directResponse or delegate is required",
        NULL};
#undef F
    expect1(D "bad/required.yaml", want);
}

TEST(bad_weights)
{
#define F D "bad/weights.yaml:"
    static const char *const want[] = {
        F "9:5: VirtualService/default/weights: spec.http[0].route: weights add up to 110; with "
          "more than one weighted destination they must add up to 100",
        F "18:15: VirtualService/default/weights: spec.http[1].route[0].weight: weight -10 is "
          "negative; weights are percentages 0..100",
        F "21:15: VirtualService/default/weights: spec.http[1].route[1].weight: weight 110 is "
          "over 100; weights are percentages 0..100",
        F "31:5: VirtualService/default/weights: spec.tcp[0].route: weights add up to 90; with "
          "more than one weighted destination they must add up to 100",
        NULL};
#undef F
    expect1(D "bad/weights.yaml", want);
}

TEST(bad_regexes)
{
#define F D "bad/regex.yaml:"
    static const char *const want[] = {
        F "10:16: VirtualService/default/regexes: spec.http[0].match[0].uri.regex: invalid regex "
          "\"/api/(v1\": missing closing parenthesis at offset 8",
        F "12:16: VirtualService/default/regexes: spec.http[0].match[1].uri.regex: invalid regex "
          "\"(a+)\\1\": backreferences (\\1) are not supported (Istio regexes are RE2 syntax)",
        F "15:18: VirtualService/default/regexes: spec.http[0].match[2].headers.x-id.regex: "
          "invalid regex \"foo(?=bar)\": lookahead (?=...) and (?!...) are not supported (Istio "
          "regexes are RE2 syntax)",
        F "17:16: VirtualService/default/regexes: spec.http[0].match[3].authority.regex: invalid "
          "regex \"(?<!www\\.)example\\.com\": lookbehind (?<=...) and (?<!...) are not supported "
          "(Istio regexes are RE2 syntax)",
        NULL};
#undef F
    expect1(D "bad/regex.yaml", want);
}

TEST(bad_ports)
{
#define F D "bad/ports.yaml:"
    static const char *const want[] = {
        F "8:13: ServiceEntry/default/ports: spec.ports[0].number: port 0 is out of range "
          "1..65535",
        F "10:13: ServiceEntry/default/ports: spec.ports[1].number: port 65536 is out of range "
          "1..65535",
        F "12:13: ServiceEntry/default/ports: spec.ports[2].number: port -80 is out of range "
          "1..65535",
        F "16:17: ServiceEntry/default/ports: spec.ports[3].targetPort: port 100000 is out of "
          "range 1..65535",
        F "20:14: ServiceEntry/default/ports: spec.endpoints[0].ports.https: port 70000 is out of "
          "range 1..65535",
        NULL};
#undef F
    expect1(D "bad/ports.yaml", want);
}

TEST(bad_durations)
{
#define F D "bad/durations.yaml:"
#define WHY                                                                                        \
    "expected a number and a unit (h, m, s, ms, us, ns), such as \"1.5s\", \"100ms\" or \"2m\""
    static const char *const want[] = {
        F "11:14: VirtualService/default/durations: spec.http[0].timeout: invalid duration "
          "\"1.5\": " WHY,
        F "14:22: VirtualService/default/durations: spec.http[0].retries.perTryTimeout: invalid "
          "duration \"1sec\": " WHY,
        F "18:14: VirtualService/default/durations: spec.http[1].timeout: invalid duration "
          "\"-1s\": must not be negative",
        F "22:14: VirtualService/default/durations: spec.http[2].timeout: invalid duration "
          "\"\": " WHY,
        NULL};
#undef WHY
#undef F
    expect1(D "bad/durations.yaml", want);
}

TEST(bad_kinds_and_api_versions)
{
#define F D "bad/kinds.yaml:"
    static const char *const want[] = {
        F "2:7: -: kind: unknown kind \"VirtualServise\"; known kinds: VirtualService, "
          "DestinationRule, ServiceEntry, WorkloadEntry, Gateway, PeerAuthentication, "
          "AuthorizationPolicy, RequestAuthentication, MeshConfig, FilterPlugin",
        F "6:13: VirtualService/default/b: apiVersion: unknown apiVersion "
          "\"networking.istio.io/v2\" for kind VirtualService; use one of: "
          "networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3",
        F "17:13: DestinationRule/default/c: apiVersion: unknown apiVersion "
          "\"security.istio.io/v1\" for kind DestinationRule; use one of: networking.istio.io/v1, "
          "networking.istio.io/v1beta1, networking.istio.io/v1alpha3",
        F "24:1: -: kind: required field is missing",
        F "27:1: -: -: expected a resource (a map with apiVersion, kind, metadata and spec), got "
          "a list",
        F "30:1: -: -: expected a resource (a map with apiVersion, kind, metadata and spec), got "
          "a string",
        NULL};
#undef F
    expect1(D "bad/kinds.yaml", want);
}

TEST(bad_second_meshconfig)
{
#define F D "bad/mesh2.yaml:"
    static const char *const want[] = {
        F "9:9: MeshConfig/default/second: metadata.name: duplicate MeshConfig: only one is "
          "allowed (the first is at " D "bad/mesh2.yaml:1:1)",
        F "14:17: MeshConfig/default/second: spec.defaultConfig.tracing.sampling: percentage 101 "
          "is out of range 0..100",
        F "15:25: MeshConfig/default/second: spec.filterChain[1]: module \"router\" is listed "
          "twice (also at filterChain[0])",
        NULL};
#undef F
    expect1(D "bad/mesh2.yaml", want);
}

TEST(bad_unreadable_path)
{
    static const char *const want[] = {
        D "no-such-file.yaml: -: -: cannot read: No such file or directory", NULL};
    expect1(D "no-such-file.yaml", want);
}

/* Small cases written inline; the expected text follows "path:". */
TEST(bad_inline_cases)
{
    expect_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
        "spec:\n  hosts: [a]\n  hosts: [b]\n  http: [{route: [{destination: {host: a}}]}]\n",
        "6:3: VirtualService/default/x: spec.hosts: duplicate key \"hosts\" (first at "
        "line 5 column 3)");
    expect_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: X_Y}\n"
                "spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n",
                "3:18: VirtualService/default/X_Y: metadata.name: invalid name \"X_Y\": use "
                "lower-case letters, digits, '-' and '.', starting and ending with a letter or "
                "digit");
    expect_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
                "spec: {hosts: [a], http: [{route: [{destination: {host: a}}], "
                "fault: {abort: {percentage: {value: 10}}}}]}\n",
                "4:78: VirtualService/default/x: spec.http[0].fault.abort: one of httpStatus, "
                "grpcStatus or http2Error is required");
    expect_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
                "spec: {hosts: [\"http://a\"], http: [{route: [{destination: {host: a}}]}]}\n",
                "4:16: VirtualService/default/x: spec.hosts[0]: invalid host \"http://a\": a host "
                "is a DNS name, optionally with a leading \"*.\" wildcard (no scheme, path or "
                "port)");
    expect_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\n"
                "spec:\n  hosts: [a.b]\n  ports: [{number: 80, name: http}]\n"
                "  resolution: STATIC\n  endpoints: [{address: 1.2.3.4, ports: {grpc: 9000}}]\n",
                "8:42: ServiceEntry/default/x: spec.endpoints[0].ports.grpc: endpoint port "
                "\"grpc\" is not one of the ServiceEntry's port names");
    expect_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\n"
                "spec: {host: a, trafficPolicy: {loadBalancer: {simple: RANDOM, "
                "consistentHash: {useSourceIp: true}}}}\n",
                "4:80: DestinationRule/default/x: spec.trafficPolicy.loadBalancer.consistentHash: "
                "only one of simple or consistentHash may be set");
    expect_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\n"
                "spec: {http: [{delegate: {name: b}}], hosts: [a]}\n---\n"
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b}\n"
                "spec: {hosts: [b], http: [{route: [{destination: {host: b}}]}]}\n",
                "4:26: VirtualService/default/a: spec.http[0].delegate: VirtualService "
                "default/b is used as a delegate, so it must not have hosts");
    expect_text("apiVersion: weft.io/v1alpha1\nkind: FilterPlugin\nmetadata: {name: p}\n"
                "spec: {module: m, phase: LATE}\n",
                "4:26: FilterPlugin/default/p: spec.phase: invalid value \"LATE\"; allowed "
                "values: UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS");
    expect_text("apiVersion: weft.io/v1alpha1\nkind: FilterPlugin\nmetadata: {name: p}\n"
                "spec: {phase: AUTHN}\n",
                "4:7: FilterPlugin/default/p: spec.module: required field is missing");
    expect_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n"
                "spec: {hosts: [a], http: [{route: [{destination: {host: a}}], "
                "retries: {attempts: 2, perTryTimeout: 5}}]}\n",
                "4:101: VirtualService/default/x: spec.http[0].retries.perTryTimeout: expected a "
                "string, got an integer (quote it: \"5\")");
    expect_text("a: *nope\n", "1:4: -: -: invalid YAML: unknown alias \"*nope\"");
    expect_text("\t- x\n", "1:1: -: -: invalid YAML: found character that cannot start any "
                           "token (while scanning for the next token at line 1 column 1)");
}

/* ---- hostile input ---------------------------------------------------------- */

static void survive(const char *text, size_t len)
{
    const char *p = tmp_yaml(text, len);
    wf_config *c = NULL;
    wf_diags d = {0};
    int rc;

    if (!p)
        return;
    rc = wf_config_load(&p, 1, &c, &d);
    CHECK(rc == 0 || rc == -1);
    CHECK((rc == 0) == (c != NULL));
    CHECK((rc == 0) == (d.n == 0));
    wf_config_free(c);
    wf_diags_free(&d);
    unlink(p);
}

TEST(hostile_input_never_crashes)
{
    static const char *const cases[] = {
        "",
        "---",
        "~",
        "[]",
        "{}",
        "apiVersion:",
        "kind: [VirtualService]",
        "kind: VirtualService\nmetadata: [1]\nspec: 7",
        "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\n"
        "spec: {hosts: [{}], http: [[], 1, {route: {destination: 1}}]}",
        "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\n"
        "spec: {hosts: [a], http: [{match: [{headers: {x: [], y: 1, \"\": {}}}], "
        "route: [{destination: {host: a, port: {number: x}}, weight: 99999999999999999999}]}]}",
        "kind: DestinationRule\napiVersion: networking.istio.io/v1\nmetadata: {name: a}\n"
        "spec: {host: a, trafficPolicy: {portLevelSettings: [{}, {port: 1}], loadBalancer: "
        "{consistentHash: {}}}}",
        "kind: PeerAuthentication\napiVersion: security.istio.io/v1\nmetadata: {name: a}\n"
        "spec: {portLevelMtls: {[1]: {}, x: {}, 0: {}, 99999999999: {}, 80: 1}}",
        "kind: MeshConfig\napiVersion: weft.io/v1alpha1\n"
        "spec: {defaultConfig: {tracing: {customTags: {a: 1, b: {}, c: {literal: {}}, "
        "[x]: 1}}}, filterChain: [\"\", 1]}",
        "kind: FilterPlugin\napiVersion: weft.io/v1alpha1\nmetadata: {name: a}\n"
        "spec: {module: m, pluginConfig: {a: .inf, b: 99999999999999999999, {x: 1}: 2}}",
        "? [a, b]\n: c\n",
        "a: &x [*x]\n",
        "&a [*a, *a]",
        "a: !!binary aGVsbG8=\nb: !custom 1\n",
        "kind: VirtualService\nspec: {hosts: [\"\\0\"]}\n",
    };
    char big[8192];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        survive(cases[i], strlen(cases[i]));
    /* Deep nesting beyond the cap. */
    for (n = 0; n < 3000; n++)
        big[n] = '[';
    survive(big, n);
    /* Billion laughs: refused by the node budget instead of expanding. */
    survive("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
            "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
            "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
            "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
            "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
            0 + strlen("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                       "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                       "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                       "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                       "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                       "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                       "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                       "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"));
    /* Binary junk, NUL bytes and invalid UTF-8. */
    for (n = 0; n < sizeof(big); n++)
        big[n] = (char)((n * 7919u + 13u) & 0xff);
    survive(big, sizeof(big));
    survive("kind: \"Virtual\0Service\"\n", 24);
    survive("kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: \xff}\n",
            74);
}

TEST(too_many_problems_is_capped)
{
    /* 1500 unknown fields: reported up to the cap, then one closing line. */
    size_t cap = 64 + 1500 * 16;
    char *text = malloc(cap);
    size_t l;
    wf_diags d = {0};
    wf_config *c;
    char line[2048];

    if (!text)
        return;
    l = (size_t)snprintf(text, cap, "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nspec:\n");
    for (int i = 0; i < 1500; i++)
        l += (size_t)snprintf(text + l, cap - l, "  k%d: 1\n", i);
    c = load_text(text, &d);
    CHECK(c == NULL);
    CHECK_INT(d.n, 1001);
    if (d.n == 1001) {
        wf_diag_format(&d.v[1000], line, sizeof(line));
        CHECK(strstr(line, "too many problems; stopping after 1000") != NULL);
    }
    wf_diags_free(&d);
    free(text);
}

int main(void)
{
    RUN(good_directory_counts);
    RUN(good_virtual_service_fields);
    RUN(good_destination_rule_fields);
    RUN(good_service_and_workload_entries);
    RUN(good_gateway_fields);
    RUN(good_security_fields);
    RUN(good_mesh_and_plugin);
    RUN(defaults);
    RUN(mesh_defaults_with_partial_meshconfig);
    RUN(host_resolution);
    RUN(durations);
    RUN(regexes);
    RUN(multi_document_and_yaml_details);
    RUN(several_paths_in_order);
    RUN(bad_malformed_yaml);
    RUN(bad_wrong_types);
    RUN(bad_unknown_fields);
    RUN(bad_enums);
    RUN(bad_duplicates_across_files);
    RUN(bad_dangling_references);
    RUN(bad_missing_required);
    RUN(bad_weights);
    RUN(bad_regexes);
    RUN(bad_ports);
    RUN(bad_durations);
    RUN(bad_kinds_and_api_versions);
    RUN(bad_second_meshconfig);
    RUN(bad_unreadable_path);
    RUN(bad_inline_cases);
    RUN(hostile_input_never_crashes);
    RUN(too_many_problems_is_capped);
    return TEST_SUMMARY();
}
