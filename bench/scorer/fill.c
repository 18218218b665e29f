/* SPDX-License-Identifier: Apache-2.0 */
/* scorer-fill: fills a check-in topic for the scorer benchmark with records
 * exactly as the gateway produces them (key device_id, the gateway's two
 * headers, value from fg_checkin_encode with recv_ts = now), from a fixed
 * fleet: device i is in region i mod R, a seeded share of the devices is
 * grey, and every device's seq rises 1, 2, 3... so nothing is a duplicate.
 * As fast as it can, or paced at --rate records per second (a live stream).
 * Built and run by bench/scorer_run. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "fg_checkin.h"
#include "fg_region.h"

#define SF_MAX_DEVICES 10000000L
#define SF_MAX_REGIONS 676 /* two-letter codes AA..ZZ */
#define SF_GW_ID "gw-bench-fill"

typedef struct sf_opts {
    const char *brokers;
    const char *topic;
    long count;
    long devices;
    long regions;
    double grey;
    double rate; /* records per second; 0: as fast as possible */
    uint64_t seed;
} sf_opts;

typedef struct sf_device {
    char id[32];
    char region[3];
    char sku[3];
} sf_device;

static long sf_failed; /* delivery reports with an error */

static uint64_t sf_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int64_t sf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double sf_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sf_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *ud)
{
    (void)rk;
    (void)ud;
    if (m->err) {
        if (sf_failed++ < 5)
            fprintf(stderr, "scorer-fill: delivery failed: %s\n",
                    rd_kafka_err2str(m->err));
    }
}

static void sf_usage(FILE *out)
{
    fprintf(out,
            "Usage: scorer-fill -b BROKERS -t TOPIC -n COUNT [--devices D]\n"
            "                   [--regions R] [--grey SHARE] [--seed S]\n"
            "                   [--rate PER_SECOND]\n"
            "  COUNT check-ins over D devices (default 5000) in R regions\n"
            "  (default 50, codes AA, AB, ...), a share SHARE of the devices\n"
            "  grey (default 0.3), recv_ts = now; --rate paces the records\n"
            "  (default: as fast as possible). Prints one JSON line.\n");
}

static int sf_parse(int argc, char **argv, sf_opts *o)
{
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},
        {"devices", required_argument, NULL, 'd'},
        {"regions", required_argument, NULL, 'r'},
        {"grey", required_argument, NULL, 'g'},
        {"seed", required_argument, NULL, 's'},
        {"rate", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    o->devices = 5000;
    o->regions = 50;
    o->grey = 0.3;
    o->seed = 1;
    while ((c = getopt_long(argc, argv, "b:t:n:d:r:g:s:h", opts, NULL)) != -1) {
        end = NULL;
        switch (c) {
        case 'b': o->brokers = optarg; break;
        case 't': o->topic = optarg; break;
        case 'n': o->count = strtol(optarg, &end, 10); break;
        case 'd': o->devices = strtol(optarg, &end, 10); break;
        case 'r': o->regions = strtol(optarg, &end, 10); break;
        case 'g': o->grey = strtod(optarg, &end); break;
        case 's': o->seed = strtoull(optarg, &end, 10); break;
        case 'R': o->rate = strtod(optarg, &end); break;
        case 'h': sf_usage(stdout); exit(0);
        default: return -1;
        }
        if (end && *end)
            return -1;
    }
    if (!o->brokers || !o->topic || o->count < 1 || o->devices < 1 ||
        o->devices > SF_MAX_DEVICES || o->regions < 1 ||
        o->regions > SF_MAX_REGIONS || o->grey < 0 || o->grey > 1 ||
        o->rate < 0 || o->rate > 1e7 || optind != argc)
        return -1;
    return 0;
}

/* The fleet: ids, regions, and a grey device's sku_region elsewhere. */
static sf_device *sf_fleet(const sf_opts *o, long *ngrey)
{
    sf_device *d = calloc((size_t)o->devices, sizeof(*d));
    uint64_t s = o->seed;
    *ngrey = 0;
    if (!d)
        return NULL;
    for (long i = 0; i < o->devices; i++) {
        long r = i % o->regions;
        snprintf(d[i].id, sizeof(d[i].id), "dev-%08ld", i);
        d[i].region[0] = (char)('A' + r / 26);
        d[i].region[1] = (char)('A' + r % 26);
        int grey = (double)(sf_splitmix(&s) >> 11) / 9007199254740992.0 < o->grey;
        /* "ZZ" is never a benchmark region unless R = 676; then "ZY". */
        const char *other = strcmp(d[i].region, "ZZ") == 0 ? "ZY" : "ZZ";
        memcpy(d[i].sku, grey ? other : d[i].region, 3);
        *ngrey += grey;
    }
    return d;
}

int main(int argc, char **argv)
{
    sf_opts o;
    char err[512];
    int rc = 1;
    long ngrey = 0, sent = 0;
    sf_device *fleet = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_conf_t *kc = NULL;
    memset(&o, 0, sizeof(o));
    if (sf_parse(argc, argv, &o) != 0) {
        sf_usage(stderr);
        return 2;
    }
    fleet = sf_fleet(&o, &ngrey);
    if (!fleet) {
        fprintf(stderr, "scorer-fill: out of memory\n");
        goto out;
    }
    kc = rd_kafka_conf_new();
    const char *conf[][2] = {
        {"bootstrap.servers", o.brokers},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "20"},
        {"batch.size", "1000000"},
        {"queue.buffering.max.messages", "500000"},
        {"queue.buffering.max.kbytes", "262144"},
    };
    for (size_t i = 0; i < sizeof(conf) / sizeof(conf[0]); i++) {
        if (rd_kafka_conf_set(kc, conf[i][0], conf[i][1], err, sizeof(err)) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "scorer-fill: %s: %s\n", conf[i][0], err);
            goto out;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(kc, sf_dr);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "scorer-fill: %s\n", err);
        goto out;
    }
    kc = NULL;
    rkt = rd_kafka_topic_new(rk, o.topic, NULL);
    if (!rkt)
        goto out;

    double t0 = sf_mono_s();
    int64_t now = sf_now_ms(), first_ts = now;
    fg_checkin ci;
    char val[FG_CHECKIN_RECORD_MAX];
    for (long k = 0; k < o.count; k++) {
        const sf_device *d = &fleet[k % o.devices];
        if ((k & 1023) == 0)
            now = sf_now_ms();
        if (o.rate > 0 && (k % 100) == 0) {
            /* Paced: record k is due at t0 + k / rate. */
            double due = t0 + (double)k / o.rate;
            double left = due - sf_mono_s();
            while (left > 0) {
                struct timespec ts = {(time_t)left,
                                      (long)((left - (double)(time_t)left) * 1e9)};
                rd_kafka_poll(rk, 0);
                nanosleep(&ts, NULL);
                left = due - sf_mono_s();
            }
            now = sf_now_ms();
        }
        memset(&ci, 0, sizeof(ci));
        ci.device_id_len = (uint16_t)strlen(d->id);
        memcpy(ci.device_id, d->id, ci.device_id_len + 1u);
        memcpy(ci.sku_region, d->sku, 3);
        memcpy(ci.region, d->region, 3);
        ci.sku_region_len = ci.region_len = 2;
        memcpy(ci.model, "Pixel 8", 8);
        ci.model_len = 7;
        memcpy(ci.fw, "1.4.2-rc1", 10);
        ci.fw_len = 9;
        ci.seq = (uint64_t)(k / o.devices) + 1;
        ci.ts = now;
        ci.has = FG_CHECKIN_HAS_MODEL | FG_CHECKIN_HAS_FW |
                 FG_CHECKIN_HAS_SEQ | FG_CHECKIN_HAS_TS;
        size_t n = fg_checkin_encode(&ci, now, SF_GW_ID, val, sizeof(val));
        if (n == 0) {
            fprintf(stderr, "scorer-fill: encode failed\n");
            goto out;
        }
        for (;;) {
            rd_kafka_resp_err_t perr = rd_kafka_producev(
                rk, RD_KAFKA_V_RKT(rkt),
                RD_KAFKA_V_KEY(ci.device_id, ci.device_id_len),
                RD_KAFKA_V_VALUE(val, n),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADER("content-type", "application/msgpack", 19),
                RD_KAFKA_V_HEADER("schema", "fleetgate.checkin.v1", 20),
                RD_KAFKA_V_END);
            if (perr == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            if (perr != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "scorer-fill: produce: %s\n",
                        rd_kafka_err2str(perr));
                goto out;
            }
            rd_kafka_poll(rk, 50);
        }
        sent++;
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "scorer-fill: flush timed out\n");
        goto out;
    }
    double secs = sf_mono_s() - t0;
    if (sf_failed) {
        fprintf(stderr, "scorer-fill: %ld records not delivered\n", sf_failed);
        goto out;
    }
    printf("{\"topic\":\"%s\",\"records\":%ld,\"devices\":%ld,\"grey_devices\":%ld,"
           "\"regions\":%ld,\"rate\":%.0f,\"first_recv_ts\":%" PRId64
           ",\"last_recv_ts\":%" PRId64 ",\"seconds\":%.3f}\n",
           o.topic, sent, o.devices, ngrey, o.regions, o.rate, first_ts, now,
           secs);
    rc = 0;
out:
    if (kc)
        rd_kafka_conf_destroy(kc);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    free(fleet);
    return rc;
}
