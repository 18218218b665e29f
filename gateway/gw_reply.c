/* SPDX-License-Identifier: Apache-2.0 */
/* JSON is written by hand (the shapes are fixed and small, and this runs for
 * every check-in); msgpack with msgpack-c's packer. */
#include "gw_reply.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_buf_init(gw_buf *b)
{
    b->p = b->inline_;
    b->len = 0;
    b->cap = sizeof(b->inline_);
    b->failed = 0;
}

void gw_buf_free(gw_buf *b)
{
    if (b->p != b->inline_)
        free(b->p);
    gw_buf_init(b);
}

static int buf_reserve(gw_buf *b, size_t n)
{
    if (b->failed)
        return -1;
    if (b->len + n <= b->cap)
        return 0;
    if (b->len + n > GW_BUF_CAP) {
        b->failed = 1;
        return -1;
    }
    size_t ncap = b->cap * 2;
    while (ncap < b->len + n)
        ncap *= 2;
    if (ncap > GW_BUF_CAP)
        ncap = GW_BUF_CAP;
    char *np = b->p == b->inline_ ? malloc(ncap) : realloc(b->p, ncap);
    if (!np) {
        b->failed = 1;
        return -1;
    }
    if (b->p == b->inline_)
        memcpy(np, b->inline_, b->len);
    b->p = np;
    b->cap = ncap;
    return 0;
}

static void put(gw_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

#define PUTS(b, lit) put(b, lit, sizeof(lit) - 1)

static void put_i64(gw_buf *b, int64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    put(b, tmp + i, sizeof(tmp) - (size_t)i);
}

/* A JSON string; s is valid UTF-8 (validated on the way in). */
static void put_jstr(gw_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    if (buf_reserve(b, n * 6 + 2) != 0)
        return;
    char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            *o++ = '\\';
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        } else {
            *o++ = (char)ch;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

static int mp_write(void *data, const char *buf, size_t len)
{
    put(data, buf, len);
    return ((gw_buf *)data)->failed ? -1 : 0;
}

static void mp_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

const char *gw_fmt_mime(gw_fmt f)
{
    return f == GW_FMT_MSGPACK ? "application/msgpack" : "application/json";
}

void gw_reply_directive(gw_buf *b, gw_fmt f, const fg_lock *lk,
                        int64_t next_checkin_s)
{
    if (f == GW_FMT_JSON) {
        if (!lk) {
            PUTS(b, "{\"status\":\"ok\",\"next_checkin_s\":");
            put_i64(b, next_checkin_s);
            PUTS(b, "}");
            return;
        }
        PUTS(b, "{\"status\":\"locked\",\"region\":");
        put_jstr(b, lk->region);
        PUTS(b, ",\"scope\":");
        put_jstr(b, fg_lock_scope_str(lk->scope));
        PUTS(b, ",\"reason\":");
        put_jstr(b, lk->reason);
        PUTS(b, ",\"message\":");
        put_jstr(b, lk->message);
        PUTS(b, ",\"until\":");
        put_i64(b, lk->until);
        PUTS(b, ",\"next_checkin_s\":");
        put_i64(b, next_checkin_s);
        PUTS(b, "}");
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, mp_write);
    if (!lk) {
        msgpack_pack_map(&pk, 2);
        mp_str(&pk, "status");
        mp_str(&pk, "ok");
        mp_str(&pk, "next_checkin_s");
        msgpack_pack_int64(&pk, next_checkin_s);
        return;
    }
    msgpack_pack_map(&pk, 7);
    mp_str(&pk, "status");
    mp_str(&pk, "locked");
    mp_str(&pk, "region");
    mp_str(&pk, lk->region);
    mp_str(&pk, "scope");
    mp_str(&pk, fg_lock_scope_str(lk->scope));
    mp_str(&pk, "reason");
    mp_str(&pk, lk->reason);
    mp_str(&pk, "message");
    mp_str(&pk, lk->message);
    mp_str(&pk, "until");
    msgpack_pack_int64(&pk, lk->until);
    mp_str(&pk, "next_checkin_s");
    msgpack_pack_int64(&pk, next_checkin_s);
}

void gw_reply_error(gw_buf *b, gw_fmt f, const char *code, const char *field,
                    const char *detail, int as_item, int retry)
{
    if (f == GW_FMT_JSON) {
        PUTS(b, "{");
        if (as_item)
            PUTS(b, "\"status\":\"error\",");
        PUTS(b, "\"error\":");
        put_jstr(b, code);
        if (field) {
            PUTS(b, ",\"field\":");
            put_jstr(b, field);
        }
        if (detail && detail[0]) {
            PUTS(b, ",\"detail\":");
            put_jstr(b, detail);
        }
        if (retry)
            PUTS(b, ",\"retry\":true");
        PUTS(b, "}");
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, mp_write);
    size_t n = 1 + (as_item ? 1 : 0) + (field ? 1 : 0) +
               (detail && detail[0] ? 1 : 0) + (retry ? 1 : 0);
    msgpack_pack_map(&pk, n);
    if (as_item) {
        mp_str(&pk, "status");
        mp_str(&pk, "error");
    }
    mp_str(&pk, "error");
    mp_str(&pk, code);
    if (field) {
        mp_str(&pk, "field");
        mp_str(&pk, field);
    }
    if (detail && detail[0]) {
        mp_str(&pk, "detail");
        mp_str(&pk, detail);
    }
    if (retry) {
        mp_str(&pk, "retry");
        msgpack_pack_true(&pk);
    }
}

void gw_reply_batch_open(gw_buf *b, gw_fmt f, size_t n)
{
    if (f == GW_FMT_JSON) {
        PUTS(b, "{\"results\":[");
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, mp_write);
    msgpack_pack_map(&pk, 1);
    mp_str(&pk, "results");
    msgpack_pack_array(&pk, n);
}

void gw_reply_batch_sep(gw_buf *b, gw_fmt f, size_t index)
{
    if (f == GW_FMT_JSON && index > 0)
        PUTS(b, ",");
}

void gw_reply_batch_close(gw_buf *b, gw_fmt f)
{
    if (f == GW_FMT_JSON)
        PUTS(b, "]}");
}
