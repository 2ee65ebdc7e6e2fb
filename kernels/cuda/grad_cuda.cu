// grad_cuda.cu: the CUDA backend's element-wise and per-row training ops and the
// optimizer (contracts in kernels/ops.h): rmsnorm_backward, rope_backward,
// swiglu_backward, cross_entropy, dropout, sumsq, adamw. Every op is queued on the
// backend's one stream; only sumsq waits for it (it returns a number to the host).
//
// Numerics against the CPU twins (kernels/cpu/grad_cpu.c, ops_cpu.c):
//   - rmsnorm_backward recomputes r exactly as the CUDA forward (rmsnorm_rows_f32:
//     fp32 tree sum of squares, reciprocal root in double), and sums dy*w*x as an
//     fp32 tree where the CPU sums in order: the results differ by the rounding of
//     a C-term fp32 sum. dw sums over rows in two fixed-order levels (chunks of
//     rows, then the chunks) with no atomics, so it is deterministic.
//   - rope_backward is the exact transpose of the CUDA forward: angle, sin/cos and
//     the rotation in double (the CPU, as Hugging Face, rounds the angle to fp32).
//   - swiglu_backward has the CPU's formula; CUDA's expf (<= 2 ulp) and fused
//     multiply-adds change the last bits only.
//   - cross_entropy: the max is exact, the sum of expf(l - max) is kept in double
//     as on the CPU (per thread, then a double tree), lse = max + log(sum) in the
//     same precision: differences are the order of the double sum and expf's ulps.
//   - dropout draws the mask bit for bit as dropout_keep (ops.h) and scales by the
//     same fp32 1/(1-p): identical to the CPU.
//   - sumsq accumulates exact double squares per thread over a grid fixed by n
//     alone, then sums the per-block partials in a fixed order: deterministic, and
//     off from the CPU's sequential double sum only in the last bits.
//   - adamw takes the scalars from adamw_scalars_of (as every backend) and rounds
//     each product, sum, root and quotient on its own (no FMA), in the C code's
//     order: the same bits as the CPU built without FMA contraction.
#include "cuda_common.cuh"

#define RMS_THREADS 256       // one block per row, as the forward
#define RMS_DW_THREADS 256    // columns per block of the dw kernels
#define RMS_DW_MIN_ROWS 32    // rows per chunk of the dw partial sums (at least)
#define CE_THREADS 1024       // one block per row of logits (V up to 128256 and more)
#define SUMSQ_THREADS CUDA_SUMSQ_THREADS  // and CUDA_SUMSQ_MAX_BLOCKS (cuda_sizes.h)

// ---- rmsnorm backward ----

// dx (N,C) += r * (dy*w - xn * mean(dy*w*xn)), xn = x*r; one block of RMS_THREADS
// per row. r as rmsnorm_rows_f32 computes it; rs (N), when not NULL, gets r per row
// for the dw kernels. dx must not alias dy or x.
static __global__ void __launch_bounds__(RMS_THREADS)
rmsnorm_backward_rows_f32(float *dx, float *rs, const float *__restrict__ dy, const float *__restrict__ x,
                          const float *__restrict__ w, int C, float eps) {
    __shared__ float s_red[32];
    const int64_t off = (int64_t)blockIdx.x * C;
    const float *xr = x + off, *g = dy + off;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss = fmaf(xr[c], xr[c], ss);
    ss = block_sum(ss, s_red);
    const float r = (float)(1.0 / sqrt((double)ss / C + (double)eps));
    float dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dot += g[c] * w[c] * xr[c];
    dot = block_sum(dot, s_red) * (r / C);  // mean(dy*w*xn)
    float *d = dx + off;
    for (int c = threadIdx.x; c < C; c += blockDim.x) d[c] += r * (g[c] * w[c] - xr[c] * r * dot);
    if (rs && threadIdx.x == 0) rs[blockIdx.x] = r;
}

// part (nchunks,C): part[k][c] = sum over rows n of chunk k of dy*x*rs[n], in row
// order. grid (ceil(C/RMS_DW_THREADS), nchunks), block RMS_DW_THREADS.
static __global__ void __launch_bounds__(RMS_DW_THREADS)
rmsnorm_dw_partial_f32(float *__restrict__ part, const float *__restrict__ dy, const float *__restrict__ x,
                       const float *__restrict__ rs, int N, int C, int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int64_t n0 = (int64_t)blockIdx.y * rows_per_chunk, n1 = n0 + rows_per_chunk < N ? n0 + rows_per_chunk : N;
    float acc = 0.0f;
    for (int64_t n = n0; n < n1; n++) {
        const int64_t i = n * C + c;
        acc += dy[i] * x[i] * rs[n];
    }
    part[(int64_t)blockIdx.y * C + c] = acc;
}

// dw (C) += sum over k of part[k][c], in chunk order. grid ceil(C/RMS_DW_THREADS).
static __global__ void __launch_bounds__(RMS_DW_THREADS)
rmsnorm_dw_reduce_f32(float *__restrict__ dw, const float *__restrict__ part, int nchunks, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int k = 0; k < nchunks; k++) acc += part[(int64_t)k * C + c];
    dw[c] += acc;
}

void cuda_rmsnorm_backward(ops *o, float *dx, float *dw, const float *dy, const float *x, const float *w, int N, int C,
                           float eps) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0 || C <= 0) return;
    float *rs = NULL, *part = NULL;
    int rows_per_chunk = RMS_DW_MIN_ROWS, nchunks = 0;
    if (dw) {
        const int need = (int)(((int64_t)N + 65534) / 65535);  // keeps nchunks within gridDim.y's limit
        if (need > rows_per_chunk) rows_per_chunk = need;
        nchunks = (int)(((int64_t)N + rows_per_chunk - 1) / rows_per_chunk);
        const size_t bytes = sizeof(float) * ((size_t)N + (size_t)nchunks * (size_t)C);
        rs = (float *)cuda_buf_reserve_abort(&c->work, bytes, "rmsnorm_backward dw partial sums", __FILE__, __LINE__);
        part = rs + N;
    }
    rmsnorm_backward_rows_f32<<<(unsigned)N, RMS_THREADS, 0, c->stream>>>(dx, rs, dy, x, w, C, eps);
    cudaLaunchCheck(c);
    if (!dw) return;
    const unsigned cblocks = grid_1d(C, RMS_DW_THREADS);
    rmsnorm_dw_partial_f32<<<dim3(cblocks, (unsigned)nchunks), RMS_DW_THREADS, 0, c->stream>>>(part, dy, x, rs, N, C,
                                                                                              rows_per_chunk);
    cudaLaunchCheck(c);
    rmsnorm_dw_reduce_f32<<<cblocks, RMS_DW_THREADS, 0, c->stream>>>(dw, part, nchunks, C);
    cudaLaunchCheck(c);
}

// ---- rope backward ----

// dx (N,H,D) rotated in place by -angle: rope_rotate_half_f32 (ops_cuda.cu) with
// sin negated, i.e. its transpose. One thread per (n, i), all H heads; double
// arithmetic rounded op by op (no FMA) as there.
static __global__ void rope_backward_rotate_half_f32(float *dx, const int *__restrict__ pos,
                                                     const float *__restrict__ inv_freq, int N, int H, int D) {
    const int half = D / 2;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)N * half) return;
    const int n = (int)(idx / half), i = (int)(idx % half);
    double s, co;
    sincos((double)pos[n] * (double)inv_freq[i], &s, &co);
    for (int h = 0; h < H; h++) {
        float *v = dx + ((int64_t)n * H + h) * D;
        const double x0 = v[i], x1 = v[i + half];
        v[i] = (float)__dadd_rn(__dmul_rn(x0, co), __dmul_rn(x1, s));         // x0 c - x1 (-s)
        v[i + half] = (float)__dsub_rn(__dmul_rn(x1, co), __dmul_rn(x0, s));  // x1 c + x0 (-s)
    }
}

void cuda_rope_backward(ops *o, float *dx, const int *pos, int N, int H, int D, const float *inv_freq) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0 || H <= 0 || D < 2) return;
    QL_ASSERT(D % 2 == 0);
    const void *src[2] = {pos, inv_freq};
    size_t bytes[2] = {sizeof(int) * (size_t)N, sizeof(float) * (size_t)(D / 2)};
    void *dst[2];
    cuda_upload_args(c, 2, src, bytes, dst);
    const int64_t pairs = (int64_t)N * (D / 2);
    rope_backward_rotate_half_f32<<<grid_1d(pairs, 128), 128, 0, c->stream>>>(dx, (const int *)dst[0],
                                                                                (const float *)dst[1], N, H, D);
    cudaLaunchCheck(c);
}

// ---- swiglu backward ----

// dgate (n) = dout * up * s * (1 + g*(1-s)), dup (n) = dout * g * s, s = sigmoid(g).
// dgate may alias gate and dup may alias up: all inputs of i are read first.
static __global__ void swiglu_backward_f32(float *dgate, float *dup, const float *dout, const float *gate,
                                           const float *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i], u = up[i], d = dout[i];
        const float s = 1.0f / (1.0f + expf(-g));
        dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
        dup[i] = d * g * s;
    }
}

void cuda_swiglu_backward(ops *o, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                          int n) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (n <= 0) return;
    swiglu_backward_f32<<<elementwise_blocks(c, n), 256, 0, c->stream>>>(dgate, dup, dout, gate, up, n);
    cudaLaunchCheck(c);
}

// ---- cross entropy ----

// Row n of logits (N,V): loss[n] = lse - l[t]; d (when not NULL) = scale *
// (softmax - onehot(t)); loss 0 and d all zeros where t < 0. One block of
// CE_THREADS per row. d may alias logits: every read of the row (l[t] included)
// happens before the barriers inside the reductions, every write after them, and
// a thread writes only elements it has just read itself.
static __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_rows_f32(float *__restrict__ loss, float *dlogits, const float *logits, const int *__restrict__ targets,
                       int V, float scale) {
    __shared__ float s_red[32];
    __shared__ double s_red64[32];
    const int64_t off = (int64_t)blockIdx.x * V;
    const int t = targets[blockIdx.x];  // uniform over the block
    float *d = dlogits ? dlogits + off : NULL;
    if (t < 0) {
        if (threadIdx.x == 0) loss[blockIdx.x] = 0.0f;
        if (d)
            for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.0f;
        return;
    }
    const float *l = logits + off;
    const float lt = l[t];  // before the barriers below: d[t] is written after them
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, l[i]);
    mx = block_max(mx, s_red);
    double sum = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sum += (double)expf(l[i] - mx);
    sum = block_sum(sum, s_red64);
    const float lse = mx + (float)log(sum);
    if (threadIdx.x == 0) loss[blockIdx.x] = lse - lt;
    if (!d) return;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float p = scale * expf(l[i] - lse);
        if (i == t) p -= scale;
        d[i] = p;
    }
}

void cuda_cross_entropy(ops *o, float *loss, float *dlogits, const float *logits, const int *targets, int N, int V,
                        float scale) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0 || V <= 0) return;
    for (int n = 0; n < N; n++)
        if (targets[n] >= V) {
            log_error("cross_entropy: target %d at %d is outside the vocabulary of %d", targets[n], n, V);
            QL_ASSERT(!"cross_entropy: target out of range");
        }
    const void *src[1] = {targets};
    size_t bytes[1] = {sizeof(int) * (size_t)N};
    void *dst[1];
    cuda_upload_args(c, 1, src, bytes, dst);
    cross_entropy_rows_f32<<<(unsigned)N, CE_THREADS, 0, c->stream>>>(loss, dlogits, logits, (const int *)dst[0], V,
                                                                       scale);
    cudaLaunchCheck(c);
}

// ---- dropout ----

// dropout_keep (ops.h) on the device: the same integer hash and the same double
// comparison, so both backends draw the same mask.
__device__ __forceinline__ int dropout_keep_device(uint64_t key, int64_t i, float p) {
    uint64_t z = key + 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0) >= (double)p;
}

// out (n) = keep_i ? x * s : 0, s = 1/(1-p) from the host. out may alias x.
static __global__ void dropout_f32(float *out, const float *x, int64_t n, float p, float s, uint64_t key) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = dropout_keep_device(key, i, p) ? __fmul_rn(x[i], s) : 0.0f;
}

void cuda_dropout(ops *o, float *out, const float *x, int64_t n, float p, uint64_t key) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (n <= 0) return;
    const float s = 1.0f / (1.0f - p);  // fp32, as the CPU
    dropout_f32<<<elementwise_blocks(c, n), 256, 0, c->stream>>>(out, x, n, p, s, key);
    cudaLaunchCheck(c);
}

// ---- sumsq ----

// part[b] = sum of x[i]^2 (exact double squares) over i = b*T + t + k*gridDim*T, per
// thread in i order, then a double tree over the block. block SUMSQ_THREADS.
static __global__ void __launch_bounds__(SUMSQ_THREADS)
sumsq_partial_f64(double *__restrict__ part, const float *__restrict__ x, int64_t n) {
    __shared__ double s_red[32];
    double acc = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const double v = x[i];
        acc += v * v;
    }
    acc = block_sum(acc, s_red);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// *out = sum of part (nparts), in a fixed order. One block of SUMSQ_THREADS.
static __global__ void __launch_bounds__(SUMSQ_THREADS)
sumsq_reduce_f64(double *__restrict__ out, const double *__restrict__ part, int nparts) {
    __shared__ double s_red[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += part[i];
    acc = block_sum(acc, s_red);
    if (threadIdx.x == 0) *out = acc;
}

double cuda_sumsq(ops *o, const float *x, int64_t n) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (n <= 0) return 0.0;
    QL_ASSERT(c->sumsq_acc && c->sumsq_host && "sumsq: the backend init allocates its accumulators");
    const int nb = cuda_sumsq_blocks(n);
    double *part = (double *)cuda_buf_reserve_abort(&c->work, sizeof(double) * (size_t)nb, "sumsq partial sums",
                                                    __FILE__, __LINE__);
    sumsq_partial_f64<<<(unsigned)nb, SUMSQ_THREADS, 0, c->stream>>>(part, x, n);
    cudaLaunchCheck(c);
    sumsq_reduce_f64<<<1, SUMSQ_THREADS, 0, c->stream>>>(c->sumsq_acc, part, nb);
    cudaLaunchCheck(c);
    cudaCheckAbort(cudaMemcpyAsync(c->sumsq_host, c->sumsq_acc, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    cudaCheckAbort(cudaStreamSynchronize(c->stream));
    return *c->sumsq_host;
}

// ---- adamw ----

// One AdamW step over n parameters, in the CPU's order, each operation rounded on
// its own (no FMA):
//   g = grad*clip; p *= decay; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
//   p -= step_size * m / (sqrt(v)/bc2_sqrt + eps)
static __global__ void adamw_f32(float *__restrict__ p, const float *__restrict__ grad, float *__restrict__ m,
                                 float *__restrict__ v, int64_t n, adamw_scalars s) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = __fmul_rn(grad[i], s.clip);
        const float pi = __fmul_rn(p[i], s.decay);
        const float mi = __fadd_rn(__fmul_rn(s.b1, m[i]), __fmul_rn(s.one_minus_b1, g));
        const float vi = __fadd_rn(__fmul_rn(s.b2, v[i]), __fmul_rn(__fmul_rn(s.one_minus_b2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fsub_rn(pi, __fdiv_rn(__fmul_rn(s.step_size, mi), denom));
    }
}

void cuda_adamw(ops *o, float *p, const float *g, float *m, float *v, int64_t n, const adamw_args *a) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (n <= 0) return;
    const adamw_scalars s = adamw_scalars_of(a);
    adamw_f32<<<elementwise_blocks(c, n), 256, 0, c->stream>>>(p, g, m, v, n, s);
    cudaLaunchCheck(c);
}
