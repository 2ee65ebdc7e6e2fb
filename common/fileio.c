// fileio.c: see fileio.h.
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

int afile_open(afile *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(path) + 32;
    f->path = strdup(path);
    f->tmp = malloc(n);
    if (!f->path || !f->tmp) { afile_abort(f); return ql_err(QL_ENOMEM, "%s: out of memory", path); }
    snprintf(f->tmp, n, "%s.tmp.%d", path, (int)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f->fd < 0) {
        int rc = ql_err(QL_EIO, "%s: cannot create: %s", f->tmp, strerror(errno));
        afile_abort(f);
        return rc;
    }
    return QL_OK;
}

int afile_write(afile *f, const void *data, size_t n) {
    const char *p = data;
    while (n > 0 && !f->failed) {
        ssize_t w = write(f->fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            f->failed = 1;
            return ql_err(QL_EIO, "%s: write failed: %s", f->tmp, strerror(errno));
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
    else if (fsync(f->fd) != 0) rc = ql_err(QL_EIO, "%s: fsync failed: %s", f->tmp, strerror(errno));
    else if (close(f->fd) != 0) rc = ql_err(QL_EIO, "%s: close failed: %s", f->tmp, strerror(errno));
    else {
        f->fd = -1;
        if (rename(f->tmp, f->path) != 0) rc = ql_err(QL_EIO, "%s: rename failed: %s", f->path, strerror(errno));
    }
    if (rc == QL_OK) {
        char *d = strdup(f->path);
        if (d) {
            int dfd = open(dirname(d), O_RDONLY | O_DIRECTORY);
            if (dfd >= 0) { fsync(dfd); close(dfd); }
            free(d);
        }
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

void dir_discard(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0) log_warn("%s: cannot remove: %s", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) != 0) log_warn("%s: cannot remove: %s", dir, strerror(errno));
}
