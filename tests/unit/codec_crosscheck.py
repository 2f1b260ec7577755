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
"""
import glob
import re
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


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


def compare(fds, theirs):
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
                num, typ, type_name, label = x
                if (num, typ, type_name, label == 3) != (f.number, f.type, f.type_name,
                                                         f.label == 3):
                    print('MISMATCH %s.%s: ours %s, gRPC %s' %
                          (full, f.name, (f.number, f.type, f.type_name, f.label), x))
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
                print('MISMATCH %s.%s: ours %d, gRPC %s' % (full, v.name, v.number, t.get(v.name)))
                bad += 1

    for f in fds.file:
        for d in f.message_type:
            msg(f.package + '.' + d.name, d)
        for e in f.enum_type:
            enum(f.package + '.' + e.name, e)
    print('gRPC C-core agrees on %d fields and enum values; not in its copy: %s' %
          (checked - bad, ', '.join(newer) or 'none'))
    return bad, checked


def main():
    fds = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], 'rb').read())
    bad = reencode(fds, sys.argv[2])
    theirs = grpc_descriptors()
    if not theirs:
        print('libgrpc not found or unreadable: field numbers not cross-checked')
    else:
        mismatched, checked = compare(fds, theirs)
        bad += mismatched
        if checked < 100:
            print('only %d fields found in libgrpc: its layout changed?' % checked)
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
