// lora_cpu.c: see lora_cpu.h. Each segment is cut into chunks of at most
// LORA_CHUNK rows; the chunks of all segments are OpenMP tasks, each one OpenBLAS
// sgemm (single-threaded inside our region). Decoding a batch whose sequences use
// distinct adapters gives one task per sequence; a long prompt on one adapter gives
// one task per chunk of its rows.
#include "lora_cpu.h"

#include <cblas.h>
#include <stdlib.h>

#include "../../common/err.h"

#define LORA_CHUNK 32

typedef struct {
    int g, i0, n;   // segment, first row within it, rows
    size_t xa_off;  // where the chunk's (n, R) block of xa starts
} lora_task;

// The task list for seg; *ntask set. The caller frees it.
static lora_task *lora_tasks(const lora_seg *seg, int nseg, int *ntask) {
    int nt = 0;
    for (int g = 0; g < nseg; g++) nt += (seg[g].n + LORA_CHUNK - 1) / LORA_CHUNK;
    lora_task *t = mallocCheck(sizeof(lora_task) * (size_t)(nt > 0 ? nt : 1));
    size_t off = 0;
    nt = 0;
    for (int g = 0; g < nseg; g++) {
        QL_ASSERT(seg[g].n >= 0 && seg[g].rank > 0 && seg[g].row0 >= 0);
        for (int i0 = 0; i0 < seg[g].n; i0 += LORA_CHUNK) {
            int n = seg[g].n - i0 < LORA_CHUNK ? seg[g].n - i0 : LORA_CHUNK;
            t[nt++] = (lora_task){g, i0, n, off + (size_t)i0 * seg[g].rank};
        }
        off += (size_t)seg[g].n * seg[g].rank;
    }
    *ntask = nt;
    return t;
}

void cpu_lora_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in) {
    int nt;
    lora_task *t = lora_tasks(seg, nseg, &nt);
#pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
    for (int i = 0; i < nt; i++) {
        const lora_seg *s = &seg[t[i].g];
        // xa_chunk (n,R) = x_chunk (n,in) @ A^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t[i].n, s->rank, in, 1.0f,
                    x + (size_t)(s->row0 + t[i].i0) * in, in, s->A, in, 0.0f, xa + t[i].xa_off, s->rank);
    }
    free(t);
}

void cpu_lora_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out) {
    int nt;
    lora_task *t = lora_tasks(seg, nseg, &nt);
#pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
    for (int i = 0; i < nt; i++) {
        const lora_seg *s = &seg[t[i].g];
        // y_chunk (n,out) += scale * xa_chunk (n,R) @ B^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t[i].n, out, s->rank, s->scale, xa + t[i].xa_off,
                    s->rank, s->B, s->rank, 1.0f, y + (size_t)(s->row0 + t[i].i0) * out, out);
    }
    free(t);
}
