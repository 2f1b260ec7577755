/*
 * values.c: syntax of the scalar values Istio gives meaning to: durations
 * ("1.5s", "100ms", "2m", "1h", "500us") and regular expressions, which
 * Istio defines as RE2.  weft matches with PCRE2, so a pattern is accepted
 * only if PCRE2 compiles it and it uses nothing RE2 lacks (backreferences,
 * lookaround, atomic groups, possessive quantifiers, recursion,
 * conditionals, verbs): then it matches the same strings in linear time.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "config/config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <pcre2.h>

int wf_duration_parse(const char *s, int64_t *ms, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1ULL},
        {"us", 1000ULL},
        {"\xc2\xb5s", 1000ULL}, /* U+00B5 micro sign */
        {"\xce\xbcs", 1000ULL}, /* U+03BC greek mu */
        {"ms", 1000000ULL},
        {"s", 1000000000ULL},
        {"m", 60ULL * 1000000000ULL},
        {"h", 3600ULL * 1000000000ULL},
    };
    const char *p = s;
    uint64_t total = 0;
    const uint64_t max = (uint64_t)INT64_MAX;

    if (!s || !*s)
        goto bad;
    if (*p == '-') {
        snprintf(err, errlen, "invalid duration \"%.64s\": must not be negative", s);
        return -1;
    }
    if (*p == '+')
        p++;
    if (strcmp(p, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (!*p)
        goto bad;
    while (*p) {
        uint64_t whole = 0, frac = 0, scale = 1, unit = 0, add;
        int digits = 0;
        size_t ulen = 0;

        while (*p >= '0' && *p <= '9') {
            if (whole > (max - 9) / 10)
                goto range;
            whole = whole * 10 + (uint64_t)(*p++ - '0');
            digits++;
        }
        if (*p == '.') {
            p++;
            while (*p >= '0' && *p <= '9') {
                /* Digits beyond nanosecond precision of an hour are noise. */
                if (scale < 1000000000000000ULL) {
                    frac = frac * 10 + (uint64_t)(*p - '0');
                    scale *= 10;
                }
                p++;
                digits++;
            }
        }
        if (!digits)
            goto bad;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            size_t l = strlen(units[i].name);
            /* Longest match: "ms" before "m", checked by trying longer first. */
            if (strncmp(p, units[i].name, l) == 0 && l > ulen) {
                ulen = l;
                unit = units[i].ns;
            }
        }
        if (!unit)
            goto bad;
        p += ulen;
        if (whole > max / unit)
            goto range;
        add = whole * unit;
        add += (uint64_t)((long double)frac * (long double)unit / (long double)scale);
        if (add > max - total)
            goto range;
        total += add;
    }
    *ms = (int64_t)(total / 1000000ULL);
    /* Keep a non-zero duration non-zero: "500us" means "a little", not "off". */
    if (total % 1000000ULL)
        *ms += 1;
    return 0;
bad:
    snprintf(err, errlen,
             "invalid duration \"%.64s\": expected a number and a unit (h, m, s, ms, us, ns), "
             "such as \"1.5s\", \"100ms\" or \"2m\"",
             s ? s : "");
    return -1;
range:
    snprintf(err, errlen, "invalid duration \"%.64s\": too large", s);
    return -1;
}

/* Finds the first construct RE2 does not support; returns its name or NULL. */
static const char *re2_unsupported(const char *re)
{
    const char *p = re;
    int in_class = 0;

    while (*p) {
        if (*p == '\\') {
            char n = p[1];
            if (!n)
                break;
            if (!in_class) {
                if (n >= '1' && n <= '9')
                    return "backreferences (\\1)";
                if (n == 'k' || n == 'g')
                    return "backreferences (\\k, \\g)";
            }
            p += 2;
            continue;
        }
        if (in_class) {
            if (*p == '[' && p[1] == ':') {
                const char *e = strstr(p + 2, ":]");
                if (e) {
                    p = e + 2;
                    continue;
                }
            }
            if (*p == ']')
                in_class = 0;
            p++;
            continue;
        }
        if (*p == '[') {
            in_class = 1;
            p++;
            if (*p == '^')
                p++;
            if (*p == ']') /* a leading ']' is literal */
                p++;
            continue;
        }
        if (*p == '(' && p[1] == '*')
            return "control verbs (*...)";
        if (*p == '(' && p[1] == '?') {
            const char *q = p + 2;
            if (*q == '=' || *q == '!')
                return "lookahead (?=...) and (?!...)";
            if (*q == '<' && (q[1] == '=' || q[1] == '!'))
                return "lookbehind (?<=...) and (?<!...)";
            if (*q == '>')
                return "atomic groups (?>...)";
            if (*q == '(')
                return "conditionals (?(...)...)";
            if (*q == '|')
                return "branch reset groups (?|...)";
            if (*q == '#')
                return "comments (?#...)";
            if (*q == 'R' || *q == '&' || (*q >= '0' && *q <= '9') ||
                ((*q == '+' || *q == '-') && q[1] >= '0' && q[1] <= '9') ||
                (*q == 'P' && (q[1] == '>' || q[1] == '=')))
                return "recursion and subroutine calls";
        }
        if ((*p == '*' || *p == '+' || *p == '?' || *p == '}') && p[1] == '+')
            return "possessive quantifiers (*+, ++, ?+)";
        p++;
    }
    return NULL;
}

int wf_regex_check(const char *re, char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE off;
    pcre2_code *code;
    const char *bad;

    code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &off, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        snprintf(err, errlen, "invalid regex \"%.80s\": %s at offset %zu", re, (char *)msg,
                 (size_t)off);
        return -1;
    }
    pcre2_code_free(code);
    bad = re2_unsupported(re);
    if (bad) {
        snprintf(err, errlen,
                 "invalid regex \"%.80s\": %s are not supported (Istio regexes are RE2 syntax)", re,
                 bad);
        return -1;
    }
    return 0;
}
