/* SPDX-License-Identifier: Apache-2.0 */
/* Token table, SHA-256 hashing and constant-time matching. */
#include "ctl_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct ctl_auth_entry {
    char actor[CTL_ACTOR_MAX + 1];
    ctl_role role;
    unsigned char hash[CTL_SHA256_LEN];
} ctl_auth_entry;

struct ctl_auth {
    ctl_auth_entry *items;
    size_t n, cap;
};

const char *ctl_role_str(ctl_role r)
{
    switch (r) {
    case CTL_ROLE_VIEWER: return "viewer";
    case CTL_ROLE_OPERATOR: return "operator";
    case CTL_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

ctl_role ctl_role_parse(const char *s)
{
    if (!s)
        return CTL_ROLE_NONE;
    if (strcmp(s, "viewer") == 0)
        return CTL_ROLE_VIEWER;
    if (strcmp(s, "operator") == 0)
        return CTL_ROLE_OPERATOR;
    if (strcmp(s, "admin") == 0)
        return CTL_ROLE_ADMIN;
    return CTL_ROLE_NONE;
}

const char *ctl_auth_result_str(ctl_auth_result r)
{
    switch (r) {
    case CTL_AUTH_OK: return "ok";
    case CTL_AUTH_MISSING: return "missing_token";
    case CTL_AUTH_MALFORMED: return "malformed_token";
    default: return "unknown_token";
    }
}

int ctl_role_allows(ctl_role have, ctl_role need)
{
    return have != CTL_ROLE_NONE && need != CTL_ROLE_NONE && have >= need;
}

int ctl_sha256(const void *data, size_t len, unsigned char out[CTL_SHA256_LEN])
{
    unsigned int n = CTL_SHA256_LEN;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 ||
        n != CTL_SHA256_LEN)
        return -1;
    return 0;
}

void ctl_sha256_hex(const unsigned char d[CTL_SHA256_LEN], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < CTL_SHA256_LEN; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
}

ctl_auth *ctl_auth_new(void)
{
    return calloc(1, sizeof(ctl_auth));
}

void ctl_auth_free(ctl_auth *a)
{
    if (!a)
        return;
    OPENSSL_cleanse(a->items, a->cap * sizeof(*a->items));
    free(a->items);
    free(a);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int actor_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CTL_ACTOR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' ||
                 c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

/* s[0..n) without leading and trailing spaces or tabs. */
static void trim(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

fg_status ctl_auth_add(ctl_auth *a, const char *actor, const char *value,
                       char *errbuf, size_t errlen)
{
    ctl_auth_entry e;
    char role[16];
    memset(&e, 0, sizeof(e));
    if (!actor_valid(actor)) {
        snprintf(errbuf, errlen,
                 "actor name must be 1-%d bytes of A-Z a-z 0-9 . _ @ -",
                 CTL_ACTOR_MAX);
        return FG_EINVAL;
    }
    const char *colon = value ? strchr(value, ':') : NULL;
    if (!colon) {
        snprintf(errbuf, errlen, "expected role:sha256hex");
        return FG_EINVAL;
    }
    const char *rs = value, *hs = colon + 1;
    size_t rn = (size_t)(colon - value), hn = strlen(hs);
    trim(&rs, &rn);
    trim(&hs, &hn);
    if (rn >= sizeof(role)) {
        snprintf(errbuf, errlen, "unknown role (viewer, operator or admin)");
        return FG_EINVAL;
    }
    memcpy(role, rs, rn);
    role[rn] = '\0';
    e.role = ctl_role_parse(role);
    if (e.role == CTL_ROLE_NONE) {
        snprintf(errbuf, errlen, "unknown role '%s' (viewer, operator or admin)",
                 role);
        return FG_EINVAL;
    }
    if (hn != 2 * CTL_SHA256_LEN) {
        snprintf(errbuf, errlen,
                 "the hash must be 64 hex digits (fleetgate-control "
                 "--hash-token), got %zu characters", hn);
        return FG_EINVAL;
    }
    for (size_t i = 0; i < CTL_SHA256_LEN; i++) {
        int hi = hexval(hs[2 * i]), lo = hexval(hs[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(errbuf, errlen, "the hash has a non-hex character");
            return FG_EINVAL;
        }
        e.hash[i] = (unsigned char)(hi << 4 | lo);
    }
    snprintf(e.actor, sizeof(e.actor), "%s", actor);
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->items[i].actor, actor) == 0) {
            snprintf(errbuf, errlen, "actor '%s' is listed twice", actor);
            return FG_EINVAL;
        }
        if (memcmp(a->items[i].hash, e.hash, CTL_SHA256_LEN) == 0) {
            snprintf(errbuf, errlen, "the same token hash as actor '%s'",
                     a->items[i].actor);
            return FG_EINVAL;
        }
    }
    if (a->n >= CTL_AUTH_MAX) {
        snprintf(errbuf, errlen, "more than %d tokens", CTL_AUTH_MAX);
        return FG_ETOOBIG;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        ctl_auth_entry *items = calloc(cap, sizeof(*items));
        if (!items) {
            snprintf(errbuf, errlen, "out of memory");
            return FG_ENOMEM;
        }
        if (a->n)
            memcpy(items, a->items, a->n * sizeof(*items));
        OPENSSL_cleanse(a->items, a->cap * sizeof(*a->items));
        free(a->items);
        a->items = items;
        a->cap = cap;
    }
    a->items[a->n++] = e;
    return FG_OK;
}

size_t ctl_auth_count(const ctl_auth *a)
{
    return a->n;
}

ctl_auth_result ctl_auth_check(const ctl_auth *a, const char *header,
                               ctl_principal *who)
{
    unsigned char h[CTL_SHA256_LEN];
    size_t match = (size_t)-1;
    memset(who, 0, sizeof(*who));
    if (!header)
        return CTL_AUTH_MISSING;
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp(header, "Bearer", 6) != 0 ||
        (header[6] != ' ' && header[6] != '\t'))
        return CTL_AUTH_MALFORMED;
    const char *tok = header + 6;
    while (*tok == ' ' || *tok == '\t')
        tok++;
    size_t n = strlen(tok);
    while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        n--;
    if (n == 0 || n > CTL_TOKEN_MAX)
        return CTL_AUTH_MALFORMED;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f)
            return CTL_AUTH_MALFORMED;
    if (ctl_sha256(tok, n, h) != 0)
        return CTL_AUTH_UNKNOWN;
    /* Every entry is compared, whatever matched before. */
    for (size_t i = 0; i < a->n; i++) {
        int differs = CRYPTO_memcmp(h, a->items[i].hash, CTL_SHA256_LEN);
        size_t mask = (size_t)0 - (size_t)(differs == 0);
        match = (match & ~mask) | (i & mask);
    }
    OPENSSL_cleanse(h, sizeof(h));
    if (match == (size_t)-1)
        return CTL_AUTH_UNKNOWN;
    who->role = a->items[match].role;
    snprintf(who->actor, sizeof(who->actor), "%s", a->items[match].actor);
    return CTL_AUTH_OK;
}
