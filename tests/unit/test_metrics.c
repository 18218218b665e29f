/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for fg_metrics: exact counter totals under concurrent updates,
 * cumulative histogram buckets, and the text exposition read back line by
 * line (one HELP/TYPE per name, merged labels, callback gauges). */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "fg_metrics.h"
#include "fg_test.h"

#define ADDS_PER_THREAD 1000000

/* Value of the sample line whose series text (name{labels}) is exactly
 * series; false when there is no such line. */
static bool sample(const char *text, const char *series, double *out)
{
    size_t n = strlen(series);
    const char *line = text;

    while (line && *line) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            char *end;
            *out = strtod(line + n + 1, &end);
            return end != line + n + 1 && (*end == '\n' || *end == '\0');
        }
        line = nl ? nl + 1 : NULL;
    }
    fprintf(stderr, "  no sample line for %s\n", series);
    return false;
}

/* The whole text of the sample line for series, or "" (static buffer). */
static const char *sample_text(const char *text, const char *series)
{
    static char buf[256];
    size_t n = strlen(series);
    const char *line = text;

    buf[0] = '\0';
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (strncmp(line, series, n) == 0 && line[n] == ' ' && len < sizeof(buf)) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            break;
        }
        line = nl ? nl + 1 : NULL;
    }
    return buf;
}

static int count_lines_starting(const char *text, const char *prefix)
{
    int n = 0;
    size_t pn = strlen(prefix);
    const char *line = text;

    while (line && *line) {
        if (strncmp(line, prefix, pn) == 0)
            n++;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return n;
}

static void *add_many(void *arg)
{
    fg_counter *c = arg;
    for (int i = 0; i < ADDS_PER_THREAD; i++)
        fg_counter_add(c, 1);
    return NULL;
}

static void test_counter_threads(void)
{
    fg_metrics *m = fg_metrics_new();
    fg_counter *c = fg_metrics_counter(m, "fg_test_adds_total", "Adds.", "");
    pthread_t t[2];
    char *text;
    double v = 0;

    FG_CHECK(c != NULL);
    for (int i = 0; i < 2; i++)
        FG_CHECK_INT(pthread_create(&t[i], NULL, add_many, c), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    FG_CHECK_INT(fg_counter_value(c), 2 * ADDS_PER_THREAD);
    fg_counter_add(c, 5);
    FG_CHECK_INT(fg_counter_value(c), 2 * ADDS_PER_THREAD + 5);

    text = fg_metrics_render(m, NULL);
    FG_CHECK(text != NULL);
    FG_CHECK(sample(text, "fg_test_adds_total", &v));
    FG_CHECK_STR(sample_text(text, "fg_test_adds_total"), "fg_test_adds_total 2000005");
    free(text);
    fg_metrics_free(m);
}

static void test_registry(void)
{
    fg_metrics *m = fg_metrics_new();
    double b[] = {1, 2};
    double unsorted[] = {2, 1};

    FG_CHECK(fg_metrics_counter(m, "a_total", "A.", "x=\"1\"") ==
             fg_metrics_counter(m, "a_total", "A.", "x=\"1\""));
    FG_CHECK(fg_metrics_counter(m, "a_total", "A.", "x=\"1\"") !=
             fg_metrics_counter(m, "a_total", "A.", "x=\"2\""));
    /* One name, one type. */
    FG_CHECK(fg_metrics_gauge(m, "a_total", "A.", "x=\"3\"") == NULL);
    FG_CHECK(fg_metrics_histogram(m, "a_total", "A.", "", b, 2) == NULL);
    /* Invalid names and bounds. */
    FG_CHECK(fg_metrics_counter(m, "", "", "") == NULL);
    FG_CHECK(fg_metrics_counter(m, "9lives", "", "") == NULL);
    FG_CHECK(fg_metrics_counter(m, "a-b", "", "") == NULL);
    FG_CHECK(fg_metrics_histogram(m, "h", "", "", unsorted, 2) == NULL);
    FG_CHECK(fg_metrics_gauge_fn(m, "g", "", "", NULL, NULL) == NULL);
    FG_CHECK(fg_metrics_counter(m, "ns:sub_total", "", NULL) != NULL);
    fg_metrics_free(m);
    fg_metrics_free(NULL);
}

static void test_histogram(void)
{
    fg_metrics *m = fg_metrics_new();
    const double bounds[] = {0.005, 0.01, 0.1, 1};
    const double obs[] = {0.001, 0.005, 0.05, 0.5, 0.5, 5};
    fg_histogram *h = fg_metrics_histogram(m, "req_seconds", "Request latency.",
                                           "route=\"/v1/checkin\"", bounds, 4);
    fg_histogram *plain = fg_metrics_histogram(m, "plain_seconds", "No labels.", "", bounds, 4);
    char *text;
    size_t len = 0;
    double v = -1;

    FG_CHECK(h != NULL && plain != NULL);
    if (!h || !plain)
        return;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        fg_histogram_observe(h, obs[i]);
    fg_histogram_observe(plain, 2);
    text = fg_metrics_render(m, &len);
    FG_CHECK(text != NULL);
    if (!text)
        return;
    FG_CHECK_INT(len, strlen(text));
    FG_CHECK(strstr(text, "# HELP req_seconds Request latency.\n# TYPE req_seconds histogram\n"));
    FG_CHECK_STR(sample_text(text, "req_seconds_bucket{route=\"/v1/checkin\",le=\"0.005\"}"),
                 "req_seconds_bucket{route=\"/v1/checkin\",le=\"0.005\"} 2");
    FG_CHECK(sample(text, "req_seconds_bucket{route=\"/v1/checkin\",le=\"0.01\"}", &v));
    FG_CHECK(v == 2);
    FG_CHECK(sample(text, "req_seconds_bucket{route=\"/v1/checkin\",le=\"0.1\"}", &v));
    FG_CHECK(v == 3);
    FG_CHECK(sample(text, "req_seconds_bucket{route=\"/v1/checkin\",le=\"1\"}", &v));
    FG_CHECK(v == 5);
    FG_CHECK(sample(text, "req_seconds_bucket{route=\"/v1/checkin\",le=\"+Inf\"}", &v));
    FG_CHECK(v == 6);
    FG_CHECK(sample(text, "req_seconds_count{route=\"/v1/checkin\"}", &v));
    FG_CHECK(v == 6);
    FG_CHECK(sample(text, "req_seconds_sum{route=\"/v1/checkin\"}", &v));
    FG_CHECK(fabs(v - 6.056) < 1e-9);
    /* Buckets come out in ascending order, +Inf last. */
    {
        const char *p1 = strstr(text, "le=\"0.005\"");
        const char *p2 = strstr(text, "le=\"1\"");
        const char *p3 = strstr(text, "le=\"+Inf\"");
        FG_CHECK(p1 && p2 && p3 && p1 < p2 && p2 < p3);
    }
    /* Without labels the le label stands alone and sum/count have no braces. */
    FG_CHECK(sample(text, "plain_seconds_bucket{le=\"1\"}", &v));
    FG_CHECK(v == 0);
    FG_CHECK(sample(text, "plain_seconds_bucket{le=\"+Inf\"}", &v));
    FG_CHECK(v == 1);
    FG_CHECK_STR(sample_text(text, "plain_seconds_sum"), "plain_seconds_sum 2");
    FG_CHECK_STR(sample_text(text, "plain_seconds_count"), "plain_seconds_count 1");
    free(text);
    fg_metrics_free(m);
}

static void *observe_many(void *arg)
{
    fg_histogram *h = arg;
    for (int i = 0; i < 100000; i++)
        fg_histogram_observe(h, (i % 2) ? 0.5 : 2.0);
    return NULL;
}

static void test_histogram_threads(void)
{
    fg_metrics *m = fg_metrics_new();
    const double bounds[] = {1};
    fg_histogram *h = fg_metrics_histogram(m, "t_seconds", "T.", "", bounds, 1);
    pthread_t t[2];
    char *text;
    double v = 0;

    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, observe_many, h);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    text = fg_metrics_render(m, NULL);
    FG_CHECK(sample(text, "t_seconds_bucket{le=\"1\"}", &v));
    FG_CHECK(v == 100000);
    FG_CHECK(sample(text, "t_seconds_count", &v));
    FG_CHECK(v == 200000);
    FG_CHECK(sample(text, "t_seconds_sum", &v));
    FG_CHECK(v == 250000); /* halves and twos are exact in binary */
    free(text);
    fg_metrics_free(m);
}

static int fn_calls;

static double queue_depth(void *ud)
{
    fn_calls++;
    return *(double *)ud;
}

static void test_render_grouping_and_gauges(void)
{
    fg_metrics *m = fg_metrics_new();
    double depth = 17;
    fg_counter *ok = fg_metrics_counter(m, "http_requests_total", "Requests.", "code=\"200\"");
    fg_gauge *g = fg_metrics_gauge(m, "inflight", "In flight.", "");
    fg_counter *err = fg_metrics_counter(m, "http_requests_total", "Ignored.", "code=\"500\"");
    fg_gauge *big = fg_metrics_gauge(m, "big", "Big.", "");
    fg_gauge *fn = fg_metrics_gauge_fn(m, "queue_depth", "Queue depth.", "q=\"main\"",
                                       queue_depth, &depth);
    fg_metrics_gauge(m, "esc", "line1\nback\\slash", "");
    char *text;
    double v = 0;

    FG_CHECK(ok && g && err && big && fn);
    if (!ok || !g || !err || !big || !fn)
        return;
    fg_counter_add(ok, 3);
    fg_counter_add(err, 1);
    fg_gauge_set(g, 2.5);
    fg_gauge_add(g, 1.25);
    fg_gauge_set(big, 123456789012.0);
    FG_CHECK_INT(fn_calls, 0);

    text = fg_metrics_render(m, NULL);
    FG_CHECK(text != NULL);
    if (!text)
        return;
    FG_CHECK_INT(fn_calls, 1);
    FG_CHECK_INT(count_lines_starting(text, "# HELP http_requests_total "), 1);
    FG_CHECK_INT(count_lines_starting(text, "# TYPE http_requests_total counter"), 1);
    FG_CHECK_INT(count_lines_starting(text, "# HELP "), 5);
    FG_CHECK_INT(count_lines_starting(text, "# TYPE "), 5);
    FG_CHECK(strstr(text, "# HELP http_requests_total Requests.\n") != NULL);
    FG_CHECK(strstr(text, "# TYPE inflight gauge\n") != NULL);
    FG_CHECK_STR(sample_text(text, "http_requests_total{code=\"200\"}"),
                 "http_requests_total{code=\"200\"} 3");
    FG_CHECK_STR(sample_text(text, "http_requests_total{code=\"500\"}"),
                 "http_requests_total{code=\"500\"} 1");
    /* Both series of a name sit under its TYPE line, before the next name. */
    {
        const char *s500 = strstr(text, "http_requests_total{code=\"500\"}");
        const char *next = strstr(text, "# HELP inflight");
        FG_CHECK(s500 && next && s500 < next);
    }
    FG_CHECK(sample(text, "inflight", &v));
    FG_CHECK(v == 3.75);
    FG_CHECK_STR(sample_text(text, "big"), "big 123456789012");
    FG_CHECK_STR(sample_text(text, "queue_depth{q=\"main\"}"), "queue_depth{q=\"main\"} 17");
    FG_CHECK(strstr(text, "# HELP esc line1\\nback\\\\slash\n") != NULL);
    FG_CHECK(text[strlen(text) - 1] == '\n');
    free(text);

    /* The callback is read fresh at every render. */
    depth = 0.1;
    text = fg_metrics_render(m, NULL);
    FG_CHECK_INT(fn_calls, 2);
    FG_CHECK_STR(sample_text(text, "queue_depth{q=\"main\"}"), "queue_depth{q=\"main\"} 0.1");
    free(text);
    fg_metrics_free(m);
}

static void test_render_empty(void)
{
    fg_metrics *m = fg_metrics_new();
    size_t len = 99;
    char *text = fg_metrics_render(m, &len);

    FG_CHECK(text != NULL);
    FG_CHECK_INT(len, 0);
    FG_CHECK_STR(text, "");
    free(text);
    fg_metrics_free(m);
}

FG_TEST_MAIN(test_counter_threads, test_registry, test_histogram, test_histogram_threads,
             test_render_grouping_and_gauges, test_render_empty)
