/*
 * codec_test.c: the xDS protobuf codec (core/xds/codec.c).  The translator's
 * output for the fixtures in testdata/translate/ must survive JSON ->
 * protobuf -> JSON unchanged; a proxyless-style api_listener, the ADS
 * envelopes and a few byte-exact encodings (which prove the field numbers)
 * are checked by hand; malformed bytes and unsupported JSON are refused
 * with an error, never a crash.  When Debian's python3-protobuf is there,
 * codec_crosscheck.py parses our bytes with Python's protobuf, which must
 * write them back identically, and compares proto/ with the Envoy
 * descriptors built into gRPC C-core.
 */
#define _GNU_SOURCE /* memmem */
#include "xds/codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "translate/translate.h"

#include "test.h"
#include "translate_fixture.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static const char *srcdir(void)
{
    static char buf[1024];
    const char *f = __FILE__, *slash = strrchr(f, '/');

    if (slash)
        snprintf(buf, sizeof(buf), "%.*s", (int)(slash - f), f);
    else
        snprintf(buf, sizeof(buf), ".");
    return buf;
}

static wf_config *load(const char *sub)
{
    char path[1200];
    const char *p = path;
    wf_config *c = NULL;
    wf_diags d = {0};

    snprintf(path, sizeof(path), "%s/testdata/translate/%s", srcdir(), sub);
    if (wf_config_load(&p, 1, &c, &d) != 0) {
        fprintf(stderr, "loading %s failed:\n", path);
        wf_diags_print(&d, stderr);
        c = NULL;
    }
    wf_diags_free(&d);
    return c;
}

static const char *const productpage[] = {"app", "productpage", "version", "v1", NULL};
static const char *const reviews_v2[] = {"app", "reviews", "version", "v2", NULL};

static json_t *run(const wf_config *c, const char *role, const char *ns, const char *const *labels,
                   int app_port)
{
    wf_proxy_info p = sidecar(ns, labels, app_port);

    p.role = role;
    return translate_for(c, &p);
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);

    if (!j)
        fprintf(stderr, "bad JSON in test: %s: %s\n", e.text, text);
    return j;
}

/*
 * A copy of j with integral reals as integers.  google.protobuf.Struct
 * holds numbers as doubles, so a free-form 10.0 comes back as 10 (see
 * docs/xds.md); everything else must come back exactly.
 */
static json_t *canonical(const json_t *j)
{
    const char *k;
    json_t *v, *out;
    size_t i;

    switch (json_typeof(j)) {
    case JSON_OBJECT:
        out = json_object();
        json_object_foreach((json_t *)j, k, v) json_object_set_new(out, k, canonical(v));
        return out;
    case JSON_ARRAY:
        out = json_array();
        json_array_foreach(j, i, v) json_array_append_new(out, canonical(v));
        return out;
    case JSON_REAL: {
        double x = json_real_value(j);
        if (x == (double)(long long)x)
            return json_integer((json_int_t)x);
        return json_real(x);
    }
    default:
        return json_deep_copy(j);
    }
}

static int same_json(const json_t *a, const json_t *b, const char *what)
{
    json_t *ca = canonical(a), *cb = canonical(b);
    int ok = json_equal(ca, cb);

    if (!ok) {
        char *x = json_dumps(a, JSON_SORT_KEYS), *y = b ? json_dumps(b, JSON_SORT_KEYS) : NULL;
        fprintf(stderr, "%s differs after the round trip\n  before: %s\n  after:  %s\n", what, x,
                y ? y : "(null)");
        free(x);
        free(y);
    }
    json_decref(ca);
    json_decref(cb);
    return ok;
}

/* Encodes res as type_url, decodes it back; the JSON must be unchanged,
 * and encoding what was decoded must give the same bytes again. */
static int roundtrip(const char *type_url, const json_t *res)
{
    char err[512] = "";
    uint8_t *buf = NULL, *again = NULL;
    size_t len = 0, alen = 0;
    json_t *back;
    int ok;

    if (wf_xds_encode(type_url, res, &buf, &len, err, sizeof(err)) != 0) {
        fprintf(stderr, "encode failed: %s\n", err);
        return 0;
    }
    back = wf_xds_decode(type_url, buf, len, err, sizeof(err));
    if (!back)
        fprintf(stderr, "decode failed: %s\n", err);
    ok = back && same_json(res, back, wf_xds_resource_name(type_url, res));
    if (ok && (wf_xds_encode(type_url, back, &again, &alen, err, sizeof(err)) != 0 || alen != len ||
               memcmp(again, buf, len) != 0)) {
        fprintf(stderr, "%s: encoding the decoded resource gives other bytes\n",
                wf_xds_resource_name(type_url, res));
        ok = 0;
    }
    json_decref(back);
    free(again);
    free(buf);
    return ok;
}

/* Every resource of a translated bundle, and every inline RouteConfiguration
 * on its own; returns the number of resources that failed. */
static int roundtrip_bundle(const json_t *b)
{
    static const struct {
        const char *key, *type;
    } kinds[] = {{"listeners", WF_TYPE_LISTENER},
                 {"clusters", WF_TYPE_CLUSTER},
                 {"endpoints", WF_TYPE_ENDPOINT}};
    int bad = 0, n = 0;
    size_t i, k;
    json_t *r, *fc, *f;

    for (size_t t = 0; t < 3; t++)
        json_array_foreach(json_object_get(b, kinds[t].key), i, r)
        {
            n++;
            bad += !roundtrip(kinds[t].type, r);
            if (t != 0)
                continue;
            json_array_foreach(json_object_get(r, "filter_chains"), k, fc)
            {
                f = json_array_get(json_object_get(fc, "filters"), 0);
                json_t *rc = json_object_get(json_object_get(f, "typed_config"), "route_config");
                if (rc)
                    bad += !roundtrip(WF_TYPE_ROUTE, rc);
            }
            json_t *api = json_object_get(json_object_get(r, "api_listener"), "api_listener");
            if (json_object_get(api, "route_config"))
                bad += !roundtrip(WF_TYPE_ROUTE, json_object_get(api, "route_config"));
        }
    if (n == 0) {
        fprintf(stderr, "empty bundle\n");
        bad++;
    }
    return bad;
}

/* Encoding refused, with an error containing want. */
static int refused(const char *type_url, const char *json, const char *want)
{
    char err[512] = "";
    uint8_t *buf = NULL;
    size_t len = 0;
    json_t *j = parse(json);
    int r = j ? wf_xds_encode(type_url, j, &buf, &len, err, sizeof(err)) : 0;

    json_decref(j);
    free(buf);
    if (r == 0) {
        fprintf(stderr, "encoding was accepted: %s\n", json);
        return 0;
    }
    if (!strstr(err, want)) {
        fprintf(stderr, "error \"%s\" does not mention \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

static int bytes_are(const uint8_t *got, size_t glen, const uint8_t *want, size_t wlen)
{
    if (glen == wlen && memcmp(got, want, wlen) == 0)
        return 1;
    fprintf(stderr, "bytes differ\n  want:");
    for (size_t i = 0; i < wlen; i++)
        fprintf(stderr, " %02x", want[i]);
    fprintf(stderr, "\n  got: ");
    for (size_t i = 0; i < glen; i++)
        fprintf(stderr, " %02x", got[i]);
    fprintf(stderr, "\n");
    return 0;
}

static wf_config *mesh, *grpcfix, *chain2;

/* ---- translator output round trips ----------------------------------------------------------- */

TEST(fixtures_load)
{
    CHECK(mesh != NULL);
    CHECK(grpcfix != NULL);
    CHECK(chain2 != NULL);
}

TEST(roundtrip_mesh_sidecar)
{
    json_t *b = run(mesh, "proxy", "default", productpage, 9080);

    CHECK(b != NULL);
    CHECK_INT(roundtrip_bundle(b), 0);
    json_decref(b);
    b = run(mesh, "proxy", "production", reviews_v2, 0);
    CHECK_INT(roundtrip_bundle(b), 0);
    json_decref(b);
}

TEST(roundtrip_chain_plugins)
{
    json_t *b = run(chain2, "proxy", "default", productpage, 8000);

    CHECK(b != NULL);
    CHECK_INT(roundtrip_bundle(b), 0);
    json_decref(b);
}

TEST(roundtrip_proxyless_grpc)
{
    json_t *b = run(grpcfix, "grpc", "default", NULL, 0);

    CHECK(b != NULL);
    CHECK_INT(roundtrip_bundle(b), 0);
    json_decref(b);
    b = run(mesh, "grpc", "default", productpage, 0);
    CHECK_INT(roundtrip_bundle(b), 0);
    json_decref(b);
}

/* The free-form per-route configuration travels as a TypedStruct named after
 * its filter; the fault percentage 10.0 comes back as the integer 10. */
TEST(per_filter_config_is_typed_struct)
{
    json_t *r =
        parse("{\"name\": \"rc\", \"virtual_hosts\": [{\"name\": \"v\", \"domains\": [\"*\"],"
              " \"routes\": [{\"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster\": \"c\"},"
              " \"typed_per_filter_config\": {\"fault\": {\"abort\": {\"httpStatus\": 503,"
              " \"percentage\": {\"value\": 10.0}}, \"f\": 0.5, \"big\": 4503599627370496,"
              " \"n\": null, \"l\": [true, \"x\", {}], \"e\": []}}}]}]}");
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;
    json_t *back;

    CHECK(wf_xds_encode(WF_TYPE_ROUTE, r, &buf, &len, err, sizeof(err)) == 0);
    /* The TypedStruct's inner type URL is in the bytes. */
    CHECK(memmem(buf, len, "weft.io/route/fault", 19) != NULL);
    CHECK(memmem(buf, len, "type.googleapis.com/xds.type.v3.TypedStruct", 43) != NULL);
    back = wf_xds_decode(WF_TYPE_ROUTE, buf, len, err, sizeof(err));
    CHECK(back != NULL);
    json_t *tpf = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(back, "virtual_hosts"), 0), "routes"),
            0),
        "typed_per_filter_config");
    json_t *fault = json_object_get(tpf, "fault");
    CHECK(json_is_integer(
        json_object_get(json_object_get(json_object_get(fault, "abort"), "percentage"), "value")));
    CHECK(json_is_real(json_object_get(fault, "f")));
    CHECK_INT(json_integer_value(json_object_get(fault, "big")), 4503599627370496LL);
    CHECK(json_is_null(json_object_get(fault, "n")));
    CHECK(same_json(r, back, "route with per-filter config"));
    json_decref(back);
    json_decref(r);
    free(buf);
}

/* ---- proxyless gRPC by hand ------------------------------------------------------------------ */

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

TEST(api_listener_inline_routes)
{
    json_t *l = parse(
        "{\"name\": \"reviews.default.svc.cluster.local:9080\","
        " \"api_listener\": {\"api_listener\": {\"@type\": \"" HCM_TYPE "\","
        "  \"route_config\": {\"name\": \"reviews.default.svc.cluster.local:9080\","
        "   \"virtual_hosts\": [{\"name\": \"reviews\","
        "    \"domains\": [\"reviews.default.svc.cluster.local:9080\"],"
        "    \"routes\": ["
        "     {\"name\": \"hdr\", \"match\": {\"prefix\": \"/\", \"case_sensitive\": false,"
        "       \"headers\": [{\"name\": \"x-user\", \"exact_match\": \"jason\"},"
        "                     {\"name\": \"x-p\", \"prefix_match\": \"v\"},"
        "                     {\"name\": \"x-s\", \"suffix_match\": \"z\", \"invert_match\": true},"
        "                     {\"name\": \"x-r\", \"safe_regex_match\": {\"regex\": \"a+\"}},"
        "                     {\"name\": \"x-c\", \"contains_match\": \"mid\"},"
        "                     {\"name\": \"x-q\", \"present_match\": false},"
        "                     {\"name\": \"x-m\", \"string_match\": {\"suffix\": \"q\","
        "                      \"ignore_case\": true}, \"treat_missing_header_as_empty\": true}],"
        "       \"query_parameters\": [{\"name\": \"q\", \"string_match\": {\"exact\": \"1\"}},"
        "                              {\"name\": \"p\", \"present_match\": true}]},"
        "      \"route\": {\"cluster\": \"outbound|9080|v2|reviews.default.svc.cluster.local\","
        "       \"timeout\": \"0s\","
        "       \"max_stream_duration\": {\"max_stream_duration\": \"1.5s\","
        "                                 \"grpc_timeout_header_max\": \"0.25s\"},"
        "       \"retry_policy\": {\"retry_on\": \"unavailable,cancelled\", \"num_retries\": 3,"
        "        \"per_try_timeout\": \"0.001s\", \"retry_back_off\": {\"base_interval\": "
        "\"0.025s\","
        "        \"max_interval\": \"1s\"}}},"
        "      \"typed_per_filter_config\": {\"envoy.filters.http.fault\": {"
        "       \"@type\": "
        "\"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\","
        "       \"delay\": {\"fixed_delay\": \"2s\", \"percentage\": {\"numerator\": 30,"
        "        \"denominator\": \"HUNDRED\"}},"
        "       \"abort\": {\"grpc_status\": 14, \"percentage\": {\"numerator\": 125000,"
        "        \"denominator\": \"MILLION\"}}}}},"
        "     {\"match\": {\"path_separated_prefix\": \"/pkg.Svc\"},"
        "      \"route\": {\"weighted_clusters\": {\"clusters\": ["
        "        {\"name\": \"a\", \"weight\": 90},"
        "        {\"name\": \"b\", \"weight\": 10, \"typed_per_filter_config\": {\"x\": {}}}],"
        "       \"total_weight\": 100}}},"
        "     {\"name\": \"opt\", \"match\": {\"safe_regex\": {\"regex\": \"/v[0-9]+/.*\"}},"
        "      \"typed_per_filter_config\": {\"weft.cors\": {"
        "       \"@type\": \"type.googleapis.com/envoy.config.route.v3.FilterConfig\","
        "       \"config\": {\"@type\": \"type.googleapis.com/xds.type.v3.TypedStruct\","
        "        \"type_url\": \"weft.io/route/cors\", \"value\": {\"maxAge\": \"1s\"}},"
        "       \"is_optional\": true}},"
        "      \"direct_response\": {\"status\": 418, \"body\": {\"inline_string\": \"teapot\"}}},"
        "     {\"match\": {\"path\": \"/raw\"}, \"direct_response\": {\"status\": 200,"
        "      \"body\": {\"inline_bytes\": \"AAEC/w==\"}}}],"
        "    \"typed_per_filter_config\": {\"retry\": {\"attempts\": 2}},"
        "    \"retry_policy\": {\"retry_on\": \"5xx\"}}]},"
        "  \"http_filters\": ["
        "   {\"name\": \"envoy.filters.http.fault\", \"typed_config\": {\"@type\":"
        "    \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\"}},"
        "   {\"name\": \"weft.stats\", \"is_optional\": true, \"typed_config\": {"
        "    \"@type\": \"type.googleapis.com/xds.type.v3.TypedStruct\","
        "    \"type_url\": \"weft.io/module/stats\", \"value\": {\"buckets\": [1, 5, 10]}}},"
        "   {\"name\": \"envoy.filters.http.router\", \"typed_config\": {\"@type\":"
        "    \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}}");

    CHECK(l != NULL);
    CHECK(roundtrip(WF_TYPE_LISTENER, l));
    json_decref(l);

    /* The RDS form of the same. */
    l = parse("{\"name\": \"r:80\", \"api_listener\": {\"api_listener\": {\"@type\": \"" HCM_TYPE
              "\", \"rds\": {\"route_config_name\": \"r:80\", \"config_source\": {\"ads\": {},"
              " \"resource_api_version\": \"V3\", \"initial_fetch_timeout\": \"15s\"}},"
              " \"http_filters\": [{\"name\": \"router\", \"typed_config\": {\"@type\":"
              " \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}}");
    CHECK(roundtrip(WF_TYPE_LISTENER, l));
    json_decref(l);
}

TEST(cluster_and_assignment_by_hand)
{
    json_t *c = parse(
        "{\"name\": \"outbound|9080|v1|reviews\", \"type\": \"EDS\","
        " \"eds_cluster_config\": {\"eds_config\": {\"ads\": {}, \"resource_api_version\": \"V3\"},"
        "  \"service_name\": \"outbound|9080|v1|reviews\"},"
        " \"connect_timeout\": \"2.5s\", \"lb_policy\": \"RING_HASH\","
        " \"http2_protocol_options\": {},"
        " \"circuit_breakers\": {\"thresholds\": [{\"priority\": \"DEFAULT\", \"max_requests\": "
        "1024,"
        "  \"max_retries\": 0}]},"
        " \"outlier_detection\": {\"consecutive_5xx\": 5, \"interval\": \"10s\","
        "  \"base_ejection_time\": \"30s\", \"max_ejection_percent\": 100,"
        "  \"failure_percentage_threshold\": 85, \"enforcing_failure_percentage\": 100,"
        "  \"failure_percentage_minimum_hosts\": 5, \"failure_percentage_request_volume\": 50,"
        "  \"max_ejection_time\": \"300s\", \"split_external_local_origin_errors\": false},"
        " \"metadata\": {\"filter_metadata\": {\"istio\": {\"subset\": \"v1\","
        "  \"services\": [{\"host\": \"reviews\", \"name\": \"reviews\", \"namespace\": "
        "\"default\"}]}}}}");
    json_t *e = parse("{\"cluster_name\": \"outbound|9080|v1|reviews\", \"endpoints\": ["
                      " {\"locality\": {\"region\": \"eu\", \"zone\": \"a\", \"sub_zone\": \"1\"},"
                      "  \"load_balancing_weight\": 1, \"priority\": 0, \"lb_endpoints\": ["
                      "  {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"::1\","
                      "   \"port_value\": 9080, \"protocol\": \"TCP\"}}, \"hostname\": \"h\"},"
                      "   \"health_status\": \"UNKNOWN\", \"load_balancing_weight\": 3,"
                      "   \"metadata\": {\"filter_metadata\": {\"istio\": {\"labels\": "
                      "{\"version\": \"v1\"}}}}}]},"
                      " {\"locality\": {}, \"lb_endpoints\": []}]}");
    json_t *empty = parse("{\"cluster_name\": \"none\", \"endpoints\": []}");

    CHECK(roundtrip(WF_TYPE_CLUSTER, c));
    CHECK(roundtrip(WF_TYPE_ENDPOINT, e));
    CHECK(roundtrip(WF_TYPE_ENDPOINT, empty));
    CHECK_STR(wf_xds_resource_name(WF_TYPE_ENDPOINT, e), "outbound|9080|v1|reviews");
    CHECK_STR(wf_xds_resource_name(WF_TYPE_CLUSTER, c), "outbound|9080|v1|reviews");
    CHECK(wf_xds_resource_name(WF_TYPE_CLUSTER, e) == NULL);
    json_decref(c);
    json_decref(e);
    json_decref(empty);
}

TEST(durations)
{
    static const char *const ok[] = {"0s",           "10s",   "0.250s",        "0.25s",
                                     "1.000000001s", "-1.5s", "315576000000s", "0.001s"};
    static const char *const canon[] = {"0s",           "10s",   "0.25s",         "0.25s",
                                        "1.000000001s", "-1.5s", "315576000000s", "0.001s"};
    static const char *const bad[] = {
        "10", "1.5ms", "s", ".5s", "1.s", "1.0000000001s", "315576000001s", "1 s", "+1s"};
    char json[200], err[256];

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        snprintf(json, sizeof(json), "{\"name\": \"c\", \"connect_timeout\": \"%s\"}", ok[i]);
        json_t *j = parse(json), *back = NULL;
        CHECK(wf_xds_encode(WF_TYPE_CLUSTER, j, &buf, &len, err, sizeof(err)) == 0);
        back = buf ? wf_xds_decode(WF_TYPE_CLUSTER, buf, len, err, sizeof(err)) : NULL;
        CHECK_STR(json_string_value(json_object_get(back, "connect_timeout")), canon[i]);
        json_decref(back);
        json_decref(j);
        free(buf);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json), "{\"name\": \"c\", \"connect_timeout\": \"%s\"}", bad[i]);
        CHECK(refused(WF_TYPE_CLUSTER, json, "connect_timeout: \""));
    }
}

/* ---- mTLS: listeners and clusters with transport sockets ------------------------------------- */

#define TLS_UP "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define TLS_DOWN                                                                                   \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

/* Workloads in every PeerAuthentication mode, clusters of every kind of
 * transport (auto mTLS, ISTIO_MUTUAL, SIMPLE, MUTUAL, plaintext). */
static const char tls_yaml[] =
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
    "  name: strict\n  namespace: default\nspec:\n  selector: {matchLabels: {app: strict}}\n"
    "  mtls: {mode: STRICT}\n"
    "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n"
    "  name: off\n  namespace: default\nspec:\n  selector: {matchLabels: {app: off}}\n"
    "  mtls: {mode: DISABLE}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
    "  name: reviews\n  namespace: default\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n"
    "  location: MESH_INTERNAL\n  ports: [{number: 9080, name: http}]\n  resolution: STATIC\n"
    "  subjectAltNames: [spiffe://cluster.local/ns/default/sa/extra]\n"
    "  endpoints:\n  - {address: 10.0.0.1, serviceAccount: reviews,"
    " labels: {version: v1, security.istio.io/tlsMode: istio}}\n"
    "  - {address: 10.0.0.2, labels: {version: v2}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n"
    "  name: reviews\n  namespace: default\nspec:\n  host: reviews\n  subsets:\n"
    "  - {name: v1, labels: {version: v1}, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n"
    "  - {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: DISABLE}}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
    "  name: ext\n  namespace: default\nspec:\n  hosts: [api.example.com, bank.example.com]\n"
    "  ports: [{number: 443, name: https}]\n  resolution: STATIC\n"
    "  endpoints: [{address: 127.0.0.1}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n"
    "  name: api\n  namespace: default\nspec:\n  host: api.example.com\n"
    "  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /ca.pem, subjectAltNames: [a, b],"
    " sni: api}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n"
    "  name: bank\n  namespace: default\nspec:\n  host: bank.example.com\n"
    "  trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}\n";

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

/* Every key anywhere under v: how many objects have key k. */
static size_t count_key(const json_t *v, const char *k)
{
    size_t n = 0, i;
    const char *key;
    json_t *x;

    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, x) n += (strcmp(key, k) == 0) + count_key(x, k);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, x) n += count_key(x, k);
    }
    return n;
}

/* The virtualInbound listener of bundle b. */
static json_t *inbound_of(json_t *b)
{
    size_t i;
    json_t *l;

    json_array_foreach(json_object_get(b, "listeners"), i, l)
    {
        const char *n = json_string_value(json_object_get(l, "name"));
        if (n && strcmp(n, "virtualInbound") == 0)
            return l;
    }
    return NULL;
}

static const char *const strict_app[] = {"app", "strict", NULL};
static const char *const off_app[] = {"app", "off", NULL};

/* The translator's TLS output survives JSON -> protobuf -> JSON. */
TEST(roundtrip_tls_bundles)
{
    wf_config *c = load_text("tls.yaml", tls_yaml);
    const char *const *labels[] = {productpage, strict_app, off_app};

    CHECK(c != NULL);
    for (size_t i = 0; c && i < 3; i++) {
        json_t *b = run(c, "proxy", "default", labels[i], 8080);
        CHECK(b != NULL);
        CHECK_INT(roundtrip_bundle(b), 0);
        /* What was carried: chains by mode, and every kind of transport. */
        json_t *in = inbound_of(b);
        CHECK_INT(count_key(in, "filter_chain_match"), i == 0 ? 2 : 1);
        CHECK_INT(count_key(in, "listener_filters"), 1);
        CHECK_INT(count_key(json_object_get(b, "clusters"), "transport_socket_matches"), 1);
        CHECK_INT(count_key(json_object_get(b, "clusters"), "tls_certificates"), 1);
        CHECK_INT(count_key(json_object_get(b, "clusters"), "validation_context"), 2);
        /* reviews-v1's endpoint, in the service's cluster and in v1's. */
        CHECK_INT(count_key(json_object_get(b, "endpoints"), "envoy.transport_socket_match"), 2);
        json_decref(b);
    }
    if (c)
        wf_config_free(c);
}

/* The shapes of docs/resources.md ("TLS"), written by hand. */
TEST(tls_by_hand)
{
    json_t *l = parse(
        "{\"name\": \"virtualInbound\", \"traffic_direction\": \"INBOUND\","
        " \"address\": {\"socket_address\": {\"address\": \"0.0.0.0\", \"port_value\": 15006}},"
        " \"listener_filters\": [{\"name\": \"envoy.filters.listener.tls_inspector\","
        "  \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.filters.listener."
        "tls_inspector.v3.TlsInspector\"}}],"
        " \"filter_chains\": ["
        "  {\"name\": \"virtualInbound-tls\", \"filter_chain_match\": {\"transport_protocol\": "
        "\"tls\"},"
        "   \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"
        "    \"@type\": \"" TLS_DOWN "\","
        "    \"common_tls_context\": {"
        "     \"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}],"
        "     \"combined_validation_context\": {\"default_validation_context\": {},"
        "      \"validation_context_sds_secret_config\": {\"name\": \"ROOTCA\"}},"
        "     \"alpn_protocols\": [\"h2\", \"http/1.1\"]},"
        "    \"require_client_certificate\": true}},"
        "   \"filters\": [{\"name\": \"envoy.filters.network.http_connection_manager\","
        "    \"typed_config\": {\"@type\": \"" HCM_TYPE "\", \"stat_prefix\": \"in\","
        "     \"http_filters\": []}}]},"
        "  {\"name\": \"virtualInbound-plaintext\","
        "   \"filter_chain_match\": {\"transport_protocol\": \"raw_buffer\"},"
        "   \"filters\": [{\"name\": \"envoy.filters.network.http_connection_manager\","
        "    \"typed_config\": {\"@type\": \"" HCM_TYPE "\", \"stat_prefix\": \"in\","
        "     \"http_filters\": []}}]}]}");
    json_t *c = parse(
        "{\"name\": \"outbound|9080|v1|reviews.default.svc.cluster.local\", \"type\": \"EDS\","
        " \"transport_socket_matches\": ["
        "  {\"name\": \"tlsMode-istio\", \"match\": {\"tlsMode\": \"istio\"},"
        "   \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"
        "    \"@type\": \"" TLS_UP "\","
        "    \"common_tls_context\": {"
        "     \"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}],"
        "     \"combined_validation_context\": {\"default_validation_context\": {"
        "       \"match_subject_alt_names\": [{\"exact\": \"spiffe://td/ns/a/sa/b\"},"
        "                                    {\"exact\": \"spiffe://td/ns/a/sa/c\"}]},"
        "      \"validation_context_sds_secret_config\": {\"name\": \"ROOTCA\"}}},"
        "    \"sni\": \"outbound_.9080_.v1_.reviews.default.svc.cluster.local\"}}},"
        "  {\"name\": \"tlsMode-disabled\", \"match\": {},"
        "   \"transport_socket\": {\"name\": \"envoy.transport_sockets.raw_buffer\","
        "    \"typed_config\": {\"@type\": \"type.googleapis.com/"
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer\"}}}]}");
    json_t *m = parse(
        "{\"name\": \"outbound|443||bank.example.com\","
        " \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": {"
        "  \"@type\": \"" TLS_UP "\","
        "  \"common_tls_context\": {"
        "   \"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"/c.pem\"},"
        "                          \"private_key\": {\"filename\": \"/k.pem\"}}],"
        "   \"validation_context\": {\"trusted_ca\": {\"filename\": \"/ca.pem\"},"
        "    \"match_subject_alt_names\": [{\"exact\": \"bank.example.com\"}]}},"
        "  \"sni\": \"bank.example.com\"}}}");
    json_t *e = parse(
        "{\"cluster_name\": \"c\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {"
        " \"address\": {\"socket_address\": {\"address\": \"10.0.0.1\", \"port_value\": 80}}},"
        " \"metadata\": {\"filter_metadata\": {"
        "  \"istio\": {\"labels\": {\"security.istio.io/tlsMode\": \"istio\"},"
        "            \"service_account\": \"sa\"},"
        "  \"envoy.transport_socket_match\": {\"tlsMode\": \"istio\"}}}}]}]}");

    CHECK(roundtrip(WF_TYPE_LISTENER, l));
    CHECK(roundtrip(WF_TYPE_CLUSTER, c));
    CHECK(roundtrip(WF_TYPE_CLUSTER, m));
    CHECK(roundtrip(WF_TYPE_ENDPOINT, e));
    /* A transport socket of a type the codec does not carry is refused. */
    CHECK(refused(WF_TYPE_CLUSTER,
                  "{\"name\": \"x\", \"transport_socket\": {\"name\": \"alts\", \"typed_config\":"
                  " {\"@type\": \"type.googleapis.com/envoy.extensions.transport_sockets.alts.v3."
                  "Alts\"}}}",
                  "transport_socket.typed_config: unsupported type"));
    /* validation_context and combined_validation_context are alternatives. */
    CHECK(refused(WF_TYPE_CLUSTER,
                  "{\"name\": \"x\", \"transport_socket\": {\"name\": \"tls\", \"typed_config\":"
                  " {\"@type\": \"" TLS_UP "\", \"common_tls_context\": {"
                  "  \"validation_context\": {}, \"combined_validation_context\": {}}}}}",
                  "alternatives"));
    json_decref(l);
    json_decref(c);
    json_decref(m);
    json_decref(e);
}

/* Field numbers of the TLS messages, byte by byte. */
TEST(tls_bytes)
{
    json_t *l = parse("{\"name\": \"l\", \"filter_chains\": [{\"filter_chain_match\":"
                      " {\"transport_protocol\": \"tls\"}, \"name\": \"t\"}],"
                      " \"listener_filters\": [{\"name\": \"i\"}]}");
    static const uint8_t want_l[] = {
        0x0a, 0x01, 'l',            /* name = 1 */
        0x1a, 0x0a,                 /* filter_chains = 3 */
        0x0a, 0x05,                 /*   filter_chain_match = 1 */
        0x4a, 0x03, 't',  'l', 's', /*     transport_protocol = 9 */
        0x3a, 0x01, 't',            /*   name = 7 */
        0x4a, 0x03,                 /* listener_filters = 9 */
        0x0a, 0x01, 'i',            /*   name = 1 */
    };
    json_t *c = parse("{\"name\": \"c\", \"transport_socket_matches\": [{\"name\": \"m\","
                      " \"match\": {}, \"transport_socket\": {\"name\": \"r\"}}]}");
    static const uint8_t want_c[] = {
        0x0a, 0x01, 'c',       /* name = 1 */
        0xda, 0x02, 0x0a,      /* transport_socket_matches = 43 */
        0x0a, 0x01, 'm',       /*   name = 1 */
        0x12, 0x00,            /*   match = 2: Struct {} */
        0x1a, 0x03,            /*   transport_socket = 3 */
        0x0a, 0x01, 'r',       /*     name = 1 */
    };
    json_t *up = parse(
        "{\"name\": \"u\", \"transport_socket\": {\"name\": \"t\", \"typed_config\": {"
        " \"@type\": \"" TLS_UP "\", \"sni\": \"n\", \"common_tls_context\": {"
        "  \"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"c\"},"
        "                         \"private_key\": {\"filename\": \"k\"}}],"
        "  \"validation_context\": {\"trusted_ca\": {\"filename\": \"r\"},"
        "   \"match_subject_alt_names\": [{\"exact\": \"s\"}]},"
        "  \"alpn_protocols\": [\"h2\"]}}}}");
    /* The Any's value: an UpstreamTlsContext. */
    static const uint8_t want_up[] = {
        0x12, 0x21,                   /* Any value = 2 */
        0x0a, 0x1c,                   /* common_tls_context = 1 */
        0x12, 0x0a,                   /*   tls_certificates = 2 */
        0x0a, 0x03, 0x0a, 0x01, 'c',  /*     certificate_chain = 1 {filename = 1} */
        0x12, 0x03, 0x0a, 0x01, 'k',  /*     private_key = 2 {filename = 1} */
        0x1a, 0x0a,                   /*   validation_context = 3 */
        0x0a, 0x03, 0x0a, 0x01, 'r',  /*     trusted_ca = 1 {filename = 1} */
        0x4a, 0x03, 0x0a, 0x01, 's',  /*     match_subject_alt_names = 9 {exact = 1} */
        0x22, 0x02, 'h',  '2',        /*   alpn_protocols = 4 */
        0x12, 0x01, 'n',              /* sni = 2 */
    };
    json_t *down = parse(
        "{\"name\": \"d\", \"filter_chains\": [{\"transport_socket\": {\"name\": \"t\","
        " \"typed_config\": {\"@type\": \"" TLS_DOWN "\", \"require_client_certificate\": true,"
        " \"common_tls_context\": {"
        "  \"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}],"
        "  \"combined_validation_context\": {\"default_validation_context\": {},"
        "   \"validation_context_sds_secret_config\": {\"name\": \"ROOTCA\"}}}}}}]}");
    static const uint8_t want_down[] = {
        0x12, 0x1f,                                              /* Any value = 2 */
        0x0a, 0x19,                                              /* common_tls_context = 1 */
        0x32, 0x09, 0x0a, 0x07, 'd', 'e', 'f', 'a', 'u', 'l', 't', /* sds configs = 6 {name} */
        0x42, 0x0c,                                              /*   combined = 8 */
        0x0a, 0x00,                                              /*     default_validation = 1 */
        0x12, 0x08, 0x0a, 0x06, 'R', 'O', 'O', 'T', 'C', 'A',    /*     sds config = 2 */
        0x12, 0x02, 0x08, 0x01, /* require_client_certificate = 2: BoolValue {value = 1} */
    };
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_encode(WF_TYPE_LISTENER, l, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want_l, sizeof(want_l)));
    free(buf);
    CHECK(wf_xds_encode(WF_TYPE_CLUSTER, c, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want_c, sizeof(want_c)));
    free(buf);
    CHECK(wf_xds_encode(WF_TYPE_CLUSTER, up, &buf, &len, err, sizeof(err)) == 0);
    /* Cluster.transport_socket = 24, TransportSocket.typed_config = 3. */
    CHECK(buf && len > 5 && buf[3] == 0xc2 && buf[4] == 0x01);
    CHECK(memmem(buf, len, TLS_UP, strlen(TLS_UP)) != NULL);
    CHECK(buf && len >= sizeof(want_up) &&
          bytes_are(buf + len - sizeof(want_up), sizeof(want_up), want_up, sizeof(want_up)));
    free(buf);
    CHECK(wf_xds_encode(WF_TYPE_LISTENER, down, &buf, &len, err, sizeof(err)) == 0);
    CHECK(buf && len >= sizeof(want_down) &&
          bytes_are(buf + len - sizeof(want_down), sizeof(want_down), want_down,
                    sizeof(want_down)));
    free(buf);
    json_decref(l);
    json_decref(c);
    json_decref(up);
    json_decref(down);
}

/* ---- exact bytes: the field numbers ---------------------------------------------------------- */

TEST(cluster_bytes)
{
    json_t *c = parse("{\"name\": \"a\", \"type\": \"EDS\", \"eds_cluster_config\": {"
                      "\"eds_config\": {\"ads\": {}, \"resource_api_version\": \"V3\"},"
                      " \"service_name\": \"a\"}, \"connect_timeout\": \"1.5s\","
                      " \"lb_policy\": \"ROUND_ROBIN\","
                      " \"metadata\": {\"filter_metadata\": {\"istio\": {\"n\": 1}}}}");
    static const uint8_t want[] = {
        0x0a, 0x01, 'a',                    /* name = 1 */
        0x10, 0x03,                         /* type = 2: EDS = 3 */
        0x1a, 0x09,                         /* eds_cluster_config = 3 */
        0x0a, 0x04,                         /*   eds_config = 1 */
        0x1a, 0x00,                         /*     ads = 3 {} */
        0x30, 0x02,                         /*     resource_api_version = 6: V3 = 2 */
        0x12, 0x01, 'a',                    /*   service_name = 2 */
        0x22, 0x08,                         /* connect_timeout = 4 */
        0x08, 0x01,                         /*   seconds = 1 */
        0x10, 0x80, 0xca, 0xb5, 0xee, 0x01, /* nanos = 2: 500000000 */
        0x30, 0x00,                         /* lb_policy = 6: ROUND_ROBIN = 0, sent: it was given */
        0xca, 0x01, 0x1b,                   /* metadata = 25 */
        0x0a, 0x19,                         /*   filter_metadata = 1, entry */
        0x0a, 0x05, 'i',  's',  't',  'i',  'o',             /* key = 1 */
        0x12, 0x10,                                          /*     value = 2: Struct */
        0x0a, 0x0e,                                          /*       fields = 1, entry */
        0x0a, 0x01, 'n',                                     /*         key */
        0x12, 0x09,                                          /*         value: Value */
        0x11, 0,    0,    0,    0,    0,    0,   0xf0, 0x3f, /* number_value = 2: 1.0 */
    };
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_encode(WF_TYPE_CLUSTER, c, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want, sizeof(want)));
    free(buf);
    json_decref(c);
}

TEST(listener_bytes)
{
    json_t *l =
        parse("{\"name\": \"l\", \"traffic_direction\": \"OUTBOUND\","
              " \"address\": {\"socket_address\": {\"address\": \"::\", \"port_value\": 80}},"
              " \"api_listener\": {\"api_listener\": {\"@type\": \"" HCM_TYPE "\","
              " \"http_filters\": [{\"name\": \"r\", \"is_optional\": true}]}}}");
    static const uint8_t want[] = {
        0x0a, 0x01, 'l',       /* name = 1 */
        0x12, 0x08,            /* address = 2 */
        0x0a, 0x06,            /*   socket_address = 1 */
        0x12, 0x02, ':',  ':', /*     address = 2 */
        0x18, 0x50,            /*     port_value = 3: 80 */
        0x80, 0x01, 0x02,      /* traffic_direction = 16: OUTBOUND = 2 */
        0x9a, 0x01, 0x72,      /* api_listener = 19 */
        0x0a, 0x70,            /*   api_listener = 1: Any */
        0x0a, 0x65,            /*     type_url = 1 */
        't',  'y',  'p',  'e', '.', 'g', 'o', 'o', 'g', 'l', 'e', 'a',  'p',  'i', 's',
        '.',  'c',  'o',  'm', '/', 'e', 'n', 'v', 'o', 'y', '.', 'e',  'x',  't', 'e',
        'n',  's',  'i',  'o', 'n', 's', '.', 'f', 'i', 'l', 't', 'e',  'r',  's', '.',
        'n',  'e',  't',  'w', 'o', 'r', 'k', '.', 'h', 't', 't', 'p',  '_',  'c', 'o',
        'n',  'n',  'e',  'c', 't', 'i', 'o', 'n', '_', 'm', 'a', 'n',  'a',  'g', 'e',
        'r',  '.',  'v',  '3', '.', 'H', 't', 't', 'p', 'C', 'o', 'n',  'n',  'e', 'c',
        't',  'i',  'o',  'n', 'M', 'a', 'n', 'a', 'g', 'e', 'r', 0x12, 0x07, /*     value = 2:
                                                                                 HttpConnectionManager
                                                                               */
        0x2a, 0x05,      /*       http_filters = 5 */
        0x0a, 0x01, 'r', /*         name = 1 */
        0x30, 0x01,      /*         is_optional = 6 */
    };
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(strlen(HCM_TYPE) == 0x65);
    CHECK(wf_xds_encode(WF_TYPE_LISTENER, l, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want, sizeof(want)));
    free(buf);
    json_decref(l);
}

TEST(request_bytes)
{
    char *names[] = {"a"};
    wf_xds_request r = {.version_info = "1",
                        .resource_names = names,
                        .n_resource_names = 1,
                        .type_url = "t",
                        .response_nonce = "n",
                        .has_error = 1,
                        .error_code = 3,
                        .error_message = "bad"};
    static const uint8_t want[] = {
        0x0a, 0x01, '1',                                   /* version_info = 1 */
        0x1a, 0x01, 'a',                                   /* resource_names = 3 */
        0x22, 0x01, 't',                                   /* type_url = 4 */
        0x2a, 0x01, 'n',                                   /* response_nonce = 5 */
        0x32, 0x07, 0x08, 0x03, 0x12, 0x03, 'b', 'a', 'd', /* error_detail = 6 {code, message} */
    };
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_request_encode(&r, &buf, &len) == 0);
    CHECK(bytes_are(buf, len, want, sizeof(want)));
    free(buf);
}

/* ---- envelopes ------------------------------------------------------------------------------- */

TEST(request_roundtrip_with_node)
{
    json_t *node =
        parse("{\"id\": \"sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local\","
              " \"cluster\": \"productpage.default\","
              " \"metadata\": {\"NAMESPACE\": \"default\", \"SERVICE_ACCOUNT\": \"bookinfo\","
              "  \"LABELS\": {\"app\": \"productpage\", \"version\": \"v1\"},"
              "  \"INSTANCE_IPS\": \"10.0.0.1\", \"GENERATOR\": \"grpc\", \"PORTS\": [9080, 15006],"
              "  \"ratio\": 0.5, \"on\": true, \"none\": null, \"deep\": {\"a\": [{\"b\": [[]]}]}},"
              " \"locality\": {\"region\": \"r\", \"zone\": \"z\"},"
              " \"user_agent_name\": \"weft\", \"user_agent_version\": \"0.1.0\","
              " \"client_features\": [\"envoy.lb.does_not_support_overprovisioning\"]}");
    char *names[] = {"outbound|9080||reviews", "outbound|9080|v1|reviews"};
    wf_xds_request r = {
        .node = node, .resource_names = names, .n_resource_names = 2, .type_url = WF_TYPE_ENDPOINT};
    wf_xds_request back;
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_request_encode(&r, &buf, &len) == 0);
    CHECK(wf_xds_request_decode(buf, len, &back, err, sizeof(err)) == 0);
    CHECK(same_json(node, back.node, "node"));
    CHECK_INT(back.n_resource_names, 2);
    CHECK_STR(back.n_resource_names == 2 ? back.resource_names[1] : NULL, names[1]);
    CHECK_STR(back.type_url, WF_TYPE_ENDPOINT);
    CHECK_STR(back.version_info, ""); /* absent: "" */
    CHECK_STR(back.response_nonce, "");
    CHECK(!back.has_error);
    CHECK(back.error_message == NULL);
    wf_xds_request_free(&back);
    CHECK(back.node == NULL && back.type_url == NULL);
    wf_xds_request_free(&back); /* twice is harmless */
    free(buf);
    json_decref(node);
}

TEST(request_nack)
{
    wf_xds_request r = {.version_info = "v1",
                        .type_url = WF_TYPE_LISTENER,
                        .response_nonce = "7",
                        .has_error = 1,
                        .error_code = 3, /* INVALID_ARGUMENT */
                        .error_message = "Listener \"x\": route: unknown cluster"},
                   back;
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_request_encode(&r, &buf, &len) == 0);
    CHECK(wf_xds_request_decode(buf, len, &back, err, sizeof(err)) == 0);
    CHECK(back.has_error);
    CHECK_INT(back.error_code, 3);
    CHECK_STR(back.error_message, r.error_message);
    CHECK_STR(back.version_info, "v1");
    CHECK_STR(back.response_nonce, "7");
    CHECK(back.node == NULL);
    wf_xds_request_free(&back);
    free(buf);

    /* A NACK whose Status carries no message still reads as a NACK. */
    static const uint8_t bare[] = {0x2a, 0x01, '7', 0x32, 0x00};
    CHECK(wf_xds_request_decode(bare, sizeof(bare), &back, err, sizeof(err)) == 0);
    CHECK(back.has_error);
    CHECK_INT(back.error_code, 0);
    CHECK_STR(back.error_message, "");
    wf_xds_request_free(&back);

    /* The empty message is a valid request. */
    CHECK(wf_xds_request_decode(bare, 0, &back, err, sizeof(err)) == 0);
    CHECK(!back.has_error && back.n_resource_names == 0);
    wf_xds_request_free(&back);
}

/* What gRPC C-core sends carries fields we do not define (Node.extensions,
 * user_agent_build_version...): they are skipped, as protobuf readers do. */
TEST(request_with_unknown_fields)
{
    static const uint8_t q[] = {
        0x12, 0x28,                                    /* node = 2 */
        0x0a, 0x01, 'n',                               /*   id = 1 */
        0x2a, 0x01, 'x',                               /*   build_version = 5 (unknown here) */
        0x32, 0x04, 'g',  'R',  'P', 'C',              /*   user_agent_name = 6 */
        0x3a, 0x06, '1',  '.',  '5', '1', '.', '1',    /*   user_agent_version = 7 */
        0x4a, 0x03, 0x0a, 0x01, 'e',                   /*   extensions = 9 (unknown) */
        0x52, 0x02, 'c',  'f',                         /*   client_features = 10 */
        0x58, 0x01,                                    /*   field 11 as a varint (unknown) */
        0x61, 1,    2,    3,    4,   5,   6,   7,   8, /*   field 12, fixed64 (unknown) */
        0x22, 0x01, 't',                               /* type_url = 4 */
        0x3a, 0x02, 0x0a, 0x00,                        /* resource_locators = 7 (unknown) */
    };
    json_t *want = parse("{\"id\": \"n\", \"user_agent_name\": \"gRPC\","
                         " \"user_agent_version\": \"1.51.1\", \"client_features\": [\"cf\"]}");
    wf_xds_request r;
    char err[256];

    CHECK(wf_xds_request_decode(q, sizeof(q), &r, err, sizeof(err)) == 0);
    CHECK(same_json(want, r.node, "node"));
    CHECK_STR(r.type_url, "t");
    wf_xds_request_free(&r);
    json_decref(want);
}

TEST(response_roundtrip)
{
    json_t *b = run(mesh, "proxy", "default", productpage, 9080);
    wf_xds_response r = {.version_info = "abc",
                         .type_url = WF_TYPE_CLUSTER,
                         .nonce = "1",
                         .resources = json_object_get(b, "clusters"),
                         .control_plane = "weft-istiod"},
                    back;
    char err[512];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_response_encode(&r, &buf, &len, err, sizeof(err)) == 0);
    CHECK(wf_xds_response_decode(buf, len, &back, err, sizeof(err)) == 0);
    CHECK_STR(back.version_info, "abc");
    CHECK_STR(back.type_url, WF_TYPE_CLUSTER);
    CHECK_STR(back.nonce, "1");
    CHECK_STR(back.control_plane, "weft-istiod");
    CHECK(same_json(r.resources, back.resources, "clusters"));
    wf_xds_response_free(&back);
    free(buf);

    /* No resources, no control plane. */
    wf_xds_response e = {.version_info = "2", .type_url = WF_TYPE_LISTENER, .nonce = "2"};
    CHECK(wf_xds_response_encode(&e, &buf, &len, err, sizeof(err)) == 0);
    CHECK(wf_xds_response_decode(buf, len, &back, err, sizeof(err)) == 0);
    CHECK(json_is_array(back.resources) && json_array_size(back.resources) == 0);
    CHECK(back.control_plane == NULL);
    wf_xds_response_free(&back);
    free(buf);
    json_decref(b);
}

/* The envelope read without the resources, and a response encoded without
 * its nonce plus the tail appended: the same bytes as encoding it whole. */
TEST(response_envelope_and_tail)
{
    json_t *b = run(mesh, "proxy", "default", productpage, 9080);
    json_t *clusters = json_object_get(b, "clusters");
    wf_xds_response r = {.version_info = "0123456789abcdef",
                         .type_url = WF_TYPE_CLUSTER,
                         .nonce = "42",
                         .resources = clusters,
                         .control_plane = "weft-istiod"},
                    body = r;
    wf_xds_envelope env;
    char err[512], big[300];
    uint8_t *whole = NULL, *part = NULL, tail[WF_XDS_TAIL_MAX];
    size_t wl = 0, pl = 0, tl;

    CHECK(wf_xds_response_encode(&r, &whole, &wl, err, sizeof(err)) == 0);
    CHECK(wf_xds_response_envelope(whole, wl, &env) == 0);
    CHECK(env.version_len == 16 && memcmp(env.version_info, "0123456789abcdef", 16) == 0);
    CHECK(env.type_url_len == strlen(WF_TYPE_CLUSTER) &&
          memcmp(env.type_url, WF_TYPE_CLUSTER, env.type_url_len) == 0);
    CHECK(env.nonce_len == 2 && memcmp(env.nonce, "42", 2) == 0);
    CHECK_INT(env.n_resources, json_array_size(clusters));

    body.nonce = NULL;
    body.control_plane = NULL;
    CHECK(wf_xds_response_encode(&body, &part, &pl, err, sizeof(err)) == 0);
    tl = wf_xds_response_tail("42", "weft-istiod", tail, sizeof(tail));
    CHECK(tl > 0);
    CHECK(pl + tl == wl && memcmp(part, whole, pl) == 0 && memcmp(tail, whole + pl, tl) == 0);
    CHECK(wf_xds_response_envelope(part, pl, &env) == 0);
    CHECK(env.nonce == NULL && env.nonce_len == 0);

    /* Long values take two-byte lengths; too long for the buffer is 0. */
    memset(big, 'n', 150);
    big[150] = 0;
    free(whole);
    r.nonce = big;
    CHECK(wf_xds_response_encode(&r, &whole, &wl, err, sizeof(err)) == 0);
    tl = wf_xds_response_tail(big, "weft-istiod", tail, sizeof(tail));
    CHECK(pl + tl == wl && memcmp(tail, whole + pl, tl) == 0);
    CHECK_INT(wf_xds_response_tail(big, "weft-istiod", tail, 100), 0);
    CHECK_INT(wf_xds_response_tail(NULL, NULL, tail, sizeof(tail)), 0);

    /* The same response assembled from resources encoded one by one, and
     * the offsets of each resource in it. */
    {
        size_t n = json_array_size(clusters), *lens = calloc(n, sizeof(size_t));
        size_t *offs = calloc(n, sizeof(size_t)), al = 0;
        uint8_t **res = calloc(n, sizeof(uint8_t *)), *asm_ = NULL;
        int ok = lens && offs && res;
        for (size_t i = 0; ok && i < n; i++)
            ok = wf_xds_encode(WF_TYPE_CLUSTER, json_array_get(clusters, i), &res[i], &lens[i],
                               err, sizeof(err)) == 0;
        CHECK(ok);
        CHECK(wf_xds_response_assemble("0123456789abcdef", WF_TYPE_CLUSTER,
                                       (const uint8_t *const *)res, lens, n, &asm_, &al,
                                       offs) == 0);
        CHECK(al == pl && memcmp(asm_, part, pl) == 0);
        for (size_t i = 0; ok && i < n; i++)
            CHECK(offs[i] + lens[i] <= al && memcmp(asm_ + offs[i], res[i], lens[i]) == 0);
        free(asm_);
        /* No resources and no version: just the type. */
        CHECK(wf_xds_response_assemble(NULL, WF_TYPE_CLUSTER, NULL, NULL, 0, &asm_, &al,
                                       NULL) == 0);
        CHECK(wf_xds_response_envelope(asm_, al, &env) == 0 && env.n_resources == 0 &&
              env.version_len == 0 && env.type_url_len == strlen(WF_TYPE_CLUSTER));
        free(asm_);
        for (size_t i = 0; res && i < n; i++)
            free(res[i]);
        free(res);
        free(lens);
        free(offs);
    }

    /* Broken framing is refused, never read past. */
    CHECK(wf_xds_response_envelope(whole, wl - 1, &env) < 0);
    CHECK(wf_xds_response_envelope((const uint8_t *)"\x0a\xff", 2, &env) < 0);
    CHECK(wf_xds_response_envelope((const uint8_t *)"\x0b", 1, &env) < 0);
    CHECK(wf_xds_response_envelope(NULL, 0, &env) == 0 && env.n_resources == 0);
    free(whole);
    free(part);
    json_decref(b);
}

TEST(response_errors_name_the_resource)
{
    json_t *res = parse("[{\"name\": \"a\"}, {\"name\": \"b\", \"connect_timeout\": \"soon\"}]");
    wf_xds_response r = {.version_info = "1",
                         .type_url = WF_TYPE_CLUSTER,
                         .nonce = "1",
                         .resources = res},
                    back;
    char err[512];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_response_encode(&r, &buf, &len, err, sizeof(err)) < 0);
    CHECK(strstr(err, "resources[1] (Cluster \"b\"): connect_timeout: \"soon\"") != NULL);
    free(buf);

    /* Bytes: a response whose second Cluster is corrupt. */
    json_array_remove(res, 1);
    json_array_append_new(res, parse("{\"name\": \"b\", \"connect_timeout\": \"1s\"}"));
    CHECK(wf_xds_response_encode(&r, &buf, &len, err, sizeof(err)) == 0);
    /* b's connect_timeout {seconds = 1}: make its length run past the end
     * of the Cluster. */
    uint8_t *t = memmem(buf, len, "\x22\x02\x08\x01", 4);
    CHECK(t != NULL);
    if (t)
        t[1] = 0x05;
    CHECK(wf_xds_response_decode(buf, len, &back, err, sizeof(err)) < 0);
    CHECK(strstr(err, "DiscoveryResponse") != NULL);
    CHECK(back.resources == NULL && back.type_url == NULL);
    wf_xds_response_free(&back);
    free(buf);

    /* An Any of another type than the response's. */
    static const uint8_t mixed[] = {0x12, 0x06, 0x0a, 0x02, 'x', '/', 0x12, 0x00, /* resources */
                                    0x22, 0x02, 't',  '/'};                       /* type_url */
    CHECK(wf_xds_response_decode(mixed, sizeof(mixed), &back, err, sizeof(err)) < 0);
    wf_xds_response_free(&back);
    json_decref(res);
}

/* ---- refusals -------------------------------------------------------------------------------- */

TEST(encode_refuses_what_it_cannot_carry)
{
    CHECK(refused(WF_TYPE_CLUSTER, "{\"name\": \"c\", \"dns_lookup_family\": \"V4_ONLY\"}",
                  "Cluster \"c\": dns_lookup_family: unknown field of "
                  "envoy.config.cluster.v3.Cluster"));
    CHECK(refused(WF_TYPE_LISTENER,
                  "{\"name\": \"l\", \"filter_chains\": [{\"filters\": [{\"name\": \"h\","
                  " \"typed_config\": {\"@type\": \"" HCM_TYPE "\", \"codec_type\": \"AUTO\"}}]}]}",
                  "Listener \"l\": filter_chains[0].filters[0].typed_config.codec_type: unknown"));
    CHECK(refused(WF_TYPE_CLUSTER, "{\"name\": \"c\", \"lb_policy\": \"FASTEST\"}",
                  "lb_policy: \"FASTEST\" is not a envoy.config.cluster.v3.Cluster.LbPolicy"));
    CHECK(refused(WF_TYPE_CLUSTER, "{\"name\": 7}", "name: expected a string, got an integer"));
    CHECK(refused(WF_TYPE_CLUSTER, "{\"name\": null}", "name: null is not allowed"));
    CHECK(refused(WF_TYPE_CLUSTER, "[]", "expected an object"));
    CHECK(refused(WF_TYPE_ENDPOINT,
                  "{\"cluster_name\": \"e\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\":"
                  " {\"address\": {\"socket_address\": {\"port_value\": 4294967296}}}}]}]}",
                  "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: "
                  "4294967296 is out of range"));
    CHECK(refused(WF_TYPE_ENDPOINT,
                  "{\"cluster_name\": \"e\", \"endpoints\": [{\"load_balancing_weight\": -1}]}",
                  "load_balancing_weight: -1 is out of range"));
    CHECK(refused(WF_TYPE_ROUTE,
                  "{\"name\": \"r\", \"virtual_hosts\": [{\"routes\": [{\"match\":"
                  " {\"prefix\": \"/\", \"path\": \"/a\"}}]}]}",
                  "\"prefix\" and \"path\" are alternatives"));
    /* An Any needs its type, except as a weft filter's per-route config. */
    CHECK(
        refused(WF_TYPE_LISTENER,
                "{\"name\": \"l\", \"api_listener\": {\"api_listener\": {\"stat_prefix\": \"x\"}}}",
                "api_listener.api_listener: \"@type\" is missing"));
    CHECK(refused(
        WF_TYPE_LISTENER,
        "{\"name\": \"l\", \"api_listener\": {\"api_listener\": {\"@type\":"
        " \"type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy\"}}}",
        "unsupported type \"type.googleapis.com/envoy.extensions.filters.network."
        "redis_proxy.v3.RedisProxy\""));
    CHECK(refused(WF_TYPE_ROUTE,
                  "{\"name\": \"r\", \"virtual_hosts\": [{\"typed_per_filter_config\": {\"f.x\":"
                  " [1]}}]}",
                  "virtual_hosts[0].typed_per_filter_config[\"f.x\"]: expected an object with "
                  "\"@type\", got an array"));
    /* 2^53 + 1 would not survive a double. */
    CHECK(refused(WF_TYPE_CLUSTER,
                  "{\"name\": \"c\", \"metadata\": {\"filter_metadata\": {\"istio\": {\"x\":"
                  " 9007199254740993}}}}",
                  "metadata.filter_metadata.istio.x: 9007199254740993 is too large"));
    CHECK(refused(WF_TYPE_SECRET, "{\"name\": \"s\"}", "is not supported"));
    CHECK(refused("type.googleapis.com/envoy.config.cluster.v3.Nope", "{}", "is not supported"));

    /* Nesting deeper than the codec allows. */
    char deep[2000] = "{\"name\": \"c\", \"metadata\": {\"filter_metadata\": {\"istio\": {\"x\": ";
    for (int i = 0; i < 150; i++)
        strcat(deep, "[");
    for (int i = 0; i < 150; i++)
        strcat(deep, "]");
    strcat(deep, "}}}}");
    CHECK(refused(WF_TYPE_CLUSTER, deep, "nested more than"));
}

/* ---- hostile bytes --------------------------------------------------------------------------- */

static int decode_fails(const char *type_url, const uint8_t *buf, size_t len)
{
    char err[512] = "";
    json_t *j = wf_xds_decode(type_url, buf, len, err, sizeof(err));

    if (j) {
        json_decref(j);
        return 0;
    }
    return err[0] != 0;
}

TEST(malformed_bytes_are_refused)
{
    static const uint8_t truncated_varint[] = {0x0a, 0x85};
    static const uint8_t long_len[] = {0x0a, 0x10, 'a'};
    static const uint8_t group[] = {0x0b, 0x0c};
    static const uint8_t field0[] = {0x00, 0x01};
    static const uint8_t wrong_wire[] = {0x12, 0x01, 0x00}; /* Cluster.type as bytes */
    char err[512];
    wf_xds_request q;
    wf_xds_response p;

    CHECK(decode_fails(WF_TYPE_CLUSTER, truncated_varint, sizeof(truncated_varint)));
    CHECK(decode_fails(WF_TYPE_CLUSTER, long_len, sizeof(long_len)));
    CHECK(decode_fails(WF_TYPE_CLUSTER, group, sizeof(group)));
    CHECK(decode_fails(WF_TYPE_CLUSTER, field0, sizeof(field0)));
    CHECK(decode_fails(WF_TYPE_CLUSTER, wrong_wire, sizeof(wrong_wire)));
    CHECK(decode_fails(WF_TYPE_SECRET, NULL, 0));
    CHECK(wf_xds_request_decode(long_len, sizeof(long_len), &q, err, sizeof(err)) < 0);
    CHECK(strstr(err, "DiscoveryRequest") != NULL);
    wf_xds_request_free(&q);
    CHECK(wf_xds_response_decode(group, sizeof(group), &p, err, sizeof(err)) < 0);
    wf_xds_response_free(&p);
    /* The envelope readers walk fields the same way, and refuse the same. */
    {
        wf_xds_envelope env;
        wf_xds_request_view view;
        const uint8_t *bad[] = {truncated_varint, long_len, group, field0};
        const size_t lens[] = {sizeof(truncated_varint), sizeof(long_len), sizeof(group),
                               sizeof(field0)};
        for (size_t i = 0; i < 4; i++) {
            CHECK(wf_xds_response_envelope(bad[i], lens[i], &env) < 0);
            CHECK(wf_xds_request_peek(bad[i], lens[i], &view) < 0);
        }
    }

    /* A Struct string that is not UTF-8. */
    static const uint8_t bad_utf8[] = {0xca, 0x01, 0x13, 0x0a, 0x11, 0x0a, 0x01, 'i',
                                       0x12, 0x0c, 0x0a, 0x0a, 0x0a, 0x01, 'x',  0x12,
                                       0x05, 0x1a, 0x03, 0xff, 0xfe, 0xfd};
    CHECK(wf_xds_decode(WF_TYPE_CLUSTER, bad_utf8, sizeof(bad_utf8), err, sizeof(err)) == NULL);
    CHECK(strstr(err, "metadata.filter_metadata.i.x: string is not valid UTF-8") != NULL);

    /* An Any naming a type we do not carry. */
    static const uint8_t odd_any[] = {0x9a, 0x01, 0x07, 0x0a, 0x05, 0x0a, 0x03, 'x', '/', 'y'};
    CHECK(wf_xds_decode(WF_TYPE_LISTENER, odd_any, sizeof(odd_any), err, sizeof(err)) == NULL);
    CHECK(strstr(err, "api_listener.api_listener: unsupported type \"x/y\"") != NULL);
}

/* tag, varint(*len), inner: a new buffer; frees inner and updates *len. */
static uint8_t *wrap(const char *tag, size_t taglen, uint8_t *inner, size_t *len)
{
    uint8_t *out = malloc(taglen + 10 + *len);
    size_t o = taglen, l = *len;

    memcpy(out, tag, taglen);
    do {
        out[o++] = (uint8_t)((l & 0x7f) | (l > 0x7f ? 0x80 : 0));
        l >>= 7;
    } while (l);
    memcpy(out + o, inner, *len);
    *len += o;
    free(inner);
    return out;
}

/* pre, inner: a new buffer; frees inner and updates *len. */
static uint8_t *prepend(const char *pre, size_t plen, uint8_t *inner, size_t *len)
{
    uint8_t *out = malloc(plen + *len);

    memcpy(out, pre, plen);
    memcpy(out + plen, inner, *len);
    *len += plen;
    free(inner);
    return out;
}

TEST(deep_nesting_is_refused)
{
    /* Cluster {metadata {filter_metadata {"i": Struct {"a": Value {list_value
     * {values [Value {list_value ...}]}}}}}}, 3000 lists deep: protobuf-c
     * alone would recurse 6000 times. */
    size_t len = 2;
    uint8_t *b = malloc(len);
    char err[512];

    b[0] = 0x08; /* Value.null_value = 0 */
    b[1] = 0x00;
    for (int i = 0; i < 3000; i++) {
        b = wrap("\x0a", 1, b, &len); /* ListValue.values = 1 */
        b = wrap("\x32", 1, b, &len); /* Value.list_value = 6 */
    }
    b = wrap("\x12", 1, b, &len); /* FieldsEntry.value = 2 */
    b = prepend("\x0a\x01"
                "a",
                3, b, &len);      /* FieldsEntry.key = 1 */
    b = wrap("\x0a", 1, b, &len); /* Struct.fields = 1 */
    b = wrap("\x12", 1, b, &len); /* FilterMetadataEntry.value = 2 */
    b = prepend("\x0a\x01"
                "i",
                3, b, &len);          /* FilterMetadataEntry.key = 1 */
    b = wrap("\x0a", 1, b, &len);     /* Metadata.filter_metadata = 1 */
    b = wrap("\xca\x01", 2, b, &len); /* Cluster.metadata = 25 */

    CHECK(wf_xds_decode(WF_TYPE_CLUSTER, b, len, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "nested more than") != NULL);
    free(b);

    /* 30 deep is fine. */
    len = 2;
    b = malloc(len);
    b[0] = 0x08;
    b[1] = 0x00;
    for (int i = 0; i < 30; i++) {
        b = wrap("\x0a", 1, b, &len);
        b = wrap("\x32", 1, b, &len);
    }
    b = wrap("\x12", 1, b, &len);
    b = prepend("\x0a\x01"
                "a",
                3, b, &len);
    b = wrap("\x0a", 1, b, &len);
    b = wrap("\x12", 1, b, &len);
    b = prepend("\x0a\x01"
                "i",
                3, b, &len);
    b = wrap("\x0a", 1, b, &len);
    b = wrap("\xca\x01", 2, b, &len);
    json_t *j = wf_xds_decode(WF_TYPE_CLUSTER, b, len, err, sizeof(err));
    CHECK(j != NULL);
    if (!j)
        fprintf(stderr, "%s\n", err);
    json_decref(j);
    free(b);
}

/* Every prefix and many single-byte corruptions of real resources decode
 * to an error or to some JSON, never to a crash (run under ASan). */
TEST(fuzzed_bytes_never_crash)
{
    json_t *b = run(grpcfix, "grpc", "default", NULL, 0);
    json_t *l = json_array_get(json_object_get(b, "listeners"), 0);
    char err[512];
    uint8_t *buf = NULL;
    size_t len = 0;
    uint32_t seed = 12345;
    int decoded = 0, refused_n = 0;

    CHECK(wf_xds_encode(WF_TYPE_LISTENER, l, &buf, &len, err, sizeof(err)) == 0);
    for (size_t n = 0; buf && n < len; n++) {
        json_t *j = wf_xds_decode(WF_TYPE_LISTENER, buf, n, err, sizeof(err));
        j ? decoded++ : refused_n++;
        json_decref(j);
    }
    for (int i = 0; buf && i < 3000; i++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        for (int k = 0; k < 1 + i % 3; k++) {
            seed = seed * 1103515245 + 12345;
            c[(seed >> 8) % len] ^= (uint8_t)(1u << ((seed >> 4) % 8));
        }
        json_t *j = wf_xds_decode(WF_TYPE_LISTENER, c, len, err, sizeof(err));
        j ? decoded++ : refused_n++;
        json_decref(j);
        wf_xds_response rr;
        wf_xds_request qq;
        if (wf_xds_response_decode(c, len, &rr, err, sizeof(err)) == 0)
            decoded++;
        wf_xds_response_free(&rr);
        if (wf_xds_request_decode(c, len, &qq, err, sizeof(err)) == 0)
            decoded++;
        wf_xds_request_free(&qq);
        free(c);
    }
    CHECK(refused_n > 0);
    free(buf);
    json_decref(b);
}

/* ---- cross-check with Python's protobuf ------------------------------------------------------ */

/* ---- TCP, TLS passthrough, WebSocket and connection limits ----------------------------------- */

#define TCP_PROXY_TYPE "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

/* Every field of docs/resources.md's TCP section, translated from the tcp
 * and l4 fixtures (outbound TCP and TLS listeners, weighted and plain
 * tcp_proxy, an inbound TCP app, the connection managers' and clusters'
 * HTTP options), goes there and back unchanged, bytes and JSON. */
TEST(roundtrip_tcp_bundles)
{
    static const char *const keys[] = {"server_names",     "weighted_clusters",
                                       "upgrade_configs",  "stream_idle_timeout",
                                       "idle_timeout",     "max_requests_per_connection",
                                       "listener_filters", "common_http_protocol_options"};
    const char *const tcp_app = "tcp";
    wf_config *fix[2] = {load("tcp"), load("l4")};
    size_t seen[sizeof(keys) / sizeof(keys[0])] = {0};

    for (int f = 0; f < 2; f++) {
        CHECK(fix[f] != NULL);
        for (int app = 0; fix[f] && app < 2; app++) {
            char err[256];
            wf_proxy_info p = {.role = "proxy",
                               .namespace_ = "default",
                               .labels = productpage,
                               .outbound_addr = "127.0.0.9",
                               .inbound_addr = "127.0.0.1",
                               .app_port = 7777,
                               .app_protocol = app ? tcp_app : NULL};
            json_t *b = wf_translate(fix[f], &p, err, sizeof(err));
            CHECK(b != NULL);
            if (!b)
                continue;
            CHECK_INT(roundtrip_bundle(b), 0);
            for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                seen[k] += count_key(b, keys[k]);
            json_decref(b);
        }
        if (fix[f])
            wf_config_free(fix[f]);
    }
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        if (!seen[k]) {
            fprintf(stderr, "no %s in the TCP bundles\n", keys[k]);
            CHECK(seen[k] > 0);
        }
}

/* Envoy's field numbers, byte by byte. */
TEST(tcp_proxy_bytes)
{
    json_t *tp = parse("{\"stat_prefix\": \"s\", \"idle_timeout\": \"30s\", \"weighted_clusters\":"
                       " {\"clusters\": [{\"name\": \"a\", \"weight\": 80}]}}");
    json_t *one = parse("{\"stat_prefix\": \"s\", \"cluster\": \"c\", \"idle_timeout\": \"0s\"}");
    static const uint8_t want[] = {
        0x0a, 0x01, 's', /* stat_prefix = 1 */
        0x42, 0x02,      /* idle_timeout = 8 */
        0x08, 0x1e,      /*   seconds = 1: 30 */
        0x52, 0x07,      /* weighted_clusters = 10 */
        0x0a, 0x05,      /*   clusters = 1 */
        0x0a, 0x01, 'a', /*     name = 1 */
        0x10, 0x50,      /*     weight = 2: 80 */
    };
    static const uint8_t want_one[] = {
        0x0a, 0x01, 's', /* stat_prefix = 1 */
        0x12, 0x01, 'c', /* cluster = 2 */
        0x42, 0x00,      /* idle_timeout = 8: 0s, sent: it was given */
    };
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_encode(TCP_PROXY_TYPE, tp, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want, sizeof(want)));
    free(buf);
    buf = NULL;
    CHECK(wf_xds_encode(TCP_PROXY_TYPE, one, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want_one, sizeof(want_one)));
    free(buf);
    CHECK(roundtrip(TCP_PROXY_TYPE, tp));
    CHECK(roundtrip(TCP_PROXY_TYPE, one));
    json_decref(tp);
    json_decref(one);
}

TEST(server_names_bytes)
{
    json_t *l = parse("{\"name\": \"l\", \"filter_chains\": [{\"name\": \"c\","
                      " \"filter_chain_match\": {\"server_names\": [\"x\", \"*.y\"]}}]}");
    static const uint8_t want[] = {
        0x0a, 0x01, 'l',           /* name = 1 */
        0x1a, 0x0d,                /* filter_chains = 3 */
        0x0a, 0x08,                /*   filter_chain_match = 1 */
        0x5a, 0x01, 'x',           /*     server_names = 11 */
        0x5a, 0x03, '*', '.', 'y', /*     server_names = 11 */
        0x3a, 0x01, 'c',           /*   name = 7 */
    };
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_encode(WF_TYPE_LISTENER, l, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want, sizeof(want)));
    free(buf);
    json_decref(l);
}

TEST(http_options_bytes)
{
    json_t *h = parse("{\"stat_prefix\": \"h\", \"http_filters\": [],"
                      " \"upgrade_configs\": [{\"upgrade_type\": \"websocket\"}],"
                      " \"stream_idle_timeout\": \"300s\","
                      " \"common_http_protocol_options\": {\"idle_timeout\": \"3600s\","
                      " \"max_requests_per_connection\": 5}}");
    json_t *c = parse("{\"name\": \"c\", \"common_http_protocol_options\":"
                      " {\"idle_timeout\": \"90s\"}}");
    static const uint8_t want_hcm[] = {
        0x12, 0x01, 'h',                                 /* stat_prefix = 2 */
        0xba, 0x01, 0x0b,                                /* upgrade_configs = 23 */
        0x0a, 0x09, 'w', 'e', 'b', 's', 'o', 'c', 'k', 'e', 't', /*   upgrade_type = 1 */
        0xc2, 0x01, 0x03,                                /* stream_idle_timeout = 24 */
        0x08, 0xac, 0x02,                                /*   seconds = 1: 300 */
        0x9a, 0x02, 0x09,                                /* common_http_protocol_options = 35 */
        0x0a, 0x03, 0x08, 0x90, 0x1c,                    /*   idle_timeout = 1: 3600s */
        0x32, 0x02, 0x08, 0x05, /*   max_requests_per_connection = 6: UInt32Value 5 */
    };
    static const uint8_t want_cluster[] = {
        0x0a, 0x01, 'c',        /* name = 1 */
        0xea, 0x01, 0x04,       /* common_http_protocol_options = 29 */
        0x0a, 0x02, 0x08, 0x5a, /*   idle_timeout = 1: 90s */
    };
    char err[256];
    uint8_t *buf = NULL;
    size_t len = 0;

    CHECK(wf_xds_encode(HCM_TYPE, h, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want_hcm, sizeof(want_hcm)));
    free(buf);
    buf = NULL;
    CHECK(wf_xds_encode(WF_TYPE_CLUSTER, c, &buf, &len, err, sizeof(err)) == 0);
    CHECK(bytes_are(buf, len, want_cluster, sizeof(want_cluster)));
    free(buf);
    CHECK(roundtrip(HCM_TYPE, h));
    CHECK(roundtrip(WF_TYPE_CLUSTER, c));
    json_decref(h);
    json_decref(c);
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;

    if (f)
        fclose(f);
    return ok;
}

static void add_message(FILE *manifest, const char *dir, int *n, const char *name,
                        const uint8_t *buf, size_t len)
{
    char path[1400];

    snprintf(path, sizeof(path), "%s/m%d.bin", dir, (*n)++);
    if (write_file(path, buf, len))
        fprintf(manifest, "%s %s\n", name, path);
}

TEST(python_reads_our_bytes)
{
    char dir[] = "/tmp/weft-codec-XXXXXX", cmd[4096], path[1400];
    FILE *m;
    int n = 0;

    if (system("/usr/bin/python3 -c 'import google.protobuf' 2>/dev/null") != 0 ||
        system("command -v protoc-c >/dev/null 2>&1") != 0) {
        printf("python_reads_our_bytes: skipped (no python3-protobuf or protoc-c)\n");
        return;
    }
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cmd, sizeof(cmd),
             "cd %s/../../proto && protoc-c --include_imports -o %s/all.pb -I. "
             "$(find . -name '*.proto' | sed 's|^\\./||' | sort)",
             srcdir(), dir);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof(path), "%s/manifest", dir);
    m = fopen(path, "w");
    CHECK(m != NULL);
    if (!m)
        return;

    static const struct {
        const char *key, *type, *name;
    } kinds[] = {{"listeners", WF_TYPE_LISTENER, "envoy.config.listener.v3.Listener"},
                 {"clusters", WF_TYPE_CLUSTER, "envoy.config.cluster.v3.Cluster"},
                 {"endpoints", WF_TYPE_ENDPOINT, "envoy.config.endpoint.v3.ClusterLoadAssignment"}};
    /* The TLS fixture in every inbound mode: DownstreamTlsContext,
     * UpstreamTlsContext, TlsInspector and RawBuffer Anys are unpacked by
     * Python as the Envoy messages they name. */
    wf_config *tlsc = load_text("tls.yaml", tls_yaml), *tcpc = load("tcp");
    json_t *bundles[] = {run(mesh, "proxy", "default", productpage, 9080),
                         run(grpcfix, "grpc", "default", NULL, 0),
                         run(chain2, "proxy", "default", productpage, 8000),
                         run(tlsc, "proxy", "default", productpage, 8080),
                         run(tlsc, "proxy", "default", strict_app, 8080),
                         run(tlsc, "proxy", "default", off_app, 8080),
                         /* TcpProxy Anys, server names, the HTTP options */
                         run(tcpc, "proxy", "default", productpage, 8080)};
    char err[512];
    CHECK(tlsc != NULL);
    CHECK(tcpc != NULL);
    for (size_t bi = 0; bi < sizeof(bundles) / sizeof(bundles[0]); bi++) {
        wf_xds_response r = {.version_info = "1", .nonce = "n", .control_plane = "weft"};
        for (size_t t = 0; t < 3; t++) {
            size_t i;
            json_t *res;
            uint8_t *buf;
            size_t len;
            json_array_foreach(json_object_get(bundles[bi], kinds[t].key), i, res)
            {
                if (wf_xds_encode(kinds[t].type, res, &buf, &len, err, sizeof(err)) == 0)
                    add_message(m, dir, &n, kinds[t].name, buf, len);
                free(buf);
            }
            r.type_url = (char *)kinds[t].type;
            r.resources = json_object_get(bundles[bi], kinds[t].key);
            if (wf_xds_response_encode(&r, &buf, &len, err, sizeof(err)) == 0)
                add_message(m, dir, &n, "envoy.service.discovery.v3.DiscoveryResponse", buf, len);
            free(buf);
        }
        json_decref(bundles[bi]);
    }
    json_t *node = parse("{\"id\": \"sidecar~1~a.b~b.svc.cluster.local\", \"metadata\":"
                         " {\"LABELS\": {\"app\": \"a\"}, \"n\": [1, 2.5, null, true]}}");
    wf_xds_request q = {
        .node = node, .type_url = WF_TYPE_LISTENER, .has_error = 1, .error_message = "x"};
    uint8_t *buf;
    size_t len;
    if (wf_xds_request_encode(&q, &buf, &len) == 0)
        add_message(m, dir, &n, "envoy.service.discovery.v3.DiscoveryRequest", buf, len);
    free(buf);
    json_decref(node);
    fclose(m);
    if (tlsc)
        wf_config_free(tlsc);
    if (tcpc)
        wf_config_free(tcpc);

    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/codec_crosscheck.py %s/all.pb %s/manifest",
             srcdir(), dir, dir);
    CHECK(n > 20);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    mesh = load("mesh");
    grpcfix = load("grpc");
    chain2 = load("chain2");
    RUN(fixtures_load);
    if (mesh && grpcfix && chain2) {
        RUN(roundtrip_mesh_sidecar);
        RUN(roundtrip_chain_plugins);
        RUN(roundtrip_proxyless_grpc);
        RUN(response_roundtrip);
        RUN(response_envelope_and_tail);
        RUN(fuzzed_bytes_never_crash);
        RUN(python_reads_our_bytes);
    }
    RUN(per_filter_config_is_typed_struct);
    RUN(api_listener_inline_routes);
    RUN(cluster_and_assignment_by_hand);
    RUN(durations);
    RUN(roundtrip_tls_bundles);
    RUN(tls_by_hand);
    RUN(tls_bytes);
    RUN(cluster_bytes);
    RUN(listener_bytes);
    RUN(roundtrip_tcp_bundles);
    RUN(tcp_proxy_bytes);
    RUN(server_names_bytes);
    RUN(http_options_bytes);
    RUN(request_bytes);
    RUN(request_roundtrip_with_node);
    RUN(request_nack);
    RUN(request_with_unknown_fields);
    RUN(response_errors_name_the_resource);
    RUN(encode_refuses_what_it_cannot_carry);
    RUN(malformed_bytes_are_refused);
    RUN(deep_nesting_is_refused);
    wf_config_free(mesh);
    wf_config_free(grpcfix);
    wf_config_free(chain2);
    return TEST_SUMMARY();
}
