// fuzz_util.h: what the harnesses share. Each harness defines
// LLVMFuzzerTestOneInput and calls the library function the program calls on
// that input; this header gives them a per-process scratch directory (removed at
// exit), whole-file writes into it, the test fixtures' path, and the split of one
// input into two files. Header-only: every harness is one translation unit.
#ifndef QL_FUZZ_UTIL_H
#define QL_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/log.h"

#ifndef QL_SOURCE_DIR
#error "QL_SOURCE_DIR must name the source tree (for tests/fixtures)"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Files a harness wrote into the scratch directory, removed at exit.
#define FZ_MAX_FILES 8
static char fz_dir_[512];
static char fz_names_[FZ_MAX_FILES][64];
static int fz_nnames_;

static inline void fz_cleanup_(void) {
    char p[1024];
    for (int i = 0; i < fz_nnames_; i++) {
        snprintf(p, sizeof p, "%s/%s", fz_dir_, fz_names_[i]);
        unlink(p);
    }
    if (fz_dir_[0]) rmdir(fz_dir_);
}

// The scratch directory of this process (created on first use), quiet logging.
static inline const char *fz_dir(void) {
    if (!fz_dir_[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fz_dir_, sizeof fz_dir_, "%s/qlora_fuzz_XXXXXX", t && t[0] ? t : "/tmp");
        if (!mkdtemp(fz_dir_)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_cleanup_);
        log_set_level(LOG_ERROR - 1);  // the library's messages are not findings
    }
    return fz_dir_;
}

// Writes len bytes as dir/name (name at most 63 bytes); remembers it for cleanup.
static inline void fz_write(const char *name, const void *data, size_t len) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fz_dir(), name);
    int known = 0;
    for (int i = 0; i < fz_nnames_; i++) known |= !strcmp(fz_names_[i], name);
    if (!known && fz_nnames_ < FZ_MAX_FILES) snprintf(fz_names_[fz_nnames_++], 64, "%s", name);
    FILE *f = fopen(p, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
        perror("fuzz: write");
        abort();
    }
}

// Removes dir/name (a file a harness wants absent for this input).
static inline void fz_remove(const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", fz_dir(), name);
    unlink(p);
}

// dir/name as a path (a static buffer per call site is the caller's).
static inline void fz_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", fz_dir(), name); }

// The separator between the two files of a two-file input (in the .dict too).
#define FZ_SEP "\n--qlora-fuzz-file--\n"

// Splits data at the first FZ_SEP: [0, *n1) is the first file, the rest after the
// separator the second (len 0 and the whole input as the first when there is none).
static inline void fz_split(const uint8_t *data, size_t size, size_t *n1, const uint8_t **second, size_t *n2) {
    size_t sl = strlen(FZ_SEP);
    for (size_t i = 0; i + sl <= size; i++)
        if (!memcmp(data + i, FZ_SEP, sl)) {
            *n1 = i, *second = data + i + sl, *n2 = size - i - sl;
            return;
        }
    *n1 = size, *second = data + size, *n2 = 0;
}

// A NUL-terminated copy of the input (the library's parsers take text + length,
// but the program's buffers from file_read_all are NUL-terminated too).
static inline char *fz_text(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

#define FZ_FIXTURE(rel) QL_SOURCE_DIR "/tests/fixtures/" rel

// The tiny_gqa fixture's config (read once): the model an adapter, a checkpoint or a
// request is checked against.
static inline const model_config *fz_fixture_config(void) {
    static model_config c;
    static int ready;
    if (!ready) {
        fz_dir();
        if (config_load_dir(&c, FZ_FIXTURE("models/tiny_gqa"))) {
            fprintf(stderr, "fuzz: %s\n", ql_errmsg());
            abort();
        }
        ready = 1;
    }
    return &c;
}

#endif
