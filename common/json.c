// json.c: see json.h. The jsmn implementation is compiled here, in strict mode and
// with parent links (without them jsmn finds a value's container by walking back
// over every token before it: quadratic in an object's members, 30 s for a
// tokenizer.json; jsmn_types.h must say the same, since the token struct changes).
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

static void where(const json_doc *d, size_t pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < pos && i < d->len; i++) {
        if (d->js[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

// "what: invalid JSON at line L column C: why" for the byte at pos (callers such as
// requests.c rely on this shape).
static int bad_at(const json_doc *d, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad_at(const json_doc *d, size_t pos, const char *fmt, ...) {
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    int line, col;
    where(d, pos, &line, &col);
    return ql_err(QL_EFORMAT, "%s: invalid JSON at line %d column %d: %s", d->what, line, col, why);
}

static int is_ws(unsigned char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// The string starting at the quote s[*p]: escapes well formed, no raw control
// byte (NUL included), well-formed UTF-8. *p ends past the closing quote.
static int check_string(const json_doc *d, size_t *p) {
    const unsigned char *s = (const unsigned char *)d->js;
    size_t i = *p + 1, n = d->len;
    while (i < n) {
        unsigned c = s[i];
        if (c == '"') { *p = i + 1; return QL_OK; }
        if (c < 0x20) return bad_at(d, i, "a raw control character (0x%02X) in a string (write it as an escape)", c);
        if (c == '\\') {
            if (i + 1 >= n) break;
            char e = (char)s[i + 1];
            if (e == 'u') {
                for (int k = 2; k < 6; k++)
                    if (i + k >= n || hexval((char)s[i + k]) < 0) return bad_at(d, i, "\\u needs four hex digits");
                i += 6;
            } else if (strchr("\"\\/bfnrt", e) && e) i += 2;
            else return bad_at(d, i, "invalid escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? e : '?');
            continue;
        }
        if (c < 0x80) { i++; continue; }
        int u = utf8_seq_len(s + i, n - i);
        if (!u) return bad_at(d, i, "invalid UTF-8 (byte 0x%02X) in a string", c);
        i += (size_t)u;
    }
    return bad_at(d, n, "unexpected end of input in a string");
}

// A number as RFC 8259 writes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
// The run of number-like bytes at *p is taken whole, so "01", "1.", "0x10", "-"
// and "1e" are each one error that quotes them.
static int check_number(const json_doc *d, size_t *p) {
    const char *s = d->js;
    size_t b = *p, e = b;
    while (e < d->len && (isalnum((unsigned char)s[e]) || s[e] == '.' || s[e] == '+' || s[e] == '-')) e++;
    size_t i = b;
    if (i < e && s[i] == '-') i++;
    int ok = i < e && isdigit((unsigned char)s[i]);
    if (ok && s[i] == '0') i++;
    else while (i < e && isdigit((unsigned char)s[i])) i++;
    if (ok && i < e && s[i] == '.') {
        i++;
        ok = i < e && isdigit((unsigned char)s[i]);
        while (i < e && isdigit((unsigned char)s[i])) i++;
    }
    if (ok && i < e && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < e && (s[i] == '+' || s[i] == '-')) i++;
        ok = i < e && isdigit((unsigned char)s[i]);
        while (i < e && isdigit((unsigned char)s[i])) i++;
    }
    if (!ok || i != e) return bad_at(d, b, "invalid number '%.*s'", (int)(e - b > 40 ? 40 : e - b), s + b);
    *p = e;
    return QL_OK;
}

// true, false or null, and nothing that merely begins like one ("tru", "nul", "truex").
static int check_literal(const json_doc *d, size_t *p) {
    const char *s = d->js;
    size_t b = *p, e = b;
    while (e < d->len && isalnum((unsigned char)s[e])) e++;
    size_t n = e - b;
    if ((n == 4 && !memcmp(s + b, "true", 4)) || (n == 5 && !memcmp(s + b, "false", 5)) ||
        (n == 4 && !memcmp(s + b, "null", 4))) {
        *p = e;
        return QL_OK;
    }
    if (n == 0) {
        unsigned char c = (unsigned char)s[b];
        if (c >= 0x20 && c < 0x7f) return bad_at(d, b, "expected a value, found '%c'", c);
        return bad_at(d, b, "expected a value, found byte 0x%02X", c);
    }
    return bad_at(d, b, "invalid literal '%.*s' (expected true, false, null, a number, a string, an object or an array)",
                  (int)(n > 40 ? 40 : n), s + b);
}

// The whole text against RFC 8259's grammar in one pass, before jsmn sees it:
// jsmn (even strict) takes ",," and leading commas, items without commas, "01",
// "0x10", bare words typed by their first letter, keys without values, and any
// byte in strings; and its parent walk makes closing brackets cost the depth, so
// the depth is bounded here (JSON_MAX_DEPTH) to keep parsing linear.
static int check_grammar(const json_doc *d) {
    const char *s = d->js;
    size_t n = d->len, p = 0;
    char stack[JSON_MAX_DEPTH];
    int depth = 0;
    size_t key_at[JSON_MAX_DEPTH], key_len[JSON_MAX_DEPTH];  // each open object's last key (for messages)
    enum { VALUE, VALUE_OR_END, KEY, KEY_OR_END, AFTER } st = VALUE;
    for (;;) {
        while (p < n && is_ws((unsigned char)s[p])) p++;
        if (p == n) {
            if (st == AFTER && depth == 0) return QL_OK;
            return bad_at(d, p, st == VALUE && depth == 0 ? "empty input" : "unexpected end of input");
        }
        char c = s[p];
        if (st == KEY_OR_END && c == '}') { depth--, p++, st = AFTER; continue; }
        if (st == VALUE_OR_END && c == ']') { depth--, p++, st = AFTER; continue; }
        if (st == KEY || st == KEY_OR_END) {
            if (c != '"') {
                if (c == ',' || c == '}') return bad_at(d, p, "expected a key (a string), found '%c'", c);
                return bad_at(d, p, "expected a key (a string)");
            }
            key_at[depth - 1] = p + 1;
            QL_CHECK(check_string(d, &p));
            key_len[depth - 1] = p - 1 - key_at[depth - 1];
            while (p < n && is_ws((unsigned char)s[p])) p++;
            if (p == n) return bad_at(d, p, "unexpected end of input after a key");
            if (s[p] != ':') return bad_at(d, p, "expected ':' after a key");
            p++, st = VALUE;
            continue;
        }
        if (st == AFTER) {
            if (depth == 0) return bad_at(d, p, "unexpected text after the JSON value");
            char close = stack[depth - 1] == '{' ? '}' : ']';
            if (c == close) { depth--, p++; continue; }
            if (c != ',' && stack[depth - 1] == '{')
                return bad_at(d, p, "expected ',' or '}' after the value of key \"%.*s\"",
                              (int)(key_len[depth - 1] > 60 ? 60 : key_len[depth - 1]), s + key_at[depth - 1]);
            if (c != ',')
                return bad_at(d, p, "expected ',' or '%c' after %s", close,
                              stack[depth - 1] == '{' ? "an object member" : "an array item");
            size_t comma = p++;
            st = stack[depth - 1] == '{' ? KEY : VALUE;
            while (p < n && is_ws((unsigned char)s[p])) p++;
            if (p < n && (s[p] == '}' || s[p] == ']')) return bad_at(d, comma, "a comma before '%c'", s[p]);
            continue;
        }
        // a value
        if (c == '{' || c == '[') {
            if (depth == JSON_MAX_DEPTH) return bad_at(d, p, "nested deeper than %d levels", JSON_MAX_DEPTH);
            stack[depth++] = c;
            p++, st = c == '{' ? KEY_OR_END : VALUE_OR_END;
            continue;
        }
        if ((c == ',' || c == '}') && depth && stack[depth - 1] == '{')
            return bad_at(d, p, "missing value for key \"%.*s\"",
                          (int)(key_len[depth - 1] > 60 ? 60 : key_len[depth - 1]), s + key_at[depth - 1]);
        if (c == ',') return bad_at(d, p, "expected a value, found ','");
        if (c == '"') QL_CHECK(check_string(d, &p));
        else if (c == '-' || isdigit((unsigned char)c)) QL_CHECK(check_number(d, &p));
        else QL_CHECK(check_literal(d, &p));
        st = AFTER;
    }
}

// ---- strings ----

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

enum { UNESC_OK = 0, UNESC_BAD, UNESC_NUL };

// The n bytes of a string token's body, unescaped into o (room for n bytes: no
// escape grows), *k bytes. UNESC_BAD for a broken escape or a lone surrogate,
// UNESC_NUL for \u0000 (a NUL would silently cut the C string it becomes).
static int unescape(const char *s, size_t n, char *o, size_t *k_out) {
    size_t k = 0;
    for (size_t j = 0; j < n; j++) {
        char c = s[j];
        if (c != '\\') { o[k++] = c; continue; }
        if (++j >= n) return UNESC_BAD;
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
            if (j + 4 >= n || !read_u4(s + j + 1, &cp)) return UNESC_BAD;
            j += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {  // surrogate pair
                if (j + 6 >= n || s[j + 1] != '\\' || s[j + 2] != 'u' || !read_u4(s + j + 3, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    return UNESC_BAD;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return UNESC_BAD;
            }
            if (cp == 0) return UNESC_NUL;
            k += put_utf8(o + k, cp);  // at most 4 bytes for >= 6 input bytes
            break;
        }
        default: return UNESC_BAD;
        }
    }
    *k_out = k;
    return UNESC_OK;
}

// ---- duplicate keys ----

typedef struct {
    int parent, tok;
    const char *p;  // the key, unescaped
    size_t n;
} key_ref;

static int cmp_key(const void *a, const void *b) {
    const key_ref *x = a, *y = b;
    if (x->parent != y->parent) return x->parent < y->parent ? -1 : 1;
    size_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, m);
    if (c) return c;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return x->tok < y->tok ? -1 : x->tok > y->tok;
}

// A key twice in one object is refused: Python's json (so transformers and PEFT)
// takes the last value, jsmn lookups the first, and a file that means two things
// is not one we guess about. Keys compare unescaped ("a" == "\u0061"). O(N log N).
static int check_duplicates(json_doc *d) {
    int nk = 0;
    for (int i = 1; i < d->ntok; i++) nk += d->tok[d->tok[i].parent].type == JSMN_OBJECT;
    if (nk < 2) return QL_OK;
    key_ref *k = malloc(sizeof *k * (size_t)nk);
    char *buf = NULL;  // unescaped copies of the keys that have escapes
    size_t escaped = 0, used = 0;
    for (int i = 1; i < d->ntok; i++)
        if (d->tok[d->tok[i].parent].type == JSMN_OBJECT &&
            memchr(d->js + d->tok[i].start, '\\', (size_t)(d->tok[i].end - d->tok[i].start)))
            escaped += (size_t)(d->tok[i].end - d->tok[i].start);
    if (escaped) buf = malloc(escaped);
    if (!k || (escaped && !buf)) {
        free(k), free(buf);
        return ql_err(QL_ENOMEM, "%s: out of memory", d->what);
    }
    int m = 0, rc = QL_OK;
    for (int i = 1; i < d->ntok && !rc; i++) {
        if (d->tok[d->tok[i].parent].type != JSMN_OBJECT) continue;
        const char *s = d->js + d->tok[i].start;
        size_t n = (size_t)(d->tok[i].end - d->tok[i].start), out = n;
        if (memchr(s, '\\', n)) {
            int u = unescape(s, n, buf + used, &out);
            if (u != UNESC_OK)
                rc = bad_at(d, (size_t)d->tok[i].start, u == UNESC_NUL ? "a NUL (\\u0000) in a key"
                                                                        : "invalid escape sequence in a key");
            s = buf + used, used += out;
        }
        k[m++] = (key_ref){d->tok[i].parent, i, s, out};
    }
    if (!rc) qsort(k, (size_t)m, sizeof *k, cmp_key);
    for (int j = 1; j < m && !rc; j++)
        if (k[j].parent == k[j - 1].parent && k[j].n == k[j - 1].n && !memcmp(k[j].p, k[j - 1].p, k[j].n)) {
            rc = bad_at(d, (size_t)d->tok[k[j].tok].start - 1,  // at its opening quote
                        "key '%.*s' appears twice in one object (duplicate keys are refused)",
                        (int)(k[j].n > 60 ? 60 : k[j].n), k[j].p);
        }
    free(k), free(buf);
    return rc;
}

int json_parse(json_doc *d, const char *js, size_t len, const char *what) {
    memset(d, 0, sizeof *d);
    d->js = js, d->len = len, d->what = what ? what : "json";
    d->c_arr = d->c_obj = -1;
    if (len > (size_t)INT_MAX / 2) return ql_err(QL_EFORMAT, "%s: %zu bytes of JSON is past the limit of 1 GiB", d->what, len);
    QL_CHECK(check_grammar(d));
    size_t first = 0;
    while (is_ws((unsigned char)js[first])) first++;  // the grammar found a value before len
    if (js[first] != '{' && js[first] != '[')
        return ql_err(QL_EFORMAT, "%s: expected a JSON object or array at the top level", d->what);
    // well formed: jsmn (strict, parent links) now only builds the tokens, in time linear
    // in the text (bounded depth)
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, js, len, NULL, 0);
    if (n <= 0) return ql_err(QL_EFORMAT, "%s: invalid JSON (jsmn: %d)", d->what, n);
    d->tok = malloc(sizeof(jsmntok_t) * (size_t)n);
    d->next = malloc(sizeof(int) * (size_t)n);
    if (!d->tok || !d->next) { json_free(d); return ql_err(QL_ENOMEM, "%s: out of memory parsing JSON", d->what); }
    jsmn_init(&p);
    d->ntok = jsmn_parse(&p, js, len, d->tok, (unsigned)n);
    if (d->ntok != n) { json_free(d); return ql_err(QL_EFORMAT, "%s: invalid JSON", d->what); }
    // next[i]: the token just past i's subtree; children come after their container,
    // so one backward pass carries each subtree's end up to it. jsmn makes a member's
    // key the parent of its value, but a key's own subtree is the key alone: a value
    // reports to the object.
    for (int i = 0; i < n; i++) d->next[i] = i + 1;
    for (int i = n - 1; i > 0; i--) {
        int par = d->tok[i].parent;
        if (par >= 0 && d->tok[par].type == JSMN_STRING) par = d->tok[par].parent;
        if (par >= 0 && d->next[i] > d->next[par]) d->next[par] = d->next[i];
    }
    int rc = check_duplicates(d);
    if (rc) json_free(d);
    return rc;
}

void json_free(json_doc *d) {
    free(d->tok);
    free(d->next);
    d->tok = NULL;
    d->next = NULL;
    d->ntok = 0;
}

int json_type(const json_doc *d, int i) { return i >= 0 && i < d->ntok ? (int)d->tok[i].type : 0; }
int json_size(const json_doc *d, int i) { return i >= 0 && i < d->ntok ? d->tok[i].size : 0; }

int json_next(const json_doc *d, int i) { return i >= 0 && i < d->ntok ? d->next[i] : d->ntok; }

// json_member and json_item remember where the last call ended (the fields are a
// cache, not the document), so a loop over k = 0, 1, 2, ... walks the container once.
int json_member(const json_doc *d, int obj, int k, int *val) {
    if (json_type(d, obj) != JSMN_OBJECT || k < 0 || k >= d->tok[obj].size) return -1;
    json_doc *c = (json_doc *)d;
    int i = obj + 1, j = 0;
    if (c->c_obj == obj && c->c_obj_k <= k) i = c->c_obj_i, j = c->c_obj_k;
    for (; j < k; j++) i = json_next(d, i + 1);
    c->c_obj = obj, c->c_obj_k = k, c->c_obj_i = i;
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
    json_doc *c = (json_doc *)d;
    int i = arr + 1, j = 0;
    if (c->c_arr == arr && c->c_arr_k <= k) i = c->c_arr_i, j = c->c_arr_k;
    for (; j < k; j++) i = json_next(d, i);
    c->c_arr = arr, c->c_arr_k = k, c->c_arr_i = i;
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

int json_get_string(const json_doc *d, int i, const char *name, char **out, size_t *len_out) {
    if (json_type(d, i) != JSMN_STRING) return expected(d, i, name, "a string");
    const char *s = d->js + d->tok[i].start;
    size_t n = (size_t)(d->tok[i].end - d->tok[i].start), k = 0;
    char *o = malloc(n + 1);
    if (!o) return ql_err(QL_ENOMEM, "%s: out of memory", d->what);
    int u = unescape(s, n, o, &k);
    if (u != UNESC_OK) {
        free(o);
        if (u == UNESC_NUL)
            return ql_err(QL_EFORMAT, "%s: field '%s': a NUL character (\\u0000) in a string is not allowed", d->what, name);
        return ql_err(QL_EFORMAT, "%s: field '%s': invalid escape sequence in string", d->what, name);
    }
    o[k] = 0;
    *out = o;
    if (len_out) *len_out = k;
    return QL_OK;
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
    (void)d;  // json_parse's grammar check refuses both kinds: nothing is left to find
    *two_values = 0;
    return -1;
}

int file_read_all(const char *path, size_t limit, char **out, size_t *len_out) {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer; the mode is
    // checked before any read, so only regular files are ever read
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ql_err(QL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ql_err(QL_EIO, "%s: not a regular file (a directory, FIFO or device is never read)", path);
    }
    if ((uint64_t)st.st_size > limit) {
        close(fd);
        return ql_err(QL_EFORMAT, "%s: file is %lld bytes, more than the limit of %zu", path, (long long)st.st_size, limit);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) { close(fd); return ql_err(QL_ENOMEM, "%s: out of memory", path); }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            close(fd);
            free(buf);
            return ql_err(QL_EIO, "%s: read failed: %s", path, e ? strerror(e) : "the file shrank while being read");
        }
        got += (size_t)r;
    }
    close(fd);
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
