// replay_main.c: runs a harness's LLVMFuzzerTestOneInput over every file of the
// corpus directories (or single files) given, without libFuzzer, so that the
// normal build (and the sanitizer build) replays each corpus as a ctest test.
// A finding aborts (a crash, an assertion, a sanitizer report); a clean pass
// prints how many inputs ran and exits 0.
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "replay: cannot open %s\n", path); return 1; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    // an exact-size buffer, as libFuzzer gives: a read past the end is an ASan report
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        fclose(f), free(buf);
        return 1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    int files = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) { fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]); return 1; }
        if (!S_ISDIR(st.st_mode)) { bad |= run_file(argv[i]), files++; continue; }
        DIR *d = opendir(argv[i]);
        if (!d) { fprintf(stderr, "replay: cannot open directory %s\n", argv[i]); return 1; }
        char **names = NULL;
        int n = 0, cap = 0;
        for (struct dirent *e; (e = readdir(d));) {
            if (e->d_name[0] == '.') continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                names = realloc(names, sizeof *names * (size_t)cap);
                if (!names) { fprintf(stderr, "replay: out of memory\n"); return 1; }
            }
            names[n] = malloc(strlen(argv[i]) + strlen(e->d_name) + 2);
            if (!names[n]) { fprintf(stderr, "replay: out of memory\n"); return 1; }
            sprintf(names[n], "%s/%s", argv[i], e->d_name);
            n++;
        }
        closedir(d);
        qsort(names, (size_t)n, sizeof *names, cmp);  // a stable order makes a report reproducible
        for (int k = 0; k < n; k++) {
            if (stat(names[k], &st) == 0 && S_ISREG(st.st_mode)) bad |= run_file(names[k]), files++;
            free(names[k]);
        }
        free(names);
    }
    if (files == 0) { fprintf(stderr, "replay: no input files (an empty corpus is a mistake)\n"); return 1; }
    printf("replayed %d inputs\n", files);
    return bad;
}
