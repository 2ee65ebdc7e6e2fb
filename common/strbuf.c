// strbuf.c: see strbuf.h.
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"

static int grow(strbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return QL_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->s, cap);
    if (!p) return ql_err(QL_ENOMEM, "out of memory");
    b->s = p, b->cap = cap;
    return QL_OK;
}

int sb_addn(strbuf *b, const char *s, size_t n) {
    QL_CHECK(grow(b, n));
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return QL_OK;
}

int sb_add(strbuf *b, const char *s) { return sb_addn(b, s, strlen(s)); }

int sb_addf(strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) return ql_err(QL_EINVAL, "sb_addf: bad format");
    QL_CHECK(grow(b, (size_t)k));
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
    return QL_OK;
}

int sb_json(strbuf *b, const char *s, size_t n) {
    char *t = malloc(n + 1);
    if (!t) return ql_err(QL_ENOMEM, "out of memory");
    memcpy(t, s, n);
    t[n] = '\0';
    char *q = json_quote(t);  // a NUL inside s ends the string there, as json_quote reads C strings
    free(t);
    if (!q) return ql_err(QL_ENOMEM, "out of memory");
    int rc = sb_add(b, q);
    free(q);
    return rc;
}

void sb_consume(strbuf *b, size_t n) {
    if (!b->s) return;
    if (n >= b->n) n = b->n;
    memmove(b->s, b->s + n, b->n - n + 1);
    b->n -= n;
}

void sb_free(strbuf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}
