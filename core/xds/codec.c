/*
 * codec.c: xDS resources and the ADS envelopes between the JSON form of
 * docs/resources.md and protobuf bytes (proto/, compiled by protoc-c); see
 * codec.h.
 *
 * The mapping is generic: it walks protoc-c's message descriptors, so a
 * field added to proto/ is carried without touching this file.  It is
 * proto3's JSON mapping with the proto field names (snake_case), plus a few
 * rules of weft's own, each applied in one place here and listed in
 * docs/xds.md:
 *  - well-known types have their JSON forms: Any {"@type": URL, ...fields},
 *    Struct/Value/ListValue as plain JSON, Duration "1.5s", wrappers as
 *    bare values;
 *  - a typed_per_filter_config value without "@type" is a weft filter's
 *    free-form per-route configuration, carried as a TypedStruct whose
 *    type_url is "weft.io/route/<filter name>";
 *  - presence is kept (proto/ uses proto2 `optional`), so a default the
 *    translator wrote ("lb_policy": "ROUND_ROBIN") comes back, and the few
 *    arrays the translator always writes come back as [] when empty;
 *  - Struct numbers are doubles: integral ones come back as JSON integers.
 *
 * Encoding refuses what it cannot carry (an unknown field, a wrong type)
 * with the field's path, so istiod reports it instead of sending a resource
 * that silently lost a part.  Decoding ignores unknown fields, as every
 * protobuf reader does, but never trusts the bytes: framing and nesting
 * depth are checked before protobuf-c sees them, and every oneof, pointer
 * and string is checked before use.
 */
#include "xds/codec.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "xds/type/v3/typed_struct.pb-c.h"

#include "util/log.h"
#include "util/varint.h"

/* Message nesting allowed, counted across Anys and Struct levels.  Real
 * resources stay under 40; the limit keeps hostile bytes from exhausting
 * the stack in protobuf-c's recursive unpacker or in ours. */
#define MAX_DEPTH 100
/* Integers up to 2^53 survive a trip through a double exactly. */
#define MAX_EXACT_DOUBLE 9007199254740992.0
/* google.protobuf.Duration's range: about 10000 years. */
#define MAX_DURATION_S 315576000000LL
#define ROUTE_TYPE_PREFIX "weft.io/route/"
#define TYPED_STRUCT_URL WF_TYPE_PREFIX "xds.type.v3.TypedStruct"

/* ---- context and errors ---------------------------------------------------------------------- */

/* One encode or decode: where we are (for error messages) and how deep. */
typedef struct cx {
    char *err;
    size_t errlen;
    const char *what; /* "Cluster \"name\"", prefixed to errors; may be NULL */
    int failed;
    int depth;
    size_t plen;
    char path[512];
} cx;

static void fail(cx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Keeps the first error only: later ones are consequences of it. */
static void fail(cx *c, const char *fmt, ...)
{
    char msg[384];
    va_list ap;

    if (c->failed)
        return;
    c->failed = 1;
    if (!c->err || !c->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s%s%s%s%s", c->what ? c->what : "", c->what ? ": " : "", c->path,
             c->plen ? ": " : "", msg);
}

static size_t path_add(cx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends to the path; returns the mark to restore with path_pop. */
static size_t path_add(cx *c, const char *fmt, ...)
{
    size_t mark = c->plen;
    va_list ap;
    int n;

    if (mark < sizeof(c->path) - 1) {
        va_start(ap, fmt);
        n = vsnprintf(c->path + mark, sizeof(c->path) - mark, fmt, ap);
        va_end(ap);
        if (n > 0)
            c->plen = mark + (size_t)n < sizeof(c->path) ? mark + (size_t)n : sizeof(c->path) - 1;
    }
    return mark;
}

static size_t path_field(cx *c, const char *name)
{
    return path_add(c, c->plen ? ".%s" : "%s", name);
}

static size_t path_index(cx *c, size_t i)
{
    return path_add(c, "[%zu]", i);
}

/* Map keys: `.key` when it reads as one, else `["key"]` (filter names have
 * dots, header names have anything). */
static size_t path_key(cx *c, const char *key)
{
    size_t n = strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");

    if (key[0] && !key[n])
        return path_field(c, key);
    return path_add(c, "[\"%.60s\"]", key);
}

static void path_pop(cx *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = 0;
}

/* ---- descriptors ----------------------------------------------------------------------------- */

enum wkt { WKT_NONE, WKT_ANY, WKT_STRUCT, WKT_VALUE, WKT_LIST, WKT_DURATION, WKT_UINT32, WKT_BOOL };

/* Well-known types with a JSON form of their own. */
static enum wkt wkt_of(const ProtobufCMessageDescriptor *d)
{
    if (d == &google__protobuf__any__descriptor)
        return WKT_ANY;
    if (d == &google__protobuf__struct__descriptor)
        return WKT_STRUCT;
    if (d == &google__protobuf__value__descriptor)
        return WKT_VALUE;
    if (d == &google__protobuf__list_value__descriptor)
        return WKT_LIST;
    if (d == &google__protobuf__duration__descriptor)
        return WKT_DURATION;
    if (d == &google__protobuf__uint32_value__descriptor)
        return WKT_UINT32;
    if (d == &google__protobuf__bool_value__descriptor)
        return WKT_BOOL;
    return WKT_NONE;
}

/* The message types an Any may hold (and that wf_xds_encode/decode take):
 * type URL = "type.googleapis.com/" + full name. */
static const ProtobufCMessageDescriptor *const any_types[] = {
    &envoy__config__listener__v3__listener__descriptor,
    &envoy__config__route__v3__route_configuration__descriptor,
    &envoy__config__cluster__v3__cluster__descriptor,
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
    &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
    &envoy__extensions__filters__http__router__v3__router__descriptor,
    &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    &envoy__config__route__v3__filter_config__descriptor,
    &envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
    &envoy__extensions__transport_sockets__raw_buffer__v3__raw_buffer__descriptor,
    &xds__type__v3__typed_struct__descriptor,
    &google__protobuf__struct__descriptor,
    &google__protobuf__value__descriptor,
    &google__protobuf__list_value__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__uint32_value__descriptor,
    &google__protobuf__bool_value__descriptor,
};

/* By type URL: the message name is what follows the last '/', whatever the
 * host part, as protobuf resolves Anys. */
static const ProtobufCMessageDescriptor *type_lookup(const char *url)
{
    const char *name = url ? strrchr(url, '/') : NULL;

    if (!name)
        return NULL;
    name++;
    for (size_t i = 0; i < sizeof(any_types) / sizeof(any_types[0]); i++)
        if (strcmp(any_types[i]->name, name) == 0)
            return any_types[i];
    return NULL;
}

/* Repeated fields the translator always writes, even empty: they decode as
 * [] rather than being left out, so its output round-trips exactly. */
static const struct {
    const char *msg, *field;
} always_arrays[] = {
    {"envoy.config.route.v3.RouteConfiguration", "virtual_hosts"},
    {"envoy.config.route.v3.VirtualHost", "domains"},
    {"envoy.config.route.v3.VirtualHost", "routes"},
    {"envoy.config.route.v3.WeightedCluster", "clusters"},
    {"envoy.config.listener.v3.FilterChain", "filters"},
    {"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
     "http_filters"},
    {"envoy.config.endpoint.v3.ClusterLoadAssignment", "endpoints"},
    {"envoy.config.endpoint.v3.LocalityLbEndpoints", "lb_endpoints"},
};

static int always_array(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
    for (size_t i = 0; i < sizeof(always_arrays) / sizeof(always_arrays[0]); i++)
        if (strcmp(always_arrays[i].field, f->name) == 0 &&
            strcmp(always_arrays[i].msg, d->name) == 0)
            return 1;
    return 0;
}

/* protoc-c keeps no "map entry" flag: a map<K, V> is a repeated FooEntry
 * {key = 1; value = 2}, and proto/ names no other message that way. */
static int is_map(const ProtobufCFieldDescriptor *f)
{
    const ProtobufCMessageDescriptor *e = f->descriptor;
    size_t n;

    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE || !e ||
        e->n_fields != 2)
        return 0;
    n = strlen(e->short_name);
    return n > 5 && strcmp(e->short_name + n - 5, "Entry") == 0 && e->fields[0].id == 1 &&
           strcmp(e->fields[0].name, "key") == 0 && e->fields[1].id == 2 &&
           strcmp(e->fields[1].name, "value") == 0;
}

/* Per-route filter configurations, where weft's free-form JSON is allowed. */
static int is_per_filter_map(const ProtobufCFieldDescriptor *f)
{
    return strcmp(f->name, "typed_per_filter_config") == 0;
}

/* A proto2 optional scalar: its presence is a has_ flag. */
static int has_flag(const ProtobufCFieldDescriptor *f)
{
    return f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
           f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 8;
}

#define MEMBER(type, m, off) (*(type *)((char *)(m) + (off)))
#define CMEMBER(type, m, off) (*(const type *)((const char *)(m) + (off)))

/* ---- wire checks ----------------------------------------------------------------------------- */

/*
 * Walks the wire format of a message of type d (NULL: unknown, framing
 * only), following length-delimited fields that d says are messages.
 * Returns 0, -1 for broken framing, -2 for nesting deeper than MAX_DEPTH.
 * protobuf-c would refuse broken framing itself, but it recurses without a
 * limit; checking first keeps the stack bounded.
 */
/* One field at buf[*i], which it steps over: its number, and for a
 * length-delimited one its bytes (*p NULL for the others).  Returns 0, or
 * -1 for broken framing, a field number protobuf does not allow, or a
 * group (no xDS message has them). */
static int next_field(const uint8_t *buf, size_t len, size_t *i, unsigned *num, const uint8_t **p,
                      size_t *plen)
{
    uint64_t key, v;

    *p = NULL;
    *plen = 0;
    if (wf_varint_get(buf, len, i, &key) < 0)
        return -1;
    if ((key >> 3) == 0 || (key >> 3) > 536870911)
        return -1;
    *num = (unsigned)(key >> 3);
    switch (key & 7) {
    case 0:
        return wf_varint_get(buf, len, i, &v);
    case 1:
        if (len - *i < 8)
            return -1;
        *i += 8;
        return 0;
    case 5:
        if (len - *i < 4)
            return -1;
        *i += 4;
        return 0;
    case 2:
        if (wf_varint_get(buf, len, i, &v) < 0 || v > len - *i)
            return -1;
        *p = buf + *i;
        *plen = (size_t)v;
        *i += (size_t)v;
        return 0;
    default:
        return -1;
    }
}

static int wire_check(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth)
{
    size_t i = 0, fl;
    const uint8_t *f;
    unsigned num;

    if (depth > MAX_DEPTH)
        return -2;
    while (i < n) {
        const ProtobufCFieldDescriptor *fd;
        if (next_field(p, n, &i, &num, &f, &fl) < 0)
            return -1;
        fd = f && d ? protobuf_c_message_descriptor_get_field(d, num) : NULL;
        if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            int r = wire_check(fd->descriptor, f, fl, depth + 1);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* Field 1 of a message if it is a short printable string: the name of
 * every resource type, for error messages about bytes we cannot decode. */
static int peek_name(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    size_t i = 0, fl;
    const uint8_t *f;
    unsigned num;

    while (i < n) {
        if (next_field(p, n, &i, &num, &f, &fl) < 0)
            return -1;
        if (num == 1 && f) {
            size_t l = fl < outlen - 1 ? fl : outlen - 1;
            for (size_t k = 0; k < l; k++)
                if (f[k] < 0x20 || f[k] > 0x7e)
                    return -1;
            memcpy(out, f, l);
            out[l] = 0;
            return 0;
        }
    }
    return -1;
}

/* protobuf_c_message_unpack after wire_check; NULL with the reason in c. */
static ProtobufCMessage *unpack(cx *c, const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                                size_t len)
{
    ProtobufCMessage *m;
    int r = wire_check(d, buf ? buf : (const uint8_t *)"", buf ? len : 0, c->depth);

    if (r == -2) {
        fail(c, "messages nested more than %d deep", MAX_DEPTH);
        return NULL;
    }
    if (r < 0) {
        fail(c, "not a valid %s message: the %zu bytes are truncated or corrupt", d->name, len);
        return NULL;
    }
    m = protobuf_c_message_unpack(d, NULL, len, buf ? buf : (const uint8_t *)"");
    if (!m)
        fail(c,
             "not a valid %s message: protobuf-c refused the %zu bytes (a field has the "
             "wrong wire type, or memory ran out)",
             d->name, len);
    return m;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);

    if (buf)
        *len = protobuf_c_message_pack(m, buf);
    return buf;
}

static ProtobufCMessage *new_msg(cx *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = malloc(d->sizeof_message);

    if (!m) {
        fail(c, "out of memory");
        return NULL;
    }
    protobuf_c_message_init(d, m);
    return m;
}

static void free_msg(void *m)
{
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- base64 (bytes fields) ------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *b64_encode(const uint8_t *p, size_t n)
{
    size_t olen = (n + 2) / 3 * 4, o = 0;
    char *out = malloc(olen + 1);
    json_t *j;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = 0;
    j = json_string(out);
    free(out);
    return j;
}

/* Standard or URL-safe alphabet, padding optional (proto3 JSON accepts
 * both).  Returns 0 or -1. */
static int b64_decode(const char *s, ProtobufCBinaryData *out)
{
    size_t n = strlen(s), o = 0;
    uint32_t acc = 0;
    int bits = 0;

    while (n && s[n - 1] == '=')
        n--;
    out->data = malloc(n * 3 / 4 + 1);
    if (!out->data)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *q = strchr(b64, s[i]);
        int v = s[i] == '-' ? 62 : s[i] == '_' ? 63 : q && s[i] ? (int)(q - b64) : -1;
        if (v < 0) {
            free(out->data);
            out->data = NULL;
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[o++] = (uint8_t)(acc >> bits);
        }
    }
    out->len = o;
    return 0;
}

/* ---- JSON -> protobuf ------------------------------------------------------------------------ */

static ProtobufCMessage *enc_message(cx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                                     const char *filter);
static Google__Protobuf__Struct *enc_struct(cx *c, const json_t *v);

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* An integer in [lo, hi]; integral reals (3.0) are accepted too. */
static int get_int(cx *c, const json_t *v, long long lo, long long hi, long long *out)
{
    long long x;

    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9.2e18) {
        x = (long long)json_real_value(v);
    } else {
        fail(c, "expected an integer, got %s", json_kind(v));
        return -1;
    }
    if (x < lo || x > hi) {
        fail(c, "%lld is out of range [%lld, %lld]", x, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static char *get_str(cx *c, const json_t *v)
{
    char *s;

    if (!json_is_string(v)) {
        fail(c, "expected a string, got %s", json_kind(v));
        return NULL;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        fail(c, "string contains a NUL byte");
        return NULL;
    }
    s = strdup(json_string_value(v));
    if (!s)
        fail(c, "out of memory");
    return s;
}

static void enum_names(const ProtobufCEnumDescriptor *ed, char *buf, size_t len)
{
    size_t o = 0;

    buf[0] = 0;
    for (unsigned i = 0; i < ed->n_values && o < len; i++) {
        int n = snprintf(buf + o, len - o, "%s%s", i ? ", " : "", ed->values[i].name);
        if (n < 0)
            break;
        o += (size_t)n;
    }
}

/* One value of field f (one element, for a repeated field) into dst.
 * filter: the filter name when the value sits in typed_per_filter_config. */
static int enc_scalar(cx *c, const ProtobufCFieldDescriptor *f, void *dst, const json_t *v,
                      const char *filter)
{
    long long x;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (get_int(c, v, INT32_MIN, INT32_MAX, &x) < 0)
            return -1;
        *(int32_t *)dst = (int32_t)x;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (get_int(c, v, 0, UINT32_MAX, &x) < 0)
            return -1;
        *(uint32_t *)dst = (uint32_t)x;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (get_int(c, v, LLONG_MIN, LLONG_MAX, &x) < 0)
            return -1;
        *(int64_t *)dst = (int64_t)x;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (get_int(c, v, 0, LLONG_MAX, &x) < 0)
            return -1;
        *(uint64_t *)dst = (uint64_t)x;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) {
            fail(c, "expected a number, got %s", json_kind(v));
            return -1;
        }
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)dst = (float)json_number_value(v);
        else
            *(double *)dst = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            fail(c, "expected true or false, got %s", json_kind(v));
            return -1;
        }
        *(protobuf_c_boolean *)dst = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev =
            json_is_string(v)
                ? protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v))
                : NULL;
        if (!ev) {
            char names[256];
            enum_names(ed, names, sizeof(names));
            if (json_is_string(v))
                fail(c, "\"%.60s\" is not a %s: expected one of %s", json_string_value(v), ed->name,
                     names);
            else
                fail(c, "expected the name of a %s (one of %s), got %s", ed->name, names,
                     json_kind(v));
            return -1;
        }
        *(int *)dst = ev->value;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char *s = get_str(c, v);
        if (!s)
            return -1;
        *(char **)dst = s;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES:
        if (!json_is_string(v) || b64_decode(json_string_value(v), dst) < 0) {
            fail(c, "expected base64 bytes in a string");
            return -1;
        }
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *m = enc_message(c, f->descriptor, v, filter);
        if (!m)
            return -1;
        *(ProtobufCMessage **)dst = m;
        return 0;
    }
    }
    fail(c, "field type %d is not supported", (int)f->type);
    return -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of object v, sorted: maps are written in key order so that one
 * JSON always gives the same bytes (protobuf's deterministic form).
 * Returns a malloc'd array (the strings are v's), or NULL for no memory. */
static const char **sorted_keys(const json_t *v, size_t *n)
{
    const char **keys = malloc((json_object_size(v) + 1) * sizeof(*keys));
    const char *k;
    json_t *x;
    size_t i = 0;

    if (!keys)
        return NULL;
    json_object_foreach((json_t *)v, k, x) keys[i++] = k;
    qsort(keys, i, sizeof(*keys), cmp_str);
    *n = i;
    return keys;
}

/* map<string, V> from a JSON object. */
static int enc_map(cx *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const json_t *v)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    const char **keys;
    ProtobufCMessage **arr;
    size_t n, *count = &MEMBER(size_t, m, f->quantifier_offset);
    int rc = 0;

    if (!json_is_object(v)) {
        fail(c, "expected an object, got %s", json_kind(v));
        return -1;
    }
    if (kf->type != PROTOBUF_C_TYPE_STRING) {
        fail(c, "only string map keys are supported");
        return -1;
    }
    keys = sorted_keys(v, &n);
    arr = calloc(n ? n : 1, sizeof(*arr));
    if (!keys || !arr) {
        free(keys);
        free(arr);
        fail(c, "out of memory");
        return -1;
    }
    MEMBER(ProtobufCMessage **, m, f->offset) = arr;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t mark = path_key(c, keys[i]);
        ProtobufCMessage *e = new_msg(c, ed);
        char *key = e ? strdup(keys[i]) : NULL;
        if (!key) {
            free(e);
            fail(c, "out of memory");
            rc = -1;
        } else {
            arr[(*count)++] = e;
            MEMBER(char *, e, kf->offset) = key;
            rc = enc_scalar(c, vf, (char *)e + vf->offset, json_object_get(v, keys[i]),
                            is_per_filter_map(f) ? keys[i] : NULL);
            if (rc == 0 && has_flag(vf))
                MEMBER(protobuf_c_boolean, e, vf->quantifier_offset) = 1;
        }
        path_pop(c, mark);
    }
    free(keys);
    return rc;
}

static int enc_field(cx *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m,
                     const ProtobufCFieldDescriptor *f, const json_t *v)
{
    if (json_is_null(v)) {
        fail(c, "null is not allowed: leave the field out instead");
        return -1;
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t n, sz = elem_size(f->type), *count = &MEMBER(size_t, m, f->quantifier_offset);
        char *arr;

        if (is_map(f))
            return enc_map(c, m, f, v);
        if (!json_is_array(v)) {
            fail(c, "expected an array, got %s", json_kind(v));
            return -1;
        }
        n = json_array_size(v);
        arr = calloc(n ? n : 1, sz);
        if (!arr) {
            fail(c, "out of memory");
            return -1;
        }
        MEMBER(char *, m, f->offset) = arr;
        for (size_t i = 0; i < n; i++) {
            size_t mark = path_index(c, i);
            int rc = enc_scalar(c, f, arr + i * sz, json_array_get(v, i), NULL);
            path_pop(c, mark);
            if (rc < 0)
                return -1;
            (*count)++;
        }
        return 0;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *cs = &MEMBER(uint32_t, m, f->quantifier_offset);
        if (*cs && *cs != f->id) {
            const ProtobufCFieldDescriptor *o = protobuf_c_message_descriptor_get_field(d, *cs);
            fail(c, "\"%s\" and \"%s\" are alternatives: give only one", o ? o->name : "?",
                 f->name);
            return -1;
        }
        if (enc_scalar(c, f, (char *)m + f->offset, v, NULL) < 0)
            return -1;
        *cs = f->id;
        return 0;
    }
    if (enc_scalar(c, f, (char *)m + f->offset, v, NULL) < 0)
        return -1;
    if (has_flag(f))
        MEMBER(protobuf_c_boolean, m, f->quantifier_offset) = 1;
    return 0;
}

/* A message from a JSON object of its fields ("@type" skipped inside an
 * Any). */
static ProtobufCMessage *enc_fields(cx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                                    int in_any)
{
    ProtobufCMessage *m;
    const char *k;
    json_t *x;

    if (!json_is_object(v)) {
        fail(c, "expected an object (%s), got %s", d->name, json_kind(v));
        return NULL;
    }
    m = new_msg(c, d);
    if (!m)
        return NULL;
    json_object_foreach((json_t *)v, k, x)
    {
        const ProtobufCFieldDescriptor *f;
        size_t mark;

        if (in_any && strcmp(k, "@type") == 0)
            continue;
        f = protobuf_c_message_descriptor_get_field_by_name(d, k);
        mark = path_field(c, k);
        if (!f)
            fail(c,
                 "unknown field of %s: weft's xDS codec carries only the fields listed in "
                 "docs/xds.md",
                 d->name);
        else
            enc_field(c, d, m, f, x);
        path_pop(c, mark);
        if (c->failed) {
            free_msg(m);
            return NULL;
        }
    }
    return m;
}

static Google__Protobuf__Any *make_any(cx *c, const char *url, ProtobufCMessage *inner)
{
    Google__Protobuf__Any *a =
        (Google__Protobuf__Any *)new_msg(c, &google__protobuf__any__descriptor);
    char *u = a ? strdup(url) : NULL;
    size_t len = 0;
    uint8_t *buf = u ? pack(inner, &len) : NULL;

    free_msg(inner);
    if (!buf) {
        free(u);
        free(a);
        fail(c, "out of memory");
        return NULL;
    }
    a->type_url = u;
    a->value.data = buf;
    a->value.len = len;
    return a;
}

/* {"@type": URL, ...fields} (or {"@type", "value"} for a well-known type);
 * in typed_per_filter_config, a plain object is filter's free-form config. */
static ProtobufCMessage *enc_any(cx *c, const json_t *v, const char *filter)
{
    const json_t *t = json_is_object(v) ? json_object_get(v, "@type") : NULL;
    const ProtobufCMessageDescriptor *d;
    ProtobufCMessage *inner;
    const char *url;

    if (!t && filter && json_is_object(v)) {
        Xds__Type__V3__TypedStruct *ts =
            (Xds__Type__V3__TypedStruct *)new_msg(c, &xds__type__v3__typed_struct__descriptor);
        size_t n = strlen(ROUTE_TYPE_PREFIX) + strlen(filter) + 1;
        if (!ts)
            return NULL;
        ts->type_url = malloc(n);
        if (!ts->type_url) {
            free_msg(ts);
            fail(c, "out of memory");
            return NULL;
        }
        snprintf(ts->type_url, n, ROUTE_TYPE_PREFIX "%s", filter);
        ts->value = enc_struct(c, v);
        if (!ts->value) {
            free_msg(ts);
            return NULL;
        }
        return (ProtobufCMessage *)make_any(c, TYPED_STRUCT_URL, &ts->base);
    }
    if (!json_is_object(v)) {
        fail(c, "expected an object with \"@type\", got %s", json_kind(v));
        return NULL;
    }
    if (!t) {
        fail(c, "\"@type\" is missing: an Any names its message type");
        return NULL;
    }
    url = json_string_value(t);
    if (!url) {
        fail(c, "\"@type\" must be a string");
        return NULL;
    }
    d = type_lookup(url);
    if (!d) {
        fail(c,
             "unsupported type \"%.120s\": weft's xDS codec carries the types listed in "
             "docs/xds.md",
             url);
        return NULL;
    }
    if (wkt_of(d) != WKT_NONE) {
        const json_t *val = json_object_get(v, "value");
        size_t mark;
        if (!val || json_object_size(v) != 2) {
            fail(c, "an Any of %s is written {\"@type\": ..., \"value\": ...}", d->name);
            return NULL;
        }
        mark = path_field(c, "value");
        inner = enc_message(c, d, val, NULL);
        path_pop(c, mark);
    } else {
        inner = enc_fields(c, d, v, 1);
    }
    return inner ? (ProtobufCMessage *)make_any(c, url, inner) : NULL;
}

static Google__Protobuf__Value *enc_value(cx *c, const json_t *v);

static Google__Protobuf__Struct *enc_struct(cx *c, const json_t *v)
{
    Google__Protobuf__Struct *s;
    const char **keys;
    size_t n;

    if (!json_is_object(v)) {
        fail(c, "expected an object, got %s", json_kind(v));
        return NULL;
    }
    s = (Google__Protobuf__Struct *)new_msg(c, &google__protobuf__struct__descriptor);
    keys = s ? sorted_keys(v, &n) : NULL;
    if (!keys) {
        free(s);
        fail(c, "out of memory");
        return NULL;
    }
    s->fields = calloc(n ? n : 1, sizeof(*s->fields));
    if (!s->fields) {
        fail(c, "out of memory");
        n = 0;
    }
    for (size_t i = 0; i < n && !c->failed; i++) {
        size_t mark = path_key(c, keys[i]);
        Google__Protobuf__Struct__FieldsEntry *e = (Google__Protobuf__Struct__FieldsEntry *)new_msg(
            c, &google__protobuf__struct__fields_entry__descriptor);
        if (e) {
            s->fields[s->n_fields++] = e;
            e->key = strdup(keys[i]);
            if (!e->key) {
                e->key = (char *)protobuf_c_empty_string;
                fail(c, "out of memory");
            } else {
                e->value = enc_value(c, json_object_get(v, keys[i]));
            }
        }
        path_pop(c, mark);
    }
    free(keys);
    if (c->failed) {
        free_msg(s);
        return NULL;
    }
    return s;
}

static Google__Protobuf__ListValue *enc_list(cx *c, const json_t *v)
{
    Google__Protobuf__ListValue *l;
    size_t n = json_array_size(v);

    if (!json_is_array(v)) {
        fail(c, "expected an array, got %s", json_kind(v));
        return NULL;
    }
    l = (Google__Protobuf__ListValue *)new_msg(c, &google__protobuf__list_value__descriptor);
    if (!l)
        return NULL;
    l->values = calloc(n ? n : 1, sizeof(*l->values));
    if (!l->values) {
        free_msg(l);
        fail(c, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n && !c->failed; i++) {
        size_t mark = path_index(c, i);
        Google__Protobuf__Value *x = enc_value(c, json_array_get(v, i));
        if (x)
            l->values[l->n_values++] = x;
        path_pop(c, mark);
    }
    if (c->failed) {
        free_msg(l);
        return NULL;
    }
    return l;
}

/* Any JSON value as a google.protobuf.Value. */
static Google__Protobuf__Value *enc_value(cx *c, const json_t *v)
{
    Google__Protobuf__Value *pv;

    if (++c->depth > MAX_DEPTH) {
        fail(c, "nested more than %d deep", MAX_DEPTH);
        c->depth--;
        return NULL;
    }
    pv = (Google__Protobuf__Value *)new_msg(c, &google__protobuf__value__descriptor);
    if (!pv) {
        c->depth--;
        return NULL;
    }
    switch (json_typeof(v)) {
    case JSON_NULL:
        pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        pv->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        pv->bool_value = json_is_true(v);
        break;
    case JSON_INTEGER:
        /* A double holds integers exactly only up to 2^53. */
        if (json_integer_value(v) > (1LL << 53) || json_integer_value(v) < -(1LL << 53)) {
            fail(c,
                 "%lld is too large for a JSON number in google.protobuf.Value (at most "
                 "2^53): write it as a string",
                 (long long)json_integer_value(v));
            break;
        }
        pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        pv->number_value = (double)json_integer_value(v);
        break;
    case JSON_REAL:
        pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        pv->number_value = json_real_value(v);
        break;
    case JSON_STRING:
        pv->string_value = get_str(c, v);
        if (pv->string_value)
            pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        break;
    case JSON_OBJECT:
        pv->struct_value = enc_struct(c, v);
        if (pv->struct_value)
            pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        break;
    case JSON_ARRAY:
        pv->list_value = enc_list(c, v);
        if (pv->list_value)
            pv->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        break;
    }
    c->depth--;
    if (c->failed) {
        free_msg(pv);
        return NULL;
    }
    return pv;
}

/* proto3 JSON durations: "-"? seconds ("." 1-9 digits)? "s". */
static ProtobufCMessage *enc_duration(cx *c, const json_t *v)
{
    const char *s = json_string_value(v), *p = s;
    long long secs = 0, nanos = 0;
    int neg = 0, digits = 0;
    Google__Protobuf__Duration *d;

    if (!s)
        goto bad;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        secs = secs * 10 + (*p - '0');
        if (secs > MAX_DURATION_S)
            goto bad;
    }
    if (!digits)
        goto bad;
    if (*p == '.') {
        int fd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, fd++) {
            if (fd == 9)
                goto bad;
            nanos = nanos * 10 + (*p - '0');
        }
        if (!fd)
            goto bad;
        for (; fd < 9; fd++)
            nanos *= 10;
    }
    if (p[0] != 's' || p[1])
        goto bad;
    d = (Google__Protobuf__Duration *)new_msg(c, &google__protobuf__duration__descriptor);
    if (!d)
        return NULL;
    d->seconds = neg ? -secs : secs;
    d->nanos = (int32_t)(neg ? -nanos : nanos);
    return &d->base;
bad:
    if (s)
        fail(c,
             "\"%.40s\" is not a duration: write seconds with an \"s\", like \"10s\" or "
             "\"0.250s\"",
             s);
    else
        fail(c, "expected a duration string like \"10s\", got %s", json_kind(v));
    return NULL;
}

static ProtobufCMessage *enc_message(cx *c, const ProtobufCMessageDescriptor *d, const json_t *v,
                                     const char *filter)
{
    ProtobufCMessage *m = NULL;
    long long x;

    if (++c->depth > MAX_DEPTH) {
        fail(c, "nested more than %d deep", MAX_DEPTH);
        c->depth--;
        return NULL;
    }
    switch (wkt_of(d)) {
    case WKT_ANY:
        m = enc_any(c, v, filter);
        break;
    case WKT_STRUCT:
        m = (ProtobufCMessage *)enc_struct(c, v);
        break;
    case WKT_VALUE:
        m = (ProtobufCMessage *)enc_value(c, v);
        break;
    case WKT_LIST:
        m = (ProtobufCMessage *)enc_list(c, v);
        break;
    case WKT_DURATION:
        m = enc_duration(c, v);
        break;
    case WKT_UINT32:
        if (get_int(c, v, 0, UINT32_MAX, &x) == 0 && (m = new_msg(c, d)))
            ((Google__Protobuf__UInt32Value *)m)->value = (uint32_t)x;
        break;
    case WKT_BOOL:
        if (!json_is_boolean(v))
            fail(c, "expected true or false, got %s", json_kind(v));
        else if ((m = new_msg(c, d)))
            ((Google__Protobuf__BoolValue *)m)->value = json_is_true(v);
        break;
    case WKT_NONE:
        m = enc_fields(c, d, v, 0);
        break;
    }
    c->depth--;
    return m;
}

/* ---- protobuf -> JSON ------------------------------------------------------------------------ */

static json_t *dec_message(cx *c, const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
                           const char *filter);
static json_t *dec_struct(cx *c, const Google__Protobuf__Struct *s);

/* Sets o[k] = v (stealing v); a NULL v means a failure already reported. */
static int put(cx *c, json_t *o, const char *k, json_t *v)
{
    if (!v) {
        fail(c, "out of memory");
        return -1;
    }
    if (json_object_set_new(o, k, v) < 0) {
        fail(c, "out of memory");
        return -1;
    }
    return 0;
}

static json_t *dec_string(cx *c, const char *s)
{
    json_t *j = json_string(s ? s : "");

    if (!j)
        fail(c, "string is not valid UTF-8");
    return j;
}

static json_t *dec_number(cx *c, double x)
{
    if (!isfinite(x)) {
        fail(c, "number is not finite");
        return NULL;
    }
    if (x == floor(x) && fabs(x) <= MAX_EXACT_DOUBLE)
        return json_integer((json_int_t)x);
    return json_real(x);
}

static json_t *dec_scalar(cx *c, const ProtobufCFieldDescriptor *f, const void *src,
                          const char *filter)
{
    json_t *j = NULL;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        j = json_integer(*(const int32_t *)src);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        j = json_integer(*(const uint32_t *)src);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        j = json_integer((json_int_t) * (const int64_t *)src);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (*(const uint64_t *)src > (uint64_t)LLONG_MAX) {
            fail(c, "%llu is too large", (unsigned long long)*(const uint64_t *)src);
            return NULL;
        }
        j = json_integer((json_int_t) * (const uint64_t *)src);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double x = f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)src : *(const double *)src;
        if (!isfinite(x)) {
            fail(c, "number is not finite");
            return NULL;
        }
        j = json_real(x);
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        j = json_boolean(*(const protobuf_c_boolean *)src);
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)src);
        /* A value newer than our copy of the enum: keep its number. */
        j = ev ? json_string(ev->name) : json_integer(*(const int *)src);
        break;
    }
    case PROTOBUF_C_TYPE_STRING:
        return dec_string(c, *(char *const *)src);
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = src;
        j = b64_encode(b->data, b->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)src;
        if (!m) {
            fail(c, "message is missing");
            return NULL;
        }
        return dec_message(c, f->descriptor, m, filter);
    }
    }
    if (!j)
        fail(c, "out of memory");
    return j;
}

/* Object keys must be UTF-8 too; jansson checks only values. */
static int valid_key(cx *c, const char *key)
{
    json_t *k = json_string(key);

    json_decref(k);
    if (!k)
        fail(c, "key is not valid UTF-8");
    return k != NULL;
}

static json_t *dec_map(cx *c, const ProtobufCFieldDescriptor *f, ProtobufCMessage *const *arr,
                       size_t n)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    json_t *o = json_object();

    if (!o || kf->type != PROTOBUF_C_TYPE_STRING) {
        fail(c, o ? "only string map keys are supported" : "out of memory");
        json_decref(o);
        return NULL;
    }
    for (size_t i = 0; i < n && !c->failed; i++) {
        const ProtobufCMessage *e = arr[i];
        const char *key = e ? CMEMBER(char *, e, kf->offset) : NULL;
        size_t mark;

        if (!key)
            key = "";
        mark = path_key(c, key);
        if (!e ||
            (vf->type == PROTOBUF_C_TYPE_MESSAGE && !CMEMBER(ProtobufCMessage *, e, vf->offset)))
            fail(c, "map entry without a value");
        else if (valid_key(c, key))
            put(c, o, key,
                dec_scalar(c, vf, (const char *)e + vf->offset, is_per_filter_map(f) ? key : NULL));
        path_pop(c, mark);
    }
    if (c->failed) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Whether a proto3 (unlabeled) field holds a non-default value. */
static int proto3_set(const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
    const char *p = (const char *)m + f->offset;

    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        return *(char *const *)p && **(char *const *)p;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p != NULL;
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len > 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p != 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p != 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p != 0;
    default:
        return elem_size(f->type) == 8 ? *(const uint64_t *)p != 0 : *(const uint32_t *)p != 0;
    }
}

/* The fields of m into the object o. */
static int dec_fields(cx *c, const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
                      json_t *o)
{
    for (unsigned i = 0; i < d->n_fields && !c->failed; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = (const char *)m + f->offset;
        json_t *v = NULL;
        size_t mark = c->plen;

        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = CMEMBER(size_t, m, f->quantifier_offset);
            const char *arr = *(const char *const *)p;
            if (!n && !always_array(d, f))
                continue;
            if (n && !arr) {
                fail(c, "%s: repeated field without elements", f->name);
                break;
            }
            mark = path_field(c, f->name);
            if (is_map(f)) {
                v = dec_map(c, f, (ProtobufCMessage *const *)arr, n);
            } else {
                v = json_array();
                for (size_t k = 0; v && k < n && !c->failed; k++) {
                    size_t mk = path_index(c, k);
                    json_t *x = dec_scalar(c, f, arr + k * elem_size(f->type), NULL);
                    if (x && json_array_append_new(v, x) < 0)
                        fail(c, "out of memory");
                    path_pop(c, mk);
                }
                if (!v)
                    fail(c, "out of memory");
            }
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                if (CMEMBER(uint32_t, m, f->quantifier_offset) != f->id)
                    continue;
                if ((f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) &&
                    !*(void *const *)p)
                    continue;
            } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
                if (has_flag(f) ? !CMEMBER(protobuf_c_boolean, m, f->quantifier_offset)
                                : !*(void *const *)p)
                    continue;
            } else if (!proto3_set(f, m)) {
                continue;
            }
            mark = path_field(c, f->name);
            v = dec_scalar(c, f, p, NULL);
        }
        if (v && !c->failed)
            put(c, o, f->name, v);
        else
            json_decref(v);
        path_pop(c, mark);
    }
    return c->failed ? -1 : 0;
}

static json_t *dec_any(cx *c, const Google__Protobuf__Any *a, const char *filter)
{
    const ProtobufCMessageDescriptor *d;
    ProtobufCMessage *inner;
    json_t *o = NULL;

    if (!a->type_url || !a->type_url[0]) {
        fail(c, "an Any without a type URL");
        return NULL;
    }
    d = type_lookup(a->type_url);
    if (!d) {
        fail(c,
             "unsupported type \"%.120s\": weft's xDS codec carries the types listed in "
             "docs/xds.md",
             a->type_url);
        return NULL;
    }
    inner = unpack(c, d, a->value.data, a->value.len);
    if (!inner)
        return NULL;
    if (filter && d == &xds__type__v3__typed_struct__descriptor) {
        /* weft's free-form per-route config comes back as the bare object. */
        const Xds__Type__V3__TypedStruct *ts = (const Xds__Type__V3__TypedStruct *)inner;
        size_t pl = strlen(ROUTE_TYPE_PREFIX);
        if (ts->type_url && ts->value && strncmp(ts->type_url, ROUTE_TYPE_PREFIX, pl) == 0 &&
            strcmp(ts->type_url + pl, filter) == 0) {
            c->depth++;
            o = dec_struct(c, ts->value);
            c->depth--;
            free_msg(inner);
            return o;
        }
    }
    o = json_object();
    if (!o)
        fail(c, "out of memory");
    else if (put(c, o, "@type", dec_string(c, a->type_url)) < 0)
        ;
    else if (wkt_of(d) != WKT_NONE) {
        json_t *v = dec_message(c, d, inner, NULL);
        if (v)
            put(c, o, "value", v);
    } else {
        c->depth++;
        dec_fields(c, d, inner, o);
        c->depth--;
    }
    free_msg(inner);
    if (c->failed) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *dec_value(cx *c, const Google__Protobuf__Value *v);

static json_t *dec_struct(cx *c, const Google__Protobuf__Struct *s)
{
    json_t *o = json_object();

    if (!o) {
        fail(c, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < s->n_fields && !c->failed; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = s->fields[i];
        const char *key = e && e->key ? e->key : "";
        size_t mark = path_key(c, key);

        if (!e || !e->value)
            fail(c, "entry without a value");
        else if (valid_key(c, key))
            put(c, o, key, dec_value(c, e->value));
        path_pop(c, mark);
    }
    if (c->failed) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *dec_list(cx *c, const Google__Protobuf__ListValue *l)
{
    json_t *a = json_array();

    if (!a) {
        fail(c, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < l->n_values && !c->failed; i++) {
        size_t mark = path_index(c, i);
        json_t *x = l->values[i] ? dec_value(c, l->values[i]) : NULL;
        if (!l->values[i])
            fail(c, "missing value");
        else if (x && json_array_append_new(a, x) < 0)
            fail(c, "out of memory");
        path_pop(c, mark);
    }
    if (c->failed) {
        json_decref(a);
        return NULL;
    }
    return a;
}

static json_t *dec_value(cx *c, const Google__Protobuf__Value *v)
{
    json_t *j = NULL;

    if (++c->depth > MAX_DEPTH) {
        fail(c, "nested more than %d deep", MAX_DEPTH);
        c->depth--;
        return NULL;
    }
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        j = json_null();
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        j = dec_number(c, v->number_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        j = dec_string(c, v->string_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        j = json_boolean(v->bool_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        j = v->struct_value ? dec_struct(c, v->struct_value) : json_object();
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        j = v->list_value ? dec_list(c, v->list_value) : json_array();
        break;
    default:
        fail(c, "a google.protobuf.Value with no value set");
        break;
    }
    c->depth--;
    if (!j && !c->failed)
        fail(c, "out of memory");
    return j;
}

static json_t *dec_duration(cx *c, const Google__Protobuf__Duration *d)
{
    long long s = (long long)d->seconds, n = d->nanos;
    char buf[48];
    int len;

    if (s > MAX_DURATION_S || s < -MAX_DURATION_S || n > 999999999 || n < -999999999 ||
        (s > 0 && n < 0) || (s < 0 && n > 0)) {
        fail(c, "duration %llds %lldns is out of range", s, n);
        return NULL;
    }
    /* The shortest exact form: "10s", "0.25s", "-1.5s", as the translator
     * writes them. */
    len = snprintf(buf, sizeof(buf), "%s%lld", s < 0 || n < 0 ? "-" : "", s < 0 ? -s : s);
    if (n) {
        len += snprintf(buf + len, sizeof(buf) - (size_t)len, ".%09lld", n < 0 ? -n : n);
        while (buf[len - 1] == '0')
            len--;
    }
    buf[len++] = 's';
    buf[len] = 0;
    return json_string(buf);
}

static json_t *dec_message(cx *c, const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
                           const char *filter)
{
    json_t *j = NULL;

    if (++c->depth > MAX_DEPTH) {
        fail(c, "nested more than %d deep", MAX_DEPTH);
        c->depth--;
        return NULL;
    }
    switch (wkt_of(d)) {
    case WKT_ANY:
        j = dec_any(c, (const Google__Protobuf__Any *)m, filter);
        break;
    case WKT_STRUCT:
        j = dec_struct(c, (const Google__Protobuf__Struct *)m);
        break;
    case WKT_VALUE:
        j = dec_value(c, (const Google__Protobuf__Value *)m);
        break;
    case WKT_LIST:
        j = dec_list(c, (const Google__Protobuf__ListValue *)m);
        break;
    case WKT_DURATION:
        j = dec_duration(c, (const Google__Protobuf__Duration *)m);
        break;
    case WKT_UINT32:
        j = json_integer(((const Google__Protobuf__UInt32Value *)m)->value);
        break;
    case WKT_BOOL:
        j = json_boolean(((const Google__Protobuf__BoolValue *)m)->value);
        break;
    case WKT_NONE:
        j = json_object();
        if (j && dec_fields(c, d, m, j) < 0) {
            json_decref(j);
            j = NULL;
        }
        break;
    }
    c->depth--;
    if (!j && !c->failed)
        fail(c, "out of memory");
    return j;
}

/* ---- resources ------------------------------------------------------------------------------- */

/* Resource types are named by their full "type.googleapis.com/" URL. */
static const ProtobufCMessageDescriptor *resource_type(const char *type_url)
{
    size_t pl = strlen(WF_TYPE_PREFIX);

    if (!type_url || strncmp(type_url, WF_TYPE_PREFIX, pl) != 0)
        return NULL;
    return type_lookup(type_url);
}

const char *wf_xds_resource_name(const char *type_url, const json_t *res)
{
    const char *key = type_url && strcmp(type_url, WF_TYPE_ENDPOINT) == 0 ? "cluster_name" : "name";

    return json_string_value(json_object_get(res, key));
}

/* "Cluster \"outbound|80||a\"", or "resources[3] (Cluster \"x\")" inside a
 * response, to start error messages. */
static const char *describe(char *buf, size_t len, const char *where,
                            const ProtobufCMessageDescriptor *d, const char *name)
{
    char res[200];

    if (name)
        snprintf(res, sizeof(res), "%s \"%.160s\"", d->short_name, name);
    else
        snprintf(res, sizeof(res), "%s", d->short_name);
    if (where)
        snprintf(buf, len, "%s (%s)", where, res);
    else
        snprintf(buf, len, "%s", res);
    return buf;
}

/* Encodes one resource; c carries the error. */
static ProtobufCMessage *encode_resource(cx *c, const char *type_url, const json_t *res,
                                         const char *where, char *what, size_t wlen)
{
    const ProtobufCMessageDescriptor *d = resource_type(type_url);

    if (!d) {
        fail(c, "resource type \"%.120s\" is not supported by weft's xDS codec",
             type_url ? type_url : "(null)");
        return NULL;
    }
    c->what = describe(what, wlen, where, d, wf_xds_resource_name(type_url, res));
    return enc_message(c, d, res, NULL);
}

int wf_xds_encode(const char *type_url, const json_t *res, uint8_t **out, size_t *len, char *err,
                  size_t errlen)
{
    cx c = {.err = err, .errlen = errlen};
    char what[256];
    ProtobufCMessage *m = encode_resource(&c, type_url, res, NULL, what, sizeof(what));

    *out = NULL;
    *len = 0;
    if (!m)
        return -1;
    *out = pack(m, len);
    free_msg(m);
    if (!*out) {
        fail(&c, "out of memory");
        return -1;
    }
    return 0;
}

static json_t *decode_resource(cx *c, const ProtobufCMessageDescriptor *d, const uint8_t *buf,
                               size_t len, const char *where, char *what, size_t wlen)
{
    char name[128];
    ProtobufCMessage *m;
    json_t *j;

    c->what =
        describe(what, wlen, where, d, peek_name(buf, len, name, sizeof(name)) == 0 ? name : NULL);
    m = unpack(c, d, buf, len);
    if (!m)
        return NULL;
    j = dec_message(c, d, m, NULL);
    free_msg(m);
    return j;
}

json_t *wf_xds_decode(const char *type_url, const uint8_t *buf, size_t len, char *err,
                      size_t errlen)
{
    cx c = {.err = err, .errlen = errlen};
    const ProtobufCMessageDescriptor *d = resource_type(type_url);
    char what[200];

    if (!d) {
        fail(&c, "resource type \"%.120s\" is not supported by weft's xDS codec",
             type_url ? type_url : "(null)");
        return NULL;
    }
    return decode_resource(&c, d, buf, len, NULL, what, sizeof(what));
}

/* ---- envelopes ------------------------------------------------------------------------------- */

static char *dup_or_null(cx *c, const char *s)
{
    char *d;

    if (!s || !*s)
        return NULL; /* proto3 peers omit empty strings; so do we */
    d = strdup(s);
    if (!d)
        fail(c, "out of memory");
    return d;
}

static char *dup_or_empty(cx *c, const char *s)
{
    char *d = strdup(s ? s : "");

    if (!d)
        fail(c, "out of memory");
    return d;
}

int wf_xds_request_encode(const wf_xds_request *r, uint8_t **out, size_t *len)
{
    char err[512] = "";
    cx c = {.err = err, .errlen = sizeof(err)};
    Envoy__Service__Discovery__V3__DiscoveryRequest *q =
        (Envoy__Service__Discovery__V3__DiscoveryRequest *)new_msg(
            &c, &envoy__service__discovery__v3__discovery_request__descriptor);

    *out = NULL;
    *len = 0;
    if (q) {
        q->version_info = dup_or_null(&c, r->version_info);
        q->type_url = dup_or_null(&c, r->type_url);
        q->response_nonce = dup_or_null(&c, r->response_nonce);
        if (r->node) {
            size_t mark = path_field(&c, "node");
            q->node = (Envoy__Config__Core__V3__Node *)enc_message(
                &c, &envoy__config__core__v3__node__descriptor, r->node, NULL);
            path_pop(&c, mark);
        }
        if (r->n_resource_names) {
            q->resource_names = calloc(r->n_resource_names, sizeof(char *));
            if (!q->resource_names)
                fail(&c, "out of memory");
            for (size_t i = 0; q->resource_names && i < r->n_resource_names && !c.failed; i++)
                if ((q->resource_names[i] = dup_or_empty(&c, r->resource_names[i])))
                    q->n_resource_names++;
        }
        if (r->has_error && !c.failed) {
            q->error_detail = (Google__Rpc__Status *)new_msg(&c, &google__rpc__status__descriptor);
            if (q->error_detail) {
                q->error_detail->code = r->error_code;
                if (r->error_message && r->error_message[0])
                    q->error_detail->message = dup_or_empty(&c, r->error_message);
            }
        }
        if (!c.failed && !(*out = pack(&q->base, len)))
            fail(&c, "out of memory");
        free_msg(q);
    }
    if (c.failed) {
        WF_ERROR("xds: cannot encode a DiscoveryRequest for %s: %s",
                 r->type_url ? r->type_url : "(no type)", err);
        return -1;
    }
    return 0;
}

void wf_xds_request_free(wf_xds_request *r)
{
    if (!r)
        return;
    free(r->version_info);
    json_decref(r->node);
    for (size_t i = 0; i < r->n_resource_names; i++)
        free(r->resource_names[i]);
    free(r->resource_names);
    free(r->type_url);
    free(r->response_nonce);
    free(r->error_message);
    memset(r, 0, sizeof(*r));
}

int wf_xds_request_decode(const uint8_t *buf, size_t len, wf_xds_request *r, char *err,
                          size_t errlen)
{
    cx c = {.err = err, .errlen = errlen, .what = "DiscoveryRequest"};
    Envoy__Service__Discovery__V3__DiscoveryRequest *q;

    memset(r, 0, sizeof(*r));
    q = (Envoy__Service__Discovery__V3__DiscoveryRequest *)unpack(
        &c, &envoy__service__discovery__v3__discovery_request__descriptor, buf, len);
    if (!q)
        return -1;
    /* Absent strings become "": callers compare them without NULL checks. */
    r->version_info = dup_or_empty(&c, q->version_info);
    r->type_url = dup_or_empty(&c, q->type_url);
    r->response_nonce = dup_or_empty(&c, q->response_nonce);
    if (q->node && !c.failed) {
        size_t mark = path_field(&c, "node");
        r->node = dec_message(&c, &envoy__config__core__v3__node__descriptor, &q->node->base, NULL);
        path_pop(&c, mark);
    }
    if (q->n_resource_names && !c.failed) {
        r->resource_names = calloc(q->n_resource_names, sizeof(char *));
        if (!r->resource_names)
            fail(&c, "out of memory");
        for (size_t i = 0; r->resource_names && i < q->n_resource_names && !c.failed; i++) {
            size_t mark = path_add(&c, "resource_names[%zu]", i);
            json_t *chk = dec_string(&c, q->resource_names[i]); /* UTF-8 */
            json_decref(chk);
            if (chk && (r->resource_names[i] = dup_or_empty(&c, q->resource_names[i])))
                r->n_resource_names++;
            path_pop(&c, mark);
        }
    }
    if (q->error_detail && !c.failed) {
        r->has_error = 1;
        r->error_code = q->error_detail->code;
        r->error_message = dup_or_empty(&c, q->error_detail->message);
    }
    free_msg(q);
    if (c.failed) {
        wf_xds_request_free(r);
        return -1;
    }
    return 0;
}

int wf_xds_response_encode(const wf_xds_response *r, uint8_t **out, size_t *len, char *err,
                           size_t errlen)
{
    cx c = {.err = err, .errlen = errlen};
    Envoy__Service__Discovery__V3__DiscoveryResponse *p;
    size_t n = json_array_size(r->resources);

    *out = NULL;
    *len = 0;
    if (r->resources && !json_is_array(r->resources)) {
        fail(&c, "resources must be a JSON array");
        return -1;
    }
    p = (Envoy__Service__Discovery__V3__DiscoveryResponse *)new_msg(
        &c, &envoy__service__discovery__v3__discovery_response__descriptor);
    if (!p)
        return -1;
    p->version_info = dup_or_null(&c, r->version_info);
    p->type_url = dup_or_null(&c, r->type_url);
    p->nonce = dup_or_null(&c, r->nonce);
    if (r->control_plane && !c.failed) {
        p->control_plane = (Envoy__Config__Core__V3__ControlPlane *)new_msg(
            &c, &envoy__config__core__v3__control_plane__descriptor);
        if (p->control_plane)
            p->control_plane->identifier = dup_or_empty(&c, r->control_plane);
    }
    if (n && !c.failed) {
        p->resources = calloc(n, sizeof(*p->resources));
        if (!p->resources)
            fail(&c, "out of memory");
    }
    for (size_t i = 0; p->resources && i < n && !c.failed; i++) {
        char what[256], where[32];
        ProtobufCMessage *m;

        snprintf(where, sizeof(where), "resources[%zu]", i);
        m = encode_resource(&c, r->type_url, json_array_get(r->resources, i), where, what,
                            sizeof(what));
        c.what = NULL;
        if (m) {
            Google__Protobuf__Any *a = make_any(&c, r->type_url, m);
            if (a)
                p->resources[p->n_resources++] = a;
        }
    }
    if (!c.failed && !(*out = pack(&p->base, len)))
        fail(&c, "out of memory");
    free_msg(p);
    return c.failed ? -1 : 0;
}

void wf_xds_response_free(wf_xds_response *r)
{
    if (!r)
        return;
    free(r->version_info);
    free(r->type_url);
    free(r->nonce);
    json_decref(r->resources);
    free(r->control_plane);
    memset(r, 0, sizeof(*r));
}

int wf_xds_response_decode(const uint8_t *buf, size_t len, wf_xds_response *r, char *err,
                           size_t errlen)
{
    cx c = {.err = err, .errlen = errlen, .what = "DiscoveryResponse"};
    Envoy__Service__Discovery__V3__DiscoveryResponse *p;
    const ProtobufCMessageDescriptor *d = NULL;

    memset(r, 0, sizeof(*r));
    p = (Envoy__Service__Discovery__V3__DiscoveryResponse *)unpack(
        &c, &envoy__service__discovery__v3__discovery_response__descriptor, buf, len);
    if (!p)
        return -1;
    r->version_info = dup_or_empty(&c, p->version_info);
    r->type_url = dup_or_empty(&c, p->type_url);
    r->nonce = dup_or_empty(&c, p->nonce);
    if (p->control_plane)
        r->control_plane = dup_or_empty(&c, p->control_plane->identifier);
    r->resources = json_array();
    if (!r->resources)
        fail(&c, "out of memory");
    if (!c.failed && !(d = resource_type(r->type_url)))
        fail(&c, "type_url \"%.120s\" is not a resource type weft's xDS codec supports",
             r->type_url);
    for (size_t i = 0; d && i < p->n_resources && !c.failed; i++) {
        const Google__Protobuf__Any *a = p->resources[i];
        char what[256], where[64];
        json_t *j;

        snprintf(where, sizeof(where), "DiscoveryResponse resources[%zu]", i);
        if (!a || !a->type_url || strcmp(a->type_url, r->type_url) != 0) {
            c.what = where;
            fail(&c, "type \"%.120s\" differs from the response's type_url \"%.120s\"",
                 a && a->type_url ? a->type_url : "", r->type_url);
            break;
        }
        j = decode_resource(&c, d, a->value.data, a->value.len, where, what, sizeof(what));
        if (j && json_array_append_new(r->resources, j) < 0)
            fail(&c, "out of memory");
    }
    free_msg(p);
    if (c.failed) {
        wf_xds_response_free(r);
        return -1;
    }
    return 0;
}

/* ---- envelopes without their resources ------------------------------------------------------ */

int wf_xds_request_peek(const uint8_t *buf, size_t len, wf_xds_request_view *v)
{
    size_t i = 0, pl;
    const uint8_t *p;
    unsigned num;

    memset(v, 0, sizeof(*v));
    v->buf = buf;
    v->len = len;
    while (i < len) {
        if (next_field(buf, len, &i, &num, &p, &pl) < 0)
            return -1;
        if (!p)
            continue;
        switch (num) {
        case 1:
            v->version_info = (const char *)p;
            v->version_len = pl;
            break;
        case 2:
            v->has_node = 1;
            break;
        case 3:
            v->n_resource_names++;
            break;
        case 4:
            v->type_url = (const char *)p;
            v->type_url_len = pl;
            break;
        case 5:
            v->response_nonce = (const char *)p;
            v->nonce_len = pl;
            break;
        case 6:
            v->has_error = 1;
            break;
        }
    }
    return 0;
}

int wf_xds_request_name(const wf_xds_request_view *v, size_t *pos, const char **name, size_t *len)
{
    const uint8_t *p;
    size_t pl;
    unsigned num;

    while (*pos < v->len) {
        if (next_field(v->buf, v->len, pos, &num, &p, &pl) < 0)
            return 0;
        if (num == 3 && p) {
            *name = (const char *)p;
            *len = pl;
            return 1;
        }
    }
    return 0;
}

int wf_xds_response_envelope(const uint8_t *buf, size_t len, wf_xds_envelope *env)
{
    size_t i = 0, pl;
    const uint8_t *p;
    unsigned num;

    memset(env, 0, sizeof(*env));
    while (i < len) {
        if (next_field(buf, len, &i, &num, &p, &pl) < 0)
            return -1;
        if (!p)
            continue;
        /* A field seen twice: the last one counts, as when decoding. */
        switch (num) {
        case 1:
            env->version_info = (const char *)p;
            env->version_len = pl;
            break;
        case 2:
            env->n_resources++;
            break;
        case 4:
            env->type_url = (const char *)p;
            env->type_url_len = pl;
            break;
        case 5:
            env->nonce = (const char *)p;
            env->nonce_len = pl;
            break;
        }
    }
    return 0;
}

size_t wf_xds_response_tail(const char *nonce, const char *control_plane, uint8_t *out, size_t cap)
{
    size_t nl = nonce ? strlen(nonce) : 0, cl = control_plane ? strlen(control_plane) : 0;
    size_t n = 0, il;

    /* Field tag, a length of up to two varint bytes, the bytes; for
     * control_plane that twice (ControlPlane{identifier=1}). */
    if ((nl ? 3 + nl : 0) + (cl ? 6 + cl : 0) > cap || nl >= 16384 || cl >= 16000)
        return 0;
    if (nl) {
        out[n++] = 5 << 3 | 2;
        n += wf_varint_put(out + n, nl);
        memcpy(out + n, nonce, nl);
        n += nl;
    }
    if (cl) {
        uint8_t idv[3];
        il = wf_varint_put(idv, cl);
        out[n++] = 6 << 3 | 2;
        n += wf_varint_put(out + n, 1 + il + cl);
        out[n++] = 1 << 3 | 2;
        memcpy(out + n, idv, il);
        n += il;
        memcpy(out + n, control_plane, cl);
        n += cl;
    }
    return n;
}

/* Field number f, length-delimited, of l bytes: tag and length. */
static size_t put_ld(uint8_t *out, unsigned f, size_t l)
{
    out[0] = (uint8_t)(f << 3 | 2);
    return 1 + wf_varint_put(out + 1, l);
}

int wf_xds_response_assemble(const char *version, const char *type_url, const uint8_t *const *res,
                             const size_t *lens, size_t n, uint8_t **out, size_t *len,
                             size_t *offsets)
{
    size_t vl = version ? strlen(version) : 0, tl = type_url ? strlen(type_url) : 0;
    size_t any_head = tl ? 1 + wf_varint_len(tl) + tl : 0, total = 0, k = 0;
    uint8_t *b;

    /* proto3 omits empty strings, as the encoder does (dup_or_null). */
    if (vl)
        total += 1 + wf_varint_len(vl) + vl;
    for (size_t i = 0; i < n; i++) {
        size_t inner = any_head + (lens[i] ? 1 + wf_varint_len(lens[i]) + lens[i] : 0);
        total += 1 + wf_varint_len(inner) + inner;
    }
    if (tl)
        total += 1 + wf_varint_len(tl) + tl;
    *out = NULL;
    *len = 0;
    if (!(b = malloc(total ? total : 1)))
        return -1;
    if (vl) {
        k += put_ld(b + k, 1, vl);
        memcpy(b + k, version, vl);
        k += vl;
    }
    for (size_t i = 0; i < n; i++) {
        size_t inner = any_head + (lens[i] ? 1 + wf_varint_len(lens[i]) + lens[i] : 0);
        k += put_ld(b + k, 2, inner);
        if (tl) {
            k += put_ld(b + k, 1, tl);
            memcpy(b + k, type_url, tl);
            k += tl;
        }
        if (lens[i])
            k += put_ld(b + k, 2, lens[i]);
        if (offsets)
            offsets[i] = k;
        if (lens[i])
            memcpy(b + k, res[i], lens[i]);
        k += lens[i];
    }
    if (tl) {
        k += put_ld(b + k, 4, tl);
        memcpy(b + k, type_url, tl);
        k += tl;
    }
    *out = b;
    *len = k;
    return 0;
}
