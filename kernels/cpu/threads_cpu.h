// threads_cpu.h: how many OpenMP threads a step should use when other programs
// share the cores.
//
// A parallel region ends at a barrier: every thread of the team must arrive. When
// another busy program holds a core, one of our threads waits for a timeslice
// (milliseconds) while its partner, done with its half, waits for it, and every
// region of a decode step (about 150) pays that. Two qlora decodes on 2 cores kept
// ~30% of their solo speed each; with one thread each they keep a core each. So
// before each decoding step the CPU backend counts the runnable threads of the
// whole system (the 4th field of /proc/loadavg, read in microseconds) less its own
// team, and runs the step with the cores that are left, at least one, at most the
// number configured. Only decoding steps (fewer than MATMUL_GEMM_MIN_N rows) do:
// their results are the same bits for any thread count (test_threads checks it);
// prompts, evaluation and training run with the configured count, so that they
// never change with the machine's load. The count of busy threads is the second
// largest of the last THREADS_FIT_WINDOW samples: a busy neighbour lowers our
// count from its second sample on, a passing one does not, and a moment of quiet
// does not raise it.
// QLORA_ADAPTIVE_THREADS=0 turns it off.
#ifndef QL_THREADS_CPU_H
#define QL_THREADS_CPU_H

#define THREADS_FIT_WINDOW 8

typedef struct {
    int configured;  // the most threads a step may use (--threads, or all cores)
    int ncpu;        // cores this process may run on (its affinity mask)
    int extra_cpus;  // online cores outside the mask: their threads are not ours to count
    int cur;         // threads the last step used
    int others[THREADS_FIT_WINDOW], n, pos;  // busy threads not ours, newest samples
    double last;     // time of the last sample (seconds)
    int off;         // QLORA_ADAPTIVE_THREADS=0
} threads_fit;

// Fills f for `configured` threads from the process's affinity and the environment.
void threads_fit_init(threads_fit *f, int configured);

// The pure rule, for tests: given `runnable` threads in the whole system (ours
// included), the threads the next step uses; updates f's window and f->cur.
int threads_fit_next(threads_fit *f, int runnable);

// Before a step: samples /proc/loadavg (at most every 5 ms; between samples the
// count stays), sets omp_set_num_threads for the calling thread, returns the count.
int threads_fit_step(threads_fit *f);

#endif
