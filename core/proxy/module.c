/*
 * module.c: finding and loading filter modules.
 *
 * Built-in modules live in the module directory (default: `modules` beside
 * the binary); user plugins in the plugin directories (--plugin-dir,
 * default `plugins` beside the binary and /etc/weft/plugins).  A module is
 * loaded once (RTLD_LOCAL), checked against the ABI and never unloaded, so
 * a stream can never outlive the code it calls.
 */
#include "proxy/proxy.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

struct wf_module_ref {
    char *path;
    const wf_module *m;
    wf_module_ref *next;
};

static wf_module_ref *loaded;
static char module_dir[PATH_MAX];
static const char *plugin_dirs[40];
static size_t n_plugin_dirs;

void wf_modules_set_dirs(const char *mdir, const char *const *pdirs, size_t n)
{
    snprintf(module_dir, sizeof(module_dir), "%s", mdir);
    n_plugin_dirs = 0;
    for (size_t i = 0; i < n && i < sizeof(plugin_dirs) / sizeof(plugin_dirs[0]); i++)
        plugin_dirs[n_plugin_dirs++] = pdirs[i];
}

const wf_module *wf_module_table(const wf_module_ref *r)
{
    return r->m;
}

const char *wf_module_path(const wf_module_ref *r)
{
    return r->path;
}

static int is_path(const char *s)
{
    size_t n = strlen(s);
    return strchr(s, '/') || (n > 3 && strcmp(s + n - 3, ".so") == 0);
}

/* Finds NAME.so in the module directory, then the plugin directories. */
static int locate(const char *name, char *out, size_t len, char *searched, size_t slen)
{
    const char *dirs[42];
    size_t n = 0, off = 0;

    dirs[n++] = module_dir;
    for (size_t i = 0; i < n_plugin_dirs; i++)
        dirs[n++] = plugin_dirs[i];
    searched[0] = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(out, len, "%s/%s.so", dirs[i], name);
        if (access(out, F_OK) == 0)
            return 0;
        off += (size_t)snprintf(searched + off, off < slen ? slen - off : 0, "%s%s", i ? ", " : "",
                                dirs[i]);
        if (off >= slen)
            off = slen - 1;
    }
    return -1;
}

wf_module_ref *wf_module_load(const char *spec, char *err, size_t errlen)
{
    char path[PATH_MAX], searched[1024], real[PATH_MAX], why[512];
    wf_module_entry_fn entry;
    const wf_module *m;
    wf_module_ref *r;
    void *dl;

    if (is_path(spec)) {
        snprintf(path, sizeof(path), "%s", spec);
        if (access(path, F_OK) != 0) {
            snprintf(err, errlen, "module \"%s\": %s: no such file", spec, path);
            return NULL;
        }
    } else if (locate(spec, path, sizeof(path), searched, sizeof(searched)) < 0) {
        snprintf(err, errlen, "module \"%s\": %s.so not found in %s (add --plugin-dir or give a path)",
                 spec, spec, searched);
        return NULL;
    }
    if (!realpath(path, real))
        snprintf(real, sizeof(real), "%s", path);
    for (r = loaded; r; r = r->next)
        if (strcmp(r->path, real) == 0)
            return r;

    dl = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(err, errlen, "module \"%s\": %s: cannot load: %s", spec, real, dlerror());
        return NULL;
    }
    *(void **)&entry = dlsym(dl, WF_MODULE_ENTRY);
    if (!entry) {
        snprintf(err, errlen, "module \"%s\": %s: no entry symbol %s (is it a weft filter module?)",
                 spec, real, WF_MODULE_ENTRY);
        dlclose(dl);
        return NULL;
    }
    why[0] = 0;
    m = entry(WF_ABI_MAJOR, WF_ABI_MINOR, &wf_host_table, why, sizeof(why));
    if (!m) {
        snprintf(err, errlen, "module \"%s\": %s: refused to load: %s", spec, real,
                 why[0] ? why : "(no reason given)");
        dlclose(dl);
        return NULL;
    }
    if (m->abi_major != WF_ABI_MAJOR) {
        snprintf(err, errlen,
                 "module \"%s\": %s: built for filter ABI %u.%u, this weft has ABI %u.%u (rebuild it "
                 "against this include/weft/filter.h)",
                 spec, real, m->abi_major, m->abi_minor, WF_ABI_MAJOR, WF_ABI_MINOR);
        dlclose(dl);
        return NULL;
    }
    if (m->size < offsetof(wf_module, config_destroy) || !m->config_create) {
        snprintf(err, errlen, "module \"%s\": %s: its module table has no config_create", spec, real);
        dlclose(dl);
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "module \"%s\": out of memory", spec);
        return NULL;
    }
    r->path = strdup(real);
    r->m = m;
    r->next = loaded;
    loaded = r;
    WF_DEBUG("loaded module %s from %s (ABI %u.%u)", spec, real, m->abi_major, m->abi_minor);
    return r;
}
