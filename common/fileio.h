// fileio.h: read-only file mappings and atomic writes (temp file, fsync, rename).
#ifndef QL_FILEIO_H
#define QL_FILEIO_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    void *data;
    size_t len;
} fmap;

// Map a whole file read-only. QL_EIO with the path and reason on failure.
int fmap_open(fmap *m, const char *path);
void fmap_close(fmap *m);

// An output file written atomically: bytes go to "<path>.tmp.<pid>", and
// afile_commit fsyncs it, renames it over path and fsyncs the directory.
// afile_abort (or a failed commit) removes the temp file: nothing is lost.
typedef struct {
    char *path, *tmp;
    int fd;
    uint64_t written;
    int failed;
} afile;

int afile_open(afile *f, const char *path);
int afile_write(afile *f, const void *data, size_t n);
int afile_pad(afile *f, size_t n);  // n zero bytes
int afile_commit(afile *f);
void afile_abort(afile *f);
// One-shot convenience.
int file_write_atomic(const char *path, const void *data, size_t n);
// Removes dir and the files in it (a flat output directory built aside before a
// rename, after a failure): best effort, a warning for what stays; the error
// message of the failure (ql_errmsg) is left alone.
void dir_discard(const char *dir);

#endif
