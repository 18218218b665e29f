/* SPDX-License-Identifier: Apache-2.0 */
/* fg-topics: creates, lists, describes and deletes Kafka topics through
 * librdkafka's Admin API, for deploy/local/up, tests/run and the integration
 * tests. "create" is idempotent and returns only once every partition of the
 * topic has a leader, so a producer can use the topic straight away. */

#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

/* Exit codes. */
enum { FT_EXIT_OK = 0, FT_EXIT_ERR = 1, FT_EXIT_USAGE = 2 };

#define FT_MAX_CONFIGS 64
#define FT_DEFAULT_TIMEOUT_MS 30000
/* Sleep between two metadata polls while waiting for partition leaders. */
#define FT_POLL_MS 100

typedef struct ft_opts {
    const char *bootstrap;
    int timeout_ms;
    const char *cmd;
    const char *topic;
    int partitions;  /* create: required, > 0 */
    int replication; /* create: -1 = the broker's default */
    const char *configs[FT_MAX_CONFIGS]; /* "key=value", borrowed from argv */
    size_t nconfigs;
} ft_opts;

static void ft_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: fg-topics -b BOOTSTRAP [-t SECONDS] COMMAND\n"
            "Commands:\n"
            "  create TOPIC --partitions N [--replication-factor R]\n"
            "         [--config KEY=VALUE]...\n"
            "      Creates TOPIC (an existing TOPIC is left as it is) and waits\n"
            "      until every partition has a leader.\n"
            "  list              One line per topic: NAME PARTITIONS\n"
            "  describe TOPIC    The topic's configuration, KEY=VALUE lines\n"
            "  delete TOPIC      Deletes TOPIC (a missing TOPIC is an error)\n"
            "Options:\n"
            "  -b, --bootstrap HOST:PORT[,...]  Kafka bootstrap servers\n"
            "  -t, --timeout SECONDS            bound on each command (30)\n"
            "  -h, --help                       this text\n"
            "Exit status: 0 ok, 1 error (message on stderr), 2 usage.\n");
}

/* Milliseconds on the monotonic clock. */
static int64_t ft_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, at least 1 (librdkafka treats 0 as
 * "do not wait", which would turn a late call into a spurious failure). */
static int ft_left_ms(int64_t deadline)
{
    int64_t left = deadline - ft_now_ms();

    if (left < 1)
        return 1;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Parses a decimal int in [min, max]. Returns 0 on success, -1 otherwise. */
static int ft_parse_int(const char *s, long min, long max, int *out)
{
    char *end = NULL;
    long v;

    if (!s || !*s)
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* Fills opts from argv. Returns FT_EXIT_OK, or FT_EXIT_USAGE after printing
 * why; sets *help when --help was given. */
static int ft_parse_args(int argc, char **argv, ft_opts *opts, int *help)
{
    static const struct option longopts[] = {
        {"bootstrap", required_argument, NULL, 'b'},
        {"timeout", required_argument, NULL, 't'},
        {"partitions", required_argument, NULL, 'p'},
        {"replication-factor", required_argument, NULL, 'r'},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int seconds = 0;
    int c;

    opts->timeout_ms = FT_DEFAULT_TIMEOUT_MS;
    opts->replication = -1;
    *help = 0;
    for (;;) {
        c = getopt_long(argc, argv, "b:t:p:r:c:h", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'b':
            opts->bootstrap = optarg;
            break;
        case 't':
            if (ft_parse_int(optarg, 1, 3600, &seconds) != 0) {
                fprintf(stderr, "fg-topics: bad --timeout '%s' (1..3600 s)\n", optarg);
                return FT_EXIT_USAGE;
            }
            opts->timeout_ms = seconds * 1000;
            break;
        case 'p':
            if (ft_parse_int(optarg, 1, 100000, &opts->partitions) != 0) {
                fprintf(stderr, "fg-topics: bad --partitions '%s'\n", optarg);
                return FT_EXIT_USAGE;
            }
            break;
        case 'r':
            if (ft_parse_int(optarg, -1, 1000, &opts->replication) != 0 ||
                opts->replication == 0) {
                fprintf(stderr, "fg-topics: bad --replication-factor '%s'\n", optarg);
                return FT_EXIT_USAGE;
            }
            break;
        case 'c':
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                fprintf(stderr, "fg-topics: --config wants KEY=VALUE, got '%s'\n", optarg);
                return FT_EXIT_USAGE;
            }
            if (opts->nconfigs >= FT_MAX_CONFIGS) {
                fprintf(stderr, "fg-topics: more than %d --config options\n", FT_MAX_CONFIGS);
                return FT_EXIT_USAGE;
            }
            opts->configs[opts->nconfigs++] = optarg;
            break;
        case 'h':
            *help = 1;
            return FT_EXIT_OK;
        default:
            return FT_EXIT_USAGE; /* getopt printed the reason */
        }
    }

    if (optind < argc)
        opts->cmd = argv[optind++];
    if (optind < argc)
        opts->topic = argv[optind++];
    if (!opts->cmd) {
        fprintf(stderr, "fg-topics: no command given\n");
        return FT_EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "fg-topics: unexpected argument '%s'\n", argv[optind]);
        return FT_EXIT_USAGE;
    }
    if (!opts->bootstrap) {
        fprintf(stderr, "fg-topics: -b BOOTSTRAP is required\n");
        return FT_EXIT_USAGE;
    }
    if (strcmp(opts->cmd, "list") == 0) {
        if (opts->topic) {
            fprintf(stderr, "fg-topics: list takes no topic\n");
            return FT_EXIT_USAGE;
        }
    } else if (strcmp(opts->cmd, "create") == 0 ||
               strcmp(opts->cmd, "describe") == 0 ||
               strcmp(opts->cmd, "delete") == 0) {
        if (!opts->topic || !*opts->topic) {
            fprintf(stderr, "fg-topics: %s needs a TOPIC\n", opts->cmd);
            return FT_EXIT_USAGE;
        }
    } else {
        fprintf(stderr, "fg-topics: unknown command '%s'\n", opts->cmd);
        return FT_EXIT_USAGE;
    }
    if (strcmp(opts->cmd, "create") == 0 && opts->partitions <= 0) {
        fprintf(stderr, "fg-topics: create needs --partitions N\n");
        return FT_EXIT_USAGE;
    }
    if (strcmp(opts->cmd, "create") != 0 &&
        (opts->partitions || opts->nconfigs || opts->replication != -1)) {
        fprintf(stderr, "fg-topics: --partitions, --replication-factor and "
                        "--config only apply to create\n");
        return FT_EXIT_USAGE;
    }
    return FT_EXIT_OK;
}

/* Creates the client handle (a producer: admin requests work on any kind).
 * Returns NULL after printing why. */
static rd_kafka_t *ft_client_new(const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "client.id", "fg-topics", errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "fg-topics: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        /* rd_kafka_new only takes conf over on success. */
        fprintf(stderr, "fg-topics: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return rk;
}

/* Polls metadata until topic exists with a leader for every partition (and,
 * when want_partitions > 0, that many partitions). Returns 0, or -1 after
 * printing what was last seen. */
static int ft_wait_leaders(rd_kafka_t *rk, const char *topic,
                           int want_partitions, int64_t deadline)
{
    char last[256] = "no metadata";
    int rc = -1;

    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err;
        int ready = 0;

        err = rd_kafka_metadata(rk, 1, NULL, &md, ft_left_ms(deadline));
        if (err) {
            snprintf(last, sizeof(last), "metadata: %s", rd_kafka_err2str(err));
        } else {
            snprintf(last, sizeof(last), "topic not in metadata");
            for (int i = 0; i < md->topic_cnt; i++) {
                const struct rd_kafka_metadata_topic *t = &md->topics[i];
                int leaders = 0;

                if (strcmp(t->topic, topic) != 0)
                    continue;
                if (t->err) {
                    snprintf(last, sizeof(last), "%s", rd_kafka_err2str(t->err));
                    break;
                }
                for (int j = 0; j < t->partition_cnt; j++) {
                    if (t->partitions[j].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                        t->partitions[j].leader >= 0)
                        leaders++;
                }
                snprintf(last, sizeof(last), "%d of %d partitions have a leader",
                         leaders, t->partition_cnt);
                ready = t->partition_cnt > 0 && leaders == t->partition_cnt &&
                        (want_partitions <= 0 || t->partition_cnt == want_partitions);
                break;
            }
            rd_kafka_metadata_destroy(md);
        }
        if (ready) {
            rc = 0;
            break;
        }
        if (ft_now_ms() + FT_POLL_MS >= deadline) {
            fprintf(stderr, "fg-topics: %s: not ready in time (%s)\n", topic, last);
            break;
        }
        nanosleep(&(struct timespec){0, FT_POLL_MS * 1000000L}, NULL);
    }
    return rc;
}

/* Sets the request timeout of an admin request and, for create and delete
 * (with_op), how long the controller may take to carry it out. Returns 0, or
 * -1 after printing why. */
static int ft_admin_timeouts(rd_kafka_AdminOptions_t *ao, int with_op, int64_t deadline)
{
    char errstr[256];

    if (rd_kafka_AdminOptions_set_request_timeout(ao, ft_left_ms(deadline), errstr,
                                                  sizeof(errstr)) ||
        (with_op && rd_kafka_AdminOptions_set_operation_timeout(
                        ao, ft_left_ms(deadline), errstr, sizeof(errstr)))) {
        fprintf(stderr, "fg-topics: %s\n", errstr);
        return -1;
    }
    return 0;
}

/* Sends one admin request on ao and q (an rd_kafka_CreateTopics-style call
 * for the object obj). */
typedef void ft_send_fn(rd_kafka_t *rk, void *obj, rd_kafka_AdminOptions_t *ao,
                        rd_kafka_queue_t *q);

/* Runs one admin request of kind op for opts->topic: options with the
 * deadline's timeouts, send(), then waits on a queue of its own. Returns the
 * result event (the caller destroys it), or NULL after printing why (a
 * timeout, or the request's error as "fg-topics: VERB TOPIC: ..."). */
static rd_kafka_event_t *ft_admin(rd_kafka_t *rk, rd_kafka_admin_op_t op,
                                  const char *verb, const char *topic,
                                  int64_t deadline, ft_send_fn *send, void *obj)
{
    rd_kafka_AdminOptions_t *ao = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;

    if (ft_admin_timeouts(ao, op != RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, deadline) != 0)
        goto out;
    q = rd_kafka_queue_new(rk);
    send(rk, obj, ao, q);
    ev = rd_kafka_queue_poll(q, ft_left_ms(deadline));
    if (!ev) {
        fprintf(stderr, "fg-topics: %s: timed out\n", topic);
    } else if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "fg-topics: %s %s: %s\n", verb, topic,
                rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        ev = NULL;
    }
out:
    /* The options were copied into the request; the event outlives q. */
    if (q)
        rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(ao);
    return ev;
}

/* Checks the per-topic results of a create or delete. Returns 0; 1 when the
 * topic existed already and exists_ok (create: idempotent); or -1 after
 * printing the error. */
static int ft_topic_results(const rd_kafka_topic_result_t **results, size_t n,
                            const char *verb, const char *topic, int exists_ok)
{
    int existed = 0;

    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);

        if (exists_ok && err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            existed = 1;
        } else if (err) {
            const char *msg = rd_kafka_topic_result_error_string(results[i]);

            fprintf(stderr, "fg-topics: %s %s: %s\n", verb, topic,
                    msg ? msg : rd_kafka_err2str(err));
            return -1;
        }
    }
    return existed;
}

static void ft_send_create(rd_kafka_t *rk, void *obj, rd_kafka_AdminOptions_t *ao,
                           rd_kafka_queue_t *q)
{
    rd_kafka_CreateTopics(rk, (rd_kafka_NewTopic_t **)obj, 1, ao, q);
}

static int ft_create(rd_kafka_t *rk, const ft_opts *opts, int64_t deadline)
{
    char errstr[512];
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_topic_result_t **results;
    size_t nresults = 0;
    int want_partitions = opts->partitions;
    int rc = FT_EXIT_ERR;

    nt = rd_kafka_NewTopic_new(opts->topic, opts->partitions, opts->replication,
                               errstr, sizeof(errstr));
    if (!nt) {
        fprintf(stderr, "fg-topics: %s: %s\n", opts->topic, errstr);
        goto out;
    }
    for (size_t i = 0; i < opts->nconfigs; i++) {
        char key[256];
        const char *eq = strchr(opts->configs[i], '=');
        size_t klen = (size_t)(eq - opts->configs[i]);
        rd_kafka_resp_err_t err;

        if (klen >= sizeof(key)) {
            fprintf(stderr, "fg-topics: config key too long: %s\n", opts->configs[i]);
            goto out;
        }
        memcpy(key, opts->configs[i], klen);
        key[klen] = '\0';
        err = rd_kafka_NewTopic_set_config(nt, key, eq + 1);
        if (err) {
            fprintf(stderr, "fg-topics: config %s: %s\n", key, rd_kafka_err2str(err));
            goto out;
        }
    }

    ev = ft_admin(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, "create", opts->topic,
                  deadline, ft_send_create, &nt);
    if (!ev)
        goto out;
    results = rd_kafka_CreateTopics_result_topics(
        rd_kafka_event_CreateTopics_result(ev), &nresults);
    switch (ft_topic_results(results, nresults, "create", opts->topic, 1)) {
    case -1:
        goto out;
    case 1:
        /* Idempotent: an existing topic is kept as it is, whatever its
         * partition count or configs. */
        want_partitions = 0;
        break;
    }
    if (ft_wait_leaders(rk, opts->topic, want_partitions, deadline) != 0)
        goto out;
    rc = FT_EXIT_OK;

out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    return rc;
}

static void ft_send_delete(rd_kafka_t *rk, void *obj, rd_kafka_AdminOptions_t *ao,
                           rd_kafka_queue_t *q)
{
    rd_kafka_DeleteTopics(rk, (rd_kafka_DeleteTopic_t **)obj, 1, ao, q);
}

static int ft_delete(rd_kafka_t *rk, const ft_opts *opts, int64_t deadline)
{
    rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(opts->topic);
    rd_kafka_event_t *ev;
    const rd_kafka_topic_result_t **results;
    size_t nresults = 0;
    int rc = FT_EXIT_ERR;

    ev = ft_admin(rk, RD_KAFKA_ADMIN_OP_DELETETOPICS, "delete", opts->topic,
                  deadline, ft_send_delete, &dt);
    if (ev) {
        results = rd_kafka_DeleteTopics_result_topics(
            rd_kafka_event_DeleteTopics_result(ev), &nresults);
        if (ft_topic_results(results, nresults, "delete", opts->topic, 0) == 0)
            rc = FT_EXIT_OK;
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_DeleteTopic_destroy(dt);
    return rc;
}

static void ft_send_describe(rd_kafka_t *rk, void *obj, rd_kafka_AdminOptions_t *ao,
                             rd_kafka_queue_t *q)
{
    rd_kafka_DescribeConfigs(rk, (rd_kafka_ConfigResource_t **)obj, 1, ao, q);
}

static int ft_describe(rd_kafka_t *rk, const ft_opts *opts, int64_t deadline)
{
    rd_kafka_ConfigResource_t *cr;
    rd_kafka_event_t *ev;
    const rd_kafka_ConfigResource_t **resources;
    size_t nresources = 0;
    int rc = FT_EXIT_ERR;

    cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, opts->topic);
    ev = ft_admin(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, "describe", opts->topic,
                  deadline, ft_send_describe, &cr);
    if (!ev)
        goto out;
    resources = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(ev), &nresources);
    for (size_t i = 0; i < nresources; i++) {
        const rd_kafka_ConfigEntry_t **entries;
        size_t nentries = 0;
        rd_kafka_resp_err_t err = rd_kafka_ConfigResource_error(resources[i]);

        if (err) {
            const char *msg = rd_kafka_ConfigResource_error_string(resources[i]);

            fprintf(stderr, "fg-topics: describe %s: %s\n", opts->topic,
                    msg && *msg ? msg : rd_kafka_err2str(err));
            goto out;
        }
        entries = rd_kafka_ConfigResource_configs(resources[i], &nentries);
        for (size_t j = 0; j < nentries; j++) {
            const char *value = rd_kafka_ConfigEntry_value(entries[j]);

            printf("%s=%s\n", rd_kafka_ConfigEntry_name(entries[j]), value ? value : "");
        }
    }
    rc = FT_EXIT_OK;

out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (cr)
        rd_kafka_ConfigResource_destroy(cr);
    return rc;
}

static int ft_list(rd_kafka_t *rk, int64_t deadline)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;

    err = rd_kafka_metadata(rk, 1, NULL, &md, ft_left_ms(deadline));
    if (err) {
        fprintf(stderr, "fg-topics: list: %s\n", rd_kafka_err2str(err));
        return FT_EXIT_ERR;
    }
    for (int i = 0; i < md->topic_cnt; i++)
        printf("%s %d\n", md->topics[i].topic, md->topics[i].partition_cnt);
    rd_kafka_metadata_destroy(md);
    return FT_EXIT_OK;
}

int main(int argc, char **argv)
{
    ft_opts opts = {0};
    rd_kafka_t *rk = NULL;
    int64_t deadline;
    int help = 0;
    int rc;

    rc = ft_parse_args(argc, argv, &opts, &help);
    if (help) {
        ft_usage(stdout);
        goto out;
    }
    if (rc != FT_EXIT_OK) {
        ft_usage(stderr);
        goto out;
    }
    deadline = ft_now_ms() + opts.timeout_ms;
    rk = ft_client_new(opts.bootstrap);
    if (!rk) {
        rc = FT_EXIT_ERR;
        goto out;
    }
    if (strcmp(opts.cmd, "create") == 0)
        rc = ft_create(rk, &opts, deadline);
    else if (strcmp(opts.cmd, "delete") == 0)
        rc = ft_delete(rk, &opts, deadline);
    else if (strcmp(opts.cmd, "describe") == 0)
        rc = ft_describe(rk, &opts, deadline);
    else
        rc = ft_list(rk, deadline);

out:
    if (rk)
        rd_kafka_destroy(rk);
    if (fflush(stdout) != 0 && rc == FT_EXIT_OK)
        rc = FT_EXIT_ERR;
    return rc;
}
