// log.c: see log.h.
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>

static int cur_level = LOG_INFO;

void log_set_level(int level) { cur_level = level; }
int log_level(void) { return cur_level; }

void log_msg(int level, const char *fmt, ...) {
    static const char *tag[] = {"error", "warn", "info", "debug"};
    if (level > cur_level) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%s] ", tag[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

long long mem_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (long long)ru.ru_maxrss * 1024;  // Linux reports KiB
}

void progress_bar(const char *what, long long done, long long total, const char *unit, double t0) {
    char bar[31];
    int fill = total > 0 ? (int)(30 * done / total) : 30;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    double el = time_now() - t0, eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\r%s [%s] %lld/%lld %s  %.1f s  ETA %.1f s ", what, bar, done, total, unit, el, eta);
    fflush(stderr);
}
