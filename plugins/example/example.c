/*
 * plugins/example/example.c: the example weft plugin, and the template to
 * copy for your own.
 *
 * It adds one response header, named and valued by its configuration, to
 * every response that passes through it, including the proxy's own local
 * replies (a 404 from the router, a fault filter's abort):
 *
 *     pluginConfig:
 *       header: x-example
 *       value: hello
 *
 * A plugin is a shared object that includes <weft/filter.h> and nothing
 * else of weft, and exports one function, wf_module_entry.  weft calls it
 * once, when it loads the plugin, and gets back a table of hooks; every hook
 * the plugin leaves NULL is simply not called.  Build it on its own with
 *
 *     cc -shared -fPIC -I/path/to/weft/include -o example.so example.c
 *
 * (weft's SConstruct builds every plugins/<name>/ directory into
 * build/plugins/<name>.so the same way.)  docs/modules.md walks through it.
 */
#include <weft/filter.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The host's function table, handed to the entry.  It stays valid for the
 * life of the process, so keeping it in a static is the usual pattern.
 * Give your statics your plugin's prefix: it keeps them apart from other
 * code when a test compiles the plugin in. */
static const wf_host *example_host;

/* The module config: built once by config_create on the main thread, then
 * read by every worker at the same time, so it must not change afterwards.
 * The strings point into the configuration values the host passed to
 * config_create; the ABI keeps those alive until config_destroy, so there
 * is nothing to copy. */
typedef struct example_config {
    wf_str header; /* the response header to add */
    wf_str value;  /* its value (may be empty) */
    char text[32]; /* the value's text when YAML gave a number */
} example_config;

/* Whether s is a valid HTTP header name (an RFC 9110 token).  Checking here
 * turns a typo into a clear error when the configuration is loaded, rather
 * than a broken response later. */
static int example_is_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c != '\0' && strchr(extra, c) != NULL);
        if (!ok)
            return 0;
    }
    return 1;
}

/*
 * config_create (main thread): checks the configuration and builds the
 * module config.  Returning NULL with a one-line reason in err refuses the
 * whole configuration, so a mistake is reported when the config is loaded,
 * never at the first request.  The reason should tell the operator what to
 * fix.  Returns memory owned by weft's copy of the chain until
 * config_destroy.
 */
static void *example_config_create(const wf_config_args *args, char *err, size_t errlen)
{
    const wf_host *h = example_host;
    const char *header, *value = "";
    size_t header_len = 0, value_len = 0;

    /* args->config is the filter's pluginConfig; value_get on a missing key
     * (or on a config that is not a map) gives NULL, and value_string on
     * NULL or a non-string gives NULL too. */
    header = h->value_string(h->value_get(args->config, "header"), &header_len);
    if (!header) {
        snprintf(err, errlen, "pluginConfig.header is required (the response header to add)");
        return NULL;
    }
    if (!example_is_token(header, header_len)) {
        snprintf(err, errlen,
                 "pluginConfig.header \"%s\" is not a valid HTTP header name (letters, digits "
                 "and !#$%%&'*+-.^_`|~ only)",
                 header);
        return NULL;
    }

    example_config *cfg = malloc(sizeof(*cfg));
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    /* "value" is optional and defaults to the empty string.  YAML reads
     * `value: 1` or `value: true` as a number or a boolean; a header value
     * is text, so those are taken as written.  A list or map is a mistake. */
    const wf_value *v = h->value_get(args->config, "value");
    switch (h->value_type(v)) {
    case WF_VALUE_NULL:
        break;
    case WF_VALUE_STRING:
        value = h->value_string(v, &value_len);
        break;
    case WF_VALUE_INT:
        value_len = (size_t)snprintf(cfg->text, sizeof(cfg->text), "%lld", (long long)h->value_int(v));
        value = cfg->text;
        break;
    case WF_VALUE_DOUBLE:
        value_len = (size_t)snprintf(cfg->text, sizeof(cfg->text), "%g", h->value_double(v));
        value = cfg->text;
        break;
    case WF_VALUE_BOOL:
        value = h->value_bool(v) ? "true" : "false";
        value_len = strlen(value);
        break;
    default:
        snprintf(err, errlen, "pluginConfig.value must be text, not a list or a map");
        free(cfg);
        return NULL;
    }
    cfg->header = (wf_str){header, header_len};
    cfg->value = (wf_str){value, value_len};
    return cfg;
}

/* config_destroy (main thread): called after the last stream that used cfg
 * has finished, so nothing can still be reading it. */
static void example_config_destroy(void *cfg)
{
    free(cfg);
}

/*
 * response_headers (worker thread): runs once per response, for upstream
 * responses and for local replies alike, in reverse chain order.  This
 * plugin keeps no per-stream state, so it has no stream_create and st is
 * always NULL.  header_add copies the name and value into the stream, so
 * passing the config's strings is fine.  A hook must never block.
 */
static wf_status example_response_headers(void *cfg, void *st, wf_stream *s, int end_stream)
{
    const example_config *c = cfg;
    /* header_add fails only when the stream's memory limit is reached; the
     * response is still worth delivering without the extra header. */
    example_host->header_add(s, WF_RESPONSE, c->header, c->value);
    return WF_CONTINUE;
}

/* The table the entry returns.  It must be static storage; hooks not
 * listed here are NULL (absent).  size and abi_* tell weft which version of
 * filter.h the plugin was built with. */
static const wf_module example_module = {
    .size = sizeof(wf_module),
    .abi_major = WF_ABI_MAJOR,
    .abi_minor = WF_ABI_MINOR,
    .name = "example",
    .config_create = example_config_create,
    .config_destroy = example_config_destroy,
    .response_headers = example_response_headers,
};

/*
 * The entry, found by name with dlsym.  A plugin built for another major
 * version of the ABI must refuse: the tables would not line up.  A newer
 * minor version of the host is fine (it only adds at the ends of tables).
 */
WF_EXPORT const wf_module *wf_module_entry(uint32_t abi_major, uint32_t abi_minor,
                                           const wf_host *host, char *err, size_t errlen)
{
    if (abi_major != WF_ABI_MAJOR) {
        snprintf(err, errlen,
                 "plugin example was built for filter ABI %d.%d but weft speaks %u.%u; rebuild "
                 "it against this weft's include/weft/filter.h",
                 WF_ABI_MAJOR, WF_ABI_MINOR, abi_major, abi_minor);
        return NULL;
    }
    /* A host with a shorter table lacks the functions at its end; make sure
     * the last one this plugin calls is there. */
    if (host->size < offsetof(wf_host, header_add) + sizeof(host->header_add)) {
        snprintf(err, errlen, "plugin example: weft's host table is too old (no header_add)");
        return NULL;
    }
    example_host = host;
    return &example_module;
}
