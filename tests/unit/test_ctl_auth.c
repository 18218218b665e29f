/* SPDX-License-Identifier: Apache-2.0 */
/* Control-service authentication (consumers/ctl_auth.c): token hashes in
 * the configuration, bearer parsing, matching against every entry, roles,
 * and --hash-token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_auth.h"
#include "ctl_config.h"
#include "fg_test.h"

/* sha256("operator-token-0123456789"), computed by sha256sum. */
static const char OP_TOKEN[] = "operator-token-0123456789";

static void hex_of(const char *token, char out[65])
{
    unsigned char d[CTL_SHA256_LEN];
    FG_CHECK_INT(ctl_sha256(token, strlen(token), d), 0);
    ctl_sha256_hex(d, out);
}

static void test_sha256_known_vector(void)
{
    char hex[65];
    hex_of("abc", hex);
    FG_CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_roles_order(void)
{
    FG_CHECK(ctl_role_allows(CTL_ROLE_ADMIN, CTL_ROLE_OPERATOR));
    FG_CHECK(ctl_role_allows(CTL_ROLE_ADMIN, CTL_ROLE_VIEWER));
    FG_CHECK(ctl_role_allows(CTL_ROLE_OPERATOR, CTL_ROLE_OPERATOR));
    FG_CHECK(ctl_role_allows(CTL_ROLE_OPERATOR, CTL_ROLE_VIEWER));
    FG_CHECK(!ctl_role_allows(CTL_ROLE_OPERATOR, CTL_ROLE_ADMIN));
    FG_CHECK(!ctl_role_allows(CTL_ROLE_VIEWER, CTL_ROLE_OPERATOR));
    FG_CHECK(!ctl_role_allows(CTL_ROLE_NONE, CTL_ROLE_VIEWER));
    FG_CHECK(!ctl_role_allows(CTL_ROLE_ADMIN, CTL_ROLE_NONE));
    FG_CHECK_INT(ctl_role_parse("viewer"), CTL_ROLE_VIEWER);
    FG_CHECK_INT(ctl_role_parse("operator"), CTL_ROLE_OPERATOR);
    FG_CHECK_INT(ctl_role_parse("admin"), CTL_ROLE_ADMIN);
    FG_CHECK_INT(ctl_role_parse("Admin"), CTL_ROLE_NONE);
    FG_CHECK_INT(ctl_role_parse("root"), CTL_ROLE_NONE);
    FG_CHECK_STR(ctl_role_str(CTL_ROLE_OPERATOR), "operator");
}

static void test_config_values(void)
{
    char err[256], hex[65], val[128];
    ctl_auth *a = ctl_auth_new();
    hex_of(OP_TOKEN, hex);
    snprintf(val, sizeof(val), "operator:%s", hex);
    FG_CHECK_INT(ctl_auth_add(a, "alice", val, err, sizeof(err)), FG_OK);
    /* Upper-case hex and spaces around the parts are fine. */
    char up[65];
    hex_of("viewer-token-0123456789ab", up);
    for (int i = 0; i < 64; i++)
        if (up[i] >= 'a' && up[i] <= 'f')
            up[i] = (char)(up[i] - 'a' + 'A');
    snprintf(val, sizeof(val), " viewer : %s ", up);
    FG_CHECK_INT(ctl_auth_add(a, "vic.ops-1@corp", val, err, sizeof(err)),
                 FG_OK);
    FG_CHECK_INT(ctl_auth_count(a), 2);
    /* Refused: unknown role, short hash, non-hex, no colon, bad actor,
     * a repeated actor, a repeated hash. */
    snprintf(val, sizeof(val), "root:%s", hex);
    FG_CHECK_INT(ctl_auth_add(a, "bob", val, err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strstr(err, "unknown role") != NULL);
    FG_CHECK_INT(ctl_auth_add(a, "bob", "admin:abcd", err, sizeof(err)),
                 FG_EINVAL);
    FG_CHECK(strstr(err, "64 hex digits") != NULL);
    char bad[65];
    memcpy(bad, hex, 65);
    bad[10] = 'g';
    snprintf(val, sizeof(val), "admin:%s", bad);
    FG_CHECK_INT(ctl_auth_add(a, "bob", val, err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strstr(err, "non-hex") != NULL);
    FG_CHECK_INT(ctl_auth_add(a, "bob", hex, err, sizeof(err)), FG_EINVAL);
    snprintf(val, sizeof(val), "admin:%s", hex);
    FG_CHECK_INT(ctl_auth_add(a, "bo b", val, err, sizeof(err)), FG_EINVAL);
    FG_CHECK_INT(ctl_auth_add(a, "", val, err, sizeof(err)), FG_EINVAL);
    FG_CHECK_INT(ctl_auth_add(a, "alice", "admin:" "0000000000000000000000"
                              "000000000000000000000000000000000000000000",
                              err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strstr(err, "twice") != NULL);
    FG_CHECK_INT(ctl_auth_add(a, "mallory", val, err, sizeof(err)), FG_EINVAL);
    FG_CHECK(strstr(err, "alice") != NULL);
    FG_CHECK_INT(ctl_auth_count(a), 2);
    ctl_auth_free(a);
    ctl_auth_free(NULL);
}

static ctl_auth *table(void)
{
    static const char *const tokens[][3] = {
        {"vic", "viewer", "viewer-token-0123456789ab"},
        {"alice", "operator", "operator-token-0123456789"},
        {"root", "admin", "admin-token-0123456789abc"},
    };
    char err[256], hex[65], val[128];
    ctl_auth *a = ctl_auth_new();
    for (size_t i = 0; i < 3; i++) {
        hex_of(tokens[i][2], hex);
        snprintf(val, sizeof(val), "%s:%s", tokens[i][1], hex);
        FG_CHECK_INT(ctl_auth_add(a, tokens[i][0], val, err, sizeof(err)),
                     FG_OK);
    }
    return a;
}

static void test_bearer_check(void)
{
    ctl_auth *a = table();
    ctl_principal who;
    FG_CHECK_INT(ctl_auth_check(a, "Bearer operator-token-0123456789", &who),
                 CTL_AUTH_OK);
    FG_CHECK_STR(who.actor, "alice");
    FG_CHECK_INT(who.role, CTL_ROLE_OPERATOR);
    /* First and last entries match too (every entry is compared). */
    FG_CHECK_INT(ctl_auth_check(a, "bearer  viewer-token-0123456789ab ", &who),
                 CTL_AUTH_OK);
    FG_CHECK_STR(who.actor, "vic");
    FG_CHECK_INT(ctl_auth_check(a, "BEARER admin-token-0123456789abc", &who),
                 CTL_AUTH_OK);
    FG_CHECK_STR(who.actor, "root");
    FG_CHECK_INT(who.role, CTL_ROLE_ADMIN);
    /* Failures leave no identity behind. */
    FG_CHECK_INT(ctl_auth_check(a, NULL, &who), CTL_AUTH_MISSING);
    FG_CHECK_STR(who.actor, "");
    FG_CHECK_INT(who.role, CTL_ROLE_NONE);
    FG_CHECK_INT(ctl_auth_check(a, "Basic YWxpY2U6eA==", &who),
                 CTL_AUTH_MALFORMED);
    FG_CHECK_INT(ctl_auth_check(a, "Bearer", &who), CTL_AUTH_MALFORMED);
    FG_CHECK_INT(ctl_auth_check(a, "Bearer ", &who), CTL_AUTH_MALFORMED);
    FG_CHECK_INT(ctl_auth_check(a, "Beareroperator-token-0123456789", &who),
                 CTL_AUTH_MALFORMED);
    FG_CHECK_INT(ctl_auth_check(a, "Bearer operator-token 0123456789", &who),
                 CTL_AUTH_MALFORMED);
    FG_CHECK_INT(ctl_auth_check(a, "Bearer operator-token-012345678", &who),
                 CTL_AUTH_UNKNOWN);
    FG_CHECK_INT(ctl_auth_check(a, "Bearer operator-token-01234567890", &who),
                 CTL_AUTH_UNKNOWN);
    FG_CHECK_STR(who.actor, "");
    /* The configured hash is not a token: presenting it fails. */
    char hex[65], hdr[80];
    hex_of(OP_TOKEN, hex);
    snprintf(hdr, sizeof(hdr), "Bearer %s", hex);
    FG_CHECK_INT(ctl_auth_check(a, hdr, &who), CTL_AUTH_UNKNOWN);
    /* Over the cap. */
    char *big = malloc(CTL_TOKEN_MAX + 16);
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'x', CTL_TOKEN_MAX + 1);
    big[7 + CTL_TOKEN_MAX + 1] = '\0';
    FG_CHECK_INT(ctl_auth_check(a, big, &who), CTL_AUTH_MALFORMED);
    free(big);
    ctl_auth_free(a);
}

/* A stored hash equal to the token's in all but its last (or first) byte
 * must not match: the whole digest is compared. */
static void test_whole_digest_compared(void)
{
    char err[256], hex[65], val[128];
    ctl_principal who;
    for (int pos = 0; pos < 2; pos++) {
        ctl_auth *a = ctl_auth_new();
        hex_of(OP_TOKEN, hex);
        int at = pos == 0 ? 63 : 0;
        hex[at] = hex[at] == '0' ? '1' : '0';
        snprintf(val, sizeof(val), "operator:%s", hex);
        FG_CHECK_INT(ctl_auth_add(a, "alice", val, err, sizeof(err)), FG_OK);
        FG_CHECK_INT(ctl_auth_check(a, "Bearer operator-token-0123456789", &who),
                     CTL_AUTH_UNKNOWN);
        FG_CHECK_INT(who.role, CTL_ROLE_NONE);
        ctl_auth_free(a);
    }
    /* An empty table refuses everyone. */
    ctl_auth *a = ctl_auth_new();
    FG_CHECK_INT(ctl_auth_check(a, "Bearer operator-token-0123456789", &who),
                 CTL_AUTH_UNKNOWN);
    ctl_auth_free(a);
}

static int hash_of_input(const char *in, size_t n, char *out, size_t cap,
                         char *err, size_t ecap)
{
    FILE *fi = fmemopen((void *)in, n, "r");
    FILE *fo = fmemopen(out, cap, "w");
    FILE *fe = fmemopen(err, ecap, "w");
    memset(out, 0, cap);
    memset(err, 0, ecap);
    int rc = ctl_hash_token(fi, fo, fe);
    fclose(fi);
    fclose(fo);
    fclose(fe);
    return rc;
}

static void test_hash_token_cli(void)
{
    char out[128], err[256], want[66];
    hex_of(OP_TOKEN, want);
    strcat(want, "\n");
    FG_CHECK_INT(hash_of_input("operator-token-0123456789\n", 26, out,
                               sizeof(out), err, sizeof(err)), 0);
    FG_CHECK_STR(out, want);
    FG_CHECK_INT(hash_of_input("operator-token-0123456789\r\n", 27, out,
                               sizeof(out), err, sizeof(err)), 0);
    FG_CHECK_STR(out, want);
    FG_CHECK_INT(hash_of_input("operator-token-0123456789", 25, out,
                               sizeof(out), err, sizeof(err)), 0);
    FG_CHECK_STR(out, want);
    FG_CHECK_INT(hash_of_input("short\n", 6, out, sizeof(out), err,
                               sizeof(err)), 2);
    FG_CHECK_STR(out, "");
    FG_CHECK(strstr(err, "at least 16") != NULL);
    FG_CHECK_INT(hash_of_input("has a space in it ok\n", 21, out, sizeof(out),
                               err, sizeof(err)), 2);
    FG_CHECK_INT(hash_of_input("", 0, out, sizeof(out), err, sizeof(err)), 2);
    /* Two lines: the newline inside is refused, never silently cut. */
    FG_CHECK_INT(hash_of_input("operator-token-0123456789\nmore\n", 31, out,
                               sizeof(out), err, sizeof(err)), 2);
}

FG_TEST_MAIN(test_sha256_known_vector, test_roles_order, test_config_values,
             test_bearer_check, test_whole_digest_compared,
             test_hash_token_cli)
