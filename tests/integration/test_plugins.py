"""Filter plugins: the example plugin, FilterPlugin selectors, a plugin
compiled outside the tree against only include/weft/filter.h, chain order
by phase and priority, and every way a module can fail to load."""
import json
import os
import pathlib
import re
import subprocess

import pytest

from conftest import REPO, WEFT_BIN, curl, dedent, service_entry, workload_entry

# An out-of-tree plugin, written the way a user would: it includes only the
# public header.  Built with -D options for the broken variants.
PLUGIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft/filter.h>

static const wf_host *host;

struct conf {
    char value[256];
};

static void *conf_create(const wf_config_args *args, char *err, size_t errlen)
{
    size_t len = 0;
    const char *s = host->value_string(host->value_get(args->config, "value"), &len);
    if (s == NULL || len == 0 || len >= sizeof(((struct conf *)0)->value)) {
        snprintf(err, errlen, "pluginConfig.value: need a non-empty string (oot-refusal)");
        return NULL;
    }
    struct conf *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(c->value, s, len);
    return c;
}

static void conf_destroy(void *cfg)
{
    free(cfg);
}

static wf_status response_headers(void *cfg, void *st, wf_stream *s, int end_stream)
{
    struct conf *c = cfg;
    wf_str name = {"x-oot", 5};
    wf_str value = {c->value, strlen(c->value)};
    (void)st;
    (void)end_stream;
    host->header_set(s, WF_RESPONSE, name, value);
    return WF_CONTINUE;
}

static const wf_module module = {
    .size = sizeof(wf_module),
#ifdef BAD_MAJOR
    .abi_major = 99,
#else
    .abi_major = WF_ABI_MAJOR,
#endif
    .abi_minor = WF_ABI_MINOR,
    .name = "oot",
    .config_create = conf_create,
    .config_destroy = conf_destroy,
    .response_headers = response_headers,
};

#ifdef NO_ENTRY
WF_EXPORT const wf_module *some_other_symbol(void)
{
    return &module;
}
#else
WF_EXPORT const wf_module *wf_module_entry(uint32_t abi_major, uint32_t abi_minor,
                                           const wf_host *h, char *err, size_t errlen)
{
    (void)abi_minor;
#ifdef REFUSE_ENTRY
    snprintf(err, errlen, "this build of oot is for ABI 7 (oot-entry-refusal)");
    return NULL;
#endif
    if (abi_major != WF_ABI_MAJOR) {
        snprintf(err, errlen, "built for ABI %d, host has %u", WF_ABI_MAJOR, abi_major);
        return NULL;
    }
    host = h;
    return &module;
}
#endif
"""


def compile_plugin(tmp_path, name, defines=()):
    """Builds PLUGIN_C into tmp_path/name.so with only the public header."""
    src = tmp_path / "oot.c"
    src.write_text(PLUGIN_C)
    so = tmp_path / (name + ".so")
    cmd = (["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
            "-I", str(REPO / "include")] + ["-D" + d for d in defines]
           + ["-o", str(so), str(src)])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "the plugin did not compile against include/weft/filter.h:\n" + p.stderr
    return so


def filter_plugin(name, module, config=None, labels=None, phase=None, priority=None, ns="default"):
    out = ["---", "apiVersion: weft.io/v1alpha1", "kind: FilterPlugin", "metadata:",
           "  name: " + name, "  namespace: " + ns, "spec:"]
    if labels is not None:
        out += ["  selector:", "    matchLabels:"]
        out += ["      %s: %s" % kv for kv in labels.items()]
    out.append("  module: %s" % module)
    if phase:
        out.append("  phase: " + phase)
    if priority is not None:
        out.append("  priority: %d" % priority)
    if config:
        out.append("  pluginConfig:")
        # JSON strings are YAML double-quoted strings: values stay strings
        out += ["    %s: %s" % (k, json.dumps(v)) for k, v in config.items()]
    return "\n".join(out) + "\n"


LABELS = {"app": "productpage", "version": "v1"}


@pytest.fixture
def mesh(backend):
    b = backend("reviews-v1")
    return service_entry("reviews") + workload_entry("reviews-v1", b.port, "reviews", "v1")


def test_example_plugin_adds_header(weft, mesh):
    w = weft(mesh + filter_plugin("hello", "example", {"header": "x-example", "value": "hello"},
                                  labels={"app": "productpage"}), labels=LABELS)
    r = curl(w.out_url + "/", host="reviews")
    assert r.status == 200 and r.backend == "reviews-v1", r
    assert r.header("x-example") == "hello", r.headers
    # local replies go through the chain too
    r = curl(w.out_url + "/", host="nosuch")
    assert r.status == 404 and "NR" in r.text
    assert r.header("x-example") == "hello", r.headers


def test_example_plugin_on_inbound(weft, backend):
    app = backend("app")
    w = weft(filter_plugin("hello", "example", {"header": "x-example", "value": "in"},
                           labels={"app": "reviews"}),
             labels={"app": "reviews"}, app_port=app.port)
    r = curl(w.in_url + "/", host="reviews")
    assert r.status == 200 and r.backend == "app"
    assert r.header("x-example") == "in", r.headers


def test_plugin_without_selector_applies_to_all(weft, mesh):
    w = weft(mesh + filter_plugin("hello", "example", {"header": "x-example", "value": "all"}),
             labels={"app": "anything"})
    assert curl(w.out_url + "/", host="reviews").header("x-example") == "all"


def test_selector_not_matching_adds_nothing(weft, mesh):
    w = weft(mesh + filter_plugin("hello", "example", {"header": "x-example", "value": "hello"},
                                  labels={"app": "productpage", "version": "v2"}), labels=LABELS)
    r = curl(w.out_url + "/", host="reviews")
    assert r.status == 200
    assert r.header("x-example") is None, "plugin applied to a workload its selector excludes"
    dump = w.config_dump()
    assert not any("hello" in str(f.get("name")) for f in dump["filter_chain"]), dump["filter_chain"]


def test_out_of_tree_plugin_by_path(weft, mesh, tmp_path):
    so = compile_plugin(tmp_path, "oot")
    w = weft(mesh + filter_plugin("oot", str(so), {"value": "from-outside"}), labels=LABELS)
    r = curl(w.out_url + "/", host="reviews")
    assert r.status == 200
    assert r.header("x-oot") == "from-outside", r.headers
    paths = [f.get("path") for f in w.config_dump()["filter_chain"]]
    assert str(so) in paths, paths


def test_out_of_tree_plugin_by_name_from_plugin_dirs(weft, mesh, tmp_path):
    pdir = tmp_path / "myplugins"
    pdir.mkdir()
    compile_plugin(pdir, "oot")
    default_dir = pathlib.Path(WEFT_BIN).resolve().parent / "plugins"
    w = weft(mesh + filter_plugin("oot", "oot", {"value": "by-name"})
             + filter_plugin("hello", "example", {"header": "x-example", "value": "still"}),
             labels=LABELS, plugin_dirs=[pdir, default_dir])
    r = curl(w.out_url + "/", host="reviews")
    # each plugin is found by name in one of the --plugin-dir directories
    assert r.header("x-oot") == "by-name", r.headers
    assert r.header("x-example") == "still", r.headers


def test_chain_order_by_phase_and_priority(weft, mesh):
    yaml = mesh
    for name, phase, prio in [("p-stats", "STATS", 100), ("p-authz-low", "AUTHZ", 1),
                              ("p-authn", "AUTHN", 0), ("p-authz-high", "AUTHZ", 50)]:
        yaml += filter_plugin(name, "example", {"header": "x-" + name, "value": "1"},
                              phase=phase, priority=prio)
    w = weft(yaml, labels=LABELS)
    chain = w.config_dump()["filter_chain"]

    def pos(token):
        for i, f in enumerate(chain):
            if token in str(f.get("name")):
                return i
        raise AssertionError("%s not in filter_chain %s" % (token, chain))

    order = sorted(["p-stats", "p-authz-low", "p-authn", "p-authz-high"], key=pos)
    assert order == ["p-authn", "p-authz-high", "p-authz-low", "p-stats"], chain
    assert chain[-1]["name"] == "router", "router must end the chain: %s" % chain
    r = curl(w.out_url + "/", host="reviews")
    for name in ("p-stats", "p-authz-low", "p-authn", "p-authz-high"):
        assert r.header("x-" + name) == "1", r.headers


def test_mesh_config_filter_chain(weft, mesh):
    w = weft(mesh + dedent("""
        ---
        apiVersion: weft.io/v1alpha1
        kind: MeshConfig
        metadata:
          name: mesh
          namespace: istio-system
        spec:
          filterChain: [router]
        """))
    chain = w.config_dump()["filter_chain"]
    assert [f["name"] for f in chain] == ["router"], chain
    assert chain[0]["path"].endswith("modules/router.so"), chain
    assert os.path.exists(chain[0]["path"]), chain
    assert curl(w.out_url + "/", host="reviews").status == 200


# --------------------------------------------------------------------------
# modules that must not load: exit 1 naming the module, the path, the reason

def refused(weft, config, **kw):
    w = weft(config, start=False)
    w.start(wait=False, **kw)
    rc = w.wait_exit()
    err = w.stderr()
    assert rc == 1, "weft exited %d, want 1\n%s" % (rc, w.describe())
    return err


def test_missing_plugin_by_name(weft, mesh):
    err = refused(weft, mesh + filter_plugin("ghost", "no-such-plugin", {"x": "y"}), labels=LABELS)
    assert "no-such-plugin" in err, err
    # names the place it looked: the default plugin dir beside the binary
    plugins_dir = str(pathlib.Path(WEFT_BIN).resolve().parent / "plugins")
    assert plugins_dir in err or "plugins" in err, err


def test_missing_plugin_by_path(weft, mesh, tmp_path):
    path = str(tmp_path / "nowhere" / "gone.so")
    err = refused(weft, mesh + filter_plugin("ghost", path, {"x": "y"}), labels=LABELS)
    assert path in err, err
    assert re.search(r"no such file|not found|cannot open|does not exist", err, re.I), err


def test_plugin_without_entry_symbol(weft, mesh, tmp_path):
    so = compile_plugin(tmp_path, "noentry", ["NO_ENTRY"])
    err = refused(weft, mesh + filter_plugin("noentry", str(so), {"value": "v"}), labels=LABELS)
    assert str(so) in err, err
    assert "wf_module_entry" in err, err


def test_plugin_abi_major_mismatch(weft, mesh, tmp_path):
    so = compile_plugin(tmp_path, "abi99", ["BAD_MAJOR"])
    err = refused(weft, mesh + filter_plugin("abi99", str(so), {"value": "v"}), labels=LABELS)
    assert str(so) in err, err
    assert "99" in err and re.search(r"abi|major|version", err, re.I), err


def test_plugin_entry_refuses(weft, mesh, tmp_path):
    so = compile_plugin(tmp_path, "refuser", ["REFUSE_ENTRY"])
    err = refused(weft, mesh + filter_plugin("refuser", str(so), {"value": "v"}), labels=LABELS)
    assert str(so) in err, err
    assert "oot-entry-refusal" in err, "the module's own reason must be shown:\n" + err


def test_plugin_config_refused(weft, mesh, tmp_path):
    so = compile_plugin(tmp_path, "picky")
    err = refused(weft, mesh + filter_plugin("picky", str(so), {"colour": "blue"}), labels=LABELS)
    assert "picky" in err, err
    assert "oot-refusal" in err, "the module's own reason must be shown:\n" + err


def test_example_plugin_config_refused(weft, mesh):
    err = refused(weft, mesh + filter_plugin("hello", "example", {"value": "no header name"}),
                  labels=LABELS)
    assert "example" in err and "header" in err, err


def test_unknown_builtin_module_in_mesh_config(weft, mesh):
    err = refused(weft, mesh + dedent("""
        ---
        apiVersion: weft.io/v1alpha1
        kind: MeshConfig
        metadata:
          name: mesh
          namespace: istio-system
        spec:
          filterChain: [nosuchfilter, router]
        """))
    assert "nosuchfilter" in err, err


def test_refused_module_only_when_selected(weft, mesh):
    # A broken FilterPlugin that selects other workloads is never loaded
    # for this one, so this proxy starts.
    w = weft(mesh + filter_plugin("ghost", "no-such-plugin", {"x": "y"},
                                  labels={"app": "someone-else"}), labels=LABELS)
    assert curl(w.out_url + "/", host="reviews").status == 200
