/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/fg_region.c: region code syntax, the country of a
 * code, the market map configuration and the grey classification. */
#include <stdlib.h>

#include "fg_region.h"
#include "fg_test.h"

static bool valid(const char *s)
{
    return fg_region_valid(s, strlen(s));
}

static void test_region_valid(void)
{
    static const char *const good[] = {"CU", "UA", "ZZ", "UA-43", "UA-4",
                                       "GB-ENG", "US-CA", "FR-75C", "AA-0",
                                       "EU"};
    static const char *const bad[] = {"", "C", "cu", "Cu", "CUB", "C1",
                                      "1U", "UA-", "UA-1234", "UA_43",
                                      "ua-43", "UA-4a", "UA43", "UA--4",
                                      " CU", "CU ", "UA-4 ", "ÄB", "UA-é"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        FG_CHECK(valid(good[i]));
        if (!valid(good[i]))
            fprintf(stderr, "  should be valid: %s\n", good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FG_CHECK(!valid(bad[i]));
        if (valid(bad[i]))
            fprintf(stderr, "  should be invalid: %s\n", bad[i]);
    }
    /* Only len bytes count; embedded NUL is not a code character. */
    FG_CHECK(fg_region_valid("CUBA", 2));
    FG_CHECK(fg_region_valid("UA-43XYZ", 5));
    FG_CHECK(!fg_region_valid("C\0", 2));
    FG_CHECK(!fg_region_valid("UA-4\0", 5));
    FG_CHECK(!fg_region_valid(NULL, 0));
}

static void test_region_country(void)
{
    char c[3] = "xx";
    fg_region_country("UA-43", c);
    FG_CHECK_STR(c, "UA");
    fg_region_country("CU", c);
    FG_CHECK_STR(c, "CU");
    fg_region_country("GB-ENG", c);
    FG_CHECK_STR(c, "GB");
}

static void test_country_assigned(void)
{
    const char *yes[] = {"AD", "CU", "DE", "GB-ENG", "UA-43", "US", "ZW", "XK", "SS", "BQ"};
    const char *no[] = {"UK", "EU", "AA", "QZ", "XX", "ZZ", "AN", "YU", "CS", "C"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        FG_CHECK(fg_region_country_assigned(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        FG_CHECK(!fg_region_country_assigned(no[i]));
    /* Every code the market map and the tests use is assigned. */
    int n = 0;
    for (int a = 'A'; a <= 'Z'; a++) {
        for (int b = 'A'; b <= 'Z'; b++) {
            char c[3] = {(char)a, (char)b, 0};
            n += fg_region_country_assigned(c);
        }
    }
    FG_CHECK_INT(n, 250); /* 249 assigned, and XK */
}

static void test_default_rule(void)
{
    /* Without a map (NULL or empty): a market is allowed only in its own
     * country, subdivisions compare by country. */
    fg_market_map *m = fg_market_map_new();
    FG_CHECK(m != NULL);
    const fg_market_map *maps[] = {NULL, m};
    for (int i = 0; i < 2; i++) {
        FG_CHECK(!fg_region_is_grey(maps[i], "CU", "CU"));
        FG_CHECK(fg_region_is_grey(maps[i], "CN", "CU"));
        FG_CHECK(!fg_region_is_grey(maps[i], "UA", "UA-43"));
        FG_CHECK(!fg_region_is_grey(maps[i], "UA-43", "UA"));
        FG_CHECK(!fg_region_is_grey(maps[i], "UA-43", "UA-12"));
        FG_CHECK(fg_region_is_grey(maps[i], "UA-43", "RU"));
        FG_CHECK(fg_region_is_grey(maps[i], "RU", "UA-43"));
        FG_CHECK(fg_region_is_grey(maps[i], "EU", "DE"));
        FG_CHECK(fg_region_is_grey(maps[i], "US", "UA"));
        /* Invalid codes cannot be shown to be allowed. */
        FG_CHECK(fg_region_is_grey(maps[i], "cu", "cu"));
        FG_CHECK(fg_region_is_grey(maps[i], "CU", ""));
        FG_CHECK(fg_region_is_grey(maps[i], "", "CU"));
        FG_CHECK(fg_region_is_grey(maps[i], NULL, "CU"));
    }
    fg_market_map_free(m);
    fg_market_map_free(NULL);
}

static void test_market_map(void)
{
    char errbuf[160];
    fg_market_map *m = fg_market_map_new();

    FG_CHECK_INT(fg_market_map_allow(m, "EU", "DE,FR", errbuf, sizeof(errbuf)),
                 FG_OK);
    FG_CHECK(!fg_region_is_grey(m, "EU", "DE"));
    FG_CHECK(!fg_region_is_grey(m, "EU", "FR"));
    FG_CHECK(!fg_region_is_grey(m, "EU", "DE-BY"));
    FG_CHECK(fg_region_is_grey(m, "EU", "US"));
    FG_CHECK(fg_region_is_grey(m, "EU", "IT"));
    /* A market keeps its own country. */
    FG_CHECK(!fg_region_is_grey(m, "EU", "EU"));
    /* Other markets are not affected. */
    FG_CHECK(fg_region_is_grey(m, "US", "DE"));
    FG_CHECK(fg_region_is_grey(m, "DE", "FR"));

    /* allow adds to what was allowed before, spaces around items are ok. */
    FG_CHECK_INT(fg_market_map_allow(m, "EU", " IT , ES", errbuf,
                                     sizeof(errbuf)),
                 FG_OK);
    FG_CHECK(!fg_region_is_grey(m, "EU", "IT"));
    FG_CHECK(!fg_region_is_grey(m, "EU", "ES-MD"));
    FG_CHECK(!fg_region_is_grey(m, "EU", "DE"));

    /* A region code as market; a subdivision sku inherits its country's
     * entry, and its own entry applies only to itself. */
    FG_CHECK_INT(fg_market_map_allow(m, "US", "PR,GU", errbuf, sizeof(errbuf)),
                 FG_OK);
    FG_CHECK(!fg_region_is_grey(m, "US", "PR"));
    FG_CHECK(!fg_region_is_grey(m, "US-CA", "PR"));
    FG_CHECK_INT(fg_market_map_allow(m, "UA-43", "RU", errbuf, sizeof(errbuf)),
                 FG_OK);
    FG_CHECK(!fg_region_is_grey(m, "UA-43", "RU"));
    FG_CHECK(fg_region_is_grey(m, "UA-12", "RU"));
    FG_CHECK(fg_region_is_grey(m, "UA", "RU"));

    /* Long market names are accepted (2-8 letters). */
    FG_CHECK_INT(fg_market_map_allow(m, "LATAM", "AR,BR", errbuf,
                                     sizeof(errbuf)),
                 FG_OK);
    FG_CHECK(!fg_region_is_grey(m, "LATAM", "BR"));
    FG_CHECK(fg_region_is_grey(m, "LATAM", "LA"));
    FG_CHECK(fg_region_is_grey(m, "LATAM", "US"));
    FG_CHECK_INT(fg_market_map_allow(m, "ABCDEFGH", "AR", errbuf,
                                     sizeof(errbuf)),
                 FG_OK);
    FG_CHECK(!fg_region_is_grey(m, "ABCDEFGH", "AR"));
    FG_CHECK(fg_region_is_grey(m, "ABCDEFG", "AR"));

    /* Bad input names the problem and changes nothing. */
    static const char *const bad_sku[] = {"", "E", "eu", "ABCDEFGHI", "E1",
                                          "UA-", "UA-1234", "EU ", "E-U"};
    for (size_t i = 0; i < sizeof(bad_sku) / sizeof(bad_sku[0]); i++) {
        errbuf[0] = '\0';
        FG_CHECK_INT(fg_market_map_allow(m, bad_sku[i], "DE", errbuf,
                                         sizeof(errbuf)),
                     FG_EINVAL);
        FG_CHECK(errbuf[0] != '\0');
    }
    static const char *const bad_list[] = {"", "DE,", ",DE", "DE,,FR",
                                           "de", "DEU", "DE-BY", "D",
                                           "DE FR", "DE;FR", "DE,1R"};
    for (size_t i = 0; i < sizeof(bad_list) / sizeof(bad_list[0]); i++) {
        errbuf[0] = '\0';
        FG_CHECK_INT(fg_market_map_allow(m, "CN", bad_list[i], errbuf,
                                         sizeof(errbuf)),
                     FG_EINVAL);
        FG_CHECK(errbuf[0] != '\0');
        if (fg_market_map_allow(m, "CN", bad_list[i], errbuf,
                                sizeof(errbuf)) == FG_OK)
            fprintf(stderr, "  list accepted: \"%s\"\n", bad_list[i]);
    }
    /* "CN" with "DE,1R": DE must not have been added. */
    FG_CHECK(fg_region_is_grey(m, "CN", "DE"));
    FG_CHECK(fg_region_is_grey(m, "CN", "HK"));

    fg_market_map_free(m);
}

static void test_market_map_many(void)
{
    /* Many markets: lookups stay exact after the table grows and reorders. */
    char errbuf[160];
    fg_market_map *m = fg_market_map_new();
    int ok = 1;
    for (char a = 'Z'; a >= 'A'; a--) {
        for (char b = 'A'; b <= 'Z'; b += 5) {
            char sku[3] = {a, b, '\0'};
            char ctry[3] = {b, a, '\0'};
            if (fg_market_map_allow(m, sku, ctry, errbuf, sizeof(errbuf)) !=
                FG_OK)
                ok = 0;
        }
    }
    FG_CHECK(ok);
    for (char a = 'A'; a <= 'Z'; a++) {
        for (char b = 'A'; b <= 'Z'; b++) {
            char sku[3] = {a, b, '\0'};
            char ctry[3] = {b, a, '\0'};
            bool listed = (b - 'A') % 5 == 0;
            bool grey = fg_region_is_grey(m, sku, ctry);
            /* Not grey when listed, or when sku and country coincide. */
            if (grey != !(listed || a == b))
                ok = 0;
        }
    }
    FG_CHECK(ok);
    fg_market_map_free(m);
}

FG_TEST_MAIN(test_region_valid, test_region_country, test_country_assigned,
             test_default_rule,
             test_market_map, test_market_map_many)
