/*
 * translate_test.c: the translator (core/translate) on the fixture YAML in
 * testdata/translate/, loaded through wf_config_load.  Assertions compare
 * parts of the output bundle with small expected JSON snippets.
 */
#include "translate/translate.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "translate_fixture.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static const char *testdata(const char *sub)
{
    static char buf[1024];
    const char *f = __FILE__, *slash = strrchr(f, '/');

    if (slash)
        snprintf(buf, sizeof(buf), "%.*s/testdata/translate/%s", (int)(slash - f), f, sub);
    else
        snprintf(buf, sizeof(buf), "testdata/translate/%s", sub);
    return buf;
}

static wf_config *load(const char *sub)
{
    const char *path = testdata(sub);
    wf_config *c = NULL;
    wf_diags d = {0};

    if (wf_config_load(&path, 1, &c, &d) != 0) {
        fprintf(stderr, "loading %s failed:\n", path);
        wf_diags_print(&d, stderr);
        c = NULL;
    }
    wf_diags_free(&d);
    return c;
}

static const char *const productpage[] = {"app", "productpage", "version", "v1", NULL};

static json_t *run(const wf_config *c, const char *ns, const char *const *labels, int app_port)
{
    wf_proxy_info p = sidecar(ns, labels, app_port);

    return translate_for(c, &p);
}

/* The element of array arr whose string field key equals name. */
static json_t *by(json_t *arr, const char *key, const char *name)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(json_object_get(v, key));
        if (s && strcmp(s, name) == 0)
            return v;
    }
    return NULL;
}

static json_t *listener(json_t *b, const char *name)
{
    return by(json_object_get(b, "listeners"), "name", name);
}

static json_t *hcm(json_t *b, const char *lname)
{
    json_t *l = listener(b, lname);
    json_t *fc = json_array_get(json_object_get(l, "filter_chains"), 0);

    return json_object_get(json_array_get(json_object_get(fc, "filters"), 0), "typed_config");
}

static json_t *vhost(json_t *b, const char *name)
{
    json_t *rc = json_object_get(hcm(b, "virtualOutbound"), "route_config");

    return by(json_object_get(rc, "virtual_hosts"), "name", name);
}

static json_t *route(json_t *b, const char *vh, const char *name)
{
    return by(json_object_get(vhost(b, vh), "routes"), "name", name);
}

static json_t *cluster(json_t *b, const char *name)
{
    return by(json_object_get(b, "clusters"), "name", name);
}

static json_t *cla(json_t *b, const char *name)
{
    return by(json_object_get(b, "endpoints"), "cluster_name", name);
}

/* Route names of a virtual host, joined with spaces. */
static const char *route_names(json_t *b, const char *vh)
{
    static char buf[2048];
    size_t i, n = 0;
    json_t *r;

    buf[0] = 0;
    json_array_foreach(json_object_get(vhost(b, vh), "routes"), i, r) n +=
        (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "",
                         json_string_value(json_object_get(r, "name")));
    return buf;
}

static const char *filter_names(json_t *b, const char *lname)
{
    static char buf[2048];
    size_t i, n = 0;
    json_t *f;

    buf[0] = 0;
    json_array_foreach(json_object_get(hcm(b, lname), "http_filters"), i, f) n +=
        (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "",
                         json_string_value(json_object_get(f, "name")));
    return buf;
}

/* actual equals the JSON text expected (key order does not matter). */
static int json_is(json_t *actual, const char *expected, const char *file, int line)
{
    json_error_t e;
    json_t *x = json_loads(expected, JSON_DECODE_ANY, &e);
    int ok;

    if (!x) {
        fprintf(stderr, "%s:%d: bad expected JSON: %s\n", file, line, e.text);
        return 0;
    }
    ok = actual && json_equal(actual, x);
    if (!ok) {
        char *a = actual ? json_dumps(actual, JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
        char *w = json_dumps(x, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "%s:%d: JSON differs\n  expected: %s\n  got:      %s\n", file, line, w,
                a ? a : "(null)");
        free(a);
        free(w);
    }
    json_decref(x);
    return ok;
}

#define CHECK_JSON(actual, expected)                                                               \
    do {                                                                                           \
        if (!json_is((actual), (expected), __FILE__, __LINE__))                                    \
            test_current_failed = 1;                                                               \
    } while (0)

static const char *jstr_at(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The fixture is loaded once; translations are per test. */
static wf_config *mesh;

#define REVIEWS "reviews.default.svc.cluster.local"
#define RATINGS "ratings.default.svc.cluster.local"
#define PAYMENTS "payments-api.production.svc.cluster.local"
#define UPSTREAM_TLS                                                                               \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define DOWNSTREAM_TLS                                                                             \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define RAW_BUFFER "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(fixture_loads)
{
    CHECK(mesh != NULL);
}

TEST(domains_and_aliases)
{
    json_t *b = run(mesh, "default", productpage, 0);

    /* Only HTTP port: the port-less forms too; short name in the same namespace. */
    CHECK_JSON(json_object_get(vhost(b, REVIEWS ":9080"), "domains"),
               "[\"" REVIEWS ":9080\", \"reviews:9080\", \"reviews.default:9080\","
               " \"reviews.default.svc:9080\", \"" REVIEWS "\", \"reviews\", \"reviews.default\","
               " \"reviews.default.svc\"]");
    /* Two HTTP ports (http-api by name, grpc by name): no port-less forms. */
    CHECK_JSON(json_object_get(vhost(b, RATINGS ":8080"), "domains"),
               "[\"" RATINGS ":8080\", \"ratings:8080\", \"ratings.default:8080\","
               " \"ratings.default.svc:8080\"]");
    CHECK(vhost(b, RATINGS ":9090") != NULL);
    CHECK(vhost(b, RATINGS ":7000") == NULL); /* tcp: cluster only */
    CHECK(cluster(b, "outbound|7000||" RATINGS) != NULL);
    /* Port 80, an external host and its VIP. */
    CHECK_JSON(json_object_get(vhost(b, "api.example.com:80"), "domains"),
               "[\"api.example.com:80\", \"240.0.0.10:80\", \"api.example.com\", \"240.0.0.10\"]");
    /* Another namespace: no short name. */
    CHECK_JSON(json_object_get(vhost(b, PAYMENTS ":8080"), "domains"),
               "[\"" PAYMENTS ":8080\", \"payments-api.production:8080\","
               " \"payments-api.production.svc:8080\", \"" PAYMENTS "\","
               " \"payments-api.production\", \"payments-api.production.svc\"]");
    CHECK_JSON(json_object_get(vhost(b, "*.wild.example.com:80"), "domains"),
               "[\"*.wild.example.com:80\", \"*.wild.example.com\"]");
    /* exportTo "." in production. */
    CHECK(vhost(b, "secret.production.svc.cluster.local:8080") == NULL);
    CHECK(cluster(b, "outbound|8080||secret.production.svc.cluster.local") == NULL);
    json_decref(b);

    b = run(mesh, "production", NULL, 0);
    CHECK(json_array_size(json_object_get(vhost(b, PAYMENTS ":8080"), "domains")) == 8);
    CHECK_STR(json_string_value(
                  json_array_get(json_object_get(vhost(b, PAYMENTS ":8080"), "domains"), 1)),
              "payments-api:8080");
    CHECK(vhost(b, "secret.production.svc.cluster.local:8080") != NULL);
    json_decref(b);
}

TEST(route_order_and_names)
{
    json_t *b = run(mesh, "default", productpage, 0);

    CHECK_STR(route_names(b, REVIEWS ":9080"),
              "default/reviews.0 default/reviews.1 default/reviews.2.0 default/reviews.2.1 split");
    CHECK_JSON(json_object_get(route(b, REVIEWS ":9080", "default/reviews.2.0"), "match"),
               "{\"prefix\": \"/api\", \"case_sensitive\": false}");
    CHECK_JSON(json_object_get(route(b, REVIEWS ":9080", "default/reviews.2.1"), "match"),
               "{\"safe_regex\": {\"regex\": \"/v[0-9]+/.*\"}}");
    json_decref(b);
}

TEST(split_90_10_between_subsets)
{
    json_t *b = run(mesh, "default", productpage, 0);
    json_t *r = route(b, REVIEWS ":9080", "split");

    CHECK_JSON(json_object_get(r, "match"), "{\"prefix\": \"/\"}");
    CHECK_JSON(json_object_get(r, "route"),
               "{\"weighted_clusters\": {\"clusters\": ["
               "{\"name\": \"outbound|9080|v1|" REVIEWS "\", \"weight\": 90},"
               "{\"name\": \"outbound|9080|v2|" REVIEWS "\", \"weight\": 10}],"
               " \"total_weight\": 100}}");
    CHECK_JSON(
        json_object_get(r, "typed_per_filter_config"),
        "{\"fault\": {\"delay\": {\"fixedDelay\": \"2s\", \"percentage\": {\"value\": 50}},"
        "            \"abort\": {\"httpStatus\": 503, \"percentage\": {\"value\": 10}}},"
        " \"retry\": {\"attempts\": 3, \"perTryTimeout\": \"0.5s\","
        "            \"retryOn\": \"5xx,connect-failure\"},"
        " \"router\": {\"timeout\": \"1.5s\","
        "             \"headers\": {\"request\": {\"set\": {\"x-split\": \"yes\"},"
        "                                         \"remove\": [\"x-internal\"]}}}}");
    json_decref(b);
}

TEST(header_match_to_canary)
{
    json_t *b = run(mesh, "default", productpage, 0);
    json_t *r = route(b, REVIEWS ":9080", "default/reviews.0");

    CHECK_JSON(json_object_get(r, "match"),
               "{\"prefix\": \"/\", \"headers\": [{\"name\": \"end-user\","
               " \"string_match\": {\"exact\": \"jason\"}}]}");
    CHECK_JSON(json_object_get(r, "route"), "{\"cluster\": \"outbound|9080|v3|" REVIEWS "\"}");
    CHECK(json_object_get(r, "typed_per_filter_config") == NULL);
    json_decref(b);
}

TEST(source_labels_namespace_gateways_drop)
{
    const char *const details[] = {"app", "details", NULL};
    json_t *b = run(mesh, "default", details, 0);

    CHECK_STR(route_names(b, REVIEWS ":9080"),
              "default/reviews.0 default/reviews.2.0 default/reviews.2.1 split");
    /* sourceNamespace other and gateways [my-gateway] are gone. */
    CHECK_STR(route_names(b, RATINGS ":8080"), "default/ratings.1 default/ratings.4");
    json_decref(b);

    b = run(mesh, "other", details, 0);
    CHECK_STR(route_names(b, RATINGS ":8080"),
              "default/ratings.1 default/ratings.2 default/ratings.4");
    json_decref(b);
}

TEST(port_match_and_destination_ports)
{
    json_t *b = run(mesh, "default", productpage, 0);

    CHECK_STR(route_names(b, RATINGS ":9090"),
              "default/ratings.0 default/ratings.1 default/ratings.4");
    CHECK_STR(route_names(b, RATINGS ":8080"), "default/ratings.1 default/ratings.4");
    /* No destination port, several service ports: the virtual host's. */
    CHECK_JSON(json_object_get(route(b, RATINGS ":9090", "default/ratings.0"), "route"),
               "{\"cluster\": \"outbound|9090||" RATINGS "\"}");
    /* The destination service has one port. */
    CHECK_JSON(json_object_get(route(b, RATINGS ":8080", "default/ratings.1"), "route"),
               "{\"cluster\": \"outbound|9080||" REVIEWS "\"}");
    /* An explicit port wins in every virtual host. */
    CHECK_JSON(json_object_get(route(b, RATINGS ":9090", "default/ratings.4"), "route"),
               "{\"cluster\": \"outbound|8080|v1|" RATINGS "\"}");
    json_decref(b);
}

TEST(every_request_match)
{
    json_t *b = run(mesh, "default", productpage, 0);

    CHECK_JSON(json_object_get(route(b, RATINGS ":8080", "default/ratings.1"), "match"),
               "{\"path\": \"/rate\","
               " \"headers\": ["
               "  {\"name\": \":method\", \"string_match\": {\"exact\": \"POST\"}},"
               "  {\"name\": \":authority\", \"string_match\": {\"prefix\": \"ratings\"}},"
               "  {\"name\": \":scheme\", \"string_match\": {\"exact\": \"http\"}},"
               "  {\"name\": \"x-present\", \"present_match\": true},"
               "  {\"name\": \"x-version\", \"string_match\": {\"prefix\": \"v2\"}},"
               "  {\"name\": \"x-re\", \"string_match\": {\"safe_regex\": {\"regex\": \"a+b\"}}},"
               "  {\"name\": \"x-debug\", \"present_match\": true, \"invert_match\": true},"
               "  {\"name\": \"x-mode\", \"string_match\": {\"exact\": \"test\"},"
               "   \"invert_match\": true}],"
               " \"query_parameters\": [{\"name\": \"q\", \"string_match\": {\"exact\": \"1\"}}]}");
    json_decref(b);
}

TEST(virtual_service_selection)
{
    json_t *b = run(mesh, "default", productpage, 0), *r;

    /* The gateway-only VirtualService is ignored; the mesh-bound wildcard applies. */
    CHECK_STR(route_names(b, "api.example.com:80"), "default/all-example.0 default/all-example.1");
    r = route(b, "api.example.com:80", "default/all-example.0");
    CHECK_JSON(json_object_get(r, "match"), "{\"prefix\": \"/old\"}");
    CHECK(json_object_get(r, "route") == NULL);
    CHECK_JSON(json_object_get(r, "typed_per_filter_config"),
               "{\"router\": {\"redirect\": {\"uri\": \"/new\", \"authority\": \"api.example.com\","
               " \"redirectCode\": 301}}}");
    CHECK_JSON(json_object_get(route(b, "api.example.com:80", "default/all-example.1"),
                               "typed_per_filter_config"),
               "{\"router\": {\"directResponse\": {\"status\": 418,"
               " \"body\": {\"string\": \"teapot\"}}}}");
    /* An exact host beats a wildcard. */
    CHECK_STR(route_names(b, "*.wild.example.com:80"), "default/wild.0");
    CHECK_JSON(json_object_get(route(b, "*.wild.example.com:80", "default/wild.0"), "route"),
               "{\"cluster\": \"outbound|80||*.wild.example.com\"}");
    /* exportTo ".": a default proxy gets the default route. */
    CHECK_JSON(json_object_get(vhost(b, PAYMENTS ":8080"), "routes"),
               "[{\"name\": \"default\", \"match\": {\"prefix\": \"/\"},"
               "  \"route\": {\"cluster\": \"outbound|8080||" PAYMENTS "\"}}]");
    json_decref(b);

    b = run(mesh, "production", NULL, 0);
    CHECK_STR(route_names(b, PAYMENTS ":8080"), "production/payments-api.0");
    CHECK_JSON(json_object_get(route(b, PAYMENTS ":8080", "production/payments-api.0"), "route"),
               "{\"cluster\": \"outbound|8080||" PAYMENTS "\"}");
    json_decref(b);
}

/* The lb_endpoints of a cluster's assignment (one locality). */
static json_t *lbes(json_t *b, const char *cluster_name)
{
    json_t *loc = json_array_get(json_object_get(cla(b, cluster_name), "endpoints"), 0);

    return json_object_get(loc, "lb_endpoints");
}

/* "ip:port" of lb endpoint i of a cluster. */
static const char *ep_at(json_t *b, const char *cluster_name, size_t i)
{
    static char buf[128];
    json_t *e = json_array_get(lbes(b, cluster_name), i);
    json_t *sa = json_object_get(json_object_get(json_object_get(e, "endpoint"), "address"),
                                 "socket_address");

    snprintf(buf, sizeof(buf), "%s:%lld", jstr_at(sa, "address") ? jstr_at(sa, "address") : "-",
             (long long)json_integer_value(json_object_get(sa, "port_value")));
    return buf;
}

TEST(subset_endpoints_and_workload_entry_ports)
{
    json_t *b = run(mesh, "default", productpage, 0);

    CHECK_JSON(cla(b, "outbound|9080|v1|" REVIEWS),
               "{\"cluster_name\": \"outbound|9080|v1|" REVIEWS "\","
               " \"endpoints\": [{\"locality\": {}, \"load_balancing_weight\": 1,"
               "  \"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\":"
               "     {\"address\": \"127.0.0.11\", \"port_value\": 19081}}},"
               "    \"health_status\": \"HEALTHY\", \"load_balancing_weight\": 1,"
               "    \"metadata\": {\"filter_metadata\": {\"istio\": {"
               "       \"labels\": {\"app\": \"reviews\", \"version\": \"v1\"},"
               "       \"service_account\": \"reviews\"}}}}]}]}");
    /* No port map: the targetPort; the WorkloadEntry's weight. */
    CHECK_STR(ep_at(b, "outbound|9080|v2|" REVIEWS, 0), "127.0.0.12:19080");
    CHECK_INT(
        json_integer_value(json_object_get(json_array_get(lbes(b, "outbound|9080|v2|" REVIEWS), 0),
                                           "load_balancing_weight")),
        3);
    /* localhost is 127.0.0.1; the port map. */
    CHECK_STR(ep_at(b, "outbound|9080|v3|" REVIEWS, 0), "127.0.0.1:19083");
    /* The service cluster has all three, not the WorkloadEntry of another namespace. */
    CHECK_INT(json_array_size(lbes(b, "outbound|9080||" REVIEWS)), 3);
    CHECK_STR(ep_at(b, "outbound|9080||" REVIEWS, 0), "127.0.0.11:19081");
    CHECK_STR(ep_at(b, "outbound|9080||" REVIEWS, 1), "127.0.0.12:19080");
    CHECK_STR(ep_at(b, "outbound|9080||" REVIEWS, 2), "127.0.0.1:19083");
    /* Inline endpoints: port map, targetPort, port number; subsets by label. */
    CHECK_JSON(lbes(b, "outbound|8080||" RATINGS),
               "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.21\","
               "   \"port_value\": 18080}}}, \"health_status\": \"HEALTHY\","
               "  \"load_balancing_weight\": 1, \"metadata\": {\"filter_metadata\":"
               "  {\"istio\": {\"labels\": {\"version\": \"v1\"}}}}},"
               " {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.22\","
               "   \"port_value\": 28080}}}, \"health_status\": \"HEALTHY\","
               "  \"load_balancing_weight\": 1, \"metadata\": {\"filter_metadata\":"
               "  {\"istio\": {\"labels\": {\"version\": \"v2\"}}}}}]");
    CHECK_INT(json_array_size(lbes(b, "outbound|7000|v2|" RATINGS)), 1);
    CHECK_STR(ep_at(b, "outbound|7000|v2|" RATINGS, 0), "127.0.0.22:7000");
    CHECK_STR(ep_at(b, "outbound|9090|v1|" RATINGS, 0), "127.0.0.21:9090");
    /* A subset nothing carries: an empty assignment. */
    CHECK_JSON(cla(b, "outbound|9090|v3|" RATINGS),
               "{\"cluster_name\": \"outbound|9090|v3|" RATINGS "\", \"endpoints\": []}");
    /* DNS resolution with a localhost endpoint (never looked up) and a port map. */
    CHECK_STR(ep_at(b, "outbound|80||api.example.com", 0), "127.0.0.1:18000");
    /* Resolution NONE, no endpoints. */
    CHECK_JSON(json_object_get(cla(b, "outbound|80||*.wild.example.com"), "endpoints"), "[]");
    json_decref(b);
}

static void check_lb(json_t *b, const char *name, const char *lb, const char *timeout)
{
    json_t *c = cluster(b, name);

    if (!c) {
        fprintf(stderr, "no cluster %s\n", name);
        test_current_failed = 1;
        return;
    }
    if (strcmp(jstr_at(c, "lb_policy"), lb) != 0 ||
        strcmp(jstr_at(c, "connect_timeout"), timeout) != 0) {
        fprintf(stderr, "cluster %s: expected %s/%s, got %s/%s\n", name, lb, timeout,
                jstr_at(c, "lb_policy"), jstr_at(c, "connect_timeout"));
        test_current_failed = 1;
    }
}

TEST(lb_policy_precedence)
{
    json_t *b = run(mesh, "default", productpage, 0);

    /* LEAST_CONN -> LEAST_REQUEST; a subset's own policy; the rule's connect timeout. */
    check_lb(b, "outbound|9080||" REVIEWS, "LEAST_REQUEST", "2.5s");
    check_lb(b, "outbound|9080|v1|" REVIEWS, "LEAST_REQUEST", "2.5s");
    check_lb(b, "outbound|9080|v2|" REVIEWS, "RANDOM", "2.5s");
    /* Rule, then the rule's port level for 9090. */
    check_lb(b, "outbound|8080||" RATINGS, "RANDOM", "10s");
    check_lb(b, "outbound|9090||" RATINGS, "LEAST_REQUEST", "10s");
    check_lb(b, "outbound|7000||" RATINGS, "RANDOM", "10s");
    check_lb(b, "outbound|9090|v1|" RATINGS, "LEAST_REQUEST", "10s");
    /* A subset's loadBalancer overrides the rule's port level too (Istio's merge). */
    check_lb(b, "outbound|8080|v2|" RATINGS, "ROUND_ROBIN", "10s");
    check_lb(b, "outbound|9090|v2|" RATINGS, "ROUND_ROBIN", "10s");
    /* The subset's port level replaces wholesale: its own timeout, default balancer. */
    check_lb(b, "outbound|7000|v2|" RATINGS, "ROUND_ROBIN", "1s");
    /* consistentHash: ROUND_ROBIN with a note. */
    check_lb(b, "outbound|8080|v3|" RATINGS, "ROUND_ROBIN", "10s");
    CHECK(
        json_string_value(json_object_get(
            json_object_get(json_object_get(json_object_get(cluster(b, "outbound|8080|v3|" RATINGS),
                                                            "metadata"),
                                            "filter_metadata"),
                            "istio"),
            "lb_note")) != NULL);
    /* Root namespace wildcard rules: the more specific host wins. */
    check_lb(b, "outbound|80||api.example.com", "RANDOM", "10s");
    check_lb(b, "outbound|80||*.wild.example.com", "LEAST_REQUEST", "10s");
    /* Namespace precedence: the proxy's namespace, then the service's. */
    check_lb(b, "outbound|8080||" PAYMENTS, "LEAST_REQUEST", "10s");
    json_decref(b);
    b = run(mesh, "other", productpage, 0);
    check_lb(b, "outbound|8080||" PAYMENTS, "RANDOM", "10s");
    json_decref(b);
    b = run(mesh, "production", productpage, 0);
    check_lb(b, "outbound|8080||" PAYMENTS, "RANDOM", "10s");
    json_decref(b);
}

TEST(cluster_shape)
{
    json_t *b = run(mesh, "default", productpage, 0);

    CHECK_JSON(cluster(b, "outbound|9080|v1|" REVIEWS),
               "{\"name\": \"outbound|9080|v1|" REVIEWS "\", \"type\": \"EDS\","
               " \"eds_cluster_config\": {\"service_name\": \"outbound|9080|v1|" REVIEWS "\"},"
               " \"lb_policy\": \"LEAST_REQUEST\", \"connect_timeout\": \"2.5s\","
               " \"metadata\": {\"filter_metadata\": {\"istio\": {"
               "   \"services\": [{\"host\": \"" REVIEWS "\", \"name\": \"reviews\","
               "                   \"namespace\": \"default\"}],"
               "   \"subset\": \"v1\","
               "   \"config\": \"/apis/networking.istio.io/v1/namespaces/default/destination-rule/"
               "reviews\"}}},"
               /* Auto mTLS (a mesh-internal service, no tls in its rule): the
                * service's identities (reviews-v1's account, "default" for
                * the two without), Istio's SNI. */
               " \"transport_socket_matches\": ["
               "  {\"name\": \"tlsMode-istio\", \"match\": {\"tlsMode\": \"istio\"},"
               "   \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\","
               "    \"typed_config\": {\"@type\": \"" UPSTREAM_TLS "\","
               "     \"common_tls_context\": {"
               "      \"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}],"
               "      \"combined_validation_context\": {"
               "       \"default_validation_context\": {\"match_subject_alt_names\": ["
               "        {\"exact\": \"spiffe://cluster.local/ns/default/sa/default\"},"
               "        {\"exact\": \"spiffe://cluster.local/ns/default/sa/reviews\"}]},"
               "       \"validation_context_sds_secret_config\": {\"name\": \"ROOTCA\"}}},"
               "     \"sni\": \"outbound_.9080_.v1_." REVIEWS "\"}}},"
               "  {\"name\": \"tlsMode-disabled\", \"match\": {},"
               "   \"transport_socket\": {\"name\": \"envoy.transport_sockets.raw_buffer\","
               "    \"typed_config\": {\"@type\": \"" RAW_BUFFER "\"}}}]}");
    /* grpc: HTTP/2 upstream. */
    CHECK(json_object_get(cluster(b, "outbound|9090||" RATINGS), "http2_protocol_options") != NULL);
    CHECK(json_object_get(cluster(b, "outbound|8080||" RATINGS), "http2_protocol_options") == NULL);
    /* Every cluster has its assignment, in the same order. */
    CHECK_INT(json_array_size(json_object_get(b, "clusters")),
              json_array_size(json_object_get(b, "endpoints")));
    json_decref(b);
}

TEST(plugin_placement)
{
    json_t *b = run(mesh, "default", productpage, 0), *f;
    const char *const reviews[] = {"app", "reviews", NULL};

    CHECK_STR(filter_names(b, "virtualOutbound"),
              "istio-system.stats-x metrics tracing default.authn-b default.authn-a "
              "default.authz-z authz fault default.plain router");
    f = by(json_object_get(hcm(b, "virtualOutbound"), "http_filters"), "name", "default.authn-a");
    CHECK_JSON(f, "{\"name\": \"default.authn-a\", \"typed_config\": {"
                  " \"@type\": \"type.googleapis.com/xds.type.v3.TypedStruct\","
                  " \"type_url\": \"weft.io/module/example\","
                  " \"value\": {\"header\": \"x-a\", \"value\": \"1\"}}}");
    f = by(json_object_get(hcm(b, "virtualOutbound"), "http_filters"), "name", "router");
    CHECK_JSON(f, "{\"name\": \"router\", \"typed_config\": {"
                  " \"@type\": \"type.googleapis.com/xds.type.v3.TypedStruct\","
                  " \"type_url\": \"weft.io/module/router\", \"value\": {}}}");
    f = by(json_object_get(hcm(b, "virtualOutbound"), "http_filters"), "name",
           "istio-system.stats-x");
    CHECK_STR(jstr_at(json_object_get(f, "typed_config"), "type_url"),
              "weft.io/module//opt/plugins/stats.so");
    CHECK_JSON(json_object_get(json_object_get(f, "typed_config"), "value"),
               "{\"buckets\": [1, 5, 10]}");
    json_decref(b);

    b = run(mesh, "default", reviews, 0);
    CHECK_STR(filter_names(b, "virtualOutbound"),
              "istio-system.stats-x metrics tracing default.authn-b default.authz-z authz fault "
              "default.not-me default.plain router");
    json_decref(b);

    /* Another namespace: root namespace plugins only. */
    b = run(mesh, "other", productpage, 0);
    CHECK_STR(filter_names(b, "virtualOutbound"),
              "istio-system.stats-x metrics tracing authz fault other.ignored router");
    json_decref(b);
}

TEST(plugin_placement_missing_anchors)
{
    wf_config *c = load("chain2");
    json_t *b = run(c, "s", NULL, 8080);

    CHECK(c != NULL);
    CHECK_STR(filter_names(b, "virtualOutbound"),
              "s.authn-p authn s.authz-p s.stats-p s.late-hi s.late-lo router");
    CHECK_STR(filter_names(b, "virtualInbound"),
              "s.authn-p authn s.authz-p s.stats-p s.late-hi s.late-lo router");
    /* https by name: a cluster, no virtual host; port 80 and the only HTTP port. */
    CHECK(cluster(b, "outbound|8443||web.s.svc.cluster.local") != NULL);
    CHECK(vhost(b, "web.s.svc.cluster.local:8443") == NULL);
    CHECK_JSON(json_object_get(vhost(b, "web.s.svc.cluster.local:80"), "domains"),
               "[\"web.s.svc.cluster.local:80\", \"web:80\", \"web.s:80\", \"web.s.svc:80\","
               " \"web.s.svc.cluster.local\", \"web\", \"web.s\", \"web.s.svc\"]");
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(inbound_listener)
{
    json_t *b = run(mesh, "default", productpage, 8000), *l;

    /* virtualOutbound, virtualInbound, ratings' TCP port 7000. */
    CHECK_INT(json_array_size(json_object_get(b, "listeners")), 3);
    l = listener(b, "virtualInbound");
    /* No PeerAuthentication: PERMISSIVE, a TLS chain and a plaintext one,
     * the TLS inspector telling them apart, one connection manager. */
    CHECK_JSON(json_object_get(l, "listener_filters"),
               "[{\"name\": \"envoy.filters.listener.tls_inspector\", \"typed_config\": {"
               "  \"@type\": \"type.googleapis.com/envoy.extensions.filters.listener.tls_inspector."
               "v3.TlsInspector\"}}]");
    {
        json_t *chains = json_object_get(l, "filter_chains");
        json_t *tls = json_array_get(chains, 0), *plain = json_array_get(chains, 1);
        CHECK_INT(json_array_size(chains), 2);
        CHECK_STR(jstr_at(tls, "name"), "virtualInbound-tls");
        CHECK_JSON(json_object_get(tls, "filter_chain_match"), "{\"transport_protocol\": \"tls\"}");
        CHECK_JSON(json_object_get(tls, "transport_socket"),
                   "{\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"
                   " \"@type\": \"" DOWNSTREAM_TLS "\","
                   " \"common_tls_context\": {"
                   "  \"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}],"
                   "  \"combined_validation_context\": {\"default_validation_context\": {},"
                   "   \"validation_context_sds_secret_config\": {\"name\": \"ROOTCA\"}},"
                   "  \"alpn_protocols\": [\"h2\", \"http/1.1\"]},"
                   " \"require_client_certificate\": true}}");
        CHECK_STR(jstr_at(plain, "name"), "virtualInbound-plaintext");
        CHECK_JSON(json_object_get(plain, "filter_chain_match"),
                   "{\"transport_protocol\": \"raw_buffer\"}");
        CHECK(json_object_get(plain, "transport_socket") == NULL);
        CHECK(json_equal(json_object_get(tls, "filters"), json_object_get(plain, "filters")));
        CHECK_INT(json_array_size(json_object_get(tls, "filters")), 1);
    }
    CHECK_JSON(json_object_get(l, "address"),
               "{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 15006}}");
    CHECK_STR(jstr_at(l, "traffic_direction"), "INBOUND");
    CHECK_STR(jstr_at(hcm(b, "virtualInbound"), "stat_prefix"), "inbound_127.0.0.1_15006");
    CHECK_JSON(
        json_object_get(hcm(b, "virtualInbound"), "route_config"),
        "{\"name\": \"inbound\", \"virtual_hosts\": [{\"name\": \"inbound|http|8000\","
        " \"domains\": [\"*\"], \"routes\": [{\"name\": \"default\","
        " \"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster\": \"inbound|8000||\"}}]}]}");
    CHECK_STR(filter_names(b, "virtualInbound"), filter_names(b, "virtualOutbound"));
    CHECK_STR(jstr_at(cluster(b, "inbound|8000||"), "type"), "STATIC");
    CHECK_JSON(cla(b, "inbound|8000||"),
               "{\"cluster_name\": \"inbound|8000||\", \"endpoints\": [{\"locality\": {},"
               " \"load_balancing_weight\": 1, \"lb_endpoints\": [{\"endpoint\": {\"address\":"
               " {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 8000}}},"
               " \"health_status\": \"HEALTHY\", \"load_balancing_weight\": 1}]}]}");
    /* Envoy's STATIC form carries the same assignment inline. */
    CHECK(json_equal(json_object_get(cluster(b, "inbound|8000||"), "load_assignment"),
                     cla(b, "inbound|8000||")));
    json_decref(b);

    b = run(mesh, "default", productpage, 0);
    CHECK_INT(json_array_size(json_object_get(b, "listeners")), 2);
    CHECK(listener(b, "virtualInbound") == NULL);
    CHECK(cluster(b, "inbound|0||") == NULL);
    json_decref(b);
}

TEST(outbound_listener)
{
    json_t *b = run(mesh, "default", productpage, 0), *l = listener(b, "virtualOutbound");

    CHECK_JSON(json_object_get(l, "address"),
               "{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 15001}}");
    CHECK_STR(jstr_at(l, "traffic_direction"), "OUTBOUND");
    CHECK_STR(jstr_at(json_array_get(
                          json_object_get(json_array_get(json_object_get(l, "filter_chains"), 0),
                                          "filters"),
                          0),
                      "name"),
              "envoy.filters.network.http_connection_manager");
    CHECK_STR(jstr_at(hcm(b, "virtualOutbound"), "stat_prefix"), "outbound_127.0.0.1_15001");
    CHECK_STR(jstr_at(json_object_get(hcm(b, "virtualOutbound"), "route_config"), "name"),
              "outbound");
    json_decref(b);
}

TEST(deterministic_output)
{
    json_t *a = run(mesh, "default", productpage, 8000),
           *b = run(mesh, "default", productpage, 8000);
    const char *const other[] = {"app", "details", NULL};
    json_t *c = run(mesh, "default", other, 8000);
    char *sa = json_dumps(a, 0), *sb = json_dumps(b, 0);

    CHECK(sa && sb && strcmp(sa, sb) == 0);
    CHECK_INT(strlen(jstr_at(a, "version_info")), 16);
    CHECK_STR(jstr_at(a, "version_info"), jstr_at(b, "version_info"));
    /* Another workload with another route table: another version. */
    CHECK(strcmp(jstr_at(a, "version_info"), jstr_at(c, "version_info")) != 0);
    /* no_version (istiod): the same resources, version_info left empty */
    {
        wf_proxy_info p = sidecar("default", productpage, 8000);
        json_t *nv;

        p.no_version = 1;
        nv = translate_for(mesh, &p);
        CHECK_STR(jstr_at(nv, "version_info"), "");
        CHECK(json_equal(json_object_get(nv, "listeners"), json_object_get(a, "listeners")));
        CHECK(json_equal(json_object_get(nv, "clusters"), json_object_get(a, "clusters")));
        json_decref(nv);
    }
    free(sa);
    free(sb);
    json_decref(a);
    json_decref(b);
    json_decref(c);
}

TEST(bad_proxy_info)
{
    char err[256];
    wf_proxy_info p = {.role = "proxy"};

    CHECK(wf_translate(mesh, &p, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "namespace") != NULL);
    p.namespace_ = "default";
    p.role = "gateway";
    CHECK(wf_translate(mesh, &p, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "gateway") != NULL);
    p.role = NULL;
    p.app_port = 70000;
    CHECK(wf_translate(mesh, &p, err, sizeof(err)) == NULL);
    CHECK(wf_translate(NULL, &p, err, sizeof(err)) == NULL);
    /* Defaults for unset addresses and ports. */
    p.app_port = 0;
    json_t *b = wf_translate(mesh, &p, err, sizeof(err));
    CHECK_JSON(json_object_get(listener(b, "virtualOutbound"), "address"),
               "{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 15001}}");
    json_decref(b);
}

/* A failure half way (here a host that is not UTF-8, which the loader
 * never produces) returns NULL with a reason and frees everything: the
 * sanitizer build checks the "everything". */
TEST(failure_midway_frees_everything)
{
    char host[] = "bad\xff.example.com", *hosts[] = {host}, *chain[] = {"router"};
    wf_port port = {.number = 80, .name = "http"};
    wf_service_entry se = {.meta = {.name = "bad", .namespace_ = "default"},
                           .hosts = hosts,
                           .n_hosts = 1,
                           .ports = &port,
                           .n_ports = 1,
                           .resolution = WF_SE_RESOLUTION_STATIC};
    wf_config c;
    wf_proxy_info p = {.namespace_ = "default", .app_port = 8000};
    char err[256];

    memset(&c, 0, sizeof(c));
    c.service_entries = &se;
    c.n_service_entries = 1;
    c.mesh.filter_chain = chain;
    c.mesh.n_filter_chain = 1;
    CHECK(wf_translate(&c, &p, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "UTF-8") != NULL);
    /* The same hand-made config without the bad byte translates. */
    host[3] = 'x';
    json_t *b = wf_translate(&c, &p, err, sizeof(err));
    CHECK(cluster(b, "outbound|80||badx.example.com") != NULL);
    CHECK_STR(filter_names(b, "virtualOutbound"), "router");
    json_decref(b);
}

/* ---- proxyless gRPC (role "grpc") ------------------------------------------------------------ */

static wf_config *grpcfix;

#define GREVIEWS "reviews.default.svc.cluster.local"
#define GRATINGS "ratings.default.svc.cluster.local"
#define HCM_AT                                                                                     \
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."             \
    "HttpConnectionManager"
#define ROUTER_FILTER                                                                              \
    "{\"name\": \"envoy.filters.http.router\", \"typed_config\": {\"@type\": "                     \
    "\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}"

static json_t *run_grpc(const wf_config *c, const char *ns)
{
    /* What istiod passes for a proxyless client: its namespace, nothing else
     * (the ports must be ignored). */
    wf_proxy_info p = {.role = "grpc", .namespace_ = ns, .app_port = 8080};

    return translate_for(c, &p);
}

/* The HttpConnectionManager of api_listener `name`. */
static json_t *api_hcm(json_t *b, const char *name)
{
    return json_object_get(json_object_get(listener(b, name), "api_listener"), "api_listener");
}

static json_t *api_vhost(json_t *b, const char *name)
{
    json_t *rc = json_object_get(api_hcm(b, name), "route_config");

    return json_array_get(json_object_get(rc, "virtual_hosts"), 0);
}

static json_t *api_route(json_t *b, const char *lname, const char *rname)
{
    return by(json_object_get(api_vhost(b, lname), "routes"), "name", rname);
}

static const char *api_route_names(json_t *b, const char *lname)
{
    static char buf[2048];
    size_t i, n = 0;
    json_t *r;

    buf[0] = 0;
    json_array_foreach(json_object_get(api_vhost(b, lname), "routes"), i, r) n +=
        (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", n ? " " : "",
                         json_string_value(json_object_get(r, "name")));
    return buf;
}

/* Names of the elements of array arr (field key), sorted, joined. */
static const char *names_of(json_t *arr, const char *key)
{
    static char buf[4096];
    const char *v[128];
    size_t i, n = 0, len = 0;
    json_t *e;

    json_array_foreach(arr, i, e) if (n < 128) v[n++] = json_string_value(json_object_get(e, key));
    for (size_t a = 0; a < n; a++)
        for (size_t c = a + 1; c < n; c++)
            if (strcmp(v[a], v[c]) > 0) {
                const char *x = v[a];
                v[a] = v[c];
                v[c] = x;
            }
    buf[0] = 0;
    for (i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? " " : "", v[i]);
    return buf;
}

/* Every key anywhere under v; counts the objects that have key k. */
static size_t count_key(json_t *v, const char *k)
{
    size_t n = 0, i;
    const char *key;
    json_t *x;

    if (json_is_object(v)) {
        json_object_foreach(v, key, x) n += (strcmp(key, k) == 0) + count_key(x, k);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) n += count_key(x, k);
    }
    return n;
}

TEST(grpc_fixture_loads)
{
    CHECK(grpcfix != NULL);
}

/* A service without VirtualService: the whole listener, cluster and
 * assignment, exactly. */
TEST(grpc_listener_cluster_endpoints_shape)
{
    json_t *b = run_grpc(grpcfix, "default");

    CHECK_JSON(listener(b, GRATINGS ":7070"),
               "{\"name\": \"" GRATINGS ":7070\", \"api_listener\": {\"api_listener\": {"
               "\"@type\": \"" HCM_AT "\","
               "\"route_config\": {\"name\": \"" GRATINGS ":7070\", \"virtual_hosts\": [{"
               "  \"name\": \"" GRATINGS ":7070\","
               "  \"domains\": [\"" GRATINGS ":7070\", \"ratings:7070\", \"ratings.default:7070\","
               "              \"ratings.default.svc:7070\", \"" GRATINGS "\", \"ratings\","
               "              \"ratings.default\", \"ratings.default.svc\"],"
               "  \"routes\": [{\"name\": \"default\", \"match\": {\"prefix\": \"/\"},"
               "              \"route\": {\"cluster\": \"outbound|7070||" GRATINGS "\"}}]}]},"
               "\"http_filters\": [" ROUTER_FILTER "]}}}");
    CHECK_JSON(
        cluster(b, "outbound|7070||" GRATINGS),
        "{\"name\": \"outbound|7070||" GRATINGS "\", \"type\": \"EDS\","
        " \"eds_cluster_config\": {\"eds_config\": {\"ads\": {}, \"resource_api_version\":"
        " \"V3\"}, \"service_name\": \"outbound|7070||" GRATINGS "\"},"
        " \"lb_policy\": \"ROUND_ROBIN\", \"connect_timeout\": \"10s\","
        " \"metadata\": {\"filter_metadata\": {\"istio\": {\"services\": [{\"host\": \"" GRATINGS
        "\", \"name\": \"ratings\", \"namespace\": \"default\"}]}}}}");
    CHECK_JSON(cla(b, "outbound|7070||" GRATINGS),
               "{\"cluster_name\": \"outbound|7070||" GRATINGS "\", \"endpoints\": [{"
               " \"locality\": {}, \"load_balancing_weight\": 1, \"lb_endpoints\": [{"
               "  \"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.7\","
               "   \"port_value\": 17070}}}, \"health_status\": \"HEALTHY\","
               "  \"load_balancing_weight\": 1}]}]}");
    json_decref(b);
}

/* One api_listener per host and HTTP-family port (not TCP, not wildcard
 * hosts), no socket listeners; clusters as for a sidecar. */
TEST(grpc_listener_and_cluster_sets)
{
    json_t *b = run_grpc(grpcfix, "default");
    json_t *side = run(grpcfix, "default", NULL, 8080);
    json_t *l;
    size_t i;

    CHECK_STR(names_of(json_object_get(b, "listeners"), "name"),
              GRATINGS ":7070 " GREVIEWS ":9090 " GREVIEWS ":9091");
    json_array_foreach(json_object_get(b, "listeners"), i, l)
    {
        CHECK(json_object_get(l, "address") == NULL);
        CHECK(json_object_get(l, "filter_chains") == NULL);
    }
    CHECK(listener(b, "virtualInbound") == NULL && listener(b, "virtualOutbound") == NULL);
    /* The same clusters as a sidecar, minus the sidecar's inbound one. */
    CHECK(strstr(names_of(json_object_get(side, "clusters"), "name"), "inbound|8080||") != NULL);
    json_array_remove(json_object_get(side, "clusters"),
                      json_array_size(json_object_get(side, "clusters")) - 1);
    CHECK_STR(names_of(json_object_get(b, "clusters"), "name"),
              names_of(json_object_get(side, "clusters"), "name"));
    CHECK_STR(names_of(json_object_get(b, "endpoints"), "cluster_name"),
              names_of(json_object_get(b, "clusters"), "name"));
    CHECK(cluster(b, "outbound|80||*.wild.example.com") != NULL);
    /* The version differs from the sidecar's. */
    CHECK(strcmp(jstr_at(b, "version_info"), jstr_at(side, "version_info")) != 0);
    CHECK_INT(strlen(jstr_at(b, "version_info")), 16);
    json_decref(b);
    json_decref(side);
}

TEST(grpc_routes_in_order)
{
    json_t *b = run_grpc(grpcfix, "default");

    /* "query": its queryParams block left out, its uri block kept; "faulty"
     * only on port 9091. */
    CHECK_STR(api_route_names(b, GREVIEWS ":9090"), "canary matchers query split");
    CHECK_STR(api_route_names(b, GREVIEWS ":9091"), "canary matchers query faulty split");
    CHECK_JSON(api_route(b, GREVIEWS ":9090", "canary"),
               "{\"name\": \"canary\", \"match\": {\"prefix\": \"/\", \"headers\": ["
               " {\"name\": \"x-canary\", \"exact_match\": \"yes\"}]},"
               " \"route\": {\"cluster\": \"outbound|9090|v3|" GREVIEWS "\"}}");
    CHECK_JSON(api_route(b, GREVIEWS ":9091", "canary"),
               "{\"name\": \"canary\", \"match\": {\"prefix\": \"/\", \"headers\": ["
               " {\"name\": \"x-canary\", \"exact_match\": \"yes\"}]},"
               " \"route\": {\"cluster\": \"outbound|9091|v3|" GREVIEWS "\"}}");
    CHECK_JSON(api_route(b, GREVIEWS ":9090", "query"),
               "{\"name\": \"query\", \"match\": {\"prefix\": \"/weft.test.Other/\","
               " \"case_sensitive\": false},"
               " \"route\": {\"cluster\": \"outbound|9090|v1|" GREVIEWS "\"}}");
    json_decref(b);
}

/* gRPC 1.51's HeaderMatcher fields; string_match nowhere. */
TEST(grpc_header_matchers)
{
    json_t *b = run_grpc(grpcfix, "default");

    CHECK_JSON(json_object_get(api_route(b, GREVIEWS ":9090", "matchers"), "match"),
               "{\"path\": \"/weft.test.Echo/Slow\", \"headers\": ["
               " {\"name\": \"x-present\", \"present_match\": true},"
               " {\"name\": \"x-version\", \"prefix_match\": \"v2\"},"
               " {\"name\": \"x-re\", \"safe_regex_match\": {\"regex\": \"a+b\"}},"
               " {\"name\": \"x-debug\", \"present_match\": true, \"invert_match\": true},"
               " {\"name\": \"x-mode\", \"exact_match\": \"test\", \"invert_match\": true}]}");
    CHECK_INT(count_key(b, "string_match"), 0);
    CHECK_INT(count_key(b, "query_parameters"), 0);
    json_decref(b);
}

/* Weighted clusters with total_weight, zero weights left out, no weft
 * per-filter configs; timeout as max_stream_duration; retries. */
TEST(grpc_split_timeout_retries)
{
    json_t *b = run_grpc(grpcfix, "default");

    CHECK_JSON(
        api_route(b, GREVIEWS ":9090", "split"),
        "{\"name\": \"split\", \"match\": {\"prefix\": \"/\"}, \"route\": {"
        " \"weighted_clusters\": {\"clusters\": ["
        "   {\"name\": \"outbound|9090|v1|" GREVIEWS "\", \"weight\": 80},"
        "   {\"name\": \"outbound|9090|v2|" GREVIEWS "\", \"weight\": 20}],"
        "  \"total_weight\": 100},"
        " \"max_stream_duration\": {\"max_stream_duration\": \"2s\"},"
        " \"retry_policy\": {\"retry_on\": \"unavailable,cancelled\", \"num_retries\": 3}}}");
    json_decref(b);
}

/* Istio's fault as an HTTPFault for gRPC's fault filter, which comes before
 * the router only in the listener that needs it. */
TEST(grpc_fault)
{
    json_t *b = run_grpc(grpcfix, "default");

    CHECK_JSON(
        json_object_get(api_route(b, GREVIEWS ":9091", "faulty"), "typed_per_filter_config"),
        "{\"envoy.filters.http.fault\": {"
        " \"@type\": \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\","
        " \"delay\": {\"fixed_delay\": \"1.5s\","
        "            \"percentage\": {\"numerator\": 30, \"denominator\": \"HUNDRED\"}},"
        " \"abort\": {\"grpc_status\": 14,"
        "            \"percentage\": {\"numerator\": 125000, \"denominator\": \"MILLION\"}}}}");
    CHECK_JSON(json_object_get(api_hcm(b, GREVIEWS ":9091"), "http_filters"),
               "[{\"name\": \"envoy.filters.http.fault\", \"typed_config\": {\"@type\": "
               "  \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\"}},"
               " " ROUTER_FILTER "]");
    CHECK_JSON(json_object_get(api_hcm(b, GREVIEWS ":9090"), "http_filters"),
               "[" ROUTER_FILTER "]");
    /* The only per-filter configs are faults. */
    CHECK_INT(count_key(b, "typed_per_filter_config"), 1);
    json_decref(b);
}

/* Subset clusters, ROUND_ROBIN whatever the rule asks (with a note), the
 * ADS config source, no http2_protocol_options; endpoints of a subset only,
 * each address once. */
TEST(grpc_subset_clusters_and_endpoints)
{
    json_t *b = run_grpc(grpcfix, "default");
    json_t *c = cluster(b, "outbound|9090|v3|" GREVIEWS);
    json_t *istio = json_object_get(
        json_object_get(json_object_get(c, "metadata"), "filter_metadata"), "istio");
    json_t *l;

    CHECK_STR(jstr_at(c, "lb_policy"), "ROUND_ROBIN");
    CHECK(strstr(jstr_at(istio, "lb_note"), "LEAST_REQUEST") != NULL);
    CHECK_STR(jstr_at(istio, "subset"), "v3");
    CHECK_JSON(json_object_get(c, "eds_cluster_config"),
               "{\"eds_config\": {\"ads\": {}, \"resource_api_version\": \"V3\"},"
               " \"service_name\": \"outbound|9090|v3|" GREVIEWS "\"}");
    CHECK_INT(count_key(b, "http2_protocol_options"), 0);
    CHECK_STR(ep_at(b, "outbound|9090|v3|" GREVIEWS, 0), "127.0.0.1:50053");
    CHECK_INT(json_array_size(lbes(b, "outbound|9090|v3|" GREVIEWS)), 1);
    CHECK_INT(json_array_size(lbes(b, "outbound|9090||" GREVIEWS)), 3);
    CHECK_STR(ep_at(b, "outbound|9090|v1|" GREVIEWS, 0), "127.0.0.1:50051");
    CHECK_STR(ep_at(b, "outbound|9090|v2|" GREVIEWS, 0), "127.0.0.1:50052");
    /* Every locality has a weight (gRPC drops a locality without one). */
    size_t i;
    json_array_foreach(json_object_get(b, "endpoints"), i, l)
    {
        json_t *loc = json_array_get(json_object_get(l, "endpoints"), 0);
        if (loc)
            CHECK_INT(json_integer_value(json_object_get(loc, "load_balancing_weight")), 1);
    }
    json_decref(b);
}

/* Another namespace: no short alias, its own VirtualService; timeout 0 and
 * attempts 0 give nothing. */
TEST(grpc_other_namespace)
{
    json_t *b = run_grpc(grpcfix, "other");
    json_t *d = json_object_get(api_vhost(b, GRATINGS ":7070"), "domains");

    CHECK_JSON(d, "[\"" GRATINGS ":7070\", \"ratings.default:7070\", \"ratings.default.svc:7070\","
                  " \"" GRATINGS "\", \"ratings.default\", \"ratings.default.svc\"]");
    CHECK_JSON(api_route(b, GRATINGS ":7070", "other/ratings-off.0"),
               "{\"name\": \"other/ratings-off.0\", \"match\": {\"prefix\": \"/\"},"
               " \"route\": {\"cluster\": \"outbound|7070||" GRATINGS "\"}}");
    json_decref(b);
}

/* The big sidecar fixture under role grpc: whatever it holds, the output
 * stays inside what gRPC 1.51 accepts. */
TEST(grpc_mesh_fixture_stays_grpc_shaped)
{
    json_t *b = run_grpc(mesh, "default");
    json_t *l, *c;
    size_t i;

    CHECK(b != NULL);
    CHECK(json_array_size(json_object_get(b, "listeners")) > 0);
    json_array_foreach(json_object_get(b, "listeners"), i, l)
    {
        json_t *h = json_object_get(json_object_get(l, "api_listener"), "api_listener");
        json_t *f = json_object_get(h, "http_filters");
        const char *name = jstr_at(l, "name");
        CHECK(name && strchr(name, ':') && name[0] != '*');
        CHECK_STR(jstr_at(h, "@type"), HCM_AT);
        CHECK_STR(jstr_at(json_array_get(f, json_array_size(f) - 1), "name"),
                  "envoy.filters.http.router");
        CHECK_INT(
            json_array_size(json_object_get(json_object_get(h, "route_config"), "virtual_hosts")),
            1);
    }
    json_array_foreach(json_object_get(b, "clusters"), i, c)
    {
        CHECK_STR(jstr_at(c, "lb_policy"), "ROUND_ROBIN");
        CHECK(json_object_get(json_object_get(c, "eds_cluster_config"), "eds_config") != NULL);
    }
    CHECK_INT(count_key(b, "string_match"), 0);
    CHECK_INT(count_key(b, "query_parameters"), 0);
    CHECK_INT(count_key(b, "typed_per_filter_config"), count_key(b, "envoy.filters.http.fault"));
    CHECK_INT(count_key(b, "weighted_clusters"), count_key(b, "total_weight"));
    /* The 90/10 split of the fixture, with its fault, retries and timeout. */
    json_t *split = api_route(b, REVIEWS ":9080", "split");
    CHECK_JSON(json_object_get(json_object_get(split, "route"), "weighted_clusters"),
               "{\"clusters\": [{\"name\": \"outbound|9080|v1|" REVIEWS "\", \"weight\": 90},"
               " {\"name\": \"outbound|9080|v2|" REVIEWS
               "\", \"weight\": 10}], \"total_weight\": 100}");
    CHECK_JSON(json_object_get(json_object_get(split, "route"), "retry_policy"),
               "{\"retry_on\": \"5xx,connect-failure\", \"num_retries\": 3}");
    CHECK_JSON(
        json_object_get(json_object_get(split, "typed_per_filter_config"),
                        "envoy.filters.http.fault"),
        "{\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\","
        " \"delay\": {\"fixed_delay\": \"2s\", \"percentage\": {\"numerator\": 500000,"
        "  \"denominator\": \"MILLION\"}},"
        " \"abort\": {\"http_status\": 503, \"percentage\": {\"numerator\": 100000,"
        "  \"denominator\": \"MILLION\"}}}");
    json_decref(b);
}

/* ---- mTLS: PeerAuthentication, inbound chains, upstream transport sockets ------------------- */

/* A configuration from YAML text (the loader's in-memory form). */
static wf_config *load_text(const char *name, const char *yaml)
{
    wf_config_buf buf = {name, yaml, strlen(yaml)};
    wf_config *c = NULL;
    wf_diags d = {0};

    if (wf_config_load_bufs(&buf, 1, &c, &d) != 0) {
        fprintf(stderr, "loading %s failed:\n", name);
        wf_diags_print(&d, stderr);
        c = NULL;
    }
    wf_diags_free(&d);
    return c;
}

#define PA(ns, name, body)                                                                         \
    "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: " name    \
    "\n  namespace: " ns "\nspec:\n" body

/* Every precedence rule has a namespace of its own. */
static const char peer_auth_yaml[] =
    /* mesh-wide: STRICT; a selector in the root namespace applies to nobody */
    PA("istio-system", "default", "  mtls: {mode: STRICT}\n")
    PA("istio-system", "root-sel",
       "  selector: {matchLabels: {app: a}}\n  mtls: {mode: DISABLE}\n")
    /* shop: namespace-wide UNSET inherits the mesh; workload policies */
    PA("shop", "ns-unset", "  mtls: {mode: UNSET}\n")
    PA("shop", "reviews-v1",
       "  selector: {matchLabels: {app: reviews, version: v1}}\n"
       "  mtls: {mode: DISABLE}\n"
       "  portLevelMtls:\n    9080: {mode: STRICT}\n    9090: {mode: UNSET}\n")
    PA("shop", "productpage",
       "  selector: {matchLabels: {app: productpage}}\n"
       "  portLevelMtls:\n    8080: {mode: PERMISSIVE}\n")
    /* legacy: namespace-wide DISABLE beats the mesh */
    PA("legacy", "default", "  mtls: {mode: DISABLE}\n")
    /* dup: two at each level, the first by name wins */
    PA("dup", "b-ns", "  mtls: {mode: STRICT}\n")
    PA("dup", "a-ns", "  mtls: {mode: PERMISSIVE}\n")
    PA("dup", "z-wl", "  selector: {matchLabels: {app: x}}\n  mtls: {mode: STRICT}\n")
    PA("dup", "m-wl", "  selector: {matchLabels: {app: x}}\n  mtls: {mode: DISABLE}\n")
    /* nomtls: a policy without mtls inherits; a selector with no labels is
     * namespace-wide */
    PA("nomtls", "empty", "  {}\n")
    PA("emptysel", "all", "  selector: {matchLabels: {}}\n  mtls: {mode: PERMISSIVE}\n");

TEST(peer_auth_precedence)
{
    wf_config *c = load_text("peer_auth.yaml", peer_auth_yaml);
    const char *const rv1[] = {"app", "reviews", "version", "v1", NULL};
    const char *const rv2[] = {"app", "reviews", "version", "v2", NULL};
    const char *const pp[] = {"app", "productpage", NULL};
    const char *const a[] = {"app", "a", NULL};
    const char *const x[] = {"app", "x", NULL};

    CHECK(c != NULL);
    if (!c)
        return;
    /* Nothing in the namespace: the mesh-wide policy. */
    CHECK_INT(wf_peer_auth_mode(c, "nowhere", NULL, 0), WF_MTLS_STRICT);
    /* Namespace-wide UNSET inherits; a workload the selectors miss. */
    CHECK_INT(wf_peer_auth_mode(c, "shop", rv2, 9080), WF_MTLS_STRICT);
    /* The workload's policy beats the namespace's and the mesh's... */
    CHECK_INT(wf_peer_auth_mode(c, "shop", rv1, 0), WF_MTLS_DISABLE);
    CHECK_INT(wf_peer_auth_mode(c, "shop", rv1, 8000), WF_MTLS_DISABLE);
    /* ...its portLevelMtls beats it for that port; UNSET there inherits. */
    CHECK_INT(wf_peer_auth_mode(c, "shop", rv1, 9080), WF_MTLS_STRICT);
    CHECK_INT(wf_peer_auth_mode(c, "shop", rv1, 9090), WF_MTLS_DISABLE);
    /* A workload policy without mtls inherits (STRICT), its port level not. */
    CHECK_INT(wf_peer_auth_mode(c, "shop", pp, 9080), WF_MTLS_STRICT);
    CHECK_INT(wf_peer_auth_mode(c, "shop", pp, 8080), WF_MTLS_PERMISSIVE);
    /* Selectors select in their own namespace only. */
    CHECK_INT(wf_peer_auth_mode(c, "legacy", rv1, 9080), WF_MTLS_DISABLE);
    /* Namespace-wide beats mesh-wide. */
    CHECK_INT(wf_peer_auth_mode(c, "legacy", NULL, 0), WF_MTLS_DISABLE);
    /* Selector policies in the root namespace apply to nobody; the root
     * namespace's workloads take the mesh-wide policy. */
    CHECK_INT(wf_peer_auth_mode(c, "istio-system", a, 0), WF_MTLS_STRICT);
    CHECK_INT(wf_peer_auth_mode(c, "nowhere", a, 0), WF_MTLS_STRICT);
    /* Several at one level: the first by name (with a warning). */
    CHECK_INT(wf_peer_auth_mode(c, "dup", NULL, 0), WF_MTLS_PERMISSIVE);
    CHECK_INT(wf_peer_auth_mode(c, "dup", x, 0), WF_MTLS_DISABLE);
    /* No mtls at all inherits; matchLabels {} is namespace-wide. */
    CHECK_INT(wf_peer_auth_mode(c, "nomtls", x, 0), WF_MTLS_STRICT);
    CHECK_INT(wf_peer_auth_mode(c, "emptysel", NULL, 0), WF_MTLS_PERMISSIVE);
    CHECK_INT(wf_peer_auth_mode(c, "emptysel", x, 0), WF_MTLS_PERMISSIVE);
    wf_config_free(c);

    /* Nothing at all: PERMISSIVE. */
    CHECK_INT(wf_peer_auth_mode(mesh, "default", productpage, 9080), WF_MTLS_PERMISSIVE);
    /* The mesh-wide level is MeshConfig.rootNamespace's. */
    c = load_text("root.yaml", "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata:\n"
                               "  name: default\n  namespace: mesh-root\nspec:\n"
                               "  rootNamespace: mesh-root\n" PA("mesh-root", "m",
                                                                 "  mtls: {mode: DISABLE}\n")
                                   PA("istio-system", "not-root", "  mtls: {mode: STRICT}\n"));
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(wf_peer_auth_mode(c, "shop", NULL, 0), WF_MTLS_DISABLE);
        /* istio-system is an ordinary namespace here. */
        CHECK_INT(wf_peer_auth_mode(c, "istio-system", NULL, 0), WF_MTLS_STRICT);
        wf_config_free(c);
    }
}

/* The inbound listener's chains follow the mode of the application port. */
TEST(inbound_chains_by_mode)
{
    wf_config *c = load_text("peer_auth.yaml", peer_auth_yaml);
    const char *const rv1[] = {"app", "reviews", "version", "v1", NULL};
    const char *const pp[] = {"app", "productpage", NULL};
    const struct {
        const char *ns;
        const char *const *labels;
        int port;
        const char *chains;
    } cases[] = {
        {"shop", rv1, 9080, "virtualInbound-tls"},       /* STRICT */
        {"shop", rv1, 9090, "virtualInbound-plaintext"}, /* DISABLE */
        {"shop", pp, 8080, "virtualInbound-tls virtualInbound-plaintext"},
        {"legacy", NULL, 8080, "virtualInbound-plaintext"},
    };

    CHECK(c != NULL);
    for (size_t i = 0; c && i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *b = run(c, cases[i].ns, cases[i].labels, cases[i].port), *fc;
        json_t *l = listener(b, "virtualInbound");
        char names[256] = "";
        size_t k, n = 0;

        json_array_foreach(json_object_get(l, "filter_chains"), k, fc)
        {
            const char *tp =
                jstr_at(json_object_get(fc, "filter_chain_match"), "transport_protocol");
            n += (size_t)snprintf(names + n, sizeof(names) - n, "%s%s", n ? " " : "",
                                  jstr_at(fc, "name"));
            /* tls chains and only they terminate TLS; each has the HCM. */
            CHECK_INT(json_object_get(fc, "transport_socket") != NULL, strcmp(tp, "tls") == 0);
            CHECK_STR(jstr_at(json_array_get(json_object_get(fc, "filters"), 0), "name"),
                      "envoy.filters.network.http_connection_manager");
        }
        CHECK_STR(names, cases[i].chains);
        CHECK(json_object_get(l, "listener_filters") != NULL);
        /* The outbound listener is as before: one chain, no transport. */
        CHECK_INT(json_array_size(json_object_get(listener(b, "virtualOutbound"), "filter_chains")),
                  1);
        json_decref(b);
    }
    if (c)
        wf_config_free(c);
}

#define SE(ns, name, body)                                                                         \
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: " name       \
    "\n  namespace: " ns "\nspec:\n" body
#define WE(ns, name, body)                                                                         \
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: " name      \
    "\n  namespace: " ns "\nspec:\n" body
#define DR(ns, name, body)                                                                         \
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: " name    \
    "\n  namespace: " ns "\nspec:\n" body

static const char upstream_yaml[] =
    "apiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: default\n"
    "  namespace: istio-system\nspec:\n  trustDomain: example.org\n"
    /* reviews: two endpoints with sidecars (one without service account), one
     * without; the entry names two more identities, one of them again */
    SE("shop", "reviews",
       "  hosts: [reviews.shop.svc.cluster.local]\n  location: MESH_INTERNAL\n"
       "  ports: [{number: 9080, name: http}, {number: 9081, name: http2-x}]\n"
       "  resolution: STATIC\n  workloadSelector: {labels: {app: reviews}}\n"
       "  subjectAltNames:\n"
       "  - spiffe://other.org/ns/x/sa/y\n  - spiffe://example.org/ns/shop/sa/reviews\n")
    WE("shop", "reviews-v1",
       "  address: 10.0.0.1\n  serviceAccount: reviews\n"
       "  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}\n")
    WE("shop", "reviews-v2",
       "  address: 10.0.0.2\n"
       "  labels: {app: reviews, version: v2, security.istio.io/tlsMode: istio}\n")
    WE("shop", "reviews-legacy", "  address: 10.0.0.3\n  labels: {app: reviews, version: v1}\n")
    /* the rule: no tls (auto), port 9081 DISABLE; subset v2 ISTIO_MUTUAL with
     * its own identities and SNI (beats the port level too) */
    DR("shop", "reviews",
       "  host: reviews.shop.svc.cluster.local\n"
       "  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 9081}\n"
       "      tls: {mode: DISABLE}\n"
       "  subsets:\n  - name: v1\n    labels: {version: v1}\n"
       "  - name: v2\n    labels: {version: v2}\n    trafficPolicy:\n"
       "      tls: {mode: ISTIO_MUTUAL, sni: v2.reviews, subjectAltNames: [spiffe://a/b]}\n")
    /* ratings: ISTIO_MUTUAL for all, from the rule */
    SE("shop", "ratings",
       "  hosts: [ratings.shop.svc.cluster.local]\n  location: MESH_INTERNAL\n"
       "  ports: [{number: 8080, name: http}]\n  resolution: STATIC\n"
       "  endpoints: [{address: 10.0.1.1}]\n")
    DR("shop", "ratings",
       "  host: ratings.shop.svc.cluster.local\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n")
    /* external: SIMPLE with its own roots and names; the default SNI */
    SE("shop", "api", "  hosts: [api.example.com]\n  ports: [{number: 443, name: https}]\n"
                      "  resolution: DNS\n  endpoints: [{address: 127.0.0.1}]\n")
    DR("shop", "api",
       "  host: api.example.com\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n"
       "      caCertificates: /etc/weft/api-ca.pem\n      subjectAltNames: [api.example.com]\n")
    /* MUTUAL without verification, its own SNI; SIMPLE with system roots and
     * a credentialName (ignored with a warning) */
    SE("shop", "bank", "  hosts: [bank.example.com, pay.example.com]\n"
                       "  ports: [{number: 443, name: tls}]\n"
                       "  resolution: DNS\n  endpoints: [{address: 127.0.0.2}]\n")
    DR("shop", "bank",
       "  host: bank.example.com\n  trafficPolicy:\n    tls:\n      mode: MUTUAL\n"
       "      clientCertificate: /etc/weft/client.pem\n      privateKey: /etc/weft/client.key\n"
       "      insecureSkipVerify: true\n      sni: secure.bank.example.com\n")
    DR("shop", "pay",
       "  host: pay.example.com\n"
       "  trafficPolicy: {tls: {mode: SIMPLE, credentialName: pay-secret}}\n")
    /* external, no rule: plaintext (no auto mTLS outside the mesh) */
    SE("shop", "plain", "  hosts: [plain.example.com]\n  ports: [{number: 80, name: http}]\n"
                        "  resolution: DNS\n"
                        "  endpoints: [{address: 127.0.0.3, labels: "
                        "{security.istio.io/tlsMode: istio}}]\n")
    /* a namespace whose servers refuse mTLS: no auto mTLS toward it */
    SE("legacy", "old", "  hosts: [old.legacy.svc.cluster.local]\n  location: MESH_INTERNAL\n"
                        "  ports: [{number: 80, name: http}]\n  resolution: STATIC\n"
                        "  endpoints: [{address: 10.0.2.1}]\n")
    PA("legacy", "default", "  mtls: {mode: DISABLE}\n");

static json_t *tsock(json_t *b, const char *cname)
{
    return json_object_get(cluster(b, cname), "transport_socket");
}

#define RV "reviews.shop.svc.cluster.local"
#define ISTIO_MUTUAL_JSON(sans, sni)                                                               \
    "{\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"                              \
    " \"@type\": \"" UPSTREAM_TLS "\","                                                            \
    " \"common_tls_context\": {"                                                                   \
    "  \"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}],"                         \
    "  \"combined_validation_context\": {"                                                         \
    "   \"default_validation_context\": {" sans "},"                                               \
    "   \"validation_context_sds_secret_config\": {\"name\": \"ROOTCA\"}}},"                       \
    " \"sni\": \"" sni "\"}}"

TEST(upstream_auto_mtls)
{
    wf_config *c = load_text("upstream.yaml", upstream_yaml);
    json_t *b = run(c, "shop", productpage, 0), *m, *e;

    CHECK(b != NULL);
    if (!b)
        goto out;
    /* Auto mTLS: the endpoints' identities in the trust domain (the legacy
     * one and the one without account count: "default"), the entry's names,
     * sorted and unique. */
    m = json_object_get(cluster(b, "outbound|9080||" RV), "transport_socket_matches");
    CHECK_INT(json_array_size(m), 2);
    CHECK_STR(jstr_at(json_array_get(m, 0), "name"), "tlsMode-istio");
    CHECK_JSON(json_object_get(json_array_get(m, 0), "match"), "{\"tlsMode\": \"istio\"}");
    CHECK_JSON(json_object_get(json_array_get(m, 0), "transport_socket"),
               ISTIO_MUTUAL_JSON("\"match_subject_alt_names\": ["
                                 " {\"exact\": \"spiffe://example.org/ns/shop/sa/default\"},"
                                 " {\"exact\": \"spiffe://example.org/ns/shop/sa/reviews\"},"
                                 " {\"exact\": \"spiffe://other.org/ns/x/sa/y\"}]",
                                 "outbound_.9080_._." RV));
    CHECK_JSON(json_array_get(m, 1),
               "{\"name\": \"tlsMode-disabled\", \"match\": {}, \"transport_socket\": {"
               " \"name\": \"envoy.transport_sockets.raw_buffer\","
               " \"typed_config\": {\"@type\": \"" RAW_BUFFER "\"}}}");
    CHECK(tsock(b, "outbound|9080||" RV) == NULL);
    /* A subset: its SNI, the service's identities. */
    m = json_object_get(cluster(b, "outbound|9080|v1|" RV), "transport_socket_matches");
    CHECK_STR(jstr_at(json_object_get(json_object_get(json_array_get(m, 0), "transport_socket"),
                                      "typed_config"),
                      "sni"),
              "outbound_.9080_.v1_." RV);
    /* Endpoints with a sidecar carry the match; the one without does not. */
    e = json_object_get(json_array_get(lbes(b, "outbound|9080||" RV), 0), "metadata");
    CHECK_JSON(json_object_get(json_object_get(e, "filter_metadata"),
                               "envoy.transport_socket_match"),
               "{\"tlsMode\": \"istio\"}");
    CHECK_STR(jstr_at(json_object_get(json_object_get(json_object_get(e, "filter_metadata"),
                                                      "istio"),
                                      "labels"),
                      "security.istio.io/tlsMode"),
              "istio");
    CHECK_STR(ep_at(b, "outbound|9080||" RV, 2), "10.0.0.3:9080");
    e = json_object_get(json_array_get(lbes(b, "outbound|9080||" RV), 2), "metadata");
    CHECK(json_object_get(json_object_get(e, "filter_metadata"), "envoy.transport_socket_match") ==
          NULL);
    /* Outside the mesh, or toward a namespace that disables mTLS: no
     * transport socket at all, whatever the endpoints' labels. */
    CHECK(json_object_get(cluster(b, "outbound|80||plain.example.com"),
                          "transport_socket_matches") == NULL);
    CHECK(tsock(b, "outbound|80||plain.example.com") == NULL);
    CHECK(json_object_get(cluster(b, "outbound|80||old.legacy.svc.cluster.local"),
                          "transport_socket_matches") == NULL);
    CHECK(tsock(b, "outbound|80||old.legacy.svc.cluster.local") == NULL);
    /* The inbound cluster never has one. */
    json_decref(b);
    b = run(c, "shop", productpage, 8000);
    CHECK(json_object_get(cluster(b, "inbound|8000||"), "transport_socket") == NULL);
    CHECK(json_object_get(cluster(b, "inbound|8000||"), "transport_socket_matches") == NULL);
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(upstream_destination_rule_tls)
{
    wf_config *c = load_text("upstream.yaml", upstream_yaml);
    json_t *b = run(c, "shop", productpage, 0), *x;

    CHECK(b != NULL);
    if (!b)
        goto out;
    /* Port level DISABLE: plaintext, for the subset without tls too. */
    CHECK(tsock(b, "outbound|9081||" RV) == NULL);
    CHECK(json_object_get(cluster(b, "outbound|9081||" RV), "transport_socket_matches") == NULL);
    CHECK(tsock(b, "outbound|9081|v1|" RV) == NULL);
    CHECK(json_object_get(cluster(b, "outbound|9081|v1|" RV), "transport_socket_matches") ==
          NULL);
    /* The subset's ISTIO_MUTUAL beats the rule's port level; its own names. */
    CHECK_JSON(tsock(b, "outbound|9081|v2|" RV),
               ISTIO_MUTUAL_JSON("\"match_subject_alt_names\": [{\"exact\": \"spiffe://a/b\"}]",
                                 "v2.reviews"));
    CHECK_JSON(tsock(b, "outbound|9080|v2|" RV),
               ISTIO_MUTUAL_JSON("\"match_subject_alt_names\": [{\"exact\": \"spiffe://a/b\"}]",
                                 "v2.reviews"));
    CHECK(json_object_get(cluster(b, "outbound|9080|v2|" RV), "transport_socket_matches") ==
          NULL);
    /* The rule's ISTIO_MUTUAL: every endpoint, with the service's identity
     * (an inline endpoint without account: "default"). */
    CHECK_JSON(tsock(b, "outbound|8080||ratings.shop.svc.cluster.local"),
               ISTIO_MUTUAL_JSON(
                   "\"match_subject_alt_names\": ["
                   " {\"exact\": \"spiffe://example.org/ns/shop/sa/default\"}]",
                   "outbound_.8080_._.ratings.shop.svc.cluster.local"));
    /* SIMPLE: the rule's roots and names, the host as SNI. */
    CHECK_JSON(tsock(b, "outbound|443||api.example.com"),
               "{\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"
               " \"@type\": \"" UPSTREAM_TLS "\","
               " \"common_tls_context\": {\"validation_context\": {"
               "  \"trusted_ca\": {\"filename\": \"/etc/weft/api-ca.pem\"},"
               "  \"match_subject_alt_names\": [{\"exact\": \"api.example.com\"}]}},"
               " \"sni\": \"api.example.com\"}}");
    /* MUTUAL: the client certificate; insecureSkipVerify: no validation. */
    CHECK_JSON(tsock(b, "outbound|443||bank.example.com"),
               "{\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"
               " \"@type\": \"" UPSTREAM_TLS "\","
               " \"common_tls_context\": {\"tls_certificates\": [{"
               "  \"certificate_chain\": {\"filename\": \"/etc/weft/client.pem\"},"
               "  \"private_key\": {\"filename\": \"/etc/weft/client.key\"}}]},"
               " \"sni\": \"secure.bank.example.com\"}}");
    /* SIMPLE without caCertificates: the system roots; credentialName is
     * ignored. */
    x = json_object_get(json_object_get(tsock(b, "outbound|443||pay.example.com"), "typed_config"),
                        "common_tls_context");
    CHECK_JSON(x, "{\"validation_context\": {\"trusted_ca\": {\"filename\":"
                  " \"/etc/ssl/certs/ca-certificates.crt\"}}}");
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

/* Proxyless gRPC: no transport sockets (it would need certificate
 * providers); the endpoints are as for a sidecar. */
TEST(grpc_has_no_transport_sockets)
{
    wf_config *c = load_text("upstream.yaml", upstream_yaml);
    json_t *b = run_grpc(c, "shop"), *side = run(c, "shop", productpage, 0);

    CHECK(b != NULL && side != NULL);
    CHECK_INT(count_key(b, "transport_socket"), 0);
    CHECK_INT(count_key(b, "transport_socket_matches"), 0);
    CHECK(count_key(side, "transport_socket") > 0);
    CHECK(json_equal(json_object_get(b, "endpoints"), json_object_get(side, "endpoints")));
    json_decref(b);
    json_decref(side);
    if (c)
        wf_config_free(c);
}

/* The trust domain is MeshConfig's, "cluster.local" by default (the mesh
 * fixture sets none). */
TEST(trust_domain_from_mesh_config)
{
    wf_config *c = load_text("upstream.yaml", upstream_yaml);
    json_t *b = run(c, "shop", productpage, 0), *d = run(mesh, "default", productpage, 0);
    char *s = json_dumps(b, 0), *sd = json_dumps(d, 0);

    CHECK(s && strstr(s, "spiffe://example.org/ns/shop/sa/reviews") != NULL);
    CHECK(s && strstr(s, "spiffe://cluster.local/") == NULL);
    CHECK(sd && strstr(sd, "spiffe://cluster.local/ns/default/sa/reviews") != NULL);
    free(s);
    free(sd);
    json_decref(b);
    json_decref(d);
    if (c)
        wf_config_free(c);
}

/* ---- TCP and TLS passthrough (fixture testdata/translate/tcp) ---- */

#define TCP_PROXY_T "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

/* A sidecar of productpage whose app speaks app_protocol, on outbound
 * address 127.0.0.9 (TCP listeners take that address). */
static json_t *run_app(const wf_config *c, const char *app_protocol, int app_port)
{
    wf_proxy_info p = sidecar("default", productpage, app_port);

    p.outbound_addr = "127.0.0.9";
    p.app_protocol = app_protocol;
    return translate_for(c, &p);
}

/* The tcp_proxy config of filter chain fc. */
static json_t *chain_tcp(json_t *fc)
{
    json_t *f = json_array_get(json_object_get(fc, "filters"), 0);

    return json_object_get(f, "typed_config");
}

TEST(tcp_listeners)
{
    wf_config *c = load("tcp");
    json_t *b = run_app(c, NULL, 0), *l, *chains;

    CHECK(b != NULL);
    if (!b)
        goto out;
    /* One listener per TCP/TLS port on the outbound address, none for the
     * port that is the outbound listener's own. */
    CHECK_STR(names_of(json_object_get(b, "listeners"), "name"),
              "127.0.0.9_3306 127.0.0.9_443 127.0.0.9_9000 virtualOutbound");
    /* mysql by its name's prefix: opaque TCP, Istio's default idle timeout. */
    l = listener(b, "127.0.0.9_3306");
    CHECK_JSON(json_object_get(l, "address"),
               "{\"socket_address\": {\"address\": \"127.0.0.9\", \"port_value\": 3306}}");
    CHECK_STR(jstr_at(l, "traffic_direction"), "OUTBOUND");
    CHECK(json_object_get(l, "listener_filters") == NULL);
    chains = json_object_get(l, "filter_chains");
    CHECK_INT(json_array_size(chains), 1);
    CHECK_JSON(json_array_get(chains, 0),
               "{\"name\": \"outbound|3306||mysql.default.svc.cluster.local\", \"filters\": [{"
               " \"name\": \"envoy.filters.network.tcp_proxy\", \"typed_config\": {"
               "  \"@type\": \"" TCP_PROXY_T "\","
               "  \"stat_prefix\": \"outbound|3306||mysql.default.svc.cluster.local\","
               "  \"cluster\": \"outbound|3306||mysql.default.svc.cluster.local\","
               "  \"idle_timeout\": \"3600s\"}}]}");
    /* echo: the tcp route's weights between subsets, the DR's idle timeout;
     * shadow shares port 9000 and is not served there. */
    l = listener(b, "127.0.0.9_9000");
    chains = json_object_get(l, "filter_chains");
    CHECK_INT(json_array_size(chains), 1);
    CHECK_JSON(json_object_get(chain_tcp(json_array_get(chains, 0)), "weighted_clusters"),
               "{\"clusters\": [{\"name\": \"outbound|9000|v1|echo.default.svc.cluster.local\","
               " \"weight\": 80}, {\"name\": \"outbound|9000|v2|echo.default.svc.cluster.local\","
               " \"weight\": 20}]}");
    CHECK(json_object_get(chain_tcp(json_array_get(chains, 0)), "cluster") == NULL);
    CHECK_STR(jstr_at(chain_tcp(json_array_get(chains, 0)), "idle_timeout"), "30s");
    /* The TLS port: a TLS inspector and a chain per server name set. */
    l = listener(b, "127.0.0.9_443");
    CHECK_INT(json_array_size(json_object_get(l, "listener_filters")), 1);
    chains = json_object_get(l, "filter_chains");
    CHECK_INT(json_array_size(chains), 2);
    CHECK_JSON(json_object_get(json_array_get(chains, 0), "filter_chain_match"),
               "{\"server_names\": [\"alpha.example.com\"]}");
    CHECK_STR(jstr_at(chain_tcp(json_array_get(chains, 0)), "cluster"),
              "outbound|443||alpha.example.com");
    CHECK_JSON(json_object_get(json_array_get(chains, 1), "filter_chain_match"),
               "{\"server_names\": [\"beta.example.com\", \"*.beta.example.com\"]}");
    CHECK_STR(jstr_at(chain_tcp(json_array_get(chains, 1)), "cluster"),
              "outbound|443|v2|beta.example.com");
    /* HTTP ports stay on virtualOutbound. */
    CHECK(vhost(b, "web.default.svc.cluster.local:8080") != NULL);
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(tcp_inbound_app)
{
    wf_config *c = load("tcp");
    json_t *b = run_app(c, "tcp", 7777), *chains;

    CHECK(b != NULL);
    if (!b)
        goto out;
    chains = json_object_get(listener(b, "virtualInbound"), "filter_chains");
    CHECK_INT(json_array_size(chains), 2); /* PERMISSIVE: TLS and plaintext */
    for (size_t i = 0; i < 2; i++)
        CHECK_JSON(json_object_get(json_array_get(chains, i), "filters"),
                   "[{\"name\": \"envoy.filters.network.tcp_proxy\", \"typed_config\": {"
                   " \"@type\": \"" TCP_PROXY_T "\", \"stat_prefix\": \"inbound|7777||\","
                   " \"cluster\": \"inbound|7777||\", \"idle_timeout\": \"3600s\"}}]");
    CHECK(cluster(b, "inbound|7777||") != NULL);
    CHECK(json_object_get(cluster(b, "inbound|7777||"), "http2_protocol_options") == NULL);
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(http_connection_options)
{
    wf_config *c = load("tcp");
    json_t *b = run_app(c, NULL, 7777), *h;

    CHECK(b != NULL);
    if (!b)
        goto out;
    for (int i = 0; i < 2; i++) {
        h = hcm(b, i ? "virtualInbound" : "virtualOutbound");
        CHECK_JSON(json_object_get(h, "upgrade_configs"), "[{\"upgrade_type\": \"websocket\"}]");
        CHECK_JSON(json_object_get(h, "common_http_protocol_options"),
                   "{\"idle_timeout\": \"3600s\"}");
        CHECK_STR(jstr_at(h, "stream_idle_timeout"), "300s");
    }
    CHECK_JSON(json_object_get(cluster(b, "outbound|8080||web.default.svc.cluster.local"),
                               "common_http_protocol_options"),
               "{\"idle_timeout\": \"90s\", \"max_requests_per_connection\": 5}");
    CHECK(json_object_get(cluster(b, "outbound|9000||echo.default.svc.cluster.local"),
                          "common_http_protocol_options") == NULL);
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

/* ---- TCP and TLS routes in detail (fixture testdata/translate/l4) ---- */

static FILE *cap_file;
static int cap_fd = -1;

/* Sends what is logged to stderr to a file until capture_end, which
 * returns it (a static buffer) and logs it for the reader of the test
 * output. */
static void capture_begin(void)
{
    fflush(stderr);
    cap_file = tmpfile();
    cap_fd = cap_file ? dup(2) : -1;
    if (cap_fd >= 0)
        dup2(fileno(cap_file), 2);
}

static const char *capture_end(void)
{
    static char buf[16384];
    size_t n = 0;

    buf[0] = 0;
    if (cap_fd < 0)
        return buf;
    fflush(stderr);
    dup2(cap_fd, 2);
    close(cap_fd);
    cap_fd = -1;
    rewind(cap_file);
    n = fread(buf, 1, sizeof(buf) - 1, cap_file);
    buf[n] = 0;
    fclose(cap_file);
    fputs(buf, stderr);
    return buf;
}

/* The filter chain named name of listener lname. */
static json_t *chain_of(json_t *b, const char *lname, const char *name)
{
    return by(json_object_get(listener(b, lname), "filter_chains"), "name", name);
}

#define L4_DB "outbound|5432||db.default.svc.cluster.local"

TEST(l4_tcp_routes)
{
    wf_config *c = load("l4");
    json_t *b, *tp;
    const char *log;

    capture_begin();
    b = run_app(c, NULL, 0);
    log = capture_end();
    CHECK(b != NULL);
    if (!b)
        goto out;
    /* No inbound listener, so 15006 is free; no listener for the wildcard
     * host, the UDP port or the HTTP port. */
    CHECK_STR(names_of(json_object_get(b, "listeners"), "name"),
              "127.0.0.9_15006 127.0.0.9_5432 127.0.0.9_5672 127.0.0.9_6379 127.0.0.9_7000 "
              "127.0.0.9_8443 virtualOutbound");
    /* db: the route for reviews is not this client's, the subnet route is
     * skipped with a warning, the third applies: subset v1, whose own
     * idleTimeout 0s (no timeout) overrides the rule's 20s. */
    tp = chain_tcp(chain_of(b, "127.0.0.9_5432", L4_DB));
    CHECK_JSON(tp, "{\"@type\": \"" TCP_PROXY_T "\", \"stat_prefix\": \"" L4_DB "\","
                   " \"cluster\": \"outbound|5432|v1|db.default.svc.cluster.local\","
                   " \"idle_timeout\": \"0s\"}");
    CHECK(strstr(log, "VirtualService default/db: tcp[1]: match.destinationSubnets is not "
                      "supported") != NULL);
    /* cache: weights all 0 spread evenly; several destinations take the
     * service's idle timeout (none set: an hour). */
    tp = chain_tcp(chain_of(b, "127.0.0.9_6379", "outbound|6379||cache.default.svc.cluster.local"));
    CHECK_JSON(json_object_get(tp, "weighted_clusters"),
               "{\"clusters\": [{\"name\": \"outbound|6379|v1|cache.default.svc.cluster.local\","
               " \"weight\": 1}, {\"name\": \"outbound|6379|v2|cache.default.svc.cluster.local\","
               " \"weight\": 1}]}");
    CHECK_STR(jstr_at(tp, "idle_timeout"), "3600s");
    /* queue: the route for port 5673 does not apply; of 100/0 only v1 is
     * left, a plain cluster; the port-level 45s beats the rule's 10s. */
    tp = chain_tcp(chain_of(b, "127.0.0.9_5672", "outbound|5672||queue.default.svc.cluster.local"));
    CHECK_STR(jstr_at(tp, "cluster"), "outbound|5672|v1|queue.default.svc.cluster.local");
    CHECK(json_object_get(tp, "weighted_clusters") == NULL);
    CHECK_STR(jstr_at(tp, "idle_timeout"), "45s");
    /* clash-in's 15006 is served while no inbound listener takes it. */
    CHECK(chain_of(b, "127.0.0.9_15006", "outbound|15006||clash-in.default.svc.cluster.local"));
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(l4_tls_by_sni)
{
    wf_config *c = load("l4");
    json_t *b = run_app(c, NULL, 0), *l, *chains, *fc;

    CHECK(b != NULL);
    if (!b)
        goto out;
    /* HTTPS is TLS passthrough: a's tls route is for port 9443, so a keeps
     * the chain for its own name; b's first route is for other clients,
     * its second claims b and a, and a is taken already. */
    l = listener(b, "127.0.0.9_8443");
    CHECK_JSON(json_object_get(l, "listener_filters"),
               "[{\"name\": \"envoy.filters.listener.tls_inspector\", \"typed_config\": {"
               " \"@type\": \"type.googleapis.com/envoy.extensions.filters.listener."
               "tls_inspector.v3.TlsInspector\"}}]");
    chains = json_object_get(l, "filter_chains");
    CHECK_INT(json_array_size(chains), 2);
    fc = json_array_get(chains, 0);
    CHECK_JSON(fc, "{\"name\": \"outbound|8443||a.example.com\","
                   " \"filter_chain_match\": {\"server_names\": [\"a.example.com\"]},"
                   " \"filters\": [{\"name\": \"envoy.filters.network.tcp_proxy\","
                   "  \"typed_config\": {\"@type\": \"" TCP_PROXY_T "\","
                   "   \"stat_prefix\": \"outbound|8443||a.example.com\","
                   "   \"cluster\": \"outbound|8443||a.example.com\","
                   "   \"idle_timeout\": \"3600s\"}}]}");
    fc = json_array_get(chains, 1);
    CHECK_STR(jstr_at(fc, "name"), "outbound|8443||b.example.com/tls.1");
    CHECK_JSON(json_object_get(fc, "filter_chain_match"),
               "{\"server_names\": [\"b.example.com\"]}");
    CHECK_STR(jstr_at(chain_tcp(fc), "cluster"), "outbound|8443||b.example.com");
    CHECK_STR(jstr_at(chain_tcp(fc), "stat_prefix"), "outbound|8443||b.example.com");
    /* A TCP and a TLS service on one port: the TLS one by SNI, the TCP one
     * for everything else, one inspector. */
    l = listener(b, "127.0.0.9_7000");
    CHECK_INT(json_array_size(json_object_get(l, "listener_filters")), 1);
    CHECK_STR(names_of(json_object_get(l, "filter_chains"), "name"),
              "outbound|7000||mix-tcp.example.com outbound|7000||mix-tls.example.com");
    CHECK(json_object_get(chain_of(b, "127.0.0.9_7000", "outbound|7000||mix-tcp.example.com"),
                          "filter_chain_match") == NULL);
    CHECK_JSON(json_object_get(chain_of(b, "127.0.0.9_7000", "outbound|7000||mix-tls.example.com"),
                               "filter_chain_match"),
               "{\"server_names\": [\"mix-tls.example.com\"]}");
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(l4_shared_and_reserved_ports)
{
    wf_config *c = load("tcp");
    json_t *b;
    const char *log;

    capture_begin();
    b = run_app(c, NULL, 0);
    log = capture_end();
    CHECK(b != NULL);
    if (!b)
        goto out;
    /* shadow shares echo's 9000: echo (first by host name) keeps it, and
     * the operator is told which service lost and which won. */
    CHECK_INT(json_array_size(json_object_get(listener(b, "127.0.0.9_9000"), "filter_chains")), 1);
    CHECK(strstr(log, "service shadow.default.svc.cluster.local: TCP port 9000 is also a port of "
                      "echo.default.svc.cluster.local") != NULL);
    /* clash's 15001 is the outbound listener's: no second listener there. */
    CHECK(listener(b, "127.0.0.9_15001") == NULL);
    CHECK(strstr(log, "service clash.default.svc.cluster.local: TCP port 15001 is the port of "
                      "the proxy's own outbound listener") != NULL);
    json_decref(b);
    /* With an inbound listener, its port is skipped too. */
    wf_config_free(c);
    c = load("l4");
    capture_begin();
    b = run_app(c, "tcp", 7777);
    log = capture_end();
    CHECK(b != NULL);
    if (!b)
        goto out;
    CHECK(listener(b, "127.0.0.9_15006") == NULL);
    CHECK(strstr(log, "clash-in.default.svc.cluster.local: TCP port 15006 is the port of the "
                      "proxy's own inbound listener") != NULL);
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(l4_strict_tcp_app)
{
    wf_config *c = load("l4");
    json_t *b = run_app(c, "tcp", 7777), *chains, *fc, *ctx;

    CHECK(b != NULL);
    if (!b)
        goto out;
    /* STRICT: the mTLS chain only, its tcp_proxy to the app; the TLS
     * context still offers h2 and http/1.1 (a peer's TCP offers none). */
    chains = json_object_get(listener(b, "virtualInbound"), "filter_chains");
    CHECK_INT(json_array_size(chains), 1);
    fc = json_array_get(chains, 0);
    CHECK_STR(jstr_at(json_object_get(fc, "filter_chain_match"), "transport_protocol"), "tls");
    CHECK_JSON(chain_tcp(fc),
               "{\"@type\": \"" TCP_PROXY_T "\", \"stat_prefix\": \"inbound|7777||\","
               " \"cluster\": \"inbound|7777||\", \"idle_timeout\": \"3600s\"}");
    CHECK_INT(json_array_size(json_object_get(fc, "filters")), 1);
    ctx = json_object_get(json_object_get(json_object_get(fc, "transport_socket"), "typed_config"),
                          "common_tls_context");
    CHECK_JSON(json_object_get(ctx, "alpn_protocols"), "[\"h2\", \"http/1.1\"]");
    CHECK(cluster(b, "inbound|7777||") != NULL);
    CHECK(json_object_get(cluster(b, "inbound|7777||"), "http2_protocol_options") == NULL);
out:
    json_decref(b);
    if (c)
        wf_config_free(c);
}

TEST(l4_http_options_edges)
{
    wf_config *c = load("l4");
    json_t *b = run_app(c, NULL, 0), *g = NULL, *h;
    char err[256];
    wf_proxy_info p = {.role = "grpc", .namespace_ = "default", .labels = productpage};

    CHECK(b != NULL);
    if (!b)
        goto out;
    /* idleTimeout 0s is set (Envoy: no timeout); maxRequestsPerConnection 0
     * is Istio's "unlimited": left out. */
    CHECK_JSON(json_object_get(cluster(b, "outbound|8080||web.default.svc.cluster.local"),
                               "common_http_protocol_options"),
               "{\"idle_timeout\": \"0s\"}");
    /* Proxyless gRPC: no TCP listeners, and neither its connection managers
     * nor its clusters carry the sidecar's HTTP options. */
    g = c ? wf_translate(c, &p, err, sizeof(err)) : NULL;
    CHECK(g != NULL);
    if (!g)
        goto out;
    CHECK_STR(names_of(json_object_get(g, "listeners"), "name"),
              "web.default.svc.cluster.local:8080");
    h = json_object_get(
        json_object_get(json_array_get(json_object_get(g, "listeners"), 0), "api_listener"),
        "api_listener");
    CHECK(h != NULL);
    CHECK(json_object_get(h, "upgrade_configs") == NULL);
    CHECK(json_object_get(h, "common_http_protocol_options") == NULL);
    CHECK(json_object_get(h, "stream_idle_timeout") == NULL);
    CHECK(count_key(json_object_get(g, "clusters"), "common_http_protocol_options") == 0);
out:
    json_decref(b);
    json_decref(g);
    if (c)
        wf_config_free(c);
}

/* A failure while the TCP/TLS listeners are half made (a server name that
 * is not UTF-8, which libyaml would never hand out) frees them too: the
 * sanitizer build checks for leaks. */
TEST(l4_failure_midway_frees_everything)
{
    char *hosts[] = {"a.example.com"}, sni[] = "b\xff.example.com", *snis[] = {sni};
    wf_port port = {.number = 443, .name = "tls"};
    wf_service_entry se = {.meta = {.name = "a", .namespace_ = "default"},
                           .hosts = hosts,
                           .n_hosts = 1,
                           .ports = &port,
                           .n_ports = 1,
                           .resolution = WF_SE_RESOLUTION_STATIC};
    wf_tls_match m = {.sni_hosts = snis, .n_sni_hosts = 1};
    wf_route_destination rd = {.destination = {.host = "a.example.com"}};
    wf_tls_route tr = {.match = &m, .n_match = 1, .route = &rd, .n_route = 1};
    wf_virtual_service vs = {.meta = {.name = "a", .namespace_ = "default"},
                             .hosts = hosts,
                             .n_hosts = 1,
                             .tls = &tr,
                             .n_tls = 1};
    wf_config c;
    wf_proxy_info p = {.namespace_ = "default"};
    char err[256];
    json_t *b;

    memset(&c, 0, sizeof(c));
    c.service_entries = &se;
    c.n_service_entries = 1;
    c.virtual_services = &vs;
    c.n_virtual_services = 1;
    CHECK(wf_translate(&c, &p, err, sizeof(err)) == NULL);
    sni[1] = 'x';
    b = wf_translate(&c, &p, err, sizeof(err));
    CHECK_JSON(
        json_object_get(
            json_array_get(json_object_get(listener(b, "127.0.0.1_443"), "filter_chains"), 0),
            "filter_chain_match"),
        "{\"server_names\": [\"bx.example.com\"]}");
    json_decref(b);
}

int main(void)
{
    mesh = load("mesh");
    RUN(fixture_loads);
    if (mesh) {
        RUN(domains_and_aliases);
        RUN(route_order_and_names);
        RUN(split_90_10_between_subsets);
        RUN(header_match_to_canary);
        RUN(source_labels_namespace_gateways_drop);
        RUN(port_match_and_destination_ports);
        RUN(every_request_match);
        RUN(virtual_service_selection);
        RUN(subset_endpoints_and_workload_entry_ports);
        RUN(lb_policy_precedence);
        RUN(cluster_shape);
        RUN(plugin_placement);
        RUN(inbound_listener);
        RUN(outbound_listener);
        RUN(deterministic_output);
        RUN(bad_proxy_info);
    }
    RUN(plugin_placement_missing_anchors);
    RUN(failure_midway_frees_everything);
    grpcfix = load("grpc");
    RUN(grpc_fixture_loads);
    if (grpcfix) {
        RUN(grpc_listener_cluster_endpoints_shape);
        RUN(grpc_listener_and_cluster_sets);
        RUN(grpc_routes_in_order);
        RUN(grpc_header_matchers);
        RUN(grpc_split_timeout_retries);
        RUN(grpc_fault);
        RUN(grpc_subset_clusters_and_endpoints);
        RUN(grpc_other_namespace);
        wf_config_free(grpcfix);
    }
    if (mesh) {
        RUN(grpc_mesh_fixture_stays_grpc_shaped);
        RUN(peer_auth_precedence);
        RUN(trust_domain_from_mesh_config);
    }
    RUN(inbound_chains_by_mode);
    RUN(upstream_auto_mtls);
    RUN(upstream_destination_rule_tls);
    RUN(grpc_has_no_transport_sockets);
    RUN(tcp_listeners);
    RUN(tcp_inbound_app);
    RUN(http_connection_options);
    RUN(l4_tcp_routes);
    RUN(l4_tls_by_sni);
    RUN(l4_shared_and_reserved_ports);
    RUN(l4_strict_tcp_app);
    RUN(l4_http_options_edges);
    RUN(l4_failure_midway_frees_everything);
    if (mesh)
        wf_config_free(mesh);
    return TEST_SUMMARY();
}
