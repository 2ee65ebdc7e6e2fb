// log.h: leveled logging to one sink (stderr), plus machine-parsable metric
// lines ("step=120 loss=1.843 tok/s=5230"). stdout is reserved for results.
#ifndef QL_LOG_H
#define QL_LOG_H

enum { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(int level);
int log_level(void);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

// wall-clock seconds (monotonic), for timings and metrics
double time_now(void);
// One line of progress on stderr, redrawn in place (for terminals):
// "what [#####.....] done/total unit  elapsed  ETA". t0 from time_now() at the start.
void progress_bar(const char *what, long long done, long long total, const char *unit, double t0);
// peak resident set size of this process in bytes (0 if unknown)
long long mem_peak_rss(void);
// The memory new allocations can take without swapping, in bytes: MemAvailable of
// /proc/meminfo (the kernel's estimate: free memory plus reclaimable caches);
// -1 when unknown (no /proc/meminfo, or a kernel before 3.14).
long long mem_available(void);

#endif
