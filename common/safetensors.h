// safetensors.h: a validating reader and an atomic writer of the safetensors
// format (https://github.com/huggingface/safetensors, docs/formats.md):
//   u64 little-endian N | N bytes of JSON header | data
// The header is never trusted: its size is limited, every entry's dtype is
// known, size = dtype x shape, offsets are in bounds and contiguous (no holes,
// no overlap, the whole data area used), and names are unique.
#ifndef QL_SAFETENSORS_H
#define QL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "fileio.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20)  // the reference implementation's limit (100 MB)

typedef struct {
    char *name;
    dtype type;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data;  // into the mapping, or into copy
    size_t nbytes;
    void *copy;        // owned: an aligned copy when the file's bytes are not aligned for the dtype
} st_tensor;

typedef struct {
    char *path;      // for messages
    fmap map;        // owned when opened from a path
    const uint8_t *base;
    size_t len;
    st_tensor *t;
    int n;
    char *metadata;  // the __metadata__ object as JSON text, or NULL
} st_file;

int st_open(st_file *f, const char *path);
// Parse a safetensors image in memory (not owned; must outlive f). name is for messages.
int st_open_mem(st_file *f, const void *data, size_t len, const char *name);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
// Value of a string entry of __metadata__, malloc'd, or NULL.
char *st_metadata_get(const st_file *f, const char *key);

// A model's tensors, from model.safetensors or shards listed in model.safetensors.index.json.
typedef struct {
    st_file *files;
    int nfiles;
} st_set;

int st_set_open_dir(st_set *s, const char *dir);
void st_set_close(st_set *s);
// Finds a tensor; sets *file to its file's path when found.
const st_tensor *st_set_find(const st_set *s, const char *name, const char **file);

// Writing. Tensors are written in the given order; data is host memory.
typedef struct {
    const char *name;
    dtype type;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} st_out;

// metadata: NULL or pairs {key, value, key, value, ..., NULL} of strings.
// prefix/prefix_len: bytes written before the safetensors image (a container
// header); the JSON header is padded with spaces so that the data area starts
// at a multiple of 64 bytes from the start of the file. When len_at >= 0, the
// image's length (u64 little-endian) is stored at prefix[len_at] before writing.
int st_write(const char *path, const st_out *t, int n, const char *const *metadata,
             const void *prefix, size_t prefix_len, int len_at);

#endif
