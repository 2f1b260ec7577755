/*
 * yamltree.c: libyaml events -> wf_yn trees (see yamltree.h).
 *
 * The tree is built with an explicit stack, never by recursion, so a
 * deeply nested input cannot overflow the C stack; nesting is still capped
 * because the typed parser and the free walk do recurse.
 */
#include "config/yamltree.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

/* Limits that keep hostile input bounded. */
#define WF_YAML_MAX_DEPTH 128
#define WF_YAML_MAX_NODES 2000000 /* per file, alias copies included */

typedef struct anchor {
    char *name;
    wf_yn *node;
} anchor;

typedef struct builder {
    wf_yn *stack[WF_YAML_MAX_DEPTH + 1];
    int depth;
    anchor *anchors;
    size_t n_anchors, cap_anchors;
    size_t nodes;
    wf_yn *root;
    wf_arena *a; /* the documents' (every node, list and string is there) */
} builder;

static void *zalloc(builder *b, size_t n)
{
    void *p = wf_arena_alloc(b->a, n);

    if (p)
        memset(p, 0, n);
    return p;
}

static wf_yn *new_node(builder *b, wf_yn_type t, const yaml_mark_t *m)
{
    wf_yn *n;

    if (b->nodes >= WF_YAML_MAX_NODES)
        return NULL;
    n = zalloc(b, sizeof(*n));
    if (!n)
        return NULL;
    b->nodes++;
    n->type = t;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    return n;
}

static int add_kid(builder *b, wf_yn *p, wf_yn *k)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 8;
        wf_yn **v = p->kids ? wf_arena_grow(b->a, p->kids, p->cap * sizeof(*v), nc * sizeof(*v))
                            : wf_arena_alloc(b->a, nc * sizeof(*v));
        if (!v)
            return -1;
        p->kids = v;
        p->cap = nc;
    }
    p->kids[p->n++] = k;
    return 0;
}

static wf_yn *copy_node(builder *b, const wf_yn *src, int depth)
{
    wf_yn *n;

    if (depth > WF_YAML_MAX_DEPTH || b->nodes >= WF_YAML_MAX_NODES)
        return NULL;
    n = zalloc(b, sizeof(*n));
    if (!n)
        return NULL;
    b->nodes++;
    *n = *src;
    n->kids = NULL;
    n->n = n->cap = 0;
    n->s = NULL;
    if (src->s && !(n->s = wf_arena_strndup(b->a, src->s, src->len)))
        return NULL;
    for (size_t i = 0; i < src->n; i++) {
        wf_yn *k = copy_node(b, src->kids[i], depth + 1);
        if (!k || add_kid(b, n, k) < 0)
            return NULL;
    }
    return n;
}

static int ieq(const char *a, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(a, *list) == 0)
            return 1;
    return 0;
}

static int all_digits(const char *s, const char *set)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!strchr(set, *s))
            return 0;
    return 1;
}

/* The YAML 1.2 core schema, for plain scalars only. */
static wf_yv resolve_plain(const char *s, size_t len)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const bools[] = {"true", "True", "TRUE", "false", "False", "FALSE", NULL};
    static const char *const specials[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                           "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                           ".NaN",  ".NAN",  NULL};
    const char *p = s;

    if (strlen(s) != len)
        return WF_YV_STR;
    if (ieq(s, nulls))
        return WF_YV_NULL;
    if (ieq(s, bools))
        return WF_YV_BOOL;
    if (ieq(s, specials))
        return WF_YV_FLOAT;
    if (strncmp(s, "0x", 2) == 0 && all_digits(s + 2, "0123456789abcdefABCDEF"))
        return WF_YV_INT;
    if (strncmp(s, "0o", 2) == 0 && all_digits(s + 2, "01234567"))
        return WF_YV_INT;
    if (*p == '-' || *p == '+')
        p++;
    if (all_digits(p, "0123456789"))
        return WF_YV_INT;
    /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    {
        const char *q = p;
        int digits = 0;
        while (*q >= '0' && *q <= '9')
            q++, digits++;
        if (*q == '.') {
            q++;
            while (*q >= '0' && *q <= '9')
                q++, digits++;
        }
        if (!digits)
            return WF_YV_STR;
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '-' || *q == '+')
                q++;
            if (!(*q >= '0' && *q <= '9'))
                return WF_YV_STR;
            while (*q >= '0' && *q <= '9')
                q++;
        }
        if (*q == '\0')
            return WF_YV_FLOAT;
    }
    return WF_YV_STR;
}

static int remember_anchor(builder *b, const yaml_char_t *name, wf_yn *n)
{
    if (!name)
        return 0;
    /* A later anchor of the same name shadows the earlier one. */
    if (b->n_anchors == b->cap_anchors) {
        size_t nc = b->cap_anchors ? b->cap_anchors * 2 : 8;
        anchor *v = realloc(b->anchors, nc * sizeof(*v));
        if (!v)
            return -1;
        b->anchors = v;
        b->cap_anchors = nc;
    }
    b->anchors[b->n_anchors].name = strdup((const char *)name);
    if (!b->anchors[b->n_anchors].name)
        return -1;
    b->anchors[b->n_anchors++].node = n;
    return 0;
}

static void reset_builder(builder *b)
{
    for (size_t i = 0; i < b->n_anchors; i++)
        free(b->anchors[i].name);
    b->n_anchors = 0;
    /* A document left unfinished stays in the arena until the documents
     * are freed. */
    b->root = NULL;
    b->depth = 0;
}

/* Attaches a finished node to the open container, or makes it the root. */
static int attach(builder *b, wf_yn *n)
{
    if (b->depth == 0) {
        if (b->root)
            return -1;
        b->root = n;
        return 0;
    }
    return add_kid(b, b->stack[b->depth - 1], n);
}

static void set_err(char *err, size_t errlen, int *line, int *col, int l, int c, const char *fmt,
                    const char *a)
{
    snprintf(err, errlen, fmt, a);
    *line = l;
    *col = c;
}

int wf__yaml_parse(const char *buf, size_t len, wf_ydocs *out, char *err, size_t errlen, int *line,
                   int *col)
{
    yaml_parser_t p;
    yaml_event_t ev;
    builder b;
    int rc = -1, done = 0, doc_line = 1, doc_col = 1;

    memset(&b, 0, sizeof(b));
    if (!out->arena.limit)
        wf_arena_init(&out->arena, SIZE_MAX / 2);
    b.a = &out->arena;
    if (!yaml_parser_initialize(&p)) {
        set_err(err, errlen, line, col, 0, 0, "%s", "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            char ctx[160] = "";
            if (p.context)
                snprintf(ctx, sizeof(ctx), " (%s at line %d column %d)", p.context,
                         (int)p.context_mark.line + 1, (int)p.context_mark.column + 1);
            snprintf(err, errlen, "invalid YAML: %s%s", p.problem ? p.problem : "syntax error",
                     ctx);
            *line = (int)p.problem_mark.line + 1;
            *col = (int)p.problem_mark.column + 1;
            goto out;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            reset_builder(&b);
            doc_line = (int)ev.start_mark.line + 1;
            doc_col = (int)ev.start_mark.column + 1;
            break;
        case YAML_DOCUMENT_END_EVENT:
            if (b.root && !(b.root->type == WF_YN_SCALAR && b.root->vtype == WF_YV_NULL)) {
                if (out->n == out->cap) {
                    size_t nc = out->cap ? out->cap * 2 : 8;
                    wf_ydoc *v = realloc(out->v, nc * sizeof(*v));
                    if (!v) {
                        yaml_event_delete(&ev);
                        set_err(err, errlen, line, col, doc_line, doc_col, "%s", "out of memory");
                        goto out;
                    }
                    out->v = v;
                    out->cap = nc;
                }
                out->v[out->n].root = b.root;
                out->v[out->n].line = b.root->line;
                out->v[out->n].col = b.root->col;
                out->n++;
                b.root = NULL;
            }
            reset_builder(&b);
            break;
        case YAML_SCALAR_EVENT: {
            wf_yn *n = new_node(&b, WF_YN_SCALAR, &ev.start_mark);
            if (!n) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, (int)ev.start_mark.line + 1,
                        (int)ev.start_mark.column + 1, "%s",
                        "document too large (more than 2000000 nodes, aliases included)");
                goto out;
            }
            n->len = ev.data.scalar.length;
            n->s = wf_arena_strndup(b.a, (const char *)ev.data.scalar.value, n->len);
            if (!n->s) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, 0, 0, "%s", "out of memory");
                goto out;
            }
            if (ev.data.scalar.tag &&
                strcmp((const char *)ev.data.scalar.tag, "tag:yaml.org,2002:str") == 0)
                n->vtype = WF_YV_STR;
            else if (ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                     !(ev.data.scalar.tag && strcmp((const char *)ev.data.scalar.tag, "!") == 0))
                n->vtype = resolve_plain(n->s, n->len);
            else
                n->vtype = WF_YV_STR;
            if (remember_anchor(&b, ev.data.scalar.anchor, n) < 0 || attach(&b, n) < 0) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, 0, 0, "%s", "out of memory");
                goto out;
            }
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            int is_seq = ev.type == YAML_SEQUENCE_START_EVENT;
            const yaml_char_t *anc =
                is_seq ? ev.data.sequence_start.anchor : ev.data.mapping_start.anchor;
            wf_yn *n;
            if (b.depth >= WF_YAML_MAX_DEPTH) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, (int)ev.start_mark.line + 1,
                        (int)ev.start_mark.column + 1, "%s", "nesting deeper than 128 levels");
                goto out;
            }
            n = new_node(&b, is_seq ? WF_YN_SEQ : WF_YN_MAP, &ev.start_mark);
            if (!n) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, (int)ev.start_mark.line + 1,
                        (int)ev.start_mark.column + 1, "%s",
                        "document too large (more than 2000000 nodes, aliases included)");
                goto out;
            }
            /* Attach first so the node is owned by the tree from now on. */
            if (attach(&b, n) < 0) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, 0, 0, "%s", "out of memory");
                goto out;
            }
            if (remember_anchor(&b, anc, n) < 0) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, 0, 0, "%s", "out of memory");
                goto out;
            }
            b.stack[b.depth++] = n;
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (b.depth > 0)
                b.depth--;
            break;
        case YAML_ALIAS_EVENT: {
            const char *name = (const char *)ev.data.alias.anchor;
            wf_yn *src = NULL, *n;
            for (size_t i = b.n_anchors; i > 0; i--)
                if (strcmp(b.anchors[i - 1].name, name) == 0) {
                    src = b.anchors[i - 1].node;
                    break;
                }
            if (!src) {
                set_err(err, errlen, line, col, (int)ev.start_mark.line + 1,
                        (int)ev.start_mark.column + 1, "invalid YAML: unknown alias \"*%.64s\"",
                        name);
                yaml_event_delete(&ev);
                goto out;
            }
            n = copy_node(&b, src, b.depth);
            if (!n) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, (int)ev.start_mark.line + 1,
                        (int)ev.start_mark.column + 1, "%s",
                        "document too large (more than 2000000 nodes, aliases included)");
                goto out;
            }
            n->line = (int)ev.start_mark.line + 1;
            n->col = (int)ev.start_mark.column + 1;
            if (attach(&b, n) < 0) {
                yaml_event_delete(&ev);
                set_err(err, errlen, line, col, 0, 0, "%s", "out of memory");
                goto out;
            }
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    rc = 0;
out:
    reset_builder(&b);
    free(b.anchors);
    yaml_parser_delete(&p);
    return rc;
}

void wf__yaml_free_docs(wf_ydocs *d)
{
    wf_arena_reset(&d->arena);
    /* Config is loaded now and then: its blocks are not kept for reuse. */
    wf_arena_thread_release();
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

const wf_yn *wf__yn_get(const wf_yn *m, const char *key)
{
    if (!m || m->type != WF_YN_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const wf_yn *k = m->kids[i];
        if (k->type == WF_YN_SCALAR && k->len == strlen(key) && strcmp(k->s, key) == 0)
            return m->kids[i + 1];
    }
    return NULL;
}

const char *wf__yn_kind(const wf_yn *n)
{
    if (!n)
        return "nothing";
    if (n->type == WF_YN_MAP)
        return "a map";
    if (n->type == WF_YN_SEQ)
        return "a list";
    switch (n->vtype) {
    case WF_YV_NULL:
        return "null";
    case WF_YV_BOOL:
        return "a boolean";
    case WF_YV_INT:
        return "an integer";
    case WF_YV_FLOAT:
        return "a number";
    default:
        return "a string";
    }
}

int wf__yn_is_null(const wf_yn *n)
{
    return !n || (n->type == WF_YN_SCALAR && n->vtype == WF_YV_NULL);
}
