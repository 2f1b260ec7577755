/* xds_client_test.c: the proxy's ADS client (core/xds/client.c).  Most tests
 * drive its bookkeeping directly, without sockets: the node it sends, the
 * requests it owes after each response (subscriptions, EDS names, ACK,
 * NACK), when a bundle is complete, what the bundle holds, what it sends
 * again after a reconnect, and the reconnect backoff.  The last test runs
 * the real client against a small ADS server on loopback, stops the server
 * and starts another: the client must reconnect and resubscribe with the
 * versions it holds. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc/grpc.h"
#include "test.h"
#include "util/jpack.h"
#include "util/log.h"
#include "xds/client.h"
#include "xds/codec.h"

#define EDS_A "outbound|9080||a.default.svc.cluster.local"
#define EDS_B "outbound|9080||b.default.svc.cluster.local"
#define EDS_C "outbound|80||c.default.svc.cluster.local"
#define INBOUND "inbound|8080||"

/* ---- helpers ------------------------------------------------------------------------------- */

static json_t *node(void)
{
    return json_pack("{s:s, s:{s:s}}", "id",
                     "sidecar~127.0.0.1~t.default~default.svc.cluster.local", "metadata",
                     "NAMESPACE", "default");
}

/* A decoded response; resources is stolen. */
static wf_xds_response resp(const char *type_url, const char *version, const char *nonce,
                            json_t *resources)
{
    wf_xds_response r = {.version_info = strdup(version),
                         .type_url = strdup(type_url),
                         .nonce = strdup(nonce),
                         .resources = resources};
    return r;
}

/* Feeds a response to st; returns what wf_xdsc_response returned. */
static int feed(wf_xdsc *st, const char *type_url, const char *version, const char *nonce,
                json_t *resources)
{
    wf_xds_response r = resp(type_url, version, nonce, resources);
    int rc = wf_xdsc_response(st, &r);

    wf_xds_response_free(&r);
    return rc;
}

static json_t *eds_cluster(const char *name, const char *service_name)
{
    json_t *c =
        json_pack("{s:s, s:s, s:s}", "name", name, "type", "EDS", "lb_policy", "ROUND_ROBIN");
    if (service_name)
        json_object_set_new(c, "eds_cluster_config",
                            json_pack("{s:s}", "service_name", service_name));
    return c;
}

static json_t *cla(const char *name, const char *ip, int port)
{
    return json_pack("{s:s, s:[{s:[{s:{s:{s:{s:s, s:i}}}}]}]}", "cluster_name", name, "endpoints",
                     "lb_endpoints", "endpoint", "address", "socket_address", "address", ip,
                     "port_value", port);
}

/* Clusters: a, b (EDS, b under a service_name of its own) and a STATIC
 * inbound cluster with its load_assignment. */
static json_t *clusters_ab(void)
{
    json_t *inb = json_pack("{s:s, s:s, s:o}", "name", INBOUND, "type", "STATIC", "load_assignment",
                            cla(INBOUND, "127.0.0.1", 8080));
    return json_pack("[o, o, o]", eds_cluster(EDS_A, NULL), eds_cluster("cluster-b", EDS_B), inb);
}

static json_t *listeners(const char *tag)
{
    return json_pack("[{s:s, s:{s:{s:s, s:i}}, s:s}]", "name", "virtualOutbound", "address",
                     "socket_address", "address", "127.0.0.1", "port_value", 15001, "tag", tag);
}

/* The queued requests, taken. */
typedef struct reqs {
    wf_xds_request r[16];
    size_t n;
} reqs;

static void take_all(wf_xdsc *st, reqs *q)
{
    q->n = 0;
    while (q->n < 16 && wf_xdsc_take(st, &q->r[q->n]))
        q->n++;
}

static void reqs_free(reqs *q)
{
    for (size_t i = 0; i < q->n; i++)
        wf_xds_request_free(&q->r[i]);
    q->n = 0;
}

static const char *names_joined(const wf_xds_request *r, char *buf, size_t len)
{
    buf[0] = 0;
    for (size_t i = 0; i < r->n_resource_names; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", i ? "," : "", r->resource_names[i]);
    return buf;
}

/* Checks one request: type, version, nonce, names (comma-joined), NACK. */
#define CHECK_REQ(q, i, type, version, nonce, names, nack)                                         \
    do {                                                                                           \
        char nb_[512];                                                                             \
        CHECK((q)->n > (i));                                                                       \
        if ((q)->n > (i)) {                                                                        \
            CHECK_STR((q)->r[i].type_url, wf_xdsc_type_url(type));                                 \
            CHECK_STR((q)->r[i].version_info, version);                                            \
            CHECK_STR((q)->r[i].response_nonce, nonce);                                            \
            CHECK_STR(names_joined(&(q)->r[i], nb_, sizeof(nb_)), names);                          \
            CHECK_INT((q)->r[i].has_error, nack);                                                  \
        }                                                                                          \
    } while (0)

/* The owner: records each bundle, refuses when told to. */
typedef struct owner {
    int calls;
    const char *refuse;     /* reason, or NULL to accept */
    const char *refuse_tag; /* refuses a bundle whose listener has this tag */
    json_t *last;           /* the last bundle applied */
} owner;

static int apply_cb(json_t *bundle, void *ud, char *err, size_t errlen)
{
    owner *o = ud;
    const char *tag = json_string_value(
        json_object_get(json_array_get(json_object_get(bundle, "listeners"), 0), "tag"));

    o->calls++;
    if (o->refuse) {
        snprintf(err, errlen, "%s", o->refuse);
        return -1;
    }
    if (o->refuse_tag && tag && strcmp(tag, o->refuse_tag) == 0) {
        snprintf(err, errlen, "listener tagged %s refused", tag);
        return -1;
    }
    json_decref(o->last);
    o->last = json_deep_copy(bundle); /* its trees live only during the call */
    return 0;
}

/* Endpoints of cluster in a bundle, as "ip:port,..." */
static const char *endpoints_of(const json_t *bundle, const char *cluster, char *buf, size_t len)
{
    size_t i, j, k;
    json_t *e, *loc, *lb;

    buf[0] = 0;
    json_array_foreach(json_object_get(bundle, "endpoints"), i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "cluster_name")), cluster) != 0)
            continue;
        json_array_foreach(json_object_get(e, "endpoints"), j, loc)
            json_array_foreach(json_object_get(loc, "lb_endpoints"), k, lb)
        {
            json_t *sa = json_object_get(
                json_object_get(json_object_get(lb, "endpoint"), "address"), "socket_address");
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s:%lld", buf[0] ? "," : "",
                     json_string_value(json_object_get(sa, "address")),
                     json_integer_value(json_object_get(sa, "port_value")));
        }
    }
    return buf;
}

/* A client that went through one full push and applied it: CDS c1/n1,
 * EDS e1/n3 (a and b), LDS l1/n2. */
static void applied_state(wf_xdsc *st, owner *o)
{
    json_t *n = node();
    reqs q;

    wf_xdsc_init(st, n);
    json_decref(n);
    wf_xdsc_stream_start(st);
    feed(st, WF_TYPE_CLUSTER, "c1", "n1", clusters_ab());
    feed(st, WF_TYPE_LISTENER, "l1", "n2", listeners("one"));
    feed(st, WF_TYPE_ENDPOINT, "e1", "n3",
         json_pack("[o, o]", cla(EDS_A, "10.0.0.1", 9080), cla(EDS_B, "10.0.0.2", 9080)));
    wf_xdsc_apply(st, apply_cb, o);
    take_all(st, &q);
    reqs_free(&q);
}

/* ---- the node ------------------------------------------------------------------------------ */

TEST(node_follows_the_contract)
{
    const char *svcs[] = {"reviews:9080", "ratings.prod:8080"};
    json_t *labels = json_pack("{s:s, s:s}", "app", "reviews", "version", "v1");
    wf_xds_node_info ni = {.namespace_ = "prod",
                           .service_account = "bookinfo-reviews",
                           .labels = labels,
                           .name = "reviews-v1-abc",
                           .instance_ips = "10.1.2.3,10.9.9.9",
                           .outbound = "127.0.0.1:15001",
                           .inbound = ":15006",
                           .app_port = 9080,
                           .services = svcs,
                           .n_services = 2,
                           .pid = 42};
    char err[256] = "";
    json_t *n = wf_xds_node(&ni, err, sizeof(err)), *md = json_object_get(n, "metadata");
    json_t *s;

    CHECK(n != NULL);
    CHECK_STR(json_string_value(json_object_get(n, "id")),
              "sidecar~10.1.2.3~reviews-v1-abc.prod~prod.svc.cluster.local");
    CHECK_STR(json_string_value(json_object_get(n, "cluster")), "reviews.prod");
    CHECK_STR(json_string_value(json_object_get(n, "user_agent_name")), "weft");
    CHECK_STR(json_string_value(json_object_get(n, "user_agent_version")), "0.1.0");
    CHECK_STR(json_string_value(json_object_get(md, "NAMESPACE")), "prod");
    CHECK_STR(json_string_value(json_object_get(md, "SERVICE_ACCOUNT")), "bookinfo-reviews");
    CHECK_STR(json_string_value(json_object_get(json_object_get(md, "LABELS"), "version")), "v1");
    CHECK_STR(json_string_value(json_object_get(md, "INSTANCE_IPS")), "10.1.2.3,10.9.9.9");
    CHECK_STR(json_string_value(json_object_get(md, "CLUSTER_ID")), "Kubernetes");
    CHECK_STR(json_string_value(json_object_get(md, "ISTIO_VERSION")), "weft-0.1.0");
    CHECK_STR(json_string_value(json_object_get(md, "WORKLOAD_NAME")), "reviews-v1-abc");
    CHECK_STR(json_string_value(json_object_get(md, "WEFT_OUTBOUND_LISTEN")), "127.0.0.1:15001");
    CHECK_STR(json_string_value(json_object_get(md, "WEFT_INBOUND_LISTEN")), ":15006");
    /* listening on every address: peers use the first instance IP */
    CHECK_STR(json_string_value(json_object_get(md, "WEFT_INBOUND_ADDR")), "10.1.2.3:15006");
    CHECK(json_is_integer(json_object_get(md, "WEFT_APP_PORT")));
    CHECK_INT(json_integer_value(json_object_get(md, "WEFT_APP_PORT")), 9080);
    s = json_object_get(md, "WEFT_SERVICES");
    CHECK_INT(json_array_size(s), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(s, 1), "name")), "ratings.prod");
    CHECK_INT(json_integer_value(json_object_get(json_array_get(s, 1), "port")), 8080);
    json_decref(n);
    json_decref(labels);
}

TEST(node_defaults)
{
    const char *svcs[] = {"details:9080"};
    wf_xds_node_info ni = {
        .inbound = "127.0.0.1:15106", .services = svcs, .n_services = 1, .pid = 77};
    char err[256];
    json_t *n = wf_xds_node(&ni, err, sizeof(err)), *md = json_object_get(n, "metadata");

    /* no app label: the first service names the workload */
    CHECK_STR(json_string_value(json_object_get(n, "id")),
              "sidecar~127.0.0.1~details-77.default~default.svc.cluster.local");
    CHECK_STR(json_string_value(json_object_get(n, "cluster")), "details-77.default");
    CHECK_STR(json_string_value(json_object_get(md, "SERVICE_ACCOUNT")), "default");
    CHECK_STR(json_string_value(json_object_get(md, "INSTANCE_IPS")), "127.0.0.1");
    CHECK_STR(json_string_value(json_object_get(md, "WEFT_INBOUND_ADDR")), "127.0.0.1:15106");
    CHECK_INT(json_integer_value(json_object_get(md, "WEFT_APP_PORT")), 0);
    CHECK(json_object_size(json_object_get(md, "LABELS")) == 0);
    json_decref(n);

    ni.n_services = 0;
    n = wf_xds_node(&ni, err, sizeof(err));
    CHECK_STR(json_string_value(json_object_get(n, "id")),
              "sidecar~127.0.0.1~proxy-77.default~default.svc.cluster.local");
    CHECK_INT(json_array_size(json_object_get(json_object_get(n, "metadata"), "WEFT_SERVICES")), 0);
    json_decref(n);
}

TEST(service_flag)
{
    char name[64], err[256];
    int port = 0;

    CHECK(wf_xds_parse_service("reviews:9080", name, sizeof(name), &port, err, sizeof(err)) == 0);
    CHECK_STR(name, "reviews");
    CHECK_INT(port, 9080);
    CHECK(wf_xds_parse_service("a.b-c:1", name, sizeof(name), &port, err, sizeof(err)) == 0);
    CHECK(wf_xds_parse_service("reviews", name, sizeof(name), &port, err, sizeof(err)) < 0);
    CHECK_STR(err, "--service \"reviews\" is not NAME:PORT (e.g. reviews:9080)");
    CHECK(wf_xds_parse_service("reviews:0", name, sizeof(name), &port, err, sizeof(err)) < 0);
    CHECK_STR(err, "--service \"reviews:0\": the port must be a number in 1..65535");
    CHECK(wf_xds_parse_service("reviews:65536", name, sizeof(name), &port, err, sizeof(err)) < 0);
    CHECK(wf_xds_parse_service("reviews:9x", name, sizeof(name), &port, err, sizeof(err)) < 0);
    CHECK(wf_xds_parse_service(":9080", name, sizeof(name), &port, err, sizeof(err)) < 0);
    CHECK(wf_xds_parse_service("re~views:9080", name, sizeof(name), &port, err, sizeof(err)) < 0);
    CHECK_STR(err, "--service \"re~views:9080\": \"re~views\" is not a service name (letters, "
                   "digits, '-' and '.')");
}

/* ---- backoff ------------------------------------------------------------------------------- */

TEST(backoff_doubles_to_ten_seconds_with_jitter)
{
    /* rnd % 51 picks the factor: 0 -> 0.75, 25 -> 1.0, 50 -> 1.25 */
    CHECK_INT(wf_xds_backoff_ms(0, 25), 100);
    CHECK_INT(wf_xds_backoff_ms(0, 0), 75);
    CHECK_INT(wf_xds_backoff_ms(0, 50), 125);
    CHECK_INT(wf_xds_backoff_ms(1, 25), 200);
    CHECK_INT(wf_xds_backoff_ms(2, 25), 400);
    CHECK_INT(wf_xds_backoff_ms(6, 25), 6400);
    CHECK_INT(wf_xds_backoff_ms(7, 25), 10000);
    CHECK_INT(wf_xds_backoff_ms(500, 25), 10000);
    CHECK_INT(wf_xds_backoff_ms(500, 50), 12500);
    CHECK_INT(wf_xds_backoff_ms(500, 0), 7500);
    for (uint32_t r = 0; r < 1000; r++) {
        uint64_t d = wf_xds_backoff_ms(3, r * 2654435761u);
        CHECK(d >= 600 && d <= 1000);
    }
}

/* ---- bookkeeping --------------------------------------------------------------------------- */

TEST(eds_names_from_clusters)
{
    json_t *c = json_pack("[o, o, o, o, {s:s, s:s}]", eds_cluster("z", NULL),
                          eds_cluster("y", "svc-b"), eds_cluster("x", "svc-b"),
                          eds_cluster("w", "a-first"), "name", "static", "type", "STATIC");
    char **names;
    long n = wf_xdsc_eds_names(c, &names);

    /* service_name when given, else the cluster name; sorted, once each;
     * STATIC clusters have no EDS name */
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(names[0], "a-first");
        CHECK_STR(names[1], "svc-b");
        CHECK_STR(names[2], "z");
    }
    wf_xdsc_names_free(names, (size_t)n);
    json_decref(c);
}

TEST(first_stream_subscribes_cds_and_lds)
{
    wf_xdsc st;
    json_t *n = node();
    reqs q;

    wf_xdsc_init(&st, n);
    json_decref(n);
    CHECK(wf_xdsc_stream_start(&st) == 0);
    take_all(&st, &q);
    /* wildcard CDS and LDS, empty versions and nonces, no EDS yet */
    CHECK_INT(q.n, 2);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "", "", "", 0);
    CHECK_REQ(&q, 1, WF_XDSC_LDS, "", "", "", 0);
    /* the node only in the stream's first request */
    CHECK(q.r[0].node && json_equal(q.r[0].node, st.node));
    CHECK(q.r[1].node == NULL);
    reqs_free(&q);
    CHECK(!wf_xdsc_complete(&st));
    wf_xdsc_free(&st);
}

TEST(full_push_is_applied_once_complete_and_acked)
{
    wf_xdsc st;
    owner o = {0};
    json_t *n = node();
    reqs q;
    char eb[256];

    wf_xdsc_init(&st, n);
    json_decref(n);
    wf_xdsc_stream_start(&st);
    take_all(&st, &q);
    reqs_free(&q);

    /* CDS: asks EDS for the EDS clusters' names; nothing to apply yet */
    CHECK_INT(feed(&st, WF_TYPE_CLUSTER, "c1", "n1", clusters_ab()), 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "", "", EDS_A "," EDS_B, 0);
    CHECK(q.r[0].node == NULL);
    reqs_free(&q);

    /* LDS: still waiting for endpoints; no ACK for anything yet */
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l1", "n2", listeners("one")), 0);
    CHECK(!wf_xdsc_complete(&st));
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 0);
    CHECK_INT(o.calls, 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 0);

    /* EDS for a only: still incomplete; the names go again with this
     * response's nonce, in case the first request's nonce was stale */
    CHECK_INT(
        feed(&st, WF_TYPE_ENDPOINT, "e0", "n3", json_pack("[o]", cla(EDS_A, "10.0.0.1", 9080))), 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "", "n3", EDS_A "," EDS_B, 0);
    reqs_free(&q);
    /* then both: complete */
    CHECK_INT(feed(&st, WF_TYPE_ENDPOINT, "e1", "n4",
                   json_pack("[o, o]", cla(EDS_A, "10.0.0.1", 9080), cla(EDS_B, "10.0.0.2", 9080))),
              1);
    CHECK(wf_xdsc_due(&st));
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    CHECK_INT(o.calls, 1);

    /* the bundle: what each type brought, endpoints by cluster name (b's
     * come under its service_name), the STATIC cluster's load_assignment */
    CHECK_STR(json_string_value(json_object_get(o.last, "version_info")), "l1/c1/e1");
    CHECK_INT(json_array_size(json_object_get(o.last, "listeners")), 1);
    CHECK_INT(json_array_size(json_object_get(o.last, "clusters")), 3);
    CHECK_INT(json_array_size(json_object_get(o.last, "endpoints")), 3);
    CHECK_STR(endpoints_of(o.last, EDS_A, eb, sizeof(eb)), "10.0.0.1:9080");
    CHECK_STR(endpoints_of(o.last, "cluster-b", eb, sizeof(eb)), "10.0.0.2:9080");
    CHECK_STR(endpoints_of(o.last, INBOUND, eb, sizeof(eb)), "127.0.0.1:8080");

    /* one ACK per type: its version and its last nonce */
    take_all(&st, &q);
    CHECK_INT(q.n, 3);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "c1", "n1", "", 0);
    CHECK_REQ(&q, 1, WF_XDSC_EDS, "e1", "n4", EDS_A "," EDS_B, 0);
    CHECK_REQ(&q, 2, WF_XDSC_LDS, "l1", "n2", "", 0);
    reqs_free(&q);
    CHECK(!wf_xdsc_due(&st));
    CHECK_STR(st.t[WF_XDSC_LDS].applied_version, "l1");
    CHECK_INT(st.t[WF_XDSC_LDS].status, WF_XDSC_ACKED);

    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(refused_push_is_nacked_and_the_old_config_kept)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;
    json_t *d;

    applied_state(&st, &o);
    CHECK_INT(o.calls, 1);

    /* a new LDS the owner cannot apply */
    o.refuse = "module \"nope\": not found";
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l2", "n5", listeners("two")), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), -2);
    CHECK_INT(o.calls, 2);
    take_all(&st, &q);
    /* NACK: the version still applied, the refused response's nonce, the
     * reason */
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_LDS, "l1", "n5", "", 1);
    if (q.n) {
        CHECK_STR(q.r[0].error_message, "module \"nope\": not found");
        CHECK_INT(q.r[0].error_code, WF_GRPC_INVALID_ARGUMENT);
    }
    reqs_free(&q);
    CHECK_STR(st.t[WF_XDSC_LDS].applied_version, "l1");
    CHECK_STR(st.t[WF_XDSC_LDS].last_nack, "module \"nope\": not found");
    CHECK_STR(st.last_nack, "LDS: module \"nope\": not found");
    CHECK_STR(json_string_value(json_object_get(st.applied, "version_info")), "l1/c1/e1");
    d = wf_xdsc_dump(&st);
    CHECK_STR(json_string_value(json_object_get(json_object_get(d, "LDS"), "version")), "l1");
    CHECK_STR(json_string_value(json_object_get(json_object_get(d, "LDS"), "nonce")), "n5");
    CHECK(json_is_false(json_object_get(json_object_get(d, "LDS"), "acked")));
    CHECK(json_is_true(json_object_get(json_object_get(d, "CDS"), "acked")));
    CHECK_STR(json_string_value(json_object_get(d, "last_nack")),
              "LDS: module \"nope\": not found");
    json_decref(d);

    /* an endpoint update while the bad LDS is still held: tried again,
     * refused again, and only the new response is NACKed */
    CHECK_INT(
        feed(&st, WF_TYPE_ENDPOINT, "e2", "n6", json_pack("[o]", cla(EDS_A, "10.0.0.9", 9080))), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), -2);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e1", "n6", EDS_A "," EDS_B, 1);
    reqs_free(&q);

    /* fixed LDS: applied, and every response it holds is ACKed, the
     * NACKed ones included */
    o.refuse = NULL;
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l3", "n7", listeners("three")), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 2);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e2", "n6", EDS_A "," EDS_B, 0);
    CHECK_REQ(&q, 1, WF_XDSC_LDS, "l3", "n7", "", 0);
    reqs_free(&q);
    CHECK(st.t[WF_XDSC_LDS].last_nack == NULL);
    CHECK_STR(json_string_value(json_object_get(o.last, "version_info")), "l3/c1/e2");
    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(endpoints_still_flow_while_a_refused_listener_is_held)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;
    char eb[256];

    applied_state(&st, &o);
    o.refuse_tag = "bad";
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l2", "n5", listeners("bad")), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), -2);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_LDS, "l1", "n5", "", 1);
    reqs_free(&q);
    /* an endpoint update: with the held LDS it is refused, without it
     * (the applied LDS) it goes through; LDS stays NACKed */
    CHECK_INT(
        feed(&st, WF_TYPE_ENDPOINT, "e2", "n6", json_pack("[o]", cla(EDS_A, "10.0.0.8", 9080))), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    CHECK_STR(endpoints_of(o.last, EDS_A, eb, sizeof(eb)), "10.0.0.8:9080");
    CHECK_STR(json_string_value(json_object_get(o.last, "version_info")), "l1/c1/e2");
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e2", "n6", EDS_A "," EDS_B, 0);
    reqs_free(&q);
    CHECK_INT(st.t[WF_XDSC_LDS].status, WF_XDSC_NACKED);
    CHECK_STR(st.t[WF_XDSC_LDS].applied_version, "l1");
    CHECK_STR(st.t[WF_XDSC_EDS].applied_version, "e2");
    CHECK(st.t[WF_XDSC_LDS].last_nack != NULL);
    /* a CDS change that drops b: the fallback takes the new clusters and
     * the endpoints it holds */
    CHECK_INT(feed(&st, WF_TYPE_CLUSTER, "c2", "n7", json_pack("[o]", eds_cluster(EDS_A, NULL))),
              1);
    take_all(&st, &q);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e2", "n6", EDS_A, 0);
    reqs_free(&q);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    CHECK_INT(json_array_size(json_object_get(o.last, "clusters")), 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "c2", "n7", "", 0);
    reqs_free(&q);
    /* the fixed LDS: applied, ACKed, the NACK cleared */
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l3", "n8", listeners("good")), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_LDS, "l3", "n8", "", 0);
    reqs_free(&q);
    CHECK(st.t[WF_XDSC_LDS].last_nack == NULL);
    CHECK_STR(json_string_value(json_object_get(o.last, "version_info")), "l3/c2/e2");
    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(eds_update_applies_alone)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;
    char eb[256];

    applied_state(&st, &o);
    /* EDS carries a subset: b keeps its endpoints */
    CHECK_INT(
        feed(&st, WF_TYPE_ENDPOINT, "e2", "n5", json_pack("[o]", cla(EDS_A, "10.0.0.7", 9080))), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    CHECK_STR(endpoints_of(o.last, EDS_A, eb, sizeof(eb)), "10.0.0.7:9080");
    CHECK_STR(endpoints_of(o.last, "cluster-b", eb, sizeof(eb)), "10.0.0.2:9080");
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e2", "n5", EDS_A "," EDS_B, 0);
    reqs_free(&q);
    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(same_content_is_acked_without_rebuilding)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;

    applied_state(&st, &o);
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l1", "n5", listeners("one")), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 0);
    CHECK_INT(o.calls, 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_LDS, "l1", "n5", "", 0);
    reqs_free(&q);
    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(new_cluster_waits_for_its_endpoints)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;
    json_t *cl;

    applied_state(&st, &o);
    /* CDS drops b and adds c: EDS is asked for the new names with the
     * version applied and the last EDS nonce */
    cl = json_pack("[o, o]", eds_cluster(EDS_A, NULL), eds_cluster(EDS_C, NULL));
    CHECK_INT(feed(&st, WF_TYPE_CLUSTER, "c2", "n5", cl), 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e1", "n3", EDS_C "," EDS_A, 0);
    reqs_free(&q);
    /* b's endpoints are forgotten, c's are missing: not complete, and the
     * CDS response waits unanswered */
    CHECK(json_object_get(st.t[WF_XDSC_EDS].held, EDS_B) == NULL);
    CHECK(!wf_xdsc_complete(&st));
    CHECK_INT(st.t[WF_XDSC_CDS].status, WF_XDSC_PENDING);
    CHECK_INT(feed(&st, WF_TYPE_ENDPOINT, "e2", "n6",
                   json_pack("[o, o]", cla(EDS_A, "10.0.0.1", 9080), cla(EDS_C, "10.0.0.3", 80))),
              1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    take_all(&st, &q);
    /* the names again after their change (the first response since),
     * then the ACKs */
    CHECK_INT(q.n, 3);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e1", "n6", EDS_C "," EDS_A, 0);
    CHECK_REQ(&q, 1, WF_XDSC_CDS, "c2", "n5", "", 0);
    CHECK_REQ(&q, 2, WF_XDSC_EDS, "e2", "n6", EDS_C "," EDS_A, 0);
    reqs_free(&q);
    CHECK_INT(json_array_size(json_object_get(o.last, "endpoints")), 2);
    json_decref(o.last);

    /* the last EDS cluster goes: EDS is unsubscribed (no names) */
    CHECK_INT(feed(&st, WF_TYPE_CLUSTER, "c3", "n7", json_array()), 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e2", "n6", "", 0);
    reqs_free(&q);
    o.last = NULL;
    wf_xdsc_free(&st);
}

TEST(names_request_overtaken_by_a_push_is_sent_again)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;

    applied_state(&st, &o);
    /* one push: CDS adds c, EDS and LDS follow at once.  The client asks
     * for c with the EDS nonce it had (n3), but the server has already
     * sent n5 and ignores a request with n3. */
    CHECK_INT(feed(&st, WF_TYPE_CLUSTER, "c2", "n4",
                   json_pack("[o, o, o]", eds_cluster(EDS_A, NULL), eds_cluster("cluster-b", EDS_B),
                             eds_cluster(EDS_C, NULL))),
              0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e1", "n3", EDS_C "," EDS_A "," EDS_B, 0);
    reqs_free(&q);
    /* n5: endpoints for the old names only: c is missing, so the names go
     * again with n5, which the server does not ignore */
    CHECK_INT(feed(&st, WF_TYPE_ENDPOINT, "e2", "n5",
                   json_pack("[o, o]", cla(EDS_A, "10.0.0.5", 9080), cla(EDS_B, "10.0.0.2", 9080))),
              0);
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l2", "n6", listeners("two")), 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e1", "n5", EDS_C "," EDS_A "," EDS_B, 0);
    reqs_free(&q);
    CHECK(!wf_xdsc_due(&st));
    CHECK_INT(o.calls, 1);
    /* the server's answer: complete, applied, every type ACKed */
    CHECK_INT(feed(&st, WF_TYPE_ENDPOINT, "e3", "n7",
                   json_pack("[o, o, o]", cla(EDS_A, "10.0.0.5", 9080),
                             cla(EDS_B, "10.0.0.2", 9080), cla(EDS_C, "10.0.0.3", 80))),
              1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 3);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "c2", "n4", "", 0);
    CHECK_REQ(&q, 1, WF_XDSC_EDS, "e3", "n7", EDS_C "," EDS_A "," EDS_B, 0);
    CHECK_REQ(&q, 2, WF_XDSC_LDS, "l2", "n6", "", 0);
    reqs_free(&q);
    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(undecodable_response_is_nacked_at_once)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;

    applied_state(&st, &o);
    CHECK(wf_xdsc_reject(&st, WF_TYPE_CLUSTER, "n9", "Cluster \"x\": lb_policy: bad enum") == 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "c1", "n9", "", 1);
    if (q.n)
        CHECK_STR(q.r[0].error_message, "Cluster \"x\": lb_policy: bad enum");
    reqs_free(&q);
    CHECK_INT(st.t[WF_XDSC_CDS].status, WF_XDSC_REJECTED);
    {
        json_t *held = wf_junpack(st.t[WF_XDSC_CDS].held);
        CHECK_INT(json_array_size(held), 3);
        json_decref(held);
    }
    /* a later successful apply does not ACK what was never held */
    CHECK_INT(feed(&st, WF_TYPE_LISTENER, "l2", "n10", listeners("two")), 1);
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_LDS, "l2", "n10", "", 0);
    reqs_free(&q);
    /* an EDS assignment without a cluster name cannot be held */
    CHECK_INT(feed(&st, WF_TYPE_ENDPOINT, "e5", "n11", json_pack("[{s:[]}]", "endpoints")), 0);
    take_all(&st, &q);
    CHECK_INT(q.n, 1);
    CHECK_REQ(&q, 0, WF_XDSC_EDS, "e1", "n11", EDS_A "," EDS_B, 1);
    if (q.n)
        CHECK_STR(q.r[0].error_message, "ClusterLoadAssignment resources[0] has no cluster_name");
    reqs_free(&q);
    json_decref(o.last);
    wf_xdsc_free(&st);
}

TEST(unsubscribed_types_are_ignored)
{
    wf_xdsc st;
    json_t *n = node();
    reqs q;

    wf_xdsc_init(&st, n);
    json_decref(n);
    /* before any stream: nothing subscribed */
    CHECK_INT(feed(&st, WF_TYPE_CLUSTER, "c1", "n1", clusters_ab()), 0);
    CHECK(st.t[WF_XDSC_CDS].held == NULL);
    wf_xdsc_stream_start(&st);
    take_all(&st, &q);
    reqs_free(&q);
    CHECK_INT(feed(&st, WF_TYPE_ROUTE, "r1", "n1", json_array()), 0);
    CHECK_INT(feed(&st, WF_TYPE_ENDPOINT, "e1", "n2", json_array()), 0); /* EDS not asked yet */
    take_all(&st, &q);
    CHECK_INT(q.n, 0);
    CHECK(wf_xdsc_reject(&st, WF_TYPE_SECRET, "n3", "x") < 0);
    wf_xdsc_free(&st);
}

TEST(reconnect_resubscribes_with_versions_held)
{
    wf_xdsc st;
    owner o = {0};
    reqs q;

    applied_state(&st, &o);
    /* a response that arrived and was never answered before the stream
     * broke */
    feed(&st, WF_TYPE_LISTENER, "l2", "n5", listeners("two"));
    CHECK(wf_xdsc_stream_start(&st) == 0);
    take_all(&st, &q);
    /* node again, the versions applied, no nonces from the old stream, the
     * EDS names */
    CHECK_INT(q.n, 3);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "c1", "", "", 0);
    CHECK_REQ(&q, 1, WF_XDSC_EDS, "e1", "", EDS_A "," EDS_B, 0);
    CHECK_REQ(&q, 2, WF_XDSC_LDS, "l1", "", "", 0);
    CHECK(q.r[0].node != NULL);
    CHECK(q.r[1].node == NULL && q.r[2].node == NULL);
    reqs_free(&q);
    CHECK_INT(st.streams, 2);
    CHECK(!wf_xdsc_due(&st));
    /* the server's answers to the resubscription, unchanged: ACKed, no
     * rebuild; the one changed LDS is applied */
    feed(&st, WF_TYPE_CLUSTER, "c1", "m1", clusters_ab());
    feed(&st, WF_TYPE_ENDPOINT, "e1", "m2",
         json_pack("[o, o]", cla(EDS_A, "10.0.0.1", 9080), cla(EDS_B, "10.0.0.2", 9080)));
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 0);
    CHECK_INT(o.calls, 1);
    take_all(&st, &q);
    CHECK_INT(q.n, 2);
    CHECK_REQ(&q, 0, WF_XDSC_CDS, "c1", "m1", "", 0);
    CHECK_REQ(&q, 1, WF_XDSC_EDS, "e1", "m2", EDS_A "," EDS_B, 0);
    reqs_free(&q);
    feed(&st, WF_TYPE_LISTENER, "l2", "m3", listeners("two"));
    CHECK_INT(wf_xdsc_apply(&st, apply_cb, &o), 1);
    CHECK_INT(o.calls, 2);
    take_all(&st, &q);
    CHECK_REQ(&q, 0, WF_XDSC_LDS, "l2", "m3", "", 0);
    reqs_free(&q);
    json_decref(o.last);
    wf_xdsc_free(&st);
}

/* ---- the client against a real ADS stream --------------------------------------------------- */

/* A minimal ADS server: answers each new subscription with that type's
 * resources and records what the client sends. */
typedef struct fake {
    uv_loop_t *loop;
    wf_grpc_server *srv;
    int port;
    int n_req;
    int n_acks;
    int n_nodes;
    char first_versions[3][32]; /* of this server's first request per type */
} fake;

static json_t *fake_resources(int type)
{
    switch (type) {
    case WF_XDSC_CDS:
        return json_pack("[{s:s, s:s, s:{s:s}}]", "name", EDS_A, "type", "EDS",
                         "eds_cluster_config", "service_name", EDS_A);
    case WF_XDSC_EDS:
        return json_pack("[o]", cla(EDS_A, "127.0.0.1", 9));
    default:
        return json_pack("[{s:s, s:{s:{s:s, s:i}}}]", "name", "virtualOutbound", "address",
                         "socket_address", "address", "127.0.0.1", "port_value", 15001);
    }
}

static int fake_call(wf_grpc_call *c, const char *path, void *ud)
{
    return strcmp(path, WF_ADS_METHOD) == 0 ? WF_GRPC_OK : WF_GRPC_UNIMPLEMENTED;
}

static void fake_message(wf_grpc_call *c, const uint8_t *msg, size_t len, void *ud)
{
    fake *f = ud;
    wf_xds_request r;
    char err[256];
    int type;

    if (wf_xds_request_decode(msg, len, &r, err, sizeof(err)) < 0)
        return;
    f->n_req++;
    f->n_nodes += r.node != NULL;
    type = wf_xdsc_type_of(r.type_url);
    if (type >= 0 && !r.response_nonce[0]) {
        static const char *const vers[] = {"cv", "ev", "lv"};
        wf_xds_response resp = {.version_info = (char *)vers[type],
                                .type_url = r.type_url,
                                .nonce = (char *)(type == 0   ? "1"
                                                  : type == 1 ? "2"
                                                              : "3"),
                                .resources = fake_resources(type)};
        uint8_t *out;
        size_t olen;
        snprintf(f->first_versions[type], sizeof(f->first_versions[type]), "%s", r.version_info);
        if (wf_xds_response_encode(&resp, &out, &olen, err, sizeof(err)) == 0) {
            wf_grpc_send(c, out, olen);
            free(out);
        } else {
            fprintf(stderr, "fake ADS server: %s\n", err);
        }
        json_decref(resp.resources);
    } else if (type >= 0 && !r.has_error &&
               strcmp(r.version_info, type == 0   ? "cv"
                                      : type == 1 ? "ev"
                                                  : "lv") == 0) {
        f->n_acks++; /* an ACK of what this server sent (not a names request) */
    }
    wf_xds_request_free(&r);
}

static void fake_close(wf_grpc_call *c, void *ud)
{
}

static int fake_start(fake *f, int port)
{
    static const wf_grpc_server_handlers h0 = {
        .on_call = fake_call, .on_message = fake_message, .on_close = fake_close};
    wf_grpc_server_handlers h = h0;
    char addr[64], err[256];

    h.ud = f;
    f->n_req = f->n_acks = f->n_nodes = 0;
    memset(f->first_versions, 0, sizeof(f->first_versions));
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    f->srv = wf_grpc_server_start(f->loop, addr, &h, err, sizeof(err));
    if (!f->srv) {
        fprintf(stderr, "fake ADS server: %s\n", err);
        return -1;
    }
    f->port = wf_grpc_server_port(f->srv);
    return 0;
}

static int expired;

static void on_deadline(uv_timer_t *t)
{
    expired = 1;
}

/* Runs the loop until cond holds or 10 s pass. */
#define RUN_UNTIL(loop, cond)                                                                      \
    do {                                                                                           \
        uv_timer_t dl_;                                                                            \
        expired = 0;                                                                               \
        uv_timer_init(loop, &dl_);                                                                 \
        uv_timer_start(&dl_, on_deadline, 10000, 0);                                               \
        while (!(cond) && !expired)                                                                \
            uv_run(loop, UV_RUN_ONCE);                                                             \
        uv_close((uv_handle_t *)&dl_, NULL);                                                       \
        uv_run(loop, UV_RUN_NOWAIT);                                                               \
        CHECK(cond);                                                                               \
    } while (0)

static void wait_ms(uv_loop_t *loop, uint64_t ms)
{
    uint64_t until = uv_now(loop) + ms;

    while (uv_now(loop) < until) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(loop);
    }
}

TEST(client_reconnects_and_resubscribes)
{
    uv_loop_t loop;
    fake f = {.loop = &loop};
    owner o = {0};
    wf_xds_client *c;
    json_t *n = node(), *d;
    char addr[64], err[256];
    int port;

    uv_loop_init(&loop);
    if (fake_start(&f, 0) < 0) {
        CHECK(0);
        return;
    }
    port = f.port;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    c = wf_xds_client_start(&loop, addr, n, apply_cb, &o, err, sizeof(err));
    json_decref(n);
    CHECK(c != NULL);
    if (!c)
        return;
    /* subscribe CDS + LDS, then EDS; one apply; three ACKs */
    RUN_UNTIL(&loop, o.calls == 1 && f.n_acks == 3);
    CHECK_INT(f.n_nodes, 1);
    CHECK_STR(f.first_versions[WF_XDSC_CDS], "");
    CHECK(wf_xds_client_connected(c));
    d = wf_xds_client_dump(c);
    CHECK_STR(json_string_value(json_object_get(json_object_get(d, "EDS"), "version")), "ev");
    CHECK(json_is_true(json_object_get(d, "connected")));
    json_decref(d);

    /* istiod goes away: the client keeps its config and retries */
    wf_grpc_server_stop(f.srv);
    RUN_UNTIL(&loop, !wf_xds_client_connected(c));
    wait_ms(&loop, 300);
    d = wf_xds_client_dump(c);
    CHECK(json_integer_value(json_object_get(d, "reconnects")) >= 2);
    CHECK(json_is_false(json_object_get(d, "connected")));
    json_decref(d);

    /* a new istiod on the same address: the node again, the versions held,
     * the same content ACKed without a second apply */
    if (fake_start(&f, port) < 0) {
        CHECK(0);
    } else {
        RUN_UNTIL(&loop, f.n_acks == 3);
        CHECK_INT(f.n_nodes, 1);
        CHECK_STR(f.first_versions[WF_XDSC_CDS], "cv");
        CHECK_STR(f.first_versions[WF_XDSC_EDS], "ev");
        CHECK_STR(f.first_versions[WF_XDSC_LDS], "lv");
        CHECK_INT(o.calls, 1);
        wf_grpc_server_stop(f.srv);
    }
    wf_xds_client_stop(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
    json_decref(o.last);
}

int main(void)
{
    wf_log_threshold = WF_LERROR; /* the reconnect test's warnings are expected */
    RUN(node_follows_the_contract);
    RUN(node_defaults);
    RUN(service_flag);
    RUN(backoff_doubles_to_ten_seconds_with_jitter);
    RUN(eds_names_from_clusters);
    RUN(first_stream_subscribes_cds_and_lds);
    RUN(full_push_is_applied_once_complete_and_acked);
    RUN(refused_push_is_nacked_and_the_old_config_kept);
    RUN(endpoints_still_flow_while_a_refused_listener_is_held);
    RUN(eds_update_applies_alone);
    RUN(same_content_is_acked_without_rebuilding);
    RUN(new_cluster_waits_for_its_endpoints);
    RUN(names_request_overtaken_by_a_push_is_sent_again);
    RUN(undecodable_response_is_nacked_at_once);
    RUN(unsubscribed_types_are_ignored);
    RUN(reconnect_resubscribes_with_versions_held);
    RUN(client_reconnects_and_resubscribes);
    return TEST_SUMMARY();
}
