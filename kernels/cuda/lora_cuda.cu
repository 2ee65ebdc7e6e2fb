// lora_cuda.cu: LoRA with cuBLAS SGEMM in full fp32 (kernels/ops.h): the
// training pair lora_forward / lora_backward and the multi-adapter pair
// lora_shrink / lora_expand. All matrices are fp32, row-major, in device memory:
// x (N,in), A (R,in), B (out,R), xa (N,R), y and dy (N,out). The handle's math
// mode is CUBLAS_DEFAULT_MATH (set by ops_cuda_new), so no TF32: these GEMMs
// are fp32 in and fp32 accumulation, like the CPU twin in kernels/cpu/grad_cpu.c.
//
// Mapping onto column-major cuBLAS: a row-major (M,K) matrix with row stride K
// is, untouched in memory, a column-major (K,M) matrix with leading dimension K,
// i.e. its transpose. So a row-major C (M,N) = P (M,K) @ Q (K,N) is computed as
// the column-major C^T (N,M) = Q^T (N,K) @ P^T (K,M), with each operand passed
// as stored and marked N when its stored (column-major) form is already the
// factor needed, T when it is that factor's transpose. Each call below carries
// its own derivation.
//
// Multi-adapter: when every segment has at most SGMV_MAX_ROWS rows (decoding),
// one kernel over all segments (below); otherwise one cuBLAS call per segment
// (nseg is at most the batch size), an SGEMV for a segment of one row.
// Scalars (alpha, beta) live on the host (the handle's default pointer mode).
// beta = 0 means cuBLAS never reads the output, so overwritten buffers (xa, dxa)
// may hold anything, NaN included, on entry.
#include "cuda_common.cuh"

static const float k_one = 1.0f, k_zero = 0.0f;

void cuda_lora_forward(ops *o, float *y, float *xa, const float *x, const float *A, const float *B, int N, int in,
                       int out, int R, float scaling) {
    QL_ASSERT(N >= 0 && in > 0 && out > 0 && R >= 0);
    if (N == 0 || R == 0) return;  // R == 0: no adapter term, and xa is empty
    cuda_ctx *c = cuda_ctx_of(o);
    // xa (N,R) = x (N,in) @ A^T. Column-major: xa^T (R,N) = A (R,in) @ x^T (in,N).
    // A is stored as column-major (in,R), ld in: op T. x is stored as column-major
    // (in,N) = x^T, ld in: op N. m = R, n = N, k = in; ldc = R.
    cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, R, N, in, &k_one, A, in, x, in, &k_zero, xa, R));
    cudaLaunchCheck(c);
    // y (N,out) += scaling * xa (N,R) @ B^T. Column-major: y^T (out,N) += scaling *
    // B (out,R) @ xa^T (R,N). B is stored as column-major (R,out), ld R: op T. xa is
    // stored as column-major (R,N) = xa^T, ld R: op N. m = out, n = N, k = R; ldc = out.
    cublasCheckAbort(
        cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, N, R, &scaling, B, R, xa, R, &k_one, y, out));
    cudaLaunchCheck(c);
}

void cuda_lora_backward(ops *o, float *dA, float *dB, float *dx, float *dxa, const float *dy, const float *x,
                        const float *xa, const float *A, const float *B, int N, int in, int out, int R,
                        float scaling) {
    QL_ASSERT(N >= 0 && in > 0 && out > 0 && R >= 0);
    if (N == 0 || R == 0) return;  // R == 0: every gradient here is empty or gets nothing
    cuda_ctx *c = cuda_ctx_of(o);
    // First, as dA and dx read it. dxa (N,R) = scaling * dy (N,out) @ B (out,R).
    // Column-major: dxa^T (R,N) = scaling * B^T (R,out) @ dy^T (out,N). B is stored as
    // column-major (R,out) = B^T, ld R: op N. dy is stored as column-major (out,N) =
    // dy^T, ld out: op N. m = R, n = N, k = out; ldc = R.
    cublasCheckAbort(
        cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, R, N, out, &scaling, B, R, dy, out, &k_zero, dxa, R));
    cudaLaunchCheck(c);
    // dB (out,R) += scaling * dy^T (out,N) @ xa (N,R). Column-major: dB^T (R,out) +=
    // scaling * xa^T (R,N) @ dy (N,out). xa is stored as column-major (R,N) = xa^T,
    // ld R: op N. dy is stored as column-major (out,N), ld out, whose transpose is
    // needed: op T. m = R, n = out, k = N; ldc = R.
    cublasCheckAbort(
        cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, R, out, N, &scaling, xa, R, dy, out, &k_one, dB, R));
    cudaLaunchCheck(c);
    // dA (R,in) += dxa^T (R,N) @ x (N,in). Column-major: dA^T (in,R) += x^T (in,N) @
    // dxa (N,R). x is stored as column-major (in,N) = x^T, ld in: op N. dxa is stored
    // as column-major (R,N), ld R, whose transpose is needed: op T. m = in, n = R,
    // k = N; ldc = in.
    cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, in, R, N, &k_one, x, in, dxa, R, &k_one, dA, in));
    cudaLaunchCheck(c);
    if (!dx) return;
    // dx (N,in) += dxa (N,R) @ A (R,in). Column-major: dx^T (in,N) += A^T (in,R) @
    // dxa^T (R,N). A is stored as column-major (in,R) = A^T, ld in: op N. dxa is
    // stored as column-major (R,N) = dxa^T, ld R: op N. m = in, n = N, k = R; ldc = in.
    cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, N, R, &k_one, A, in, dxa, R, &k_one, dx, in));
    cudaLaunchCheck(c);
}

// ---- decoding: every segment in one launch ----
//
// When every segment is short (decoding, or small prefill chunks: at most
// SGMV_MAX_ROWS rows each), one cuBLAS call per segment would be launch-bound
// (2 calls x segments x 7 projections x layers per step). So shrink and expand
// each become one kernel over all segments, as Punica's SGMV: the segments'
// table travels in the argument buffer; each output finds its segment by binary
// search over the offsets. fp32 products and sums (in another order than cuBLAS).

#define SGMV_MAX_ROWS 8

typedef struct {
    int row0, n, rank;
    int off;       // shrink: where the segment's (n,rank) block starts in xa; expand: the same
    int rows_off;  // expand: rows of the earlier (non-empty) segments
    float scale;
    const float *A, *B;
} sgmv_seg;

// The last g in [0, nseg) with key(g) <= v; key increasing.
__device__ __forceinline__ int sgmv_find(const sgmv_seg *segs, int nseg, int v, bool by_rows) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if ((by_rows ? segs[mid].rows_off : segs[mid].off) <= v) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// xa[w] for w < total (sum of n*rank): one warp per element, the dot product of a
// row of x and a row of A over `in`. Block 256 (8 warps).
__global__ void __launch_bounds__(256)
sgmv_shrink_f32(float *__restrict__ xa, const float *__restrict__ x, const sgmv_seg *__restrict__ segs, int nseg,
                int in, int total) {
    const int w = (int)(((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (w >= total) return;  // whole warps leave together
    const sgmv_seg s = segs[sgmv_find(segs, nseg, w, false)];
    const int local = w - s.off, i = local / s.rank, j = local % s.rank;
    const float *xr = x + (int64_t)(s.row0 + i) * in, *ar = s.A + (int64_t)j * in;
    float acc = 0.0f;
    for (int c = lane; c < in; c += 32) acc = fmaf(__ldg(xr + c), __ldg(ar + c), acc);
    acc = warp_sum(acc);
    if (lane == 0) xa[w] = acc;
}

// y[row0+i][c] += scale * xa_g[i] . B_g[c] for every segment row and c < out: one
// thread per (row, c). total = (sum of n) * out.
__global__ void sgmv_expand_f32(float *__restrict__ y, const float *__restrict__ xa, const sgmv_seg *__restrict__ segs,
                                int nseg, int out, int64_t total) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total) return;
    const int r = (int)(t / out), c = (int)(t % out);
    const sgmv_seg s = segs[sgmv_find(segs, nseg, r, true)];
    const int i = r - s.rows_off;
    const float *xr = xa + s.off + (int64_t)i * s.rank, *br = s.B + (int64_t)c * s.rank;
    float acc = 0.0f;
    for (int j = 0; j < s.rank; j++) acc = fmaf(xr[j], __ldg(br + j), acc);
    float *yp = y + (int64_t)(s.row0 + i) * out + c;
    *yp = fmaf(s.scale, acc, *yp);
}

// The non-empty segments as the kernels read them, in the argument buffer; their
// count in *n, their rows in *rows, their xa elements in *elems. NULL when some
// segment has more than SGMV_MAX_ROWS rows (the cuBLAS path takes the call then).
static const sgmv_seg *sgmv_table(cuda_ctx *c, const lora_seg *seg, int nseg, int *n, int *rows, int64_t *elems) {
    for (int g = 0; g < nseg; g++)
        if (seg[g].n > SGMV_MAX_ROWS) return NULL;
    sgmv_seg *t = (sgmv_seg *)mallocCheck(sizeof(sgmv_seg) * (size_t)(nseg ? nseg : 1));
    int k = 0, r = 0;
    int64_t off = 0;
    for (int g = 0; g < nseg; g++) {
        const lora_seg *s = &seg[g];
        if (s->n > 0 && s->rank > 0) {
            QL_ASSERT(s->tA == DT_F32 && s->tB == DT_F32);  // lora_half 0: copies are fp32
            t[k++] = (sgmv_seg){s->row0, s->n, s->rank, (int)off, r, s->scale, (const float *)s->A,
                                (const float *)s->B};
            r += s->n;
        }
        off += (int64_t)s->n * s->rank;
    }
    QL_ASSERT(off <= INT32_MAX);
    *n = k, *rows = r, *elems = off;
    const void *src[1] = {t};
    size_t bytes[1] = {sizeof(sgmv_seg) * (size_t)(k ? k : 1)};
    void *dst[1];
    cuda_upload_args(c, 1, src, bytes, dst);  // pageable source: staged before the call returns
    free(t);
    return (const sgmv_seg *)dst[0];
}

void cuda_lora_shrink(ops *o, float *xa, const float *x, const lora_seg *seg, int nseg, int in) {
    QL_ASSERT(nseg >= 0 && in > 0);
    if (nseg == 0) return;
    cuda_ctx *c = cuda_ctx_of(o);
    int k, rows;
    int64_t elems;
    const sgmv_seg *table = sgmv_table(c, seg, nseg, &k, &rows, &elems);
    if (table) {
        if (k == 0) return;
        sgmv_shrink_f32<<<grid_1d(elems * 32, 256), 256, 0, c->stream>>>(xa, x, table, k, in, (int)elems);
        cudaLaunchCheck(c);
        return;
    }
    size_t off = 0;  // where segment g's (n_g, R_g) block of xa starts
    for (int g = 0; g < nseg; g++) {
        const lora_seg *s = &seg[g];
        QL_ASSERT(s->n >= 0 && s->rank >= 0 && s->row0 >= 0 && s->tA == DT_F32);
        const int n = s->n, R = s->rank;
        const float *A = (const float *)s->A;
        const float *xg = x + (size_t)s->row0 * in;
        float *xag = xa + off;
        off += (size_t)n * R;
        if (n == 0 || R == 0) continue;
        if (n == 1)
            // xa_g (R) = A_g (R,in) @ x_g (in). A_g is stored as column-major (in,R),
            // ld in: op T makes it (R,in). m = in, n = R (the stored shape).
            cublasCheckAbort(cublasSgemv(c->blas, CUBLAS_OP_T, in, R, &k_one, A, in, xg, 1, &k_zero, xag, 1));
        else
            // xa_g (n,R) = x_g (n,in) @ A_g^T: as in lora_forward, column-major xa_g^T
            // (R,n) = A_g (R,in) @ x_g^T (in,n): "TN", m = R, n = n, k = in, lda = ldb = in,
            // ldc = R.
            cublasCheckAbort(
                cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, R, n, in, &k_one, A, in, xg, in, &k_zero, xag, R));
        cudaLaunchCheck(c);
    }
}

void cuda_lora_expand(ops *o, float *y, const float *xa, const lora_seg *seg, int nseg, int out) {
    QL_ASSERT(nseg >= 0 && out > 0);
    if (nseg == 0) return;
    cuda_ctx *c = cuda_ctx_of(o);
    int k, rows;
    int64_t elems;
    const sgmv_seg *table = sgmv_table(c, seg, nseg, &k, &rows, &elems);
    if (table) {
        if (k == 0) return;
        const int64_t total = (int64_t)rows * out;
        sgmv_expand_f32<<<grid_1d(total, 256), 256, 0, c->stream>>>(y, xa, table, k, out, total);
        cudaLaunchCheck(c);
        return;
    }
    size_t off = 0;  // where segment g's (n_g, R_g) block of xa starts
    for (int g = 0; g < nseg; g++) {
        const lora_seg *s = &seg[g];
        QL_ASSERT(s->n >= 0 && s->rank >= 0 && s->row0 >= 0 && s->tB == DT_F32);
        const int n = s->n, R = s->rank;
        const float *B = (const float *)s->B;
        const float *xag = xa + off;
        float *yg = y + (size_t)s->row0 * out;
        off += (size_t)n * R;
        if (n == 0 || R == 0) continue;
        if (n == 1)
            // y_g (out) += scale * B_g (out,R) @ xa_g (R). B_g is stored as column-major
            // (R,out), ld R: op T makes it (out,R). m = R, n = out (the stored shape).
            cublasCheckAbort(cublasSgemv(c->blas, CUBLAS_OP_T, R, out, &s->scale, B, R, xag, 1, &k_one, yg, 1));
        else
            // y_g (n,out) += scale * xa_g (n,R) @ B_g^T: as in lora_forward, column-major
            // y_g^T (out,n) += scale * B_g (out,R) @ xa_g^T (R,n): "TN", m = out, n = n,
            // k = R, lda = ldb = R, ldc = out.
            cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, R, &s->scale, B, R, xag, R,
                                         &k_one, yg, out));
        cudaLaunchCheck(c);
    }
}
