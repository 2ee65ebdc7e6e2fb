// json.c: see json.h. The jsmn implementation is compiled here, in strict mode and
// with parent links (without them jsmn finds a value's container by walking back
// over every token before it: quadratic in an object's members, 30 s for a
// tokenizer.json; jsmn_types.h must say the same, since the token struct changes).
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"

static void where(const json_doc *d, size_t pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < pos && i < d->len; i++) {
        if (d->js[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

int json_parse(json_doc *d, const char *js, size_t len, const char *what) {
    memset(d, 0, sizeof *d);
    d->js = js, d->len = len, d->what = what ? what : "json";
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, js, len, NULL, 0);
    if (n == JSMN_ERROR_INVAL || n == JSMN_ERROR_PART || n <= 0) {
        int line, col;
        where(d, p.pos, &line, &col);
        return ql_err(QL_EFORMAT, "%s: invalid JSON at line %d column %d: %s", d->what, line, col,
                      n == JSMN_ERROR_PART ? "unexpected end of input" : n == 0 ? "empty input" : "malformed JSON");
    }
    d->tok = malloc(sizeof(jsmntok_t) * n);
    if (!d->tok) return ql_err(QL_ENOMEM, "%s: out of memory parsing JSON", d->what);
    jsmn_init(&p);
    d->ntok = jsmn_parse(&p, js, len, d->tok, n);
    if (d->ntok != n) { json_free(d); return ql_err(QL_EFORMAT, "%s: invalid JSON", d->what); }
    // jsmn stops after the first value; anything but whitespace after it is an error
    size_t end = (size_t)d->tok[0].end;
    for (size_t i = end; i < len; i++) {
        char c = js[i];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            int line, col;
            where(d, i, &line, &col);
            json_free(d);
            return ql_err(QL_EFORMAT, "%s: unexpected text after the JSON value at line %d column %d", what, line, col);
        }
    }
    if (d->tok[0].type != JSMN_OBJECT && d->tok[0].type != JSMN_ARRAY) {
        json_free(d);
        return ql_err(QL_EFORMAT, "%s: expected a JSON object or array at the top level", what);
    }
    // jsmn (even strict) lets a comma end an object or array: {"a": 1,}
    for (size_t i = 0, in_str = 0; i < end; i++) {
        char c = js[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        if (c != ',') continue;
        size_t k = i + 1;
        while (k < end && (js[k] == ' ' || js[k] == '\n' || js[k] == '\r' || js[k] == '\t')) k++;
        if (k < end && (js[k] == '}' || js[k] == ']')) {
            int line, col;
            where(d, i, &line, &col);
            json_free(d);
            return ql_err(QL_EFORMAT, "%s: invalid JSON at line %d column %d: a comma before '%c'", what, line, col, js[k]);
        }
    }
    return QL_OK;
}

void json_free(json_doc *d) {
    free(d->tok);
    d->tok = NULL;
    d->ntok = 0;
}

int json_type(const json_doc *d, int i) { return i >= 0 && i < d->ntok ? (int)d->tok[i].type : 0; }
int json_size(const json_doc *d, int i) { return i >= 0 && i < d->ntok ? d->tok[i].size : 0; }

int json_next(const json_doc *d, int i) {
    int end = d->tok[i].end;
    for (i++; i < d->ntok && d->tok[i].start < end; i++) {}
    return i;
}

int json_member(const json_doc *d, int obj, int k, int *val) {
    if (json_type(d, obj) != JSMN_OBJECT || k < 0 || k >= d->tok[obj].size) return -1;
    int i = obj + 1;
    for (int j = 0; j < k; j++) i = json_next(d, i + 1);
    if (val) *val = i + 1;
    return i;
}

int json_find(const json_doc *d, int obj, const char *key) {
    if (json_type(d, obj) != JSMN_OBJECT) return -1;
    int i = obj + 1;
    for (int j = 0; j < d->tok[obj].size; j++) {
        if (json_eq(d, i, key)) return i + 1;
        i = json_next(d, i + 1);
    }
    return -1;
}

int json_item(const json_doc *d, int arr, int k) {
    if (json_type(d, arr) != JSMN_ARRAY || k < 0 || k >= d->tok[arr].size) return -1;
    int i = arr + 1;
    for (int j = 0; j < k; j++) i = json_next(d, i);
    return i;
}

int json_eq(const json_doc *d, int i, const char *s) {
    if (json_type(d, i) != JSMN_STRING) return 0;
    size_t n = (size_t)(d->tok[i].end - d->tok[i].start);
    return strlen(s) == n && memcmp(d->js + d->tok[i].start, s, n) == 0;
}

int json_is_null(const json_doc *d, int i) {
    return json_type(d, i) == JSMN_PRIMITIVE && d->tok[i].end - d->tok[i].start == 4 &&
           memcmp(d->js + d->tok[i].start, "null", 4) == 0;
}

const char *json_type_name(const json_doc *d, int i) {
    switch (json_type(d, i)) {
    case JSMN_OBJECT: return "an object";
    case JSMN_ARRAY: return "an array";
    case JSMN_STRING: return "a string";
    case JSMN_PRIMITIVE: {
        char c = d->js[d->tok[i].start];
        return c == 'n' ? "null" : (c == 't' || c == 'f') ? "a boolean" : "a number";
    }
    }
    return "nothing";
}

static int expected(const json_doc *d, int i, const char *name, const char *what) {
    return ql_err(QL_EFORMAT, "%s: field '%s': expected %s, found %s", d->what, name, what, json_type_name(d, i));
}

int json_get_double(const json_doc *d, int i, const char *name, double *out) {
    if (json_type(d, i) != JSMN_PRIMITIVE || !strcmp(json_type_name(d, i), "null") ||
        !strcmp(json_type_name(d, i), "a boolean"))
        return expected(d, i, name, "a number");
    char buf[64];
    int n = d->tok[i].end - d->tok[i].start;
    if (n <= 0 || n >= (int)sizeof buf) return expected(d, i, name, "a number");
    memcpy(buf, d->js + d->tok[i].start, n);
    buf[n] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end || errno == ERANGE)
        return ql_err(QL_EFORMAT, "%s: field '%s': expected a number, found '%s'", d->what, name, buf);
    *out = v;
    return QL_OK;
}

int json_get_int(const json_doc *d, int i, const char *name, long long *out) {
    double v = 0;
    QL_CHECK(json_get_double(d, i, name, &v));
    if (v > 9.0e15 || v < -9.0e15 || v != (double)(long long)v)
        return ql_err(QL_EFORMAT, "%s: field '%s': expected an integer, found %g", d->what, name, v);
    *out = (long long)v;
    return QL_OK;
}

int json_get_bool(const json_doc *d, int i, const char *name, int *out) {
    if (json_type(d, i) == JSMN_PRIMITIVE) {
        int n = d->tok[i].end - d->tok[i].start;
        const char *s = d->js + d->tok[i].start;
        if (n == 4 && !memcmp(s, "true", 4)) { *out = 1; return QL_OK; }
        if (n == 5 && !memcmp(s, "false", 5)) { *out = 0; return QL_OK; }
    }
    return expected(d, i, name, "true or false");
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_u4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(s[k]);
        if (h < 0) return 0;
        v = v * 16 + (unsigned)h;
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

int json_get_string(const json_doc *d, int i, const char *name, char **out, size_t *len_out) {
    if (json_type(d, i) != JSMN_STRING) return expected(d, i, name, "a string");
    const char *s = d->js + d->tok[i].start;
    size_t n = (size_t)(d->tok[i].end - d->tok[i].start), k = 0;
    char *o = malloc(n + 1);
    if (!o) return ql_err(QL_ENOMEM, "%s: out of memory", d->what);
    for (size_t j = 0; j < n; j++) {
        char c = s[j];
        if (c != '\\') { o[k++] = c; continue; }
        if (++j >= n) goto bad;
        switch (s[j]) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (j + 4 >= n || !read_u4(s + j + 1, &cp)) goto bad;
            j += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {  // surrogate pair
                if (j + 6 >= n || s[j + 1] != '\\' || s[j + 2] != 'u' || !read_u4(s + j + 3, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto bad;
            }
            k += put_utf8(o + k, cp);  // at most 4 bytes for >= 6 input bytes
            break;
        }
        default: goto bad;
        }
    }
    o[k] = 0;
    *out = o;
    if (len_out) *len_out = k;
    return QL_OK;
bad:
    free(o);
    return ql_err(QL_EFORMAT, "%s: field '%s': invalid escape sequence in string", d->what, name);
}

int json_get_ranged(const json_doc *d, int obj, const char *name, int is_int, int null_absent, double lo, double hi,
                    double *out) {
    int v = json_find(d, obj, name);
    if (v < 0 || (null_absent && json_is_null(d, v))) return QL_OK;
    double x;
    if (is_int) {
        long long k = 0;
        QL_CHECK(json_get_int(d, v, name, &k));
        x = (double)k;
    } else QL_CHECK(json_get_double(d, v, name, &x));
    if (!(x >= lo && x <= hi))
        return ql_err(QL_EFORMAT, "%s: field '%s': expected a value in [%g, %g], found %g", d->what, name, lo, hi, x);
    *out = x;
    return QL_OK;
}

int json_bad_member(const json_doc *d, int *two_values) {
    for (int i = 0; i < d->ntok; i++) {
        if (d->tok[i].type != JSMN_OBJECT) continue;
        for (int k = 0; k < d->tok[i].size; k++) {
            int key = json_member(d, i, k, NULL);
            if (key < 0 || d->tok[key].size == 1) continue;
            *two_values = d->tok[key].size > 1;
            return key;
        }
    }
    return -1;
}

int file_read_all(const char *path, size_t limit, char **out, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return ql_err(QL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ql_err(QL_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > limit) {
        fclose(f);
        return ql_err(QL_EFORMAT, "%s: file is %lld bytes, more than the limit of %zu", path,
                      (long long)st.st_size, limit);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) { fclose(f); return ql_err(QL_ENOMEM, "%s: out of memory", path); }
    if (fread(buf, 1, n, f) != n) {
        fclose(f);
        free(buf);
        return ql_err(QL_EIO, "%s: read failed", path);
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    if (len_out) *len_out = n;
    return QL_OK;
}

int utf8_seq_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    int k;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) k = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 2;
        if (c == 0xE0) lo = 0xA0;  // overlong
        if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 3;
        if (c == 0xF0) lo = 0x90;  // overlong
        if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else return 0;
    for (int j = 1; j <= k; j++) {
        if ((size_t)j >= n) return 0;
        unsigned b = s[j];
        if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xBF)) return 0;
    }
    return k + 1;
}

char *json_quote(const char *s) {
    size_t n = strlen(s), k = 0;
    char *o = malloc(6 * n + 3);
    if (!o) return NULL;
    o[k++] = '"';
    const unsigned char *end = (const unsigned char *)s + n;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        int u = c < 0x80 ? 1 : utf8_seq_len(p, (size_t)(end - p));
        if (u > 1) {  // a whole character
            memcpy(o + k, p, (size_t)u);
            k += (size_t)u, p += u - 1;
        } else if (u == 0) {  // a stray byte (generation cut a character): U+FFFD keeps the JSON valid
            memcpy(o + k, "\\ufffd", 6);
            k += 6;
        } else if (c == '"' || c == '\\') o[k++] = '\\', o[k++] = (char)c;
        else if (c == '\n') o[k++] = '\\', o[k++] = 'n';
        else if (c == '\t') o[k++] = '\\', o[k++] = 't';
        else if (c == '\r') o[k++] = '\\', o[k++] = 'r';
        else if (c < 0x20) k += (size_t)sprintf(o + k, "\\u%04x", c);
        else o[k++] = (char)c;
    }
    o[k++] = '"';
    o[k] = 0;
    return o;
}
