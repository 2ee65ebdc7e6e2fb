// blas_cpu.c: see blas_cpu.h.
#include "blas_cpu.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../../common/log.h"

// OpenBLAS's x86 core names whose kernels use no AVX2/FMA (its cpuid tables).
static const char *const pre_avx2[] = {"Prescott", "Katmai", "Coppermine", "Northwood", "Banias", "Core2",
                                       "Penryn", "Dunnington", "Nehalem", "Atom", "Opteron", "Opteron_SSE3",
                                       "Barcelona", "Bobcat", "Sandybridge", "Bulldozer", "Piledriver",
                                       "Unknown", NULL};

static const char *corename(void) {
    const char *c = openblas_get_corename();
    return c ? c : "Unknown";
}

const char *blas_coretype_override(void) {
    const char *core = corename();
    int generic = 0;
    for (int i = 0; pre_avx2[i]; i++) generic |= !strcasecmp(core, pre_avx2[i]);
    if (!generic) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}

const char *blas_describe(void) {
    static char buf[160];
    const char *cfg = openblas_get_config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64"
    char ver[32] = "?";
    if (cfg && !strncmp(cfg, "OpenBLAS ", 9)) sscanf(cfg + 9, "%31s", ver);
    snprintf(buf, sizeof buf, "OpenBLAS %s core %s", ver, corename());
    return buf;
}

void blas_check(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *ct = blas_coretype_override();
    if (ct)
        log_warn("OpenBLAS runs its pre-AVX2 '%s' kernels on this CPU, which has %s: matrix products are about "
                 "3x slower. Start the program with OPENBLAS_CORETYPE=%s (qlora itself does)",
                 corename(), strcmp(ct, "SkylakeX") ? "AVX2" : "AVX-512", ct);
}
