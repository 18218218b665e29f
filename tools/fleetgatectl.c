/* SPDX-License-Identifier: Apache-2.0 */
/* fleetgatectl: the operators' command line for fleetgate-control. It lists
 * and watches regions, locks, unlocks and pins them, approves pending mass
 * actions and sets policies, over a small blocking HTTP/1.1 client, with
 * TLS (OpenSSL, the server's certificate and name verified) for https://
 * URLs (bearer token from the environment or a file, never from argv). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_AUTH 3
#define EXIT_NOTFOUND 4
#define EXIT_TLS 5

#define DEFAULT_URL "http://127.0.0.1:8081"
#define RESPONSE_MAX (16u * 1024 * 1024) /* whole response body cap */
#define TOKEN_MAX 4096
#define HOST_MAX 256
#define PATH_MAX_LEN 1024
#define REQ_HEAD_MAX (TOKEN_MAX + 2048)
#define MAX_PAIRS 64
#define TABLE_COLS 7

static volatile sig_atomic_t g_stop;

static void on_sigint(int sig)
{
    (void)sig;
    g_stop = 1;
}

static const char usage_text[] =
    "Usage: fleetgatectl [options] COMMAND [args]\n"
    "\n"
    "Commands:\n"
    "  regions [--sort share|devices|region] [--state STATE]\n"
    "                         every region: state, devices, grey share, bounds,\n"
    "                         lock countdown, policy mode (STATE: locked,\n"
    "                         unlocked, shadow, suppressed, expired)\n"
    "  region CODE            one region in detail\n"
    "  lock CODE --reason R [--ttl 1h] [--scope grey|all] [--message M]\n"
    "       [--dry-run]       lock a region (operator); --dry-run shows the\n"
    "                         devices it would affect and changes nothing\n"
    "  unlock CODE --reason R [--pin 1h] [--dry-run]\n"
    "                         unlock a region, optionally pinned against\n"
    "                         automatic relocking (operator)\n"
    "  unlock-all --reason R [--pin 1h] [--dry-run]\n"
    "                         unlock every locked region (admin); with\n"
    "                         --dry-run both list the regions and the\n"
    "                         devices their locks hold back, and change\n"
    "                         nothing\n"
    "  approve ID [--reason R]\n"
    "                         approve a pending mass action (admin, another\n"
    "                         admin than the requester)\n"
    "  policy CODE key=value... [--reason R]\n"
    "                         set a region's policy (admin), e.g. mode=never\n"
    "                         lock_at=0.8; numbers, true, false and null\n"
    "                         are sent as JSON values, the rest as strings\n"
    "  policy CODE --reset --reason R\n"
    "                         drop the policy set through the API (admin):\n"
    "                         every scorer uses its configured one for the\n"
    "                         region again ([policy.CODE] or [policy])\n"
    "  watch [--interval 2s] [--count N] [--sort ...] [--state ...]\n"
    "                         the regions table, live: redrawn on every\n"
    "                         score and lock event of GET /v1/stream, and\n"
    "                         every interval (countdowns), until Ctrl-C (or\n"
    "                         N frames); with --json one line per event\n"
    "                         ({\"id\",\"event\",\"data\"}); picks up where it\n"
    "                         left off when the stream is cut\n"
    "\n"
    "Options:\n"
    "  --url URL              the control API (default " DEFAULT_URL
    ",\n"
    "                         or FLEETGATE_URL); http:// or https://\n"
    "  --cacert FILE          PEM file of the CA (or the self-signed\n"
    "                         certificate) that https:// servers are checked\n"
    "                         against, or FLEETGATECTL_CACERT; default: the\n"
    "                         system's trusted CAs. The certificate must also\n"
    "                         name the URL's host\n"
    "  --allow-remote         allow plain http:// to a host that is not\n"
    "                         loopback (the token would cross the network\n"
    "                         unencrypted); https:// needs no such flag\n"
    "  --token-file FILE      bearer token file (default\n"
    "                         ~/.config/fleetgate/token); FLEETGATE_TOKEN in\n"
    "                         the environment wins. There is no --token:\n"
    "                         argv is visible to every user (ps) and lands in\n"
    "                         shell history\n"
    "  --timeout 30s          connect and I/O timeout per request\n"
    "  --json                 print the server's JSON as is\n"
    "  -h, --help             this text\n"
    "\n"
    "Durations: 90s, 30m, 1h, 7d, 500ms (a plain number is seconds).\n"
    "\n"
    "Exit codes:\n"
    "  0  done\n"
    "  1  the server refused or failed (400, 409, 5xx...) or the network did\n"
    "  2  usage error (bad command line, no token flag, remote host)\n"
    "  3  unauthorized or forbidden (401: no or bad token; 403: role too weak)\n"
    "  4  not found (404: unknown region, request, or a route this server\n"
    "     does not have yet)\n"
    "  5  TLS failed: the server's certificate is not trusted (see --cacert)\n"
    "     or does not name the host, or the server does not speak TLS\n";

/* ---- command line ---- */

enum cmd {
    CMD_NONE = 0,
    CMD_REGIONS,
    CMD_REGION,
    CMD_LOCK,
    CMD_UNLOCK,
    CMD_UNLOCK_ALL,
    CMD_APPROVE,
    CMD_POLICY,
    CMD_WATCH
};

typedef struct opts {
    enum cmd cmd;
    const char *url, *token_file, *sort, *state, *reason, *scope, *message;
    const char *cacert;
    int json, dry_run, allow_remote, reset;
    int64_t ttl_s, pin_s, interval_ms, timeout_ms;
    long count;
    const char *pos[MAX_PAIRS + 2]; /* positional args after the command */
    int npos;
} opts;

typedef struct url {
    int tls; /* https:// */
    char host[HOST_MAX];
    char port[8];
    char prefix[PATH_MAX_LEN]; /* path prefix without trailing '/' */
} url;

typedef struct resp {
    int status;
    char *body; /* NUL-terminated, owned */
    size_t len;
} resp;

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "fleetgatectl: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fprintf(stderr, "\n(try fleetgatectl --help)\n");
    return EXIT_USAGE;
}

/* Parses "90s", "30m", "1h", "7d", "500ms" or a plain number of seconds
 * into milliseconds. Returns 0, or -1 when malformed or over 365 days. */
static int parse_duration_ms(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    int64_t mult;
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        mult = 86400 * 1000;
    else
        return -1;
    if (v > (unsigned long long)(365LL * 86400 * 1000) / (unsigned long long)mult)
        return -1;
    *out = (int64_t)v * mult;
    return 0;
}

static int parse_seconds(const char *name, const char *s, int64_t *out)
{
    int64_t ms = 0;
    if (parse_duration_ms(s, &ms) != 0 || ms % 1000 != 0) {
        fprintf(stderr, "fleetgatectl: %s: not a duration in whole seconds "
                "(90s, 30m, 1h, 7d): %s\n", name, s);
        return -1;
    }
    *out = ms / 1000;
    return 0;
}

static enum cmd cmd_from(const char *s)
{
    static const struct {
        const char *name;
        enum cmd c;
    } cmds[] = {{"regions", CMD_REGIONS},       {"region", CMD_REGION},
                {"lock", CMD_LOCK},             {"unlock", CMD_UNLOCK},
                {"unlock-all", CMD_UNLOCK_ALL}, {"approve", CMD_APPROVE},
                {"policy", CMD_POLICY},         {"watch", CMD_WATCH}};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(s, cmds[i].name) == 0)
            return cmds[i].c;
    return CMD_NONE;
}

/* Which command may take an option (a bit per command). */
#define B(c) (1u << (c))
static const struct optdef {
    const char *name;
    int takes_value;
    unsigned cmds; /* 0: every command */
} optdefs[] = {
    {"--url", 1, 0},
    {"--cacert", 1, 0},
    {"--token-file", 1, 0},
    {"--timeout", 1, 0},
    {"--json", 0, 0},
    {"--allow-remote", 0, 0},
    {"--sort", 1, B(CMD_REGIONS) | B(CMD_WATCH)},
    {"--state", 1, B(CMD_REGIONS) | B(CMD_WATCH)},
    {"--reason", 1, B(CMD_LOCK) | B(CMD_UNLOCK) | B(CMD_UNLOCK_ALL) |
                        B(CMD_APPROVE) | B(CMD_POLICY)},
    {"--ttl", 1, B(CMD_LOCK)},
    {"--scope", 1, B(CMD_LOCK)},
    {"--message", 1, B(CMD_LOCK)},
    {"--dry-run", 0, B(CMD_LOCK) | B(CMD_UNLOCK) | B(CMD_UNLOCK_ALL)},
    {"--pin", 1, B(CMD_UNLOCK) | B(CMD_UNLOCK_ALL)},
    {"--reset", 0, B(CMD_POLICY)},
    {"--interval", 1, B(CMD_WATCH)},
    {"--count", 1, B(CMD_WATCH)},
};

static int set_opt(opts *o, const char *name, const char *val)
{
    if (strcmp(name, "--url") == 0)
        o->url = val;
    else if (strcmp(name, "--cacert") == 0)
        o->cacert = val;
    else if (strcmp(name, "--token-file") == 0)
        o->token_file = val;
    else if (strcmp(name, "--timeout") == 0) {
        if (parse_duration_ms(val, &o->timeout_ms) != 0 || o->timeout_ms < 100)
            return usage_error("--timeout: not a duration of 100ms or more: %s",
                               val);
    } else if (strcmp(name, "--json") == 0)
        o->json = 1;
    else if (strcmp(name, "--allow-remote") == 0)
        o->allow_remote = 1;
    else if (strcmp(name, "--sort") == 0) {
        if (strcmp(val, "share") != 0 && strcmp(val, "devices") != 0 &&
            strcmp(val, "region") != 0)
            return usage_error("--sort is one of share, devices, region: %s",
                               val);
        o->sort = val;
    } else if (strcmp(name, "--state") == 0) {
        if (strcmp(val, "locked") != 0 && strcmp(val, "unlocked") != 0 &&
            strcmp(val, "shadow") != 0 && strcmp(val, "suppressed") != 0 &&
            strcmp(val, "expired") != 0)
            return usage_error("--state is one of locked, unlocked, shadow, "
                               "suppressed, expired: %s", val);
        o->state = val;
    } else if (strcmp(name, "--reason") == 0)
        o->reason = val;
    else if (strcmp(name, "--ttl") == 0) {
        if (parse_seconds("--ttl", val, &o->ttl_s) != 0)
            return EXIT_USAGE;
    } else if (strcmp(name, "--scope") == 0) {
        if (strcmp(val, "grey") != 0 && strcmp(val, "all") != 0)
            return usage_error("--scope is grey or all: %s", val);
        o->scope = val;
    } else if (strcmp(name, "--message") == 0)
        o->message = val;
    else if (strcmp(name, "--dry-run") == 0)
        o->dry_run = 1;
    else if (strcmp(name, "--reset") == 0)
        o->reset = 1;
    else if (strcmp(name, "--pin") == 0) {
        if (parse_seconds("--pin", val, &o->pin_s) != 0)
            return EXIT_USAGE;
    } else if (strcmp(name, "--interval") == 0) {
        if (parse_duration_ms(val, &o->interval_ms) != 0 ||
            o->interval_ms < 100)
            return usage_error("--interval: not a duration of 100ms or more: "
                               "%s", val);
    } else if (strcmp(name, "--count") == 0) {
        char *end = NULL;
        errno = 0;
        long n = strtol(val, &end, 10);
        if (errno || end == val || *end || n < 1 || n > 1000000)
            return usage_error("--count: not a number of frames (1 or more): "
                               "%s", val);
        o->count = n;
    }
    return 0;
}

/* Fills o from argv. Returns 0, -1 after --help (printed), or EXIT_USAGE
 * (message printed). */
static int parse_args(int argc, char **argv, opts *o)
{
    const struct optdef *pending[sizeof(optdefs) / sizeof(optdefs[0])];
    size_t npending = 0;
    int only_pos = 0;
    memset(o, 0, sizeof(*o));
    o->ttl_s = o->pin_s = -1;
    o->interval_ms = 2000;
    o->timeout_ms = 30000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
            fputs(usage_text, stdout);
            return -1;
        }
        if (!only_pos && (strcmp(a, "--token") == 0 ||
                          strncmp(a, "--token=", 8) == 0 ||
                          strcmp(a, "-t") == 0)) {
            fprintf(stderr,
                    "fleetgatectl: refusing a token on the command line: argv "
                    "is visible to every user of this machine (ps, "
                    "/proc/PID/cmdline) and lands in shell history.\n"
                    "Set FLEETGATE_TOKEN in the environment or use "
                    "--token-file FILE (default ~/.config/fleetgate/token).\n");
            return EXIT_USAGE;
        }
        if (!only_pos && a[0] == '-' && a[1] != '\0') {
            char name[32];
            const char *eq = strchr(a, '=');
            size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
            const struct optdef *d = NULL;
            if (nlen < sizeof(name)) {
                memcpy(name, a, nlen);
                name[nlen] = '\0';
                for (size_t k = 0; k < sizeof(optdefs) / sizeof(optdefs[0]); k++)
                    if (strcmp(optdefs[k].name, name) == 0)
                        d = &optdefs[k];
            }
            if (!d)
                return usage_error("unknown option %s", a);
            const char *val = NULL;
            if (d->takes_value) {
                if (eq)
                    val = eq + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                else
                    return usage_error("%s needs a value", d->name);
            } else if (eq) {
                return usage_error("%s takes no value", d->name);
            }
            pending[npending] = d;
            if (npending + 1 < sizeof(pending) / sizeof(pending[0]))
                npending++;
            int rc = set_opt(o, d->name, val);
            if (rc != 0)
                return rc;
            continue;
        }
        if (o->cmd == CMD_NONE) {
            o->cmd = cmd_from(a);
            if (o->cmd == CMD_NONE)
                return usage_error("unknown command %s", a);
            continue;
        }
        if (o->npos >= MAX_PAIRS + 1)
            return usage_error("too many arguments%s", "");
        o->pos[o->npos++] = a;
    }
    if (o->cmd == CMD_NONE)
        return usage_error("no command given%s", "");
    for (size_t k = 0; k < npending; k++)
        if (pending[k]->cmds && !(pending[k]->cmds & B(o->cmd)))
            return usage_error("%s does not apply to this command",
                               pending[k]->name);
    return 0;
}

/* Region codes and request ids go into the path: letters, digits, '-',
 * '_' and '.' only (the server judges the rest). */
static int segment_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

/* ---- server address and token ---- */

static int parse_url(const char *s, url *u)
{
    memset(u, 0, sizeof(*u));
    const char *h;
    if (strncmp(s, "http://", 7) == 0) {
        h = s + 7;
    } else if (strncmp(s, "https://", 8) == 0) {
        h = s + 8;
        u->tls = 1;
    } else {
        fprintf(stderr, "fleetgatectl: --url must start with http:// or "
                "https://: %s\n", s);
        return -1;
    }
    const char *end = h + strcspn(h, "/?#");
    const char *hend, *port = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            goto bad;
        hend = rb + 1;
        if (hend < end && *hend == ':')
            port = hend + 1;
        else if (hend != end)
            goto bad;
        h++;
        hend = rb;
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        hend = colon ? colon : end;
        port = colon ? colon + 1 : NULL;
    }
    if (hend == h || (size_t)(hend - h) >= sizeof(u->host))
        goto bad;
    memcpy(u->host, h, (size_t)(hend - h));
    if (port) {
        size_t plen = (size_t)(end - port);
        if (plen == 0 || plen > 5 || strspn(port, "0123456789") < plen)
            goto bad;
        memcpy(u->port, port, plen);
        if (atoi(u->port) < 1 || atoi(u->port) > 65535)
            goto bad;
    } else {
        snprintf(u->port, sizeof(u->port), "%s", u->tls ? "443" : "80");
    }
    if (*end == '?' || *end == '#')
        goto bad;
    size_t plen = strlen(end);
    while (plen > 0 && end[plen - 1] == '/')
        plen--;
    if (plen >= sizeof(u->prefix))
        goto bad;
    memcpy(u->prefix, end, plen);
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)u->prefix[i] <= ' ' || u->prefix[i] == 0x7f)
            goto bad;
    return 0;
bad:
    fprintf(stderr, "fleetgatectl: not a URL like http://127.0.0.1:8081 or "
            "https://control.example:8081: %s\n", s);
    return -1;
}

static int addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return in6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

/* Reads the token: FLEETGATE_TOKEN, else the file. out is "" when there is
 * none (the server answers 401). Returns 0, or -1 (message printed). */
static int load_token(const char *file, char out[TOKEN_MAX + 1])
{
    char path[PATH_MAX_LEN];
    const char *env = getenv("FLEETGATE_TOKEN");
    int explicit_file = file != NULL;
    int rc = -1;
    FILE *f = NULL;
    out[0] = '\0';
    if (env && *env && !file) {
        if (strlen(env) > TOKEN_MAX) {
            fprintf(stderr, "fleetgatectl: FLEETGATE_TOKEN is over %d bytes\n",
                    TOKEN_MAX);
            return -1;
        }
        snprintf(out, TOKEN_MAX + 1, "%s", env);
    } else {
        if (!file) {
            const char *home = getenv("HOME");
            if (!home || !*home)
                return 0;
            snprintf(path, sizeof(path), "%s/.config/fleetgate/token", home);
            file = path;
        }
        f = fopen(file, "r");
        if (!f) {
            if (!explicit_file && errno == ENOENT)
                return 0; /* no token: the server says 401 */
            fprintf(stderr, "fleetgatectl: token file %s: %s\n", file,
                    strerror(errno));
            return -1;
        }
        struct stat st;
        if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
            fprintf(stderr, "fleetgatectl: warning: token file %s is readable "
                    "by other users (chmod 600 it)\n", file);
        size_t n = fread(out, 1, TOKEN_MAX, f);
        out[n] = '\0';
        if (n == TOKEN_MAX && fgetc(f) != EOF) {
            fprintf(stderr, "fleetgatectl: token file %s is over %d bytes\n",
                    file, TOKEN_MAX);
            goto out;
        }
    }
    /* Trim surrounding whitespace (a trailing newline above all). */
    size_t len = strlen(out), start = 0;
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' ||
                       out[len - 1] == ' ' || out[len - 1] == '\t'))
        len--;
    while (start < len && (out[start] == ' ' || out[start] == '\t'))
        start++;
    memmove(out, out + start, len - start);
    out[len - start] = '\0';
    for (const char *p = out; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p == 0x7f) {
            fprintf(stderr, "fleetgatectl: the token has a space or control "
                    "character\n");
            goto out;
        }
    rc = 0;
out:
    if (f)
        fclose(f);
    return rc;
}

/* ---- HTTP client ---- */

typedef struct client {
    url u;
    int allow_remote;
    int64_t timeout_ms;
    const char *token;
    SSL_CTX *tls;       /* https:// only */
    const char *cacert; /* where tls's CAs came from; NULL: the system's */
} client;

/* One connection: a socket, and its TLS session for https://. */
typedef struct conn {
    int fd;
    SSL *ssl;
    int tls_up; /* handshake done, no fatal error since: close_notify ok */
} conn;

typedef struct parse_ctx {
    resp *r;
    int done, too_big;
} parse_ctx;

static int on_body(http_parser *hp, const char *at, size_t len)
{
    parse_ctx *pc = hp->data;
    resp *r = pc->r;
    if (len > RESPONSE_MAX - r->len) {
        pc->too_big = 1;
        return -1;
    }
    char *nb = realloc(r->body, r->len + len + 1);
    if (!nb) {
        pc->too_big = 1;
        return -1;
    }
    r->body = nb;
    memcpy(r->body + r->len, at, len);
    r->len += len;
    r->body[r->len] = '\0';
    return 0;
}

static int on_complete(http_parser *hp)
{
    parse_ctx *pc = hp->data;
    pc->done = 1;
    /* Stop here: anything after the message is not ours. */
    http_parser_pause(hp, 1);
    return 0;
}

static int connect_timeout(const struct addrinfo *ai, int64_t timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int n;
        do {
            n = poll(&pfd, 1, (int)timeout_ms);
        } while (n < 0 && errno == EINTR && !g_stop);
        if (n == 0)
            errno = ETIMEDOUT;
        if (n <= 0)
            goto fail;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            goto fail;
        if (soerr) {
            errno = soerr;
            goto fail;
        }
    }
    if (fcntl(fd, F_SETFL, fl) < 0)
        goto fail;
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
fail: {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}
}

/* Resolves the server, refusing non-loopback addresses unless allowed.
 * Returns a connected socket, -1 on a network error, or -2 when the host is
 * remote and not allowed (messages printed). */
static int client_connect(const client *c)
{
    struct addrinfo hints, *res = NULL;
    int fd = -1, err = 0;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(c->u.host, c->u.port, &hints, &res);
    if (gai != 0) {
        fprintf(stderr, "fleetgatectl: %s: %s\n", c->u.host,
                gai_strerror(gai));
        return -1;
    }
    if (!c->allow_remote && !c->u.tls) {
        for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
            if (!addr_is_loopback(ai->ai_addr)) {
                fprintf(stderr, "fleetgatectl: %s is not a loopback address: "
                        "the token would cross the network in plain HTTP; "
                        "use an https:// URL, or pass --allow-remote if you "
                        "mean it\n", c->u.host);
                freeaddrinfo(res);
                return -2;
            }
    }
    for (const struct addrinfo *ai = res; ai && fd < 0 && !g_stop;
         ai = ai->ai_next) {
        fd = connect_timeout(ai, c->timeout_ms);
        if (fd < 0)
            err = errno;
    }
    freeaddrinfo(res);
    if (fd < 0 && !g_stop)
        fprintf(stderr, "fleetgatectl: cannot connect to %s:%s: %s\n",
                c->u.host, c->u.port, strerror(err));
    return fd;
}

/* ---- TLS ---- */

/* OpenSSL's reason for the oldest queued error (the cause), or NULL. The
 * queue is emptied. */
static const char *tls_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = NULL;
    if (e && ERR_SYSTEM_ERROR(e))
        r = strerror(ERR_GET_REASON(e));
    else if (e)
        r = ERR_reason_error_string(e);
    ERR_clear_error();
    return r;
}

/* The context of https:// calls: TLS 1.2 or later, the server's
 * certificate verified against cafile (PEM; NULL: the system's CAs). NULL
 * after a message. */
static SSL_CTX *tls_client_ctx(const char *cafile)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        fprintf(stderr, "fleetgatectl: cannot set up TLS\n");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* A close without close_notify ends the answer like a FIN does for
     * http://: answers carry a length, so a cut one is still noticed. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    int ok = cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL)
                    : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        const char *why = tls_reason();
        if (cafile)
            fprintf(stderr, "fleetgatectl: CA file %s (--cacert or "
                    "FLEETGATECTL_CACERT): %s\n", cafile,
                    why ? why : "no certificate in it");
        else
            fprintf(stderr, "fleetgatectl: cannot load the system's CA "
                    "certificates%s%s; pass --cacert FILE\n",
                    why ? ": " : "", why ? why : "");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Runs the TLS handshake on k->fd: SNI and the name check for a DNS host,
 * the address check for an IP literal. Returns 0, or EXIT_TLS after a
 * message saying what to do. */
static int tls_start(const client *c, conn *k)
{
    const char *host = c->u.host;
    unsigned char addr[sizeof(struct in6_addr)];
    int is_ip = inet_pton(AF_INET, host, addr) == 1 ||
                inet_pton(AF_INET6, host, addr) == 1;
    ERR_clear_error();
    k->ssl = SSL_new(c->tls);
    if (!k->ssl || SSL_set_fd(k->ssl, k->fd) != 1 ||
        (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), host)
               : SSL_set_tlsext_host_name(k->ssl, host) &&
                     SSL_set1_host(k->ssl, host)) != 1) {
        fprintf(stderr, "fleetgatectl: cannot set up TLS for %s\n", host);
        return EXIT_TLS;
    }
    errno = 0;
    int r = SSL_connect(k->ssl);
    if (r == 1) {
        k->tls_up = 1;
        return 0;
    }
    int e = SSL_get_error(k->ssl, r);
    int saved = errno;
    long v = SSL_get_verify_result(k->ssl);
    const char *why = tls_reason();
    if (g_stop)
        return EXIT_TLS;
    if (v == X509_V_ERR_HOSTNAME_MISMATCH ||
        v == X509_V_ERR_IP_ADDRESS_MISMATCH)
        fprintf(stderr, "fleetgatectl: TLS: the certificate of %s:%s does not "
                "name %s; use the host name it was issued for\n", host,
                c->u.port, host);
    else if (v != X509_V_OK)
        fprintf(stderr, "fleetgatectl: TLS: the certificate of %s:%s is not "
                "trusted (%s); pass --cacert FILE (or FLEETGATECTL_CACERT) "
                "with the CA that issued it%s\n", host, c->u.port,
                X509_verify_cert_error_string(v),
                c->cacert ? ", if not this one" : "");
    else if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
             (saved == EAGAIN || saved == EWOULDBLOCK))
        fprintf(stderr, "fleetgatectl: TLS handshake with %s:%s timed out\n",
                host, c->u.port);
    else
        fprintf(stderr, "fleetgatectl: TLS handshake with %s:%s failed: %s "
                "(is it an https:// server?)\n", host, c->u.port,
                why ? why : saved ? strerror(saved) : "connection closed");
    return EXIT_TLS;
}

/* Sends all of buf. Returns 0, or -1 with errno (EAGAIN: timed out). */
static int conn_write_all(conn *k, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n;
        if (k->ssl) {
            errno = 0;
            int w = SSL_write(k->ssl, buf, len > INT32_MAX ? INT32_MAX
                                                           : (int)len);
            if (w <= 0) {
                int e = SSL_get_error(k->ssl, w);
                ERR_clear_error();
                if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) &&
                    errno == EINTR && !g_stop)
                    continue;
                if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL)
                    k->tls_up = 0;
                if (errno == 0)
                    errno = EPIPE;
                return -1;
            }
            n = w;
        } else {
            n = send(k->fd, buf, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR && !g_stop)
                    continue;
                return -1;
            }
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* recv() through TLS when there is TLS: bytes, 0 at the end of the
 * answer's stream, -1 with errno (EAGAIN: timed out). */
static ssize_t conn_read(conn *k, char *buf, size_t cap)
{
    if (!k->ssl)
        return recv(k->fd, buf, cap, 0);
    errno = 0;
    int n = SSL_read(k->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(k->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL)
        k->tls_up = 0;
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
        return 0;
    if (errno == 0)
        errno = EPROTO;
    return -1;
}

static void conn_close(conn *k)
{
    if (k->ssl) {
        if (k->tls_up)
            (void)SSL_shutdown(k->ssl); /* close_notify, not waiting */
        ERR_clear_error();
        SSL_free(k->ssl);
    }
    if (k->fd >= 0)
        close(k->fd);
}

/* One request on a fresh connection (Connection: close). body may be NULL.
 * Fills r (r->body owned by the caller, free() it). Returns EXIT_OK when an
 * answer arrived (any status), EXIT_FAIL on a network or protocol error,
 * EXIT_USAGE for a refused remote host. */
static int http_call(const client *c, const char *method, const char *path,
                     const char *body, size_t body_len, resp *r)
{
    char head[REQ_HEAD_MAX];
    char buf[16384];
    int rc = EXIT_FAIL;
    conn k = {.fd = -1, .ssl = NULL};
    memset(r, 0, sizeof(*r));
    k.fd = client_connect(c);
    if (k.fd == -2)
        return EXIT_USAGE;
    if (k.fd < 0)
        return EXIT_FAIL;
    if (c->u.tls) {
        rc = tls_start(c, &k);
        if (rc != 0)
            goto out;
        rc = EXIT_FAIL;
    }
    int n = snprintf(head, sizeof(head),
                     "%s %s%s HTTP/1.1\r\n"
                     "Host: %s%s%s:%s\r\n"
                     "User-Agent: fleetgatectl\r\n"
                     "Accept: application/json\r\n"
                     "Connection: close\r\n"
                     "%s%s%s"
                     "%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, c->u.prefix, path,
                     strchr(c->u.host, ':') ? "[" : "", c->u.host,
                     strchr(c->u.host, ':') ? "]" : "", c->u.port,
                     c->token[0] ? "Authorization: Bearer " : "", c->token,
                     c->token[0] ? "\r\n" : "",
                     body ? "Content-Type: application/json\r\n" : "",
                     body ? body_len : (size_t)0);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        fprintf(stderr, "fleetgatectl: request too long\n");
        goto out;
    }
    if (conn_write_all(&k, head, (size_t)n) != 0 ||
        (body && conn_write_all(&k, body, body_len) != 0)) {
        if (!g_stop)
            fprintf(stderr, "fleetgatectl: sending to %s:%s: %s\n", c->u.host,
                    c->u.port, errno == EAGAIN || errno == EWOULDBLOCK
                                   ? "timed out"
                                   : strerror(errno));
        goto out;
    }
    http_parser hp;
    http_parser_settings st;
    parse_ctx pc = {.r = r};
    http_parser_init(&hp, HTTP_RESPONSE);
    http_parser_settings_init(&st);
    st.on_body = on_body;
    st.on_message_complete = on_complete;
    hp.data = &pc;
    while (!pc.done) {
        ssize_t got = conn_read(&k, buf, sizeof(buf));
        if (got < 0) {
            if (errno == EINTR && !g_stop)
                continue;
            if (!g_stop)
                fprintf(stderr, "fleetgatectl: reading from %s:%s: %s\n",
                        c->u.host, c->u.port,
                        errno == EAGAIN || errno == EWOULDBLOCK
                            ? "timed out"
                            : strerror(errno));
            goto out;
        }
        /* got == 0 tells the parser about EOF (ends a body without a
         * length, or reports a truncated one). */
        http_parser_execute(&hp, &st, buf, (size_t)got);
        if (pc.too_big) {
            fprintf(stderr, "fleetgatectl: response over %u bytes\n",
                    RESPONSE_MAX);
            goto out;
        }
        if (!pc.done && HTTP_PARSER_ERRNO(&hp) != HPE_OK) {
            fprintf(stderr, "fleetgatectl: bad HTTP response: %s\n",
                    http_errno_description(HTTP_PARSER_ERRNO(&hp)));
            goto out;
        }
        if (!pc.done && got == 0) {
            fprintf(stderr, "fleetgatectl: the server closed the connection "
                    "before answering\n");
            goto out;
        }
    }
    r->status = hp.status_code;
    if (!r->body) {
        r->body = calloc(1, 1);
        if (!r->body)
            goto out;
    }
    rc = EXIT_OK;
out:
    conn_close(&k);
    if (rc != EXIT_OK) {
        free(r->body);
        memset(r, 0, sizeof(*r));
    }
    return rc;
}

/* ---- JSON helpers ---- */

static yajl_val jget(yajl_val obj, const char *key)
{
    if (!obj || !YAJL_IS_OBJECT(obj))
        return NULL;
    for (size_t i = 0; i < obj->u.object.len; i++)
        if (strcmp(obj->u.object.keys[i], key) == 0)
            return obj->u.object.values[i];
    return NULL;
}

static const char *jstr(yajl_val obj, const char *key)
{
    yajl_val v = jget(obj, key);
    return v && YAJL_IS_STRING(v) ? YAJL_GET_STRING(v) : NULL;
}

static int jint(yajl_val obj, const char *key, int64_t *out)
{
    yajl_val v = jget(obj, key);
    if (!v || !YAJL_IS_INTEGER(v))
        return 0;
    *out = YAJL_GET_INTEGER(v);
    return 1;
}

static int jnum(yajl_val obj, const char *key, double *out)
{
    yajl_val v = jget(obj, key);
    if (!v || !YAJL_IS_DOUBLE(v))
        return 0;
    *out = YAJL_GET_DOUBLE(v);
    return 1;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "1h02m", "4m05s", "12s", "expired", or "-" when there is no deadline. */
static void fmt_countdown(char *out, size_t cap, yajl_val obj, const char *key,
                          int64_t now)
{
    int64_t until;
    if (!jint(obj, key, &until)) {
        snprintf(out, cap, "-");
        return;
    }
    int64_t s = (until - now + 999) / 1000;
    if (s <= 0)
        snprintf(out, cap, "expired");
    else if (s >= 86400)
        snprintf(out, cap, "%" PRId64 "d%02" PRId64 "h", s / 86400,
                 s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(out, cap, "%" PRId64 "h%02" PRId64 "m", s / 3600,
                 s % 3600 / 60);
    else if (s >= 60)
        snprintf(out, cap, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else
        snprintf(out, cap, "%" PRId64 "s", s);
}

static void fmt_time(char *out, size_t cap, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, cap, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%" PRId64, ms);
}

/* ---- tables ---- */

static const char *const table_head[TABLE_COLS] = {
    "REGION", "STATE", "DEVICES", "GREY", "LO-HI", "UNTIL", "MODE"};

static void region_cells(yajl_val r, int64_t now,
                         char cells[TABLE_COLS][48])
{
    const char *s;
    int64_t dev, grey;
    double share, lo, hi;
    s = jstr(r, "region");
    snprintf(cells[0], 48, "%s", s ? s : "?");
    s = jstr(r, "state");
    snprintf(cells[1], 48, "%s", s ? s : "-");
    if (jint(r, "devices", &dev))
        snprintf(cells[2], 48, "%" PRId64, dev);
    else
        snprintf(cells[2], 48, "-");
    if (jnum(r, "share", &share)) {
        if (jint(r, "grey", &grey))
            snprintf(cells[3], 48, "%.1f%% (%" PRId64 ")", share * 100.0, grey);
        else
            snprintf(cells[3], 48, "%.1f%%", share * 100.0);
    } else {
        snprintf(cells[3], 48, "-");
    }
    if (jnum(r, "lo", &lo) && jnum(r, "hi", &hi))
        snprintf(cells[4], 48, "%.1f-%.1f%%", lo * 100.0, hi * 100.0);
    else
        snprintf(cells[4], 48, "-");
    fmt_countdown(cells[5], 48, r, "until", now);
    s = jstr(r, "mode");
    snprintf(cells[6], 48, "%s", s ? s : "-");
}

/* Prints regions (an array of region objects) as an aligned table. */
static void print_table(FILE *out, yajl_val regions, int64_t now)
{
    size_t n = regions && YAJL_IS_ARRAY(regions) ? regions->u.array.len : 0;
    size_t w[TABLE_COLS];
    char cells[TABLE_COLS][48];
    for (int c = 0; c < TABLE_COLS; c++)
        w[c] = strlen(table_head[c]);
    for (size_t i = 0; i < n; i++) {
        region_cells(regions->u.array.values[i], now, cells);
        for (int c = 0; c < TABLE_COLS; c++)
            if (strlen(cells[c]) > w[c])
                w[c] = strlen(cells[c]);
    }
    for (int c = 0; c < TABLE_COLS; c++) {
        if (c + 1 < TABLE_COLS)
            fprintf(out, "%-*s  ", (int)w[c], table_head[c]);
        else
            fprintf(out, "%s\n", table_head[c]);
    }
    for (size_t i = 0; i < n; i++) {
        region_cells(regions->u.array.values[i], now, cells);
        for (int c = 0; c < TABLE_COLS; c++) {
            /* numbers right-aligned, words left */
            int right = c == 2 || c == 3 || c == 4;
            if (c + 1 == TABLE_COLS)
                fprintf(out, "%s\n", cells[c]);
            else
                fprintf(out, right ? "%*s  " : "%-*s  ", (int)w[c], cells[c]);
        }
    }
    if (n == 0)
        fprintf(out, "(no regions)\n");
}

/* Prints the scalar fields of an object as "key: value" lines; times
 * (since, until, pin_until, score_ts) also as UTC and countdowns. */
static void print_fields(FILE *out, yajl_val obj, const char *indent)
{
    if (!obj || !YAJL_IS_OBJECT(obj))
        return;
    int64_t now = wall_ms();
    for (size_t i = 0; i < obj->u.object.len; i++) {
        const char *k = obj->u.object.keys[i];
        yajl_val v = obj->u.object.values[i];
        char tbuf[64], cbuf[48];
        if (YAJL_IS_STRING(v))
            fprintf(out, "%s%-18s %s\n", indent, k, YAJL_GET_STRING(v));
        else if (YAJL_IS_INTEGER(v) &&
                 (strcmp(k, "since") == 0 || strcmp(k, "until") == 0 ||
                  strcmp(k, "pin_until") == 0 || strcmp(k, "score_ts") == 0 ||
                  strcmp(k, "now") == 0 || strcmp(k, "expires") == 0)) {
            fmt_time(tbuf, sizeof(tbuf), YAJL_GET_INTEGER(v));
            if (strcmp(k, "until") == 0 || strcmp(k, "pin_until") == 0 ||
                strcmp(k, "expires") == 0) {
                fmt_countdown(cbuf, sizeof(cbuf), obj, k, now);
                fprintf(out, "%s%-18s %s (%s)\n", indent, k, tbuf, cbuf);
            } else {
                fprintf(out, "%s%-18s %s\n", indent, k, tbuf);
            }
        } else if (YAJL_IS_NUMBER(v))
            fprintf(out, "%s%-18s %s\n", indent, k, YAJL_GET_NUMBER(v));
        else if (YAJL_IS_TRUE(v))
            fprintf(out, "%s%-18s yes\n", indent, k);
        else if (YAJL_IS_FALSE(v))
            fprintf(out, "%s%-18s no\n", indent, k);
        else if (YAJL_IS_NULL(v))
            fprintf(out, "%s%-18s -\n", indent, k);
        else if (YAJL_IS_ARRAY(v)) {
            size_t len = v->u.array.len;
            int scalars = 1;
            for (size_t j = 0; j < len; j++)
                if (!YAJL_IS_STRING(v->u.array.values[j]))
                    scalars = 0;
            if (scalars) {
                fprintf(out, "%s%-18s", indent, k);
                for (size_t j = 0; j < len; j++)
                    fprintf(out, " %s", YAJL_GET_STRING(v->u.array.values[j]));
                fprintf(out, len ? "\n" : " -\n");
            } else {
                fprintf(out, "%s%-18s %zu entries (--json shows them)\n",
                        indent, k, len);
            }
        } else if (YAJL_IS_OBJECT(v)) {
            char sub[16];
            fprintf(out, "%s%s:\n", indent, k);
            snprintf(sub, sizeof(sub), "%s  ", indent);
            print_fields(out, v, sub);
        }
    }
}

/* ---- answers ---- */

static yajl_val parse_json(const resp *r)
{
    char err[128];
    if (!r->body || r->len == 0 || strlen(r->body) != r->len)
        return NULL;
    return yajl_tree_parse(r->body, err, sizeof(err));
}

/* Maps a status to the exit code and explains a refusal on stderr. */
static int explain_status(const resp *r, const char *method, const char *path)
{
    if (r->status >= 200 && r->status < 300)
        return EXIT_OK;
    yajl_val j = parse_json(r);
    const char *code = jstr(j, "error"), *detail = jstr(j, "detail"),
               *field = jstr(j, "field"), *rid = jstr(j, "request_id");
    int rc = r->status == 401 || r->status == 403 ? EXIT_AUTH
             : r->status == 404                   ? EXIT_NOTFOUND
                                                  : EXIT_FAIL;
    fprintf(stderr, "fleetgatectl: %s %s: %d %s", method, path, r->status,
            code ? code : "error");
    if (field)
        fprintf(stderr, " (%s)", field);
    if (detail)
        fprintf(stderr, ": %s", detail);
    if (rid)
        fprintf(stderr, " [%s]", rid);
    fprintf(stderr, "\n");
    if (r->status == 401)
        fprintf(stderr, "fleetgatectl: no valid token: set FLEETGATE_TOKEN or "
                "write it to ~/.config/fleetgate/token (or --token-file)\n");
    else if (r->status == 404 && code && strcmp(code, "not_found") == 0)
        fprintf(stderr, "fleetgatectl: this fleetgate-control has no route "
                "%s %s (an older version?)\n", method, path);
    yajl_tree_free(j);
    return rc;
}

/* The human form of a dry-run unlock or unlock-all: one line with what
 * would happen, then the regions it would unlock with their state now and
 * the devices their locks hold back (the "regions" of the answer). */
static void print_unlock_dry_run(yajl_val j)
{
    static const char *const head[4] = {"REGION", "STATE", "SCOPE", "DEVICES"};
    yajl_val regions = jget(j, "regions"), rec = jget(j, "would_write");
    size_t n = regions && YAJL_IS_ARRAY(regions) ? regions->u.array.len : 0;
    size_t w[4];
    char cells[4][48], cd[48];
    int64_t v;
    if (rec && YAJL_IS_ARRAY(rec))
        rec = rec->u.array.len ? rec->u.array.values[0] : NULL;
    if (n == 0) {
        printf("dry run: no region is locked, nothing to unlock\n");
        return;
    }
    if (n == 1)
        printf("dry run: would unlock %s",
               jstr(regions->u.array.values[0], "region")
                   ? jstr(regions->u.array.values[0], "region")
                   : "?");
    else
        printf("dry run: would unlock %zu regions", n);
    if (jint(j, "estimated_devices", &v))
        printf(", %" PRId64 " device%s held back now", v, v == 1 ? "" : "s");
    else
        printf(", devices held back unknown (no score yet)");
    if (jint(rec, "pin_until", &v)) {
        fmt_countdown(cd, sizeof(cd), rec, "pin_until",
                      jint(rec, "since", &v) ? v : wall_ms());
        printf(", pinned for %s", cd);
    }
    printf("; nothing changed\n");
    for (int c = 0; c < 4; c++)
        w[c] = strlen(head[c]);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            printf("%-*s  %-*s  %-*s  %s\n", (int)w[0], head[0], (int)w[1],
                   head[1], (int)w[2], head[2], head[3]);
        for (size_t i = 0; i < n; i++) {
            yajl_val r = regions->u.array.values[i];
            const char *s;
            s = jstr(r, "region");
            snprintf(cells[0], 48, "%s", s ? s : "?");
            s = jstr(r, "state");
            snprintf(cells[1], 48, "%s", s ? s : "-");
            s = jstr(r, "scope");
            snprintf(cells[2], 48, "%s", s ? s : "-");
            if (jint(r, "estimated_devices", &v))
                snprintf(cells[3], 48, "%" PRId64, v);
            else
                snprintf(cells[3], 48, "unknown");
            if (pass == 0) {
                for (int c = 0; c < 4; c++)
                    if (strlen(cells[c]) > w[c])
                        w[c] = strlen(cells[c]);
                continue;
            }
            /* devices right-aligned under its header, words left */
            printf("%-*s  %-*s  %-*s  %*s\n", (int)w[0], cells[0], (int)w[1],
                   cells[1], (int)w[2], cells[2], (int)w[3], cells[3]);
        }
    }
}

/* Prints the human form of a successful answer. */
static void print_answer(enum cmd cmd, yajl_val j)
{
    const char *region = jstr(j, "region");
    int dry = YAJL_IS_TRUE(jget(j, "dry_run"));
    yajl_val rec = jget(j, dry ? "would_write" : "record");
    yajl_val audited = jget(j, "audited");
    char cd[48];
    int64_t est;
    switch (cmd) {
    case CMD_LOCK:
        if (dry) {
            fmt_countdown(cd, sizeof(cd), rec, "until",
                          jint(rec, "since", &est) ? est : wall_ms());
            printf("dry run: would lock %s (scope %s) for %s",
                   region ? region : "?",
                   jstr(j, "scope") ? jstr(j, "scope") : "?", cd);
        } else {
            fmt_countdown(cd, sizeof(cd), rec, "until", wall_ms());
            printf("locked %s (scope %s) for %s", region ? region : "?",
                   jstr(j, "scope") ? jstr(j, "scope") : "?", cd);
        }
        if (jint(j, "estimated_devices", &est))
            printf(", %" PRId64 " devices %s", est,
                   dry ? "would be affected" : "affected");
        printf(dry ? "; nothing changed\n" : "\n");
        break;
    case CMD_UNLOCK:
        if (dry) {
            print_unlock_dry_run(j);
            break;
        }
        printf("unlocked %s", region ? region : "?");
        if (jint(rec, "pin_until", &est)) {
            fmt_countdown(cd, sizeof(cd), rec, "pin_until", wall_ms());
            printf(", pinned for %s", cd);
        }
        printf("\n");
        break;
    case CMD_UNLOCK_ALL: {
        if (dry) {
            print_unlock_dry_run(j);
            break;
        }
        yajl_val un = jget(j, "unlocked"), fl = jget(j, "failed");
        size_t nu = un && YAJL_IS_ARRAY(un) ? un->u.array.len : 0;
        size_t nf = fl && YAJL_IS_ARRAY(fl) ? fl->u.array.len : 0;
        printf("unlocked %zu region%s", nu, nu == 1 ? "" : "s");
        for (size_t i = 0; i < nu; i++)
            if (YAJL_IS_STRING(un->u.array.values[i]))
                printf("%s%s", i ? " " : ": ",
                       YAJL_GET_STRING(un->u.array.values[i]));
        printf("\n");
        if (nf) {
            printf("not unlocked:");
            for (size_t i = 0; i < nf; i++)
                if (YAJL_IS_STRING(fl->u.array.values[i]))
                    printf(" %s", YAJL_GET_STRING(fl->u.array.values[i]));
            printf("\n");
        }
        break;
    }
    case CMD_POLICY: {
        const char *action = jstr(j, "action");
        if (!action || strcmp(action, "policy_reset") != 0) {
            print_fields(stdout, j, "");
            return;
        }
        printf("reset the policy of %s: scorers use their configured "
               "policy again\n", region ? region : "?");
        break;
    }
    default:
        print_fields(stdout, j, "");
        return;
    }
    if (jstr(j, "request_id"))
        printf("request %s, audited %s\n", jstr(j, "request_id"),
               YAJL_IS_TRUE(audited) ? "yes" : "NO (see the service log)");
}

/* ---- request bodies ---- */

static void gen_str(yajl_gen g, const char *k, const char *v)
{
    yajl_gen_string(g, (const unsigned char *)k, strlen(k));
    yajl_gen_string(g, (const unsigned char *)v, strlen(v));
}

static void gen_int(yajl_gen g, const char *k, int64_t v)
{
    yajl_gen_string(g, (const unsigned char *)k, strlen(k));
    yajl_gen_integer(g, (long long)v);
}

/* key=value into g: JSON numbers, true/false/null as such, else a string.
 * Returns 0, or -1 (message printed). */
static int gen_pair(yajl_gen g, const char *pair)
{
    const char *eq = strchr(pair, '=');
    if (!eq || eq == pair) {
        fprintf(stderr, "fleetgatectl: policy: expected key=value: %s\n", pair);
        return -1;
    }
    for (const char *p = pair; p < eq; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_')) {
            fprintf(stderr, "fleetgatectl: policy: a key is lower case "
                    "letters, digits and _: %s\n", pair);
            return -1;
        }
    const char *v = eq + 1;
    yajl_gen_string(g, (const unsigned char *)pair, (size_t)(eq - pair));
    char *end = NULL;
    if (*v) {
        errno = 0;
        double d = strtod(v, &end);
        (void)d;
        if (!errno && end && *end == '\0' && strspn(v, "+-0123456789.eE") ==
                                                  strlen(v)) {
            yajl_gen_number(g, v, strlen(v));
            return 0;
        }
    }
    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
        yajl_gen_bool(g, v[0] == 't');
    else if (strcmp(v, "null") == 0)
        yajl_gen_null(g);
    else
        yajl_gen_string(g, (const unsigned char *)v, strlen(v));
    return 0;
}

/* ---- commands ---- */

/* Runs one call and handles the answer: --json prints the body as is,
 * else the human form (tables for lists). Returns the exit code. */
static int run_call(const client *c, const opts *o, const char *method,
                    const char *path, const char *body, size_t body_len)
{
    resp r;
    int rc = http_call(c, method, path, body, body_len, &r);
    if (rc != EXIT_OK)
        return rc;
    rc = explain_status(&r, method, path);
    if (o->json) {
        fwrite(r.body, 1, r.len, stdout);
        if (r.len == 0 || r.body[r.len - 1] != '\n')
            fputc('\n', stdout);
    } else if (rc == EXIT_OK) {
        yajl_val j = parse_json(&r);
        if (!j) {
            fprintf(stderr, "fleetgatectl: the answer is not JSON\n");
            rc = EXIT_FAIL;
        } else if (o->cmd == CMD_REGIONS) {
            int64_t now;
            if (!jint(j, "now", &now))
                now = wall_ms();
            print_table(stdout, jget(j, "regions"), now);
        } else {
            print_answer(o->cmd, j);
        }
        yajl_tree_free(j);
    }
    free(r.body);
    return rc;
}

static void list_path(const opts *o, char *out, size_t cap)
{
    snprintf(out, cap, "/v1/regions%s%s%s%s%s", o->sort || o->state ? "?" : "",
             o->sort ? "sort=" : "", o->sort ? o->sort : "",
             o->sort && o->state ? "&" : "", "");
    if (o->state) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "state=%s", o->state);
    }
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    /* SIGINT interrupts it (no SA_RESTART): we stop at once. */
    while (!g_stop && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ---- watch: the regions table, live over GET /v1/stream ---- */

#define WATCH_TICK_MS 250   /* a quiet stream is looked at this often */
#define WATCH_RETRY_MS 2000 /* before reconnecting */
#define WATCH_AGAIN (-1)    /* watch_session: reconnect */

/* A region of the live table: its object, and the tree to free with it
 * (NULL when it belongs to the snapshot's tree). */
typedef struct watch_row {
    yajl_val v;
    yajl_val own;
} watch_row;

typedef struct watch {
    const client *c;
    const opts *o;
    yajl_val snap; /* the last snapshot's tree */
    watch_row *rows;
    size_t nrows, cap;
    int have_table; /* a snapshot arrived (on this or an earlier connection) */
    uint64_t events;
    long frames;
    int64_t drawn_at;
    int ever_ok; /* some connection was answered 200 */
    int stop;    /* --count reached, or a failure that ends watch */
    int rc;
    /* the answer being read */
    int status;
    int ended;
    resp err; /* the body of an answer other than 200 */
    size_t err_cap;
    /* server-sent events (text/event-stream) */
    char *line, *data;
    size_t line_len, line_cap, data_len, data_cap;
    char name[32], id[24], last_id[24];
    int too_big;
} watch;

static const char *g_watch_sort; /* --sort for watch_cmp (qsort has no arg) */

static void watch_clear(watch *w)
{
    for (size_t i = 0; i < w->nrows; i++)
        yajl_tree_free(w->rows[i].own);
    w->nrows = 0;
    yajl_tree_free(w->snap);
    w->snap = NULL;
}

/* Sets the row of v's region to v (own: the tree to free with it). */
static void watch_put(watch *w, yajl_val v, yajl_val own)
{
    const char *region = jstr(v, "region");
    if (!region) {
        yajl_tree_free(own);
        return;
    }
    for (size_t i = 0; i < w->nrows; i++) {
        const char *r = jstr(w->rows[i].v, "region");
        if (r && strcmp(r, region) == 0) {
            yajl_tree_free(w->rows[i].own);
            w->rows[i].v = v;
            w->rows[i].own = own;
            return;
        }
    }
    if (w->nrows == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        watch_row *nr = realloc(w->rows, cap * sizeof(*nr));
        if (!nr) {
            yajl_tree_free(own);
            return;
        }
        w->rows = nr;
        w->cap = cap;
    }
    w->rows[w->nrows].v = v;
    w->rows[w->nrows++].own = own;
}

/* The order GET /v1/regions?sort= gives: share or devices highest first
 * (unknown last), then the code. */
static int watch_cmp(const void *a, const void *b)
{
    yajl_val x = *(const yajl_val *)a, y = *(const yajl_val *)b;
    const char *key = g_watch_sort && strcmp(g_watch_sort, "region") != 0
                          ? g_watch_sort
                          : NULL;
    if (key) {
        double dx = -1.0, dy = -1.0;
        (void)jnum(x, key, &dx);
        (void)jnum(y, key, &dy);
        if (dx != dy)
            return dx < dy ? 1 : -1;
    }
    const char *rx = jstr(x, "region"), *ry = jstr(y, "region");
    return strcmp(rx ? rx : "", ry ? ry : "");
}

/* Clears the screen and prints the table (--state and --sort applied). */
static void watch_draw(watch *w)
{
    char tbuf[64];
    const opts *o = w->o;
    yajl_val *vis = malloc((w->nrows ? w->nrows : 1) * sizeof(*vis));
    size_t n = 0;
    if (!vis)
        return;
    for (size_t i = 0; i < w->nrows; i++) {
        const char *st = jstr(w->rows[i].v, "state");
        if (!o->state || (st && strcmp(st, o->state) == 0))
            vis[n++] = w->rows[i].v;
    }
    g_watch_sort = o->sort;
    qsort(vis, n, sizeof(*vis), watch_cmp);
    struct yajl_val_s table;
    memset(&table, 0, sizeof(table));
    table.type = yajl_t_array;
    table.u.array.values = vis;
    table.u.array.len = n;
    int64_t now = wall_ms();
    fmt_time(tbuf, sizeof(tbuf), now);
    fputs("\033[H\033[2J", stdout);
    printf("fleetgate regions  %s:%s  %s  live, %" PRIu64
           " events, Ctrl-C stops\n\n", w->c->u.host, w->c->u.port, tbuf,
           w->events);
    print_table(stdout, &table, now);
    fflush(stdout);
    free(vis);
    w->drawn_at = now;
    if (w->o->count && ++w->frames >= w->o->count)
        w->stop = 1;
}

/* One complete event: --json prints it as a line, else the table takes
 * it in and is redrawn. */
static void watch_event(watch *w)
{
    char err[128];
    const char *name = w->name[0] ? w->name : "message";
    if (w->id[0])
        snprintf(w->last_id, sizeof(w->last_id), "%s", w->id);
    if (!w->data) {
        w->name[0] = w->id[0] = '\0';
        return;
    }
    w->data[w->data_len] = '\0';
    yajl_val j = yajl_tree_parse(w->data, err, sizeof(err));
    if (!j) {
        fprintf(stderr, "fleetgatectl: skipping a %s event that is not "
                "JSON\n", name);
    } else if (w->o->json) {
        /* The server's data is one line of JSON already. */
        printf("{\"id\":%s,\"event\":\"%s\",\"data\":%s}\n",
               w->id[0] ? w->id : "null", name, w->data);
        fflush(stdout);
        yajl_tree_free(j);
        w->events++;
        if (w->o->count && ++w->frames >= w->o->count)
            w->stop = 1;
    } else if (strcmp(name, "snapshot") == 0) {
        watch_clear(w);
        w->snap = j;
        yajl_val regions = jget(j, "regions");
        for (size_t i = 0;
             regions && YAJL_IS_ARRAY(regions) && i < regions->u.array.len; i++)
            watch_put(w, regions->u.array.values[i], NULL);
        w->have_table = 1;
        w->events++;
        watch_draw(w);
    } else if (strcmp(name, "score") == 0 || strcmp(name, "lock") == 0) {
        watch_put(w, j, j);
        w->events++;
        watch_draw(w);
    } else {
        yajl_tree_free(j); /* an event this version does not know */
    }
    w->data_len = 0;
    w->name[0] = w->id[0] = '\0';
    free(w->data);
    w->data = NULL;
    w->data_cap = 0;
}

/* Appends n bytes to *buf (growing, NUL room kept) under RESPONSE_MAX. */
static int watch_append(watch *w, char **buf, size_t *len, size_t *cap,
                        const char *p, size_t n)
{
    if (n > RESPONSE_MAX - *len) {
        w->too_big = 1;
        return -1;
    }
    if (*cap - *len <= n) {
        size_t ncap = *cap ? *cap : 256;
        while (ncap - *len <= n)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (!nb) {
            w->too_big = 1;
            return -1;
        }
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

/* One line of the event stream (without its line break). */
static void watch_line(watch *w, char *ln, size_t n)
{
    if (n > 0 && ln[n - 1] == '\r')
        n--;
    if (n == 0) {
        watch_event(w);
        return;
    }
    if (ln[0] == ':')
        return; /* a comment: the server's ping */
    char *colon = memchr(ln, ':', n);
    size_t fn = colon ? (size_t)(colon - ln) : n;
    const char *val = colon ? colon + 1 : ln + n;
    size_t vn = colon ? n - fn - 1 : 0;
    if (vn > 0 && *val == ' ') {
        val++;
        vn--;
    }
    if (fn == 5 && memcmp(ln, "event", 5) == 0) {
        /* A plain word, so that --json can print it as is. */
        int word = vn > 0 && vn < sizeof(w->name);
        for (size_t i = 0; i < vn && word; i++)
            word = (val[i] >= 'a' && val[i] <= 'z') ||
                   (val[i] >= 'A' && val[i] <= 'Z') ||
                   (val[i] >= '0' && val[i] <= '9') || val[i] == '_' ||
                   val[i] == '-';
        if (word)
            snprintf(w->name, sizeof(w->name), "%.*s", (int)vn, val);
    } else if (fn == 4 && memcmp(ln, "data", 4) == 0) {
        /* Lines of one event's data join with line breaks. */
        (void)watch_append(w, &w->data, &w->data_len, &w->data_cap, "\n",
                           w->data ? 1 : 0);
        (void)watch_append(w, &w->data, &w->data_len, &w->data_cap, val, vn);
    } else if (fn == 2 && memcmp(ln, "id", 2) == 0) {
        int digits = vn > 0 && vn < sizeof(w->id);
        for (size_t i = 0; i < vn && digits; i++)
            digits = val[i] >= '0' && val[i] <= '9';
        if (digits)
            snprintf(w->id, sizeof(w->id), "%.*s", (int)vn, val);
    }
}

static int watch_on_headers(http_parser *hp)
{
    watch *w = hp->data;
    w->status = hp->status_code;
    if (w->status == 200)
        w->ever_ok = 1;
    return 0;
}

static int watch_on_body(http_parser *hp, const char *at, size_t len)
{
    watch *w = hp->data;
    if (w->status != 200) {
        if (watch_append(w, &w->err.body, &w->err.len, &w->err_cap, at,
                         len) != 0)
            return -1;
        w->err.body[w->err.len] = '\0';
        return 0;
    }
    while (len > 0 && !w->stop && !w->too_big) {
        const char *nl = memchr(at, '\n', len);
        size_t n = nl ? (size_t)(nl - at) : len;
        if (watch_append(w, &w->line, &w->line_len, &w->line_cap, at, n) != 0)
            return -1;
        if (!nl)
            break;
        watch_line(w, w->line, w->line_len);
        w->line_len = 0;
        at += n + 1;
        len -= n + 1;
    }
    return w->stop || w->too_big ? -1 : 0;
}

static int watch_on_complete(http_parser *hp)
{
    watch *w = hp->data;
    w->ended = 1;
    http_parser_pause(hp, 1);
    return 0;
}

/* One connection to GET /v1/stream, read until it ends, --count is
 * reached, or Ctrl-C. Returns an exit code to stop with, or WATCH_AGAIN to
 * reconnect. */
static int watch_session(watch *w)
{
    const client *c = w->c;
    char head[REQ_HEAD_MAX], buf[65536];
    int rc = WATCH_AGAIN;
    conn k = {.fd = -1, .ssl = NULL};
    free(w->err.body);
    memset(&w->err, 0, sizeof(w->err));
    w->err_cap = 0;
    free(w->line);
    w->line = NULL;
    w->line_len = w->line_cap = 0;
    free(w->data);
    w->data = NULL;
    w->data_len = w->data_cap = 0;
    w->name[0] = w->id[0] = '\0';
    w->status = 0;
    w->ended = 0;
    k.fd = client_connect(c);
    if (k.fd == -2)
        return EXIT_USAGE;
    if (k.fd < 0)
        return w->ever_ok ? WATCH_AGAIN : EXIT_FAIL;
    if (c->u.tls) {
        rc = tls_start(c, &k);
        if (rc != 0)
            goto out; /* EXIT_TLS: retrying will not help */
        rc = WATCH_AGAIN;
    }
    int n = snprintf(head, sizeof(head),
                     "GET %s/v1/stream HTTP/1.1\r\n"
                     "Host: %s%s%s:%s\r\n"
                     "User-Agent: fleetgatectl\r\n"
                     "Accept: text/event-stream\r\n"
                     "%s%s%s"
                     "%s%s%s\r\n",
                     c->u.prefix, strchr(c->u.host, ':') ? "[" : "",
                     c->u.host, strchr(c->u.host, ':') ? "]" : "", c->u.port,
                     c->token[0] ? "Authorization: Bearer " : "", c->token,
                     c->token[0] ? "\r\n" : "",
                     w->last_id[0] ? "Last-Event-ID: " : "", w->last_id,
                     w->last_id[0] ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(head)) {
        fprintf(stderr, "fleetgatectl: request too long\n");
        rc = EXIT_FAIL;
        goto out;
    }
    if (conn_write_all(&k, head, (size_t)n) != 0) {
        if (!g_stop)
            fprintf(stderr, "fleetgatectl: sending to %s:%s: %s\n", c->u.host,
                    c->u.port, strerror(errno));
        goto out;
    }
    /* Short reads: a quiet stream still gets its countdowns redrawn. */
    struct timeval tick = {0, WATCH_TICK_MS * 1000};
    setsockopt(k.fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
    http_parser hp;
    http_parser_settings st;
    http_parser_init(&hp, HTTP_RESPONSE);
    http_parser_settings_init(&st);
    st.on_headers_complete = watch_on_headers;
    st.on_body = watch_on_body;
    st.on_message_complete = watch_on_complete;
    hp.data = w;
    int64_t heard = wall_ms();
    while (!g_stop && !w->stop && !w->ended) {
        ssize_t got = conn_read(&k, buf, sizeof(buf));
        int64_t now = wall_ms();
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (w->status == 200 && w->have_table && !w->o->json &&
                now - w->drawn_at >= w->o->interval_ms)
                watch_draw(w);
            if (now - heard > c->timeout_ms) {
                /* The server pings every 15 s: this connection is dead. */
                fprintf(stderr, "fleetgatectl: nothing from %s:%s for %" PRId64
                        " ms\n", c->u.host, c->u.port, now - heard);
                break;
            }
            continue;
        }
        if (got < 0) {
            fprintf(stderr, "fleetgatectl: reading from %s:%s: %s\n",
                    c->u.host, c->u.port, strerror(errno));
            break;
        }
        heard = now;
        http_parser_execute(&hp, &st, buf, (size_t)got);
        if (w->too_big) {
            fprintf(stderr, "fleetgatectl: an event over %u bytes\n",
                    RESPONSE_MAX);
            rc = EXIT_FAIL;
            goto out;
        }
        if (!w->stop && !w->ended && HTTP_PARSER_ERRNO(&hp) != HPE_OK) {
            fprintf(stderr, "fleetgatectl: bad HTTP response: %s\n",
                    http_errno_description(HTTP_PARSER_ERRNO(&hp)));
            break;
        }
        if (got == 0)
            break;
    }
    if (g_stop || w->stop) {
        rc = w->rc;
    } else if (w->status && w->status != 200 && w->ended) {
        w->err.status = w->status;
        if (!w->err.body)
            w->err.body = calloc(1, 1);
        int erc = explain_status(&w->err, "GET", "/v1/stream");
        /* Busy or restarting: try again; anything else will not change. */
        rc = w->status >= 500 ? WATCH_AGAIN : erc;
    } else if (!w->ever_ok) {
        if (!w->status)
            fprintf(stderr, "fleetgatectl: the server closed the connection "
                    "before answering\n");
        rc = EXIT_FAIL;
    }
out:
    conn_close(&k);
    return rc;
}

/* watch: the table from the stream's snapshot, redrawn on every event and
 * every --interval (countdowns move); --json prints each event as a line.
 * A stream that ends (the service restarts) is picked up again where it
 * left off (Last-Event-ID). */
static int cmd_watch(const client *c, const opts *o)
{
    watch w;
    int rc;
    memset(&w, 0, sizeof(w));
    w.c = c;
    w.o = o;
    for (;;) {
        rc = watch_session(&w);
        if (rc != WATCH_AGAIN || g_stop)
            break;
        if (!o->json)
            fprintf(stderr, "fleetgatectl: the stream ended; reconnecting\n");
        sleep_ms(WATCH_RETRY_MS);
        if (g_stop)
            break;
    }
    watch_clear(&w);
    free(w.rows);
    free(w.line);
    free(w.data);
    free(w.err.body);
    return g_stop ? EXIT_OK : rc;
}

static int run_command(const client *c, const opts *o)
{
    char path[PATH_MAX_LEN];
    const unsigned char *buf = NULL;
    size_t len = 0;
    int rc = EXIT_USAGE;
    yajl_gen g = NULL;
    const char *method = "POST";
    int want_pos = o->cmd == CMD_REGIONS || o->cmd == CMD_UNLOCK_ALL ||
                           o->cmd == CMD_WATCH
                       ? 0
                       : 1;
    if (o->cmd == CMD_POLICY && o->reset) {
        if (o->npos != 1)
            return usage_error("policy --reset takes CODE only, no "
                               "key=value%s", "");
    } else if (o->cmd == CMD_POLICY) {
        if (o->npos < 2)
            return usage_error("policy needs CODE and at least one "
                               "key=value (or --reset)%s", "");
    } else if (o->npos != want_pos) {
        return usage_error(want_pos ? "this command takes exactly one "
                                      "argument%s"
                                    : "this command takes no arguments%s",
                           "");
    }
    if (want_pos && !segment_ok(o->pos[0]))
        return usage_error("not a region code or request id: %s", o->pos[0]);
    if ((o->cmd == CMD_LOCK || o->cmd == CMD_UNLOCK ||
         o->cmd == CMD_UNLOCK_ALL || o->reset) &&
        (!o->reason || !*o->reason))
        return usage_error("--reason is required: say why, for the audit "
                           "trail%s", "");
    switch (o->cmd) {
    case CMD_REGIONS:
        list_path(o, path, sizeof(path));
        return run_call(c, o, "GET", path, NULL, 0);
    case CMD_WATCH:
        return cmd_watch(c, o);
    case CMD_REGION:
        snprintf(path, sizeof(path), "/v1/regions/%s", o->pos[0]);
        return run_call(c, o, "GET", path, NULL, 0);
    default:
        break;
    }
    g = yajl_gen_alloc(NULL);
    if (!g) {
        fprintf(stderr, "fleetgatectl: out of memory\n");
        return EXIT_FAIL;
    }
    yajl_gen_map_open(g);
    if (o->reason)
        gen_str(g, "reason", o->reason);
    switch (o->cmd) {
    case CMD_LOCK:
        snprintf(path, sizeof(path), "/v1/regions/%s/lock", o->pos[0]);
        if (o->ttl_s >= 0)
            gen_int(g, "ttl_s", o->ttl_s);
        if (o->scope)
            gen_str(g, "scope", o->scope);
        if (o->message)
            gen_str(g, "message", o->message);
        if (o->dry_run) {
            yajl_gen_string(g, (const unsigned char *)"dry_run", 7);
            yajl_gen_bool(g, 1);
        }
        break;
    case CMD_UNLOCK:
    case CMD_UNLOCK_ALL:
        if (o->cmd == CMD_UNLOCK)
            snprintf(path, sizeof(path), "/v1/regions/%s/unlock", o->pos[0]);
        else
            snprintf(path, sizeof(path), "/v1/locks/unlock-all");
        if (o->pin_s >= 0)
            gen_int(g, "pin_s", o->pin_s);
        if (o->dry_run) {
            yajl_gen_string(g, (const unsigned char *)"dry_run", 7);
            yajl_gen_bool(g, 1);
        }
        break;
    case CMD_APPROVE:
        snprintf(path, sizeof(path), "/v1/requests/%s/approve", o->pos[0]);
        break;
    case CMD_POLICY:
        method = o->reset ? "DELETE" : "PUT";
        snprintf(path, sizeof(path), "/v1/regions/%s/policy", o->pos[0]);
        for (int i = 1; i < o->npos; i++)
            if (gen_pair(g, o->pos[i]) != 0)
                goto out; /* EXIT_USAGE */
        break;
    default:
        goto out;
    }
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
        fprintf(stderr, "fleetgatectl: cannot encode the request (invalid "
                "UTF-8 in an argument?)\n");
        goto out;
    }
    rc = run_call(c, o, method, path, (const char *)buf, len);
out:
    yajl_gen_free(g);
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    client c;
    char token[TOKEN_MAX + 1];
    int rc = parse_args(argc, argv, &o);
    if (rc == -1)
        return EXIT_OK;
    if (rc != 0)
        return rc;
    memset(&c, 0, sizeof(c));
    if (!o.url)
        o.url = getenv("FLEETGATE_URL");
    if (!o.url || !*o.url)
        o.url = DEFAULT_URL;
    if (parse_url(o.url, &c.u) != 0)
        return EXIT_USAGE;
    if (o.cacert && !c.u.tls) {
        fprintf(stderr, "fleetgatectl: --cacert needs an https:// URL: %s\n",
                o.url);
        return EXIT_USAGE;
    }
    if (c.u.tls) {
        c.cacert = o.cacert ? o.cacert : getenv("FLEETGATECTL_CACERT");
        if (c.cacert && !*c.cacert)
            c.cacert = NULL;
        c.tls = tls_client_ctx(c.cacert);
        if (!c.tls)
            return EXIT_USAGE;
    }
    if (load_token(o.token_file, token) != 0) {
        SSL_CTX_free(c.tls);
        return EXIT_USAGE;
    }
    c.token = token;
    c.allow_remote = o.allow_remote;
    c.timeout_ms = o.timeout_ms;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* OpenSSL writes with write(2): a server gone away is EPIPE, not a
     * signal. */
    signal(SIGPIPE, SIG_IGN);

    rc = run_command(&c, &o);
    if (fflush(stdout) != 0 && rc == EXIT_OK)
        rc = EXIT_FAIL;
    /* Leave no token in memory longer than needed (core dumps). */
    memset(token, 0, sizeof(token));
    SSL_CTX_free(c.tls);
    return rc;
}
