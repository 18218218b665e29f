/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration loader: applies a table of typed slots from defaults, an INI
 * file (parsed by inih through our own line reader, so overlong lines and
 * multi-line values are reported instead of silently mangled), FLEETGATE_*
 * environment variables and --set overrides, in that order of precedence. */
#include "fg_config.h"

#include <getopt.h>

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define FG_CONF_ENV_PREFIX "FLEETGATE_"
#define FG_CONF_KEY_MAX 256           /* longest full dotted key */
#define FG_CONF_VALUE_MAX 65536       /* longest value from any source */
#define FG_CONF_FILE_MAX (1024 * 1024) /* largest INI file read */
#define FG_CONF_KVS_MAX 1024          /* items per pass-through list */
#define FG_CONF_SHOW_MAX 64           /* value bytes quoted in messages */

/* Everything one application of a value needs; src names where the value
 * came from ("fleetgate.ini:12", "env FLEETGATE_X", "--set") or is NULL. */
typedef struct conf_ctx {
    const fg_conf_slot *slots;
    void *target;
    const fg_conf_passthrough *pt;
    char *errbuf;
    size_t errlen;
} conf_ctx;

/* Writes "src: key: message" (leaving out the missing parts) to errbuf. */
static void conf_err(const conf_ctx *c, const char *src, const char *key,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void conf_err(const conf_ctx *c, const char *src, const char *key,
                     const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!c->errbuf || c->errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->errbuf, c->errlen, "%s%s%s%s%s", src ? src : "",
             src ? ": " : "", key ? key : "", key ? ": " : "", msg);
}

static char ascii_upper(char ch)
{
    return (ch >= 'a' && ch <= 'z') ? (char)(ch - 'a' + 'A') : ch;
}

static char ascii_lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

/* Env form of a key without the FLEETGATE_ part: upper case, '.' and '-'
 * become '_'. Returns false when it does not fit. */
static bool env_form(const char *name, char *out, size_t cap)
{
    size_t i;

    for (i = 0; name[i]; i++) {
        if (i + 1 >= cap)
            return false;
        out[i] = (name[i] == '.' || name[i] == '-') ? '_' : ascii_upper(name[i]);
    }
    if (cap == 0)
        return false;
    out[i] = '\0';
    return true;
}

static const fg_conf_slot *slot_find(const fg_conf_slot *slots, const char *key)
{
    for (const fg_conf_slot *s = slots; s && s->name; s++) {
        if (strcmp(s->name, key) == 0)
            return s;
    }
    return NULL;
}

/* Levenshtein distance, for "did you mean" hints; large when either string
 * is too long to bother. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[FG_CONF_KEY_MAX + 1];

    if (la > FG_CONF_KEY_MAX || lb > FG_CONF_KEY_MAX)
        return (size_t)-1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (ascii_lower(a[i - 1]) == ascii_lower(b[j - 1]) ? 0 : 1);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The slot closest to key (in env form when env is set), or NULL when none
 * is within a couple of typos. */
static const fg_conf_slot *slot_suggest(const fg_conf_slot *slots,
                                        const char *key, bool env)
{
    const fg_conf_slot *best = NULL;
    size_t best_d = 3;

    for (const fg_conf_slot *s = slots; s && s->name; s++) {
        char form[FG_CONF_KEY_MAX];
        const char *cand = s->name;
        if (env) {
            if (!env_form(s->name, form, sizeof(form)))
                continue;
            cand = form;
        }
        size_t d = edit_distance(key, cand);
        if (d < best_d) {
            best_d = d;
            best = s;
        }
    }
    return best;
}

/* Trims one pair of surrounding double quotes. */
static void unquote(const char **v, size_t *n)
{
    if (*n >= 2 && (*v)[0] == '"' && (*v)[*n - 1] == '"') {
        (*v)++;
        *n -= 2;
    }
}

static bool parse_digits(const char *s, size_t n, size_t *used, uint64_t *out)
{
    uint64_t acc = 0;
    size_t i = 0;

    while (i < n && s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (UINT64_MAX - d) / 10)
            return false;
        acc = acc * 10 + d;
        i++;
    }
    *used = i;
    *out = acc;
    return i > 0;
}

/* Decimal int64 with optional sign and nothing else. */
static bool parse_int(const char *s, size_t n, int64_t *out)
{
    bool neg = false;
    size_t used;
    uint64_t u;

    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++;
        n--;
    }
    if (!parse_digits(s, n, &used, &u) || used != n)
        return false;
    if (neg) {
        if (u > (uint64_t)INT64_MAX + 1)
            return false;
        *out = (u == (uint64_t)INT64_MAX + 1) ? INT64_MIN : -(int64_t)u;
    } else {
        if (u > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)u;
    }
    return true;
}

static bool suffix_is(const char *s, size_t n, const char *want)
{
    size_t wn = strlen(want);

    if (n != wn)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower(s[i]) != want[i])
            return false;
    }
    return true;
}

/* Scales u by mult into *out, failing on overflow of int64. */
static bool scale(uint64_t u, uint64_t mult, int64_t *out)
{
    if (u > (uint64_t)INT64_MAX / mult)
        return false;
    *out = (int64_t)(u * mult);
    return true;
}

/* Bytes: digits, then nothing, b, or k/m/g optionally followed by b or ib,
 * any case (binary multiples: 1k = 1024). */
static bool parse_size(const char *s, size_t n, int64_t *out)
{
    static const struct { char unit; uint64_t mult; } units[] = {
        {'k', 1ull << 10}, {'m', 1ull << 20}, {'g', 1ull << 30}};
    size_t used;
    uint64_t u;

    if (!parse_digits(s, n, &used, &u))
        return false;
    s += used;
    n -= used;
    if (n == 0 || suffix_is(s, n, "b"))
        return scale(u, 1, out);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ascii_lower(s[0]) != units[i].unit)
            continue;
        if (n == 1 || suffix_is(s + 1, n - 1, "b") || suffix_is(s + 1, n - 1, "ib"))
            return scale(u, units[i].mult, out);
        return false;
    }
    return false;
}

/* Milliseconds: digits, then nothing (ms), ms, s, m, h or d, any case. */
static bool parse_duration(const char *s, size_t n, int64_t *out)
{
    static const struct { const char *unit; uint64_t mult; } units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
        {"d", 86400000}};
    size_t used;
    uint64_t u;

    if (!parse_digits(s, n, &used, &u))
        return false;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (suffix_is(s + used, n - used, units[i].unit))
            return scale(u, units[i].mult, out);
    }
    return false;
}

static bool parse_bool(const char *s, size_t n, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (suffix_is(s, n, yes[i])) {
            *out = true;
            return true;
        }
        if (suffix_is(s, n, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

static const char *type_name(fg_conf_type t)
{
    switch (t) {
    case FG_CONF_STR: return "str";
    case FG_CONF_INT: return "int";
    case FG_CONF_BOOL: return "bool";
    case FG_CONF_SIZE: return "size";
    case FG_CONF_DURATION: return "duration";
    }
    return "?";
}

static const char *unit_name(fg_conf_type t)
{
    if (t == FG_CONF_SIZE)
        return " bytes";
    if (t == FG_CONF_DURATION)
        return " ms";
    return "";
}

/* Parses value into the slot's field of target. On error nothing changes. */
static fg_status slot_apply(const conf_ctx *c, const fg_conf_slot *s,
                            const char *value, const char *src)
{
    char *field = (char *)c->target + s->offset;
    const char *v = value;
    size_t n = strlen(value);
    int show = (int)(n > FG_CONF_SHOW_MAX ? FG_CONF_SHOW_MAX : n);
    const char *more = n > FG_CONF_SHOW_MAX ? "..." : "";
    int64_t num = 0;
    bool ok = false;
    bool b = false;

    if (n > FG_CONF_VALUE_MAX) {
        conf_err(c, src, s->name, "value is longer than %d bytes", FG_CONF_VALUE_MAX);
        return FG_EINVAL;
    }
    unquote(&v, &n);
    switch (s->type) {
    case FG_CONF_STR: {
        char *dup = strndup(v, n);
        if (!dup) {
            conf_err(c, src, s->name, "out of memory");
            return FG_ENOMEM;
        }
        free(*(char **)field);
        *(char **)field = dup;
        return FG_OK;
    }
    case FG_CONF_BOOL:
        if (!parse_bool(v, n, &b)) {
            conf_err(c, src, s->name,
                     "\"%.*s%s\" is not a boolean (use true/false, yes/no, on/off or 1/0)",
                     show, value, more);
            return FG_EINVAL;
        }
        *(bool *)field = b;
        return FG_OK;
    case FG_CONF_INT:
        ok = parse_int(v, n, &num);
        if (!ok)
            conf_err(c, src, s->name, "\"%.*s%s\" is not a decimal integer in the int64 range",
                     show, value, more);
        break;
    case FG_CONF_SIZE:
        ok = parse_size(v, n, &num);
        if (!ok)
            conf_err(c, src, s->name,
                     "\"%.*s%s\" is not a size (bytes, or a k/m/g suffix: 512k, 1m, 1MiB)",
                     show, value, more);
        break;
    case FG_CONF_DURATION:
        ok = parse_duration(v, n, &num);
        if (!ok)
            conf_err(c, src, s->name,
                     "\"%.*s%s\" is not a duration (ms, s, m, h or d: 250ms, 5s; "
                     "a bare number is ms)",
                     show, value, more);
        break;
    default:
        conf_err(c, src, s->name, "slot has an unknown type %d", (int)s->type);
        return FG_EINVAL;
    }
    if (!ok)
        return FG_EINVAL;
    if (s->min != 0 || s->max != 0) {
        const char *unit = unit_name(s->type);
        char parsed[48] = "";
        if (s->type != FG_CONF_INT)
            snprintf(parsed, sizeof(parsed), " (%lld%s)", (long long)num, unit);
        if (num < s->min) {
            conf_err(c, src, s->name, "%.*s%s%s is below the minimum %lld%s", show, value,
                     more, parsed, (long long)s->min, unit);
            return FG_EINVAL;
        }
        if (num > s->max) {
            conf_err(c, src, s->name, "%.*s%s%s is above the maximum %lld%s", show, value,
                     more, parsed, (long long)s->max, unit);
            return FG_EINVAL;
        }
    }
    *(int64_t *)field = num;
    return FG_OK;
}

/* Adds or replaces key (without prefix) in kvs. */
static fg_status kvs_put(const conf_ctx *c, fg_conf_kvs *kvs, const char *fullkey,
                         const char *key, const char *value, const char *src)
{
    const char *v = value;
    size_t n = strlen(value);
    char *vdup = NULL;
    char *kdup = NULL;
    fg_status st = FG_OK;

    if (n > FG_CONF_VALUE_MAX) {
        conf_err(c, src, fullkey, "value is longer than %d bytes", FG_CONF_VALUE_MAX);
        st = FG_EINVAL;
        goto cleanup;
    }
    unquote(&v, &n);
    vdup = strndup(v, n);
    if (!vdup)
        goto nomem;
    for (size_t i = 0; i < kvs->n; i++) {
        if (strcmp(kvs->items[i].key, key) == 0) {
            free(kvs->items[i].value);
            kvs->items[i].value = vdup;
            vdup = NULL;
            goto cleanup;
        }
    }
    if (kvs->n >= FG_CONF_KVS_MAX) {
        conf_err(c, src, fullkey, "more than %d keys under this prefix", FG_CONF_KVS_MAX);
        st = FG_EINVAL;
        goto cleanup;
    }
    if (kvs->n == kvs->cap) {
        size_t ncap = kvs->cap ? kvs->cap * 2 : 16;
        fg_conf_kv *items = realloc(kvs->items, ncap * sizeof(*items));
        if (!items)
            goto nomem;
        kvs->items = items;
        kvs->cap = ncap;
    }
    kdup = strdup(key);
    if (!kdup)
        goto nomem;
    kvs->items[kvs->n].key = kdup;
    kvs->items[kvs->n].value = vdup;
    kvs->n++;
    kdup = NULL;
    vdup = NULL;
    goto cleanup;

nomem:
    conf_err(c, src, fullkey, "out of memory");
    st = FG_ENOMEM;
cleanup:
    free(kdup);
    free(vdup);
    return st;
}

/* Applies key=value from one source: a known slot first, then the first
 * pass-through prefix that matches, else an unknown-key error. */
static fg_status conf_apply(const conf_ctx *c, const char *key, const char *value,
                            const char *src)
{
    const fg_conf_slot *s = slot_find(c->slots, key);
    const fg_conf_slot *hint;

    if (s)
        return slot_apply(c, s, value, src);
    for (const fg_conf_passthrough *p = c->pt; p && p->prefix; p++) {
        size_t pn = strlen(p->prefix);
        if (strncmp(key, p->prefix, pn) == 0 && key[pn] != '\0' && p->kvs)
            return kvs_put(c, p->kvs, key, key + pn, value, src);
    }
    hint = slot_suggest(c->slots, key, false);
    if (hint)
        conf_err(c, src, key, "unknown key (did you mean %s?)", hint->name);
    else
        conf_err(c, src, key, "unknown key");
    return FG_EINVAL;
}

fg_status fg_conf_set(const fg_conf_slot *slots, void *target,
                      const fg_conf_passthrough *pt, const char *key,
                      const char *value, char *errbuf, size_t errlen)
{
    conf_ctx c = {slots, target, pt, errbuf, errlen};

    if (!key || !value) {
        conf_err(&c, NULL, key, "missing key or value");
        return FG_EINVAL;
    }
    return conf_apply(&c, key, value, NULL);
}

static fg_status conf_defaults(const conf_ctx *c)
{
    for (const fg_conf_slot *s = c->slots; s->name; s++) {
        char *field = (char *)c->target + s->offset;
        fg_status st;
        if (s->def) {
            st = slot_apply(c, s, s->def, "default");
            if (st != FG_OK)
                return st;
            continue;
        }
        switch (s->type) {
        case FG_CONF_STR:
            free(*(char **)field);
            *(char **)field = NULL;
            break;
        case FG_CONF_BOOL:
            *(bool *)field = false;
            break;
        default:
            *(int64_t *)field = 0;
            break;
        }
    }
    return FG_OK;
}

/* INI state: the text is read whole, then fed to inih one line at a time by
 * ini_read so we know the line number and the raw line of every callback. */
typedef struct ini_state {
    const conf_ctx *c;
    const char *name;  /* file name for messages */
    const char *data;
    size_t len, pos;
    int lineno;        /* lines handed to inih so far */
    bool indented;     /* the current raw line starts with a blank */
    bool too_long;     /* line lineno + 1 did not fit inih's buffer */
    int maxline;
    fg_status st;      /* first error, sticky */
    int err_line;
    bool have_prev;
    char prev_section[FG_CONF_KEY_MAX];
    char prev_name[FG_CONF_KEY_MAX];
} ini_state;

static char *ini_read(char *str, int num, void *stream)
{
    ini_state *is = stream;
    const char *start, *nl;
    size_t avail, linelen;

    /* Stop feeding lines after the first error: nothing later can matter. */
    if (is->st != FG_OK || is->too_long || is->pos >= is->len || num < 2)
        return NULL;
    start = is->data + is->pos;
    avail = is->len - is->pos;
    nl = memchr(start, '\n', avail);
    linelen = nl ? (size_t)(nl - start) + 1 : avail;
    if (linelen > (size_t)num - 1) {
        is->too_long = true;
        is->maxline = num - 1;
        return NULL;
    }
    memcpy(str, start, linelen);
    str[linelen] = '\0';
    is->pos += linelen;
    is->lineno++;
    is->indented = start[0] == ' ' || start[0] == '\t';
    return str;
}

static int ini_on_kv(void *user, const char *section, const char *name,
                     const char *value)
{
    ini_state *is = user;
    char src[FG_CONF_KEY_MAX + 32];
    char key[FG_CONF_KEY_MAX];
    int kn;

    if (is->st != FG_OK)
        return 0;
    snprintf(src, sizeof(src), "%s:%d", is->name, is->lineno);
    if (section[0])
        kn = snprintf(key, sizeof(key), "%s.%s", section, name);
    else
        kn = snprintf(key, sizeof(key), "%s", name);
    if (kn < 0 || (size_t)kn >= sizeof(key)) {
        conf_err(is->c, src, NULL, "key [%.64s] %.64s... is too long", section, name);
        is->st = FG_EINVAL;
        goto fail;
    }
    /* inih hands an indented line to the previous key as a continuation;
     * taking only the last line would silently drop the first. */
    if (is->indented && is->have_prev && strcmp(section, is->prev_section) == 0 &&
        strcmp(name, is->prev_name) == 0) {
        conf_err(is->c, src, key,
                 "indented line continues the value of the line above; multi-line values "
                 "are not supported (remove the indentation)");
        is->st = FG_EINVAL;
        goto fail;
    }
    snprintf(is->prev_section, sizeof(is->prev_section), "%s", section);
    snprintf(is->prev_name, sizeof(is->prev_name), "%s", name);
    is->have_prev = true;
    if (!section[0]) {
        const char *dot = strchr(name, '.');
        if (dot) {
            conf_err(is->c, src, key,
                     "key outside any section; write it as \"%s\" under [%.*s]", dot + 1,
                     (int)(dot - name), name);
            is->st = FG_EINVAL;
            goto fail;
        }
        if (!slot_find(is->c->slots, name)) {
            conf_err(is->c, src, key, "unknown key outside any section");
            is->st = FG_EINVAL;
            goto fail;
        }
    }
    is->st = conf_apply(is->c, key, value, src);
    if (is->st != FG_OK)
        goto fail;
    return 1;

fail:
    is->err_line = is->lineno;
    return 0;
}

static fg_status conf_ini(const conf_ctx *c, const char *data, size_t len,
                          const char *name)
{
    ini_state is;
    int rc;

    memset(&is, 0, sizeof(is));
    is.c = c;
    is.name = name;
    is.data = data;
    is.len = len;
    is.st = FG_OK;
    if (memchr(data, '\0', len)) {
        conf_err(c, name, NULL, "contains a NUL byte; not a text file");
        return FG_EINVAL;
    }
    rc = ini_parse_stream(ini_read, &is, ini_on_kv, &is);
    if (rc > 0 && (is.st == FG_OK || rc < is.err_line)) {
        char src[FG_CONF_KEY_MAX + 32];
        snprintf(src, sizeof(src), "%s:%d", name, rc);
        conf_err(c, src, NULL, "cannot parse line (expected [section], key = value or a comment)");
        return FG_EINVAL;
    }
    if (is.st != FG_OK)
        return is.st;
    if (rc == -2) {
        conf_err(c, name, NULL, "out of memory");
        return FG_ENOMEM;
    }
    if (rc < 0) {
        conf_err(c, name, NULL, "cannot parse");
        return FG_EINVAL;
    }
    if (is.too_long) {
        char src[FG_CONF_KEY_MAX + 32];
        snprintf(src, sizeof(src), "%s:%d", name, is.lineno + 1);
        conf_err(c, src, NULL, "line is longer than %d bytes (including its line ending)",
                 is.maxline);
        return FG_EINVAL;
    }
    return FG_OK;
}

/* Reads the whole file (at most FG_CONF_FILE_MAX bytes) into *out. */
static fg_status read_file(const conf_ctx *c, const char *path, char **out, size_t *outlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0;
    fg_status st = FG_OK;

    f = fopen(path, "rb");
    if (!f) {
        conf_err(c, path, NULL, "cannot open: %s", strerror(errno));
        st = FG_EINVAL;
        goto cleanup;
    }
    buf = malloc(FG_CONF_FILE_MAX + 1);
    if (!buf) {
        conf_err(c, path, NULL, "out of memory");
        st = FG_ENOMEM;
        goto cleanup;
    }
    n = fread(buf, 1, FG_CONF_FILE_MAX + 1, f);
    if (ferror(f)) {
        conf_err(c, path, NULL, "cannot read: %s", strerror(errno));
        st = FG_EINVAL;
        goto cleanup;
    }
    if (n > FG_CONF_FILE_MAX) {
        conf_err(c, path, NULL, "larger than %d bytes", FG_CONF_FILE_MAX);
        st = FG_ETOOBIG;
        goto cleanup;
    }
    *out = buf;
    *outlen = n;
    buf = NULL;

cleanup:
    if (f)
        fclose(f);
    free(buf);
    return st;
}

/* Maps one FLEETGATE_* variable (var, varlen bytes, prefix included) to a
 * slot or a pass-through key and applies value. */
static fg_status conf_env_one(const conf_ctx *c, const char *var, size_t varlen,
                              const char *value)
{
    char src[FG_CONF_KEY_MAX + 32];
    char envname[FG_CONF_KEY_MAX];
    char form[FG_CONF_KEY_MAX];
    char key[FG_CONF_KEY_MAX];
    const fg_conf_slot *hint;
    size_t skip = strlen(FG_CONF_ENV_PREFIX);
    size_t rest = varlen - skip;

    snprintf(src, sizeof(src), "env %.*s",
             (int)(varlen > FG_CONF_KEY_MAX ? FG_CONF_KEY_MAX : varlen), var);
    if (rest >= sizeof(envname)) {
        conf_err(c, src, NULL, "variable name is too long");
        return FG_EINVAL;
    }
    memcpy(envname, var + skip, rest);
    envname[rest] = '\0';

    for (const fg_conf_slot *s = c->slots; s->name; s++) {
        if (env_form(s->name, form, sizeof(form)) && strcasecmp(form, envname) == 0)
            return slot_apply(c, s, value, src);
    }
    for (const fg_conf_passthrough *p = c->pt; p && p->prefix; p++) {
        size_t pn;
        if (!env_form(p->prefix, form, sizeof(form)))
            continue;
        pn = strlen(form);
        if (strncasecmp(envname, form, pn) != 0 || envname[pn] == '\0' || !p->kvs)
            continue;
        if (strlen(p->prefix) + strlen(envname + pn) >= sizeof(key)) {
            conf_err(c, src, NULL, "variable name is too long");
            return FG_EINVAL;
        }
        size_t k = strlen(p->prefix);
        memcpy(key, p->prefix, k);
        for (const char *r = envname + pn; *r; r++)
            key[k++] = *r == '_' ? '.' : ascii_lower(*r);
        key[k] = '\0';
        return kvs_put(c, p->kvs, key, key + strlen(p->prefix), value, src);
    }
    hint = slot_suggest(c->slots, envname, true);
    if (hint && env_form(hint->name, form, sizeof(form)))
        conf_err(c, src, NULL,
                 "no configuration key maps to this variable (did you mean " FG_CONF_ENV_PREFIX
                 "%s for %s?)", form, hint->name);
    else
        conf_err(c, src, NULL, "no configuration key maps to this variable");
    return FG_EINVAL;
}

static fg_status conf_env(const conf_ctx *c, char *const *envp)
{
    size_t pn = strlen(FG_CONF_ENV_PREFIX);

    for (size_t i = 0; envp[i]; i++) {
        const char *e = envp[i];
        const char *eq = strchr(e, '=');
        fg_status st;
        if (!eq || strncmp(e, FG_CONF_ENV_PREFIX, pn) != 0)
            continue;
        st = conf_env_one(c, e, (size_t)(eq - e), eq + 1);
        if (st != FG_OK)
            return st;
    }
    return FG_OK;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* One --set "key=value"; blanks around key and value are ignored. */
static fg_status conf_set_arg(const conf_ctx *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    const char *k = arg, *ke, *v, *ve;
    char key[FG_CONF_KEY_MAX];
    char *val = NULL;
    fg_status st;

    if (!eq) {
        conf_err(c, "--set", NULL, "\"%.64s\": expected key=value", arg);
        return FG_EINVAL;
    }
    while (k < eq && is_blank(*k))
        k++;
    ke = eq;
    while (ke > k && is_blank(ke[-1]))
        ke--;
    if (ke == k) {
        conf_err(c, "--set", NULL, "\"%.64s\": empty key", arg);
        return FG_EINVAL;
    }
    if ((size_t)(ke - k) >= sizeof(key)) {
        conf_err(c, "--set", NULL, "\"%.64s...\": key is too long", arg);
        return FG_EINVAL;
    }
    memcpy(key, k, (size_t)(ke - k));
    key[ke - k] = '\0';
    v = eq + 1;
    while (*v && is_blank(*v))
        v++;
    ve = v + strlen(v);
    while (ve > v && is_blank(ve[-1]))
        ve--;
    val = strndup(v, (size_t)(ve - v));
    if (!val) {
        conf_err(c, "--set", key, "out of memory");
        return FG_ENOMEM;
    }
    st = conf_apply(c, key, val, "--set");
    free(val);
    return st;
}

/* The shared body of fg_conf_load and fg_conf_load_string: exactly one of
 * path and ini may be non-NULL. */
static fg_status conf_load(const fg_conf_slot *slots, void *target,
                           const fg_conf_passthrough *pt, const char *path,
                           const char *ini, const char *ini_name,
                           char *const *envp, char *const *sets, size_t nsets,
                           char *errbuf, size_t errlen)
{
    conf_ctx c = {slots, target, pt, errbuf, errlen};
    char *data = NULL;
    size_t len = 0;
    fg_status st;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!slots || !target) {
        conf_err(&c, NULL, NULL, "no slot table or target");
        st = FG_EINVAL;
        goto cleanup;
    }
    st = conf_defaults(&c);
    if (st != FG_OK)
        goto cleanup;
    if (path) {
        st = read_file(&c, path, &data, &len);
        if (st != FG_OK)
            goto cleanup;
        st = conf_ini(&c, data, len, path);
        if (st != FG_OK)
            goto cleanup;
    } else if (ini) {
        st = conf_ini(&c, ini, strlen(ini), ini_name ? ini_name : "<string>");
        if (st != FG_OK)
            goto cleanup;
    }
    if (envp) {
        st = conf_env(&c, envp);
        if (st != FG_OK)
            goto cleanup;
    }
    for (size_t i = 0; i < nsets && sets; i++) {
        st = conf_set_arg(&c, sets[i]);
        if (st != FG_OK)
            goto cleanup;
    }

cleanup:
    free(data);
    return st;
}

fg_status fg_conf_load(const fg_conf_slot *slots, void *target,
                       const fg_conf_passthrough *pt, const char *path,
                       char *const *envp, char *const *sets, size_t nsets,
                       char *errbuf, size_t errlen)
{
    return conf_load(slots, target, pt, path, NULL, NULL, envp, sets, nsets,
                     errbuf, errlen);
}

fg_status fg_conf_load_string(const fg_conf_slot *slots, void *target,
                              const fg_conf_passthrough *pt, const char *ini,
                              const char *name, char *const *envp,
                              char *const *sets, size_t nsets, char *errbuf,
                              size_t errlen)
{
    return conf_load(slots, target, pt, NULL, ini, name, envp, sets, nsets,
                     errbuf, errlen);
}

void fg_conf_free(const fg_conf_slot *slots, void *target)
{
    if (!slots || !target)
        return;
    for (const fg_conf_slot *s = slots; s->name; s++) {
        if (s->type == FG_CONF_STR) {
            char **field = (char **)((char *)target + s->offset);
            free(*field);
            *field = NULL;
        }
    }
}

void fg_conf_kvs_free(fg_conf_kvs *kvs)
{
    if (!kvs)
        return;
    for (size_t i = 0; i < kvs->n; i++) {
        free(kvs->items[i].key);
        free(kvs->items[i].value);
    }
    free(kvs->items);
    kvs->items = NULL;
    kvs->n = 0;
    kvs->cap = 0;
}

void fg_conf_help(const fg_conf_slot *slots, FILE *out)
{
    for (const fg_conf_slot *s = slots; s && s->name; s++) {
        char env[FG_CONF_KEY_MAX];
        char range[64] = "";
        if (!env_form(s->name, env, sizeof(env)))
            snprintf(env, sizeof(env), "?");
        if (s->type != FG_CONF_STR && s->type != FG_CONF_BOOL && (s->min != 0 || s->max != 0))
            snprintf(range, sizeof(range), " %lld..%lld", (long long)s->min, (long long)s->max);
        fprintf(out, "  %s = %s  (%s%s, env " FG_CONF_ENV_PREFIX "%s)\n", s->name,
                s->def ? s->def : "(unset)", type_name(s->type), range, env);
        if (s->desc) {
            /* Indent every line of a multi-line description. */
            const char *d = s->desc;
            while (*d) {
                const char *nl = strchr(d, '\n');
                int n = nl ? (int)(nl - d) : (int)strlen(d);
                fprintf(out, "      %.*s\n", n, d);
                d += n;
                if (*d == '\n')
                    d++;
            }
        }
    }
}

fg_status fg_conf_cli_parse(fg_conf_cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"check-config", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    cli->sets = calloc((size_t)argc + 1, sizeof(char *));
    if (!cli->sets)
        return FG_ENOMEM;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cli->path = optarg; break;
        case 's': cli->sets[cli->nsets++] = optarg; break;
        case 'k': cli->check_only = 1; break;
        case 'h': cli->help = 1; break;
        case 'V': cli->version = 1; break;
        default:
            fprintf(stderr, "Try '%s --help'.\n", argv[0]);
            return FG_EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0],
                argv[optind]);
        return FG_EINVAL;
    }
    return FG_OK;
}

void fg_conf_cli_free(fg_conf_cli *cli)
{
    free(cli->sets);
    cli->sets = NULL;
    cli->nsets = 0;
}

fg_market_map *fg_market_map_from(const fg_conf_kvs *markets, char *errbuf,
                                  size_t errlen)
{
    fg_market_map *mm = fg_market_map_new();
    if (!mm) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; markets && i < markets->n; i++) {
        char e[256];
        const fg_conf_kv *kv = &markets->items[i];
        if (fg_market_map_allow(mm, kv->key, kv->value, e, sizeof(e)) !=
            FG_OK) {
            snprintf(errbuf, errlen, "markets.%s: %s", kv->key, e);
            fg_market_map_free(mm);
            return NULL;
        }
    }
    return mm;
}

int fg_conf_instance_id(char *out, size_t len, const char *id,
                        const char *fallback)
{
    if (id && id[0]) {
        snprintf(out, len, "%s", id);
        return strlen(id) < len ? 0 : -1;
    }
    char host[48];
    snprintf(host, sizeof(host), "%s", fallback);
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(out, len, "%s-%ld", host, (long)getpid());
    return 0;
}

fg_conf_cli_next fg_conf_cli_start(fg_conf_cli *cli, int argc, char **argv,
                                   const char *prog,
                                   void (*usage)(FILE *out, const char *argv0))
{
    if (fg_conf_cli_parse(cli, argc, argv) != FG_OK)
        return FG_CONF_CLI_EXIT_FAIL;
    if (cli->help) {
        usage(stdout, argv[0]);
        return FG_CONF_CLI_EXIT_OK;
    }
    if (cli->version) {
        printf("%s %s\n", prog, FG_VERSION);
        return FG_CONF_CLI_EXIT_OK;
    }
    return FG_CONF_CLI_CONTINUE;
}
