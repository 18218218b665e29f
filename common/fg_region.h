/* SPDX-License-Identifier: Apache-2.0 */
/* Region codes (ISO 3166-1 alpha-2 "CU", ISO 3166-2 "UA-43") and the grey
 * classification: a device is grey when the market it was sold for
 * (sku_region) is not allowed where it checks in (region). Shared by the
 * gateway (grey-scoped locks) and the consumers (grey counters). */
#ifndef FG_REGION_H
#define FG_REGION_H

#include <stdbool.h>
#include <stddef.h>

#include "fg_status.h"

/* Longest region code: "XX-XXX". */
#define FG_REGION_MAX 6

/* True when s[0..len) is an upper-case ISO 3166-1 alpha-2 code (two letters
 * A-Z) or an ISO 3166-2 subdivision code (two letters, '-', then 1 to 3 of
 * A-Z0-9). Pure syntax: the code is not checked against the ISO list.
 * @thread any */
bool fg_region_valid(const char *s, size_t len);

/* True when the first two letters of s (a code fg_region_valid accepts)
 * are a country code ISO 3166-1 has assigned (249 of them, as of 2024),
 * or XK, which many systems use for Kosovo. For operator input: devices
 * are never refused for it. @thread any */
bool fg_region_country_assigned(const char *s);

/* Copies the country part (first two letters) of a valid region code into
 * out and NUL-terminates it. @thread any */
void fg_region_country(const char *region, char out[3]);

/* Which countries each sku_region (market) may be used in. Opaque. */
typedef struct fg_market_map fg_market_map;

/* Creates an empty map: every market is allowed only in its own country.
 * Returns NULL when out of memory. */
fg_market_map *fg_market_map_new(void);

/* Frees the map; NULL is a no-op. */
void fg_market_map_free(fg_market_map *m);

/* Allows market `sku` (a region code, or any 2-8 upper-case letter market
 * name such as "EU") in the comma-separated list of countries `countries`
 * ("DE,FR,IT"). Adds to what was allowed before; a market keeps its own
 * country. Returns FG_EINVAL with errbuf filled on a bad code.
 * Both strings are borrowed. @thread main (configuration time) */
fg_status fg_market_map_allow(fg_market_map *m, const char *sku,
                              const char *countries, char *errbuf,
                              size_t errlen);

/* True when the device is grey: the country of `region` is neither the
 * country of `sku_region` nor a country the map allows for `sku_region`.
 * Subdivisions compare by country: sku "UA" in region "UA-43" is not grey.
 * m may be NULL (default rule only). Strings are NUL-terminated and borrowed.
 * @thread any (the map is read-only after configuration) */
bool fg_region_is_grey(const fg_market_map *m, const char *sku_region,
                       const char *region);

#endif
