// strbuf.h: a growing, NUL-terminated byte buffer for building JSON and text.
// Every append returns QL_OK or QL_ENOMEM (the buffer is unchanged then).
#ifndef QL_STRBUF_H
#define QL_STRBUF_H

#include <stddef.h>

typedef struct {
    char *s;     // NUL-terminated when not NULL
    size_t n;    // bytes, excluding the NUL
    size_t cap;
} strbuf;

int sb_add(strbuf *b, const char *s);
int sb_addn(strbuf *b, const char *s, size_t n);
int sb_addf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// s (n bytes) as a quoted JSON string (json_quote's escaping and U+FFFD rule).
int sb_json(strbuf *b, const char *s, size_t n);
// Drops the first n bytes.
void sb_consume(strbuf *b, size_t n);
void sb_free(strbuf *b);

#endif
