// lora_cpu.c: see lora_cpu.h. Each segment is cut into chunks of at most
// LORA_CHUNK rows; the chunks of all segments are OpenMP tasks, each one OpenBLAS
// call (single-threaded inside our region). Decoding a batch whose sequences use
// distinct adapters gives one task per sequence; a long prompt on one adapter gives
// one task per chunk of its rows.
//
// With fewer chunks than threads (batch 1, or a whole batch on one adapter) each
// chunk is also split by output columns: shrink by rank rows of A (xa[:, c0:c1] =
// x A[c0:c1]^T), expand by rows of B (y[:, c0:c1] += s xa B[c0:c1]^T). Every
// output element is still the same dot product over the same terms, so a split
// changes no result beyond the summation order inside sgemm; it lets both cores
// stream A and B, which decoding is bound by (one task on one core read them at
// half the two-core rate: docs/benchmarks.md).
//
// A resident adapter's F16 or BF16 A and B go to the GEMV kernels of
// matmul_cpu.c (converted in registers as read, fp32 sums), in groups of up to
// seven rows; no fp32 copy of the adapter is ever made.
//
// A chunk of one row (decoding) is an sgemv, which streams A or B as they are;
// sgemm packs them first. One row, A and B in memory (not cache), TinyLlama's
// q/gate/down at rank 8 and 16 on the development VM: sgemm on one thread
// 5.4-10 GB/s, sgemv on one thread 8.8-13 GB/s, sgemv split on two 10-21 GB/s.
#include "lora_cpu.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "../../common/err.h"
#include "matmul_cpu.h"

#define LORA_CHUNK 32
#define LORA_TASKS_STACK 64  // task lists up to this size live on the stack (no malloc per call)
// A segment's A or B smaller than this many floats is not split: reading 64 KB
// takes a core ~5 us, several times what waking the other threads costs.
#define LORA_SPLIT_MIN 16384
// Output columns per block when a resident adapter's B is expanded: LORA_CHUNK
// rows of this many products (32 KB) live on the stack before they are added to y.
#define LORA_EXPAND_BLOCK 256

typedef struct {
    int g, i0, n;   // segment, first row within it, rows
    int c0, nc;     // output columns: rank rows of A (shrink) or rows of B (expand)
    size_t xa_off;  // where the chunk's (n, R) block of xa starts
} lora_task;

// Pieces per row chunk when there are nchunk chunks for nth threads and the
// segment's A or B has cols x k floats: whole chunks when there are at least as
// many as threads or the matrix is small; else enough pieces for every thread,
// no narrower than one column.
static int lora_pieces(int nchunk, int nth, int cols, int k) {
    if (nchunk >= nth || nchunk == 0 || (long long)cols * k < LORA_SPLIT_MIN) return 1;
    int p = (nth + nchunk - 1) / nchunk;
    return p < cols ? p : cols;
}

// The task list for seg into buf (cap entries) or, when longer, a malloc'd list
// (*heap set, for the caller to free); *ntask set. out_cols: the output width of
// every segment (expand), or 0 for each segment's rank (shrink); k: the other
// side of the matrix that is split (in for A; 0 for each segment's rank, B).
static lora_task *lora_tasks(lora_task *buf, int cap, const lora_seg *seg, int nseg, int out_cols, int k,
                             int *ntask, lora_task **heap) {
    int nchunk = 0;
    for (int g = 0; g < nseg; g++) {
        QL_ASSERT(seg[g].n >= 0 && seg[g].rank > 0 && seg[g].row0 >= 0);
        nchunk += (seg[g].n + LORA_CHUNK - 1) / LORA_CHUNK;
    }
    int nth = omp_get_max_threads(), nt = 0;
    for (int g = 0; g < nseg; g++) {
        int cols = out_cols ? out_cols : seg[g].rank;
        nt += (seg[g].n + LORA_CHUNK - 1) / LORA_CHUNK * lora_pieces(nchunk, nth, cols, k ? k : seg[g].rank);
    }
    lora_task *t = buf;
    *heap = NULL;
    if (nt > cap) t = *heap = mallocCheck(sizeof(lora_task) * (size_t)nt);
    size_t off = 0;
    nt = 0;
    for (int g = 0; g < nseg; g++) {
        int cols = out_cols ? out_cols : seg[g].rank, np = lora_pieces(nchunk, nth, cols, k ? k : seg[g].rank);
        for (int i0 = 0; i0 < seg[g].n; i0 += LORA_CHUNK) {
            int n = seg[g].n - i0 < LORA_CHUNK ? seg[g].n - i0 : LORA_CHUNK;
            for (int p = 0; p < np; p++) {  // columns [cols*p/np, cols*(p+1)/np): np near-equal pieces
                int c0 = (int)((long long)cols * p / np), c1 = (int)((long long)cols * (p + 1) / np);
                t[nt++] = (lora_task){g, i0, n, c0, c1 - c0, off + (size_t)i0 * seg[g].rank};
            }
        }
        off += (size_t)seg[g].n * seg[g].rank;
    }
    *ntask = nt;
    return t;
}

void cpu_lora_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in) {
    lora_task buf[LORA_TASKS_STACK], *heap;
    int nt;
    const lora_task *t = lora_tasks(buf, LORA_TASKS_STACK, seg, nseg, 0, in, &nt, &heap);
#pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
    for (int i = 0; i < nt; i++) {
        const lora_seg *s = &seg[t[i].g];
        const float *xc = x + (size_t)(s->row0 + t[i].i0) * in;
        float *xac = xa + t[i].xa_off + t[i].c0;
        // xa_chunk[:, c0:c0+nc] (n,nc) = x_chunk (n,in) @ A[c0:c0+nc]^T; ldc R
        if (s->tA != DT_F32) {  // a resident adapter's halves, converted as read
            const char *Ah = (const char *)s->A + dtype_size(s->tA) * (size_t)t[i].c0 * in;
            matmul_cpu_dense_st(xac, s->rank, Ah, s->tA, t[i].nc, in, xc, t[i].n);
            continue;
        }
        const float *Ac = (const float *)s->A + (size_t)t[i].c0 * in;
        if (t[i].n == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, t[i].nc, in, 1.0f, Ac, in, xc, 1, 0.0f, xac, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t[i].n, t[i].nc, in, 1.0f, xc, in, Ac, in, 0.0f, xac,
                        s->rank);
    }
    free(heap);
}

void cpu_lora_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out) {
    lora_task buf[LORA_TASKS_STACK], *heap;
    int nt;
    const lora_task *t = lora_tasks(buf, LORA_TASKS_STACK, seg, nseg, out, 0, &nt, &heap);
#pragma omp parallel for schedule(dynamic, 1) if (nt > 1)
    for (int i = 0; i < nt; i++) {
        const lora_seg *s = &seg[t[i].g];
        const float *xac = xa + t[i].xa_off;
        float *yc = y + (size_t)(s->row0 + t[i].i0) * out + t[i].c0;
        // y_chunk[:, c0:c0+nc] (n,nc) += scale * xa_chunk (n,R) @ B[c0:c0+nc]^T; ldc out
        if (s->tB != DT_F32) {  // halves: the products into a stack block, then added
            const char *Bh = (const char *)s->B + dtype_size(s->tB) * (size_t)t[i].c0 * s->rank;
            float tmp[LORA_CHUNK * LORA_EXPAND_BLOCK];
            for (int j0 = 0; j0 < t[i].nc; j0 += LORA_EXPAND_BLOCK) {
                int nj = t[i].nc - j0 < LORA_EXPAND_BLOCK ? t[i].nc - j0 : LORA_EXPAND_BLOCK;
                matmul_cpu_dense_st(tmp, nj, Bh + dtype_size(s->tB) * (size_t)j0 * s->rank, s->tB, nj, s->rank, xac,
                                    t[i].n);
                for (int r = 0; r < t[i].n; r++)
                    for (int j = 0; j < nj; j++) yc[(size_t)r * out + j0 + j] += s->scale * tmp[r * nj + j];
            }
            continue;
        }
        const float *Bc = (const float *)s->B + (size_t)t[i].c0 * s->rank;
        if (t[i].n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, t[i].nc, s->rank, s->scale, Bc, s->rank, xac, 1, 1.0f, yc, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t[i].n, t[i].nc, s->rank, s->scale, xac, s->rank, Bc,
                        s->rank, 1.0f, yc, out);
    }
    free(heap);
}
