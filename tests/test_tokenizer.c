// test_tokenizer.c: common/spm.h on the project's own tokenizer
// (tests/fixtures/tokenizer/tiny.model, trained by spm_train on corpus.txt):
// encode, decode and streaming decode equal Debian's spm_encode/spm_decode as
// recorded in tiny.txt; bad files and bad ids give errors, not crashes.
// The real Llama tokenizers are checked the same way in tests/real/test_tokenizer_real.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/spm.h"
#include "testutil.h"
#include "tokenizer_fixture.h"

// Writes n bytes to a fresh file under /tmp; returns its path (static buffer).
static const char *write_temp(const void *data, size_t n) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/qlora_test_tokenizer_XXXXXX");
    int fd = mkstemp(path);
    QL_ASSERT(fd >= 0);
    QL_ASSERT(write(fd, data, n) == (ssize_t)n);
    close(fd);
    return path;
}

// A load that must fail with code; the message must name the source.
static void check_load_fails(const char *path, int code, const char *msg_part) {
    spm *s = (spm *)1;
    int rc = spm_load_file(&s, path);
    CHECKF(rc == code, "loading %s: code %d (%s), want %d; message: %s", path, rc, ql_errname(rc), code, ql_errmsg());
    CHECKF(s == NULL, "loading %s: *out not NULL on failure", path);
    CHECKF(strstr(ql_errmsg(), path) != NULL, "message \"%s\" does not name %s", ql_errmsg(), path);
    if (msg_part) CHECKF(strstr(ql_errmsg(), msg_part) != NULL, "message \"%s\" lacks \"%s\"", ql_errmsg(), msg_part);
    fprintf(stderr, "  expected error: %s\n", ql_errmsg());
    spm_free(s);
}

static void test_bad_files(const char *model_path) {
    check_load_fails("/nonexistent/dir/tokenizer.model", QL_EIO, "cannot open tokenizer: No such file or directory");
    check_load_fails("/tmp", QL_EIO, NULL);  // a directory: read fails

    uint64_t seed = 0x5eed1234ULL;
    unsigned char junk[100];
    for (int i = 0; i < 100; i++) junk[i] = (unsigned char)test_rand_u64(&seed);
    const char *p = write_temp(junk, sizeof junk);
    check_load_fails(p, QL_EFORMAT, NULL);
    unlink(p);

    p = write_temp("", 0);
    check_load_fails(p, QL_EFORMAT, "empty");
    unlink(p);

    // a real model cut in half
    FILE *f = fopen(model_path, "rb");
    QL_ASSERT(f);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    QL_ASSERT(n > 100 && n < sizeof buf);
    p = write_temp(buf, n / 2);
    check_load_fails(p, QL_EFORMAT, NULL);
    unlink(p);

    spm *s = (spm *)1;
    CHECK(spm_load_bytes(&s, junk, sizeof junk) == QL_EFORMAT && s == NULL);
    CHECK(spm_load_bytes(&s, junk, 0) == QL_EFORMAT && s == NULL);
    spm_free(NULL);
    spm_stream_free(NULL);
}

static void test_bad_ids(const char *model_path) {
    spm *s = NULL;
    CHECK_OK(spm_load_file(&s, model_path));
    if (!s) return;
    int n = spm_vocab_size(s);
    int ids[3] = {spm_piece_to_id(s, "<0x41>"), n, 5};
    char *text = (char *)1;
    CHECK(spm_decode(s, ids, 3, &text) == QL_EINVAL && text == NULL);
    CHECKF(strstr(ql_errmsg(), "index 1") != NULL, "message: %s", ql_errmsg());
    ids[1] = -1;
    CHECK(spm_decode(s, ids, 3, &text) == QL_EINVAL && text == NULL);

    // empty input: no ids, but a pointer the caller can free
    int *out = NULL, nout = -1;
    CHECK_OK(spm_encode(s, "", 0, &out, &nout));
    CHECK(out != NULL && nout == 0);
    free(out);
    CHECK_OK(spm_decode(s, NULL, 0, &text));
    CHECK(text && text[0] == 0);
    free(text);

    // a bad id leaves the stream as it was: "é" split over two byte pieces
    spm_stream *st = NULL;
    CHECK_OK(spm_stream_init(&st, s));
    const char *t;
    size_t len;
    CHECK_OK(spm_stream_push(st, spm_piece_to_id(s, "<0xC3>"), &t, &len));
    CHECK(len == 0);
    CHECK(spm_stream_push(st, n + 7, &t, &len) == QL_EINVAL && len == 0);
    CHECK_OK(spm_stream_push(st, spm_piece_to_id(s, "<0xA9>"), &t, &len));
    CHECK(len == 2 && memcmp(t, "\xC3\xA9", 2) == 0);
    CHECK_OK(spm_stream_finish(st, &t, &len));
    CHECK(len == 0);
    spm_stream_free(st);
    spm_free(s);
}

int main(void) {
    const char *model = test_path(test_source_dir(), "tests/fixtures/tokenizer/tiny.model");
    const char *fixture = test_path(test_source_dir(), "tests/fixtures/tokenizer/tiny.txt");
    fixture_check(model, fixture);
    test_bad_files(model);
    test_bad_ids(model);
    return test_finish("test_tokenizer");
}
