/* util_test.c: the stream arena, hash maps and flag parsing (core/util). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "test.h"
#include "util/arena.h"
#include "util/ctree.h"
#include "util/flags.h"
#include "util/jarena.h"
#include "util/jpack.h"
#include "util/lz.h"
#include "util/map.h"

TEST(arena_aligns_and_grows)
{
    wf_arena a;
    char *p, *q;

    wf_arena_init(&a, 1 << 20);
    p = wf_arena_alloc(&a, 3);
    q = wf_arena_alloc(&a, 5);
    CHECK(((uintptr_t)p & 15) == 0 && ((uintptr_t)q & 15) == 0);
    CHECK(q != p);
    p = wf_arena_alloc(&a, 100000); /* larger than a block */
    CHECK(p != NULL);
    memset(p, 1, 100000);
    wf_arena_reset(&a);
    CHECK_INT(a.total, 0);
}

TEST(arena_refuses_past_limit)
{
    wf_arena a;

    wf_arena_init(&a, 3 * WF_ARENA_BLOCK);
    CHECK(wf_arena_alloc(&a, WF_ARENA_BLOCK) != NULL);
    CHECK(wf_arena_alloc(&a, WF_ARENA_BLOCK) != NULL);
    CHECK(wf_arena_alloc(&a, WF_ARENA_BLOCK) != NULL);
    CHECK(wf_arena_alloc(&a, WF_ARENA_BLOCK) == NULL);
    wf_arena_reset(&a);
}

TEST(arena_grow_in_place_keeps_bytes)
{
    wf_arena a;
    char *p, *q;

    wf_arena_init(&a, 1 << 20);
    p = wf_arena_strndup(&a, "hello", 5);
    q = wf_arena_grow(&a, p, 6, 12);
    CHECK(q == p);
    CHECK_STR(q, "hello");
    wf_arena_alloc(&a, 1);
    q = wf_arena_grow(&a, p, 12, 40); /* no longer last: copied */
    CHECK(q != p);
    CHECK_STR(q, "hello");
    wf_arena_reset(&a);
}

TEST(map_string_and_pointer_keys)
{
    wf_map m;
    char keys[200][16];
    int vals[200];

    wf_map_init(&m);
    for (int i = 0; i < 200; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
        CHECK_INT(wf_map_put(&m, keys[i], strlen(keys[i]), &vals[i]), 0);
    }
    for (int i = 0; i < 200; i++)
        CHECK(wf_map_get(&m, keys[i], strlen(keys[i])) == &vals[i]);
    CHECK(wf_map_get(&m, "key-200", 7) == NULL);
    CHECK_INT(wf_map_put_ptr(&m, &vals[3], keys[3]), 0);
    CHECK(wf_map_get_ptr(&m, &vals[3]) == keys[3]);
    CHECK(wf_map_get_ptr(&m, &vals[4]) == NULL);
    wf_map_free(&m);
}

TEST(flags_parse_forms_and_errors)
{
    const char *s = NULL, *addr = NULL;
    long n = 0;
    int b = 0;
    wf_strlist l = {0};
    wf_flag f[] = {
        {"name", WF_FLAG_STR, &s, 0, 0, "X", ""},     {"n", WF_FLAG_INT, &n, 1, 10, "N", ""},
        {"addr", WF_FLAG_ADDR, &addr, 0, 0, "A", ""}, {"dir", WF_FLAG_MULTI, &l, 0, 0, "D", ""},
        {"on", WF_FLAG_BOOL, &b, 0, 0, "", ""},
    };
    char *ok[] = {"x", "--name=a", "--n", "7", "--addr", ":15006", "--dir=a", "--dir", "b", "--on"};
    char *bad_int[] = {"x", "--n=11"};
    char *unknown[] = {"x", "--nope=1"};
    char *bad_addr[] = {"x", "--addr=nohost"};
    char err[200];

    CHECK_INT(wf_flags_parse(f, 5, 10, ok, 1, err, sizeof(err)), 0);
    CHECK_STR(s, "a");
    CHECK_INT(n, 7);
    CHECK_STR(addr, ":15006");
    CHECK_INT(l.n, 2);
    CHECK_INT(b, 1);
    CHECK_INT(wf_flags_parse(f, 5, 2, bad_int, 1, err, sizeof(err)), -1);
    CHECK_STR(err, "flag --n: \"11\" is not a whole number from 1 to 10");
    CHECK_INT(wf_flags_parse(f, 5, 2, unknown, 1, err, sizeof(err)), -1);
    CHECK_STR(err, "unknown flag --nope (see weft --help)");
    CHECK_INT(wf_flags_parse(f, 5, 2, bad_addr, 1, err, sizeof(err)), -1);
    CHECK_STR(err, "flag --addr: \"nohost\" is not an address (HOST:PORT or :PORT)");
}

TEST(jpack_round_trip)
{
    json_t *v = json_pack("{s:[i, s, n, b], s:{s:f}}", "a", 1, "x\"y\u00e9", 1, "o", "k", 2.5);
    json_t *p = wf_jpack(v), *back = wf_junpack(p), *num = json_integer(7), *pn, *bn;

    /* packed: a string, and back the same tree */
    CHECK(json_is_string(p));
    CHECK(json_equal(v, back));
    /* any value, not only objects and arrays */
    pn = wf_jpack(num);
    bn = wf_junpack(pn);
    CHECK(json_equal(num, bn));
    /* NULL and what is not packed text */
    CHECK(wf_jpack(NULL) == NULL);
    CHECK(wf_junpack(NULL) == NULL);
    CHECK(wf_junpack(num) == NULL);
    json_decref(v);
    json_decref(p);
    json_decref(back);
    json_decref(num);
    json_decref(pn);
    json_decref(bn);
}

TEST(jpack_shrinks_repetitive_config)
{
    /* A thousand clusters alike but for their names: packed several
     * times smaller than their text, and unpacked the same. */
    json_t *arr = json_array(), *p, *back;
    char *text;

    for (int i = 0; i < 1000; i++) {
        char name[64];
        snprintf(name, sizeof(name), "outbound|80||svc%d.default.svc.cluster.local", i);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:{s:s}, s:s, s:s}", "name", name, "type",
                                             "EDS", "eds_cluster_config", "service_name", name,
                                             "lb_policy", "ROUND_ROBIN", "connect_timeout", "10s"));
    }
    text = json_dumps(arr, JSON_COMPACT);
    p = wf_jpack(arr);
    back = wf_junpack(p);
    CHECK(json_equal(arr, back));
    CHECK(json_string_length(p) * 5 < strlen(text));
    free(text);
    json_decref(arr);
    json_decref(p);
    json_decref(back);
}

/* LZ round trip of n bytes; returns the packed length. */
static size_t lz_round(const uint8_t *in, size_t n)
{
    uint8_t *z = malloc(wf_lz_bound(n)), *out = malloc(n + 1);
    size_t zn = wf_lz_pack(in, n, z);

    CHECK(zn > 0 && zn <= wf_lz_bound(n));
    CHECK_INT(wf_lz_size(z, zn), n);
    CHECK_INT(wf_lz_unpack(z, zn, out, n), 0);
    CHECK(memcmp(in, out, n) == 0);
    free(z);
    free(out);
    return zn;
}

TEST(lz_round_trips_and_refuses_garbage)
{
    uint8_t buf[70000], z[100], out[64];
    uint32_t x = 12345;
    size_t zn;

    /* empty, short, a run (matches overlapping themselves), noise */
    lz_round((const uint8_t *)"", 0);
    lz_round((const uint8_t *)"abc", 3);
    memset(buf, 'a', sizeof(buf));
    CHECK(lz_round(buf, sizeof(buf)) < 40);
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245 + 12345;
        buf[i] = (uint8_t)(x >> 16);
    }
    CHECK(lz_round(buf, sizeof(buf)) <= wf_lz_bound(sizeof(buf)));
    /* noise with repeats at every distance a varint spans */
    memcpy(buf + 60000, buf + 10, 5000);
    memcpy(buf + 200, buf + 100, 90);
    lz_round(buf, sizeof(buf));

    /* malformed: truncated, wrong length, a distance before the start */
    zn = wf_lz_pack((const uint8_t *)"hello hello hello hello", 23, z);
    CHECK_INT(wf_lz_unpack(z, zn - 1, out, 23), -1);
    CHECK_INT(wf_lz_unpack(z, zn, out, 22), -1);
    const uint8_t bad_dist[] = {8, 1, 'x', 2, 5, 0};
    CHECK_INT(wf_lz_unpack(bad_dist, sizeof(bad_dist), out, 8), -1);
    const uint8_t too_long[] = {2, 9, 'a', 'b'};
    CHECK_INT(wf_lz_unpack(too_long, sizeof(too_long), out, 2), -1);
    CHECK_INT(wf_lz_size((const uint8_t *)"\xff", 1), (size_t)-1);
}

TEST(ctree_reads_like_the_json)
{
    json_t *j = json_loads("{\"name\":\"r1\",\"n\":-7,\"w\":2.5,\"on\":true,\"off\":false,"
                           "\"none\":null,\"list\":[\"r1\",{\"prefix\":\"/\"},[]],\"z\":{}}",
                           0, NULL);
    wf_value *t = wf_ctree_new(j), *empty = wf_ctree_new(NULL);
    const wf_value *list, *v;
    size_t len;

    CHECK(t != NULL);
    CHECK_INT(wf_ctree_type(t), WF_VALUE_MAP);
    CHECK_INT(wf_ctree_len(t), 8);
    /* keys in the order written, values by index or key */
    CHECK_STR(wf_ctree_key_at(t, 0), "name");
    CHECK_STR(wf_ctree_key_at(t, 7), "z");
    CHECK(wf_ctree_key_at(t, 8) == NULL);
    CHECK_STR(wf_ctree_string(wf_ctree_at(t, 0), &len), "r1");
    CHECK_INT(len, 2);
    CHECK_INT(wf_ctree_int(wf_ctree_get(t, "n")), -7);
    CHECK(wf_ctree_double(wf_ctree_get(t, "n")) == -7.0);
    CHECK(wf_ctree_double(wf_ctree_get(t, "w")) == 2.5);
    CHECK_INT(wf_ctree_int(wf_ctree_get(t, "w")), 2);
    CHECK_INT(wf_ctree_bool(wf_ctree_get(t, "on")), 1);
    CHECK_INT(wf_ctree_bool(wf_ctree_get(t, "off")), 0);
    CHECK_INT(wf_ctree_type(wf_ctree_get(t, "off")), WF_VALUE_BOOL);
    CHECK_INT(wf_ctree_type(wf_ctree_get(t, "none")), WF_VALUE_NULL);
    CHECK(wf_ctree_get(t, "missing") == NULL);
    CHECK(wf_ctree_get(t, "nam") == NULL);
    list = wf_ctree_get(t, "list");
    CHECK_INT(wf_ctree_type(list), WF_VALUE_LIST);
    CHECK_INT(wf_ctree_len(list), 3);
    /* one copy of each distinct string */
    CHECK(wf_ctree_string(wf_ctree_at(list, 0), NULL) == wf_ctree_string(wf_ctree_get(t, "name"), NULL));
    v = wf_ctree_get(wf_ctree_at(list, 1), "prefix");
    CHECK_STR(wf_ctree_string(v, NULL), "/");
    CHECK_INT(wf_ctree_len(wf_ctree_at(list, 2)), 0);
    CHECK(wf_ctree_at(list, 3) == NULL);
    /* nodes are stable: the same one each time */
    CHECK(wf_ctree_at(list, 1) == wf_ctree_at(wf_ctree_get(t, "list"), 1));
    /* what is not of a kind reads as nothing */
    CHECK(wf_ctree_string(list, NULL) == NULL);
    CHECK_INT(wf_ctree_int(list), 0);
    CHECK_INT(wf_ctree_len(v), 0);
    CHECK(wf_ctree_get(list, "x") == NULL);
    CHECK_INT(wf_ctree_type(NULL), WF_VALUE_NULL);
    /* no tree given: an empty map */
    CHECK_INT(wf_ctree_type(empty), WF_VALUE_MAP);
    CHECK_INT(wf_ctree_len(empty), 0);
    wf_ctree_free(t);
    wf_ctree_free(empty);
    json_decref(j);
}

static void *made_elsewhere;
static void other_thread(void *unused)
{
    json_t *v = json_string("from another thread");
    made_elsewhere = v;
    json_decref(v);
}

TEST(jarena_region)
{
    json_t *before = json_pack("{s:[i,i]}", "kept", 1, 2), *inside, *again, *parent;
    uv_thread_t th;

    CHECK_INT(wf_jarena_begin(), 0);
    CHECK_INT(wf_jarena_begin(), -1); /* one at a time */
    inside = json_pack("{s:s, s:[i,i,i]}", "name", "outbound|80||a.b.svc", "v", 1, 2, 3);
    CHECK(inside != NULL);
    /* JSON made before is still malloc's: attached and dropped in the
     * region, it is freed (ASan's leak check sees it otherwise). */
    parent = json_object();
    CHECK_INT(json_object_set_new(parent, "before", before), 0);
    json_decref(parent);
    /* Other threads keep using malloc. */
    CHECK_INT(uv_thread_create(&th, other_thread, NULL), 0);
    uv_thread_join(&th);
    CHECK(made_elsewhere != NULL);
    CHECK(wf_jarena_whole());
    wf_jarena_end();
    CHECK(wf_jarena_resident() > 0);
    CHECK(!wf_jarena_whole());

    /* The next region starts where the last did: its memory is reused. */
    CHECK_INT(wf_jarena_begin(), 0);
    again = json_pack("{s:s}", "name", "outbound|80||a.b.svc");
    CHECK_STR(json_string_value(json_object_get(again, "name")), "outbound|80||a.b.svc");
    CHECK(again == inside);
    wf_jarena_end();
    wf_jarena_release();
    CHECK_INT(wf_jarena_resident(), 0);

    /* Paused, the opener's JSON comes from malloc and outlives the region
     * (under ASan, reading it after the end would be reported otherwise). */
    CHECK_INT(wf_jarena_begin(), 0);
    wf_jarena_pause();
    json_t *kept = json_pack("{s:s}", "k", "kept past the region");
    wf_jarena_resume();
    CHECK(json_string("temporary") != NULL); /* the region's: never freed one by one */
    CHECK(wf_jarena_whole());
    wf_jarena_end();
    CHECK_STR(json_string_value(json_object_get(kept, "k")), "kept past the region");
    json_decref(kept);
    /* Outside a region, JSON is malloc's again. */
    json_t *after = json_string("after");
    CHECK(after != inside);
    json_decref(after);
}

TEST(addr_split)
{
    char h[64];
    int p;

    CHECK_INT(wf_addr_split(":15006", h, sizeof(h), &p), 0);
    CHECK_STR(h, "0.0.0.0");
    CHECK_INT(p, 15006);
    CHECK_INT(wf_addr_split("localhost:80", h, sizeof(h), &p), 0);
    CHECK_STR(h, "127.0.0.1");
    CHECK_INT(wf_addr_split("1.2.3.4:99999", h, sizeof(h), &p), -1);
}

int main(void)
{
    RUN(arena_aligns_and_grows);
    RUN(arena_refuses_past_limit);
    RUN(arena_grow_in_place_keeps_bytes);
    RUN(map_string_and_pointer_keys);
    RUN(flags_parse_forms_and_errors);
    RUN(addr_split);
    RUN(jpack_round_trip);
    RUN(jarena_region);
    RUN(ctree_reads_like_the_json);
    RUN(jpack_shrinks_repetitive_config);
    RUN(lz_round_trips_and_refuses_garbage);
    return TEST_SUMMARY();
}
