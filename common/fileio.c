// fileio.c: see fileio.h.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // renameat2
#endif
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

int fmap_open(fmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ql_err(QL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ql_err(QL_EIO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return ql_err(QL_EFORMAT, "%s: file is empty", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return ql_err(QL_EIO, "%s: mmap failed: %s", path, strerror(errno));
    m->data = p;
    m->len = (size_t)st.st_size;
    return QL_OK;
}

void fmap_close(fmap *m) {
    if (m->data) munmap(m->data, m->len);
    m->data = NULL;
    m->len = 0;
}

// ---- temp names ----

#define TMP_TAG ".tmp-"

// "<dir>/.<name>.tmp-<pid>-<16 hex>" for path "<dir>/<name>", malloc'd.
static char *temp_name(const char *path) {
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        static uint64_t ctr;  // no entropy yet (early boot): time, pid and a counter still differ per call
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^ (++ctr * 0x9E3779B97F4A7C15ULL);
    }
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0, n = strlen(path) + 64;
    char *t = malloc(n);
    if (t) snprintf(t, n, "%.*s.%s" TMP_TAG "%d-%016llx", (int)dl, path, path + dl, (int)getpid(), (unsigned long long)r);
    return t;
}

// path without trailing slashes ("a/b/" names the directory b, as "a/b" does), malloc'd.
static char *trimmed(const char *path) {
    char *p = strdup(path);
    size_t n = p ? strlen(p) : 0;
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    return p;
}

// The directory part of path ("." when none), malloc'd.
static char *parent_of(const char *path) {
    char *d = strdup(path), *p = NULL;
    if (d) p = strdup(dirname(d));
    free(d);
    return p;
}

static void fsync_dir(const char *dir) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
}

void fileio_clean_stale(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    char *dir = parent_of(path);
    size_t nl = strlen(name);
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *e = de->d_name;
        if (e[0] != '.' || strncmp(e + 1, name, nl) || strncmp(e + 1 + nl, TMP_TAG, strlen(TMP_TAG))) continue;
        char *end;
        long pid = strtol(e + 1 + nl + strlen(TMP_TAG), &end, 10);
        if (*end != '-' || pid <= 0 || pid == getpid() || !(kill((pid_t)pid, 0) != 0 && errno == ESRCH)) continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, e);
        struct stat st;
        if (lstat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) dir_discard(p);
        else if (unlink(p) != 0) continue;
        log_info("%s: removed a temp file left by process %ld, which is gone", p, pid);
    }
    if (d) closedir(d);
    free(dir);
}

// ---- crash points (a test hook) ----

void crash_point(const char *event) {
    static int init, log_all;
    static char want[64];
    static long want_n;
    static long counts[16];
    static const char *names[16];
    if (!init) {
        init = 1;
        const char *at = getenv("QLORA_CRASH_AT"), *lg = getenv("QLORA_CRASH_LOG");
        log_all = lg && lg[0] == '1';
        const char *colon = at ? strrchr(at, ':') : NULL;
        if (colon && (size_t)(colon - at) < sizeof want) {
            memcpy(want, at, (size_t)(colon - at));
            want_n = atol(colon + 1);
        }
    }
    if (!want_n && !log_all) return;
    int k = 0;
    while (k < 16 && names[k] && strcmp(names[k], event)) k++;
    if (k == 16) return;
    names[k] = event;
    long n = ++counts[k];
    if (log_all) fprintf(stderr, "crash_point %s %ld\n", event, n);
    if (want_n && !strcmp(want, event) && n == want_n) {
        // QLORA_CRASH_SIGNAL=INT: a Ctrl-C there instead of a kill; INT2: two
        const char *sig = getenv("QLORA_CRASH_SIGNAL");
        if (sig && !strcmp(sig, "INT2")) raise(SIGINT);
        raise(sig && !strncmp(sig, "INT", 3) ? SIGINT : SIGKILL);
    }
}

// ---- atomic files ----

int afile_open(afile *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    fileio_clean_stale(path);
    f->path = strdup(path);
    f->tmp = temp_name(path);
    if (!f->path || !f->tmp) { afile_abort(f); return ql_err(QL_ENOMEM, "%s: out of memory", path); }
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int rc = ql_err(QL_EIO, "%s: cannot create its temp file %s: %s", path, f->tmp, strerror(errno));
        afile_abort(f);
        return rc;
    }
    return QL_OK;
}

int afile_write(afile *f, const void *data, size_t n) {
    const char *p = data;
    crash_point("write");
    while (n > 0 && !f->failed) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            f->failed = 1;
            return ql_err(QL_EIO, "%s: write failed: %s", f->path, w == 0 ? "no progress" : strerror(errno));
        }
        p += w, n -= (size_t)w, f->written += (uint64_t)w;
    }
    return f->failed ? QL_EIO : QL_OK;
}

int afile_pad(afile *f, size_t n) {
    static const char zeros[256];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        QL_CHECK(afile_write(f, zeros, k));
        n -= k;
    }
    return QL_OK;
}

int afile_commit(afile *f) {
    int rc = QL_OK;
    if (f->failed) rc = QL_EIO;
    else if (fsync(f->fd) != 0) rc = ql_err(QL_EIO, "%s: fsync failed: %s", f->path, strerror(errno));
    else if (close(f->fd) != 0) rc = ql_err(QL_EIO, "%s: close failed: %s", f->path, strerror(errno));
    else {
        f->fd = -1;
        crash_point("commit");
        if (rename(f->tmp, f->path) != 0) rc = ql_err(QL_EIO, "%s: rename failed: %s", f->path, strerror(errno));
    }
    if (rc == QL_OK) {
        char *d = parent_of(f->path);
        if (d) fsync_dir(d);
        free(d);
        free(f->path);
        free(f->tmp);
        memset(f, 0, sizeof *f);
        f->fd = -1;
        return QL_OK;
    }
    afile_abort(f);
    return rc;
}

void afile_abort(afile *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->path);
    free(f->tmp);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

int file_write_atomic(const char *path, const void *data, size_t n) {
    afile f;
    QL_CHECK(afile_open(&f, path));
    int rc = afile_write(&f, data, n);
    if (rc != QL_OK) { afile_abort(&f); return rc; }
    return afile_commit(&f);
}

// Removes dir and what it holds, subdirectories included (never following a
// link: a link is removed, not what it points to). depth bounds the recursion.
static void discard_at(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (depth < 8 && lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) discard_at(path, depth + 1);
        else if (unlink(path) != 0) log_warn("%s: cannot remove: %s", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) != 0) log_warn("%s: cannot remove: %s", dir, strerror(errno));
}

void dir_discard(const char *dir) { discard_at(dir, 0); }

int file_link_or_copy(const char *src, const char *dst) {
    if (link(src, dst) == 0) return QL_OK;
    if (errno != EXDEV && errno != EPERM && errno != EMLINK && errno != ENOTSUP && errno != ENOSYS)
        return ql_err(QL_EIO, "%s: cannot link it as %s: %s", src, dst, strerror(errno));
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ql_err(QL_EIO, "%s: cannot open: %s", src, strerror(errno));
    afile f;
    int rc = afile_open(&f, dst);
    char buf[1 << 16];
    for (ssize_t n; !rc && (n = read(fd, buf, sizeof buf)) != 0;)
        rc = n < 0 ? ql_err(QL_EIO, "%s: read failed: %s", src, strerror(errno)) : afile_write(&f, buf, (size_t)n);
    close(fd);
    if (rc) { afile_abort(&f); return rc; }
    return afile_commit(&f);
}

int adir_open(adir *d, const char *path) {
    memset(d, 0, sizeof *d);
    d->path = trimmed(path);
    if (!d->path) return ql_err(QL_ENOMEM, "%s: out of memory", path);
    fileio_clean_stale(d->path);
    d->tmp = temp_name(d->path);
    if (!d->path || !d->tmp) { adir_abort(d); return ql_err(QL_ENOMEM, "%s: out of memory", path); }
    if (mkdir(d->tmp, 0755) != 0) {  // fails when the name exists: as O_EXCL
        int rc = ql_err(QL_EIO, "%s: cannot create its temp directory %s: %s", path, d->tmp, strerror(errno));
        free(d->tmp), d->tmp = NULL;
        adir_abort(d);
        return rc;
    }
    return QL_OK;
}

static int unsupported(int e) { return e == EINVAL || e == ENOSYS || e == ENOTSUP; }

// Puts directory tmp at path in one rename; an existing directory at path is
// exchanged with it and left at *old (then tmp's name) for removal.
static int swap_in(const char *tmp, const char *path, int no_replace, int *old) {
    struct stat st;
    *old = 0;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT) return ql_err(QL_EIO, "%s: %s", path, strerror(errno));
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) return QL_OK;
        if (unsupported(errno) && rename(tmp, path) == 0) return QL_OK;
        return ql_err(QL_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    }
    if (no_replace) return ql_err(QL_EINVAL, "%s: already exists (made while this was written); not replaced", path);
    if (!S_ISDIR(st.st_mode)) return ql_err(QL_EIO, "%s: exists and is not a directory; not replaced", path);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_EXCHANGE) == 0) { *old = 1; return QL_OK; }
    if (!unsupported(errno)) return ql_err(QL_EIO, "%s: cannot swap in %s: %s", path, tmp, strerror(errno));
    // a file system without RENAME_EXCHANGE: two renames, path briefly absent
    char *aside = temp_name(path);
    int rc = QL_OK;
    if (!aside) return ql_err(QL_ENOMEM, "%s: out of memory", path);
    if (rename(path, aside) != 0) rc = ql_err(QL_EIO, "%s: cannot move aside: %s", path, strerror(errno));
    else if (rename(tmp, path) != 0) {
        rc = ql_err(QL_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        if (rename(aside, path) != 0) log_warn("%s: the old directory stays at %s", path, aside);
    } else if (rename(aside, tmp) != 0) dir_discard(aside);
    else *old = 1;
    free(aside);
    return rc;
}

int adir_commit(adir *d) {
    char *parent = parent_of(d->path);
    if (!parent) { adir_abort(d); return ql_err(QL_ENOMEM, "%s: out of memory", d->path); }
    fsync_dir(d->tmp);
    crash_point("swap");
    int old, rc = swap_in(d->tmp, d->path, d->no_replace, &old);
    if (!rc) {
        crash_point("swapped");
        fsync_dir(parent);
        if (old) dir_discard(d->tmp);  // the previous directory, now under the temp name
    }
    free(parent);
    if (rc) { adir_abort(d); return rc; }
    free(d->path), free(d->tmp);
    memset(d, 0, sizeof *d);
    return QL_OK;
}

void adir_abort(adir *d) {
    if (d->tmp) dir_discard(d->tmp);
    free(d->path), free(d->tmp);
    memset(d, 0, sizeof *d);
}

int adir_fail(adir *d, int rc) {
    const char *msg = ql_errmsg();
    size_t n = d->tmp ? strlen(d->tmp) : 0;
    if (n && !strncmp(msg, d->tmp, n)) rc = ql_err(rc, "%s%s", d->path, msg + n);
    adir_abort(d);
    return rc;
}

// ---- the writer's lock ----

static int out_lock_at(out_lock_t *l, const char *path);

int out_lock(out_lock_t *l, const char *path_arg) {
    l->fd = -1, l->path = NULL;
    char *path = trimmed(path_arg);
    if (!path) return ql_err(QL_ENOMEM, "%s: out of memory", path_arg);
    int rc = out_lock_at(l, path);
    free(path);
    return rc;
}

static int out_lock_at(out_lock_t *l, const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n = strlen(path) + 16, dl = slash ? (size_t)(slash - path) + 1 : 0;
    char *lp = malloc(n);
    if (!lp) return ql_err(QL_ENOMEM, "%s: out of memory", path);
    snprintf(lp, n, "%.*s.%s.lock", (int)dl, path, path + dl);
    for (int tries = 0;; tries++) {
        int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            int rc = ql_err(QL_EIO, "%s: cannot open its lock file %s: %s", path, lp, strerror(errno));
            free(lp);
            return rc;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char buf[32] = "";
            ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
            buf[r > 0 ? r : 0] = 0;
            close(fd);
            int rc = e == EWOULDBLOCK
                         ? ql_err(QL_EINVAL, "%s: another qlora process (pid %ld) is writing it (lock %s); wait for it "
                                  "to end", path, atol(buf), lp)
                         : ql_err(QL_EIO, "%s: cannot lock %s: %s", path, lp, strerror(e));
            free(lp);
            return rc;
        }
        // the holder removes the file when done: a lock taken on a file that is no
        // longer at lp (removed, or replaced by a newer one) does not count
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(lp, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            char buf[32];
            int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
            if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) {}  // the pid is for messages only
            l->fd = fd, l->path = lp;
            return QL_OK;
        }
        close(fd);
        if (tries == 100) {
            int rc = ql_err(QL_EIO, "%s: cannot take the lock %s (it keeps changing)", path, lp);
            free(lp);
            return rc;
        }
    }
}

void out_unlock(out_lock_t *l) {
    if (l->fd >= 0) {
        unlink(l->path);  // before closing, while still held (see out_lock)
        close(l->fd);
    }
    free(l->path);
    l->fd = -1, l->path = NULL;
}
