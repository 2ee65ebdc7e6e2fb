// dtype.c: see dtype.h.
#include "dtype.h"

static const struct { const char *name; size_t size; } dtypes[DT_COUNT] = {
    [DT_F32] = {"F32", 4}, [DT_F16] = {"F16", 2}, [DT_BF16] = {"BF16", 2},
    [DT_I32] = {"I32", 4}, [DT_I64] = {"I64", 8}, [DT_U8] = {"U8", 1},
    [DT_I8] = {"I8", 1},   [DT_NF4] = {NULL, 0},
};

size_t dtype_size(dtype t) { return (unsigned)t < DT_COUNT ? dtypes[t].size : 0; }
const char *dtype_name(dtype t) { return (unsigned)t < DT_COUNT ? dtypes[t].name : NULL; }

int dtype_parse(const char *s, size_t len) {
    for (int t = 0; t < DT_COUNT; t++) {
        const char *n = dtypes[t].name;
        if (n && strlen(n) == len && memcmp(n, s, len) == 0) return t;
    }
    return -1;
}
