/* SPDX-License-Identifier: Apache-2.0 */
/* Region code syntax and the grey rule: a market map (market name -> set of
 * allowed countries, a bitset over the 26x26 two-letter codes) kept sorted
 * for binary search, so the per-request lookup allocates nothing. */
#include "fg_region.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hard cap on configured markets; real deployments have a few dozen. */
#define FG_MARKET_CAP 4096
#define FG_MARKET_NAME_MAX 8
#define FG_COUNTRY_SLOTS (26 * 26)
#define FG_COUNTRY_WORDS ((FG_COUNTRY_SLOTS + 63) / 64)

typedef struct fg_market {
    uint64_t key; /* name packed big-endian, zero-padded */
    uint64_t allowed[FG_COUNTRY_WORDS];
} fg_market;

struct fg_market_map {
    fg_market *items; /* sorted by key */
    size_t n, cap;
};

static int is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static int is_upper_digit(char c)
{
    return is_upper(c) || (c >= '0' && c <= '9');
}

bool fg_region_valid(const char *s, size_t len)
{
    if (!s || len < 2 || len > FG_REGION_MAX)
        return false;
    if (!is_upper(s[0]) || !is_upper(s[1]))
        return false;
    if (len == 2)
        return true;
    if (len < 4 || s[2] != '-')
        return false;
    for (size_t i = 3; i < len; i++) {
        if (!is_upper_digit(s[i]))
            return false;
    }
    return true;
}

void fg_region_country(const char *region, char out[3])
{
    out[0] = region[0];
    out[1] = region[1];
    out[2] = '\0';
}

/* Bit index of a two-letter country; the caller checked both are A-Z. */
static unsigned country_slot(const char *c)
{
    return (unsigned)(c[0] - 'A') * 26u + (unsigned)(c[1] - 'A');
}

static int bit_test(const uint64_t *bits, unsigned slot)
{
    return (int)((bits[slot / 64] >> (slot % 64)) & 1u);
}

static void bit_set(uint64_t *bits, unsigned slot)
{
    bits[slot / 64] |= (uint64_t)1 << (slot % 64);
}

/* A market name: a region code, or 2-8 upper-case letters. */
static bool market_name_valid(const char *s, size_t len)
{
    if (fg_region_valid(s, len))
        return true;
    if (len < 2 || len > FG_MARKET_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_upper(s[i]))
            return false;
    }
    return true;
}

static uint64_t market_key(const char *s, size_t len)
{
    uint64_t key = 0;
    for (size_t i = 0; i < FG_MARKET_NAME_MAX; i++)
        key = (key << 8) | (i < len ? (uint8_t)s[i] : 0u);
    return key;
}

/* Index of key in the sorted table, or of the slot it would go to. */
static size_t market_search(const fg_market_map *m, uint64_t key, bool *found)
{
    size_t lo = 0, hi = m->n;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->items[mid].key == key) {
            *found = true;
            return mid;
        }
        if (m->items[mid].key < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static const fg_market *market_find(const fg_market_map *m, const char *s,
                                    size_t len)
{
    bool found;
    size_t at;
    if (!m || m->n == 0)
        return NULL;
    at = market_search(m, market_key(s, len), &found);
    return found ? &m->items[at] : NULL;
}

fg_market_map *fg_market_map_new(void)
{
    return calloc(1, sizeof(fg_market_map));
}

void fg_market_map_free(fg_market_map *m)
{
    if (!m)
        return;
    free(m->items);
    free(m);
}

/* Parses "DE,FR,IT" (spaces around items allowed) into bits. */
static fg_status parse_countries(const char *countries, uint64_t *bits,
                                 char *errbuf, size_t errlen)
{
    const char *p = countries;
    for (;;) {
        const char *start, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        start = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        end = p;
        while (*p == ' ' || *p == '\t')
            p++;
        if (end - start != 2 || !is_upper(start[0]) || !is_upper(start[1]) ||
            (*p != ',' && *p != '\0')) {
            snprintf(errbuf, errlen,
                     "bad country in \"%.64s\": expected upper-case "
                     "two-letter codes separated by commas",
                     countries);
            return FG_EINVAL;
        }
        bit_set(bits, country_slot(start));
        if (*p == '\0')
            return FG_OK;
        p++; /* the comma */
    }
}

fg_status fg_market_map_allow(fg_market_map *m, const char *sku,
                              const char *countries, char *errbuf,
                              size_t errlen)
{
    uint64_t bits[FG_COUNTRY_WORDS] = {0};
    size_t sku_len, at;
    bool found;
    fg_status st = FG_EINVAL;

    if (errlen > 0)
        errbuf[0] = '\0';
    if (!m || !sku || !countries) {
        snprintf(errbuf, errlen, "market map: missing argument");
        goto cleanup;
    }
    sku_len = strlen(sku);
    if (!market_name_valid(sku, sku_len)) {
        snprintf(errbuf, errlen,
                 "bad market \"%.32s\": expected a region code (DE, UA-43) "
                 "or 2-8 upper-case letters (EU)",
                 sku);
        goto cleanup;
    }
    /* Parse everything before touching the map: a bad list changes nothing. */
    st = parse_countries(countries, bits, errbuf, errlen);
    if (st != FG_OK)
        goto cleanup;

    at = market_search(m, market_key(sku, sku_len), &found);
    if (!found) {
        if (m->n >= FG_MARKET_CAP) {
            snprintf(errbuf, errlen, "too many markets (at most %d)",
                     FG_MARKET_CAP);
            st = FG_EINVAL;
            goto cleanup;
        }
        if (m->n == m->cap) {
            size_t ncap = m->cap ? m->cap * 2 : 8;
            fg_market *items = realloc(m->items, ncap * sizeof(*items));
            if (!items) {
                snprintf(errbuf, errlen, "out of memory");
                st = FG_ENOMEM;
                goto cleanup;
            }
            m->items = items;
            m->cap = ncap;
        }
        memmove(&m->items[at + 1], &m->items[at],
                (m->n - at) * sizeof(m->items[0]));
        memset(&m->items[at], 0, sizeof(m->items[0]));
        m->items[at].key = market_key(sku, sku_len);
        m->n++;
    }
    for (size_t i = 0; i < FG_COUNTRY_WORDS; i++)
        m->items[at].allowed[i] |= bits[i];
    st = FG_OK;

cleanup:
    return st;
}

bool fg_region_is_grey(const fg_market_map *m, const char *sku_region,
                       const char *region)
{
    size_t sku_len, region_len;
    const fg_market *mk;
    unsigned slot;

    /* Codes that are not valid cannot be shown to be allowed anywhere. */
    if (!sku_region || !region)
        return true;
    region_len = strnlen(region, FG_REGION_MAX + 1);
    sku_len = strnlen(sku_region, FG_MARKET_NAME_MAX + 1);
    if (!fg_region_valid(region, region_len) ||
        !market_name_valid(sku_region, sku_len))
        return true;

    /* Default rule: a region code is allowed in its own country. A longer
     * market name ("LATAM") has no country of its own. */
    if (fg_region_valid(sku_region, sku_len) && sku_region[0] == region[0] &&
        sku_region[1] == region[1])
        return false;

    slot = country_slot(region);
    mk = market_find(m, sku_region, sku_len);
    if (mk && bit_test(mk->allowed, slot))
        return false;
    /* A subdivision sku ("UA-43") also inherits its country's market. */
    if (sku_len > 2 && sku_region[2] == '-') {
        mk = market_find(m, sku_region, 2);
        if (mk && bit_test(mk->allowed, slot))
            return false;
    }
    return true;
}

/* Assigned ISO 3166-1 alpha-2 codes, one row per first letter, bit n set
 * when the second letter is 'A' + n. */
static const uint32_t iso_assigned[26] = {
    0x2df5978, /* A* */
    0x36f7bfb, /* B* */
    0x3f27ded, /* C* */
    0x2005610, /* D* */
    0x00e00d4, /* E* */
    0x0025700, /* F* */
    0x15fb9fb, /* G* */
    0x01a3400, /* H* */
    0x00f7818, /* I* */
    0x000d010, /* J* */
    0x342b1d0, /* K* */
    0x13e0507, /* L* */
    0x3fffcfd, /* M* */
    0x212c975, /* N* */
    0x0001000, /* O* */
    0x14e3cf1, /* P* */
    0x0000001, /* Q* */
    0x0544010, /* R* */
    0x3ae7fdf, /* S* */
    0x26a7eec, /* T* */
    0x3041041, /* U* */
    0x0102155, /* V* */
    0x0040020, /* W* */
    0x0000400, /* X* */
    0x0080010, /* Y* */
    0x0401001, /* Z* */
};

bool fg_region_country_assigned(const char *s)
{
    unsigned a = (unsigned char)s[0] - 'A', b = (unsigned char)s[1] - 'A';
    return a < 26 && b < 26 && (iso_assigned[a] >> b & 1u);
}
