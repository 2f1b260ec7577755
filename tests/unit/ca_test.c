/*
 * ca_test.c: unit tests for core/ca: root creation and reuse, Istio plugged
 * certs (made here with the openssl command), CSR signing into SPIFFE
 * certificates, serving certificates, SAN parsing, SPIFFE ID validation,
 * the client-side chain check and tokens.  Certificates are cross-checked
 * with `openssl verify` and `openssl x509`.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca/ca.h"
#include "test.h"

static char *mkdir_tmp(void)
{
    char t[] = "/tmp/wf-ca-test-XXXXXX";
    char *d = mkdtemp(t);
    return d ? strdup(d) : NULL;
}

static void rm_dir(char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d);
    free(d);
}

/* Runs a shell command built from fmt; returns its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

static void put(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static char *get(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 65536);
    if (buf && fread(buf, 1, 65535, f) == 0) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static int have_openssl(void)
{
    return system("command -v openssl >/dev/null 2>&1") == 0;
}

/*
 * An Istio plugged-certs directory made with openssl: a root (10 years) and
 * an intermediate (30 days) whose subject uses PrintableString (string_mask
 * nombstr), which rebuilding the name from text would turn into UTF8String.
 * dir/root-key.pem stays for tests that need it.
 */
static int make_plugged(const char *dir)
{
    put(dir, "ca.cnf",
        "[req]\ndistinguished_name = dn\nstring_mask = nombstr\nprompt = no\n[dn]\n"
        "O = Example Org\nCN = Intermediate CA\n"
        "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
        "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n");
    return sh("cd '%s' && "
              "openssl ecparam -name prime256v1 -genkey -noout -out root-key.pem 2>/dev/null && "
              "openssl req -x509 -new -key root-key.pem -subj '/O=Example Org/CN=Root CA' "
              "-days 3650 -addext basicConstraints=critical,CA:TRUE "
              "-addext keyUsage=critical,keyCertSign,cRLSign -out root-cert.pem 2>/dev/null && "
              "openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem 2>/dev/null && "
              "openssl req -new -key ca-key.pem -config ca.cnf -out ca.csr 2>/dev/null && "
              "openssl x509 -req -in ca.csr -CA root-cert.pem -CAkey root-key.pem "
              "-CAcreateserial -days 30 -extfile ca.cnf -extensions v3_ca -out ca-cert.pem "
              "2>/dev/null && cat ca-cert.pem root-cert.pem > cert-chain.pem",
              dir);
}

static time_t crt_not_after(const char *pem)
{
    wf_ca_cert_info info;
    if (wf_ca_pem_info(pem, &info, NULL) != 0)
        return 0;
    return info.not_after;
}

TEST(create_and_reload)
{
    char *dir = mkdir_tmp(), *err = NULL;
    wf_ca *a = NULL, *b = NULL;
    CHECK_INT(wf_ca_load_or_create(dir, "example.org", &a, &err), 0);
    if (err) fprintf(stderr, "%s\n", err);
    CHECK_INT(wf_ca_load_or_create(dir, "example.org", &b, &err), 0);
    if (a && b)
        CHECK_STR(wf_ca_root_pem(a), wf_ca_root_pem(b));
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/ca-key.pem", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    wf_ca_free(a);
    wf_ca_free(b);
    free(err);
    rm_dir(dir);
}

TEST(sign_csr)
{
    char *dir = mkdir_tmp(), *err = NULL, *key = NULL, *csr = NULL, **chain = NULL, *uri = NULL;
    size_t n = 0;
    wf_ca *ca = NULL;
    CHECK_INT(wf_ca_load_or_create(dir, "example.org", &ca, &err), 0);
    CHECK_INT(wf_ca_make_key_csr(&key, &csr, &err), 0);
    int rc = wf_ca_sign_csr(ca, csr, "spiffe://example.org/ns/a/sa/b", 3600, &chain, &n, &err);
    if (rc) fprintf(stderr, "sign: %s\n", err);
    CHECK_INT(rc, 0);
    CHECK(n >= 2);
    if (rc == 0) {
        mbedtls_x509_crt leaf;
        mbedtls_x509_crt_init(&leaf);
        CHECK_INT(mbedtls_x509_crt_parse(&leaf, (unsigned char *)chain[0], strlen(chain[0]) + 1), 0);
        uint32_t flags = 0;
        CHECK_INT(mbedtls_x509_crt_verify(&leaf, (mbedtls_x509_crt *)wf_ca_root(ca), NULL, NULL,
                                          &flags, NULL, NULL), 0);
        CHECK_INT(wf_ca_cert_spiffe_id(&leaf, &uri, &err), 0);
        CHECK_STR(uri, "spiffe://example.org/ns/a/sa/b");
        CHECK_STR(chain[n - 1], wf_ca_root_pem(ca));
        mbedtls_x509_crt_free(&leaf);
        /* openssl cross-check when present. */
        if (system("command -v openssl >/dev/null 2>&1") == 0) {
            char p[512], cmd[1200];
            snprintf(p, sizeof p, "%s/leaf.pem", dir);
            FILE *f = fopen(p, "w");
            if (f) { fputs(chain[0], f); fclose(f); }
            snprintf(cmd, sizeof cmd, "openssl verify -CAfile %s/root-cert.pem %s >/dev/null", dir, p);
            CHECK_INT(system(cmd), 0);
            snprintf(cmd, sizeof cmd, "openssl x509 -noout -ext subjectAltName -in %s | grep -q 'URI:spiffe://example.org/ns/a/sa/b'", p);
            CHECK_INT(system(cmd), 0);
        }
    }
    /* A tampered CSR (one signature byte flipped via the PEM body) is refused. */
    char *bad = strdup(csr);
    size_t L = strlen(bad);
    char *end = strstr(bad, "-----END");
    if (end && end - bad > 10) { char *c = end - 6; *c = (*c == 'A') ? 'B' : 'A'; }
    char **c2 = NULL;
    size_t n2 = 0;
    free(err); err = NULL;
    CHECK(wf_ca_sign_csr(ca, bad, "spiffe://example.org/ns/a/sa/b", 0, &c2, &n2, &err) != 0);
    (void)L;
    free(err); err = NULL;
    CHECK(wf_ca_sign_csr(ca, csr, "spiffe://other.org/ns/a/sa/b", 0, &c2, &n2, &err) != 0);
    free(bad);
    free(uri);
    free(key);
    free(csr);
    free(err);
    wf_ca_chain_free(chain, n);
    wf_ca_free(ca);
    rm_dir(dir);
}

TEST(spiffe_parse)
{
    wf_spiffe_id id;
    char *err = NULL;
    CHECK_INT(wf_spiffe_parse("spiffe://cluster.local/ns/default/sa/bookinfo-reviews", &id, &err), 0);
    CHECK_STR(id.ns, "default");
    const char *bad[] = {"http://x/ns/a/sa/b", "spiffe://X/ns/a/sa/b", "spiffe://td:1/ns/a/sa/b",
                         "spiffe://td/ns/a/sa/b/", "spiffe://td/ns//sa/b", "spiffe://td/ns/A/sa/b",
                         "spiffe://td/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a/sa/b?x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        free(err); err = NULL;
        CHECK(wf_spiffe_parse(bad[i], NULL, &err) != 0);
    }
    /* SAN DER: DNS name + URI; two URIs; none. */
    static const char u[] = "spiffe://td/ns/a/sa/b";
    unsigned char der[128];
    size_t ul = sizeof u - 1, o = 0;
    der[o++] = 0x30; der[o++] = (unsigned char)(4 + 2 + ul);
    der[o++] = 0x82; der[o++] = 2; der[o++] = 'x'; der[o++] = 'y';
    der[o++] = 0x86; der[o++] = (unsigned char)ul; memcpy(der + o, u, ul); o += ul;
    char *uri = NULL;
    free(err); err = NULL;
    CHECK_INT(wf_ca_san_spiffe_from_der(der, o, &uri, &err), 0);
    CHECK_STR(uri, u);
    free(uri); uri = NULL;
    free(err); err = NULL;
    CHECK(wf_ca_san_spiffe_from_der(der, o - 1, &uri, &err) != 0); /* truncated */
    free(err); err = NULL;
    CHECK(wf_ca_san_spiffe_from_der(der, 6, &uri, &err) != 0);
    free(err);
}

TEST(tokens)
{
    char *d1 = mkdir_tmp(), *d2 = mkdir_tmp(), *err = NULL, *tok = NULL, *ns = NULL, *sa = NULL;
    wf_ca *a = NULL, *b = NULL, *c = NULL;
    CHECK_INT(wf_ca_load_or_create(d1, "example.org", &a, &err), 0);
    CHECK_INT(wf_ca_load_or_create(d2, "example.org", &b, &err), 0);
    CHECK_INT(wf_ca_load_or_create(d1, "other.org", &c, &err), 0);
    if (!a || !b || !c)
        return;
    CHECK_INT(wf_ca_token_issue(a, "ns1", "sa1", 600, &tok, &err), 0);
    CHECK_INT(wf_ca_token_verify(a, tok, 0, &ns, &sa, &err), 0);
    CHECK_STR(ns, "ns1");
    CHECK_STR(sa, "sa1");
    {
        char *cn = NULL, *cs = NULL, *ctd = NULL;
        time_t exp = 0;
        CHECK_INT(wf_ca_token_claims(tok, &cn, &cs, &ctd, &exp, &err), 0);
        CHECK_STR(cn, "ns1");
        CHECK_STR(cs, "sa1");
        CHECK_STR(ctd, "example.org");
        CHECK(exp >= time(NULL) + 590 && exp <= time(NULL) + 600);
        free(cn);
        free(cs);
        free(ctd);
    }
    free(err); err = NULL;
    CHECK(wf_ca_token_verify(b, tok, 0, NULL, NULL, &err) != 0);
    CHECK(err && strstr(err, "bad signature"));
    free(err); err = NULL;
    CHECK(wf_ca_token_verify(c, tok, 0, NULL, NULL, &err) != 0);
    CHECK(err && strstr(err, "audience"));
    free(err); err = NULL;
    CHECK(wf_ca_token_verify(a, tok, time(NULL) + 601, NULL, NULL, &err) != 0);
    CHECK(err && strstr(err, "expired at"));
    char *dot = strchr(tok, '.');
    if (dot) { dot[2] = dot[2] == 'A' ? 'B' : 'A'; }
    free(err); err = NULL;
    CHECK(wf_ca_token_verify(a, tok, 0, NULL, NULL, &err) != 0);
    free(err);
    free(tok);
    free(ns);
    free(sa);
    wf_ca_free(a);
    wf_ca_free(b);
    wf_ca_free(c);
    rm_dir(d1);
    rm_dir(d2);
}

TEST(plugged_certs)
{
    if (!have_openssl()) {
        fprintf(stderr, "plugged_certs: openssl not installed, skipped\n");
        return;
    }
    char *dir = mkdir_tmp(), *err = NULL, *key = NULL, *csr = NULL, **chain = NULL;
    size_t n = 0;
    wf_ca *ca = NULL;
    CHECK_INT(make_plugged(dir), 0);
    int rc = wf_ca_load_or_create(dir, "example.org", &ca, &err);
    if (rc)
        fprintf(stderr, "load: %s\n", err);
    CHECK_INT(rc, 0);
    if (!ca)
        goto out;
    /* The root is root-cert.pem, not ca-cert.pem. */
    char *root = get(dir, "root-cert.pem");
    mbedtls_x509_crt want_root;
    mbedtls_x509_crt_init(&want_root);
    CHECK_INT(mbedtls_x509_crt_parse(&want_root, (unsigned char *)root, strlen(root) + 1), 0);
    CHECK(want_root.raw.len == wf_ca_root(ca)->raw.len &&
          memcmp(want_root.raw.p, wf_ca_root(ca)->raw.p, want_root.raw.len) == 0);
    mbedtls_x509_crt_free(&want_root);
    free(root);

    CHECK_INT(wf_ca_make_key_csr(&key, &csr, &err), 0);
    /* 90 days asked; the intermediate lives 30: the leaf stops with it. */
    rc = wf_ca_sign_csr(ca, csr, "spiffe://example.org/ns/a/sa/b", 90L * 86400, &chain, &n, &err);
    if (rc)
        fprintf(stderr, "sign: %s\n", err);
    CHECK_INT(rc, 0);
    CHECK_INT(n, 3);
    if (rc == 0 && n == 3) {
        char *cacert = get(dir, "ca-cert.pem");
        mbedtls_x509_crt leaf, inter;
        mbedtls_x509_crt_init(&leaf);
        mbedtls_x509_crt_init(&inter);
        CHECK_INT(mbedtls_x509_crt_parse(&leaf, (unsigned char *)chain[0], strlen(chain[0]) + 1), 0);
        CHECK_INT(mbedtls_x509_crt_parse(&inter, (unsigned char *)cacert, strlen(cacert) + 1), 0);
        /* Chain order: leaf, ca-cert, root. */
        mbedtls_x509_crt c1;
        mbedtls_x509_crt_init(&c1);
        CHECK_INT(mbedtls_x509_crt_parse(&c1, (unsigned char *)chain[1], strlen(chain[1]) + 1), 0);
        CHECK(c1.raw.len == inter.raw.len && memcmp(c1.raw.p, inter.raw.p, c1.raw.len) == 0);
        mbedtls_x509_crt_free(&c1);
        CHECK_STR(chain[2], wf_ca_root_pem(ca));
        /* The issuer is the intermediate's subject byte for byte (PrintableString kept). */
        CHECK(leaf.issuer_raw.len == inter.subject_raw.len &&
              memcmp(leaf.issuer_raw.p, inter.subject_raw.p, leaf.issuer_raw.len) == 0);
        time_t cap = crt_not_after(cacert), got = crt_not_after(chain[0]);
        CHECK(cap != 0 && got == cap);
        CHECK(got < time(NULL) + 31L * 86400);
        mbedtls_x509_crt_free(&leaf);
        mbedtls_x509_crt_free(&inter);
        free(cacert);
        put(dir, "leaf.pem", chain[0]);
        put(dir, "untrusted.pem", chain[1]);
        CHECK_INT(sh("openssl verify -CAfile %s/root-cert.pem -untrusted %s/untrusted.pem "
                     "%s/leaf.pem >/dev/null",
                     dir, dir, dir),
                  0);
        CHECK_INT(sh("openssl x509 -noout -ext subjectAltName -in %s/leaf.pem | "
                     "grep -q 'URI:spiffe://example.org/ns/a/sa/b'",
                     dir),
                  0);
        /* A short lifetime is not stretched. */
        char **c2 = NULL;
        size_t n2 = 0;
        CHECK_INT(wf_ca_sign_csr(ca, csr, "spiffe://example.org/ns/a/sa/b", 600, &c2, &n2, &err), 0);
        if (c2) {
            time_t t = crt_not_after(c2[0]);
            CHECK(t >= time(NULL) + 590 && t <= time(NULL) + 610);
        }
        wf_ca_chain_free(c2, n2);
    }
    /* Serving certificate: DNS SAN, leaf + intermediate, root left out. */
    char *sc = NULL, *sk = NULL;
    rc = wf_ca_issue_server(ca, "istiod.istio-system.svc", 3600, &sc, &sk, &err);
    if (rc)
        fprintf(stderr, "issue_server: %s\n", err);
    CHECK_INT(rc, 0);
    if (rc == 0) {
        mbedtls_x509_crt sv;
        mbedtls_x509_crt_init(&sv);
        CHECK_INT(mbedtls_x509_crt_parse(&sv, (unsigned char *)sc, strlen(sc) + 1), 0);
        CHECK(sv.next && sv.next->raw.p && !(sv.next->next && sv.next->next->raw.p));
        uint32_t flags = 0;
        CHECK_INT(mbedtls_x509_crt_verify(&sv, (mbedtls_x509_crt *)wf_ca_root(ca), NULL,
                                          "istiod.istio-system.svc", &flags, NULL, NULL),
                  0);
        mbedtls_pk_context pk;
        mbedtls_pk_init(&pk);
        CHECK_INT(mbedtls_pk_parse_key(&pk, (unsigned char *)sk, strlen(sk) + 1, NULL, 0), 0);
        CHECK_INT(mbedtls_pk_check_pair(&sv.pk, &pk), 0);
        mbedtls_pk_free(&pk);
        mbedtls_x509_crt_free(&sv);
        put(dir, "server.pem", sc);
        CHECK_INT(sh("openssl verify -CAfile %s/root-cert.pem -untrusted %s/server.pem "
                     "%s/server.pem >/dev/null",
                     dir, dir, dir),
                  0);
        CHECK_INT(sh("openssl x509 -noout -ext subjectAltName -in %s/server.pem | "
                     "grep -q 'DNS:istiod.istio-system.svc'",
                     dir),
                  0);
        wf_ca_cert_info info;
        CHECK_INT(wf_ca_pem_info(sc, &info, &err), 0);
        CHECK_STR(info.identity, "istiod.istio-system.svc");
    }
    free(err);
    err = NULL;
    CHECK(wf_ca_issue_server(ca, "Not A Name", 3600, &sc, &sk, &err) != 0);
    free(sc);
    free(sk);
    wf_ca_free(ca);
    /* A restart with the same files gives the same root. */
    wf_ca *again = NULL;
    CHECK_INT(wf_ca_load(dir, "example.org", &again, &err), 0);
    wf_ca_free(again);
out:
    wf_ca_chain_free(chain, n);
    free(key);
    free(csr);
    free(err);
    rm_dir(dir);
}

/* Loads dir and expects a refusal whose message holds every one of want[]. */
static void expect_refused(const char *dir, const char *const *want, size_t nwant)
{
    char *err = NULL;
    wf_ca *ca = NULL;
    CHECK(wf_ca_load_or_create(dir, "example.org", &ca, &err) != 0);
    CHECK(ca == NULL);
    for (size_t i = 0; i < nwant; i++)
        if (!err || !strstr(err, want[i])) {
            fprintf(stderr, "refusal \"%s\" lacks \"%s\"\n", err ? err : "(null)", want[i]);
            CHECK(0);
        }
    wf_ca_free(ca);
    free(err);
}

TEST(plugged_refusals)
{
    if (!have_openssl()) {
        fprintf(stderr, "plugged_refusals: openssl not installed, skipped\n");
        return;
    }
    char *dir = mkdir_tmp(), path[600];
    CHECK_INT(make_plugged(dir), 0);
    char *good_key = get(dir, "ca-key.pem"), *good_root = get(dir, "root-cert.pem");

    /* The wrong key for ca-cert.pem. */
    CHECK_INT(sh("cd '%s' && openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem "
                 "2>/dev/null",
                 dir),
              0);
    {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/ca-key.pem", dir);
        snprintf(b, sizeof b, "%s/ca-cert.pem", dir);
        const char *want[] = {a, b, "not the private key"};
        expect_refused(dir, want, 3);
    }
    put(dir, "ca-key.pem", good_key);

    /* A root that ca-cert.pem does not chain to (cert-chain.pem names the problem). */
    CHECK_INT(sh("cd '%s' && openssl ecparam -name prime256v1 -genkey -noout -out other-key.pem "
                 "2>/dev/null && openssl req -x509 -new -key other-key.pem "
                 "-subj '/O=Example Org/CN=Root CA' -days 3650 "
                 "-addext basicConstraints=critical,CA:TRUE "
                 "-addext keyUsage=critical,keyCertSign,cRLSign -out root-cert.pem 2>/dev/null",
                 dir),
              0);
    {
        char a[600];
        snprintf(a, sizeof a, "%s/root-cert.pem", dir);
        const char *want[] = {"cert-chain.pem does not chain to", a};
        expect_refused(dir, want, 2);
        snprintf(path, sizeof path, "%s/cert-chain.pem", dir);
        unlink(path);
        const char *want2[] = {"ca-cert.pem does not chain to", a};
        expect_refused(dir, want2, 2);
    }
    put(dir, "root-cert.pem", good_root);

    /* cert-chain.pem that does not start with ca-cert.pem. */
    put(dir, "cert-chain.pem", good_root);
    {
        const char *want[] = {"cert-chain.pem does not start with"};
        expect_refused(dir, want, 1);
    }
    unlink(path);

    /* Key without certificate: never silently replaced by a new root. */
    snprintf(path, sizeof path, "%s/ca-cert.pem", dir);
    unlink(path);
    {
        const char *want[] = {"has ca-key.pem but no ca-cert.pem"};
        expect_refused(dir, want, 1);
    }
    /* wf_ca_load never creates. */
    char *d2 = mkdir_tmp(), *err = NULL;
    wf_ca *ca = NULL;
    CHECK_INT(wf_ca_load(d2, NULL, &ca, &err), WF_CA_NO_CA);
    CHECK(err && strstr(err, "no CA in"));
    snprintf(path, sizeof path, "%s/ca-key.pem", d2);
    CHECK(access(path, F_OK) != 0);
    free(err);
    free(good_key);
    free(good_root);
    rm_dir(d2);
    rm_dir(dir);
}

TEST(csr_and_issued_checks)
{
    char *dir = mkdir_tmp(), *err = NULL, *key = NULL, *csr = NULL, **chain = NULL, **uris = NULL;
    size_t n = 0, nu = 0;
    wf_ca *ca = NULL;
    CHECK_INT(wf_ca_load_or_create(dir, "example.org", &ca, &err), 0);
    CHECK_INT(wf_ca_make_key_csr(&key, &csr, &err), 0);
    if (!ca || !csr)
        goto out;
    /* Our own CSR asks for no URI. */
    CHECK_INT(wf_ca_csr_check(csr, &uris, &nu, &err), 0);
    CHECK_INT(nu, 0);
    CHECK_INT(wf_ca_sign_csr(ca, csr, "spiffe://example.org/ns/a/sa/b", 600, &chain, &n, &err), 0);
    if (chain) {
        wf_ca_cert_info info;
        CHECK_INT(wf_ca_check_issued((const char *const *)chain, n, wf_ca_root_pem(ca), key,
                                     "spiffe://example.org/ns/a/sa/b", &info, &err),
                  0);
        CHECK_STR(info.identity, "spiffe://example.org/ns/a/sa/b");
        CHECK(strlen(info.serial) == 32);
        CHECK(info.not_after > time(NULL) + 500);
        free(err);
        err = NULL;
        CHECK(wf_ca_check_issued((const char *const *)chain, n, wf_ca_root_pem(ca), key,
                                 "spiffe://example.org/ns/a/sa/c", NULL, &err) != 0);
        CHECK(err && strstr(err, "where spiffe://example.org/ns/a/sa/c was expected"));
        char *k2 = NULL, *c2 = NULL;
        CHECK_INT(wf_ca_make_key_csr(&k2, &c2, &err), 0);
        free(err);
        err = NULL;
        CHECK(wf_ca_check_issued((const char *const *)chain, n, wf_ca_root_pem(ca), k2, NULL,
                                 NULL, &err) != 0);
        CHECK(err && strstr(err, "not for our key"));
        /* Another CA's root. */
        char *d2 = mkdir_tmp();
        wf_ca *other = NULL;
        CHECK_INT(wf_ca_load_or_create(d2, "example.org", &other, &err), 0);
        free(err);
        err = NULL;
        if (other)
            CHECK(wf_ca_check_issued((const char *const *)chain, n, wf_ca_root_pem(other), key,
                                     NULL, NULL, &err) != 0);
        CHECK(err && strstr(err, "does not chain"));
        wf_ca_free(other);
        rm_dir(d2);
        free(k2);
        free(c2);
    }
    if (have_openssl()) {
        /* openssl CSRs: one asking for URIs and a DNS name, one with an RSA key. */
        CHECK_INT(sh("cd '%s' && openssl ecparam -name prime256v1 -genkey -noout -out k.pem "
                     "2>/dev/null && openssl req -new -key k.pem -subj '/O=x' -addext "
                     "'subjectAltName=DNS:foo.example,URI:spiffe://example.org/ns/b/sa/y,"
                     "URI:https://x.example/' -out u.csr 2>/dev/null && "
                     "openssl req -new -newkey rsa:2048 -nodes -keyout r.pem -subj '/O=x' "
                     "-out r.csr 2>/dev/null",
                     dir),
                  0);
        char *u = get(dir, "u.csr"), *r = get(dir, "r.csr");
        CHECK_INT(wf_ca_csr_check(u, &uris, &nu, &err), 0);
        CHECK_INT(nu, 2);
        if (nu == 2) {
            CHECK_STR(uris[0], "spiffe://example.org/ns/b/sa/y");
            CHECK_STR(uris[1], "https://x.example/");
        }
        wf_ca_chain_free(uris, nu);
        uris = NULL;
        free(err);
        err = NULL;
        CHECK(wf_ca_csr_check(r, &uris, &nu, &err) != 0);
        CHECK(err && strstr(err, "P-256"));
        free(err);
        err = NULL;
        CHECK(wf_ca_csr_check("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE "
                              "REQUEST-----\n",
                              &uris, &nu, &err) != 0);
        CHECK(err && strstr(err, "not a valid PEM certificate request"));
        free(u);
        free(r);
    }
out:
    wf_ca_chain_free(uris, nu);
    wf_ca_chain_free(chain, n);
    wf_ca_free(ca);
    free(key);
    free(csr);
    free(err);
    rm_dir(dir);
}

int main(void)
{
    RUN(create_and_reload);
    RUN(sign_csr);
    RUN(spiffe_parse);
    RUN(tokens);
    RUN(plugged_certs);
    RUN(plugged_refusals);
    RUN(csr_and_issued_checks);
    return TEST_SUMMARY();
}
