/*
 * load.c: wf_config_load: files and directories -> documents -> typed
 * resources (config/kinds.c) -> checks across resources (duplicates,
 * delegates, subsets) -> one wf_config, or nothing and every problem.
 */
#include "config/config.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/kinds.h"

#define WF_CONFIG_MAX_FILE (64u << 20) /* bytes; a config file is never this big */

typedef struct loader {
    wf_config *cfg;
    wf_diags *d;
    int errors;
    int incomplete; /* a file could not be read or parsed: skip cross checks */
} loader;

static void lerr(loader *ld, const char *file, int line, int col, const char *res,
                 const char *field, const char *msg)
{
    ld->errors++;
    wf__report(ld->d, file, line, col, res, field, "%s", msg);
}

static const char *intern_file(wf_config *cfg, const char *path)
{
    char **v = realloc(cfg->files, (cfg->n_files + 1) * sizeof(*v));

    if (!v)
        return NULL;
    cfg->files = v;
    v[cfg->n_files] = strdup(path);
    if (!v[cfg->n_files])
        return NULL;
    return v[cfg->n_files++];
}

static int read_file(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    size_t n = 0, cap = 0;

    if (!f) {
        snprintf(err, errlen, "cannot read file: %s", strerror(errno));
        return -1;
    }
    for (;;) {
        size_t r;
        if (cap - n < 65536) {
            char *nb;
            cap = cap ? cap * 2 : 65536;
            if (cap > WF_CONFIG_MAX_FILE + 65536u) {
                snprintf(err, errlen, "file is larger than %u MiB", WF_CONFIG_MAX_FILE >> 20);
                goto fail;
            }
            nb = realloc(b, cap + 1);
            if (!nb) {
                snprintf(err, errlen, "out of memory reading the file");
                goto fail;
            }
            b = nb;
        }
        r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                snprintf(err, errlen, "cannot read file: %s", strerror(errno));
                goto fail;
            }
            break;
        }
    }
    fclose(f);
    if (!b && !(b = malloc(1))) {
        snprintf(err, errlen, "out of memory reading the file");
        return -1;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
fail:
    fclose(f);
    free(b);
    return -1;
}

/* Kubernetes object names: lower-case DNS-1123 subdomains (names) or
 * labels (namespaces).  Enforcing them keeps "Kind/ns/name" unambiguous. */
static int dns1123(const char *s, int allow_dots, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ch != '-' && !(allow_dots && ch == '.'))
            return 0;
        if (!alnum && (i == 0 || i == n - 1))
            return 0;
    }
    return 1;
}

static const char *scalar_str(const wf_yn *n)
{
    if (n && n->type == WF_YN_SCALAR && n->vtype == WF_YV_STR && strlen(n->s) == n->len)
        return n->s;
    return NULL;
}

static void *kind_array(wf_config *cfg, const wf__kind *k, size_t **count)
{
    *count = (size_t *)((char *)cfg + k->cnt_off);
    return (char *)cfg + k->arr_off;
}

static void free_resource(const wf__kind *k, void *obj)
{
    wf__free_msg(k->spec, (char *)obj + k->spec_off);
    wf__free_msg(&wf__meta_msg, obj);
}

static void parse_document(loader *ld, const char *file, const wf_yn *root)
{
    static const char *const top[] = {"apiVersion", "kind", "metadata", "spec", "status"};
    wf__pctx c;
    const wf_yn *api, *kindn, *meta, *spec, *namen;
    const char *kname, *name = NULL, *ns = "default", *apis;
    const wf__kind *k = NULL;
    void *obj;
    wf_meta *m;

    memset(&c, 0, sizeof(c));
    c.d = ld->d;
    c.file = file;
    c.doc = root;
    strcpy(c.res, "-");
    if (root->type != WF_YN_MAP) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "expected a resource (a map with apiVersion, kind, metadata and spec), got %s",
                 wf__yn_kind(root));
        lerr(ld, file, root->line, root->col, "-", "-", msg);
        return;
    }
    wf__check_dup_keys(&c, root);
    api = wf__yn_get(root, "apiVersion");
    kindn = wf__yn_get(root, "kind");
    meta = wf__yn_get(root, "metadata");
    spec = wf__yn_get(root, "spec");
    namen = wf__yn_get(meta, "name");
    if (scalar_str(namen))
        name = namen->s;
    if (scalar_str(wf__yn_get(meta, "namespace")))
        ns = wf__yn_get(meta, "namespace")->s;

    kname = scalar_str(kindn);
    if (kname)
        for (size_t i = 0; i < wf__n_kinds; i++)
            if (strcmp(wf__kinds[i].kind, kname) == 0)
                k = &wf__kinds[i];
    if (k)
        snprintf(c.res, sizeof(c.res), "%s/%.100s/%.150s", k->kind, ns,
                 name               ? name
                 : k->name_optional ? "default"
                                    : "-");

    for (size_t i = 0; i < wf__yn_pairs(root); i++) {
        const wf_yn *key = root->kids[2 * i];
        size_t j;
        if (key->type != WF_YN_SCALAR || strlen(key->s) != key->len) {
            wf__err(&c, key, "map keys must be strings, got %s", wf__yn_kind(key));
            continue;
        }
        for (j = 0; j < 5; j++)
            if (strcmp(key->s, top[j]) == 0)
                break;
        if (j == 5) {
            size_t mark = wf__path_key(&c, key->s);
            wf__unknown_field(&c, key, top, 4);
            wf__path_pop(&c, mark);
        }
    }

    if (wf__yn_is_null(kindn)) {
        wf__err_field(&c, root, "kind", "required field is missing");
        goto out;
    }
    if (!kname) {
        wf__err_field(&c, kindn, "kind", "expected a string, got %s", wf__yn_kind(kindn));
        goto out;
    }
    if (!k) {
        wf__err_field(&c, kindn, "kind",
                      "unknown kind \"%.64s\"; known kinds: VirtualService, DestinationRule, "
                      "ServiceEntry, WorkloadEntry, Gateway, PeerAuthentication, "
                      "AuthorizationPolicy, RequestAuthentication, MeshConfig, FilterPlugin",
                      kname);
        goto out;
    }

    apis = scalar_str(api);
    if (wf__yn_is_null(api)) {
        wf__err_field(&c, root, "apiVersion", "required field is missing (%s/%s for %s)", k->group,
                      k->versions[0], k->kind);
    } else if (!apis) {
        wf__err_field(&c, api, "apiVersion", "expected a string, got %s", wf__yn_kind(api));
    } else {
        const char *slash = strchr(apis, '/');
        int ok = 0;
        if (slash && (size_t)(slash - apis) == strlen(k->group) &&
            strncmp(apis, k->group, strlen(k->group)) == 0)
            for (const char *const *v = k->versions; *v; v++)
                if (strcmp(slash + 1, *v) == 0)
                    ok = 1;
        if (!ok) {
            char vers[128] = "";
            size_t l = 0;
            for (const char *const *v = k->versions; *v; v++) {
                int w =
                    snprintf(vers + l, sizeof(vers) - l, "%s%s/%s", l ? ", " : "", k->group, *v);
                if (w > 0 && (size_t)w < sizeof(vers) - l)
                    l += (size_t)w;
            }
            wf__err_field(&c, api, "apiVersion",
                          "unknown apiVersion \"%.64s\" for kind %s; use one of: %s", apis, k->kind,
                          vers);
        }
    }

    obj = calloc(1, k->elem_size);
    if (!obj) {
        wf__err(&c, root, "out of memory");
        goto out;
    }
    m = obj;
    wf__init_msg(&wf__meta_msg, m);
    wf__init_msg(k->spec, (char *)obj + k->spec_off);
    if (!wf__yn_is_null(meta)) {
        size_t mark = wf__path_key(&c, "metadata");
        wf__parse_msg(&c, meta, &wf__meta_msg, m);
        wf__path_pop(&c, mark);
    }
    if (!m->name && !k->name_optional && (!namen || wf__yn_is_null(namen)))
        wf__err_field(&c, meta && meta->type == WF_YN_MAP ? meta : root, "metadata.name",
                      "required field is missing");
    if (m->name && !dns1123(m->name, 1, 253))
        wf__err_field(&c, namen, "metadata.name",
                      "invalid name \"%.100s\": use lower-case letters, digits, '-' and '.', "
                      "starting and ending with a letter or digit",
                      m->name);
    if (m->namespace_ && !dns1123(m->namespace_, 0, 63))
        wf__err_field(&c, wf__yn_get(meta, "namespace"), "metadata.namespace",
                      "invalid namespace \"%.100s\": use lower-case letters, digits and '-', "
                      "starting and ending with a letter or digit",
                      m->namespace_);
    if (!m->namespace_)
        m->namespace_ = strdup("default");
    if (!m->name && k->name_optional)
        m->name = strdup("default");
    /* A missing required name was reported above; the resource is kept
     * (name NULL) so that its spec is still checked. */
    if (!m->namespace_ || (k->name_optional && !m->name)) {
        free_resource(k, obj);
        free(obj);
        wf__err(&c, root, "out of memory");
        goto out;
    }
    m->pos = wf__pos(&c, root);
    if (!m->name_pos.line)
        m->name_pos = m->pos;
    m->spec_pos = wf__pos(&c, spec && !wf__yn_is_null(spec) ? spec : root);
    if (apis)
        m->api_version = strdup(apis);
    c.ns = m->namespace_;
    {
        size_t mark = wf__path_key(&c, "spec");
        if (spec && !wf__yn_is_null(spec))
            wf__parse_msg(&c, spec, k->spec, (char *)obj + k->spec_off);
        else
            wf__parse_msg(&c, NULL, k->spec, (char *)obj + k->spec_off);
        wf__path_pop(&c, mark);
    }

    if (WF__KIND_IS_MESH(k)) {
        wf_mesh_config *mc = obj;
        if (ld->cfg->mesh.present) {
            const wf_pos *f = &ld->cfg->mesh.meta.pos;
            wf__err_field(&c, namen ? namen : root, "metadata.name",
                          "duplicate MeshConfig: only one is allowed (the first is at %s:%d:%d)",
                          f->file, f->line, f->col);
            free_resource(k, obj);
        } else {
            mc->present = 1;
            ld->cfg->mesh = *mc;
            ld->cfg->n_resources++;
        }
        free(obj);
    } else {
        size_t *cnt;
        char **arr = kind_array(ld->cfg, k, &cnt);
        char *nv = realloc(*arr, (*cnt + 1) * k->elem_size);
        if (!nv) {
            free_resource(k, obj);
            free(obj);
            wf__err(&c, root, "out of memory");
            goto out;
        }
        memcpy(nv + *cnt * k->elem_size, obj, k->elem_size);
        *arr = nv;
        (*cnt)++;
        ld->cfg->n_resources++;
        free(obj);
    }
out:
    ld->errors += c.errors;
}

static void load_buf(loader *ld, const char *file, const char *buf, size_t len)
{
    char err[512];
    wf_ydocs docs = {0};
    int line = 0, col = 0;

    if (wf__yaml_parse(buf, len, &docs, err, sizeof(err), &line, &col) < 0) {
        lerr(ld, file, line, col, "-", "-", err);
        ld->incomplete = 1;
    }
    for (size_t i = 0; i < docs.n; i++)
        parse_document(ld, file, docs.v[i].root);
    wf__yaml_free_docs(&docs);
}

static void load_file(loader *ld, const char *path)
{
    const char *file = intern_file(ld->cfg, path);
    char err[512], *buf = NULL;
    size_t len = 0;

    if (!file) {
        lerr(ld, path, 0, 0, "-", "-", "out of memory");
        ld->incomplete = 1;
        return;
    }
    if (read_file(path, &buf, &len, err, sizeof(err)) < 0) {
        lerr(ld, file, 0, 0, "-", "-", err);
        ld->incomplete = 1;
        return;
    }
    load_buf(ld, file, buf, len);
    free(buf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void load_dir(loader *ld, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;

    if (!d) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot read directory: %s", strerror(errno));
        lerr(ld, dir, 0, 0, "-", "-", msg);
        ld->incomplete = 1;
        return;
    }
    while ((e = readdir(d))) {
        char **v;
        /* Hidden entries are skipped: Kubernetes ConfigMap mounts keep
         * their real files under "..data" and friends. */
        if (e->d_name[0] == '.')
            continue;
        if (!has_suffix(e->d_name, ".yaml") && !has_suffix(e->d_name, ".yml"))
            continue;
        v = realloc(names, (n + 1) * sizeof(*v));
        if (!v)
            break;
        names = v;
        names[n] = strdup(e->d_name);
        if (names[n])
            n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_str); /* names is NULL when n is 0 */
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(dir);
        int slash = l && dir[l - 1] == '/';
        char *p = malloc(l + strlen(names[i]) + 2);
        struct stat st;
        if (p) {
            sprintf(p, "%s%s%s", dir, slash ? "" : "/", names[i]);
            if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
                ; /* a directory named *.yaml: not recursive */
            else
                load_file(ld, p);
            free(p);
        }
        free(names[i]);
    }
    free(names);
}

/* ---- checks across resources ------------------------------------------------ */

static void xerr(loader *ld, const wf_meta *m, const char *kind, const wf_pos *p, const char *field,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void xerr(loader *ld, const wf_meta *m, const char *kind, const wf_pos *p, const char *field,
                 const char *fmt, ...)
{
    char res[384], msg[1024];
    va_list ap;

    snprintf(res, sizeof(res), "%s/%.100s/%.150s", kind, m->namespace_, m->name ? m->name : "-");
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ld->errors++;
    wf__report(ld->d, p->file, p->line, p->col, res, field, "%s", msg);
}

typedef struct meta_ref {
    const wf_meta *m;
    size_t i;
} meta_ref;

static int cmp_meta(const void *a, const void *b)
{
    const meta_ref *x = a, *y = b;
    int r = strcmp(x->m->namespace_, y->m->namespace_);

    if (!r)
        r = strcmp(x->m->name, y->m->name);
    return r ? r : (x->i < y->i ? -1 : x->i > y->i);
}

/* A sorted index of the named resources of one kind, by namespace/name. */
static meta_ref *index_kind(const wf_config *cfg, const wf__kind *k, size_t *n)
{
    size_t cnt = *(const size_t *)((const char *)cfg + k->cnt_off);
    const char *arr = *(char *const *)((const char *)cfg + k->arr_off);
    meta_ref *v = cnt ? malloc(cnt * sizeof(*v)) : NULL;

    *n = 0;
    for (size_t i = 0; v && i < cnt; i++) {
        const wf_meta *m = (const wf_meta *)(arr + i * k->elem_size);
        if (m->name && m->namespace_) {
            v[*n].m = m;
            v[*n].i = i;
            (*n)++;
        }
    }
    if (v)
        qsort(v, *n, sizeof(*v), cmp_meta);
    return v;
}

static void check_duplicates(loader *ld)
{
    for (size_t k = 0; k < wf__n_kinds; k++) {
        size_t n;
        meta_ref *v;
        if (WF__KIND_IS_MESH(&wf__kinds[k]))
            continue;
        v = index_kind(ld->cfg, &wf__kinds[k], &n);
        for (size_t i = 1; i < n; i++) {
            const wf_meta *a = v[i - 1].m, *b = v[i].m;
            if (strcmp(a->namespace_, b->namespace_) || strcmp(a->name, b->name))
                continue;
            /* Report each later copy against the first one. */
            size_t first = i - 1;
            while (first > 0 && !strcmp(v[first - 1].m->namespace_, b->namespace_) &&
                   !strcmp(v[first - 1].m->name, b->name))
                first--;
            xerr(ld, b, wf__kinds[k].kind, &b->name_pos, "metadata.name",
                 "duplicate %s %s/%s (first defined at %s:%d:%d)", wf__kinds[k].kind, b->namespace_,
                 b->name, v[first].m->name_pos.file, v[first].m->name_pos.line,
                 v[first].m->name_pos.col);
        }
        free(v);
    }
}

static const wf_virtual_service *find_vs(const meta_ref *v, size_t n, const char *ns,
                                         const char *name, size_t *idx)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = strcmp(v[mid].m->namespace_, ns);
        if (!r)
            r = strcmp(v[mid].m->name, name);
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && !strcmp(v[lo].m->namespace_, ns) && !strcmp(v[lo].m->name, name)) {
        *idx = v[lo].i;
        return (const wf_virtual_service *)v[lo].m;
    }
    return NULL;
}

static void check_delegates(loader *ld)
{
    const wf_config *cfg = ld->cfg;
    size_t n;
    meta_ref *v = index_kind(cfg, &wf__kinds[0], &n);
    char *is_delegate = cfg->n_virtual_services ? calloc(cfg->n_virtual_services, 1) : NULL;

    for (size_t i = 0; i < cfg->n_virtual_services; i++) {
        const wf_virtual_service *vs = &cfg->virtual_services[i];
        for (size_t h = 0; h < vs->n_http; h++) {
            const wf_delegate *d = vs->http[h].delegate;
            const wf_virtual_service *t;
            size_t idx = 0;
            char field[64];
            if (!d || !d->name || !d->namespace_)
                continue;
            snprintf(field, sizeof(field), "spec.http[%zu].delegate", h);
            t = v ? find_vs(v, n, d->namespace_, d->name, &idx) : NULL;
            if (!t) {
                xerr(ld, &vs->meta, "VirtualService", &d->pos, field,
                     "delegate VirtualService %s/%s is not defined", d->namespace_, d->name);
                continue;
            }
            if (is_delegate)
                is_delegate[idx] = 1;
            if (t->n_hosts)
                xerr(ld, &vs->meta, "VirtualService", &d->pos, field,
                     "VirtualService %s/%s is used as a delegate, so it must not have hosts",
                     d->namespace_, d->name);
        }
    }
    for (size_t i = 0; i < cfg->n_virtual_services; i++) {
        const wf_virtual_service *vs = &cfg->virtual_services[i];
        if (!vs->n_hosts && !vs->hosts_pos.line && !(is_delegate && is_delegate[i]))
            xerr(ld, &vs->meta, "VirtualService", &vs->meta.spec_pos, "spec.hosts",
                 "required field is missing (only a VirtualService used as a delegate may leave "
                 "out hosts)");
    }
    free(is_delegate);
    free(v);
}

/* Does DestinationRule host pattern `pat` cover service host `h`? */
static int host_covers(const char *pat, const char *h)
{
    size_t lp, lh;

    if (strcmp(pat, h) == 0 || strcmp(pat, "*") == 0)
        return 1;
    if (pat[0] != '*')
        return 0;
    lp = strlen(pat + 1);
    lh = strlen(h);
    return lh > lp && strcmp(h + lh - lp, pat + 1) == 0;
}

/* DestinationRules by host, so that each subset reference is a binary
 * search rather than a scan; wildcard hosts are kept apart and scanned. */
typedef struct dr_index {
    const wf_destination_rule **exact, **wild;
    size_t n_exact, n_wild;
} dr_index;

static int cmp_dr_host(const void *a, const void *b)
{
    const wf_destination_rule *x = *(const wf_destination_rule *const *)a;
    const wf_destination_rule *y = *(const wf_destination_rule *const *)b;

    return strcmp(x->host, y->host);
}

static void dr_index_build(const wf_config *cfg, dr_index *ix)
{
    size_t n = cfg->n_destination_rules;

    memset(ix, 0, sizeof(*ix));
    ix->exact = n ? malloc(n * sizeof(*ix->exact)) : NULL;
    ix->wild = n ? malloc(n * sizeof(*ix->wild)) : NULL;
    if (n && (!ix->exact || !ix->wild))
        return;
    for (size_t i = 0; i < n; i++) {
        const wf_destination_rule *dr = &cfg->destination_rules[i];
        if (!dr->host)
            continue;
        if (dr->host[0] == '*')
            ix->wild[ix->n_wild++] = dr;
        else
            ix->exact[ix->n_exact++] = dr;
    }
    if (ix->n_exact)
        qsort(ix->exact, ix->n_exact, sizeof(*ix->exact), cmp_dr_host);
}

static int dr_has_subset(const wf_destination_rule *dr, const char *subset)
{
    for (size_t j = 0; j < dr->n_subsets; j++)
        if (dr->subsets[j].name && strcmp(dr->subsets[j].name, subset) == 0)
            return 1;
    return 0;
}

static int subset_defined(const dr_index *ix, const char *host, const char *subset)
{
    size_t lo = 0, hi = ix->n_exact;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(ix->exact[mid]->host, host) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < ix->n_exact && strcmp(ix->exact[lo]->host, host) == 0; lo++)
        if (dr_has_subset(ix->exact[lo], subset))
            return 1;
    for (size_t i = 0; i < ix->n_wild; i++)
        if (host_covers(ix->wild[i]->host, host) && dr_has_subset(ix->wild[i], subset))
            return 1;
    return 0;
}

static void check_dest(loader *ld, const dr_index *ix, const wf_virtual_service *vs,
                       const wf_destination *d, const char *field)
{
    if (!d->host || !d->subset || !*d->subset)
        return;
    if (!subset_defined(ix, d->host, d->subset))
        xerr(ld, &vs->meta, "VirtualService", &d->subset_pos, field,
             "subset \"%.64s\" is not defined by any DestinationRule for host %s", d->subset,
             d->host);
}

static void check_subsets(loader *ld)
{
    const wf_config *cfg = ld->cfg;
    char f[160];
    dr_index ix;

    dr_index_build(cfg, &ix);
    for (size_t i = 0; i < cfg->n_virtual_services; i++) {
        const wf_virtual_service *vs = &cfg->virtual_services[i];
        for (size_t h = 0; h < vs->n_http; h++) {
            const wf_http_route *r = &vs->http[h];
            for (size_t j = 0; j < r->n_route; j++) {
                snprintf(f, sizeof(f), "spec.http[%zu].route[%zu].destination.subset", h, j);
                check_dest(ld, &ix, vs, &r->route[j].destination, f);
            }
            if (r->mirror) {
                snprintf(f, sizeof(f), "spec.http[%zu].mirror.subset", h);
                check_dest(ld, &ix, vs, r->mirror, f);
            }
            for (size_t j = 0; j < r->n_mirrors; j++) {
                snprintf(f, sizeof(f), "spec.http[%zu].mirrors[%zu].destination.subset", h, j);
                check_dest(ld, &ix, vs, &r->mirrors[j].destination, f);
            }
        }
        for (size_t t = 0; t < vs->n_tls; t++)
            for (size_t j = 0; j < vs->tls[t].n_route; j++) {
                snprintf(f, sizeof(f), "spec.tls[%zu].route[%zu].destination.subset", t, j);
                check_dest(ld, &ix, vs, &vs->tls[t].route[j].destination, f);
            }
        for (size_t t = 0; t < vs->n_tcp; t++)
            for (size_t j = 0; j < vs->tcp[t].n_route; j++) {
                snprintf(f, sizeof(f), "spec.tcp[%zu].route[%zu].destination.subset", t, j);
                check_dest(ld, &ix, vs, &vs->tcp[t].route[j].destination, f);
            }
    }
    free(ix.exact);
    free(ix.wild);
}

static int fill_mesh_defaults(wf_mesh_config *mc)
{
    static const char *const dflt_chain[] = {"router"};

    if (!mc->present) {
        memset(mc, 0, sizeof(*mc));
        wf__init_msg(&wf__meta_msg, &mc->meta);
        for (size_t i = 0; i < wf__n_kinds; i++)
            if (WF__KIND_IS_MESH(&wf__kinds[i]))
                wf__init_msg(wf__kinds[i].spec, mc);
        mc->meta.name = strdup("");
        mc->meta.namespace_ = strdup("");
    }
    if (!mc->trust_domain)
        mc->trust_domain = strdup("cluster.local");
    if (!mc->root_namespace)
        mc->root_namespace = strdup("istio-system");
    if (!mc->access_log_file)
        mc->access_log_file = strdup("");
    if (!mc->filter_chain && !mc->filter_chain_pos.line) {
        mc->filter_chain = calloc(1, sizeof(char *));
        if (mc->filter_chain) {
            mc->filter_chain[0] = strdup(dflt_chain[0]);
            mc->n_filter_chain = mc->filter_chain[0] ? 1 : 0;
        }
    }
    return mc->trust_domain && mc->root_namespace && mc->access_log_file && mc->filter_chain &&
                   mc->meta.name && mc->meta.namespace_
               ? 0
               : -1;
}

/* ---- ordering of diagnostics ---------------------------------------------- */

typedef struct dkey {
    size_t file, i;
    int line, col;
} dkey;

static int cmp_dkey(const void *a, const void *b)
{
    const dkey *x = a, *y = b;

    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Sorts the diagnostics this load added by file (in load order), line and
 * column, so an operator reads them top to bottom. */
static void sort_diags(wf_diags *d, size_t from, const wf_config *cfg)
{
    size_t n = d->n - from;
    dkey *k;
    wf_diag *tmp;

    if (n < 2)
        return;
    k = malloc(n * sizeof(*k));
    tmp = malloc(n * sizeof(*tmp));
    if (!k || !tmp) {
        free(k);
        free(tmp);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const wf_diag *dg = &d->v[from + i];
        size_t f = cfg->n_files;
        for (size_t j = 0; j < cfg->n_files; j++)
            if (strcmp(cfg->files[j], dg->file) == 0) {
                f = j;
                break;
            }
        /* The "too many problems" line stays last. */
        if (strcmp(dg->resource, "-") == 0 && strncmp(dg->message, "too many problems", 17) == 0)
            f = (size_t)-1;
        k[i].file = f;
        k[i].line = dg->line;
        k[i].col = dg->col;
        k[i].i = i;
    }
    qsort(k, n, sizeof(*k), cmp_dkey);
    for (size_t i = 0; i < n; i++)
        tmp[i] = d->v[from + k[i].i];
    memcpy(&d->v[from], tmp, n * sizeof(*tmp));
    free(k);
    free(tmp);
}

/* ---- public ------------------------------------------------------------------ */

static int loader_start(loader *ld, wf_diags *diags)
{
    memset(ld, 0, sizeof(*ld));
    ld->d = diags;
    ld->cfg = calloc(1, sizeof(*ld->cfg));
    if (!ld->cfg) {
        wf_diag_add(diags, "-", 0, 0, "-", "-", "out of memory");
        return -1;
    }
    return 0;
}

/* Cross checks, defaults and the verdict, common to files and buffers. */
static int loader_finish(loader *ld, size_t first_diag, wf_config **out)
{
    check_duplicates(ld);
    if (!ld->incomplete) {
        check_delegates(ld);
        check_subsets(ld);
    }
    if (fill_mesh_defaults(&ld->cfg->mesh) < 0) {
        ld->errors++;
        wf_diag_add(ld->d, "-", 0, 0, "-", "-", "out of memory");
    }
    sort_diags(ld->d, first_diag, ld->cfg);
    if (ld->errors) {
        wf_config_free(ld->cfg);
        return -1;
    }
    *out = ld->cfg;
    return 0;
}

int wf_config_load(const char *const *paths, size_t n, wf_config **out, wf_diags *diags)
{
    loader ld;
    size_t first = diags->n;

    *out = NULL;
    if (loader_start(&ld, diags) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (!paths[i]) {
            continue;
        } else if (stat(paths[i], &st) < 0) {
            char msg[300];
            const char *f = intern_file(ld.cfg, paths[i]);
            snprintf(msg, sizeof(msg), "cannot read: %s", strerror(errno));
            lerr(&ld, f ? f : paths[i], 0, 0, "-", "-", msg);
            ld.incomplete = 1;
        } else if (S_ISDIR(st.st_mode)) {
            load_dir(&ld, paths[i]);
        } else {
            load_file(&ld, paths[i]);
        }
    }
    return loader_finish(&ld, first, out);
}

int wf_config_load_bufs(const wf_config_buf *bufs, size_t n, wf_config **out, wf_diags *diags)
{
    loader ld;
    size_t first = diags->n;

    *out = NULL;
    if (loader_start(&ld, diags) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *file = intern_file(ld.cfg, bufs[i].name ? bufs[i].name : "-");
        if (!file) {
            lerr(&ld, "-", 0, 0, "-", "-", "out of memory");
            continue;
        }
        load_buf(&ld, file, bufs[i].data ? bufs[i].data : "", bufs[i].data ? bufs[i].len : 0);
    }
    return loader_finish(&ld, first, out);
}

void wf_config_free(wf_config *c)
{
    if (!c)
        return;
    for (size_t k = 0; k < wf__n_kinds; k++) {
        const wf__kind *kd = &wf__kinds[k];
        size_t *cnt;
        char **arr;
        if (WF__KIND_IS_MESH(kd)) {
            free_resource(kd, &c->mesh);
            continue;
        }
        arr = kind_array(c, kd, &cnt);
        for (size_t i = 0; *arr && i < *cnt; i++)
            free_resource(kd, *arr + i * kd->elem_size);
        free(*arr);
    }
    for (size_t i = 0; i < c->n_files; i++)
        free(c->files[i]);
    free(c->files);
    free(c);
}

size_t wf_config_count(const wf_config *c)
{
    return c ? c->n_resources : 0;
}
