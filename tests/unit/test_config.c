/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fg_config: precedence of defaults, file, env and --set;
 * value parsing per type with bounds; errors that name the key and source;
 * pass-through collection; --help output. */
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "fg_config.h"
#include "fg_test.h"

typedef struct tconf {
    char *listen;
    int64_t threads;
    bool tls;
    int64_t max_body;
    int64_t timeout;
    char *region;
    int64_t offset;
    int64_t buf;
    char *node;
} tconf;

static const fg_conf_slot slots[] = {
    {"gateway.listen", FG_CONF_STR, "127.0.0.1:8080", offsetof(tconf, listen), 0, 0,
     "Address devices connect to."},
    {"gateway.threads", FG_CONF_INT, "2", offsetof(tconf, threads), 1, 1024,
     "Worker threads."},
    {"gateway.tls", FG_CONF_BOOL, "off", offsetof(tconf, tls), 0, 0, "Serve TLS."},
    {"gateway.max-body", FG_CONF_SIZE, "64k", offsetof(tconf, max_body), 1024,
     16 * 1024 * 1024, "Largest request body."},
    {"gateway.timeout", FG_CONF_DURATION, "5s", offsetof(tconf, timeout), 0, 0,
     "Request timeout.\nCounted from the first byte."},
    {"gateway.region", FG_CONF_STR, NULL, offsetof(tconf, region), 0, 0, "Region override."},
    {"test.offset", FG_CONF_INT, "0", offsetof(tconf, offset), 0, 0, "Unbounded int."},
    {"test.buf", FG_CONF_SIZE, "0", offsetof(tconf, buf), 0, 0, "Unbounded size."},
    {"node", FG_CONF_STR, "local", offsetof(tconf, node), 0, 0, "Node name."},
    FG_CONF_END};

static char errbuf[512];

/* Writes text to a fresh temp file; returns its path (static buffer). */
static const char *write_tmp(const char *text)
{
    static char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/fg_test_config_XXXXXX");
    fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror("write");
        exit(2);
    }
    close(fd);
    return path;
}

static bool contains(const char *hay, const char *needle)
{
    bool ok = strstr(hay, needle) != NULL;
    if (!ok)
        fprintf(stderr, "  expected \"%s\" in \"%s\"\n", needle, hay);
    return ok;
}

static fg_status load_file(tconf *c, const char *text, const char *path_out[1],
                           char *const *envp, char *const *sets, size_t nsets)
{
    const char *path = write_tmp(text);
    fg_status st = fg_conf_load(slots, c, NULL, path, envp, sets, nsets, errbuf,
                                sizeof(errbuf));
    if (path_out)
        *path_out = path;
    unlink(path);
    return st;
}

static void test_defaults(void)
{
    tconf c = {0};

    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, NULL, NULL, 0, errbuf, sizeof(errbuf)),
                 FG_OK);
    FG_CHECK_STR(c.listen, "127.0.0.1:8080");
    FG_CHECK_INT(c.threads, 2);
    FG_CHECK(!c.tls);
    FG_CHECK_INT(c.max_body, 64 * 1024);
    FG_CHECK_INT(c.timeout, 5000);
    FG_CHECK(c.region == NULL);
    FG_CHECK_STR(c.node, "local");
    fg_conf_free(slots, &c);
    FG_CHECK(c.listen == NULL && c.node == NULL);
    fg_conf_free(slots, &c); /* twice is harmless */
    fg_conf_free(NULL, &c);
}

static void test_file_overrides_default(void)
{
    tconf c = {0};
    const char *ini = "; comment\n"
                      "node = edge-1\n"
                      "[gateway]\n"
                      "listen = \"0.0.0.0:9000\"   ; inline comment\n"
                      "threads=8\n"
                      "tls = yes\n"
                      "region = eu-west\n";

    FG_CHECK_INT(load_file(&c, ini, NULL, NULL, NULL, 0), FG_OK);
    FG_CHECK_STR(c.listen, "0.0.0.0:9000");
    FG_CHECK_INT(c.threads, 8);
    FG_CHECK(c.tls);
    FG_CHECK_STR(c.region, "eu-west");
    FG_CHECK_STR(c.node, "edge-1");
    FG_CHECK_INT(c.timeout, 5000); /* untouched slot keeps its default */
    fg_conf_free(slots, &c);

    /* The same through the in-memory variant. */
    FG_CHECK_INT(fg_conf_load_string(slots, &c, NULL, ini, "mem.ini", NULL, NULL, 0, errbuf,
                                     sizeof(errbuf)),
                 FG_OK);
    FG_CHECK_STR(c.listen, "0.0.0.0:9000");
    FG_CHECK_INT(c.threads, 8);
    fg_conf_free(slots, &c);
}

static void test_env_overrides_file_set_overrides_env(void)
{
    tconf c = {0};
    const char *ini = "[gateway]\nthreads = 8\nlisten = file:1\nmax-body = 128k\n";
    char *envp[] = {"PATH=/usr/bin", "FLEETGATE_GATEWAY_THREADS=16",
                    "FLEETGATE_GATEWAY_LISTEN=env:2", "FLEETGATE_GATEWAY_MAX_BODY=1m",
                    "HOME=/root", NULL};
    char *sets[] = {"gateway.threads=32", " gateway.timeout = 250ms "};

    FG_CHECK_INT(load_file(&c, ini, NULL, envp, NULL, 0), FG_OK);
    FG_CHECK_INT(c.threads, 16);
    FG_CHECK_STR(c.listen, "env:2");
    FG_CHECK_INT(c.max_body, 1024 * 1024); /* '-' in the key maps to '_' */
    fg_conf_free(slots, &c);

    FG_CHECK_INT(load_file(&c, ini, NULL, envp, sets, 2), FG_OK);
    FG_CHECK_INT(c.threads, 32);
    FG_CHECK_INT(c.timeout, 250);
    FG_CHECK_STR(c.listen, "env:2");
    fg_conf_free(slots, &c);
}

/* Overriding a string four times (default, file, env, --set) must free each
 * earlier value: the sanitizer build turns a leak here into a failure. */
static void test_string_override_frees(void)
{
    tconf c = {0};
    char *envp[] = {"FLEETGATE_GATEWAY_LISTEN=env", "FLEETGATE_GATEWAY_REGION=r-env", NULL};
    char *sets[] = {"gateway.listen=set", "gateway.region=r-set"};

    FG_CHECK_INT(load_file(&c, "[gateway]\nlisten=file\nlisten=file2\nregion=r-file\n", NULL,
                           envp, sets, 2),
                 FG_OK);
    FG_CHECK_STR(c.listen, "set");
    FG_CHECK_STR(c.region, "r-set");
    FG_CHECK_INT(fg_conf_set(slots, &c, NULL, "gateway.listen", "again", errbuf,
                             sizeof(errbuf)),
                 FG_OK);
    FG_CHECK_STR(c.listen, "again");
    /* A failed set leaves the old value in place. */
    FG_CHECK_INT(fg_conf_set(slots, &c, NULL, "gateway.threads", "x", errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK_INT(c.threads, 2);
    /* Reloading into a filled struct resets to defaults first. */
    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, NULL, NULL, 0, errbuf, sizeof(errbuf)),
                 FG_OK);
    FG_CHECK_STR(c.listen, "127.0.0.1:8080");
    FG_CHECK(c.region == NULL);
    fg_conf_free(slots, &c);
}

static fg_status set(tconf *c, const char *key, const char *value)
{
    errbuf[0] = '\0';
    return fg_conf_set(slots, c, NULL, key, value, errbuf, sizeof(errbuf));
}

static void test_int(void)
{
    tconf c = {0};

    FG_CHECK_INT(set(&c, "test.offset", "-42"), FG_OK);
    FG_CHECK_INT(c.offset, -42);
    FG_CHECK_INT(set(&c, "test.offset", "+7"), FG_OK);
    FG_CHECK_INT(c.offset, 7);
    FG_CHECK_INT(set(&c, "test.offset", "9223372036854775807"), FG_OK);
    FG_CHECK(c.offset == INT64_MAX);
    FG_CHECK_INT(set(&c, "test.offset", "-9223372036854775808"), FG_OK);
    FG_CHECK(c.offset == INT64_MIN);
    FG_CHECK_INT(set(&c, "test.offset", "9223372036854775808"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "test.offset"));
    FG_CHECK_INT(set(&c, "test.offset", "99999999999999999999999"), FG_EINVAL);
    FG_CHECK_INT(set(&c, "test.offset", "12abc"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "test.offset: \"12abc\" is not"));
    FG_CHECK_INT(set(&c, "test.offset", ""), FG_EINVAL);
    FG_CHECK_INT(set(&c, "test.offset", " 1"), FG_EINVAL);
    FG_CHECK_INT(set(&c, "test.offset", "0x10"), FG_EINVAL);
    FG_CHECK_INT(set(&c, "test.offset", "-"), FG_EINVAL);
    FG_CHECK(c.offset == INT64_MIN); /* failed sets changed nothing */
    FG_CHECK_INT(set(&c, "test.offset", "\"15\""), FG_OK); /* quotes are stripped */
    FG_CHECK_INT(c.offset, 15);

    FG_CHECK_INT(set(&c, "gateway.threads", "1024"), FG_OK);
    FG_CHECK_INT(c.threads, 1024);
    FG_CHECK_INT(set(&c, "gateway.threads", "5000"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "gateway.threads: 5000 is above the maximum 1024"));
    FG_CHECK_INT(set(&c, "gateway.threads", "1025"), FG_EINVAL);
    FG_CHECK_INT(set(&c, "gateway.threads", "1"), FG_OK);
    FG_CHECK_INT(set(&c, "gateway.threads", "1024"), FG_OK);
    FG_CHECK_INT(set(&c, "gateway.threads", "0"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "gateway.threads: 0 is below the minimum 1"));
    FG_CHECK_INT(c.threads, 1024);
}

static void test_size(void)
{
    static const struct { const char *in; int64_t want; } ok[] = {
        {"100", 100},          {"100b", 100},         {"100B", 100},
        {"512k", 512 * 1024},  {"512K", 512 * 1024},  {"1kb", 1024},
        {"1KiB", 1024},        {"1m", 1048576},       {"1MiB", 1048576},
        {"1mb", 1048576},      {"2g", 2147483648LL},  {"3GiB", 3221225472LL},
        {"0", 0},
    };
    static const char *const bad[] = {"", "k", "1x", "1kk", "1kib2", "-1k", "1.5m",
                                      "1 m", "8589934592g", "1t", "1ki"};
    tconf c = {0};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        FG_CHECK_INT(set(&c, "test.buf", ok[i].in), FG_OK);
        FG_CHECK_INT(c.buf, ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c.buf = 77;
        FG_CHECK_INT(set(&c, "test.buf", bad[i]), FG_EINVAL);
        FG_CHECK(contains(errbuf, "test.buf"));
        FG_CHECK_INT(c.buf, 77);
    }
    FG_CHECK_INT(set(&c, "gateway.max-body", "16m"), FG_OK);
    FG_CHECK_INT(set(&c, "gateway.max-body", "17m"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "gateway.max-body: 17m (17825792 bytes) is above the maximum"));
    FG_CHECK_INT(set(&c, "gateway.max-body", "1000"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "below the minimum 1024 bytes"));
    FG_CHECK_INT(c.max_body, 16 * 1024 * 1024);
}

static void test_duration(void)
{
    static const struct { const char *in; int64_t want; } ok[] = {
        {"42", 42},         {"250ms", 250},    {"250MS", 250},     {"5s", 5000},
        {"2m", 120000},     {"1h", 3600000},   {"7d", 604800000},  {"0", 0},
    };
    static const char *const bad[] = {"", "s", "5x", "1.5s", "5 s", "-5s", "5sec",
                                      "106751991167301d"};
    tconf c = {0};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        FG_CHECK_INT(set(&c, "gateway.timeout", ok[i].in), FG_OK);
        FG_CHECK_INT(c.timeout, ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FG_CHECK_INT(set(&c, "gateway.timeout", bad[i]), FG_EINVAL);
        FG_CHECK(contains(errbuf, "gateway.timeout"));
    }
}

static void test_bool(void)
{
    static const char *const yes[] = {"true", "TRUE", "yes", "on", "1", "\"on\""};
    static const char *const no[] = {"false", "No", "off", "0"};
    static const char *const bad[] = {"", "maybe", "2", "y", "truee"};
    tconf c = {0};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        c.tls = false;
        FG_CHECK_INT(set(&c, "gateway.tls", yes[i]), FG_OK);
        FG_CHECK(c.tls);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        c.tls = true;
        FG_CHECK_INT(set(&c, "gateway.tls", no[i]), FG_OK);
        FG_CHECK(!c.tls);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FG_CHECK_INT(set(&c, "gateway.tls", bad[i]), FG_EINVAL);
        FG_CHECK(contains(errbuf, "gateway.tls"));
    }
}

static void test_string_values(void)
{
    tconf c = {0};

    FG_CHECK_INT(set(&c, "gateway.region", "\"a b\""), FG_OK);
    FG_CHECK_STR(c.region, "a b");
    FG_CHECK_INT(set(&c, "gateway.region", ""), FG_OK);
    FG_CHECK_STR(c.region, "");
    FG_CHECK_INT(set(&c, "gateway.region", "\""), FG_OK); /* a lone quote stays */
    FG_CHECK_STR(c.region, "\"");
    fg_conf_free(slots, &c);
}

static void test_errors_name_key_and_source(void)
{
    tconf c = {0};
    const char *path;
    char *env_typo[] = {"FLEETGATE_GATEWAY_THREDS=4", NULL};
    char *env_bad[] = {"FLEETGATE_GATEWAY_THREADS=5000", NULL};
    char *set_unknown[] = {"gateway.nope=1"};
    char *set_bad[] = {"gateway.threads=many"};
    char *set_noeq[] = {"gateway.threads"};
    char longline[400];

    /* Unknown key in the file: file:line, full key and a hint. */
    FG_CHECK_INT(load_file(&c, "[gateway]\nlisten = x\nthredas = 4\n", &path, NULL, NULL, 0),
                 FG_EINVAL);
    {
        char want[128];
        snprintf(want, sizeof(want), "%s:3: gateway.thredas: unknown key", path);
        FG_CHECK(contains(errbuf, want));
        FG_CHECK(contains(errbuf, "did you mean gateway.threads?"));
    }
    fg_conf_free(slots, &c);

    /* Bad value in the file. */
    FG_CHECK_INT(load_file(&c, "[gateway]\n\nthreads = 5000\n", &path, NULL, NULL, 0),
                 FG_EINVAL);
    {
        char want[128];
        snprintf(want, sizeof(want), "%s:3: gateway.threads: 5000 is above the maximum 1024",
                 path);
        FG_CHECK(contains(errbuf, want));
    }
    fg_conf_free(slots, &c);

    /* Unknown env variable: named, with a hint. */
    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, env_typo, NULL, 0, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "env FLEETGATE_GATEWAY_THREDS"));
    FG_CHECK(contains(errbuf, "FLEETGATE_GATEWAY_THREADS"));
    fg_conf_free(slots, &c);

    /* Bad env value names both the variable and the key. */
    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, env_bad, NULL, 0, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "env FLEETGATE_GATEWAY_THREADS: gateway.threads: 5000 is above"));
    fg_conf_free(slots, &c);

    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, NULL, set_unknown, 1, errbuf,
                              sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "--set: gateway.nope: unknown key"));
    fg_conf_free(slots, &c);

    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, NULL, set_bad, 1, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "--set: gateway.threads: \"many\" is not"));
    fg_conf_free(slots, &c);

    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, NULL, NULL, set_noeq, 1, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "gateway.threads"));
    FG_CHECK(contains(errbuf, "key=value"));
    fg_conf_free(slots, &c);

    /* A dotted key before any section. */
    FG_CHECK_INT(load_file(&c, "gateway.threads = 4\n", &path, NULL, NULL, 0), FG_EINVAL);
    FG_CHECK(contains(errbuf, ":1: gateway.threads: key outside any section"));
    FG_CHECK(contains(errbuf, "[gateway]"));
    fg_conf_free(slots, &c);

    /* An unknown dotless key before any section. */
    FG_CHECK_INT(load_file(&c, "nodes = a\n", &path, NULL, NULL, 0), FG_EINVAL);
    FG_CHECK(contains(errbuf, ":1: nodes: unknown key"));
    fg_conf_free(slots, &c);

    /* Syntax error: the line number of the bad line, even when a bad key
     * comes later. */
    FG_CHECK_INT(load_file(&c, "[gateway]\nthreads 4\nbogus = 1\n", &path, NULL, NULL, 0),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, ":2: cannot parse line"));
    fg_conf_free(slots, &c);
    FG_CHECK_INT(load_file(&c, "[gateway\nthreads = 4\n", &path, NULL, NULL, 0), FG_EINVAL);
    FG_CHECK(contains(errbuf, ":1: cannot parse line"));
    fg_conf_free(slots, &c);

    /* An indented continuation would silently change the value. */
    FG_CHECK_INT(load_file(&c, "[gateway]\nlisten = a\n  threads = 4\n", &path, NULL, NULL, 0),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, ":3: gateway.listen: indented line"));
    fg_conf_free(slots, &c);
    /* ...but an indented key right after a section header is fine. */
    FG_CHECK_INT(load_file(&c, "[gateway]\n  threads = 4\n", &path, NULL, NULL, 0), FG_OK);
    FG_CHECK_INT(c.threads, 4);
    fg_conf_free(slots, &c);

    /* A line longer than inih's buffer is reported, not split. */
    snprintf(longline, sizeof(longline), "[gateway]\nregion = %0300d\n", 7);
    FG_CHECK_INT(load_file(&c, longline, &path, NULL, NULL, 0), FG_EINVAL);
    FG_CHECK(contains(errbuf, ":2: line is longer than"));
    fg_conf_free(slots, &c);

    /* Missing file. */
    FG_CHECK_INT(fg_conf_load(slots, &c, NULL, "/nonexistent/fleetgate.ini", NULL, NULL, 0,
                              errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "/nonexistent/fleetgate.ini: cannot open"));
    fg_conf_free(slots, &c);

    /* fg_conf_set without a source still names the key. */
    FG_CHECK_INT(set(&c, "gateway.lsten", "x"), FG_EINVAL);
    FG_CHECK(contains(errbuf, "gateway.lsten: unknown key (did you mean gateway.listen?)"));

    /* A tiny errbuf is truncated, not overrun; NULL errbuf is allowed. */
    {
        char tiny[8];
        memset(tiny, 'z', sizeof(tiny));
        FG_CHECK_INT(fg_conf_set(slots, &c, NULL, "nope", "1", tiny, 5), FG_EINVAL);
        FG_CHECK(tiny[4] == '\0' && tiny[5] == 'z');
        FG_CHECK_INT(fg_conf_set(slots, &c, NULL, "nope", "1", NULL, 0), FG_EINVAL);
    }
}

static void test_passthrough(void)
{
    tconf c = {0};
    fg_conf_kvs kafka = {0}, markets = {0};
    const fg_conf_passthrough pt[] = {{"kafka.", &kafka}, {"markets.", &markets}, {NULL, NULL}};
    const char *ini = "[kafka]\n"
                      "bootstrap.servers = a:9092,b:9092\n"
                      "linger.ms = 5\n"
                      "[markets]\n"
                      "us = \"1\"\n"
                      "[gateway]\n"
                      "threads = 3\n";
    char *envp[] = {"FLEETGATE_KAFKA_LINGER_MS=10", "FLEETGATE_Kafka_BATCH_NUM_MESSAGES=100",
                    "FLEETGATE_MARKETS_DE=0", NULL};
    char *sets[] = {"kafka.linger.ms=20", "kafka.acks=all"};
    char *env_bad[] = {"FLEETGATE_KAFKAX_LINGER_MS=1", NULL};
    const char *path = write_tmp(ini);

    FG_CHECK_INT(fg_conf_load(slots, &c, pt, path, envp, sets, 2, errbuf, sizeof(errbuf)),
                 FG_OK);
    unlink(path);
    FG_CHECK_INT(c.threads, 3);
    FG_CHECK_INT(kafka.n, 4);
    if (kafka.n == 4) {
        /* First-seen order; later sources replace values in place. */
        FG_CHECK_STR(kafka.items[0].key, "bootstrap.servers");
        FG_CHECK_STR(kafka.items[0].value, "a:9092,b:9092");
        FG_CHECK_STR(kafka.items[1].key, "linger.ms");
        FG_CHECK_STR(kafka.items[1].value, "20");
        FG_CHECK_STR(kafka.items[2].key, "batch.num.messages");
        FG_CHECK_STR(kafka.items[2].value, "100");
        FG_CHECK_STR(kafka.items[3].key, "acks");
        FG_CHECK_STR(kafka.items[3].value, "all");
    }
    FG_CHECK_INT(markets.n, 2);
    if (markets.n == 2) {
        FG_CHECK_STR(markets.items[0].key, "us");
        FG_CHECK_STR(markets.items[0].value, "1");
        FG_CHECK_STR(markets.items[1].key, "de");
        FG_CHECK_STR(markets.items[1].value, "0");
    }
    fg_conf_kvs_free(&kafka);
    FG_CHECK(kafka.n == 0 && kafka.items == NULL);
    fg_conf_kvs_free(&kafka);
    fg_conf_kvs_free(NULL);
    fg_conf_kvs_free(&markets);
    fg_conf_free(slots, &c);

    /* Without the pass-through table the same keys are unknown. */
    FG_CHECK_INT(fg_conf_set(slots, &c, NULL, "kafka.linger.ms", "5", errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "kafka.linger.ms: unknown key"));
    /* The bare prefix is not a key. */
    FG_CHECK_INT(fg_conf_set(slots, &c, pt, "kafka.", "5", errbuf, sizeof(errbuf)), FG_EINVAL);
    FG_CHECK_INT(fg_conf_load(slots, &c, pt, NULL, env_bad, NULL, 0, errbuf, sizeof(errbuf)),
                 FG_EINVAL);
    FG_CHECK(contains(errbuf, "FLEETGATE_KAFKAX_LINGER_MS"));
    fg_conf_kvs_free(&kafka);
    fg_conf_kvs_free(&markets);
    fg_conf_free(slots, &c);
}

static void test_help(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    FG_CHECK(out != NULL);
    if (!out)
        return;
    fg_conf_help(slots, out);
    fclose(out);
    FG_CHECK(contains(text, "  gateway.listen = 127.0.0.1:8080  (str, env "
                            "FLEETGATE_GATEWAY_LISTEN)\n      Address devices connect to.\n"));
    FG_CHECK(contains(text, "  gateway.threads = 2  (int 1..1024, env "
                            "FLEETGATE_GATEWAY_THREADS)\n"));
    FG_CHECK(contains(text, "FLEETGATE_GATEWAY_MAX_BODY"));
    FG_CHECK(contains(text, "      Request timeout.\n      Counted from the first byte.\n"));
    for (const fg_conf_slot *s = slots; s->name; s++) {
        char want[128];
        snprintf(want, sizeof(want), "  %s = ", s->name);
        FG_CHECK(contains(text, want));
        snprintf(want, sizeof(want), "      %.*s\n", (int)strcspn(s->desc, "\n"), s->desc);
        FG_CHECK(contains(text, want));
    }
    free(text);
}

/* A configured id is used as it is (a longer one is cut and reported);
 * without one, the instance is named after the host and the process. */
static void test_instance_id(void)
{
    char out[16], host[48] = "", want[80];
    FG_CHECK_INT(fg_conf_instance_id(out, sizeof(out), "edge-7", "gateway"), 0);
    FG_CHECK_STR(out, "edge-7");
    FG_CHECK_INT(fg_conf_instance_id(out, sizeof(out), "0123456789abcdef",
                                     "gateway"),
                 -1);
    FG_CHECK_STR(out, "0123456789abcde");
    char wide[80];
    FG_CHECK(gethostname(host, sizeof(host) - 1) == 0);
    snprintf(want, sizeof(want), "%s-%ld", host, (long)getpid());
    FG_CHECK_INT(fg_conf_instance_id(wide, sizeof(wide), "", "scorer"), 0);
    FG_CHECK_STR(wide, want);
    FG_CHECK_INT(fg_conf_instance_id(wide, sizeof(wide), NULL, "scorer"), 0);
    FG_CHECK_STR(wide, want);
}

FG_TEST_MAIN(test_defaults, test_file_overrides_default,
             test_env_overrides_file_set_overrides_env, test_string_override_frees, test_int,
             test_size, test_duration, test_bool, test_string_values,
             test_errors_name_key_and_source, test_passthrough, test_help,
             test_instance_id)
