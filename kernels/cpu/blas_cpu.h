// blas_cpu.h: which OpenBLAS kernels run, and a correction when they are the wrong ones.
//
// OpenBLAS (Debian's is built with DYNAMIC_ARCH) picks its kernels from a table
// of CPU models, not from the CPU's feature flags: a CPU newer than the library
// (0.3.21 on recent Xeons that report no model name) gets the generic SSE3
// "Prescott" kernels, about 3x slower in every sgemm (prefill, training). The
// library reads OPENBLAS_CORETYPE once, when it loads, so only a process that has
// not started yet can be told: qlora.c does that (blas_coretype_override), and
// ops_cpu_new warns where it could not (the library inside another program).
#ifndef QL_BLAS_CPU_H
#define QL_BLAS_CPU_H

// The core type to set in OPENBLAS_CORETYPE before starting, when OpenBLAS chose a
// pre-AVX2 kernel set on a CPU with AVX2/FMA ("Haswell") or AVX-512
// ("SkylakeX"); NULL when its choice is fine.
const char *blas_coretype_override(void);

// "OpenBLAS <version> core <name>", for bench lines and --verbose.
const char *blas_describe(void);

// Logs a warning once when blas_coretype_override() is not NULL.
void blas_check(void);

#endif
