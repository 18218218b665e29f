/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for common/fg_kafka's queue pump: events reach the callback in
 * order, a round stops at its budget and comes back, and the round callback
 * runs once per round with the number of events served. No broker needed:
 * the events are Admin API results that time out on a client with no
 * reachable broker. */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fg_kafka.h"
#include "fg_test.h"

typedef struct seen {
    int events;        /* events handed to the event callback */
    int rounds;        /* round callbacks */
    int round_sum;     /* sum of their served counts */
    int last_served;
    int events_at_round; /* events seen when the last round ended */
} seen;

static void on_ev(void *ud, rd_kafka_event_t *ev)
{
    seen *s = ud;
    if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT)
        s->events++;
}

static void on_round(void *ud, int served)
{
    seen *s = ud;
    s->rounds++;
    s->round_sum += served;
    s->last_served = served;
    s->events_at_round = s->events;
}

/* Queues n CreateTopics results on q: each request times out after 20 ms.
 * Returns once they are all on the queue (or after 5 s). */
static void queue_results(rd_kafka_t *rk, rd_kafka_queue_t *q, int n)
{
    char err[256];
    rd_kafka_AdminOptions_t *o =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(o, 20, err, sizeof(err));
    for (int i = 0; i < n; i++) {
        rd_kafka_NewTopic_t *t =
            rd_kafka_NewTopic_new("t", 1, -1, err, sizeof(err));
        rd_kafka_CreateTopics(rk, &t, 1, o, q);
        rd_kafka_NewTopic_destroy(t);
    }
    rd_kafka_AdminOptions_destroy(o);
    for (int ms = 0; ms < 5000 && rd_kafka_queue_length(q) < (size_t)n;
         ms += 5) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
}

static void test_rounds_and_budget(void)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    FG_CHECK_INT(fg_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1",
                                   err, sizeof(err)),
                 FG_OK);
    /* The refused connections would be logged at error level. */
    FG_CHECK_INT(fg_kafka_conf_set(conf, "log_level", "0", err, sizeof(err)),
                 FG_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    FG_CHECK(rk != NULL);
    if (!rk)
        return;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    struct event_base *base = event_base_new();
    seen s;
    memset(&s, 0, sizeof(s));
    fg_kafka_pump *pump =
        fg_kafka_pump_new(base, q, 4, on_ev, &s, err, sizeof(err));
    FG_CHECK(pump != NULL);
    fg_kafka_pump_set_round_cb(pump, on_round);

    /* An empty queue: one round that served nothing. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    FG_CHECK_INT(s.events, 0);
    FG_CHECK(s.rounds >= 1);
    FG_CHECK_INT(s.last_served, 0);

    /* Ten events with a budget of four: rounds of 4, 4 and 2, each round
     * callback after its events. */
    queue_results(rk, q, 10);
    FG_CHECK_INT(rd_kafka_queue_length(q), 10);
    s.rounds = s.round_sum = 0;
    fg_kafka_pump_run(pump);
    FG_CHECK_INT(s.events, 4);
    FG_CHECK_INT(s.rounds, 1);
    FG_CHECK_INT(s.last_served, 4);
    FG_CHECK_INT(s.events_at_round, 4);
    /* The rest comes back through the loop, not all at once. */
    for (int i = 0; i < 5 && s.events < 10; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    FG_CHECK_INT(s.events, 10);
    FG_CHECK_INT(s.round_sum, 10);
    FG_CHECK(s.rounds >= 3);

    /* Cleared: no more round callbacks. */
    fg_kafka_pump_set_round_cb(pump, NULL);
    int rounds = s.rounds;
    fg_kafka_pump_run(pump);
    FG_CHECK_INT(s.rounds, rounds);

    fg_kafka_pump_free(pump);
    fg_kafka_pump_free(NULL);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    event_base_free(base);
}

FG_TEST_MAIN(test_rounds_and_budget)
