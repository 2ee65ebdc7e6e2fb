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

// Temporary names. Everything written aside before a rename is a hidden sibling
// of its final name, "<dir>/.<name>.tmp-<pid>-<random>", created with O_EXCL
// (never a predictable path another process could plant): a store listing skips
// dot-names, so nobody sees it as an output. What a killed process left behind is
// removed by the next afile_open/adir_open of the same final name (fileio_clean_stale).

// An output file written atomically: bytes go to a temp sibling (above), and
// afile_commit fsyncs it, renames it over path and fsyncs the directory.
// afile_abort (or a failed commit) removes the temp file: nothing is lost.
// Errors name the final path and the system's reason ("No space left on device").
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
// Removes dir and everything in it (an output directory built aside before a
// rename, after a failure; links are removed, never followed): best effort, a
// warning for what stays; the error message of the failure (ql_errmsg) is left alone.
void dir_discard(const char *dir);
// dst (new) becomes a second name of the file src (a hard link), or where the
// file system has none, a copy written atomically. For files never changed in
// place once written (checkpoints carried from one version of a directory to
// the next).
int file_link_or_copy(const char *src, const char *dst);

// A directory written atomically: files go into d->tmp (a hidden temp sibling of
// path, mode 0755), and adir_commit swaps it in with one rename: into place when
// path does not exist, else exchanged with the existing directory
// (renameat2 RENAME_EXCHANGE), whose old files are then removed. A reader sees
// the old directory or the new one, never a mix. adir_abort removes d->tmp.
typedef struct {
    char *path, *tmp;
    int no_replace;  // set after adir_open: an existing path fails the commit (EEXIST) instead
} adir;

int adir_open(adir *d, const char *path);
int adir_commit(adir *d);
void adir_abort(adir *d);
// After a failed write into d->tmp: removes it (adir_abort) and returns rc with
// the error message naming the final path instead of the temp one
// ("<path>/config.json: write failed: No space left on device").
int adir_fail(adir *d, int rc);

// Removes the temp siblings of path (above) whose process is gone.
void fileio_clean_stale(const char *path);

// An exclusive lock on writing path (a file or a directory), held until
// out_unlock or the process ends: flock on the hidden file "<dir>/.<name>.lock",
// which records the holder's pid and which out_unlock removes (a killed holder
// leaves it, unlocked, for the next writer). A second writer gets QL_EINVAL with
// a message that names path and the other process's pid.
typedef struct {
    int fd;
    char *path;
} out_lock_t;
int out_lock(out_lock_t *l /* out */, const char *path);
void out_unlock(out_lock_t *l);  // no-op on an unlocked l (fd -1)

// Test hook for crash-safety tests: when the environment holds
// QLORA_CRASH_AT=<event>:<n>, the n-th call with that event kills the process
// (SIGKILL, as kill -9 would). QLORA_CRASH_LOG=1 prints every call to stderr
// ("crash_point <event> <n>") so that a test can count them.
// QLORA_CRASH_SIGNAL=INT sends SIGINT (a Ctrl-C) there instead, INT2 two of them
// (a Ctrl-C pressed twice), for the tests of interrupt.h's users. Without either
// variable it costs one getenv per process.
void crash_point(const char *event);

#endif
