/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus metrics: counters, gauges and histograms registered once, updated
 * from any thread without locks (per-thread shards of relaxed atomics), and
 * rendered in the text exposition format for GET /metrics. */
#ifndef FG_METRICS_H
#define FG_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct fg_metrics fg_metrics;
typedef struct fg_counter fg_counter;
typedef struct fg_gauge fg_gauge;
typedef struct fg_histogram fg_histogram;

/* Returns NULL when out of memory. */
fg_metrics *fg_metrics_new(void);
/* Frees the registry and every metric in it; NULL is a no-op. */
void fg_metrics_free(fg_metrics *m);

/* Gets or creates the series name{labels}. labels is the inside of the
 * braces, already escaped ("route=\"/v1/checkin\",code=\"200\""), or "" for
 * none. help is written once per name (the first registration's). All
 * strings are copied. Returns NULL when out of memory, when name is not a
 * valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), when name is already
 * registered as another type, or when a string is over its cap (name 200,
 * labels and help 1024 bytes). The result lives as long as m.
 * @thread any (takes a mutex: register at start-up or cache the result) */
fg_counter *fg_metrics_counter(fg_metrics *m, const char *name,
                               const char *help, const char *labels);
fg_gauge *fg_metrics_gauge(fg_metrics *m, const char *name, const char *help,
                           const char *labels);
/* bounds: n ascending upper bounds (copied); +Inf is implied. NULL also
 * when the bounds are not strictly ascending or n > 64. Registering an
 * existing name{labels} again returns it, keeping its first bounds. */
fg_histogram *fg_metrics_histogram(fg_metrics *m, const char *name,
                                   const char *help, const char *labels,
                                   const double *bounds, size_t n);

/* A gauge whose value is read by calling fn(ud) at render time. fn runs
 * on the rendering thread with the registry mutex held: it must not
 * register metrics. fg_gauge_set/add on such a gauge have no visible effect. */
fg_gauge *fg_metrics_gauge_fn(fg_metrics *m, const char *name,
                              const char *help, const char *labels,
                              double (*fn)(void *ud), void *ud);

/* Updates. Lock-free (counters and histogram buckets wait-free; gauge and
 * histogram sums use a CAS loop). @thread any */
void fg_counter_add(fg_counter *c, uint64_t n);
void fg_gauge_set(fg_gauge *g, double v);
void fg_gauge_add(fg_gauge *g, double d);
void fg_histogram_observe(fg_histogram *h, double v);

/* Current total of a counter (sum of shards). @thread any */
uint64_t fg_counter_value(const fg_counter *c);

/* Renders every series in the Prometheus text format (version 0.0.4),
 * grouped by name with one # HELP and # TYPE line each. Returns a malloc'd
 * NUL-terminated string (caller frees) and its length in *len (len may be
 * NULL), or NULL when out of memory or over 64 MiB. Takes the registry mutex
 * and calls the gauge_fn callbacks. @thread any */
char *fg_metrics_render(fg_metrics *m, size_t *len);

#endif
