/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration as a table of typed slots (name, type, default, offset into
 * the daemon's config struct, description), filled in one place from, in
 * order: defaults, an INI file (inih), FLEETGATE_* environment variables,
 * then command-line --set key=value. Keys under pass-through prefixes such as
 * "kafka." are collected verbatim for the library that owns them. An unknown
 * or bad key aborts loading with a message that names it. */
#ifndef FG_CONFIG_H
#define FG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fg_region.h"
#include "fg_status.h"

typedef enum fg_conf_type {
    FG_CONF_STR,      /* char * (malloc'd, owned by the target struct) */
    FG_CONF_INT,      /* int64_t, within [min, max] */
    FG_CONF_BOOL,     /* bool: true/false/yes/no/on/off/1/0 */
    FG_CONF_SIZE,     /* int64_t bytes: "1048576", "512k", "1m", "1g" */
    FG_CONF_DURATION  /* int64_t milliseconds: "250ms", "5s", "2m", "1h", "7d"; a bare number is ms */
} fg_conf_type;

/* One configuration key. name is the full dotted key, "gateway.listen";
 * in the INI file it is key "listen" in section [gateway]. The env variable
 * is FLEETGATE_ + the name upper-cased with '.' and '-' turned into '_'
 * (FLEETGATE_GATEWAY_LISTEN). def is parsed like any other value; NULL leaves
 * a string NULL. min/max bound INT, SIZE and DURATION (0,0 = unbounded). */
typedef struct fg_conf_slot {
    const char *name;
    fg_conf_type type;
    const char *def;
    size_t offset;
    int64_t min, max;
    const char *desc;
} fg_conf_slot;

/* Terminate a slot table with FG_CONF_END. */
#define FG_CONF_END { NULL, FG_CONF_STR, NULL, 0, 0, 0, NULL }

/* Key/value pairs collected under a pass-through prefix, in the order seen
 * (later sources override earlier ones for the same key). key excludes the
 * prefix: "kafka.linger.ms" is stored as "linger.ms". */
typedef struct fg_conf_kv {
    char *key;
    char *value;
} fg_conf_kv;

typedef struct fg_conf_kvs {
    fg_conf_kv *items;
    size_t n, cap;
} fg_conf_kvs;

/* A pass-through prefix ("kafka.") and the list its keys go to. Environment
 * variables FLEETGATE_<PREFIX>_<REST> map to "<prefix>.<rest>" lower-cased
 * with '_' turned into '.' (FLEETGATE_KAFKA_LINGER_MS -> kafka.linger.ms). */
typedef struct fg_conf_passthrough {
    const char *prefix; /* with its trailing dot */
    fg_conf_kvs *kvs;   /* borrowed; filled by fg_conf_load */
} fg_conf_passthrough;

/* Fills target from the sources listed above.
 *  slots:  the table, FG_CONF_END-terminated (borrowed)
 *  target: the daemon's config struct; string slots must start NULL
 *  pt:     pass-through prefixes, terminated by {NULL, NULL}; may be NULL
 *  path:   INI file to read, or NULL for none (a missing file is an error)
 *  envp:   environment (NULL-terminated "K=V" array) or NULL for none
 *  sets:   "key=value" overrides from the command line, nsets of them
 * Returns FG_OK, or FG_EINVAL with errbuf naming the key, the source (file
 * and line, env variable or --set) and the problem. @thread main
 * Details: a value wrapped in double quotes has them removed (any source).
 * INI keys before the first [section] are only allowed for slots whose name
 * has no dot; lines are limited by inih (200 bytes) and indented
 * continuation lines are rejected. An env variable FLEETGATE_* that maps to
 * no slot and no pass-through prefix is an error (catches typos). A key that
 * is both a slot and under a prefix goes to the slot. Pass-through lists are
 * appended to (an existing key has its value replaced in place). On error,
 * target and the lists may be partly filled: still call fg_conf_free and
 * fg_conf_kvs_free. */
fg_status fg_conf_load(const fg_conf_slot *slots, void *target,
                       const fg_conf_passthrough *pt, const char *path,
                       char *const *envp, char *const *sets, size_t nsets,
                       char *errbuf, size_t errlen);

/* Like fg_conf_load, but the INI text comes from memory instead of a file:
 *  ini:  NUL-terminated INI text (borrowed), or NULL for none
 *  name: what error messages call it in place of a path ("<string>" if NULL)
 * Same sources, precedence, errors and ownership as fg_conf_load. For tests
 * and the config fuzzer. @thread main */
fg_status fg_conf_load_string(const fg_conf_slot *slots, void *target,
                              const fg_conf_passthrough *pt, const char *ini,
                              const char *name, char *const *envp,
                              char *const *sets, size_t nsets,
                              char *errbuf, size_t errlen);

/* Sets one key (full dotted name) from text, as a source would.
 * Returns FG_EINVAL with errbuf naming the key on an unknown key or bad value. */
fg_status fg_conf_set(const fg_conf_slot *slots, void *target,
                      const fg_conf_passthrough *pt, const char *key,
                      const char *value, char *errbuf, size_t errlen);

/* Frees the strings the table owns inside target (and sets them NULL). */
void fg_conf_free(const fg_conf_slot *slots, void *target);

/* Frees the items of a pass-through list and empties it. */
void fg_conf_kvs_free(fg_conf_kvs *kvs);

/* The command line every daemon takes:
 *   -c, --config FILE   --set KEY=VALUE (repeatable)   --check-config
 *   -h, --help          -V, --version
 * sets points into argv (borrowed); the array itself is owned. */
typedef struct fg_conf_cli {
    const char *path;
    char **sets;
    size_t nsets;
    int check_only;
    int help;
    int version;
} fg_conf_cli;

/* Parses argv into cli (zeroed by the caller). Returns FG_OK, or FG_EINVAL
 * after printing a usage hint to stderr (an unknown flag or a stray
 * argument), or FG_ENOMEM. Free with fg_conf_cli_free. @thread main */
fg_status fg_conf_cli_parse(fg_conf_cli *cli, int argc, char **argv);
void fg_conf_cli_free(fg_conf_cli *cli);

/* What a daemon does after fg_conf_cli_start. */
typedef enum fg_conf_cli_next {
    FG_CONF_CLI_CONTINUE = 0, /* load the configuration and run */
    FG_CONF_CLI_EXIT_OK = 1,  /* --help or --version was printed */
    FG_CONF_CLI_EXIT_FAIL = 2 /* a usage error was reported */
} fg_conf_cli_next;

/* The prologue every daemon shares: fg_conf_cli_parse, then --help (calls
 * usage(stdout, argv[0])) and --version ("<prog> <version>"). cli is filled
 * either way; free it with fg_conf_cli_free. @thread main */
fg_conf_cli_next fg_conf_cli_start(fg_conf_cli *cli, int argc, char **argv,
                                   const char *prog,
                                   void (*usage)(FILE *out, const char *argv0));

/* The id a daemon instance goes by (lease owner, producer and audit
 * identity): id when set and non-empty, else "<host name>-<pid>", with
 * fallback standing in for a host name that cannot be read. Writes it to
 * out (len bytes, NUL-terminated). Returns 0, or -1 when id does not fit
 * (out then holds it cut short). */
int fg_conf_instance_id(char *out, size_t len, const char *id,
                        const char *fallback);

/* Builds a market map from [markets] pass-through keys (market = comma-
 * separated countries). NULL with errbuf naming the bad key
 * ("markets.EU: ...") or when out of memory. Caller frees with
 * fg_market_map_free. */
fg_market_map *fg_market_map_from(const fg_conf_kvs *markets, char *errbuf,
                                  size_t errlen);

/* Writes one block per slot: key, type, default, env variable, description.
 * For --help. */
void fg_conf_help(const fg_conf_slot *slots, FILE *out);

#endif
