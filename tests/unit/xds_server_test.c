/* xds_server_test.c: the ADS server's per-stream bookkeeping (core/xds/server.c):
 * subscriptions, versions, nonces, ACK, NACK, stale nonces, named
 * subscriptions and listener aliases, without sockets; snapshots (one
 * encoding shared by every stream of a translation, EDS deltas); and istiod's
 * registry of self-registered workloads merged into the config
 * (core/istiod/registry.c). */
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "istiod/registry.h"
#include "test.h"
#include "xds/server.h"

/* A request as a client sends it; names is NULL-terminated. */
static wf_xds_request req(const char *type_url, const char *version, const char *nonce,
                          const char *const *names)
{
    wf_xds_request r;

    memset(&r, 0, sizeof(r));
    r.type_url = (char *)type_url;
    r.version_info = (char *)version;
    r.response_nonce = (char *)nonce;
    r.resource_names = (char **)names;
    while (names && names[r.n_resource_names])
        r.n_resource_names++;
    return r;
}

static json_t *node(void)
{
    return json_pack("{s:s, s:{s:s}}", "id",
                     "sidecar~127.0.0.1~a.default~default.svc.cluster.local", "metadata",
                     "NAMESPACE", "default");
}

static json_t *clusters(const char *lb)
{
    return json_pack("[{s:s, s:s}, {s:s, s:s}]", "name", "outbound|9080||a", "lb_policy", lb,
                     "name", "outbound|9080||b", "lb_policy", "ROUND_ROBIN");
}

static json_t *cla(const char *name, const char *ip)
{
    return json_pack("{s:s, s:[{s:[{s:{s:{s:{s:s, s:i}}}}]}]}", "cluster_name", name, "endpoints",
                     "lb_endpoints", "endpoint", "address", "socket_address", "address", ip,
                     "port_value", 9080);
}

static json_t *listener(const char *name, int port)
{
    return json_pack("{s:s, s:{s:{s:s, s:i}}}", "name", name, "address", "socket_address",
                     "address", "127.0.0.1", "port_value", port);
}

/* The message a push sends: body then tail. */
static size_t push_bytes(const wf_xds_push *p, uint8_t *buf, size_t cap)
{
    if (p->body_len + p->tail_len > cap)
        return 0;
    memcpy(buf, p->body, p->body_len);
    memcpy(buf + p->body_len, p->tail, p->tail_len);
    return p->body_len + p->tail_len;
}

/* What st is owed for type when a translation's resources of that type
 * are all: made into a snapshot, pushed as the server pushes, and decoded
 * back into resp (free with wf_xds_response_free) when there is one. */
static int respond(wf_xds_stream_state *st, int type, json_t *all, uint64_t now,
                   wf_xds_response *resp)
{
    json_t *b = json_pack("{s:[], s:[], s:[]}", "listeners", "clusters", "endpoints");
    wf_xds_snapshot *sn;
    wf_xds_push p;
    uint8_t m[65536];
    char err[512];
    int r;

    memset(resp, 0, sizeof(*resp));
    json_object_set(b, wf_xds_bundle_key(type), all);
    sn = wf_xds_snapshot_new(b);
    r = wf_xds_state_respond(st, type, sn, "default", now, &p, err, sizeof(err));
    if (r == 1)
        CHECK(wf_xds_response_decode(m, push_bytes(&p, m, sizeof(m)), resp, err, sizeof(err)) == 0);
    wf_xds_snapshot_unref(sn);
    json_decref(b);
    return r;
}

/* Starts a stream with its first request (CDS, wildcard). */
static void start(wf_xds_stream_state *st, wf_xds_outcome *o)
{
    char err[256];
    wf_xds_request r = req(WF_TYPE_CLUSTER, "", "", NULL);

    wf_xds_state_init(st);
    r.node = node();
    CHECK(wf_xds_state_request(st, &r, 1000, o, err, sizeof(err)) == 0);
    json_decref(r.node);
}

TEST(first_request_needs_node)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_request r = req(WF_TYPE_CLUSTER, "", "", NULL);
    char err[256] = "";

    wf_xds_state_init(&st);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_BAD);
    CHECK(strstr(err, "node") != NULL);
    wf_xds_state_free(&st);
}

TEST(first_request_subscribes_wildcard)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    json_t *all = clusters("ROUND_ROBIN");

    start(&st, &o);
    CHECK_INT(o.verdict, WF_XDS_SUBSCRIBE);
    CHECK(o.first);
    CHECK_INT(o.type, WF_XDS_CDS);
    CHECK(o.respond);
    CHECK(st.t[WF_XDS_CDS].subscribed && st.t[WF_XDS_CDS].wildcard);
    CHECK(st.node != NULL);

    CHECK_INT(respond(&st, WF_XDS_CDS, all, 900, &resp), 1);
    CHECK_STR(resp.type_url, WF_TYPE_CLUSTER);
    CHECK_STR(resp.nonce, "1");
    CHECK_INT(strlen(resp.version_info), 16);
    CHECK_INT(json_array_size(resp.resources), 2);
    CHECK_STR(st.t[WF_XDS_CDS].sent_version, resp.version_info);
    CHECK_STR(st.t[WF_XDS_CDS].sent_nonce, "1");
    CHECK(st.t[WF_XDS_CDS].acked_version == NULL);
    wf_xds_response_free(&resp);
    /* Nothing owed any more, nothing changed: no second response. */
    CHECK_INT(respond(&st, WF_XDS_CDS, all, 900, &resp), 0);
    /* Types never asked for get nothing. */
    CHECK_INT(respond(&st, WF_XDS_LDS, all, 900, &resp), 0);
    json_decref(all);
    wf_xds_state_free(&st);
}

TEST(ack_records_version_and_convergence)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    json_t *all = clusters("ROUND_ROBIN");
    char err[256], v[17];
    wf_xds_request r;

    start(&st, &o);
    CHECK_INT(respond(&st, WF_XDS_CDS, all, 900, &resp), 1);
    snprintf(v, sizeof(v), "%s", resp.version_info);
    wf_xds_response_free(&resp);
    r = req(WF_TYPE_CLUSTER, v, "1", NULL);
    CHECK(wf_xds_state_request(&st, &r, 1250, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_ACK);
    CHECK(!o.first);
    CHECK(!o.respond);
    CHECK_INT(o.converged, 350);
    CHECK_STR(st.t[WF_XDS_CDS].acked_version, v);
    CHECK_INT(st.t[WF_XDS_CDS].n_acks, 1);
    /* The same ACK again is counted but not measured twice. */
    CHECK(wf_xds_state_request(&st, &r, 1300, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_ACK);
    CHECK_INT(o.converged, -1);
    json_decref(all);
    wf_xds_state_free(&st);
}

TEST(nack_keeps_last_good_and_counts)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    json_t *good = clusters("ROUND_ROBIN"), *bad = clusters("MAGLEV");
    char err[256], v1[17], v2[17];
    wf_xds_request r;

    start(&st, &o);
    CHECK_INT(respond(&st, WF_XDS_CDS, good, 0, &resp), 1);
    snprintf(v1, sizeof(v1), "%s", resp.version_info);
    wf_xds_response_free(&resp);
    r = req(WF_TYPE_CLUSTER, v1, "1", NULL);
    CHECK(wf_xds_state_request(&st, &r, 10, &o, err, sizeof(err)) == 0);

    /* The content changes: a new version and nonce. */
    CHECK_INT(respond(&st, WF_XDS_CDS, bad, 20, &resp), 1);
    snprintf(v2, sizeof(v2), "%s", resp.version_info);
    CHECK(strcmp(v1, v2) != 0);
    CHECK_STR(resp.nonce, "2");
    wf_xds_response_free(&resp);

    /* The client refuses it: same nonce, its old version, error_detail. */
    r = req(WF_TYPE_CLUSTER, v1, "2", NULL);
    r.has_error = 1;
    r.error_code = 3;
    r.error_message = "cluster outbound|9080||a: lb_policy MAGLEV is not supported";
    CHECK(wf_xds_state_request(&st, &r, 30, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_NACK);
    CHECK(!o.respond);
    CHECK_STR(st.t[WF_XDS_CDS].acked_version, v1);
    CHECK_STR(st.t[WF_XDS_CDS].sent_version, v2);
    CHECK_STR(st.t[WF_XDS_CDS].last_nack, r.error_message);
    CHECK_INT(st.t[WF_XDS_CDS].n_nacks, 1);
    /* The refused content is not sent again... */
    CHECK_INT(respond(&st, WF_XDS_CDS, bad, 40, &resp), 0);
    /* ...a fix is, and its ACK clears the NACK. */
    CHECK_INT(respond(&st, WF_XDS_CDS, good, 50, &resp), 1);
    CHECK_STR(resp.version_info, v1);
    CHECK_STR(resp.nonce, "3");
    wf_xds_response_free(&resp);
    r = req(WF_TYPE_CLUSTER, v1, "3", NULL);
    CHECK(wf_xds_state_request(&st, &r, 60, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_ACK);
    CHECK(st.t[WF_XDS_CDS].last_nack == NULL);
    /* A NACK without a message still says something. */
    CHECK_INT(respond(&st, WF_XDS_CDS, bad, 70, &resp), 1);
    wf_xds_response_free(&resp);
    r = req(WF_TYPE_CLUSTER, v1, "4", NULL);
    r.has_error = 1;
    r.error_code = 13;
    CHECK(wf_xds_state_request(&st, &r, 80, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_NACK);
    CHECK(st.t[WF_XDS_CDS].last_nack && strstr(st.t[WF_XDS_CDS].last_nack, "13"));
    CHECK_INT(st.t[WF_XDS_CDS].n_nacks, 2);
    json_decref(good);
    json_decref(bad);
    wf_xds_state_free(&st);
}

TEST(stale_nonce_ignored)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    json_t *a = clusters("ROUND_ROBIN"), *b = clusters("RANDOM");
    char err[256], v1[17];
    wf_xds_request r;

    start(&st, &o);
    CHECK_INT(respond(&st, WF_XDS_CDS, a, 0, &resp), 1);
    snprintf(v1, sizeof(v1), "%s", resp.version_info);
    wf_xds_response_free(&resp);
    CHECK_INT(respond(&st, WF_XDS_CDS, b, 0, &resp), 1);
    wf_xds_response_free(&resp);
    /* The ACK of nonce 1 arrives after nonce 2 went out: stale. */
    r = req(WF_TYPE_CLUSTER, v1, "1", NULL);
    CHECK(wf_xds_state_request(&st, &r, 10, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_STALE);
    CHECK(!o.respond);
    CHECK(st.t[WF_XDS_CDS].acked_version == NULL);
    /* So is a NACK of it, and a nonce never sent. */
    r.has_error = 1;
    r.error_message = "old";
    CHECK(wf_xds_state_request(&st, &r, 10, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_STALE);
    CHECK(st.t[WF_XDS_CDS].last_nack == NULL);
    r = req(WF_TYPE_CLUSTER, v1, "77", NULL);
    CHECK(wf_xds_state_request(&st, &r, 10, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_STALE);
    json_decref(a);
    json_decref(b);
    wf_xds_state_free(&st);
}

TEST(version_changes_only_with_content)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    json_t *a = clusters("ROUND_ROBIN"), *same, *c;
    char v1[17];

    /* The same resources built again, keys in another order. */
    same = json_pack("[{s:s, s:s}, {s:s, s:s}]", "lb_policy", "ROUND_ROBIN", "name",
                     "outbound|9080||a", "lb_policy", "ROUND_ROBIN", "name", "outbound|9080||b");
    c = clusters("RANDOM");
    start(&st, &o);
    CHECK_INT(respond(&st, WF_XDS_CDS, a, 0, &resp), 1);
    snprintf(v1, sizeof(v1), "%s", resp.version_info);
    wf_xds_response_free(&resp);
    CHECK_INT(respond(&st, WF_XDS_CDS, same, 0, &resp), 0);
    CHECK_INT(respond(&st, WF_XDS_CDS, c, 0, &resp), 1);
    CHECK(strcmp(resp.version_info, v1) != 0);
    wf_xds_response_free(&resp);
    json_decref(a);
    json_decref(same);
    json_decref(c);
    wf_xds_state_free(&st);
}

TEST(eds_named_subscriptions)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    json_t *all = json_pack("[o, o, o]", cla("outbound|9080||a", "10.0.0.1"),
                            cla("outbound|9080||b", "10.0.0.2"),
                            cla("outbound|9080||c", "10.0.0.3"));
    json_t *all2;
    const char *const ba[] = {"outbound|9080||b", "outbound|9080||a", "outbound|9080||a", NULL};
    const char *const bc[] = {"outbound|9080||c", "outbound|9080||b", "outbound|9080||zzz", NULL};
    char err[256], v1[17], nonce[24];
    wf_xds_request r;

    start(&st, &o);
    /* EDS without names asks for nothing (no wildcard for EDS). */
    r = req(WF_TYPE_ENDPOINT, "", "", NULL);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_SUBSCRIBE);
    CHECK(!st.t[WF_XDS_EDS].wildcard);
    CHECK_INT(respond(&st, WF_XDS_EDS, all, 0, &resp), 1);
    CHECK_INT(json_array_size(resp.resources), 0);
    snprintf(nonce, sizeof(nonce), "%s", resp.nonce);
    wf_xds_response_free(&resp);

    /* Names come with the ACK: sorted, unique; a response is owed. */
    r = req(WF_TYPE_ENDPOINT, "", nonce, ba);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_ACK);
    CHECK(o.respond);
    CHECK_INT(st.t[WF_XDS_EDS].n_names, 2);
    CHECK_STR(st.t[WF_XDS_EDS].names[0], "outbound|9080||a");
    CHECK_INT(respond(&st, WF_XDS_EDS, all, 0, &resp), 1);
    CHECK_INT(json_array_size(resp.resources), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(resp.resources, 0), "cluster_name")),
              "outbound|9080||a");
    CHECK_STR(json_string_value(json_object_get(json_array_get(resp.resources, 1), "cluster_name")),
              "outbound|9080||b");
    snprintf(v1, sizeof(v1), "%s", resp.version_info);
    snprintf(nonce, sizeof(nonce), "%s", resp.nonce);
    wf_xds_response_free(&resp);
    r = req(WF_TYPE_ENDPOINT, v1, nonce, ba);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_ACK);
    CHECK(!o.respond);

    /* An endpoint of an unsubscribed cluster changes: no push. */
    all2 = json_pack("[o, o, o]", cla("outbound|9080||a", "10.0.0.1"),
                     cla("outbound|9080||b", "10.0.0.2"), cla("outbound|9080||c", "10.9.9.9"));
    CHECK_INT(respond(&st, WF_XDS_EDS, all2, 0, &resp), 0);

    /* The subscription changes: only what is asked for and exists. */
    r = req(WF_TYPE_ENDPOINT, v1, nonce, bc);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK(o.respond);
    CHECK_INT(respond(&st, WF_XDS_EDS, all2, 0, &resp), 1);
    CHECK_INT(json_array_size(resp.resources), 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(resp.resources, 0), "cluster_name")),
              "outbound|9080||b");
    CHECK_STR(json_string_value(json_object_get(json_array_get(resp.resources, 1), "cluster_name")),
              "outbound|9080||c");
    wf_xds_response_free(&resp);
    json_decref(all);
    json_decref(all2);
    wf_xds_state_free(&st);
}

TEST(lds_named_aliases)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_response resp;
    /* Told apart by their ports: 2, 1, 3. */
    json_t *all = json_pack("[o, o, o]", listener("reviews.default.svc.cluster.local:9443", 2),
                            listener("reviews.default.svc.cluster.local:9080", 1),
                            listener("ratings.prod.svc.cluster.local:9080", 3));
    const char *const names[] = {"reviews:9080",
                                 "reviews.default:9080",
                                 "reviews.default.svc:9443",
                                 "ratings.prod:9080",
                                 "reviews",
                                 "reviews.default.svc.cluster.local:9080",
                                 "nosuch:80",
                                 NULL};
    const char *const want[][2] = {
        {"ratings.prod:9080", "3"},        {"reviews", "1"},
        {"reviews.default.svc.cluster.local:9080", "1"}, {"reviews.default.svc:9443", "2"},
        {"reviews.default:9080", "1"},     {"reviews:9080", "1"},
    };
    char err[256];
    wf_xds_request r = req(WF_TYPE_LISTENER, "", "", names);

    start(&st, &o);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_SUBSCRIBE);
    CHECK(!st.t[WF_XDS_LDS].wildcard);
    CHECK_INT(respond(&st, WF_XDS_LDS, all, 0, &resp), 1);
    CHECK_INT(json_array_size(resp.resources), 6);
    for (size_t i = 0; i < 6; i++) {
        json_t *l = json_array_get(resp.resources, i);
        char n[8];
        snprintf(n, sizeof(n), "%d",
                 (int)json_integer_value(json_object_get(
                     json_object_get(json_object_get(l, "address"), "socket_address"),
                     "port_value")));
        CHECK_STR(json_string_value(json_object_get(l, "name")), want[i][0]);
        CHECK_STR(n, want[i][1]);
    }
    /* The translator's resources were not renamed in place. */
    CHECK_STR(json_string_value(json_object_get(json_array_get(all, 1), "name")),
              "reviews.default.svc.cluster.local:9080");
    wf_xds_response_free(&resp);
    json_decref(all);
    wf_xds_state_free(&st);
}

TEST(unknown_type_and_reconnect_nonce)
{
    wf_xds_stream_state st;
    wf_xds_outcome o;
    char err[256];
    wf_xds_request r = req(WF_TYPE_SECRET, "", "", NULL);

    start(&st, &o);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_IGNORE);
    CHECK_INT(o.type, -1);
    /* A client back from an earlier stream carries that stream's nonce on
     * a type this one never answered: a new subscription. */
    r = req(WF_TYPE_LISTENER, "0123456789abcdef", "41", NULL);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_SUBSCRIBE);
    CHECK(o.respond);
    CHECK(st.t[WF_XDS_LDS].wildcard);
    CHECK_INT(wf_xds_type_of(WF_TYPE_ENDPOINT), WF_XDS_EDS);
    CHECK_INT(wf_xds_type_of("type.googleapis.com/nope"), -1);
    CHECK_STR(wf_xds_type_name(WF_XDS_LDS), "LDS");
    CHECK_STR(wf_xds_bundle_key(WF_XDS_EDS), "endpoints");
    wf_xds_state_free(&st);
}

/* ---- snapshots: responses encoded once per translation ---------------------------------- */

/* A translation: clusters a and b, their assignments (b's at ip_b), a
 * listener. */
static json_t *bundle(const char *lb, const char *ip_b)
{
    return json_pack("{s:o, s:[o, o, o], s:[o]}", "clusters", clusters(lb), "endpoints",
                     cla("outbound|9080||a", "10.0.0.1"), cla("outbound|9080||b", ip_b),
                     cla("outbound|9080||c", "10.0.0.3"), "listeners",
                     listener("virtualOutbound", 15001));
}

/* Subscribes st to type with names (NULL: wildcard, or nothing for EDS). */
static void subscribe(wf_xds_stream_state *st, const char *url, const char *const *names)
{
    wf_xds_outcome o;
    char err[256];
    wf_xds_request r = req(url, "", "", names);

    CHECK(wf_xds_state_request(st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, WF_XDS_SUBSCRIBE);
}

/* ACKs (or NACKs, with why) the last response of type on st. */
static void answer(wf_xds_stream_state *st, int type, const char *const *names, const char *why)
{
    wf_xds_outcome o;
    char err[256];
    wf_xds_request r = req(wf_xds_type_url(type), st->t[type].sent_version,
                           st->t[type].sent_nonce, names);

    if (why) {
        r.version_info = st->t[type].acked_version ? st->t[type].acked_version : "";
        r.has_error = 1;
        r.error_message = (char *)why;
    }
    CHECK(wf_xds_state_request(st, &r, 0, &o, err, sizeof(err)) == 0);
    CHECK_INT(o.verdict, why ? WF_XDS_NACK : WF_XDS_ACK);
}

TEST(snapshot_streams_share_one_encoding)
{
    json_t *b = bundle("ROUND_ROBIN", "10.0.0.2");
    wf_xds_snapshot *sn = wf_xds_snapshot_new(b);
    wf_xds_stream_state s1, s2;
    wf_xds_outcome o;
    wf_xds_push p1, p2;
    wf_xds_response back;
    uint8_t m1[65536], m2[65536];
    size_t l1, l2;
    char err[512];

    CHECK(sn != NULL);
    start(&s1, &o);
    start(&s2, &o);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_CDS, sn, "default", 5, &p1, err, sizeof(err)), 1);
    CHECK_INT(wf_xds_state_respond(&s2, WF_XDS_CDS, sn, "default", 5, &p2, err, sizeof(err)), 1);
    /* One body for both; each stream's own nonce ("1" on each). */
    CHECK(p1.body == p2.body);
    CHECK_STR(p1.nonce, "1");
    l1 = push_bytes(&p1, m1, sizeof(m1));
    l2 = push_bytes(&p2, m2, sizeof(m2));
    CHECK(l1 > 0 && l1 == l2 && memcmp(m1, m2, l1) == 0);
    /* What a client decodes: the translator's clusters, the version the
     * stream records as sent. */
    CHECK(wf_xds_response_decode(m1, l1, &back, err, sizeof(err)) == 0);
    CHECK_STR(back.version_info, p1.version);
    CHECK_STR(back.version_info, s1.t[WF_XDS_CDS].sent_version);
    CHECK_STR(back.nonce, "1");
    CHECK_STR(back.control_plane, "weft-istiod");
    CHECK_STR(back.type_url, WF_TYPE_CLUSTER);
    CHECK(json_equal(back.resources, json_object_get(b, "clusters")));
    wf_xds_response_free(&back);
    /* Sent, nothing new: nothing more; wildcards need no encoding of their own. */
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_CDS, sn, "default", 5, &p1, err, sizeof(err)), 0);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_LDS, sn, "default", 5, &p1, err, sizeof(err)), 0);
    CHECK_INT(wf_xds_snapshot_encodings(sn), 0);
    CHECK(wf_xds_snapshot_bytes(sn) > l1);
    /* The bundle is not needed any more. */
    json_decref(b);
    subscribe(&s1, WF_TYPE_LISTENER, NULL);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_LDS, sn, "default", 5, &p1, err, sizeof(err)), 1);
    CHECK_INT(p1.n_resources, 1);
    CHECK_STR(p1.nonce, "2");
    wf_xds_state_free(&s1);
    wf_xds_state_free(&s2);
    wf_xds_snapshot_unref(sn);
}

TEST(snapshot_version_follows_content)
{
    json_t *a = bundle("ROUND_ROBIN", "10.0.0.2"), *same = bundle("ROUND_ROBIN", "10.0.0.2");
    json_t *c = bundle("RANDOM", "10.0.0.2");
    wf_xds_snapshot *sa = wf_xds_snapshot_new(a), *ss = wf_xds_snapshot_new(same),
                    *sc = wf_xds_snapshot_new(c);
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_push p;
    char err[512], v1[17];

    start(&st, &o);
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_CDS, sa, "default", 0, &p, err, sizeof(err)), 1);
    snprintf(v1, sizeof(v1), "%s", p.version);
    answer(&st, WF_XDS_CDS, NULL, NULL);
    /* The same content translated again: the same version, no push. */
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_CDS, ss, "default", 0, &p, err, sizeof(err)), 0);
    /* Other content: a new version. */
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_CDS, sc, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(strcmp(p.version, v1) != 0);
    CHECK_STR(p.nonce, "2");
    /* Back to the first: its version again. */
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_CDS, sa, "default", 0, &p, err, sizeof(err)), 1);
    CHECK_STR(p.version, v1);
    json_decref(a);
    json_decref(same);
    json_decref(c);
    wf_xds_snapshot_unref(sa);
    wf_xds_snapshot_unref(ss);
    wf_xds_snapshot_unref(sc);
    wf_xds_state_free(&st);
}

/* The cluster names of an EDS response, in order, "a,b". */
static void eds_names(const wf_xds_push *p, char *out, size_t len)
{
    uint8_t m[65536];
    size_t l = push_bytes(p, m, sizeof(m));
    wf_xds_response r;
    char err[256];
    json_t *x;
    size_t i;

    out[0] = 0;
    if (!l || wf_xds_response_decode(m, l, &r, err, sizeof(err)) < 0)
        return;
    json_array_foreach (r.resources, i, x)
        snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "",
                 json_string_value(json_object_get(x, "cluster_name")) + 15);
    wf_xds_response_free(&r);
}

/* The body a push of b's clusters must have: encoded from scratch. */
static int body_is(const wf_xds_push *p, const json_t *b)
{
    wf_xds_response r = {.version_info = (char *)p->version,
                         .type_url = WF_TYPE_CLUSTER,
                         .resources = json_object_get(b, "clusters")};
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256];
    int same;

    if (wf_xds_response_encode(&r, &buf, &len, err, sizeof(err)) < 0)
        return 0;
    same = len == p->body_len && memcmp(buf, p->body, len) == 0;
    free(buf);
    return same;
}

TEST(snapshot_reuses_what_was_encoded)
{
    json_t *a = bundle("ROUND_ROBIN", "10.0.0.2"), *b = bundle("RANDOM", "10.0.0.2");
    json_t *c = bundle("RANDOM", "10.0.0.2");
    wf_xds_snapshot *sa = wf_xds_snapshot_new(a), *sb, *sc;
    wf_xds_stream_state s1, s2;
    wf_xds_outcome o;
    wf_xds_push p;
    char err[512];

    /* b shares a cluster with a; c is b again; a goes before c comes. */
    sb = wf_xds_snapshot_new(b);
    wf_xds_snapshot_unref(sa);
    sc = wf_xds_snapshot_new(c);
    start(&s1, &o);
    start(&s2, &o);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_CDS, sb, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(body_is(&p, b));
    CHECK_INT(wf_xds_state_respond(&s2, WF_XDS_CDS, sc, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(body_is(&p, c));
    wf_xds_snapshot_unref(sb);
    wf_xds_snapshot_unref(sc);
    sa = wf_xds_snapshot_new(a);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_CDS, sa, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(body_is(&p, a));
    wf_xds_snapshot_unref(sa);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    wf_xds_state_free(&s1);
    wf_xds_state_free(&s2);
}

TEST(eds_sends_only_what_changed)
{
    const char *const abc[] = {"outbound|9080||c", "outbound|9080||a", "outbound|9080||b", NULL};
    const char *const ab[] = {"outbound|9080||a", "outbound|9080||b", NULL};
    json_t *b1 = bundle("ROUND_ROBIN", "10.0.0.2"), *b2 = bundle("ROUND_ROBIN", "10.9.9.9");
    json_t *b3 = bundle("ROUND_ROBIN", "10.7.7.7"), *b4, *b5 = bundle("ROUND_ROBIN", "10.5.5.5");
    wf_xds_snapshot *s1 = wf_xds_snapshot_new(b1), *s2 = wf_xds_snapshot_new(b2), *s3, *s4, *s5;
    wf_xds_stream_state st, other;
    wf_xds_outcome o;
    wf_xds_push p, q;
    char err[512], names[256];

    /* b4: b3 without the assignment of c. */
    b4 = json_deep_copy(b3);
    json_array_remove(json_object_get(b4, "endpoints"), 2);
    s3 = wf_xds_snapshot_new(b3);
    s4 = wf_xds_snapshot_new(b4);
    s5 = wf_xds_snapshot_new(b5);
    start(&st, &o);
    subscribe(&st, WF_TYPE_ENDPOINT, abc);
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, s1, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(!p.delta);
    eds_names(&p, names, sizeof(names));
    CHECK_STR(names, "a,b,c");
    /* Not ACKed yet: a change is sent whole. */
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, s2, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(!p.delta);
    CHECK_INT(p.n_resources, 3);
    answer(&st, WF_XDS_EDS, abc, NULL);
    /* ACKed: only b, which moved, at the version of the whole set. */
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, s3, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(p.delta);
    eds_names(&p, names, sizeof(names));
    CHECK_STR(names, "b");
    start(&other, &o);
    subscribe(&other, WF_TYPE_ENDPOINT, ab);
    subscribe(&other, WF_TYPE_ENDPOINT, abc); /* a names change, before any response */
    CHECK_INT(wf_xds_state_respond(&other, WF_XDS_EDS, s3, "default", 0, &q, err, sizeof(err)),
              1);
    CHECK(!q.delta);
    CHECK_INT(q.n_resources, 3);
    CHECK_STR(q.version, p.version);
    CHECK(other.t[WF_XDS_EDS].set == st.t[WF_XDS_EDS].set); /* one interned list */
    answer(&st, WF_XDS_EDS, abc, NULL);
    /* An assignment the client holds is gone: the whole set again. */
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, s4, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(!p.delta);
    eds_names(&p, names, sizeof(names));
    CHECK_STR(names, "a,b");
    /* Refused: the next one is whole too, until one is ACKed. */
    answer(&st, WF_XDS_EDS, abc, "no");
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, s5, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(!p.delta);
    CHECK_INT(p.n_resources, 3);
    /* Names that change are answered whole. */
    subscribe(&st, WF_TYPE_ENDPOINT, ab);
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, s5, "default", 0, &p, err, sizeof(err)), 1);
    CHECK(!p.delta);
    eds_names(&p, names, sizeof(names));
    CHECK_STR(names, "a,b");
    /* The delta from s2 to s3 is made once for every stream. */
    CHECK(wf_xds_snapshot_encodings(s3) == 2);
    wf_xds_state_free(&st);
    wf_xds_state_free(&other);
    wf_xds_snapshot_unref(s1);
    wf_xds_snapshot_unref(s2);
    wf_xds_snapshot_unref(s3);
    wf_xds_snapshot_unref(s4);
    wf_xds_snapshot_unref(s5);
    json_decref(b1);
    json_decref(b2);
    json_decref(b3);
    json_decref(b4);
    json_decref(b5);
}

TEST(snapshot_listener_aliases)
{
    const char *const names[] = {"reviews:9080", "reviews.default.svc.cluster.local:9080",
                                 "nosuch:80", NULL};
    json_t *b = json_pack("{s:[], s:[], s:[o, o]}", "clusters", "endpoints", "listeners",
                          listener("reviews.default.svc.cluster.local:9080", 9080),
                          listener("ratings.prod.svc.cluster.local:9080", 9081));
    wf_xds_snapshot *sn = wf_xds_snapshot_new(b);
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_push p;
    wf_xds_response r;
    uint8_t m[65536];
    size_t l;
    char err[512];

    start(&st, &o);
    subscribe(&st, WF_TYPE_LISTENER, names);
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_LDS, sn, "default", 0, &p, err, sizeof(err)), 1);
    CHECK_INT(p.n_resources, 2);
    l = push_bytes(&p, m, sizeof(m));
    CHECK(wf_xds_response_decode(m, l, &r, err, sizeof(err)) == 0);
    CHECK_STR(json_string_value(json_object_get(json_array_get(r.resources, 0), "name")),
              "reviews.default.svc.cluster.local:9080");
    CHECK_STR(json_string_value(json_object_get(json_array_get(r.resources, 1), "name")),
              "reviews:9080");
    CHECK(json_equal(json_object_get(json_array_get(r.resources, 1), "address"),
                     json_object_get(json_array_get(json_object_get(b, "listeners"), 0),
                                     "address")));
    wf_xds_response_free(&r);
    json_decref(b);
    wf_xds_snapshot_unref(sn);
    wf_xds_state_free(&st);
}

TEST(snapshot_encoding_failure_reported_once)
{
    json_t *b = bundle("ROUND_ROBIN", "10.0.0.2");
    wf_xds_snapshot *sn;
    wf_xds_stream_state s1, s2;
    wf_xds_outcome o;
    wf_xds_push p;
    char err[512] = "";

    json_object_set_new(json_array_get(json_object_get(b, "clusters"), 1), "no_such_field",
                        json_true());
    sn = wf_xds_snapshot_new(b);
    CHECK(sn != NULL);
    start(&s1, &o);
    start(&s2, &o);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_CDS, sn, "default", 0, &p, err, sizeof(err)), -1);
    CHECK(strstr(err, "outbound|9080||b") && strstr(err, "no_such_field"));
    err[0] = 0;
    CHECK_INT(wf_xds_state_respond(&s2, WF_XDS_CDS, sn, "default", 0, &p, err, sizeof(err)), -2);
    CHECK(strstr(err, "no_such_field") != NULL);
    CHECK(s1.t[WF_XDS_CDS].sent_version == NULL);
    /* The other types are served. */
    subscribe(&s1, WF_TYPE_LISTENER, NULL);
    CHECK_INT(wf_xds_state_respond(&s1, WF_XDS_LDS, sn, "default", 0, &p, err, sizeof(err)), 1);
    json_decref(b);
    wf_xds_snapshot_unref(sn);
    wf_xds_state_free(&s1);
    wf_xds_state_free(&s2);
}

/* A request as bytes, read back without decoding it. */
static int peek(const wf_xds_request *r, uint8_t **buf, wf_xds_request_view *v)
{
    size_t len = 0;

    free(*buf);
    *buf = NULL;
    if (wf_xds_request_encode(r, buf, &len) < 0)
        return -1;
    return wf_xds_request_peek(*buf, len, v);
}

TEST(plain_acks_are_read_without_decoding)
{
    const char *const ab[] = {"outbound|9080||a", "outbound|9080||b", NULL};
    const char *const ba[] = {"outbound|9080||b", "outbound|9080||a", NULL};
    const char *const abc[] = {"outbound|9080||a", "outbound|9080||b", "outbound|9080||c", NULL};
    json_t *b = bundle("ROUND_ROBIN", "10.0.0.2");
    wf_xds_snapshot *sn = wf_xds_snapshot_new(b);
    wf_xds_stream_state st;
    wf_xds_outcome o;
    wf_xds_push p;
    wf_xds_request_view v;
    wf_xds_request r;
    uint8_t *buf = NULL;
    char err[256], ver[17];
    const char *name;
    size_t pos = 0, len;

    wf_xds_state_init(&st);
    /* The first request carries the node: never a plain ACK. */
    r = req(WF_TYPE_CLUSTER, "", "", NULL);
    r.node = node();
    CHECK(peek(&r, &buf, &v) == 0 && v.has_node);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    CHECK(wf_xds_state_request(&st, &r, 0, &o, err, sizeof(err)) == 0);
    json_decref(r.node);
    subscribe(&st, WF_TYPE_ENDPOINT, ab);
    CHECK_INT(wf_xds_state_respond(&st, WF_XDS_EDS, sn, "default", 100, &p, err, sizeof(err)), 1);
    snprintf(ver, sizeof(ver), "%s", p.version);
    /* Other names, or the same in another order, or a stale nonce, or a
     * NACK: decoded as usual. */
    r = req(WF_TYPE_ENDPOINT, ver, p.nonce, abc);
    CHECK(peek(&r, &buf, &v) == 0 && v.n_resource_names == 3);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    r = req(WF_TYPE_ENDPOINT, ver, p.nonce, ba);
    CHECK(peek(&r, &buf, &v) == 0);
    CHECK(wf_xds_request_name(&v, &pos, &name, &len) && len == 16 && memcmp(name, ba[0], 16) == 0);
    CHECK(wf_xds_request_name(&v, &pos, &name, &len) && memcmp(name, ba[1], 16) == 0);
    CHECK(!wf_xds_request_name(&v, &pos, &name, &len));
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    r = req(WF_TYPE_ENDPOINT, ver, "77", ab);
    CHECK(peek(&r, &buf, &v) == 0);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    r = req(WF_TYPE_ENDPOINT, "", p.nonce, ab);
    r.has_error = 1;
    r.error_message = "no";
    CHECK(peek(&r, &buf, &v) == 0 && v.has_error);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    CHECK(st.t[WF_XDS_EDS].acked_version == NULL);
    /* The ACK itself: recorded as wf_xds_state_request would. */
    r = req(WF_TYPE_ENDPOINT, ver, p.nonce, ab);
    CHECK(peek(&r, &buf, &v) == 0);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 350, &o), 1);
    CHECK_INT(o.verdict, WF_XDS_ACK);
    CHECK_INT(o.type, WF_XDS_EDS);
    CHECK(!o.respond);
    CHECK_INT(o.converged, 250);
    CHECK_STR(st.t[WF_XDS_EDS].acked_version, ver);
    CHECK_INT(st.t[WF_XDS_EDS].n_acks, 1);
    /* Again: counted, not measured twice. */
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 400, &o), 1);
    CHECK_INT(o.converged, -1);
    CHECK_INT(st.t[WF_XDS_EDS].n_acks, 2);
    /* A type never answered, or not served. */
    r = req(WF_TYPE_LISTENER, "", "1", NULL);
    CHECK(peek(&r, &buf, &v) == 0);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    r = req(WF_TYPE_SECRET, "", "1", NULL);
    CHECK(peek(&r, &buf, &v) == 0);
    CHECK_INT(wf_xds_state_plain_ack(&st, &v, 0, &o), 0);
    /* Broken bytes are refused, not read past. */
    CHECK(wf_xds_request_peek((const uint8_t *)"\x1a\x05" "ab", 4, &v) < 0);
    free(buf);
    json_decref(b);
    wf_xds_snapshot_unref(sn);
    wf_xds_state_free(&st);
}

/* ---- registry ---------------------------------------------------------------------------- */

static json_t *reg_node(const char *name, const char *svcs, const char *inbound)
{
    json_t *n = json_pack("{s:s, s:{s:s, s:s, s:{s:s, s:s}, s:s}}", "id", name, "metadata",
                          "NAMESPACE", "default", "SERVICE_ACCOUNT", "sa-x", "LABELS", "app", "x",
                          "version", name, "INSTANCE_IPS", "10.1.2.3,10.1.2.4");
    json_t *md = json_object_get(n, "metadata");

    if (svcs)
        json_object_set_new(md, "WEFT_SERVICES", json_loads(svcs, 0, NULL));
    if (inbound)
        json_object_set_new(md, "WEFT_INBOUND_ADDR", json_string(inbound));
    return n;
}

static const char *SE_YAML = "apiVersion: networking.istio.io/v1beta1\n"
                             "kind: ServiceEntry\n"
                             "metadata: {name: reviews, namespace: default}\n"
                             "spec:\n"
                             "  hosts: [reviews.default.svc.cluster.local]\n"
                             "  location: MESH_INTERNAL\n"
                             "  resolution: STATIC\n"
                             "  ports:\n"
                             "  - {number: 9080, name: http, protocol: HTTP, targetPort: 19080}\n"
                             "  endpoints:\n"
                             "  - address: 10.0.0.9\n";

static const wf_service_entry *find_se(const wf_config *c, const char *host)
{
    for (size_t i = 0; i < c->n_service_entries; i++)
        for (size_t h = 0; h < c->service_entries[i].n_hosts; h++)
            if (strcmp(c->service_entries[i].hosts[h], host) == 0)
                return &c->service_entries[i];
    return NULL;
}

TEST(registry_join_leave_expire)
{
    wf_registry r;
    wf_reg_workload *w, *w2;
    json_t *n;
    int changed;
    char err[256];
    uint64_t next;

    wf_registry_init(&r, 3000);
    /* No WEFT_SERVICES: nothing registered. */
    n = reg_node("a", NULL, "127.0.0.1:15006");
    CHECK(wf_registry_join(&r, n, &w, &changed, err, sizeof(err)) == 0);
    CHECK(w == NULL && !changed && r.n == 0);
    json_decref(n);
    /* A bad inbound address is refused with a reason. */
    n = reg_node("a", "[{\"name\": \"reviews\", \"port\": 9080}]", "nowhere");
    CHECK(wf_registry_join(&r, n, &w, &changed, err, sizeof(err)) < 0);
    CHECK(strstr(err, "WEFT_INBOUND_ADDR") != NULL);
    json_decref(n);

    n = reg_node("a", "[{\"name\": \"reviews\", \"port\": 9080.0}, {\"name\": \"x.other\", "
                      "\"port\": \"81\"}]",
                 ":16001");
    CHECK(wf_registry_join(&r, n, &w, &changed, err, sizeof(err)) == 0);
    CHECK(w && changed && r.n == 1);
    CHECK_STR(w->address, "10.1.2.3"); /* the first instance IP for 0.0.0.0 */
    CHECK_INT(w->port, 16001);
    CHECK_INT(w->n_svcs, 2);
    CHECK_STR(w->svcs[0].host, "reviews.default.svc.cluster.local");
    CHECK_INT(w->svcs[0].port, 9080);
    CHECK_STR(w->svcs[1].host, "x.other");
    CHECK_STR(w->service_account, "sa-x");
    /* A second stream with the same node: same entry, nothing changed. */
    CHECK(wf_registry_join(&r, n, &w2, &changed, err, sizeof(err)) == 0);
    CHECK(w2 == w && !changed && w->streams == 2);
    wf_registry_leave(&r, w, 1000);
    CHECK_INT(wf_registry_expire(&r, 100000, &next), 0); /* one stream still up */
    wf_registry_leave(&r, w, 1000);
    CHECK_INT(wf_registry_expire(&r, 3999, &next), 0);
    CHECK_INT(next, 4000);
    /* A reconnect within the grace keeps it. */
    CHECK(wf_registry_join(&r, n, &w2, &changed, err, sizeof(err)) == 0);
    CHECK(w2 == w && !changed && r.n == 1);
    wf_registry_leave(&r, w, 5000);
    CHECK_INT(wf_registry_expire(&r, 8000, &next), 1);
    CHECK_INT(r.n, 0);
    CHECK_INT(next, 0);
    json_decref(n);
    wf_registry_free(&r);
}

TEST(registry_view_merges_endpoints)
{
    wf_config_buf buf = {"se.yaml", SE_YAML, strlen(SE_YAML)};
    wf_config *cfg = NULL;
    wf_diags d = {0};
    wf_registry r;
    wf_reg_view v;
    wf_reg_workload *w;
    const wf_service_entry *se;
    json_t *n1, *n2;
    int changed;
    char err[256];

    CHECK(wf_config_load_bufs(&buf, 1, &cfg, &d) == 0);
    wf_diags_free(&d);
    if (!cfg)
        return;
    wf_registry_init(&r, 0);
    n1 = reg_node("b-proxy", "[{\"name\": \"reviews\", \"port\": 9080}, {\"name\": "
                             "\"ratings\", \"port\": 9080}]",
                  "127.0.0.1:16002");
    n2 = reg_node("a-proxy", "[{\"name\": \"ratings\", \"port\": 9090}]", "127.0.0.1:16001");
    CHECK(wf_registry_join(&r, n1, &w, &changed, err, sizeof(err)) == 0);
    CHECK(wf_registry_join(&r, n2, &w, &changed, err, sizeof(err)) == 0);
    CHECK(wf_reg_view_build(&v, cfg, &r) == 0);
    CHECK_INT(v.cfg.n_service_entries, 2);
    CHECK_INT(cfg->n_service_entries, 1);
    CHECK_INT(v.n_services, 2);

    /* The configured entry keeps its endpoint and gains the proxy's, with
     * its named port mapped to the inbound port. */
    se = find_se(&v.cfg, "reviews.default.svc.cluster.local");
    CHECK(se && se->n_endpoints == 2);
    if (se && se->n_endpoints == 2) {
        CHECK_STR(se->endpoints[0].address, "10.0.0.9");
        CHECK_STR(se->endpoints[1].address, "127.0.0.1");
        CHECK_INT(se->endpoints[1].n_ports, 1);
        CHECK_STR(se->endpoints[1].ports[0].key, "http");
        CHECK_INT(se->endpoints[1].port_numbers[0], 16002);
        CHECK_STR(se->endpoints[1].service_account, "sa-x");
    }
    CHECK_INT(cfg->service_entries[0].n_endpoints, 1); /* the base is untouched */

    /* A host nobody configured gets an entry of its own: both ports, both
     * workloads (sorted by id), namespace of the first. */
    se = find_se(&v.cfg, "ratings.default.svc.cluster.local");
    CHECK(se != NULL);
    if (se) {
        CHECK_STR(se->meta.name, "weft-registry-ratings.default.svc.cluster.local");
        CHECK_STR(se->meta.namespace_, "default");
        CHECK_INT(se->resolution, WF_SE_RESOLUTION_STATIC);
        CHECK_INT(se->location, WF_SE_MESH_INTERNAL);
        CHECK_INT(se->n_ports, 2);
        CHECK_INT(se->ports[0].number, 9080);
        CHECK_STR(se->ports[0].name, "http-9080");
        CHECK_STR(se->ports[0].protocol, "HTTP");
        CHECK_INT(se->ports[1].number, 9090);
        CHECK_INT(se->n_endpoints, 2);
        CHECK_INT(se->endpoints[0].port_numbers[0], 16001);
        CHECK_INT(se->endpoints[1].port_numbers[1], 16002);
        CHECK_INT(se->endpoints[0].n_labels, 2);
    }
    wf_reg_view_free(&v);
    json_decref(n1);
    json_decref(n2);
    wf_registry_free(&r);
    wf_config_free(cfg);
}

int main(void)
{
    RUN(first_request_needs_node);
    RUN(first_request_subscribes_wildcard);
    RUN(ack_records_version_and_convergence);
    RUN(nack_keeps_last_good_and_counts);
    RUN(stale_nonce_ignored);
    RUN(version_changes_only_with_content);
    RUN(eds_named_subscriptions);
    RUN(lds_named_aliases);
    RUN(unknown_type_and_reconnect_nonce);
    RUN(snapshot_streams_share_one_encoding);
    RUN(snapshot_version_follows_content);
    RUN(snapshot_reuses_what_was_encoded);
    RUN(eds_sends_only_what_changed);
    RUN(snapshot_listener_aliases);
    RUN(snapshot_encoding_failure_reported_once);
    RUN(plain_acks_are_read_without_decoding);
    RUN(registry_join_leave_expire);
    RUN(registry_view_merges_endpoints);
    return TEST_SUMMARY();
}
