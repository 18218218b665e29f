/* SPDX-License-Identifier: Apache-2.0 */
/* naive-counter: the baseline of the scorer benchmark (bench/scorer_run).
 * A plain librdkafka group consumer that decodes every check-in record and
 * writes it to Redis on its own: INCR of its region's bucket counter, PFADD
 * of the device into the bucket's device HLL and, when grey, into the grey
 * HLL, pipelined with blocking hiredis. No fence, no expiry, no dedupe: it
 * does less than the scorer must, and only shows what per-check-in writes
 * cost. Stops after --count records and prints one JSON line. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>

#include "fg_checkin.h"
#include "fg_region.h"

#define NC_MAX_PIPELINE 100000

typedef struct nc_opts {
    const char *brokers;
    const char *topic;
    const char *group;
    const char *redis_host;
    int redis_port;
    long count;
    long pipeline;     /* check-ins per pipelined flush */
    int64_t bucket_ms;
    long idle_ms;      /* give up after this long without a record */
} nc_opts;

typedef struct nc_state {
    redisContext *rc;
    long pending_cmds;  /* replies to read */
    long pending_items; /* check-ins in the pipeline */
    long applied;       /* check-ins whose replies were read */
    long redis_errors;
} nc_state;

static double nc_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nc_usage(FILE *out)
{
    fprintf(out,
            "Usage: naive-counter -b BROKERS -t TOPIC -g GROUP -n COUNT\n"
            "                     [--redis HOST:PORT] [--pipeline N]\n"
            "                     [--bucket-ms MS] [--idle-ms MS]\n"
            "  Reads TOPIC from the beginning (fresh GROUP) until COUNT\n"
            "  records are applied to Redis (default 127.0.0.1:6379), N\n"
            "  check-ins per pipeline (default 1000). Exits 1 when no record\n"
            "  arrives for --idle-ms (default 30000).\n");
}

static int nc_parse(int argc, char **argv, nc_opts *o)
{
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"group", required_argument, NULL, 'g'},
        {"count", required_argument, NULL, 'n'},
        {"redis", required_argument, NULL, 'r'},
        {"pipeline", required_argument, NULL, 'P'},
        {"bucket-ms", required_argument, NULL, 'B'},
        {"idle-ms", required_argument, NULL, 'I'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char host[256];
    int c;
    char *end, *colon;
    o->redis_host = "127.0.0.1";
    o->redis_port = 6379;
    o->pipeline = 1000;
    o->bucket_ms = 60000;
    o->idle_ms = 30000;
    while ((c = getopt_long(argc, argv, "b:t:g:n:h", opts, NULL)) != -1) {
        end = NULL;
        switch (c) {
        case 'b': o->brokers = optarg; break;
        case 't': o->topic = optarg; break;
        case 'g': o->group = optarg; break;
        case 'n': o->count = strtol(optarg, &end, 10); break;
        case 'r':
            snprintf(host, sizeof(host), "%s", optarg);
            colon = strrchr(host, ':');
            if (!colon)
                return -1;
            *colon = '\0';
            o->redis_host = host;
            o->redis_port = (int)strtol(colon + 1, &end, 10);
            break;
        case 'P': o->pipeline = strtol(optarg, &end, 10); break;
        case 'B': o->bucket_ms = strtoll(optarg, &end, 10); break;
        case 'I': o->idle_ms = strtol(optarg, &end, 10); break;
        case 'h': nc_usage(stdout); exit(0);
        default: return -1;
        }
        if (end && *end)
            return -1;
    }
    if (!o->brokers || !o->topic || !o->group || o->count < 1 ||
        o->pipeline < 1 || o->pipeline > NC_MAX_PIPELINE ||
        o->bucket_ms < 1 || o->redis_port < 1 || o->redis_port > 65535 ||
        o->idle_ms < 1 || optind != argc)
        return -1;
    return 0;
}

/* Reads every outstanding reply. Returns -1 when the connection failed. */
static int nc_drain(nc_state *s)
{
    while (s->pending_cmds > 0) {
        void *reply = NULL;
        if (redisGetReply(s->rc, &reply) != REDIS_OK || !reply) {
            fprintf(stderr, "naive-counter: redis: %s\n", s->rc->errstr);
            return -1;
        }
        if (((redisReply *)reply)->type == REDIS_REPLY_ERROR &&
            s->redis_errors++ < 5)
            fprintf(stderr, "naive-counter: redis error: %s\n",
                    ((redisReply *)reply)->str);
        freeReplyObject(reply);
        s->pending_cmds--;
    }
    s->applied += s->pending_items;
    s->pending_items = 0;
    return 0;
}

/* Queues the writes of one record (a record that does not decode is
 * counted as applied, with nothing written, like a dead letter). */
static void nc_add(nc_state *s, const nc_opts *o, const rd_kafka_message_t *m,
                   long *bad)
{
    fg_checkin ci;
    fg_checkin_meta meta;
    fg_checkin_error e;
    s->pending_items++;
    if (!m->payload || fg_checkin_decode_record(m->payload, m->len, &ci, &meta,
                                                &e) != FG_OK) {
        (*bad)++;
        return;
    }
    long long b = (long long)(meta.recv_ts / o->bucket_ms);
    redisAppendCommand(s->rc, "INCR fg:{%s}:n:%lld", ci.region, b);
    redisAppendCommand(s->rc, "PFADD fg:{%s}:d:%lld %s", ci.region, b,
                       ci.device_id);
    s->pending_cmds += 2;
    if (fg_region_is_grey(NULL, ci.sku_region, ci.region)) {
        redisAppendCommand(s->rc, "PFADD fg:{%s}:g:%lld %s", ci.region, b,
                           ci.device_id);
        s->pending_cmds++;
    }
}

int main(int argc, char **argv)
{
    nc_opts o;
    nc_state s;
    char err[512];
    int rc = 1;
    long consumed = 0, bad = 0;
    rd_kafka_t *rk = NULL;
    rd_kafka_conf_t *kc = NULL;
    rd_kafka_topic_partition_list_t *sub = NULL;
    memset(&o, 0, sizeof(o));
    memset(&s, 0, sizeof(s));
    if (nc_parse(argc, argv, &o) != 0) {
        nc_usage(stderr);
        return 2;
    }
    double t0 = nc_mono_s();
    s.rc = redisConnect(o.redis_host, o.redis_port);
    if (!s.rc || s.rc->err) {
        fprintf(stderr, "naive-counter: redis %s:%d: %s\n", o.redis_host,
                o.redis_port, s.rc ? s.rc->errstr : "out of memory");
        goto out;
    }
    kc = rd_kafka_conf_new();
    const char *conf[][2] = {
        {"bootstrap.servers", o.brokers},
        {"group.id", o.group},
        {"auto.offset.reset", "earliest"},
        {"enable.auto.commit", "false"},
        {"enable.partition.eof", "false"},
    };
    for (size_t i = 0; i < sizeof(conf) / sizeof(conf[0]); i++) {
        if (rd_kafka_conf_set(kc, conf[i][0], conf[i][1], err, sizeof(err)) !=
            RD_KAFKA_CONF_OK) {
            fprintf(stderr, "naive-counter: %s: %s\n", conf[i][0], err);
            goto out;
        }
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "naive-counter: %s\n", err);
        goto out;
    }
    kc = NULL;
    rd_kafka_poll_set_consumer(rk);
    sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, o.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(rk, sub);
    if (serr) {
        fprintf(stderr, "naive-counter: subscribe: %s\n", rd_kafka_err2str(serr));
        goto out;
    }

    double first = 0, last_seen = nc_mono_s();
    while (s.applied < o.count) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            /* Nothing more right now: settle what is in the pipeline. */
            if (s.pending_items && nc_drain(&s) != 0)
                goto out;
            if ((nc_mono_s() - last_seen) * 1000 > (double)o.idle_ms) {
                fprintf(stderr, "naive-counter: no record for %ld ms after %ld\n",
                        o.idle_ms, consumed);
                goto out;
            }
            continue;
        }
        if (m->err) {
            fprintf(stderr, "naive-counter: consume: %s\n",
                    rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        last_seen = nc_mono_s();
        if (!consumed)
            first = last_seen;
        consumed++;
        nc_add(&s, &o, m, &bad);
        rd_kafka_message_destroy(m);
        if ((s.pending_items >= o.pipeline || consumed >= o.count) &&
            nc_drain(&s) != 0)
            goto out;
    }
    double t1 = nc_mono_s();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"applied\":%ld,\"undecodable\":%ld,\"redis_errors\":%ld,"
           "\"wall_s\":%.3f,\"first_record_s\":%.3f,\"utime_s\":%.3f,"
           "\"stime_s\":%.3f}\n",
           s.applied, bad, s.redis_errors, t1 - t0, first - t0,
           (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
    fflush(stdout);
    rc = s.redis_errors ? 1 : 0;
out:
    if (kc)
        rd_kafka_conf_destroy(kc);
    if (sub)
        rd_kafka_topic_partition_list_destroy(sub);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (s.rc)
        redisFree(s.rc);
    return rc;
}
