/* util_test.c: the stream arena, hash maps and flag parsing (core/util). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "test.h"
#include "util/arena.h"
#include "util/flags.h"
#include "util/jarena.h"
#include "util/jpack.h"
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

    /* packed: a string holding the compact text, and back the same tree */
    CHECK(json_is_string(p));
    CHECK_STR(json_string_value(p), "{\"a\":[1,\"x\\\"y\u00e9\",null,true],\"o\":{\"k\":2.5}}");
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
    return TEST_SUMMARY();
}
