// test_json: the JSON layer (common/json.c) is strict RFC 8259, refuses duplicate
// keys and NUL in strings, bounds nesting, parses in linear time, and reads only
// regular files. Each bad text must fail with a message that names the line and
// column (or the key / field) and says what was wrong.
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/json.h"
#include "testutil.h"

// text must be refused with a message containing each of want (NULL-terminated)
static void refuse(const char *text, size_t len, const char *want1, const char *want2) {
    json_doc d;
    int rc = json_parse(&d, text, len, "t.json");
    CHECKF(rc == QL_EFORMAT, "accepted (rc %d): %.*s", rc, (int)(len > 60 ? 60 : len), text);
    if (rc == QL_OK) { json_free(&d); return; }
    const char *m = ql_errmsg();
    CHECKF(strstr(m, "t.json") != NULL, "message does not name the source: %s", m);
    CHECKF(!want1 || strstr(m, want1), "for %.*s: expected '%s' in: %s", (int)(len > 60 ? 60 : len), text, want1, m);
    CHECKF(!want2 || strstr(m, want2), "for %.*s: expected '%s' in: %s", (int)(len > 60 ? 60 : len), text, want2, m);
}

static void bad(const char *text, const char *want1, const char *want2) { refuse(text, strlen(text), want1, want2); }

static void good(const char *text) {
    json_doc d;
    int rc = json_parse(&d, text, strlen(text), "t.json");
    CHECKF(rc == QL_OK, "refused %s: %s", text, ql_errmsg());
    if (!rc) json_free(&d);
}

static void grammar(void) {
    // what jsmn alone accepted, each with the position of the fault
    bad("{\"a\":1,,\"b\":2}", "line 1 column 8", "expected a key");
    bad("{,\"a\":1}", "line 1 column 2", "expected a key");
    bad("[,1]", "line 1 column 2", "expected a value");
    bad("[1,,2]", "line 1 column 4", "expected a value");
    bad("[1 2]", "line 1 column 4", "expected ','");
    bad("{\"a\":1 \"b\":2}", "line 1 column 8", "expected ','");
    bad("{\"a\":1,}", "line 1 column 7: a comma before '}'", NULL);
    bad("[1,\n ]", "line 1 column 3", "a comma before ']'");
    bad("{\"a\": }", "line 1 column 7", "missing value for key \"a\"");
    bad("{\"a\"}", "expected ':'", NULL);
    bad("{\"a\": 1 2}", "expected ',' or '}' after the value of key \"a\"", NULL);
    bad("{\"a\": {\"b\": 1} \"c\": 2}", "line 1 column 16", "after the value of key \"a\"");  // the outer key
    bad("{1: 2}", "expected a key", NULL);
    bad("[01]", "invalid number '01'", NULL);
    bad("[1.]", "invalid number '1.'", NULL);
    bad("[.5]", "expected a value", NULL);
    bad("[0x10]", "invalid number '0x10'", NULL);
    bad("[-]", "invalid number '-'", NULL);
    bad("[1e]", "invalid number '1e'", NULL);
    bad("[+1]", "expected a value", NULL);
    bad("[tru]", "invalid literal 'tru'", NULL);
    bad("[nul]", "invalid literal 'nul'", NULL);
    bad("[truex]", "invalid literal 'truex'", NULL);
    bad("[True]", "invalid literal 'True'", NULL);
    bad("{\"a\": NaN}", "invalid literal 'NaN'", NULL);
    bad("['a']", "expected a value", NULL);
    bad("{\"a\": 1}x", "unexpected text after the JSON value", NULL);
    bad("{\"a\": 1} {}", "unexpected text after", NULL);
    bad("", "empty input", NULL);
    bad("   \n", "empty input", NULL);
    bad("{\"a\": [1, 2}", "expected ',' or ']'", NULL);
    bad("{\"a\": 1", "unexpected end of input", NULL);
    bad("\"just a string\"", "expected a JSON object or array", NULL);
    bad("42", "expected a JSON object or array", NULL);
    // and what stays valid
    good("{}");
    good("[]");
    good(" \n\t{\"a\": [1, -0, 0.5, -1.25e+10, 2E-3, true, false, null, \"\", {}], \"b\": {\"c\": []}}\r\n");
    good("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"]");
}

static void strings(void) {
    bad("[\"a\x01z\"]", "line 1 column 4", "raw control character (0x01)");
    bad("[\"tab\there\"]", "raw control character (0x09)", NULL);
    bad("[\"line\nbreak\"]", "raw control character (0x0A)", NULL);
    refuse("[\"a\0b\"]", 7, "raw control character (0x00)", NULL);  // a NUL byte in the text
    bad("[\"\xff\"]", "invalid UTF-8 (byte 0xFF)", NULL);
    bad("[\"\xc3\"]", "invalid UTF-8", NULL);                 // a cut character
    bad("[\"\xc0\xaf\"]", "invalid UTF-8", NULL);             // overlong '/'
    bad("[\"\xed\xa0\x80\"]", "invalid UTF-8", NULL);         // an encoded surrogate
    bad("[\"\xf4\x90\x80\x80\"]", "invalid UTF-8", NULL);     // past U+10FFFF
    bad("[\"\\x41\"]", "invalid escape '\\x'", NULL);
    bad("[\"\\u12\"]", "four hex digits", NULL);
    bad("[\"abc", "unexpected end of input in a string", NULL);
    good("[\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"]");

    // \u0000 parses (it is valid JSON) but no string we read may hold it
    const char *t = "{\"prompt\": \"a\\u0000b\", \"ok\": \"x\\u00e9\", \"lone\": \"\\udc00\"}";
    json_doc d;
    CHECK_OK(json_parse(&d, t, strlen(t), "t.json"));
    char *s = NULL;
    CHECK(json_get_string(&d, json_find(&d, 0, "prompt"), "prompt", &s, NULL) == QL_EFORMAT);
    CHECKF(strstr(ql_errmsg(), "field 'prompt'") && strstr(ql_errmsg(), "NUL"), "%s", ql_errmsg());
    CHECK(json_get_string(&d, json_find(&d, 0, "lone"), "lone", &s, NULL) == QL_EFORMAT);
    size_t n = 0;
    CHECK_OK(json_get_string(&d, json_find(&d, 0, "ok"), "ok", &s, &n));
    CHECK(n == 3 && !strcmp(s, "x\xc3\xa9"));
    free(s);
    json_free(&d);
}

static void duplicates(void) {
    bad("{\"rope_theta\": 10000, \"hidden_size\": 8, \"rope_theta\": 500000}", "key 'rope_theta' appears twice", "line 1 column 41");
    bad("{\"a\": {\"x\": 1, \"x\": 2}}", "key 'x' appears twice", NULL);
    bad("[{\"a\": 1}, {\"b\": 1, \"\\u0062\": 2}]", "key 'b' appears twice", NULL);  // equal once unescaped
    bad("{\"a\\u0000\": 1, \"b\": 2}", "NUL", NULL);
    good("{\"a\": {\"a\": {\"a\": 1}}, \"b\": [{\"a\": 1}, {\"a\": 2}]}");  // the same key in different objects
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void depth(void) {
    char buf[2 * JSON_MAX_DEPTH + 8];
    size_t n = 0;
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf[n++] = '[';
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf[n++] = ']';
    buf[n] = 0;
    good(buf);  // exactly the limit
    memmove(buf + 1, buf, n + 1);
    buf[0] = '[';
    buf[n + 1] = ']', buf[n + 2] = 0;
    bad(buf, "nested deeper than 128 levels", "line 1 column 129");

    // the case: a 600 KB line nested 300k deep took 249 s; now refused at
    // once (the time is printed, not asserted: the checks are what fail)
    size_t big = 600000;
    char *t = malloc(big + 1);
    for (size_t i = 0; i < big / 2; i++) t[i] = '[', t[big / 2 + i] = ']';
    t[big] = 0;
    double t0 = now();
    refuse(t, big, "nested deeper than 128 levels", NULL);
    printf("  600 KB nested 300000 deep: refused in %.4f s\n", now() - t0);
    // and a wide document of the same size parses, and walks in linear time with
    // json_item over k = 0, 1, 2, ...
    long items = (long)(big - 1) / 2;
    t[0] = '[';
    for (long k = 0; k < items; k++) t[1 + 2 * k] = '1', t[2 + 2 * k] = k + 1 < items ? ',' : ']';
    json_doc d;
    t0 = now();
    CHECK_OK(json_parse(&d, t, (size_t)(1 + 2 * items), "wide.json"));
    long sum = 0;
    for (int k = 0; k < json_size(&d, 0); k++) sum += json_type(&d, json_item(&d, 0, k)) == JSON_PRIMITIVE;
    CHECK(sum == json_size(&d, 0) && sum == items);
    printf("  600 KB array of %ld items: parsed and walked in %.4f s\n", sum, now() - t0);
    json_free(&d);
    // an object of 100k members, looked up by member index in order
    size_t cap = 100000 * 16 + 16, m = 0;
    char *o = malloc(cap);
    o[m++] = '{';
    for (int k = 0; k < 100000; k++) m += (size_t)snprintf(o + m, cap - m, "%s\"k%d\": %d", k ? "," : "", k, k);
    o[m++] = '}';
    t0 = now();
    CHECK_OK(json_parse(&d, o, m, "members.json"));
    int ok = 1;
    for (int k = 0; k < json_size(&d, 0) && ok; k++) {
        int val, key = json_member(&d, 0, k, &val);
        long long x = -1;
        ok = key > 0 && json_get_int(&d, val, "k", &x) == QL_OK && x == k;
    }
    CHECK(ok);
    printf("  100000 members: parsed, duplicates checked and walked in %.4f s\n", now() - t0);
    json_free(&d);
    free(o);
    free(t);
}

static void files(void) {
    char dir[] = "/tmp/test_json_XXXXXX", path[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/fifo.json", dir);
    CHECK(mkfifo(path, 0600) == 0);
    char *buf = NULL;
    size_t len = 0;
    // a FIFO with no writer: the old reader blocked here for ever
    CHECK(file_read_all(path, 1 << 20, &buf, &len) == QL_EIO);
    CHECKF(strstr(ql_errmsg(), "not a regular file") && strstr(ql_errmsg(), "fifo.json"), "%s", ql_errmsg());
    unlink(path);
    CHECK(file_read_all(dir, 1 << 20, &buf, &len) == QL_EIO);  // a directory
    snprintf(path, sizeof path, "%s/big.json", dir);
    FILE *f = fopen(path, "wb");
    fputs("{\"a\": 1}", f);
    fclose(f);
    CHECK(file_read_all(path, 4, &buf, &len) == QL_EFORMAT);  // past the limit
    CHECKF(strstr(ql_errmsg(), "more than the limit of 4"), "%s", ql_errmsg());
    CHECK_OK(file_read_all(path, 1 << 20, &buf, &len));
    CHECK(len == 8 && buf[8] == 0);
    free(buf);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    grammar();
    strings();
    duplicates();
    depth();
    files();
    return test_finish("test_json");
}
