/* SPDX-License-Identifier: Apache-2.0 */
/* Stand-in for libFuzzer's main when the build has no clang: feeds every file
 * of the corpus folders given as arguments to LLVMFuzzerTestOneInput, then a
 * bounded number of deterministic byte mutations of each (flips, truncations,
 * insertions), so a plain gcc/ASan build still exercises the parser. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FG_REPLAY_MUTATIONS 2000
#define FG_REPLAY_MAX 65536

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void run_mutations(const uint8_t *seed, size_t n)
{
    uint8_t *buf = malloc(FG_REPLAY_MAX + 16);
    if (!buf)
        abort();
    for (int i = 0; i < FG_REPLAY_MUTATIONS; i++) {
        size_t len = n;
        memcpy(buf, seed, n);
        int edits = 1 + (int)(rng_next() % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = rng_next();
            switch (r % 4) {
            case 0: /* flip a byte */
                if (len)
                    buf[(r >> 8) % len] ^= (uint8_t)(1u << ((r >> 40) % 8));
                break;
            case 1: /* truncate */
                if (len)
                    len = (r >> 8) % len;
                break;
            case 2: /* insert a byte */
                if (len < FG_REPLAY_MAX) {
                    size_t at = len ? (r >> 8) % (len + 1) : 0;
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)(r >> 32);
                    len++;
                }
                break;
            default: /* set an interesting byte */
                if (len) {
                    static const uint8_t vals[] = {0x00, 0xff, 0x7f, 0x80,
                                                   0xc0, 0xdc, 0xdd, 0xdf,
                                                   '"', '\\', '[', '{'};
                    buf[(r >> 8) % len] = vals[(r >> 32) % sizeof(vals)];
                }
                break;
            }
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    size_t files = 0;
    static uint8_t data[FG_REPLAY_MAX];
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "replay: cannot open corpus %s\n", argv[a]);
            return 2;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[a], de->d_name);
            FILE *f = fopen(path, "rb");
            if (!f)
                continue;
            size_t n = fread(data, 1, sizeof(data), f);
            fclose(f);
            LLVMFuzzerTestOneInput(data, n);
            run_mutations(data, n);
            files++;
        }
        closedir(d);
    }
    if (files == 0) {
        fprintf(stderr, "replay: empty corpus\n");
        return 2;
    }
    printf("replay: %zu corpus files, %d mutations each: no crash\n", files,
           FG_REPLAY_MUTATIONS);
    return 0;
}
