/*
 * ca_test.c: unit tests for core/ca: root creation and reuse, CSR signing
 * into SPIFFE certificates, SAN parsing, SPIFFE ID validation and tokens.
 */
#define _GNU_SOURCE
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

int main(void)
{
    RUN(create_and_reload);
    RUN(sign_csr);
    RUN(spiffe_parse);
    RUN(tokens);
    return TEST_SUMMARY();
}
