/* SPDX-License-Identifier: Apache-2.0 */
/* Routes, query and body validation of the control API (yajl's tree for the
 * small JSON bodies, with our own checks for duplicates and \u0000). */
#include "ctl_req.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "fg_utf8.h"

/* Length (1-4) of the character that starts s[0..n) when it is strict
 * UTF-8 and not a C0 control or DEL; 0 for a control character, an
 * overlong form, a surrogate, a code point over U+10FFFF, a stray or a cut
 * sequence. yajl's parser lets all of these invalid forms through (and
 * decodes a lone "\udc00" escape into a surrogate), but fg_lock_decode
 * refuses them, so a lock record carrying one would be published and then
 * ignored by every reader. */
static size_t text_char(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return s[0] < 0x20 || s[0] == 0x7f ? 0 : 1;
    return fg_utf8_seq(s, n);
}

/* Copies s into out[cap] as clean text: whole characters only (never cut
 * inside one), anything text_char refuses as '?'. The error's field and
 * detail carry request bytes (a JSON key, a query key) and snprintf cuts;
 * both go into a JSON answer whose generator drops invalid UTF-8, which
 * left the error object malformed. */
static void copy_text(char *out, size_t cap, const char *s)
{
    size_t n = strlen(s), i = 0, o = 0;
    while (i < n) {
        size_t k = text_char((const unsigned char *)s + i, n - i);
        const char *from = k ? s + i : "?";
        size_t w = k ? k : 1;
        if (o + w >= cap)
            break;
        memcpy(out + o, from, w);
        o += w;
        i += w;
    }
    out[o] = '\0';
}

static void set_err(ctl_req_error *err, const char *code, const char *field,
                    const char *detail)
{
    err->code = code;
    copy_text(err->field, sizeof(err->field), field ? field : "");
    copy_text(err->detail, sizeof(err->detail), detail ? detail : "");
}

/* ---- routes ---- */

static int seg_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

ctl_route ctl_route_match(fg_http_method meth, const char *path, size_t len,
                          char region[CTL_SEGMENT_MAX + 1], int *method_ok)
{
    const char *seg[5];
    size_t segn[5], nseg = 0, i = 0;
    ctl_route r = CTL_ROUTE_NONE;
    int is_get = meth == FG_HTTP_GET || meth == FG_HTTP_HEAD;
    region[0] = '\0';
    *method_ok = 0;
    if (len == 0 || path[0] != '/')
        return CTL_ROUTE_NONE;
    /* Split on '/': at most 4 non-empty segments, no empty one. */
    i = 1;
    while (i <= len) {
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        if (i == start || nseg == 4)
            return CTL_ROUTE_NONE;
        seg[nseg] = path + start;
        segn[nseg++] = i - start;
        i++;
    }
    if (nseg < 2 || !seg_eq(seg[0], segn[0], "v1"))
        return CTL_ROUTE_NONE;
    if (seg_eq(seg[1], segn[1], "regions")) {
        if (nseg == 2)
            r = CTL_ROUTE_LIST;
        else if (nseg == 3)
            r = CTL_ROUTE_REGION;
        else if (seg_eq(seg[3], segn[3], "lock"))
            r = CTL_ROUTE_LOCK;
        else if (seg_eq(seg[3], segn[3], "unlock"))
            r = CTL_ROUTE_UNLOCK;
        else if (seg_eq(seg[3], segn[3], "policy"))
            r = meth == FG_HTTP_DELETE ? CTL_ROUTE_POLICY_RESET
                                       : CTL_ROUTE_POLICY;
        else
            return CTL_ROUTE_NONE;
        if (nseg >= 3) {
            size_t n = segn[2] < CTL_SEGMENT_MAX ? segn[2] : CTL_SEGMENT_MAX;
            memcpy(region, seg[2], n);
            region[n] = '\0';
        }
    } else if (seg_eq(seg[1], segn[1], "stream") && nseg == 2) {
        r = CTL_ROUTE_STREAM;
    } else if (seg_eq(seg[1], segn[1], "locks") && nseg == 3 &&
               seg_eq(seg[2], segn[2], "unlock-all")) {
        r = CTL_ROUTE_UNLOCK_ALL;
    } else if (seg_eq(seg[1], segn[1], "requests") && nseg == 4 &&
               seg_eq(seg[3], segn[3], "approve")) {
        size_t n = segn[2] < CTL_SEGMENT_MAX ? segn[2] : CTL_SEGMENT_MAX;
        memcpy(region, seg[2], n);
        region[n] = '\0';
        r = CTL_ROUTE_APPROVE;
    } else {
        return CTL_ROUTE_NONE;
    }
    if (r == CTL_ROUTE_LIST || r == CTL_ROUTE_REGION)
        *method_ok = is_get;
    else if (r == CTL_ROUTE_STREAM)
        *method_ok = meth == FG_HTTP_GET;
    else if (r == CTL_ROUTE_POLICY)
        *method_ok = meth == FG_HTTP_PUT;
    else if (r == CTL_ROUTE_POLICY_RESET)
        *method_ok = meth == FG_HTTP_DELETE;
    else
        *method_ok = meth == FG_HTTP_POST;
    return r;
}

const char *ctl_route_str(ctl_route r)
{
    switch (r) {
    case CTL_ROUTE_LIST: return "list";
    case CTL_ROUTE_REGION: return "region";
    case CTL_ROUTE_LOCK: return "lock";
    case CTL_ROUTE_UNLOCK: return "unlock";
    case CTL_ROUTE_UNLOCK_ALL: return "unlock_all";
    case CTL_ROUTE_APPROVE: return "approve";
    case CTL_ROUTE_POLICY: return "policy";
    case CTL_ROUTE_POLICY_RESET: return "policy_reset";
    case CTL_ROUTE_STREAM: return "stream";
    default: return "none";
    }
}

const char *ctl_route_allow(ctl_route r)
{
    if (r == CTL_ROUTE_LIST || r == CTL_ROUTE_REGION)
        return "GET, HEAD";
    if (r == CTL_ROUTE_STREAM)
        return "GET";
    if (r == CTL_ROUTE_POLICY || r == CTL_ROUTE_POLICY_RESET)
        return "PUT, DELETE";
    return "POST";
}

int ctl_req_region_ok(const char *region)
{
    return fg_region_valid(region, strlen(region));
}

int ctl_req_id_ok(const char *id)
{
    return strlen(id) == 20 && memcmp(id, "req-", 4) == 0 &&
           strspn(id + 4, "0123456789abcdef") == 16;
}

/* ---- query ---- */

fg_status ctl_req_list_query(const char *query, ctl_list_query *q,
                             ctl_req_error *err)
{
    static const char *const states[] = {"unlocked", "locked", "shadow",
                                         "suppressed", "expired"};
    int seen_sort = 0, seen_state = 0;
    q->sort = CTL_SORT_REGION;
    q->state = -1;
    if (!query || !*query)
        return FG_OK;
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        char key[16], val[16];
        if (n == 0 || !eq || memchr(p, '%', n)) {
            set_err(err, "invalid_query", "", "expected key=value pairs, "
                    "sort=share|devices|region, state=<lock state>");
            return FG_EINVAL;
        }
        size_t kn = (size_t)(eq - p), vn = n - kn - 1;
        if (kn >= sizeof(key) || vn >= sizeof(val)) {
            set_err(err, "invalid_query", "", "unknown query parameter");
            return FG_EINVAL;
        }
        memcpy(key, p, kn);
        key[kn] = '\0';
        memcpy(val, eq + 1, vn);
        val[vn] = '\0';
        if (strcmp(key, "sort") == 0 && !seen_sort) {
            seen_sort = 1;
            if (strcmp(val, "region") == 0)
                q->sort = CTL_SORT_REGION;
            else if (strcmp(val, "share") == 0)
                q->sort = CTL_SORT_SHARE;
            else if (strcmp(val, "devices") == 0)
                q->sort = CTL_SORT_DEVICES;
            else {
                set_err(err, "invalid_query", "sort",
                        "sort is one of share, devices, region");
                return FG_EINVAL;
            }
        } else if (strcmp(key, "state") == 0 && !seen_state) {
            seen_state = 1;
            for (int i = 0; i < 5; i++)
                if (strcmp(val, states[i]) == 0)
                    q->state = i;
            if (q->state < 0) {
                set_err(err, "invalid_query", "state",
                        "state is one of locked, unlocked, shadow, "
                        "suppressed, expired");
                return FG_EINVAL;
            }
        } else {
            set_err(err, "invalid_query", key,
                    "unknown or repeated query parameter");
            return FG_EINVAL;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return FG_OK;
}

/* ---- bodies ---- */

int ctl_req_json_has_nul(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && i + 5 < len && s[i + 2] == '0' &&
            s[i + 3] == '0' && s[i + 4] == '0' && s[i + 5] == '0')
            return 1;
        i++; /* skip the escaped character */
    }
    return 0;
}

/* Parses body into a tree whose root is an object. NULL with *err. */
static yajl_val parse_object(const char *body, size_t len, ctl_req_error *err,
                             fg_status *st)
{
    char ebuf[128];
    *st = FG_EINVAL;
    if (!body || len == 0) {
        set_err(err, "invalid_json", "", "the body is empty");
        return NULL;
    }
    if (memchr(body, '\0', len) || ctl_req_json_has_nul(body, len)) {
        set_err(err, "invalid_json", "", "the body contains NUL");
        return NULL;
    }
    char *text = malloc(len + 1);
    if (!text) {
        *st = FG_ENOMEM;
        set_err(err, "no_memory", "", "out of memory");
        return NULL;
    }
    memcpy(text, body, len);
    text[len] = '\0';
    ebuf[0] = '\0';
    yajl_val root = yajl_tree_parse(text, ebuf, sizeof(ebuf));
    free(text);
    if (!root) {
        /* yajl's message spans lines; keep its first. */
        char *nl = strchr(ebuf, '\n');
        if (nl)
            *nl = '\0';
        set_err(err, "invalid_json", "", ebuf[0] ? ebuf : "not JSON");
        return NULL;
    }
    if (!YAJL_IS_OBJECT(root)) {
        yajl_tree_free(root);
        set_err(err, "not_an_object", "", "the body must be a JSON object");
        return NULL;
    }
    for (size_t i = 0; i < root->u.object.len; i++)
        for (size_t j = i + 1; j < root->u.object.len; j++)
            if (strcmp(root->u.object.keys[i], root->u.object.keys[j]) == 0) {
                set_err(err, "invalid_json", root->u.object.keys[i],
                        "duplicate key");
                yajl_tree_free(root);
                return NULL;
            }
    *st = FG_OK;
    return root;
}

/* Copies a string field under the caps; blank_ok allows "" and spaces. */
static int take_string(yajl_val v, const char *field, char *out, size_t cap,
                       int blank_ok, ctl_req_error *err)
{
    char d[96];
    if (!YAJL_IS_STRING(v)) {
        snprintf(d, sizeof(d), "%s must be a string", field);
        set_err(err, "wrong_type", field, d);
        return -1;
    }
    const char *s = v->u.string;
    size_t n = strlen(s);
    if (n >= cap) {
        snprintf(d, sizeof(d), "%s is over %zu bytes", field, cap - 1);
        set_err(err, "too_long", field, d);
        return -1;
    }
    int blank = 1;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = text_char((const unsigned char *)s + i, n - i);
        if (k == 0) {
            snprintf(d, sizeof(d), "%s has %s", field,
                     c < 0x80 ? "a control character" : "invalid UTF-8");
            set_err(err, "invalid_value", field, d);
            return -1;
        }
        if (c != ' ')
            blank = 0;
        i += k;
    }
    if (blank && !blank_ok) {
        snprintf(d, sizeof(d), "%s must not be empty", field);
        set_err(err, "invalid_value", field, d);
        return -1;
    }
    memcpy(out, s, n + 1);
    return 0;
}

static int take_int(yajl_val v, const char *field, int64_t min, int64_t max,
                    int64_t *out, ctl_req_error *err)
{
    char d[96];
    if (!YAJL_IS_INTEGER(v)) {
        snprintf(d, sizeof(d), "%s must be an integer", field);
        set_err(err, "wrong_type", field, d);
        return -1;
    }
    long long x = YAJL_GET_INTEGER(v);
    if (x < min || x > max) {
        snprintf(d, sizeof(d), "%s must be %lld..%lld", field, (long long)min,
                 (long long)max);
        set_err(err, "out_of_range", field, d);
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

static int take_bool(yajl_val v, const char *field, int *out,
                     ctl_req_error *err)
{
    char d[96];
    if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) {
        snprintf(d, sizeof(d), "%s must be true or false", field);
        set_err(err, "wrong_type", field, d);
        return -1;
    }
    *out = YAJL_IS_TRUE(v);
    return 0;
}

static void missing_reason(ctl_req_error *err)
{
    set_err(err, "missing_field", "reason",
            "reason is required: say why, for the audit trail");
}

fg_status ctl_req_parse_lock(const char *body, size_t len,
                             const ctl_req_limits *lim, ctl_lock_req *out,
                             ctl_req_error *err)
{
    fg_status st;
    int have_reason = 0;
    memset(out, 0, sizeof(*out));
    out->ttl_s = lim->default_ttl_s;
    out->scope = FG_SCOPE_GREY;
    yajl_val root = parse_object(body, len, err, &st);
    if (!root)
        return st;
    st = FG_EINVAL;
    for (size_t i = 0; i < root->u.object.len; i++) {
        const char *k = root->u.object.keys[i];
        yajl_val v = root->u.object.values[i];
        int known = strcmp(k, "reason") == 0 || strcmp(k, "ttl_s") == 0 ||
                    strcmp(k, "scope") == 0 || strcmp(k, "message") == 0 ||
                    strcmp(k, "dry_run") == 0;
        if (!known) {
            set_err(err, "unknown_field", k,
                    "fields: ttl_s, scope, reason, message, dry_run");
            goto out;
        }
        if (YAJL_IS_NULL(v))
            continue;
        if (strcmp(k, "reason") == 0) {
            if (take_string(v, k, out->reason, sizeof(out->reason), 0, err))
                goto out;
            have_reason = 1;
        } else if (strcmp(k, "ttl_s") == 0) {
            if (take_int(v, k, 1, lim->max_ttl_s, &out->ttl_s, err))
                goto out;
        } else if (strcmp(k, "scope") == 0) {
            if (!YAJL_IS_STRING(v)) {
                set_err(err, "wrong_type", k, "scope must be a string");
                goto out;
            }
            if (strcmp(v->u.string, "grey") == 0)
                out->scope = FG_SCOPE_GREY;
            else if (strcmp(v->u.string, "all") == 0)
                out->scope = FG_SCOPE_ALL;
            else {
                set_err(err, "invalid_value", k, "scope is grey or all");
                goto out;
            }
        } else if (strcmp(k, "message") == 0) {
            if (take_string(v, k, out->message, sizeof(out->message), 1, err))
                goto out;
            out->has_message = 1;
        } else if (take_bool(v, k, &out->dry_run, err)) {
            goto out;
        }
    }
    if (!have_reason) {
        missing_reason(err);
        goto out;
    }
    st = FG_OK;
out:
    yajl_tree_free(root);
    return st;
}

fg_status ctl_req_parse_unlock(const char *body, size_t len,
                               const ctl_req_limits *lim, ctl_unlock_req *out,
                               ctl_req_error *err)
{
    fg_status st;
    int have_reason = 0;
    memset(out, 0, sizeof(*out));
    yajl_val root = parse_object(body, len, err, &st);
    if (!root)
        return st;
    st = FG_EINVAL;
    for (size_t i = 0; i < root->u.object.len; i++) {
        const char *k = root->u.object.keys[i];
        yajl_val v = root->u.object.values[i];
        if (strcmp(k, "reason") != 0 && strcmp(k, "pin_s") != 0 &&
            strcmp(k, "dry_run") != 0) {
            set_err(err, "unknown_field", k, "fields: reason, pin_s, dry_run");
            goto out;
        }
        if (YAJL_IS_NULL(v))
            continue;
        if (strcmp(k, "reason") == 0) {
            if (take_string(v, k, out->reason, sizeof(out->reason), 0, err))
                goto out;
            have_reason = 1;
        } else if (strcmp(k, "pin_s") == 0) {
            if (take_int(v, k, 0, lim->max_pin_s, &out->pin_s, err))
                goto out;
        } else if (take_bool(v, k, &out->dry_run, err)) {
            goto out;
        }
    }
    if (!have_reason) {
        missing_reason(err);
        goto out;
    }
    st = FG_OK;
out:
    yajl_tree_free(root);
    return st;
}

fg_status ctl_req_parse_reason(const char *body, size_t len, char *reason,
                               ctl_req_error *err)
{
    fg_status st;
    int have_reason = 0;
    reason[0] = '\0';
    yajl_val root = parse_object(body, len, err, &st);
    if (!root)
        return st;
    st = FG_EINVAL;
    for (size_t i = 0; i < root->u.object.len; i++) {
        const char *k = root->u.object.keys[i];
        yajl_val v = root->u.object.values[i];
        if (strcmp(k, "reason") != 0) {
            set_err(err, "unknown_field", k, "fields: reason");
            goto out;
        }
        if (YAJL_IS_NULL(v))
            continue;
        if (take_string(v, k, reason, FG_LOCK_REASON_MAX + 1, 0, err))
            goto out;
        have_reason = 1;
    }
    if (!have_reason) {
        missing_reason(err);
        goto out;
    }
    st = FG_OK;
out:
    yajl_tree_free(root);
    return st;
}

/* ---- policy ---- */

static const char *const policy_keys[] = {
    "mode", "lock_at", "unlock_at", "min_devices", "for",
    "ttl", "cooldown", "scope", "message"};

static int policy_key(const char *k)
{
    for (size_t i = 0; i < sizeof(policy_keys) / sizeof(policy_keys[0]); i++)
        if (strcmp(k, policy_keys[i]) == 0)
            return 1;
    return 0;
}

/* The key an sc_policy errbuf ("unlock_at: must be ...") names. */
static void policy_err(ctl_req_error *err, const char *ebuf)
{
    char key[32];
    const char *colon = strchr(ebuf, ':');
    size_t n = colon ? (size_t)(colon - ebuf) : 0;
    if (n >= sizeof(key))
        n = 0;
    memcpy(key, ebuf, n);
    key[n] = '\0';
    set_err(err, "invalid_value", key, ebuf);
}

fg_status ctl_req_parse_policy(const char *body, size_t len,
                               const sc_rails *rails, sc_policy *out,
                               char *reason, ctl_req_error *err)
{
    fg_status st;
    int have_reason = 0, have_ttl = 0;
    char ebuf[160], text[SC_TEMPLATE_MAX + 1], d[96];
    sc_policy_default(out);
    reason[0] = '\0';
    yajl_val root = parse_object(body, len, err, &st);
    if (!root)
        return st;
    st = FG_EINVAL;
    for (size_t i = 0; i < root->u.object.len; i++) {
        const char *k = root->u.object.keys[i];
        yajl_val v = root->u.object.values[i];
        if (strcmp(k, "reason") != 0 && !policy_key(k)) {
            set_err(err, "unknown_field", k, "fields: reason, mode, lock_at, "
                    "unlock_at, min_devices, for, ttl, cooldown, scope, "
                    "message");
            goto out;
        }
        if (YAJL_IS_NULL(v))
            continue;
        if (strcmp(k, "reason") == 0) {
            if (take_string(v, k, reason, FG_LOCK_REASON_MAX + 1, 0, err))
                goto out;
            have_reason = 1;
            continue;
        }
        if (YAJL_IS_STRING(v)) {
            if (take_string(v, k, text, sizeof(text), 1, err))
                goto out;
        } else if (YAJL_IS_INTEGER(v)) {
            snprintf(text, sizeof(text), "%lld", YAJL_GET_INTEGER(v));
        } else if (YAJL_IS_DOUBLE(v)) {
            snprintf(text, sizeof(text), "%.17g", YAJL_GET_DOUBLE(v));
        } else {
            snprintf(d, sizeof(d), "%s must be a string or a number", k);
            set_err(err, "wrong_type", k, d);
            goto out;
        }
        if (sc_policy_set(out, k, text, ebuf, sizeof(ebuf)) != FG_OK) {
            policy_err(err, ebuf);
            goto out;
        }
        if (strcmp(k, "ttl") == 0)
            have_ttl = 1;
    }
    /* The default ttl follows a lower max_ttl; a given one must fit. */
    if (!have_ttl && out->ttl_ms > rails->max_ttl_ms)
        out->ttl_ms = rails->max_ttl_ms;
    if (!have_reason) {
        missing_reason(err);
        goto out;
    }
    if (sc_policy_check(out, rails, ebuf, sizeof(ebuf)) != FG_OK) {
        policy_err(err, ebuf);
        goto out;
    }
    st = FG_OK;
out:
    yajl_tree_free(root);
    return st;
}

static void gen_key(yajl_gen g, const char *key)
{
    yajl_gen_string(g, (const unsigned char *)key, strlen(key));
}

void ctl_policy_json(yajl_gen g, const sc_policy *p)
{
    yajl_gen_map_open(g);
    gen_key(g, "mode");
    gen_key(g, sc_mode_str(p->mode));
    gen_key(g, "lock_at");
    yajl_gen_double(g, p->lock_at);
    gen_key(g, "unlock_at");
    yajl_gen_double(g, p->unlock_at);
    gen_key(g, "min_devices");
    yajl_gen_integer(g, p->min_devices);
    gen_key(g, "for");
    yajl_gen_integer(g, p->for_ms);
    gen_key(g, "ttl");
    yajl_gen_integer(g, p->ttl_ms);
    gen_key(g, "cooldown");
    yajl_gen_integer(g, p->cooldown_ms);
    gen_key(g, "scope");
    gen_key(g, fg_lock_scope_str(p->scope));
    gen_key(g, "message");
    gen_key(g, p->message);
    yajl_gen_map_close(g);
}
