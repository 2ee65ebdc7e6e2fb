// err.h: library status codes and the last error message (SQLite style).
// A library call returns QL_OK or an error code and leaves a message that names
// the file, tensor, line or field, what was expected and what was found.
// Only the command-line layer prints and exits.
#ifndef QL_ERR_H
#define QL_ERR_H

#include <stdio.h>
#include <stdlib.h>

enum {
    QL_OK = 0,
    QL_EIO,      // open/read/write/mmap failed
    QL_EFORMAT,  // a file's contents are malformed or lie
    QL_EINVAL,   // a bad argument or option value
    QL_ENOMEM,   // allocation failed
    QL_EUNSUP,   // valid but unsupported (architecture, dtype, ...)
    QL_EDEVICE,  // accelerator error
    QL_ENOENT,   // a named thing (an adapter, a model) does not exist
};

// ql_err sets the thread's last error message (printf-style) and returns code.
int ql_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// ql_errmsg returns the last message set on this thread ("" if none).
const char *ql_errmsg(void);
// ql_errname returns a short name for a code ("format error", ...).
const char *ql_errname(int code);

// QL_CHECK propagates a non-OK status from a library call.
#define QL_CHECK(call) do { int ql_rc_ = (call); if (ql_rc_ != QL_OK) return ql_rc_; } while (0)

// Programmer errors: always-on assert with file:line.
#define QL_ASSERT(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

// mallocCheck-style helpers: abort with file:line on out-of-memory in places
// where recovery is impossible (scratch buffers of known, validated size).
void *ql_malloc_check(size_t n, const char *file, int line);
void *ql_calloc_check(size_t n, size_t sz, const char *file, int line);
#define mallocCheck(n) ql_malloc_check((n), __FILE__, __LINE__)
#define callocCheck(n, sz) ql_calloc_check((n), (sz), __FILE__, __LINE__)

#endif
