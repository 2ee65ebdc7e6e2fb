// err.c: see err.h.
#include "err.h"

#include <stdarg.h>
#include <string.h>

static _Thread_local char errbuf[1024];

int ql_err(int code, const char *fmt, ...) {
    char tmp[sizeof errbuf];  // the arguments may include ql_errmsg() itself
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(errbuf, tmp, sizeof errbuf);
    return code;
}

const char *ql_errmsg(void) { return errbuf; }

const char *ql_errname(int code) {
    switch (code) {
    case QL_OK: return "ok";
    case QL_EIO: return "I/O error";
    case QL_EFORMAT: return "format error";
    case QL_EINVAL: return "invalid argument";
    case QL_ENOMEM: return "out of memory";
    case QL_EUNSUP: return "unsupported";
    case QL_EDEVICE: return "device error";
    case QL_ENOENT: return "not found";
    }
    return "unknown error";
}

void *ql_malloc_check(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "%s:%d: out of memory allocating %zu bytes\n", file, line, n); abort(); }
    return p;
}

void *ql_calloc_check(size_t n, size_t sz, const char *file, int line) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) { fprintf(stderr, "%s:%d: out of memory allocating %zu x %zu bytes\n", file, line, n, sz); abort(); }
    return p;
}
