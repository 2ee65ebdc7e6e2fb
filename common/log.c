// log.c: see log.h.
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

long long mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kb = -1;
    while (kb < 0 && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) != 1) kb = -1;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

// The terminal's width in columns: stderr's window size, else $COLUMNS, else 80.
static int term_columns(void) {
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *c = getenv("COLUMNS");
    int n = c ? atoi(c) : 0;
    return n > 0 ? n : 80;
}

void progress_bar(const char *what, long long done, long long total, const char *unit, double t0) {
    double el = time_now() - t0, eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    char counts[64], elapsed[32], left[32];
    snprintf(counts, sizeof counts, " %lld/%lld %s", done, total, unit);
    snprintf(elapsed, sizeof elapsed, "  %.1f s", el);
    snprintf(left, sizeof left, "  ETA %.1f s", eta);
    // The line stays one column short of the width (no wrap, no scroll). As the
    // terminal narrows: the bar shrinks from 30 cells to 10, then the elapsed
    // time goes, then the counts, then the bar; last, `what` is cut.
    const int cols = term_columns() - 1, nw = (int)strlen(what), nl = (int)strlen(left);
    int show_el = 1, show_counts = 1, barw = 30;
    for (;;) {
        int fixed = nw + nl + (show_el ? (int)strlen(elapsed) : 0) + (show_counts ? (int)strlen(counts) : 0);
        int room = cols - fixed - 3;  // " [" and "]"
        if (room >= barw) break;
        if (room >= 10) { barw = room; break; }
        if (show_el) show_el = 0;
        else if (show_counts) show_counts = 0;
        else { barw = 0; break; }
    }
    char line[512];
    int n = 0;
    if (barw) {
        char bar[31];
        int fill = total > 0 ? (int)(barw * done / total) : barw;
        for (int i = 0; i < barw; i++) bar[i] = i < fill ? '#' : '.';
        bar[barw] = 0;
        n = snprintf(line, sizeof line, "%s [%s]%s%s%s", what, bar, show_counts ? counts : "", show_el ? elapsed : "",
                     left);
    } else {
        n = snprintf(line, sizeof line, "%s%s", what, left);
    }
    if (n > cols) {  // too narrow even for `what` and the ETA: cut what, keep the ETA when it fits
        int keep = cols - nl > 0 ? cols - nl : 0;
        n = snprintf(line, sizeof line, "%.*s%.*s", keep < nw ? keep : nw, what, cols - (keep < nw ? keep : nw), left);
        if (n > cols) n = cols;
    }
    if (n < 0) n = 0;
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
    // \033[K clears what a longer earlier line left on the right
    fprintf(stderr, "\r%.*s\033[K", n, line);
    fflush(stderr);
}
