// threads_cpu.c: see threads_cpu.h.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "threads_cpu.h"

#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/log.h"

void threads_fit_init(threads_fit *f, int configured) {
    memset(f, 0, sizeof *f);
    cpu_set_t set;
    int mask = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    f->ncpu = mask > 0 ? mask : online > 0 ? (int)online : 1;
    f->extra_cpus = online > f->ncpu ? (int)online - f->ncpu : 0;
    f->configured = configured > 0 ? configured : 1;
    f->cur = f->configured;
    const char *e = getenv("QLORA_ADAPTIVE_THREADS");
    f->off = e && !strcmp(e, "0");
}

int threads_fit_next(threads_fit *f, int runnable) {
    // Our own team may be counted (workers still spinning) or not (asleep): assume
    // it is, which errs toward more threads. Threads runnable on cores outside our
    // mask do not take ours.
    int others = runnable - f->cur - f->extra_cpus;
    f->others[f->pos] = others > 0 ? others : 0;
    f->pos = (f->pos + 1) % THREADS_FIT_WINDOW;
    if (f->n < THREADS_FIT_WINDOW) f->n++;
    // The second largest of the window: a busy neighbour shows in sample after
    // sample, a passing one (a shell, a kernel thread, our own worker caught
    // between regions) in one, and one sample cost 8 steps at one thread (12% of
    // solo decoding speed on a quiet machine).
    int busy = 0, top = 0;
    for (int i = 0; i < f->n; i++) {
        int b = f->others[i];
        if (b > top) busy = top, top = b;
        else if (b > busy) busy = b;
    }
    int want = f->ncpu - busy;
    if (want > f->configured) want = f->configured;
    if (want < 1) want = 1;
    f->cur = want;
    return want;
}

// The number of runnable scheduling entities now, or -1.
static int loadavg_runnable(void) {
    FILE *fp = fopen("/proc/loadavg", "r");
    if (!fp) return -1;
    double a, b, c;
    int running = -1, total;
    if (fscanf(fp, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total) != 5) running = -1;
    fclose(fp);
    return running;
}

int threads_fit_step(threads_fit *f) {
    if (f->off || f->configured <= 1) {
        omp_set_num_threads(f->configured);
        return f->configured;
    }
    double now = time_now();
    if (f->n == 0 || now - f->last >= 0.005) {
        int r = loadavg_runnable();
        f->last = now;
        if (r >= 0) {
            int before = f->cur, want = threads_fit_next(f, r);
            if (want != before)
                log_debug("cpu backend: %d runnable threads system-wide; the next steps use %d of %d", r, want,
                          f->configured);
        }
    }
    omp_set_num_threads(f->cur);
    return f->cur;
}
