"""codec_crosscheck.py: checks weft's protobuf bytes with another implementation.

Run by codec_test (tests/unit/codec_test.c) with Debian's /usr/bin/python3
when python3-protobuf is installed:

    codec_crosscheck.py DESCRIPTOR_SET MANIFEST

DESCRIPTOR_SET is proto/ compiled by `protoc-c --include_imports -o`;
MANIFEST lists "full.message.Name path" lines, each path holding bytes
written by core/xds/codec.c.

1. Python's protobuf parses every message (and every Any inside, through
   json_format) and writes it back byte for byte the same, so our bytes
   are canonical protobuf any peer reads.
2. When gRPC C-core's library is installed (python3-grpcio), the Envoy
   descriptors it embeds (upb definitions, the same ones a proxyless client
   parses xDS with) are read out of it, and every field of proto/ must have
   there the same number, type and cardinality: an independent proof of the
   field numbers.  Fields newer than gRPC 1.51 are reported, not failed.
3. Messages gRPC has no copy of (TcpProxy: a proxyless client has no
   network filters) are checked against ENVOY_API below, Envoy's numbers
   transcribed from its api/ tree; and every field in REQUIRED must have
   been checked by one of the two, so a field the translator relies on
   cannot slip through as "newer".
"""
import glob
import re
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

F = descriptor_pb2.FieldDescriptorProto
TCP_PROXY = 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy'

# Envoy's definitions of messages libgrpc does not embed, in the form
# grpc_descriptors() returns: {field: (number, type, type_name, label)}.
# From envoyproxy/envoy api/envoy/extensions/filters/network/tcp_proxy/v3/
# tcp_proxy.proto (proto3: every field LABEL_OPTIONAL unless repeated).
ENVOY_API = {
    TCP_PROXY: {
        'stat_prefix': (1, F.TYPE_STRING, '', F.LABEL_OPTIONAL),
        'cluster': (2, F.TYPE_STRING, '', F.LABEL_OPTIONAL),
        'idle_timeout': (8, F.TYPE_MESSAGE, '.google.protobuf.Duration', F.LABEL_OPTIONAL),
        'weighted_clusters': (10, F.TYPE_MESSAGE, '.' + TCP_PROXY + '.WeightedCluster',
                              F.LABEL_OPTIONAL),
    },
    TCP_PROXY + '.WeightedCluster': {
        'clusters': (1, F.TYPE_MESSAGE, '.' + TCP_PROXY + '.WeightedCluster.ClusterWeight',
                     F.LABEL_REPEATED),
    },
    TCP_PROXY + '.WeightedCluster.ClusterWeight': {
        'name': (1, F.TYPE_STRING, '', F.LABEL_OPTIONAL),
        'weight': (2, F.TYPE_UINT32, '', F.LABEL_OPTIONAL),
    },
}

# Fields the translator's TCP/TLS/WebSocket output (docs/resources.md)
# depends on: each must be checked against Envoy's numbers by one source.
HCM = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
REQUIRED = [
    'envoy.config.listener.v3.FilterChainMatch.server_names',
    'envoy.config.listener.v3.FilterChainMatch.transport_protocol',
    HCM + '.upgrade_configs',
    HCM + '.UpgradeConfig.upgrade_type',
    HCM + '.UpgradeConfig.enabled',
    HCM + '.stream_idle_timeout',
    HCM + '.common_http_protocol_options',
    'envoy.config.cluster.v3.Cluster.common_http_protocol_options',
    'envoy.config.core.v3.HttpProtocolOptions.idle_timeout',
    'envoy.config.core.v3.HttpProtocolOptions.max_requests_per_connection',
    TCP_PROXY + '.stat_prefix',
    TCP_PROXY + '.cluster',
    TCP_PROXY + '.weighted_clusters',
    TCP_PROXY + '.idle_timeout',
    TCP_PROXY + '.WeightedCluster.clusters',
    TCP_PROXY + '.WeightedCluster.ClusterWeight.name',
    TCP_PROXY + '.WeightedCluster.ClusterWeight.weight',
]


def reencode(fds, manifest):
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    bad = n = 0
    for line in open(manifest):
        name, path = line.split()
        cls = factory.GetPrototype(pool.FindMessageTypeByName(name))
        data = open(path, 'rb').read()
        m = cls.FromString(data)
        n += 1
        if m.SerializeToString(deterministic=True) != data:
            print('python re-encodes %s (%s) differently' % (path, name))
            bad += 1
        json_format.MessageToJson(m, descriptor_pool=pool)  # unpacks every Any
    print('python parsed and re-encoded %d messages identically' % (n - bad))
    return bad


def varint(b, i):
    v = s = 0
    while i < len(b) and s < 64:
        c = b[i]
        i += 1
        v |= (c & 0x7f) << s
        s += 7
        if not c & 0x80:
            return v, i
    raise ValueError('bad varint')


# FileDescriptorProto's fields and wire types: where an embedded one ends.
FILE_FIELDS = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 0, 11: 0, 12: 2,
               13: 2, 14: 0}


def extent(b, i):
    while i < len(b):
        try:
            k, j = varint(b, i)
            f, wt = k >> 3, k & 7
            if FILE_FIELDS.get(f) != wt:
                break
            if wt == 2:
                ln, j = varint(b, j)
                if j + ln > len(b):
                    break
                j += ln
            else:
                _, j = varint(b, j)
        except ValueError:
            break
        i = j
    return i


def grpc_descriptors():
    """Message and enum definitions embedded in libgrpc, by full name."""
    libs = glob.glob('/usr/lib/*/libgrpc.so.*') + glob.glob('/usr/lib/libgrpc.so.*')
    if not libs:
        return None
    data = open(sorted(libs)[0], 'rb').read()
    out = {}

    def walk(prefix, msgs, enums):
        for e in enums:
            out[prefix + '.' + e.name] = {v.name: v.number for v in e.value}
        for d in msgs:
            full = prefix + '.' + d.name
            out[full] = {f.name: (f.number, f.type, f.type_name, f.label) for f in d.field}
            walk(full, d.nested_type, d.enum_type)

    for m in re.finditer(rb'\n([\x05-\x7f])((?:envoy|google|xds)/[a-z0-9_/]+\.proto)', data):
        if m.group(1)[0] != len(m.group(2)):
            continue
        try:
            fd = descriptor_pb2.FileDescriptorProto.FromString(data[m.start():extent(data, m.start())])
        except Exception:
            continue
        walk(fd.package, fd.message_type, fd.enum_type)
    return out


def compare(fds, theirs, who, done):
    """Checks proto/ against theirs; adds the full names of the fields it
    checked to done.  Returns (mismatches, fields checked, names theirs lacks)."""
    checked = bad = 0
    newer = []

    def msg(full, d):
        nonlocal checked, bad
        t = theirs.get(full)
        if t is None:
            newer.append(full)
            return
        if not d.options.map_entry:
            for f in d.field:
                x = t.get(f.name)
                if x is None:
                    newer.append(full + '.' + f.name)
                    continue
                checked += 1
                done.add(full + '.' + f.name)
                num, typ, type_name, label = x
                if (num, typ, type_name, label == 3) != (f.number, f.type, f.type_name,
                                                         f.label == 3):
                    print('MISMATCH %s.%s: ours %s, %s %s' %
                          (full, f.name, (f.number, f.type, f.type_name, f.label), who, x))
                    bad += 1
        for n in d.nested_type:
            msg(full + '.' + n.name, n)
        for e in d.enum_type:
            enum(full + '.' + e.name, e)

    def enum(full, e):
        nonlocal checked, bad
        t = theirs.get(full)
        if t is None:
            newer.append(full)
            return
        for v in e.value:
            checked += 1
            if t.get(v.name) != v.number:
                print('MISMATCH %s.%s: ours %d, %s %s' % (full, v.name, v.number, who,
                                                         t.get(v.name)))
                bad += 1

    for f in fds.file:
        for d in f.message_type:
            msg(f.package + '.' + d.name, d)
        for e in f.enum_type:
            enum(f.package + '.' + e.name, e)
    return bad, checked, newer


def main():
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], 'rb').read())
    bad = reencode(fds, sys.argv[2])
    done = set()
    theirs = grpc_descriptors()
    if not theirs:
        print('libgrpc not found or unreadable: field numbers not cross-checked with gRPC')
    else:
        mismatched, checked, newer = compare(fds, theirs, 'gRPC', done)
        bad += mismatched
        # What gRPC lacks and ENVOY_API has is checked below, not "newer".
        newer = [n for n in newer if n not in ENVOY_API and n.rsplit('.', 1)[0] not in ENVOY_API]
        print('gRPC C-core agrees on %d fields and enum values; not in its copy: %s' %
              (checked - mismatched, ', '.join(newer) or 'none'))
        if checked < 100:
            print('only %d fields found in libgrpc: its layout changed?' % checked)
    # Messages outside ENVOY_API come back as "not in its copy": ignored.
    mismatched, checked, _ = compare(fds, ENVOY_API, "Envoy's api/", done)
    bad += mismatched
    print("Envoy's api/ (ENVOY_API) agrees on %d fields gRPC has no copy of" %
          (checked - mismatched))
    # Without libgrpc only ENVOY_API's part of REQUIRED can be checked.
    missing = [n for n in REQUIRED
               if n not in done and (theirs or n.rsplit('.', 1)[0] in ENVOY_API)]
    for n in missing:
        print('NOT CHECKED %s: neither gRPC nor ENVOY_API has it (or proto/ lost it)' % n)
    bad += len(missing)
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
