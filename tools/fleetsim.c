/* SPDX-License-Identifier: Apache-2.0 */
/* fleetsim: simulates a fleet of phones checking in to a fleetgate gateway
 * over a pool of keep-alive HTTP/1.1 connections and reports, per region and
 * over time, the share of devices whose last directive is "locked". With
 * --rate or --max it doubles as a bounded, loopback-only load generator.
 *
 * Scenario files (--scenario FILE) are line based. '#' starts a comment that
 * runs to the end of the line, blank lines are ignored, and words are
 * separated by spaces or tabs. A duration is a number with a unit, ms, s, m
 * or h ("1.5s"); a bare number is seconds. A share is a fraction 0..1 or a
 * percentage ("95%").
 *
 *   duration 90s      how long the run lasts (default 60s; --duration wins)
 *   seed 42           seeds the grey choice and the timing (--seed wins)
 *   region CU devices=200 grey=0.95 interval=2s jitter=0.2 sku=CN ramp=2s
 *       A region (a region code, at most 64 of them) and its devices: the
 *       count (required), the grey share (default 0), the check-in interval
 *       (default 10s) and its jitter as a fraction of it (default 0.1: each
 *       wait is interval * (1 +- jitter)), the sku_region of the grey
 *       devices (default CN, or US for a region in CN), and the time over
 *       which the first check-ins are spread (default one interval; ramp=0
 *       starts every device at once). The other devices are sold for the
 *       region's own country.
 *   at 30s region CU grey=0.10 interval=1s jitter=0
 *       From 30 s into the run, the region's grey share, interval or jitter
 *       change (any of the three). Phases apply in time order; those past
 *       the end of the run never do.
 *
 * Each region shuffles its devices once, from the seed. With share g, the
 * first round(g * devices) of that order are grey, so raising the share
 * turns more devices grey and lowering it turns the last ones back. A device
 * learns its new state (and gets a new directive) at its next check-in.
 * Device ids are "<prefix>-<region>-<number>" (sim-CU-000123), and every
 * device sends seq 1, 2, 3... (a retried check-in keeps its seq). */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <http_parser.h>
#include <msgpack.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "fg_log.h"
#include "fg_region.h"

/* Exit codes: 1 means the target never answered (or a runtime failure). */
enum { FS_EXIT_OK = 0, FS_EXIT_FAIL = 1, FS_EXIT_USAGE = 2 };

#define FS_MAX_REGIONS 64
#define FS_MAX_PHASES 1024
#define FS_MAX_DEVICES 5000000L
#define FS_MAX_CONNECTIONS 20000
#define FS_MAX_BATCH 1000
#define FS_MAX_DURATION_MS (24LL * 3600 * 1000)
#define FS_MIN_INTERVAL_MS 10
#define FS_MAX_SERIES 100000
#define FS_MAX_PREFIX 32
/* One encoded check-in (JSON or msgpack) is well under this: a 32-byte
 * prefix, two region codes, two 20-digit integers and fixed text. */
#define FS_ITEM_MAX 256
#define FS_HEAD_MAX 512
#define FS_HOST_MAX 200
#define FS_MAX_RESP_HEADER 16384
#define FS_MAX_RESP_BODY (8L << 20)
/* Request buffers of the whole pool (connections x batch x FS_ITEM_MAX),
 * and answer buffers of the whole pool (each grows to its largest answer). */
#define FS_MAX_POOL_BYTES (256L << 20)
#define FS_MAX_RESP_POOL (512L << 20)
#define FS_READ_CHUNK 65536
#define FS_TICK_MS 5
#define FS_SCAN_MS 100
/* Wait after a transport error or an answer that could not be read. */
#define FS_RETRY_MS 1000
#define FS_RETRY_AFTER_MAX_S 60
#define FS_BACKOFF_MIN_MS 100
#define FS_BACKOFF_MAX_MS 2000
/* After the end of the run, how long in-flight requests may still take. */
#define FS_DRAIN_MAX_MS 10000
#define FS_LINE_MAX 1024
#define FS_SCENARIO_MAX_LINES 100000
#define FS_MAX_ERROR_LOGS 10
#define FS_MAX_DEPTH 32
#define FS_REASON_MAX 256
#define FS_MESSAGE_MAX 512
#define FS_HIST_BUCKETS (16 + 36 * 8)

#define FS_DEFAULT_TARGET "127.0.0.1:8080"
#define FS_DEFAULT_DURATION_MS 60000
#define FS_DEFAULT_CONNECTIONS 64
#define FS_DEFAULT_DEVICES 300
#define FS_DEFAULT_INTERVAL_MS 10000
#define FS_DEFAULT_JITTER 0.1
#define FS_DEFAULT_TIMEOUT_MS 10000

/* ------------------------------------------------------------------------
 * Types */

typedef struct fs_opts {
    const char *target;     /* "host:port" */
    const char *scenario;   /* file, or NULL for the built-in fleet */
    int64_t duration_ms;    /* -1: the scenario's, else the default */
    long devices;           /* 0: unset */
    double devices_scale;
    int connections;
    int msgpack;
    int batch;              /* 0: /v1/checkin; N: /v1/checkins, N items */
    double rate;            /* check-ins per second over all; 0: schedule */
    int max;                /* as fast as the connections allow */
    uint64_t count;         /* stop after this many check-ins; 0: no bound */
    int64_t report_ms;
    int64_t timeout_ms;
    const char *json_out;
    uint64_t seed;
    int seed_set;
    const char *id_prefix;
    int allow_remote;
    int quiet;
    fg_log_level log_level;
} fs_opts;

/* A region as the scenario declares it. */
typedef struct fs_region_spec {
    char code[FG_REGION_MAX + 1];
    char sku_grey[FG_REGION_MAX + 1];
    long devices;
    double grey;
    int64_t interval_ms;
    double jitter;
    int64_t ramp_ms;        /* -1: one interval */
} fs_region_spec;

/* "at T region R ...": unset fields are negative. */
typedef struct fs_phase {
    int64_t at_ms;
    size_t region;
    double grey;
    int64_t interval_ms;
    double jitter;
    int line;               /* for a stable sort */
} fs_phase;

typedef struct fs_scenario {
    fs_region_spec regions[FS_MAX_REGIONS];
    size_t nregions;
    fs_phase phases[FS_MAX_PHASES];
    size_t nphases;
    int64_t duration_ms;    /* -1: unset */
    uint64_t seed;
    int seed_set;
} fs_scenario;

typedef enum fs_dstatus {
    FS_D_NONE = 0,
    FS_D_OK,
    FS_D_LOCKED,
    FS_D_ERROR,
    FS_D_OTHER
} fs_dstatus;

/* One directive (or batch item result) read from an answer. */
typedef struct fs_dir {
    fs_dstatus status;
    int retry;
    int64_t until;
    char region[FG_REGION_MAX + 1];
    char scope[16];
    char error[64];
    char reason[FS_REASON_MAX + 1];
    char message[FS_MESSAGE_MAX + 1];
} fs_dir;

/* One point of a region's time series. */
typedef struct fs_point {
    uint32_t locked;
    uint32_t grey;
    uint64_t sent;          /* cumulative */
} fs_point;

typedef struct fs_region {
    char code[FG_REGION_MAX + 1];
    char sku_home[3];       /* the country: what non-grey devices were sold for */
    char sku_grey[FG_REGION_MAX + 1];
    uint32_t first;         /* index of its first device */
    uint32_t devices;
    double grey_share;
    uint32_t grey;          /* devices with rank < grey are grey */
    int64_t interval_ms;
    double jitter;
    uint64_t rng;
    /* counters */
    uint64_t sent;
    uint64_t answered_ok;   /* 200 answers "ok" */
    uint64_t answered_locked;
    uint64_t errors;
    uint64_t retried;       /* 429/503 and items marked retry */
    uint32_t ok;            /* devices whose last directive is ok */
    uint32_t locked;        /* ... is locked */
    fs_dir lock;            /* the last locked directive seen */
    int lock_seen;
    fs_point *series;
} fs_region;

/* Kept small: a fleet of millions fits in memory. */
typedef struct fs_device {
    uint64_t seq;           /* of the next check-in */
    int64_t due_ms;         /* next check-in, ms since the start */
    uint32_t rank;          /* place in the region's shuffle */
    uint16_t region;
    uint8_t last;           /* FS_D_NONE, FS_D_OK or FS_D_LOCKED */
    uint8_t busy;           /* in a request (else in the heap) */
} fs_device;

typedef enum fs_cstate {
    FS_C_CLOSED = 0,
    FS_C_CONNECTING,
    FS_C_IDLE,
    FS_C_BUSY
} fs_cstate;

typedef struct fs_sim fs_sim;

typedef struct fs_conn {
    fs_sim *sim;
    int fd;
    fs_cstate state;
    struct event *ev_read;  /* persistent while connected */
    struct event *ev_write; /* connect completion, partial writes */
    int64_t deadline_ms;
    int64_t reconnect_ms;
    int64_t backoff_ms;
    /* the request in flight: one per connection */
    uint32_t *devs;
    size_t ndevs;
    char head[FS_HEAD_MAX];
    size_t head_len;
    char *body;
    size_t body_len;
    size_t body_cap;
    size_t out_off;
    int64_t started_us;
    /* its answer */
    http_parser hp;
    int complete;
    int keep_alive;
    int in_value;
    char hname[32];
    size_t hname_len;
    char hval[64];
    size_t hval_len;
    int64_t retry_after_s;
    int resp_msgpack;
    char *resp;
    size_t resp_len;
    size_t resp_cap;
} fs_conn;

/* Latency histogram: exact below 16 us, then 8 buckets per power of two. */
typedef struct fs_hist {
    uint64_t n;
    uint64_t max_us;
    uint64_t b[FS_HIST_BUCKETS];
} fs_hist;

struct fs_sim {
    fs_opts opts;
    fs_scenario sc;
    int64_t duration_ms;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct event_base *base;
    struct event *ev_tick;
    struct event *ev_sigint;
    struct event *ev_sigterm;
    fs_region regions[FS_MAX_REGIONS];
    size_t nregions;
    fs_device *devs;
    uint32_t ndevs;
    uint32_t *heap;
    uint32_t heap_len;
    fs_conn *conns;
    int nconns;
    fs_conn **idle;         /* stack of idle connections */
    int nidle;
    int busy;               /* connections with a request in flight */
    size_t resp_bytes;      /* answer buffers of all connections */
    size_t next_phase;
    int64_t t0_us;          /* monotonic start */
    int64_t next_report_ms;
    int64_t next_scan_ms;
    int64_t drain_until_ms;
    int64_t end_ms;
    int stopping;
    const char *stop_reason;
    int aborted;            /* second signal: in-flight requests abandoned */
    double tokens;
    int64_t tokens_ms;
    uint64_t sent_total;
    uint64_t sent_mark;     /* sent_total at the last report */
    uint64_t responses;
    uint64_t status_counts[600];
    uint64_t transport_errors;
    uint64_t protocol_errors;
    uint64_t connect_errors;
    uint64_t connects;
    int connect_fail_logged;
    int error_logs;
    fs_hist lat_all;
    fs_hist lat_interval;
    int64_t *series_t;      /* ms since the start of each point */
    size_t nseries;
    size_t series_cap;
    fs_dir dir;             /* parse scratch */
    char rbuf[FS_READ_CHUNK];
};

/* ------------------------------------------------------------------------
 * Small helpers */

/* Microseconds on the monotonic clock. */
static int64_t fs_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Milliseconds since the Unix epoch (the devices' clock). */
static int64_t fs_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds since the start of the run. */
static int64_t fs_now(const fs_sim *sim)
{
    return (fs_mono_us() - sim->t0_us) / 1000;
}

/* splitmix64: small, fast and good enough for shuffles and jitter. */
static uint64_t fs_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double fs_rand01(uint64_t *s)
{
    return (double)(fs_rand(s) >> 11) * 0x1.0p-53;
}

/* FNV-1a of a string, to give each region its own random stream. */
static uint64_t fs_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Copies s[0..len) into dst (capacity cap), cut to fit, NUL-terminated. */
static void fs_copy(char *dst, size_t cap, const char *s, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, s, len);
    dst[len] = '\0';
}

/* Parses a duration: "90s", "500ms", "2m", "1h", "1.5s", or a bare number of
 * seconds. Returns 0 and sets *out_ms, or -1. */
static int fs_parse_duration(const char *s, int64_t *out_ms)
{
    char *end = NULL;
    double v;
    double mult;

    if (!s || !((*s >= '0' && *s <= '9') || *s == '.'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || !isfinite(v) || v < 0)
        return -1;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    if (v * mult > 1e15)
        return -1;
    *out_ms = llround(v * mult);
    return 0;
}

/* Parses a share: a fraction 0..1 ("0.95") or a percentage ("95%"). */
static int fs_parse_share(const char *s, double *out)
{
    char *end = NULL;
    double v;

    if (!s || !((*s >= '0' && *s <= '9') || *s == '.'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || !isfinite(v))
        return -1;
    if (strcmp(end, "%") == 0)
        v /= 100;
    else if (*end != '\0')
        return -1;
    if (v < 0 || v > 1)
        return -1;
    *out = v;
    return 0;
}

/* Parses a non-negative decimal double ("2.5"). */
static int fs_parse_double(const char *s, double min, double max, double *out)
{
    char *end = NULL;
    double v;

    if (!s || !((*s >= '0' && *s <= '9') || *s == '.'))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parses a decimal unsigned integer in [min, max]. */
static int fs_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* The sku_region of grey devices by default: CN, or US in China. */
static const char *fs_default_grey_sku(const char *region)
{
    return strncmp(region, "CN", 2) == 0 ? "US" : "CN";
}

/* ------------------------------------------------------------------------
 * Latency histogram */

static size_t fs_hist_index(uint64_t us)
{
    int msb;
    size_t idx;

    if (us < 16)
        return (size_t)us;
    msb = 63 - __builtin_clzll(us);
    idx = 16 + (size_t)(msb - 4) * 8 + (size_t)((us >> (msb - 3)) & 7);
    return idx < FS_HIST_BUCKETS ? idx : FS_HIST_BUCKETS - 1;
}

/* The smallest value of bucket idx. */
static uint64_t fs_hist_lower(size_t idx)
{
    size_t msb;

    if (idx < 16)
        return idx;
    msb = 4 + (idx - 16) / 8;
    return (uint64_t)(8 + (idx - 16) % 8) << (msb - 3);
}

static void fs_hist_add(fs_hist *h, uint64_t us)
{
    h->b[fs_hist_index(us)]++;
    h->n++;
    if (us > h->max_us)
        h->max_us = us;
}

/* The q-quantile (0 < q <= 1) in milliseconds: the middle of its bucket,
 * at most the largest value seen; 0 when empty. */
static double fs_hist_ms(const fs_hist *h, double q)
{
    uint64_t want;
    uint64_t seen = 0;
    size_t i;
    double mid;

    if (h->n == 0)
        return 0;
    want = (uint64_t)ceil(q * (double)h->n);
    if (want < 1)
        want = 1;
    for (i = 0; i < FS_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            break;
    }
    if (i >= FS_HIST_BUCKETS - 1)
        return (double)h->max_us / 1000.0;
    mid = i < 16 ? (double)i
                 : ((double)fs_hist_lower(i) + (double)fs_hist_lower(i + 1)) / 2;
    if (mid > (double)h->max_us)
        mid = (double)h->max_us;
    return mid / 1000.0;
}

/* ------------------------------------------------------------------------
 * Options and scenario */

static void fs_usage(FILE *fp)
{
    fprintf(fp,
"Usage: fleetsim [OPTIONS]\n"
"Simulates phones checking in to a fleetgate gateway and reports, per region\n"
"and over time, the share of devices whose last directive is \"locked\".\n"
"\n"
"Fleet:\n"
"  -s, --scenario FILE       regions, phases and duration (format: top of\n"
"                            tools/fleetsim.c and README); without it, the\n"
"                            seed story: CU 95%% grey, DE 60%%, US 2%%\n"
"      --devices N           total devices (regions keep their proportions;\n"
"                            built-in fleet: %d)\n"
"      --devices-scale F     multiply every region's device count by F\n"
"      --seed N              grey choice and timing (default 1)\n"
"      --id-prefix STR       device ids are STR-<region>-<n> (default sim)\n"
"Traffic:\n"
"  -t, --target HOST:PORT    the gateway (default %s); loopback only\n"
"      --allow-remote        allow a target that is not a loopback address\n"
"  -c, --connections N       keep-alive connections, one request each (%d)\n"
"      --format json|msgpack request and answer encoding (json)\n"
"      --batch N             POST /v1/checkins with up to N items per request\n"
"                            (default: one check-in per POST /v1/checkin)\n"
"      --rate R              load mode: R check-ins per second in total,\n"
"                            devices taken in turn (intervals ignored)\n"
"      --max                 load mode: as fast as the connections allow\n"
"      --timeout DURATION    bound on one request (10s)\n"
"Run and report:\n"
"  -d, --duration DURATION   length of the run (scenario's, else 60s; at most\n"
"                            24h): fleetsim always stops by itself\n"
"      --count N             stop after N check-ins were sent\n"
"      --report-interval D   a line per region every D (1s) on stdout\n"
"      --json-out FILE       the summary as JSON, written at exit\n"
"  -q, --quiet               no interval lines\n"
"      --log-level LEVEL     debug, info, warn, error (info)\n"
"  -h, --help                this text\n"
"\n"
"Durations: 500ms, 2s, 1.5m, 1h (a bare number is seconds).\n"
"SIGINT/SIGTERM end the run early (in-flight requests finish) and print the\n"
"summary; a second signal abandons them.\n"
"Exit status: 0 done, 1 the target never answered (or a runtime failure),\n"
"2 usage or scenario error.\n",
            FS_DEFAULT_DEVICES, FS_DEFAULT_TARGET, FS_DEFAULT_CONNECTIONS);
}

/* Fills opts from argv. Returns FS_EXIT_OK, or FS_EXIT_USAGE after printing
 * why; sets *help for --help. */
static int fs_parse_args(int argc, char **argv, fs_opts *o, int *help)
{
    enum {
        O_DEVICES = 256, O_SCALE, O_SEED, O_PREFIX, O_REMOTE, O_FORMAT, O_BATCH,
        O_RATE, O_MAX, O_TIMEOUT, O_COUNT, O_REPORT, O_JSON, O_LOGLEVEL
    };
    static const struct option longopts[] = {
        {"scenario", required_argument, NULL, 's'},
        {"devices", required_argument, NULL, O_DEVICES},
        {"devices-scale", required_argument, NULL, O_SCALE},
        {"seed", required_argument, NULL, O_SEED},
        {"id-prefix", required_argument, NULL, O_PREFIX},
        {"target", required_argument, NULL, 't'},
        {"allow-remote", no_argument, NULL, O_REMOTE},
        {"connections", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, O_FORMAT},
        {"batch", required_argument, NULL, O_BATCH},
        {"rate", required_argument, NULL, O_RATE},
        {"max", no_argument, NULL, O_MAX},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, O_COUNT},
        {"report-interval", required_argument, NULL, O_REPORT},
        {"json-out", required_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, 'q'},
        {"log-level", required_argument, NULL, O_LOGLEVEL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t u = 0;
    int lvl;
    int c;
    size_t i;

    *help = 0;
    for (;;) {
        c = getopt_long(argc, argv, "s:t:c:d:qh", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 's':
            o->scenario = optarg;
            break;
        case O_DEVICES:
            if (fs_parse_u64(optarg, 1, FS_MAX_DEVICES, &u) != 0) {
                fprintf(stderr, "fleetsim: bad --devices '%s' (1..%ld)\n", optarg,
                        FS_MAX_DEVICES);
                return FS_EXIT_USAGE;
            }
            o->devices = (long)u;
            break;
        case O_SCALE:
            if (fs_parse_double(optarg, 1e-6, 1e6, &o->devices_scale) != 0) {
                fprintf(stderr, "fleetsim: bad --devices-scale '%s'\n", optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case O_SEED:
            if (fs_parse_u64(optarg, 0, UINT64_MAX, &o->seed) != 0) {
                fprintf(stderr, "fleetsim: bad --seed '%s'\n", optarg);
                return FS_EXIT_USAGE;
            }
            o->seed_set = 1;
            break;
        case O_PREFIX:
            o->id_prefix = optarg;
            break;
        case 't':
            o->target = optarg;
            break;
        case O_REMOTE:
            o->allow_remote = 1;
            break;
        case 'c':
            if (fs_parse_u64(optarg, 1, FS_MAX_CONNECTIONS, &u) != 0) {
                fprintf(stderr, "fleetsim: bad --connections '%s' (1..%d)\n", optarg,
                        FS_MAX_CONNECTIONS);
                return FS_EXIT_USAGE;
            }
            o->connections = (int)u;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "json") == 0) {
                o->msgpack = 0;
            } else if (strcmp(optarg, "msgpack") == 0) {
                o->msgpack = 1;
            } else {
                fprintf(stderr, "fleetsim: bad --format '%s' (json, msgpack)\n", optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case O_BATCH:
            if (fs_parse_u64(optarg, 1, FS_MAX_BATCH, &u) != 0) {
                fprintf(stderr, "fleetsim: bad --batch '%s' (1..%d)\n", optarg,
                        FS_MAX_BATCH);
                return FS_EXIT_USAGE;
            }
            o->batch = (int)u;
            break;
        case O_RATE:
            if (fs_parse_double(optarg, 0.001, 1e8, &o->rate) != 0) {
                fprintf(stderr, "fleetsim: bad --rate '%s'\n", optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case O_MAX:
            o->max = 1;
            break;
        case O_TIMEOUT:
            if (fs_parse_duration(optarg, &o->timeout_ms) != 0 || o->timeout_ms < 10 ||
                o->timeout_ms > 600000) {
                fprintf(stderr, "fleetsim: bad --timeout '%s' (10ms..10m)\n", optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case 'd':
            if (fs_parse_duration(optarg, &o->duration_ms) != 0 || o->duration_ms < 1 ||
                o->duration_ms > FS_MAX_DURATION_MS) {
                fprintf(stderr, "fleetsim: bad --duration '%s' (1ms..24h)\n", optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case O_COUNT:
            if (fs_parse_u64(optarg, 1, UINT64_MAX, &o->count) != 0) {
                fprintf(stderr, "fleetsim: bad --count '%s'\n", optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case O_REPORT:
            if (fs_parse_duration(optarg, &o->report_ms) != 0 || o->report_ms < 10) {
                fprintf(stderr, "fleetsim: bad --report-interval '%s' (at least 10ms)\n",
                        optarg);
                return FS_EXIT_USAGE;
            }
            break;
        case O_JSON:
            o->json_out = optarg;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case O_LOGLEVEL:
            lvl = fg_log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "fleetsim: bad --log-level '%s'\n", optarg);
                return FS_EXIT_USAGE;
            }
            o->log_level = (fg_log_level)lvl;
            break;
        case 'h':
            *help = 1;
            return FS_EXIT_OK;
        default:
            fs_usage(stderr);
            return FS_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fleetsim: unexpected argument '%s'\n", argv[optind]);
        return FS_EXIT_USAGE;
    }
    if (o->rate > 0 && o->max) {
        fprintf(stderr, "fleetsim: --rate and --max exclude each other\n");
        return FS_EXIT_USAGE;
    }
    if (strlen(o->id_prefix) == 0 || strlen(o->id_prefix) > FS_MAX_PREFIX) {
        fprintf(stderr, "fleetsim: --id-prefix must have 1..%d characters\n", FS_MAX_PREFIX);
        return FS_EXIT_USAGE;
    }
    for (i = 0; o->id_prefix[i]; i++) {
        char ch = o->id_prefix[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
              ch == '-')) {
            fprintf(stderr, "fleetsim: --id-prefix may only use A-Z a-z 0-9 . _ : -\n");
            return FS_EXIT_USAGE;
        }
    }
    return FS_EXIT_OK;
}

/* Finds a region of the scenario by code; returns its index or -1. */
static int fs_sc_find(const fs_scenario *sc, const char *code)
{
    size_t i;

    for (i = 0; i < sc->nregions; i++)
        if (strcmp(sc->regions[i].code, code) == 0)
            return (int)i;
    return -1;
}

/* Reads "key=value" words into a region spec (phase = 0) or a phase
 * (phase = 1, which takes grey, interval and jitter only). Returns 0, or -1
 * with err filled. */
static int fs_sc_keys(char **words, size_t nwords, fs_region_spec *spec, fs_phase *ph,
                      char *err, size_t errlen)
{
    size_t i;

    for (i = 0; i < nwords; i++) {
        char *eq = strchr(words[i], '=');
        const char *key = words[i];
        const char *val;
        uint64_t u = 0;
        double share = 0;
        double jitter = 0;
        int64_t ms = 0;

        if (!eq || eq == words[i]) {
            snprintf(err, errlen, "expected key=value, got '%s'", words[i]);
            return -1;
        }
        *eq = '\0';
        val = eq + 1;
        if (strcmp(key, "grey") == 0) {
            if (fs_parse_share(val, &share) != 0) {
                snprintf(err, errlen, "bad grey share '%s' (0..1 or 0%%..100%%)", val);
                return -1;
            }
            if (ph)
                ph->grey = share;
            else
                spec->grey = share;
        } else if (strcmp(key, "interval") == 0) {
            if (fs_parse_duration(val, &ms) != 0 || ms < FS_MIN_INTERVAL_MS ||
                ms > FS_MAX_DURATION_MS) {
                snprintf(err, errlen, "bad interval '%s' (10ms..24h)", val);
                return -1;
            }
            if (ph)
                ph->interval_ms = ms;
            else
                spec->interval_ms = ms;
        } else if (strcmp(key, "jitter") == 0) {
            if (fs_parse_double(val, 0, 1, &jitter) != 0) {
                snprintf(err, errlen, "bad jitter '%s' (0..1)", val);
                return -1;
            }
            if (ph)
                ph->jitter = jitter;
            else
                spec->jitter = jitter;
        } else if (!ph && strcmp(key, "ramp") == 0) {
            if (fs_parse_duration(val, &ms) != 0 || ms > FS_MAX_DURATION_MS) {
                snprintf(err, errlen, "bad ramp '%s' (0..24h)", val);
                return -1;
            }
            spec->ramp_ms = ms;
        } else if (!ph && strcmp(key, "devices") == 0) {
            if (fs_parse_u64(val, 1, FS_MAX_DEVICES, &u) != 0) {
                snprintf(err, errlen, "bad devices '%s' (1..%ld)", val, FS_MAX_DEVICES);
                return -1;
            }
            spec->devices = (long)u;
        } else if (!ph && strcmp(key, "sku") == 0) {
            if (!fg_region_valid(val, strlen(val))) {
                snprintf(err, errlen, "bad sku '%s' (a region code)", val);
                return -1;
            }
            snprintf(spec->sku_grey, sizeof(spec->sku_grey), "%s", val);
        } else {
            snprintf(err, errlen, "unknown key '%s' here", key);
            return -1;
        }
    }
    return 0;
}

/* Parses one scenario line (comments already cut). Returns 0, or -1 with
 * err filled. */
static int fs_sc_line(fs_scenario *sc, char *line, int lineno, char *err, size_t errlen)
{
    char *words[64];
    size_t n = 0;
    char *save = NULL;
    char *w;
    fs_region_spec *spec;
    fs_phase *ph;
    int idx;
    int64_t ms = 0;

    w = strtok_r(line, " \t\r\n", &save);
    while (w) {
        if (n >= sizeof(words) / sizeof(words[0])) {
            snprintf(err, errlen, "too many words");
            return -1;
        }
        words[n++] = w;
        w = strtok_r(NULL, " \t\r\n", &save);
    }
    if (n == 0)
        return 0;
    if (strcmp(words[0], "duration") == 0) {
        if (n != 2 || fs_parse_duration(words[1], &ms) != 0 || ms < 1 ||
            ms > FS_MAX_DURATION_MS) {
            snprintf(err, errlen, "usage: duration DURATION (1ms..24h)");
            return -1;
        }
        sc->duration_ms = ms;
        return 0;
    }
    if (strcmp(words[0], "seed") == 0) {
        if (n != 2 || fs_parse_u64(words[1], 0, UINT64_MAX, &sc->seed) != 0) {
            snprintf(err, errlen, "usage: seed N");
            return -1;
        }
        sc->seed_set = 1;
        return 0;
    }
    if (strcmp(words[0], "region") == 0) {
        if (n < 2 || !fg_region_valid(words[1], strlen(words[1]))) {
            snprintf(err, errlen, "usage: region CODE devices=N [grey=S] [interval=D] "
                                  "[jitter=F] [sku=CODE] [ramp=D] (CODE like CU or UA-43)");
            return -1;
        }
        if (fs_sc_find(sc, words[1]) >= 0) {
            snprintf(err, errlen, "region %s declared twice", words[1]);
            return -1;
        }
        if (sc->nregions >= FS_MAX_REGIONS) {
            snprintf(err, errlen, "more than %d regions", FS_MAX_REGIONS);
            return -1;
        }
        spec = &sc->regions[sc->nregions];
        memset(spec, 0, sizeof(*spec));
        snprintf(spec->code, sizeof(spec->code), "%s", words[1]);
        snprintf(spec->sku_grey, sizeof(spec->sku_grey), "%s", fs_default_grey_sku(words[1]));
        spec->interval_ms = FS_DEFAULT_INTERVAL_MS;
        spec->jitter = FS_DEFAULT_JITTER;
        spec->ramp_ms = -1;
        if (fs_sc_keys(words + 2, n - 2, spec, NULL, err, errlen) != 0)
            return -1;
        if (spec->devices < 1) {
            snprintf(err, errlen, "region %s needs devices=N", spec->code);
            return -1;
        }
        if (!fg_region_is_grey(NULL, spec->sku_grey, spec->code)) {
            snprintf(err, errlen, "sku %s is not grey in %s (pick another country)",
                     spec->sku_grey, spec->code);
            return -1;
        }
        sc->nregions++;
        return 0;
    }
    if (strcmp(words[0], "at") == 0) {
        if (n < 5 || fs_parse_duration(words[1], &ms) != 0 || ms > FS_MAX_DURATION_MS ||
            strcmp(words[2], "region") != 0) {
            snprintf(err, errlen, "usage: at TIME region CODE [grey=S] [interval=D] "
                                  "[jitter=F]");
            return -1;
        }
        idx = fs_sc_find(sc, words[3]);
        if (idx < 0) {
            snprintf(err, errlen, "region %s is not declared (declare it above)", words[3]);
            return -1;
        }
        if (sc->nphases >= FS_MAX_PHASES) {
            snprintf(err, errlen, "more than %d phases", FS_MAX_PHASES);
            return -1;
        }
        ph = &sc->phases[sc->nphases];
        ph->at_ms = ms;
        ph->region = (size_t)idx;
        ph->grey = -1;
        ph->interval_ms = -1;
        ph->jitter = -1;
        ph->line = lineno;
        if (fs_sc_keys(words + 4, n - 4, NULL, ph, err, errlen) != 0)
            return -1;
        sc->nphases++;
        return 0;
    }
    snprintf(err, errlen, "unknown directive '%s' (duration, seed, region, at)", words[0]);
    return -1;
}

static int fs_phase_cmp(const void *a, const void *b)
{
    const fs_phase *x = a;
    const fs_phase *y = b;

    if (x->at_ms != y->at_ms)
        return x->at_ms < y->at_ms ? -1 : 1;
    return x->line - y->line;
}

/* Loads a scenario file. Returns 0, or -1 after printing "file:line: why". */
static int fs_sc_load(fs_scenario *sc, const char *path)
{
    char line[FS_LINE_MAX + 2];
    char err[256];
    FILE *fp = NULL;
    int lineno = 0;
    int rc = -1;
    char *hash;
    size_t len;

    fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "fleetsim: %s: %s\n", path, strerror(errno));
        goto cleanup;
    }
    while (fgets(line, sizeof(line), fp)) {
        lineno++;
        len = strlen(line);
        if (lineno > FS_SCENARIO_MAX_LINES) {
            fprintf(stderr, "fleetsim: %s: more than %d lines\n", path, FS_SCENARIO_MAX_LINES);
            goto cleanup;
        }
        if (len > FS_LINE_MAX || (len > 0 && line[len - 1] != '\n' && !feof(fp))) {
            fprintf(stderr, "fleetsim: %s:%d: line longer than %d bytes\n", path, lineno,
                    FS_LINE_MAX);
            goto cleanup;
        }
        hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        err[0] = '\0';
        if (fs_sc_line(sc, line, lineno, err, sizeof(err)) != 0) {
            fprintf(stderr, "fleetsim: %s:%d: %s\n", path, lineno, err);
            goto cleanup;
        }
    }
    if (ferror(fp)) {
        fprintf(stderr, "fleetsim: %s: read error\n", path);
        goto cleanup;
    }
    if (sc->nregions == 0) {
        fprintf(stderr, "fleetsim: %s: no region declared\n", path);
        goto cleanup;
    }
    qsort(sc->phases, sc->nphases, sizeof(sc->phases[0]), fs_phase_cmp);
    rc = 0;
cleanup:
    if (fp)
        fclose(fp);
    return rc;
}

/* The seed story: CU 95% grey, DE 60%, US 2%, devices split evenly. */
static void fs_sc_builtin(fs_scenario *sc)
{
    static const struct {
        const char *code;
        double grey;
    } story[] = {{"CU", 0.95}, {"DE", 0.60}, {"US", 0.02}};
    size_t i;

    for (i = 0; i < sizeof(story) / sizeof(story[0]); i++) {
        fs_region_spec *spec = &sc->regions[i];

        snprintf(spec->code, sizeof(spec->code), "%s", story[i].code);
        snprintf(spec->sku_grey, sizeof(spec->sku_grey), "%s",
                 fs_default_grey_sku(story[i].code));
        spec->devices = FS_DEFAULT_DEVICES / 3;
        spec->grey = story[i].grey;
        spec->interval_ms = FS_DEFAULT_INTERVAL_MS;
        spec->jitter = FS_DEFAULT_JITTER;
        spec->ramp_ms = -1;
    }
    sc->nregions = i;
}

/* Applies --devices and --devices-scale to the scenario's counts. Returns
 * 0, or -1 after printing why. */
static int fs_sc_scale(fs_scenario *sc, const fs_opts *o)
{
    double scale = o->devices_scale;
    double total = 0;
    double sum = 0;
    size_t i;

    for (i = 0; i < sc->nregions; i++)
        total += (double)sc->regions[i].devices;
    if (o->devices > 0)
        scale *= (double)o->devices / total;
    for (i = 0; i < sc->nregions; i++) {
        long long n = llround((double)sc->regions[i].devices * scale);

        if (n < 1)
            n = 1;
        sum += (double)n;
        if (sum > (double)FS_MAX_DEVICES) {
            fprintf(stderr, "fleetsim: more than %ld devices in all\n", FS_MAX_DEVICES);
            return -1;
        }
        sc->regions[i].devices = (long)n;
    }
    return 0;
}

/* Resolves the target "host:port" or "[v6]:port" into sim->addr and checks
 * that it is loopback unless --allow-remote. Returns 0, or -1 after
 * printing why. */
static int fs_resolve(fs_sim *sim)
{
    char host[FS_HOST_MAX];
    const char *t = sim->opts.target;
    const char *colon = strrchr(t, ':');
    const char *h = t;
    size_t hlen;
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int loopback = 0;
    int rc = -1;
    int gai;
    uint64_t port = 0;

    if (!colon || colon == t || fs_parse_u64(colon + 1, 1, 65535, &port) != 0) {
        fprintf(stderr, "fleetsim: bad --target '%s' (HOST:PORT)\n", t);
        goto cleanup;
    }
    hlen = (size_t)(colon - t);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(host) || strlen(t) >= FS_HOST_MAX) {
        fprintf(stderr, "fleetsim: bad --target '%s' (HOST:PORT)\n", t);
        goto cleanup;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai != 0 || !res) {
        fprintf(stderr, "fleetsim: cannot resolve '%s': %s\n", host, gai_strerror(gai));
        goto cleanup;
    }
    if (res->ai_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;

        loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    } else if (res->ai_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)res->ai_addr;

        loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
                   (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && sin6->sin6_addr.s6_addr[12] == 127);
    }
    if (!loopback && !sim->opts.allow_remote) {
        fprintf(stderr, "fleetsim: target %s is not a loopback address; a load "
                        "generator must not be pointed elsewhere by accident "
                        "(--allow-remote to insist)\n", t);
        goto cleanup;
    }
    if (res->ai_addrlen > sizeof(sim->addr)) {
        fprintf(stderr, "fleetsim: unexpected address size for '%s'\n", t);
        goto cleanup;
    }
    memcpy(&sim->addr, res->ai_addr, res->ai_addrlen);
    sim->addrlen = (socklen_t)res->ai_addrlen;
    rc = 0;
cleanup:
    if (res)
        freeaddrinfo(res);
    return rc;
}

/* Raises the open-file limit when the pool needs it. Returns 0, or -1 after
 * printing why. */
static int fs_fd_budget(int connections)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)connections + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr, "fleetsim: %d connections need %llu open files; the hard "
                        "limit is %llu\n", connections, (unsigned long long)need,
                (unsigned long long)rl.rlim_max);
        return -1;
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "fleetsim: cannot raise the open-file limit to %llu: %s\n",
                (unsigned long long)need, strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Devices and the schedule (a binary min-heap of device indices by due) */

static int fs_before(const fs_sim *sim, uint32_t a, uint32_t b)
{
    int64_t da = sim->devs[a].due_ms;
    int64_t db = sim->devs[b].due_ms;

    return da < db || (da == db && a < b);
}

static void fs_heap_push(fs_sim *sim, uint32_t d)
{
    uint32_t i = sim->heap_len++;

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;

        if (!fs_before(sim, d, sim->heap[parent]))
            break;
        sim->heap[i] = sim->heap[parent];
        i = parent;
    }
    sim->heap[i] = d;
}

static uint32_t fs_heap_pop(fs_sim *sim)
{
    uint32_t top = sim->heap[0];
    uint32_t last = sim->heap[--sim->heap_len];
    uint32_t n = sim->heap_len;
    uint32_t i = 0;

    for (;;) {
        uint32_t child = 2 * i + 1;

        if (child >= n)
            break;
        if (child + 1 < n && fs_before(sim, sim->heap[child + 1], sim->heap[child]))
            child++;
        if (!fs_before(sim, sim->heap[child], last))
            break;
        sim->heap[i] = sim->heap[child];
        i = child;
    }
    if (n > 0)
        sim->heap[i] = last;
    return top;
}

/* The wait before a device's next check-in: its region's interval with
 * jitter in schedule mode, nothing in load mode. */
static int64_t fs_next_wait(fs_sim *sim, fs_region *reg)
{
    double f;
    int64_t ms;

    if (sim->opts.rate > 0 || sim->opts.max)
        return 0;
    f = 1.0 + reg->jitter * (2.0 * fs_rand01(&reg->rng) - 1.0);
    ms = llround((double)reg->interval_ms * f);
    return ms < 1 ? 1 : ms;
}

/* Puts device d back in the schedule, due after delay_ms. */
static void fs_schedule(fs_sim *sim, uint32_t d, int64_t now, int64_t delay_ms)
{
    sim->devs[d].due_ms = now + delay_ms;
    sim->devs[d].busy = 0;
    fs_heap_push(sim, d);
}

/* Records a device's new last directive in its region's current counts. */
static void fs_set_last(fs_region *reg, fs_device *dev, uint8_t last)
{
    if (dev->last == FS_D_OK)
        reg->ok--;
    else if (dev->last == FS_D_LOCKED)
        reg->locked--;
    if (last == FS_D_OK)
        reg->ok++;
    else if (last == FS_D_LOCKED)
        reg->locked++;
    dev->last = last;
}

/* Sets a region's grey share: the first round(share * devices) of its
 * shuffle are grey from now on. */
static void fs_region_set_grey(fs_region *reg, double share)
{
    reg->grey_share = share;
    reg->grey = (uint32_t)llround(share * (double)reg->devices);
}

/* Builds regions, devices and the schedule from the scenario. Returns 0, or
 * -1 when out of memory. */
static int fs_fleet_init(fs_sim *sim)
{
    uint32_t total = 0;
    uint32_t i;
    size_t r;

    for (r = 0; r < sim->sc.nregions; r++)
        total += (uint32_t)sim->sc.regions[r].devices;
    sim->devs = calloc(total, sizeof(*sim->devs));
    sim->heap = calloc(total, sizeof(*sim->heap));
    if (!sim->devs || !sim->heap)
        return -1;
    sim->ndevs = total;
    total = 0;
    for (r = 0; r < sim->sc.nregions; r++) {
        const fs_region_spec *spec = &sim->sc.regions[r];
        fs_region *reg = &sim->regions[r];
        uint64_t shuffle;
        int64_t ramp;

        memcpy(reg->code, spec->code, sizeof(reg->code));
        memcpy(reg->sku_grey, spec->sku_grey, sizeof(reg->sku_grey));
        fg_region_country(spec->code, reg->sku_home);
        reg->first = total;
        reg->devices = (uint32_t)spec->devices;
        reg->interval_ms = spec->interval_ms;
        reg->jitter = spec->jitter;
        reg->rng = sim->opts.seed ^ fs_hash(reg->code);
        shuffle = reg->rng ^ 0x5eedULL;
        fs_region_set_grey(reg, spec->grey);
        reg->series = calloc(sim->series_cap, sizeof(*reg->series));
        if (!reg->series)
            return -1;
        for (i = 0; i < reg->devices; i++) {
            fs_device *dev = &sim->devs[total + i];

            dev->region = (uint16_t)r;
            dev->rank = i;
            dev->seq = 1;
        }
        /* Fisher-Yates over the ranks: a seeded order of grey membership. */
        for (i = reg->devices; i > 1; i--) {
            uint32_t j = (uint32_t)(fs_rand(&shuffle) % i);
            uint32_t tmp = sim->devs[total + i - 1].rank;

            sim->devs[total + i - 1].rank = sim->devs[total + j].rank;
            sim->devs[total + j].rank = tmp;
        }
        /* First check-ins spread over the ramp (one interval unless set),
         * so that the load is even from the start. */
        ramp = spec->ramp_ms >= 0 ? spec->ramp_ms : spec->interval_ms;
        for (i = 0; i < reg->devices; i++) {
            int64_t due = 0;

            if (sim->opts.rate <= 0 && !sim->opts.max)
                due = (int64_t)(fs_rand01(&reg->rng) * (double)ramp);
            fs_schedule(sim, total + i, 0, due);
        }
        total += reg->devices;
    }
    sim->nregions = sim->sc.nregions;
    return 0;
}

/* ------------------------------------------------------------------------
 * Requests */

static int fs_msgpack_write(void *data, const char *buf, size_t len)
{
    fs_conn *conn = data;

    if (len > conn->body_cap - conn->body_len)
        return -1;
    memcpy(conn->body + conn->body_len, buf, len);
    conn->body_len += len;
    return 0;
}

static void fs_mp_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);

    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Appends device d's check-in to the request body. Returns 0, or -1 when
 * it does not fit (cannot happen with FS_ITEM_MAX per item). */
static int fs_append_checkin(fs_sim *sim, fs_conn *conn, uint32_t d, int64_t ts)
{
    const fs_device *dev = &sim->devs[d];
    const fs_region *reg = &sim->regions[dev->region];
    const char *sku = dev->rank < reg->grey ? reg->sku_grey : reg->sku_home;
    char id[FS_MAX_PREFIX + FG_REGION_MAX + 16];
    size_t room = conn->body_cap - conn->body_len;
    msgpack_packer pk;
    int n;

    snprintf(id, sizeof(id), "%s-%s-%06" PRIu32, sim->opts.id_prefix, reg->code,
             d - reg->first);
    if (!sim->opts.msgpack) {
        n = snprintf(conn->body + conn->body_len, room,
                     "{\"device_id\":\"%s\",\"sku_region\":\"%s\",\"region\":\"%s\","
                     "\"model\":\"fleetsim\",\"fw\":\"1.0\",\"seq\":%" PRIu64
                     ",\"ts\":%" PRId64 "}",
                     id, sku, reg->code, dev->seq, ts);
        if (n < 0 || (size_t)n >= room)
            return -1;
        conn->body_len += (size_t)n;
        return 0;
    }
    msgpack_packer_init(&pk, conn, fs_msgpack_write);
    if (msgpack_pack_map(&pk, 7) != 0)
        return -1;
    fs_mp_str(&pk, "device_id");
    fs_mp_str(&pk, id);
    fs_mp_str(&pk, "sku_region");
    fs_mp_str(&pk, sku);
    fs_mp_str(&pk, "region");
    fs_mp_str(&pk, reg->code);
    fs_mp_str(&pk, "model");
    fs_mp_str(&pk, "fleetsim");
    fs_mp_str(&pk, "fw");
    fs_mp_str(&pk, "1.0");
    fs_mp_str(&pk, "seq");
    msgpack_pack_uint64(&pk, dev->seq);
    fs_mp_str(&pk, "ts");
    return msgpack_pack_int64(&pk, ts) != 0 ? -1 : 0;
}

static void fs_conn_close(fs_sim *sim, fs_conn *conn, int64_t now, int failed);
static void fs_conn_write(fs_sim *sim, fs_conn *conn);
static void fs_maybe_done(fs_sim *sim);

/* Fails the request in flight on conn: its devices retry after delay_ms,
 * counted as errors (transport or unreadable answer) or as retried (429,
 * 503). */
static void fs_request_fail(fs_sim *sim, fs_conn *conn, int64_t now, int64_t delay_ms,
                            int retried)
{
    size_t i;

    for (i = 0; i < conn->ndevs; i++) {
        uint32_t d = conn->devs[i];
        fs_region *reg;

        if (d == UINT32_MAX)
            continue;
        reg = &sim->regions[sim->devs[d].region];
        if (retried)
            reg->retried++;
        else
            reg->errors++;
        fs_schedule(sim, d, now, delay_ms);
    }
    conn->ndevs = 0;
}

/* Starts a request on idle conn with up to want due devices. */
static void fs_conn_send(fs_sim *sim, fs_conn *conn, int64_t now, size_t want)
{
    const char *path = sim->opts.batch > 0 ? "/v1/checkins" : "/v1/checkin";
    const char *mime = sim->opts.msgpack ? "application/msgpack" : "application/json";
    int64_t ts = fs_wall_ms();
    size_t n = 0;
    size_t before;
    int hl;

    conn->body_len = 0;
    if (sim->opts.batch > 0 && sim->opts.msgpack)
        conn->body_len = 3; /* array16 head, filled in below */
    while (n < want && sim->heap_len > 0 && sim->devs[sim->heap[0]].due_ms <= now) {
        uint32_t d = fs_heap_pop(sim);

        sim->devs[d].busy = 1;
        before = conn->body_len;
        if (sim->opts.batch > 0 && !sim->opts.msgpack)
            conn->body[conn->body_len++] = n == 0 ? '[' : ',';
        if (fs_append_checkin(sim, conn, d, ts) != 0) {
            /* Cannot happen within FS_ITEM_MAX; never spin on it. */
            conn->body_len = before;
            sim->regions[sim->devs[d].region].errors++;
            fs_schedule(sim, d, now, FS_RETRY_MS);
            break;
        }
        conn->devs[n++] = d;
        sim->regions[sim->devs[d].region].sent++;
    }
    if (n == 0) {
        sim->idle[sim->nidle++] = conn;
        return;
    }
    if (sim->opts.batch > 0 && !sim->opts.msgpack) {
        conn->body[conn->body_len++] = ']';
    } else if (sim->opts.batch > 0) {
        /* A msgpack array carries its length up front; array16 always (not
         * the shortest form for n < 16, which msgpack allows). */
        conn->body[0] = (char)0xdc;
        conn->body[1] = (char)(n >> 8);
        conn->body[2] = (char)(n & 0xff);
    }
    hl = snprintf(conn->head, sizeof(conn->head),
                  "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fleetsim/" FG_VERSION
                  "\r\nContent-Type: %s\r\nAccept: %s\r\nContent-Length: %zu\r\n\r\n",
                  path, sim->opts.target, mime, mime, conn->body_len);
    conn->head_len = hl > 0 && (size_t)hl < sizeof(conn->head) ? (size_t)hl : 0;
    conn->ndevs = n;
    conn->out_off = 0;
    conn->state = FS_C_BUSY;
    sim->busy++;
    sim->sent_total += n;
    if (sim->opts.rate > 0)
        sim->tokens -= (double)n;
    http_parser_init(&conn->hp, HTTP_RESPONSE);
    conn->hp.data = conn;
    conn->complete = 0;
    conn->keep_alive = 0;
    conn->in_value = 0;
    conn->hname_len = 0;
    conn->hval_len = 0;
    conn->retry_after_s = 1;
    conn->resp_msgpack = 0;
    conn->resp_len = 0;
    conn->started_us = fs_mono_us();
    conn->deadline_ms = now + sim->opts.timeout_ms;
    fs_conn_write(sim, conn);
}

/* Writes what is left of the request; waits for EV_WRITE on a full socket. */
static void fs_conn_write(fs_sim *sim, fs_conn *conn)
{
    struct iovec iov[2];
    struct msghdr msg;
    size_t total = conn->head_len + conn->body_len;
    ssize_t w;
    int niov = 0;

    if (conn->out_off >= total)
        return;
    if (conn->out_off < conn->head_len) {
        iov[niov].iov_base = conn->head + conn->out_off;
        iov[niov].iov_len = conn->head_len - conn->out_off;
        niov++;
        iov[niov].iov_base = conn->body;
        iov[niov].iov_len = conn->body_len;
        niov++;
    } else {
        iov[niov].iov_base = conn->body + (conn->out_off - conn->head_len);
        iov[niov].iov_len = total - conn->out_off;
        niov++;
    }
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)niov;
    w = sendmsg(conn->fd, &msg, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            event_add(conn->ev_write, NULL);
            return;
        }
        fg_log_debug("send_failed", "err=\"%s\"", strerror(errno));
        sim->transport_errors++;
        fs_conn_close(sim, conn, fs_now(sim), 1);
        return;
    }
    conn->out_off += (size_t)w;
    if (conn->out_off < total)
        event_add(conn->ev_write, NULL);
}

/* ------------------------------------------------------------------------
 * Answers: the HTTP/1.1 response reader */

/* Acts on a complete header line (name and value kept, both cut to fit). */
static void fs_header_done(fs_conn *conn)
{
    if (conn->hname_len == 11 && strncasecmp(conn->hname, "retry-after", 11) == 0) {
        uint64_t s = 0;

        conn->hval[conn->hval_len] = '\0';
        if (fs_parse_u64(conn->hval, 0, UINT32_MAX, &s) == 0)
            conn->retry_after_s = (int64_t)s;
    } else if (conn->hname_len == 12 && strncasecmp(conn->hname, "content-type", 12) == 0) {
        conn->hval[conn->hval_len] = '\0';
        conn->resp_msgpack = strstr(conn->hval, "msgpack") != NULL;
    }
    conn->hname_len = 0;
    conn->hval_len = 0;
    conn->in_value = 0;
}

static int fs_on_header_field(http_parser *hp, const char *at, size_t len)
{
    fs_conn *conn = hp->data;
    size_t room;

    if (conn->in_value)
        fs_header_done(conn);
    room = sizeof(conn->hname) - conn->hname_len;
    if (len > room)
        len = room; /* a longer name matches nothing we read */
    memcpy(conn->hname + conn->hname_len, at, len);
    conn->hname_len += len;
    return 0;
}

static int fs_on_header_value(http_parser *hp, const char *at, size_t len)
{
    fs_conn *conn = hp->data;
    size_t room = sizeof(conn->hval) - 1 - conn->hval_len;

    conn->in_value = 1;
    if (len > room)
        len = room;
    memcpy(conn->hval + conn->hval_len, at, len);
    conn->hval_len += len;
    return 0;
}

/* Strict framing: HTTP/1.x, a Content-Length and no Transfer-Encoding, and
 * a body under the cap. */
static int fs_on_headers_complete(http_parser *hp)
{
    fs_conn *conn = hp->data;
    size_t need;
    size_t cap;
    char *p;

    if (conn->in_value)
        fs_header_done(conn);
    if (hp->http_major != 1 || (hp->flags & F_CHUNKED) || hp->uses_transfer_encoding ||
        !(hp->flags & F_CONTENTLENGTH) || hp->content_length > (uint64_t)FS_MAX_RESP_BODY)
        return -1;
    need = (size_t)hp->content_length;
    if (need > conn->resp_cap) {
        cap = (need + 4095) & ~(size_t)4095;
        if (conn->sim->resp_bytes - conn->resp_cap + cap > (size_t)FS_MAX_RESP_POOL)
            return -1;
        p = realloc(conn->resp, cap);
        if (!p)
            return -1;
        conn->sim->resp_bytes += cap - conn->resp_cap;
        conn->resp = p;
        conn->resp_cap = cap;
    }
    return 0;
}

static int fs_on_body(http_parser *hp, const char *at, size_t len)
{
    fs_conn *conn = hp->data;

    if (len > conn->resp_cap - conn->resp_len)
        return -1;
    memcpy(conn->resp + conn->resp_len, at, len);
    conn->resp_len += len;
    return 0;
}

static int fs_on_message_complete(http_parser *hp)
{
    fs_conn *conn = hp->data;

    conn->complete = 1;
    conn->keep_alive = http_should_keep_alive(hp);
    /* One request in flight: anything after this answer is an error. */
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings fs_http_settings = {
    .on_header_field = fs_on_header_field,
    .on_header_value = fs_on_header_value,
    .on_headers_complete = fs_on_headers_complete,
    .on_body = fs_on_body,
    .on_message_complete = fs_on_message_complete,
};

/* ------------------------------------------------------------------------
 * Answers: directives, in JSON (yajl events) or msgpack (a bounded walk) */

typedef enum fs_key {
    FS_K_NONE = 0,
    FS_K_STATUS,
    FS_K_REGION,
    FS_K_SCOPE,
    FS_K_REASON,
    FS_K_MESSAGE,
    FS_K_UNTIL,
    FS_K_ERROR,
    FS_K_RETRY,
    FS_K_RESULTS
} fs_key;

static fs_key fs_key_of(const char *k, size_t len)
{
    static const struct {
        const char *name;
        fs_key key;
    } keys[] = {
        {"status", FS_K_STATUS}, {"region", FS_K_REGION}, {"scope", FS_K_SCOPE},
        {"reason", FS_K_REASON}, {"message", FS_K_MESSAGE}, {"until", FS_K_UNTIL},
        {"error", FS_K_ERROR}, {"retry", FS_K_RETRY},
    };
    size_t i;

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strlen(keys[i].name) == len && memcmp(keys[i].name, k, len) == 0)
            return keys[i].key;
    return FS_K_NONE;
}

/* Stores a string field of a directive. */
static void fs_dir_str(fs_dir *dir, fs_key key, const char *s, size_t len)
{
    switch (key) {
    case FS_K_STATUS:
        if (len == 2 && memcmp(s, "ok", 2) == 0)
            dir->status = FS_D_OK;
        else if (len == 6 && memcmp(s, "locked", 6) == 0)
            dir->status = FS_D_LOCKED;
        else if (len == 5 && memcmp(s, "error", 5) == 0)
            dir->status = FS_D_ERROR;
        else
            dir->status = FS_D_OTHER;
        break;
    case FS_K_REGION:
        fs_copy(dir->region, sizeof(dir->region), s, len);
        break;
    case FS_K_SCOPE:
        fs_copy(dir->scope, sizeof(dir->scope), s, len);
        break;
    case FS_K_REASON:
        fs_copy(dir->reason, sizeof(dir->reason), s, len);
        break;
    case FS_K_MESSAGE:
        fs_copy(dir->message, sizeof(dir->message), s, len);
        break;
    case FS_K_ERROR:
        fs_copy(dir->error, sizeof(dir->error), s, len);
        break;
    default:
        break;
    }
}

static void fs_dir_reset(fs_dir *dir)
{
    dir->status = FS_D_NONE;
    dir->retry = 0;
    dir->until = 0;
    dir->region[0] = '\0';
    dir->scope[0] = '\0';
    dir->error[0] = '\0';
    dir->reason[0] = '\0';
    dir->message[0] = '\0';
}

/* Applies the item-th directive of conn's answer to its device. */
static void fs_apply(fs_sim *sim, fs_conn *conn, size_t item, const fs_dir *dir, int64_t now)
{
    char q1[FS_MESSAGE_MAX * 2];
    char q2[FS_REASON_MAX * 2];
    uint32_t d;
    fs_device *dev;
    fs_region *reg;

    if (item >= conn->ndevs) {
        sim->protocol_errors++;
        return;
    }
    d = conn->devs[item];
    if (d == UINT32_MAX)
        return;
    conn->devs[item] = UINT32_MAX;
    dev = &sim->devs[d];
    reg = &sim->regions[dev->region];
    switch (dir->status) {
    case FS_D_OK:
        reg->answered_ok++;
        fs_set_last(reg, dev, FS_D_OK);
        dev->seq++;
        fs_schedule(sim, d, now, fs_next_wait(sim, reg));
        break;
    case FS_D_LOCKED:
        reg->answered_locked++;
        fs_set_last(reg, dev, FS_D_LOCKED);
        dev->seq++;
        if (!reg->lock_seen || strcmp(reg->lock.message, dir->message) != 0 ||
            strcmp(reg->lock.reason, dir->reason) != 0 ||
            strcmp(reg->lock.region, dir->region) != 0 || reg->lock.until != dir->until) {
            fg_log_info("lock_seen", "region=%s lock_region=%s scope=%s reason=%s "
                                     "until=%" PRId64 " message=%s",
                        reg->code, dir->region, dir->scope,
                        fg_log_quote(dir->reason, q2, sizeof(q2)), dir->until,
                        fg_log_quote(dir->message, q1, sizeof(q1)));
        }
        reg->lock = *dir;
        reg->lock_seen = 1;
        fs_schedule(sim, d, now, fs_next_wait(sim, reg));
        break;
    case FS_D_ERROR:
        if (dir->retry) {
            reg->retried++;
            fs_schedule(sim, d, now, conn->retry_after_s * 1000);
            break;
        }
        reg->errors++;
        if (sim->error_logs < FS_MAX_ERROR_LOGS) {
            sim->error_logs++;
            fg_log_warn("item_rejected", "region=%s error=%s", reg->code,
                        fg_log_quote(dir->error, q2, sizeof(q2)));
        }
        dev->seq++;
        fs_schedule(sim, d, now, fs_next_wait(sim, reg));
        break;
    default:
        reg->errors++;
        sim->protocol_errors++;
        fs_schedule(sim, d, now, FS_RETRY_MS);
        break;
    }
}

/* JSON reader state: a single directive is the top-level object; a batch
 * answer is {"results":[directive, ...]}. Other keys and nested values are
 * skipped. */
typedef struct fs_jctx {
    fs_sim *sim;
    fs_conn *conn;
    int64_t now;
    int batch;
    int depth;
    int dir_depth;          /* depth of the directive object, 0 = none */
    int results_depth;      /* depth of the results array, 0 = none */
    fs_key key;
    size_t items;
} fs_jctx;

static int fs_j_null(void *ctx)
{
    (void)ctx;
    return 1;
}

static int fs_j_bool(void *ctx, int b)
{
    fs_jctx *j = ctx;

    if (j->depth == j->dir_depth && j->key == FS_K_RETRY)
        j->sim->dir.retry = b;
    return 1;
}

static int fs_j_int(void *ctx, long long v)
{
    fs_jctx *j = ctx;

    if (j->depth == j->dir_depth && j->key == FS_K_UNTIL)
        j->sim->dir.until = (int64_t)v;
    return 1;
}

static int fs_j_double(void *ctx, double v)
{
    (void)ctx;
    (void)v;
    return 1;
}

static int fs_j_string(void *ctx, const unsigned char *s, size_t len)
{
    fs_jctx *j = ctx;

    if (j->depth == j->dir_depth)
        fs_dir_str(&j->sim->dir, j->key, (const char *)s, len);
    return 1;
}

static int fs_j_start_map(void *ctx)
{
    fs_jctx *j = ctx;

    j->depth++;
    if (j->depth > FS_MAX_DEPTH)
        return 0;
    if ((!j->batch && j->depth == 1) ||
        (j->batch && j->results_depth > 0 && j->depth == j->results_depth + 1)) {
        j->dir_depth = j->depth;
        fs_dir_reset(&j->sim->dir);
    }
    j->key = FS_K_NONE;
    return 1;
}

static int fs_j_map_key(void *ctx, const unsigned char *k, size_t len)
{
    fs_jctx *j = ctx;

    if (j->depth == j->dir_depth)
        j->key = fs_key_of((const char *)k, len);
    else if (j->batch && j->depth == 1 && len == 7 && memcmp(k, "results", 7) == 0)
        j->key = FS_K_RESULTS;
    else
        j->key = FS_K_NONE;
    return 1;
}

static int fs_j_end_map(void *ctx)
{
    fs_jctx *j = ctx;

    if (j->depth == j->dir_depth) {
        fs_apply(j->sim, j->conn, j->items++, &j->sim->dir, j->now);
        j->dir_depth = 0;
    }
    j->depth--;
    return 1;
}

static int fs_j_start_array(void *ctx)
{
    fs_jctx *j = ctx;

    j->depth++;
    if (j->depth > FS_MAX_DEPTH)
        return 0;
    if (j->batch && j->depth == 2 && j->key == FS_K_RESULTS)
        j->results_depth = 2;
    return 1;
}

static int fs_j_end_array(void *ctx)
{
    fs_jctx *j = ctx;

    if (j->depth == j->results_depth)
        j->results_depth = 0;
    j->depth--;
    return 1;
}

static const yajl_callbacks fs_yajl_callbacks = {
    .yajl_null = fs_j_null,
    .yajl_boolean = fs_j_bool,
    .yajl_integer = fs_j_int,
    .yajl_double = fs_j_double,
    .yajl_string = fs_j_string,
    .yajl_start_map = fs_j_start_map,
    .yajl_map_key = fs_j_map_key,
    .yajl_end_map = fs_j_end_map,
    .yajl_start_array = fs_j_start_array,
    .yajl_end_array = fs_j_end_array,
};

/* Reads a JSON answer. Returns 0, or -1 when it is not valid JSON. */
static int fs_read_json(fs_sim *sim, fs_conn *conn, int64_t now)
{
    fs_jctx j;
    yajl_handle h;
    int rc = -1;

    memset(&j, 0, sizeof(j));
    j.sim = sim;
    j.conn = conn;
    j.now = now;
    j.batch = sim->opts.batch > 0;
    h = yajl_alloc(&fs_yajl_callbacks, NULL, &j);
    if (!h)
        return -1;
    if (yajl_parse(h, (const unsigned char *)conn->resp, conn->resp_len) != yajl_status_ok)
        goto cleanup;
    if (yajl_complete_parse(h) != yajl_status_ok)
        goto cleanup;
    rc = 0;
cleanup:
    yajl_free(h);
    return rc;
}

/* A cursor over msgpack bytes; every declared size is checked against the
 * bytes left, so a short answer cannot ask for more than it has. */
typedef struct fs_mp {
    const uint8_t *p;
    const uint8_t *end;
} fs_mp;

typedef enum fs_mpk {
    FS_MP_NIL,
    FS_MP_BOOL,
    FS_MP_INT,
    FS_MP_STR,
    FS_MP_ARRAY,
    FS_MP_MAP,
    FS_MP_OTHER
} fs_mpk;

typedef struct fs_mpv {
    fs_mpk kind;
    int64_t i;
    const char *s;
    uint32_t n;             /* string bytes, or array/map items */
} fs_mpv;

static int fs_mp_be(fs_mp *m, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if ((size_t)(m->end - m->p) < n)
        return -1;
    for (i = 0; i < n; i++)
        v = (v << 8) | m->p[i];
    m->p += n;
    *out = v;
    return 0;
}

/* Skips n bytes. */
static int fs_mp_bytes(fs_mp *m, uint64_t n)
{
    if ((uint64_t)(m->end - m->p) < n)
        return -1;
    m->p += n;
    return 0;
}

/* A string of u bytes follows: point at it. */
static int fs_mp_string(fs_mp *m, fs_mpv *v, uint64_t u)
{
    if ((uint64_t)(m->end - m->p) < u)
        return -1;
    v->kind = FS_MP_STR;
    v->s = (const char *)m->p;
    v->n = (uint32_t)u;
    m->p += u;
    return 0;
}

/* An array or map (v->kind set) of u items follows. Every item takes at
 * least one byte (two per map entry), so u is checked against the bytes
 * left before anyone loops over it. */
static int fs_mp_container(fs_mp *m, fs_mpv *v, uint64_t u)
{
    if (u * (v->kind == FS_MP_MAP ? 2 : 1) > (uint64_t)(m->end - m->p))
        return -1;
    v->n = (uint32_t)u;
    return 0;
}

/* Reads the next value's head; strings, binaries, floats and extensions are
 * consumed whole (a string's bytes are pointed to). Returns 0 or -1. */
static int fs_mp_next(fs_mp *m, fs_mpv *v)
{
    uint64_t u = 0;
    size_t n;
    uint8_t b;

    if (m->p >= m->end)
        return -1;
    b = *m->p++;
    v->kind = FS_MP_OTHER;
    if (b <= 0x7f) {
        v->kind = FS_MP_INT;
        v->i = b;
        return 0;
    }
    if (b >= 0xe0) {
        v->kind = FS_MP_INT;
        v->i = (int8_t)b;
        return 0;
    }
    if (b <= 0x8f) {
        v->kind = FS_MP_MAP;
        return fs_mp_container(m, v, b & 0x0f);
    }
    if (b <= 0x9f) {
        v->kind = FS_MP_ARRAY;
        return fs_mp_container(m, v, b & 0x0f);
    }
    if (b <= 0xbf)
        return fs_mp_string(m, v, b & 0x1f);
    switch (b) {
    case 0xc0:
        v->kind = FS_MP_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        v->kind = FS_MP_BOOL;
        v->i = b == 0xc3;
        return 0;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if (fs_mp_be(m, (size_t)1 << (b - 0xcc), &u) != 0)
            return -1;
        v->kind = FS_MP_INT;
        v->i = u > INT64_MAX ? INT64_MAX : (int64_t)u;
        return 0;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        n = (size_t)1 << (b - 0xd0);
        if (fs_mp_be(m, n, &u) != 0)
            return -1;
        if (n < 8 && ((u >> (n * 8 - 1)) & 1))
            u |= ~(uint64_t)0 << (n * 8);
        v->kind = FS_MP_INT;
        v->i = (int64_t)u;
        return 0;
    case 0xca:
        return fs_mp_bytes(m, 4);
    case 0xcb:
        return fs_mp_bytes(m, 8);
    case 0xd9: case 0xda: case 0xdb:
        if (fs_mp_be(m, (size_t)1 << (b - 0xd9), &u) != 0)
            return -1;
        return fs_mp_string(m, v, u);
    case 0xc4: case 0xc5: case 0xc6:
        if (fs_mp_be(m, (size_t)1 << (b - 0xc4), &u) != 0)
            return -1;
        return fs_mp_bytes(m, u);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        return fs_mp_bytes(m, 1 + ((uint64_t)1 << (b - 0xd4)));
    case 0xc7: case 0xc8: case 0xc9:
        if (fs_mp_be(m, (size_t)1 << (b - 0xc7), &u) != 0)
            return -1;
        return fs_mp_bytes(m, 1 + u);
    case 0xdc: case 0xdd:
        if (fs_mp_be(m, b == 0xdc ? 2 : 4, &u) != 0)
            return -1;
        v->kind = FS_MP_ARRAY;
        return fs_mp_container(m, v, u);
    case 0xde: case 0xdf:
        if (fs_mp_be(m, b == 0xde ? 2 : 4, &u) != 0)
            return -1;
        v->kind = FS_MP_MAP;
        return fs_mp_container(m, v, u);
    default:
        return -1; /* 0xc1 is never used */
    }
}

/* Skips one whole value. */
static int fs_mp_skip(fs_mp *m, int depth)
{
    fs_mpv v;
    uint64_t items;
    uint64_t i;

    if (depth > FS_MAX_DEPTH || fs_mp_next(m, &v) != 0)
        return -1;
    if (v.kind != FS_MP_ARRAY && v.kind != FS_MP_MAP)
        return 0;
    items = v.kind == FS_MP_MAP ? 2 * (uint64_t)v.n : v.n;
    for (i = 0; i < items; i++)
        if (fs_mp_skip(m, depth + 1) != 0)
            return -1;
    return 0;
}

/* Reads one directive map (its head already read into head). */
static int fs_mp_dir(fs_mp *m, const fs_mpv *head, fs_dir *dir)
{
    fs_mpv k;
    fs_mpv v;
    uint32_t i;
    fs_key key;

    fs_dir_reset(dir);
    for (i = 0; i < head->n; i++) {
        if (fs_mp_next(m, &k) != 0)
            return -1;
        key = k.kind == FS_MP_STR ? fs_key_of(k.s, k.n) : FS_K_NONE;
        if (k.kind == FS_MP_ARRAY || k.kind == FS_MP_MAP)
            return -1;
        if (key == FS_K_NONE) {
            if (fs_mp_skip(m, 2) != 0)
                return -1;
            continue;
        }
        if (fs_mp_next(m, &v) != 0)
            return -1;
        if (v.kind == FS_MP_STR)
            fs_dir_str(dir, key, v.s, v.n);
        else if (v.kind == FS_MP_INT && key == FS_K_UNTIL)
            dir->until = v.i;
        else if (v.kind == FS_MP_BOOL && key == FS_K_RETRY)
            dir->retry = (int)v.i;
        else if (v.kind == FS_MP_ARRAY || v.kind == FS_MP_MAP)
            return -1; /* no directive field is a container */
    }
    return 0;
}

/* Reads a msgpack answer. Returns 0, or -1 when malformed. */
static int fs_read_msgpack(fs_sim *sim, fs_conn *conn, int64_t now)
{
    fs_mp m = {(const uint8_t *)conn->resp, (const uint8_t *)conn->resp + conn->resp_len};
    fs_mpv top;
    fs_mpv k;
    fs_mpv arr;
    fs_mpv item;
    uint32_t i;
    uint32_t j;
    size_t items = 0;

    if (fs_mp_next(&m, &top) != 0 || top.kind != FS_MP_MAP)
        return -1;
    if (sim->opts.batch == 0) {
        if (fs_mp_dir(&m, &top, &sim->dir) != 0)
            return -1;
        fs_apply(sim, conn, 0, &sim->dir, now);
        return m.p == m.end ? 0 : -1;
    }
    for (i = 0; i < top.n; i++) {
        if (fs_mp_next(&m, &k) != 0 || k.kind == FS_MP_ARRAY || k.kind == FS_MP_MAP)
            return -1;
        if (k.kind != FS_MP_STR || k.n != 7 || memcmp(k.s, "results", 7) != 0) {
            if (fs_mp_skip(&m, 1) != 0)
                return -1;
            continue;
        }
        if (fs_mp_next(&m, &arr) != 0 || arr.kind != FS_MP_ARRAY)
            return -1;
        for (j = 0; j < arr.n; j++) {
            if (fs_mp_next(&m, &item) != 0 || item.kind != FS_MP_MAP)
                return -1;
            if (fs_mp_dir(&m, &item, &sim->dir) != 0)
                return -1;
            fs_apply(sim, conn, items++, &sim->dir, now);
        }
    }
    return m.p == m.end ? 0 : -1;
}

/* Logs an unexpected answer (a few times per run). */
static void fs_log_answer(fs_sim *sim, fs_conn *conn, const char *what)
{
    char body[256];
    char q[512];
    size_t n = conn->resp_len < sizeof(body) - 1 ? conn->resp_len : sizeof(body) - 1;
    size_t i;

    if (sim->error_logs >= FS_MAX_ERROR_LOGS)
        return;
    sim->error_logs++;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)conn->resp[i];
        body[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '.';
    }
    body[n] = '\0';
    fg_log_warn(what, "status=%u body=%s", conn->hp.status_code,
                fg_log_quote(body, q, sizeof(q)));
}

/* Acts on a complete answer on conn. */
static void fs_conn_answered(fs_sim *sim, fs_conn *conn, int64_t now)
{
    unsigned status = conn->hp.status_code;
    int64_t retry_ms;
    int rc;
    size_t i;

    fs_hist_add(&sim->lat_all, (uint64_t)(fs_mono_us() - conn->started_us));
    fs_hist_add(&sim->lat_interval, (uint64_t)(fs_mono_us() - conn->started_us));
    sim->responses++;
    if (status < sizeof(sim->status_counts) / sizeof(sim->status_counts[0]))
        sim->status_counts[status]++;
    conn->backoff_ms = 0;
    if (conn->retry_after_s < 1)
        conn->retry_after_s = 1;
    if (conn->retry_after_s > FS_RETRY_AFTER_MAX_S)
        conn->retry_after_s = FS_RETRY_AFTER_MAX_S;
    retry_ms = conn->retry_after_s * 1000;
    if (status == 429 || status == 503) {
        fs_request_fail(sim, conn, now, retry_ms, 1);
        return;
    }
    if (status != 200) {
        fs_log_answer(sim, conn, "http_error");
        for (i = 0; i < conn->ndevs; i++) {
            uint32_t d = conn->devs[i];
            fs_region *reg = &sim->regions[sim->devs[d].region];

            reg->errors++;
            sim->devs[d].seq++;
            fs_schedule(sim, d, now, fs_next_wait(sim, reg));
        }
        conn->ndevs = 0;
        return;
    }
    if (conn->resp_msgpack)
        rc = fs_read_msgpack(sim, conn, now);
    else
        rc = fs_read_json(sim, conn, now);
    if (rc != 0)
        fs_log_answer(sim, conn, "bad_answer");
    for (i = 0; i < conn->ndevs; i++) {
        if (conn->devs[i] != UINT32_MAX) {
            /* Not answered for: count once, retry the rest. */
            if (rc == 0)
                fs_log_answer(sim, conn, "short_answer");
            rc = -1;
            break;
        }
    }
    if (rc != 0) {
        sim->protocol_errors++;
        fs_request_fail(sim, conn, now, FS_RETRY_MS, 0);
    }
    conn->ndevs = 0;
}

/* ------------------------------------------------------------------------
 * Connections */

static void fs_on_read(evutil_socket_t fd, short what, void *arg);
static void fs_on_write(evutil_socket_t fd, short what, void *arg);
static void fs_pump(fs_sim *sim);

/* Removes conn from the idle stack when it is there. */
static void fs_idle_remove(fs_sim *sim, fs_conn *conn)
{
    int i;

    for (i = 0; i < sim->nidle; i++) {
        if (sim->idle[i] == conn) {
            sim->idle[i] = sim->idle[--sim->nidle];
            return;
        }
    }
}

/* Closes conn; a request in flight fails (its devices retry). failed: the
 * close follows an error, so the reconnect backs off. */
static void fs_conn_close(fs_sim *sim, fs_conn *conn, int64_t now, int failed)
{
    if (conn->state == FS_C_IDLE)
        fs_idle_remove(sim, conn);
    if (conn->state == FS_C_BUSY) {
        sim->busy--;
        fs_request_fail(sim, conn, now, FS_RETRY_MS, 0);
    }
    if (conn->ev_read)
        event_free(conn->ev_read);
    if (conn->ev_write)
        event_free(conn->ev_write);
    conn->ev_read = NULL;
    conn->ev_write = NULL;
    if (conn->fd >= 0)
        close(conn->fd);
    conn->fd = -1;
    conn->state = FS_C_CLOSED;
    if (failed) {
        conn->backoff_ms = conn->backoff_ms == 0 ? FS_BACKOFF_MIN_MS : conn->backoff_ms * 2;
        if (conn->backoff_ms > FS_BACKOFF_MAX_MS)
            conn->backoff_ms = FS_BACKOFF_MAX_MS;
    }
    conn->reconnect_ms = now + conn->backoff_ms;
    fs_maybe_done(sim);
}

/* Counts and logs a failed connection attempt (once until one succeeds). */
static void fs_connect_failed(fs_sim *sim, fs_conn *conn, int err, int64_t now)
{
    sim->connect_errors++;
    if (!sim->connect_fail_logged) {
        sim->connect_fail_logged = 1;
        fg_log_warn("connect_failed", "target=%s err=\"%s\"", sim->opts.target,
                    strerror(err));
    }
    fs_conn_close(sim, conn, now, 1);
}

/* The connection is up: it joins the idle pool. */
static void fs_conn_ready(fs_sim *sim, fs_conn *conn)
{
    sim->connects++;
    if (sim->connect_fail_logged) {
        sim->connect_fail_logged = 0;
        fg_log_info("connected", "target=%s", sim->opts.target);
    }
    conn->state = FS_C_IDLE;
    sim->idle[sim->nidle++] = conn;
    event_add(conn->ev_read, NULL);
}

/* Opens conn's socket and starts a non-blocking connect. */
static void fs_conn_open(fs_sim *sim, fs_conn *conn, int64_t now)
{
    int one = 1;
    int fd;
    int rc;

    fd = socket(sim->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fs_connect_failed(sim, conn, errno, now);
        return;
    }
    conn->fd = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn->ev_read = event_new(sim->base, fd, EV_READ | EV_PERSIST, fs_on_read, conn);
    conn->ev_write = event_new(sim->base, fd, EV_WRITE, fs_on_write, conn);
    if (!conn->ev_read || !conn->ev_write) {
        fs_connect_failed(sim, conn, ENOMEM, now);
        return;
    }
    conn->state = FS_C_CONNECTING;
    conn->deadline_ms = now + sim->opts.timeout_ms;
    rc = connect(fd, (const struct sockaddr *)&sim->addr, sim->addrlen);
    if (rc == 0) {
        fs_conn_ready(sim, conn);
        return;
    }
    if (errno != EINPROGRESS) {
        fs_connect_failed(sim, conn, errno, now);
        return;
    }
    event_add(conn->ev_write, NULL);
}

static void fs_on_write(evutil_socket_t fd, short what, void *arg)
{
    fs_conn *conn = arg;
    fs_sim *sim = conn->sim;
    int err = 0;
    socklen_t len = sizeof(err);

    (void)what;
    if (conn->state == FS_C_CONNECTING) {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            fs_connect_failed(sim, conn, err, fs_now(sim));
            return;
        }
        fs_conn_ready(sim, conn);
        fs_pump(sim);
        return;
    }
    if (conn->state == FS_C_BUSY)
        fs_conn_write(sim, conn);
}

static void fs_on_read(evutil_socket_t fd, short what, void *arg)
{
    fs_conn *conn = arg;
    fs_sim *sim = conn->sim;
    int64_t now = fs_now(sim);
    ssize_t n;
    size_t parsed;
    enum http_errno err;
    int extra = 0;

    (void)what;
    n = recv(fd, sim->rbuf, sizeof(sim->rbuf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (conn->state != FS_C_BUSY) {
        /* An idle connection that the server closed (keep-alive timeout,
         * drain) or that sent bytes nobody asked for. */
        if (n > 0)
            sim->protocol_errors++;
        fs_conn_close(sim, conn, now, n != 0);
        return;
    }
    if (n < 0) {
        sim->transport_errors++;
        fs_conn_close(sim, conn, now, 1);
        return;
    }
    parsed = http_parser_execute(&conn->hp, &fs_http_settings, sim->rbuf, (size_t)n);
    err = HTTP_PARSER_ERRNO(&conn->hp);
    if (!conn->complete && (n == 0 || (err != HPE_OK && err != HPE_PAUSED))) {
        if (n == 0) {
            sim->transport_errors++;
        } else {
            sim->protocol_errors++;
            if (sim->error_logs < FS_MAX_ERROR_LOGS) {
                sim->error_logs++;
                fg_log_warn("bad_response", "err=%s", http_errno_name(err));
            }
        }
        fs_conn_close(sim, conn, now, 1);
        return;
    }
    if (!conn->complete)
        return;
    if (parsed < (size_t)n) {
        extra = 1;
        sim->protocol_errors++;
    }
    if (conn->out_off < conn->head_len + conn->body_len)
        extra = 1; /* answered before the request was sent whole */
    event_del(conn->ev_write);
    fs_conn_answered(sim, conn, now);
    sim->busy--;
    conn->state = FS_C_IDLE;
    if (extra || !conn->keep_alive || sim->stopping) {
        fs_conn_close(sim, conn, now, extra);
        /* The server ended the keep-alive: reconnect at once. */
        if (!extra && !sim->stopping)
            fs_conn_open(sim, conn, now);
    } else {
        sim->idle[sim->nidle++] = conn;
    }
    fs_maybe_done(sim);
    fs_pump(sim);
}

/* ------------------------------------------------------------------------
 * The run: dispatch, phases, reports, stop */

/* Hands due devices to idle connections, within the rate. */
static void fs_pump(fs_sim *sim)
{
    int64_t now;
    size_t want;

    if (sim->stopping)
        return;
    now = fs_now(sim);
    if (sim->opts.rate > 0) {
        double burst = sim->opts.rate * 0.05;
        size_t per = sim->opts.batch > 0 ? (size_t)sim->opts.batch : 1;

        if (burst < (double)per)
            burst = (double)per;
        sim->tokens += sim->opts.rate * (double)(now - sim->tokens_ms) / 1000.0;
        sim->tokens_ms = now;
        if (sim->tokens > burst)
            sim->tokens = burst;
    }
    while (sim->nidle > 0 && sim->heap_len > 0 &&
           sim->devs[sim->heap[0]].due_ms <= now) {
        want = sim->opts.batch > 0 ? (size_t)sim->opts.batch : 1;
        if (sim->opts.rate > 0) {
            if (sim->tokens < 1)
                break;
            if ((double)want > sim->tokens)
                want = (size_t)sim->tokens;
        }
        if (sim->opts.count > 0) {
            if (sim->sent_total >= sim->opts.count)
                break;
            if (want > sim->opts.count - sim->sent_total)
                want = (size_t)(sim->opts.count - sim->sent_total);
        }
        fs_conn_send(sim, sim->idle[--sim->nidle], now, want);
    }
}

/* Ends the run once it is stopping and nothing is in flight. */
static void fs_maybe_done(fs_sim *sim)
{
    if (sim->stopping && sim->busy == 0)
        event_base_loopbreak(sim->base);
}

static void fs_begin_stop(fs_sim *sim, const char *reason, int64_t now)
{
    if (sim->stopping)
        return;
    sim->stopping = 1;
    sim->stop_reason = reason;
    sim->end_ms = now;
    sim->drain_until_ms = now + (sim->opts.timeout_ms < FS_DRAIN_MAX_MS ? sim->opts.timeout_ms
                                                                       : FS_DRAIN_MAX_MS);
    fg_log_info("stopping", "reason=%s in_flight=%d", reason, sim->busy);
    fs_maybe_done(sim);
}

/* Appends a time-series point for every region at t_ms. */
static void fs_series_add(fs_sim *sim, int64_t t_ms)
{
    size_t r;

    if (sim->nseries >= sim->series_cap)
        return;
    sim->series_t[sim->nseries] = t_ms;
    for (r = 0; r < sim->nregions; r++) {
        fs_region *reg = &sim->regions[r];
        fs_point *pt = &reg->series[sim->nseries];

        pt->locked = reg->locked;
        pt->grey = reg->grey;
        pt->sent = reg->sent;
    }
    sim->nseries++;
}

/* One line per region and a total line, logfmt on stdout. */
static void fs_report_lines(fs_sim *sim, int64_t t_ms, int64_t span_ms)
{
    uint64_t stored = 0;
    uint64_t errors = 0;
    uint64_t retried = 0;
    uint32_t devices = 0;
    uint32_t grey = 0;
    uint32_t locked = 0;
    int prec = sim->opts.report_ms % 100 == 0 ? 1 : 3;
    size_t r;

    for (r = 0; r < sim->nregions; r++) {
        const fs_region *reg = &sim->regions[r];

        if (!sim->opts.quiet)
            printf("t=%.*f region=%s devices=%" PRIu32 " grey=%" PRIu32 " sent=%" PRIu64
                   " ok=%" PRIu32 " locked=%" PRIu32 " locked_share=%.3f errors=%" PRIu64
                   " retried=%" PRIu64 "\n",
                   prec, (double)t_ms / 1000.0, reg->code, reg->devices, reg->grey, reg->sent,
                   reg->ok, reg->locked, (double)reg->locked / (double)reg->devices,
                   reg->errors, reg->retried);
        stored += reg->answered_ok + reg->answered_locked;
        errors += reg->errors;
        retried += reg->retried;
        devices += reg->devices;
        grey += reg->grey;
        locked += reg->locked;
    }
    if (!sim->opts.quiet) {
        printf("t=%.*f region=all devices=%" PRIu32 " grey=%" PRIu32 " sent=%" PRIu64
               " stored=%" PRIu64 " locked=%" PRIu32 " locked_share=%.3f errors=%" PRIu64
               " retried=%" PRIu64 " rate=%.1f p50_ms=%.2f p99_ms=%.2f conns=%d\n",
               prec, (double)t_ms / 1000.0, devices, grey, sim->sent_total, stored, locked,
               devices ? (double)locked / (double)devices : 0.0, errors, retried,
               span_ms > 0 ? (double)(sim->sent_total - sim->sent_mark) * 1000.0 /
                                 (double)span_ms
                           : 0.0,
               fs_hist_ms(&sim->lat_interval, 0.5), fs_hist_ms(&sim->lat_interval, 0.99),
               sim->nidle + sim->busy);
        fflush(stdout);
    }
    sim->sent_mark = sim->sent_total;
    memset(&sim->lat_interval, 0, sizeof(sim->lat_interval));
}

/* Applies the phases that are due. */
static void fs_phases(fs_sim *sim, int64_t now)
{
    while (sim->next_phase < sim->sc.nphases &&
           sim->sc.phases[sim->next_phase].at_ms <= now) {
        const fs_phase *ph = &sim->sc.phases[sim->next_phase++];
        fs_region *reg = &sim->regions[ph->region];

        if (ph->grey >= 0)
            fs_region_set_grey(reg, ph->grey);
        if (ph->interval_ms > 0)
            reg->interval_ms = ph->interval_ms;
        if (ph->jitter >= 0)
            reg->jitter = ph->jitter;
        fg_log_info("phase", "at_ms=%" PRId64 " region=%s grey_share=%.4f grey=%" PRIu32
                             " interval_ms=%" PRId64 " jitter=%.3f",
                    ph->at_ms, reg->code, reg->grey_share, reg->grey, reg->interval_ms,
                    reg->jitter);
    }
}

/* Request deadlines, connect deadlines and reconnects. */
static void fs_scan(fs_sim *sim, int64_t now)
{
    int i;

    for (i = 0; i < sim->nconns; i++) {
        fs_conn *conn = &sim->conns[i];

        if (conn->state == FS_C_BUSY && now >= conn->deadline_ms) {
            sim->transport_errors++;
            if (sim->error_logs < FS_MAX_ERROR_LOGS) {
                sim->error_logs++;
                fg_log_warn("request_timeout", "timeout_ms=%" PRId64 " items=%zu",
                            sim->opts.timeout_ms, conn->ndevs);
            }
            fs_conn_close(sim, conn, now, 1);
        } else if (conn->state == FS_C_CONNECTING && now >= conn->deadline_ms) {
            fs_connect_failed(sim, conn, ETIMEDOUT, now);
        } else if (conn->state == FS_C_CLOSED && !sim->stopping && now >= conn->reconnect_ms) {
            fs_conn_open(sim, conn, now);
        }
    }
}

static void fs_on_tick(evutil_socket_t fd, short what, void *arg)
{
    fs_sim *sim = arg;
    int64_t now = fs_now(sim);

    (void)fd;
    (void)what;
    if (!sim->stopping) {
        fs_phases(sim, now);
        while (now >= sim->next_report_ms && sim->next_report_ms <= sim->duration_ms) {
            fs_series_add(sim, sim->next_report_ms);
            fs_report_lines(sim, sim->next_report_ms, sim->opts.report_ms);
            sim->next_report_ms += sim->opts.report_ms;
        }
        if (now >= sim->duration_ms)
            fs_begin_stop(sim, "duration", now);
        else if (sim->opts.count > 0 && sim->sent_total >= sim->opts.count)
            fs_begin_stop(sim, "count", now);
    }
    if (now >= sim->next_scan_ms) {
        sim->next_scan_ms = now + FS_SCAN_MS;
        fs_scan(sim, now);
    }
    if (sim->stopping && now >= sim->drain_until_ms) {
        fg_log_warn("drain_timeout", "in_flight=%d", sim->busy);
        event_base_loopbreak(sim->base);
        return;
    }
    fs_maybe_done(sim);
    fs_pump(sim);
}

static void fs_on_signal(evutil_socket_t sig, short what, void *arg)
{
    fs_sim *sim = arg;

    (void)what;
    if (sim->stopping) {
        fg_log_warn("stop_forced", "signal=%d in_flight=%d", (int)sig, sim->busy);
        sim->aborted = 1;
        event_base_loopbreak(sim->base);
        return;
    }
    fs_begin_stop(sim, "signal", fs_now(sim));
}

/* ------------------------------------------------------------------------
 * Summary */

static void fs_j_key(yajl_gen g, const char *k)
{
    yajl_gen_string(g, (const unsigned char *)k, strlen(k));
}

static void fs_j_str(yajl_gen g, const char *k, const char *v)
{
    fs_j_key(g, k);
    if (yajl_gen_string(g, (const unsigned char *)v, strlen(v)) != yajl_gen_status_ok)
        yajl_gen_string(g, (const unsigned char *)"?", 1);
}

static void fs_j_u64(yajl_gen g, const char *k, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRIu64, v);

    fs_j_key(g, k);
    yajl_gen_number(g, num, (size_t)n);
}

static void fs_j_i64(yajl_gen g, const char *k, int64_t v)
{
    fs_j_key(g, k);
    yajl_gen_integer(g, (long long)v);
}

/* A number with a fixed number of decimals (no binary noise in shares). */
static void fs_j_fixed(yajl_gen g, const char *k, double v, int decimals)
{
    char num[48];
    int n = snprintf(num, sizeof(num), "%.*f", decimals, isfinite(v) ? v : 0.0);

    if (k)
        fs_j_key(g, k);
    yajl_gen_number(g, num, (size_t)n);
}

/* Writes the JSON summary to path (through a temporary file and a rename,
 * so a reader never sees half of it). Returns 0, or -1 after logging. */
static int fs_write_json(fs_sim *sim, const char *path, int64_t elapsed_ms)
{
    char tmp[4096];
    const unsigned char *buf = NULL;
    size_t len = 0;
    yajl_gen g = NULL;
    FILE *fp = NULL;
    int rc = -1;
    uint64_t sums[6] = {0};
    uint32_t devices = 0;
    uint32_t grey = 0;
    uint32_t locked = 0;
    uint32_t ok = 0;
    size_t r;
    size_t i;
    unsigned s;
    const char *mode = sim->opts.max ? "max" : sim->opts.rate > 0 ? "rate" : "schedule";

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        fg_log_error("json_out_failed", "path_too_long=1");
        goto cleanup;
    }
    g = yajl_gen_alloc(NULL);
    if (!g)
        goto cleanup;
    yajl_gen_config(g, yajl_gen_beautify, 1);
    yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    yajl_gen_map_open(g);
    fs_j_str(g, "target", sim->opts.target);
    fs_j_str(g, "format", sim->opts.msgpack ? "msgpack" : "json");
    fs_j_i64(g, "batch", sim->opts.batch);
    fs_j_i64(g, "connections", sim->opts.connections);
    fs_j_str(g, "mode", mode);
    fs_j_fixed(g, "rate", sim->opts.rate, 3);
    fs_j_u64(g, "seed", sim->opts.seed);
    fs_j_fixed(g, "duration_s", (double)sim->duration_ms / 1000.0, 3);
    fs_j_fixed(g, "elapsed_s", (double)elapsed_ms / 1000.0, 3);
    fs_j_fixed(g, "report_interval_s", (double)sim->opts.report_ms / 1000.0, 3);
    fs_j_str(g, "stop_reason", sim->stop_reason ? sim->stop_reason : "none");
    fs_j_key(g, "reachable");
    yajl_gen_bool(g, sim->connects > 0 && (sim->sent_total == 0 || sim->responses > 0));

    for (r = 0; r < sim->nregions; r++) {
        const fs_region *reg = &sim->regions[r];

        sums[0] += reg->sent;
        sums[1] += reg->answered_ok;
        sums[2] += reg->answered_locked;
        sums[3] += reg->errors;
        sums[4] += reg->retried;
        devices += reg->devices;
        grey += reg->grey;
        locked += reg->locked;
        ok += reg->ok;
    }
    fs_j_key(g, "totals");
    yajl_gen_map_open(g);
    fs_j_u64(g, "devices", devices);
    fs_j_u64(g, "grey", grey);
    fs_j_u64(g, "checkins_sent", sums[0]);
    fs_j_u64(g, "answered_ok", sums[1]);
    fs_j_u64(g, "answered_locked", sums[2]);
    fs_j_u64(g, "stored", sums[1] + sums[2]);
    fs_j_u64(g, "ok", ok);
    fs_j_u64(g, "locked", locked);
    fs_j_fixed(g, "locked_share", devices ? (double)locked / (double)devices : 0.0, 4);
    fs_j_u64(g, "errors", sums[3]);
    fs_j_u64(g, "retried", sums[4]);
    fs_j_u64(g, "responses", sim->responses);
    fs_j_u64(g, "transport_errors", sim->transport_errors);
    fs_j_u64(g, "protocol_errors", sim->protocol_errors);
    fs_j_u64(g, "connect_errors", sim->connect_errors);
    fs_j_u64(g, "connects", sim->connects);
    fs_j_fixed(g, "rate_per_s",
               elapsed_ms > 0 ? (double)sums[0] * 1000.0 / (double)elapsed_ms : 0.0, 1);
    fs_j_key(g, "latency_ms");
    yajl_gen_map_open(g);
    fs_j_fixed(g, "p50", fs_hist_ms(&sim->lat_all, 0.50), 3);
    fs_j_fixed(g, "p90", fs_hist_ms(&sim->lat_all, 0.90), 3);
    fs_j_fixed(g, "p99", fs_hist_ms(&sim->lat_all, 0.99), 3);
    fs_j_fixed(g, "max", (double)sim->lat_all.max_us / 1000.0, 3);
    yajl_gen_map_close(g);
    fs_j_key(g, "status");
    yajl_gen_map_open(g);
    for (s = 0; s < sizeof(sim->status_counts) / sizeof(sim->status_counts[0]); s++) {
        char code[8];

        if (sim->status_counts[s] == 0)
            continue;
        snprintf(code, sizeof(code), "%u", s);
        fs_j_u64(g, code, sim->status_counts[s]);
    }
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);

    fs_j_key(g, "regions");
    yajl_gen_array_open(g);
    for (r = 0; r < sim->nregions; r++) {
        const fs_region *reg = &sim->regions[r];

        yajl_gen_map_open(g);
        fs_j_str(g, "region", reg->code);
        fs_j_str(g, "sku_grey", reg->sku_grey);
        fs_j_u64(g, "devices", reg->devices);
        fs_j_u64(g, "grey", reg->grey);
        fs_j_fixed(g, "grey_share", reg->grey_share, 4);
        fs_j_fixed(g, "interval_s", (double)reg->interval_ms / 1000.0, 3);
        fs_j_u64(g, "checkins_sent", reg->sent);
        fs_j_u64(g, "answered_ok", reg->answered_ok);
        fs_j_u64(g, "answered_locked", reg->answered_locked);
        fs_j_u64(g, "stored", reg->answered_ok + reg->answered_locked);
        fs_j_u64(g, "ok", reg->ok);
        fs_j_u64(g, "locked", reg->locked);
        fs_j_fixed(g, "locked_share", (double)reg->locked / (double)reg->devices, 4);
        fs_j_u64(g, "errors", reg->errors);
        fs_j_u64(g, "retried", reg->retried);
        fs_j_key(g, "lock");
        if (reg->lock_seen) {
            yajl_gen_map_open(g);
            fs_j_str(g, "region", reg->lock.region);
            fs_j_str(g, "scope", reg->lock.scope);
            fs_j_str(g, "reason", reg->lock.reason);
            fs_j_str(g, "message", reg->lock.message);
            fs_j_i64(g, "until", reg->lock.until);
            yajl_gen_map_close(g);
        } else {
            yajl_gen_null(g);
        }
        fs_j_key(g, "series");
        yajl_gen_array_open(g);
        for (i = 0; i < sim->nseries; i++) {
            const fs_point *pt = &reg->series[i];

            yajl_gen_map_open(g);
            fs_j_fixed(g, "t", (double)sim->series_t[i] / 1000.0, 3);
            fs_j_u64(g, "locked", pt->locked);
            fs_j_fixed(g, "locked_share", (double)pt->locked / (double)reg->devices, 4);
            fs_j_fixed(g, "grey_share", (double)pt->grey / (double)reg->devices, 4);
            fs_j_u64(g, "sent", pt->sent);
            yajl_gen_map_close(g);
        }
        yajl_gen_array_close(g);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
        goto cleanup;
    fp = fopen(tmp, "w");
    if (!fp) {
        fg_log_error("json_out_failed", "path=%s err=\"%s\"", tmp, strerror(errno));
        goto cleanup;
    }
    if (fwrite(buf, 1, len, fp) != len || fclose(fp) != 0) {
        fp = NULL;
        fg_log_error("json_out_failed", "path=%s err=\"%s\"", tmp, strerror(errno));
        unlink(tmp);
        goto cleanup;
    }
    fp = NULL;
    if (rename(tmp, path) != 0) {
        fg_log_error("json_out_failed", "path=%s err=\"%s\"", path, strerror(errno));
        unlink(tmp);
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (fp)
        fclose(fp);
    if (g)
        yajl_gen_free(g);
    return rc;
}

/* The human summary on stdout. */
static void fs_print_summary(fs_sim *sim, int64_t elapsed_ms)
{
    uint64_t stored = 0;
    uint64_t errors = 0;
    uint64_t retried = 0;
    size_t r;

    for (r = 0; r < sim->nregions; r++) {
        stored += sim->regions[r].answered_ok + sim->regions[r].answered_locked;
        errors += sim->regions[r].errors;
        retried += sim->regions[r].retried;
    }
    printf("fleetsim: run ended (%s) after %.1f s: %" PRIu64 " check-ins sent, %" PRIu64 " stored, %" PRIu64
           " errors, %" PRIu64 " retried, %.1f/s, p50 %.2f ms, p99 %.2f ms, %" PRIu64
           " connect errors\n",
           sim->stop_reason ? sim->stop_reason : "stopped", (double)elapsed_ms / 1000.0,
           sim->sent_total, stored, errors, retried,
           elapsed_ms > 0 ? (double)sim->sent_total * 1000.0 / (double)elapsed_ms : 0.0,
           fs_hist_ms(&sim->lat_all, 0.5), fs_hist_ms(&sim->lat_all, 0.99),
           sim->connect_errors);
    printf("%-6s %8s %8s %10s %10s %8s %7s %8s %8s  %s\n", "region", "devices", "grey",
           "sent", "stored", "locked", "share", "errors", "retried", "lock message");
    for (r = 0; r < sim->nregions; r++) {
        const fs_region *reg = &sim->regions[r];

        char q[FS_MESSAGE_MAX * 2];

        printf("%-6s %8" PRIu32 " %8" PRIu32 " %10" PRIu64 " %10" PRIu64 " %8" PRIu32
               " %7.3f %8" PRIu64 " %8" PRIu64 "  %s\n",
               reg->code, reg->devices, reg->grey, reg->sent,
               reg->answered_ok + reg->answered_locked, reg->locked,
               (double)reg->locked / (double)reg->devices, reg->errors, reg->retried,
               reg->lock_seen ? fg_log_quote(reg->lock.message, q, sizeof(q)) : "-");
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------------
 * Set-up and tear-down */

/* Allocates the connection pool (closed; the first tick opens them). */
static int fs_pool_init(fs_sim *sim)
{
    size_t items = sim->opts.batch > 0 ? (size_t)sim->opts.batch : 1;
    int i;

    sim->nconns = sim->opts.connections;
    sim->conns = calloc((size_t)sim->nconns, sizeof(*sim->conns));
    sim->idle = calloc((size_t)sim->nconns, sizeof(*sim->idle));
    if (!sim->conns || !sim->idle)
        return -1;
    for (i = 0; i < sim->nconns; i++) {
        fs_conn *conn = &sim->conns[i];

        conn->sim = sim;
        conn->fd = -1;
        conn->devs = calloc(items, sizeof(*conn->devs));
        conn->body_cap = items * FS_ITEM_MAX + 16;
        conn->body = malloc(conn->body_cap);
        if (!conn->devs || !conn->body)
            return -1;
    }
    return 0;
}

static void fs_sim_free(fs_sim *sim)
{
    size_t r;
    int i;

    if (!sim)
        return;
    for (i = 0; sim->conns && i < sim->nconns; i++) {
        fs_conn *conn = &sim->conns[i];

        if (conn->ev_read)
            event_free(conn->ev_read);
        if (conn->ev_write)
            event_free(conn->ev_write);
        if (conn->fd >= 0)
            close(conn->fd);
        free(conn->devs);
        free(conn->body);
        free(conn->resp);
    }
    free(sim->conns);
    free(sim->idle);
    for (r = 0; r < FS_MAX_REGIONS; r++)
        free(sim->regions[r].series);
    free(sim->series_t);
    free(sim->devs);
    free(sim->heap);
    if (sim->ev_tick)
        event_free(sim->ev_tick);
    if (sim->ev_sigint)
        event_free(sim->ev_sigint);
    if (sim->ev_sigterm)
        event_free(sim->ev_sigterm);
    if (sim->base)
        event_base_free(sim->base);
    free(sim);
}

int main(int argc, char **argv)
{
    fs_sim *sim = NULL;
    struct timeval tick = {0, FS_TICK_MS * 1000};
    int rc = FS_EXIT_FAIL;
    int help = 0;
    int64_t elapsed_ms;
    int unreachable;

    signal(SIGPIPE, SIG_IGN);
    sim = calloc(1, sizeof(*sim));
    if (!sim) {
        fprintf(stderr, "fleetsim: out of memory\n");
        goto cleanup;
    }
    sim->opts.target = FS_DEFAULT_TARGET;
    sim->opts.duration_ms = -1;
    sim->opts.devices_scale = 1.0;
    sim->opts.connections = FS_DEFAULT_CONNECTIONS;
    sim->opts.report_ms = 1000;
    sim->opts.timeout_ms = FS_DEFAULT_TIMEOUT_MS;
    sim->opts.seed = 1;
    sim->opts.id_prefix = "sim";
    sim->opts.log_level = FG_LOG_INFO;
    sim->sc.duration_ms = -1;
    rc = fs_parse_args(argc, argv, &sim->opts, &help);
    if (rc != FS_EXIT_OK || help) {
        if (help)
            fs_usage(stdout);
        goto cleanup;
    }
    rc = FS_EXIT_USAGE;
    fg_log_init("fleetsim", sim->opts.log_level);
    if (sim->opts.scenario) {
        if (fs_sc_load(&sim->sc, sim->opts.scenario) != 0)
            goto cleanup;
    } else {
        fs_sc_builtin(&sim->sc);
    }
    if (fs_sc_scale(&sim->sc, &sim->opts) != 0)
        goto cleanup;
    if (!sim->opts.seed_set && sim->sc.seed_set)
        sim->opts.seed = sim->sc.seed;
    sim->duration_ms = sim->opts.duration_ms > 0   ? sim->opts.duration_ms
                       : sim->sc.duration_ms > 0 ? sim->sc.duration_ms
                                                 : FS_DEFAULT_DURATION_MS;
    if (sim->duration_ms / sim->opts.report_ms + 2 > FS_MAX_SERIES) {
        fprintf(stderr, "fleetsim: --duration / --report-interval gives more than %d "
                        "points; use a longer interval\n", FS_MAX_SERIES);
        goto cleanup;
    }
    sim->series_cap = (size_t)(sim->duration_ms / sim->opts.report_ms) + 2;
    if ((uint64_t)sim->opts.connections * (uint64_t)(sim->opts.batch > 0 ? sim->opts.batch : 1) *
            FS_ITEM_MAX > (uint64_t)FS_MAX_POOL_BYTES) {
        fprintf(stderr, "fleetsim: --connections x --batch is too large (request "
                        "buffers over %ld MiB); lower one of them\n", FS_MAX_POOL_BYTES >> 20);
        goto cleanup;
    }
    if (fs_resolve(sim) != 0 || fs_fd_budget(sim->opts.connections) != 0)
        goto cleanup;

    rc = FS_EXIT_FAIL;
    sim->series_t = calloc(sim->series_cap, sizeof(*sim->series_t));
    if (!sim->series_t || fs_fleet_init(sim) != 0 || fs_pool_init(sim) != 0) {
        fg_log_error("out_of_memory", "devices=%" PRIu32, sim->ndevs);
        goto cleanup;
    }
    sim->base = event_base_new();
    if (!sim->base)
        goto cleanup;
    sim->ev_tick = event_new(sim->base, -1, EV_PERSIST, fs_on_tick, sim);
    sim->ev_sigint = evsignal_new(sim->base, SIGINT, fs_on_signal, sim);
    sim->ev_sigterm = evsignal_new(sim->base, SIGTERM, fs_on_signal, sim);
    if (!sim->ev_tick || !sim->ev_sigint || !sim->ev_sigterm ||
        event_add(sim->ev_tick, &tick) != 0 || event_add(sim->ev_sigint, NULL) != 0 ||
        event_add(sim->ev_sigterm, NULL) != 0) {
        fg_log_error("event_setup_failed", NULL);
        goto cleanup;
    }
    fg_log_info("start", "target=%s regions=%zu devices=%" PRIu32 " connections=%d "
                         "format=%s batch=%d mode=%s rate=%.1f duration_ms=%" PRId64
                         " seed=%" PRIu64,
                sim->opts.target, sim->nregions, sim->ndevs, sim->nconns,
                sim->opts.msgpack ? "msgpack" : "json", sim->opts.batch,
                sim->opts.max ? "max" : sim->opts.rate > 0 ? "rate" : "schedule",
                sim->opts.rate, sim->duration_ms, sim->opts.seed);
    sim->t0_us = fs_mono_us();
    sim->next_report_ms = sim->opts.report_ms;
    for (int i = 0; i < sim->nconns; i++)
        fs_conn_open(sim, &sim->conns[i], 0);
    event_base_dispatch(sim->base);

    elapsed_ms = sim->stopping ? sim->end_ms : fs_now(sim);
    if (!sim->stop_reason)
        sim->stop_reason = "stopped";
    /* The last point shows the state after the drain: it replaces a report
     * made at the very end, or is added. */
    if (sim->nseries > 0 && sim->series_t[sim->nseries - 1] >= elapsed_ms)
        sim->nseries--;
    if (sim->nseries >= sim->series_cap)
        sim->nseries = sim->series_cap - 1;
    fs_series_add(sim, elapsed_ms);
    fs_print_summary(sim, elapsed_ms);
    unreachable = sim->connects == 0 || (sim->sent_total > 0 && sim->responses == 0);
    rc = unreachable ? FS_EXIT_FAIL : FS_EXIT_OK;
    if (unreachable)
        fg_log_error("unreachable", "target=%s connect_errors=%" PRIu64, sim->opts.target,
                     sim->connect_errors);
    if (sim->opts.json_out && fs_write_json(sim, sim->opts.json_out, elapsed_ms) != 0)
        rc = FS_EXIT_FAIL;
cleanup:
    fs_sim_free(sim);
    return rc;
}
