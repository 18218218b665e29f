/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of common/fg_log.c: stderr is redirected to a temporary file to
 * check the logfmt line (UTC timestamp, level, comp, msg, pairs), level
 * filtering, quoting and escaping, safe truncation and whole lines under
 * concurrent writers. */
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fg_log.h"
#include "fg_test.h"

static int saved_stderr = -1;
static char cap_path[] = "/tmp/fg_test_log_XXXXXX";
static int cap_fd = -1;
static char out[1 << 20];

static void capture_begin(void)
{
    strcpy(cap_path, "/tmp/fg_test_log_XXXXXX");
    cap_fd = mkstemp(cap_path);
    if (cap_fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    dup2(cap_fd, STDERR_FILENO);
}

/* Restores stderr and returns what was logged (NUL-terminated, in out). */
static size_t capture_end(void)
{
    size_t n = 0;
    ssize_t r;
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    lseek(cap_fd, 0, SEEK_SET);
    while (n < sizeof(out) - 1) {
        r = read(cap_fd, out + n, sizeof(out) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    close(cap_fd);
    unlink(cap_path);
    return n;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static bool matches(const char *re, const char *s)
{
    regex_t rx;
    bool ok;
    if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) != 0)
        return false;
    ok = regexec(&rx, s, 0, NULL, 0) == 0;
    regfree(&rx);
    return ok;
}

static void test_line_format(void)
{
    /* A far-from-UTC zone: a local-time timestamp would be off by hours. */
    setenv("TZ", "Asia/Kathmandu", 1);
    tzset();
    fg_log_init("testcomp", FG_LOG_INFO);

    time_t before = time(NULL);
    capture_begin();
    fg_log(FG_LOG_INFO, "listening", "addr=%s port=%d", "127.0.0.1", 8080);
    capture_end();
    time_t after = time(NULL);

    FG_CHECK(matches("^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                     "[0-9]{2}\\.[0-9]{3}Z level=info comp=testcomp "
                     "msg=listening addr=127\\.0\\.0\\.1 port=8080\n$",
                     out));

    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    FG_CHECK(strptime(out, "ts=%Y-%m-%dT%H:%M:%S", &tm) != NULL);
    time_t logged = timegm(&tm);
    FG_CHECK(logged >= before - 1 && logged <= after + 1);

    /* No pairs: the line ends after msg. */
    capture_begin();
    fg_log_warn("draining", "%s", "");
    fg_log(FG_LOG_ERROR, "stopped", NULL);
    capture_end();
    FG_CHECK(matches("^ts=[^ ]+ level=warn comp=testcomp msg=draining\n"
                     "ts=[^ ]+ level=error comp=testcomp msg=stopped\n$",
                     out));
    unsetenv("TZ");
    tzset();
}

static void test_levels(void)
{
    FG_CHECK_INT(fg_log_level_parse("debug"), FG_LOG_DEBUG);
    FG_CHECK_INT(fg_log_level_parse("info"), FG_LOG_INFO);
    FG_CHECK_INT(fg_log_level_parse("warn"), FG_LOG_WARN);
    FG_CHECK_INT(fg_log_level_parse("error"), FG_LOG_ERROR);
    FG_CHECK_INT(fg_log_level_parse("ERROR"), FG_LOG_ERROR);
    FG_CHECK_INT(fg_log_level_parse("verbose"), -1);
    FG_CHECK_INT(fg_log_level_parse(""), -1);
    FG_CHECK_INT(fg_log_level_parse(NULL), -1);

    fg_log_init("lv", FG_LOG_WARN);
    FG_CHECK(!fg_log_enabled(FG_LOG_DEBUG));
    FG_CHECK(!fg_log_enabled(FG_LOG_INFO));
    FG_CHECK(fg_log_enabled(FG_LOG_WARN));
    FG_CHECK(fg_log_enabled(FG_LOG_ERROR));
    capture_begin();
    fg_log_debug("d", "n=%d", 1);
    fg_log_info("i", "n=%d", 2);
    fg_log_warn("w", "n=%d", 3);
    fg_log_error("e", "n=%d", 4);
    capture_end();
    FG_CHECK_INT(count_lines(out), 2);
    FG_CHECK(strstr(out, "level=debug") == NULL);
    FG_CHECK(strstr(out, "level=info") == NULL);
    FG_CHECK(strstr(out, "level=warn comp=lv msg=w n=3\n") != NULL);
    FG_CHECK(strstr(out, "level=error comp=lv msg=e n=4\n") != NULL);

    fg_log_init("lv", FG_LOG_DEBUG);
    capture_begin();
    fg_log_debug("d", "n=%d", 1);
    capture_end();
    FG_CHECK(strstr(out, "level=debug comp=lv msg=d n=1\n") != NULL);
}

static void check_quote(const char *in, const char *want, int line)
{
    char q[256];
    memset(q, 0x7e, sizeof(q));
    const char *r = fg_log_quote(in, q, sizeof(q));
    if (r == q && strcmp(q, want) == 0) {
        fg_test_passed++;
    } else {
        fg_test_failed++;
        fprintf(stderr, "test_log.c:%d: quote: got [%s] want [%s]\n", line,
                q, want);
    }
}

#define QUOTE(in, want) check_quote(in, want, __LINE__)

static void test_quote(void)
{
    QUOTE("plain", "plain");
    QUOTE("127.0.0.1:8080", "127.0.0.1:8080");
    QUOTE("", "\"\"");
    QUOTE(NULL, "\"\"");
    QUOTE("two words", "\"two words\"");
    QUOTE("a=b", "\"a=b\"");
    QUOTE("say \"hi\"", "\"say \\\"hi\\\"\"");
    QUOTE("C:\\path", "\"C:\\\\path\"");
    QUOTE("line1\nline2", "\"line1\\nline2\"");
    QUOTE("cr\rtab\t", "\"cr\\rtab\\t\"");
    QUOTE("bell\a esc\x1b del\x7f", "\"bell\\u0007 esc\\u001b del\\u007f\"");
    QUOTE("Ky\xd1\x97v", "Ky\xd1\x97v");
    QUOTE("Ky\xd1\x97v city", "\"Ky\xd1\x97v city\"");

    char q[16];
    /* Truncation keeps the closing quote. */
    FG_CHECK_STR(fg_log_quote("hello world", q, 8), "\"hello\"");
    /* An escape is never split: \" needs 2 bytes, only 1 is left. */
    FG_CHECK_STR(fg_log_quote("abcd\"efgh", q, 8), "\"abcd\"");
    FG_CHECK_STR(fg_log_quote("abcd\"efgh", q, 9), "\"abcd\\\"\"");
    /* A UTF-8 character is never split. */
    FG_CHECK_STR(fg_log_quote("\xc3\xa9\xc3\xa9\xc3\xa9", q, 4), "\xc3\xa9");
    FG_CHECK_STR(fg_log_quote("\xc3\xa9\xc3\xa9\xc3\xa9", q, 5),
                 "\xc3\xa9\xc3\xa9");
    FG_CHECK_STR(fg_log_quote("abcdef", q, 4), "abc");
    FG_CHECK_STR(fg_log_quote("abc", q, 1), "");
    FG_CHECK_STR(fg_log_quote("a b", q, 2), "");
    FG_CHECK_STR(fg_log_quote("a b", q, 3), "\"\"");
    q[0] = 'Z';
    fg_log_quote("abc", q, 0);
    FG_CHECK(q[0] == 'Z');

    /* Quoted values inside a line. */
    char v[64];
    fg_log_init("q", FG_LOG_INFO);
    capture_begin();
    fg_log_info("refused", "reason=%s device=%s",
                fg_log_quote("bad \"id\"", v, sizeof(v)), "dev-1");
    capture_end();
    FG_CHECK(strstr(out, " msg=refused reason=\"bad \\\"id\\\"\" device=dev-1\n")
             != NULL);
}

static void test_one_line(void)
{
    fg_log_init("nl", FG_LOG_INFO);
    capture_begin();
    fg_log_info("odd", "v=%s w=%s", "a\nb", "c\r\x01");
    fg_log_info("bad msg", "x=%d", 1);
    capture_end();
    FG_CHECK_INT(count_lines(out), 2);
    FG_CHECK(strstr(out, "msg=odd v=a\\nb w=c\\r\\u0001\n") != NULL);
    FG_CHECK(strstr(out, "msg=\"bad msg\" x=1\n") != NULL);
}

static void test_truncation(void)
{
    static char big[8000];
    size_t n;
    char *nl;

    fg_log_init("tr", FG_LOG_INFO);
    memset(big, 'x', sizeof(big) - 1);
    capture_begin();
    fg_log_info("big", "a=1 v=%s", big);
    n = capture_end();
    FG_CHECK(n <= FG_LOG_LINE_MAX);
    FG_CHECK(n > FG_LOG_LINE_MAX - 64);
    FG_CHECK_INT(count_lines(out), 1);
    FG_CHECK(n > 13 && strcmp(out + n - 13, " truncated=1\n") == 0);
    FG_CHECK(strstr(out, " msg=big a=1 v=xxxx") != NULL);

    /* Cut inside a quoted value: the quote is closed before truncated=1. */
    char qv[8200];
    for (size_t i = 0; i < sizeof(big) - 1; i += 2)
        big[i] = ' ';
    fg_log_quote(big, qv, sizeof(qv));
    FG_CHECK(qv[0] == '"');
    capture_begin();
    fg_log_info("big", "v=%s", qv);
    n = capture_end();
    FG_CHECK(n <= FG_LOG_LINE_MAX);
    FG_CHECK(n > 14 && strcmp(out + n - 14, "\" truncated=1\n") == 0);
    size_t quotes = 0;
    for (size_t i = 0; i < n; i++)
        quotes += out[i] == '"';
    FG_CHECK(quotes % 2 == 0);

    /* Cut after a backslash inside quotes: the dangling escape is dropped
     * so the closing quote is not escaped. */
    static char slashes[8000];
    memset(slashes, '\\', sizeof(slashes) - 1);
    for (int shift = 0; shift < 2; shift++) { /* both parities of the cut */
        capture_begin();
        fg_log_info("big", "%sv=\"%s", shift ? "x" : "", slashes);
        n = capture_end();
        FG_CHECK(n <= FG_LOG_LINE_MAX);
        FG_CHECK(n > 14 && strcmp(out + n - 14, "\" truncated=1\n") == 0);
        /* An even run of backslashes before the closing quote. */
        size_t run = 0;
        for (size_t i = n - 15; out[i] == '\\'; i--)
            run++;
        FG_CHECK(run % 2 == 0);
    }

    /* A multi-byte character is not split at the cut. */
    static char wide[8000];
    for (size_t i = 0; i + 2 < sizeof(wide); i += 2) {
        wide[i] = '\xc3';
        wide[i + 1] = '\xa9';
    }
    for (int shift = 0; shift < 2; shift++) {
        capture_begin();
        fg_log_info("big", "%sv=%s", shift ? "x" : "", wide);
        n = capture_end();
        nl = strstr(out, " truncated=1\n");
        FG_CHECK(nl != NULL);
        if (nl)
            FG_CHECK((unsigned char)nl[-1] == 0xa9);
    }
}

static void test_errno_kept(void)
{
    fg_log_init("er", FG_LOG_INFO);
    capture_begin();
    errno = ECONNRESET;
    fg_log_info("x", "y=%d", 1);
    int e = errno;
    capture_end();
    FG_CHECK_INT(e, ECONNRESET);
}

enum { THREADS = 4, PER_THREAD = 300 };

static void *writer(void *arg)
{
    long id = (long)arg;
    char pad[600];
    memset(pad, 'a' + (int)id, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++)
        fg_log_info("tick", "thread=%ld i=%d pad=%s end=1", id, i, pad);
    return NULL;
}

static void test_threads(void)
{
    pthread_t th[THREADS];
    size_t good = 0;

    fg_log_init("mt", FG_LOG_INFO);
    capture_begin();
    for (long i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, writer, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    capture_end();
    FG_CHECK_INT(count_lines(out), THREADS * PER_THREAD);
    /* Every line is whole: one writer's padding, nothing spliced in. */
    for (char *line = out; *line;) {
        char *end = strchr(line, '\n');
        if (!end)
            break;
        *end = '\0';
        good += matches("^ts=[^ ]+ level=info comp=mt msg=tick thread=[0-3] "
                        "i=[0-9]+ pad=(a+|b+|c+|d+) end=1$",
                        line);
        line = end + 1;
    }
    FG_CHECK_INT(good, THREADS * PER_THREAD);
}

FG_TEST_MAIN(test_line_format, test_levels, test_quote, test_one_line,
             test_truncation, test_errno_kept, test_threads)
