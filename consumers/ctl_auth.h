/* SPDX-License-Identifier: Apache-2.0 */
/* Bearer-token authentication of the control service: a table of actors,
 * each with a role and the SHA-256 of its token (the configuration never
 * holds a token itself). A presented token is hashed and compared with every
 * entry in constant time (CRYPTO_memcmp, no early exit). Roles are ordered
 * viewer < operator < admin. */
#ifndef CTL_AUTH_H
#define CTL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "fg_status.h"

#define CTL_SHA256_LEN 32
#define CTL_ACTOR_MAX 64   /* bytes of an actor name */
#define CTL_TOKEN_MAX 512  /* bytes of a presented token */
#define CTL_TOKEN_MIN 16   /* bytes: --hash-token refuses shorter tokens */
#define CTL_AUTH_MAX 1024  /* entries of one table */

typedef enum ctl_role {
    CTL_ROLE_NONE = 0, /* not authenticated */
    CTL_ROLE_VIEWER = 1,
    CTL_ROLE_OPERATOR = 2,
    CTL_ROLE_ADMIN = 3
} ctl_role;

/* Why authentication failed, or CTL_AUTH_OK. */
typedef enum ctl_auth_result {
    CTL_AUTH_OK = 0,
    CTL_AUTH_MISSING,   /* no Authorization header */
    CTL_AUTH_MALFORMED, /* not "Bearer <token>", or a token over the caps */
    CTL_AUTH_UNKNOWN    /* no entry has this token's hash */
} ctl_auth_result;

typedef struct ctl_auth ctl_auth;

/* Who a request is. actor is "" when the request is not authenticated. */
typedef struct ctl_principal {
    char actor[CTL_ACTOR_MAX + 1];
    ctl_role role;
} ctl_principal;

/* Static names "none", "viewer", "operator", "admin". */
const char *ctl_role_str(ctl_role r);

/* Parses "viewer", "operator" or "admin"; CTL_ROLE_NONE when unknown. */
ctl_role ctl_role_parse(const char *s);

/* Static names "ok", "missing_token", "malformed_token", "unknown_token". */
const char *ctl_auth_result_str(ctl_auth_result r);

/* True when have is at least need (viewer < operator < admin); NONE never
 * satisfies anything. */
int ctl_role_allows(ctl_role have, ctl_role need);

/* SHA-256 of len bytes of data into out. Returns 0, or -1 when OpenSSL
 * failed (out is then not a digest). @thread any */
int ctl_sha256(const void *data, size_t len, unsigned char out[CTL_SHA256_LEN]);

/* Lower-case hex of a digest into out (65 bytes with the NUL). */
void ctl_sha256_hex(const unsigned char d[CTL_SHA256_LEN], char out[65]);

/* Returns an empty table, or NULL when out of memory. */
ctl_auth *ctl_auth_new(void);

/* NULL is a no-op. */
void ctl_auth_free(ctl_auth *a);

/* Adds actor (1-64 bytes of A-Z a-z 0-9 . _ @ -) from a configuration value
 * "role:sha256hex" (64 hex digits, either case; spaces around the parts
 * allowed). Both strings borrowed. FG_EINVAL with errbuf saying what is
 * wrong (bad actor name, unknown role, bad hash, an actor or a hash already
 * present); FG_ETOOBIG beyond CTL_AUTH_MAX entries; FG_ENOMEM. @thread main */
fg_status ctl_auth_add(ctl_auth *a, const char *actor, const char *value,
                       char *errbuf, size_t errlen);

/* Number of entries. */
size_t ctl_auth_count(const ctl_auth *a);

/* Authenticates the value of an Authorization header (NULL when absent):
 * "Bearer <token>" (scheme case-insensitive, one or more spaces, no other
 * parameters). The token is hashed and compared with every entry with
 * CRYPTO_memcmp, all of them whatever the outcome, so the time taken does
 * not depend on which entry matched or how much of a hash did. Fills *who
 * (role NONE, actor "" on failure). @thread any (the table is read-only
 * after configuration) */
ctl_auth_result ctl_auth_check(const ctl_auth *a, const char *header,
                               ctl_principal *who);

#endif
