/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzz driver for the configuration loader: the input is INI text loaded
 * through fg_conf_load_string into a table with every slot type and a
 * pass-through prefix; its first line is also fed to each slot's value
 * parser through fg_conf_set. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fg_config.h"

#define FUZZ_MAX 65536

typedef struct fuzz_conf {
    char *listen;
    int64_t threads;
    bool tls;
    int64_t max_body;
    int64_t timeout;
    char *node;
} fuzz_conf;

static const fg_conf_slot slots[] = {
    {"gateway.listen", FG_CONF_STR, "127.0.0.1:8080", offsetof(fuzz_conf, listen), 0, 0, "L"},
    {"gateway.threads", FG_CONF_INT, "2", offsetof(fuzz_conf, threads), 1, 1024, "T"},
    {"gateway.tls", FG_CONF_BOOL, "off", offsetof(fuzz_conf, tls), 0, 0, "B"},
    {"gateway.max-body", FG_CONF_SIZE, "64k", offsetof(fuzz_conf, max_body), 1024, 1 << 24, "S"},
    {"gateway.timeout", FG_CONF_DURATION, "5s", offsetof(fuzz_conf, timeout), 0, 0, "D"},
    {"node", FG_CONF_STR, NULL, offsetof(fuzz_conf, node), 0, 0, "N"},
    FG_CONF_END};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_conf c;
    fg_conf_kvs kafka = {0};
    const fg_conf_passthrough pt[] = {{"kafka.", &kafka}, {NULL, NULL}};
    char errbuf[256];
    char *text;
    char *nl;

    if (size > FUZZ_MAX)
        return 0;
    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&c, 0, sizeof(c));

    fg_conf_load_string(slots, &c, pt, text, "fuzz.ini", NULL, NULL, 0, errbuf,
                        sizeof(errbuf));
    /* An error message is always NUL-terminated within errbuf. */
    if (memchr(errbuf, '\0', sizeof(errbuf)) == NULL)
        abort();

    nl = strchr(text, '\n');
    if (nl)
        *nl = '\0';
    for (const fg_conf_slot *s = slots; s->name; s++)
        fg_conf_set(slots, &c, pt, s->name, text, errbuf, sizeof(errbuf));
    fg_conf_set(slots, &c, pt, text, "1", errbuf, sizeof(errbuf));

    fg_conf_free(slots, &c);
    fg_conf_kvs_free(&kafka);
    free(text);
    return 0;
}
