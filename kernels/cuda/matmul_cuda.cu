// matmul_cuda.cu: out (N,rows) = x (N,cols) @ W^T for F32, F16, BF16 and NF4
// weights W (rows,cols) (kernels/ops.h). x and out are fp32, row-major.
//
// N <= OPS_CUDA_GEMV_MAX_N (decode): fused GEMV kernels. Memory bound: every
//   weight byte is read once, with 16-byte loads, and used for all N tokens;
//   NF4 codes are decoded in registers through a table in shared memory and
//   the block's absmax is rebuilt on the fly from q8/scale2/offset. Weights are
//   exact (as stored, or dequantized bit-exactly); x is fp32; fp32 accumulation.
//   A general kernel takes odd shapes (cols not a multiple of the 16-byte chunk,
//   unaligned x).
// N > OPS_CUDA_GEMV_MAX_N (prefill, training): cuBLAS tensor cores with fp32
//   accumulation. The inputs must share one 16-bit type, so x is rounded to
//   the weight's type: fp16 for F16, bf16 for BF16. NF4 is dequantized (exactly,
//   then rounded to fp16: NF4 values times absmax are small, fp16 keeps 3 more
//   mantissa bits than bf16) into a scratch tile of rows and x is rounded to
//   fp16. F32 weights use SGEMM in full fp32 (no TF32). BF16 on GPUs without
//   bf16 tensor cores (before sm_80) goes through an fp32 tile and SGEMM.
#include "cuda_common.cuh"
extern "C" {
#include "ops_cuda.h"
}

#define GEMV_WARPS 4
#define GEMV_THREADS (32 * GEMV_WARPS)
#define GEMV_ANY_ROWS 4  // rows per block of the general kernel, one warp each

// Rows per block of the fast GEMV kernels: more rows reuse each x load more
// often; fewer rows leave registers for the NT tokens' partial sums.
#define GEMV_ROWS(NT) ((NT) <= 4 ? 4 : 2)

enum { WK_F32, WK_F16, WK_BF16 };  // dense weight kinds of the fast GEMV

// ---- GEMV: shared tail ----

// Sums each thread's acc[R][NT] over the block and stores out[n][r0+r] for the
// rows that exist. s_red: shared [GEMV_WARPS][R*NT]. Block (32, warps).
template <int NT, int R>
__device__ __forceinline__ void gemv_block_store(float *__restrict__ out, float (&acc)[R][NT], float (*s_red)[R * NT],
                                                 int r0, int rows) {
    const int lane = threadIdx.x, warp = threadIdx.y, tid = warp * 32 + lane;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float v = warp_sum(acc[r][n]);
            if (lane == 0) s_red[warp][r * NT + n] = v;
        }
    __syncthreads();
    if (tid < R * NT) {
        const int r = tid / NT, n = tid % NT;
        float sum = 0.0f;
        for (int w = 0; w < (int)blockDim.y; w++) sum += s_red[w][tid];
        if (r0 + r < rows) out[(int64_t)n * rows + r0 + r] = sum;
    }
}

// ---- GEMV: NF4 ----

// out (NT,rows) = x (NT,cols) @ W^T, W NF4 with cols % 32 == 0; x 16-byte aligned.
// grid ceil(rows/R), block (32, warps <= GEMV_WARPS). Block b owns rows
// [b*R, b*R+R). A 16-byte chunk of codes is 32 elements of one row, and since
// cols % 32 == 0 it lies inside one 64-element absmax block. Thread t walks the
// chunks j = t, t+nthr, ... of a row, loading chunk j of all R rows at once (R
// independent 16-byte loads in flight), then reads x[n][32j .. 32j+32) once for
// those R rows. Per chunk, the NF4 values times x are summed first and scaled by
// the block's absmax once. Rows past the end repeat the last row's loads and are
// never stored.
template <int NT, int R>
__global__ void __launch_bounds__(GEMV_THREADS)
nf4_gemv_rows(float *__restrict__ out, const float *__restrict__ x, cuda_weight w, const float *__restrict__ tables) {
    __shared__ float s_tab[NF4_TABLES_LEN];  // [0,16) NF4 values, [16,272) absmax codes
    __shared__ float s_red[GEMV_WARPS][R * NT];
    nf4_tables_to_shared(s_tab, tables);
    const int tid = threadIdx.y * 32 + threadIdx.x, nthr = blockDim.x * blockDim.y;
    const int rows = (int)w.rows, cols = (int)w.cols, cpr = cols / 32, r0 = blockIdx.x * R;
    const uint4 *codes = (const uint4 *)w.codes;

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int n = 0; n < NT; n++) acc[r][n] = 0.0f;

    for (int j = tid; j < cpr; j += nthr) {
        uint4 q[R];
        float am[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int64_t g = (int64_t)min(r0 + r, rows - 1) * cpr + j;  // chunk index; absmax block g/2
            q[r] = __ldcs(codes + g);                                     // streamed: read once
            am[r] = nf4_block_absmax(s_tab + 16, __ldg(w.absmax_q + (g >> 1)), __ldg(w.absmax_scale + (g >> 9)),
                                     w.absmax_offset);
        }
        float part[R][NT];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int n = 0; n < NT; n++) part[r][n] = 0.0f;
#pragma unroll
        for (int s = 0; s < 4; s++) {  // 32-bit word s of the chunk: elements 8s .. 8s+7
            float xv[NT][8];
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const float4 *xp = (const float4 *)(x + (int64_t)n * cols + (int64_t)j * 32 + s * 8);
                const float4 a = __ldg(xp), b = __ldg(xp + 1);
                xv[n][0] = a.x; xv[n][1] = a.y; xv[n][2] = a.z; xv[n][3] = a.w;
                xv[n][4] = b.x; xv[n][5] = b.y; xv[n][6] = b.z; xv[n][7] = b.w;
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                float t[8];
                nf4_lookup8(u4_word(q[r], s), s_tab, t);
#pragma unroll
                for (int k = 0; k < 8; k++)
#pragma unroll
                    for (int n = 0; n < NT; n++) part[r][n] = fmaf(t[k], xv[n][k], part[r][n]);
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int n = 0; n < NT; n++) acc[r][n] = fmaf(am[r], part[r][n], acc[r][n]);
    }
    gemv_block_store<NT, R>(out, acc, s_red, r0, rows);
}

// ---- GEMV: F32, F16, BF16 ----

// The 16-byte chunk raw as fp32: 4 (F32) or 8 (F16, BF16) elements, exact.
template <int WK>
__device__ __forceinline__ void dense_chunk_to_f32(const uint4 &raw, float *f) {
    if constexpr (WK == WK_F32) {
        f[0] = __uint_as_float(raw.x); f[1] = __uint_as_float(raw.y);
        f[2] = __uint_as_float(raw.z); f[3] = __uint_as_float(raw.w);
    } else {
#pragma unroll
        for (int s = 0; s < 4; s++) {
            const uint32_t word = u4_word(raw, s);  // element 2s in the low half
            if constexpr (WK == WK_F16) {
                f[2 * s] = __half2float(__ushort_as_half((unsigned short)(word & 0xffffu)));
                f[2 * s + 1] = __half2float(__ushort_as_half((unsigned short)(word >> 16)));
            } else {
                f[2 * s] = __uint_as_float(word << 16);
                f[2 * s + 1] = __uint_as_float(word & 0xffff0000u);
            }
        }
    }
}

// out (NT,rows) = x (NT,cols) @ W^T, W (rows,cols) F32/F16/BF16 with cols a
// multiple of the chunk (EPC = 4 or 8 elements = 16 bytes); W and x 16-byte
// aligned. Same layout as nf4_gemv_rows: grid ceil(rows/R), block (32, warps);
// each thread loads chunk j of R rows, then x[n][EPC*j ..) once for them.
template <int WK, int NT, int R>
__global__ void __launch_bounds__(GEMV_THREADS)
dense_gemv_rows(float *__restrict__ out, const float *__restrict__ x, const uint4 *__restrict__ W, int rows, int cols) {
    constexpr int EPC = WK == WK_F32 ? 4 : 8;
    __shared__ float s_red[GEMV_WARPS][R * NT];
    const int tid = threadIdx.y * 32 + threadIdx.x, nthr = blockDim.x * blockDim.y;
    const int cpr = cols / EPC, r0 = blockIdx.x * R;

    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int n = 0; n < NT; n++) acc[r][n] = 0.0f;

    for (int j = tid; j < cpr; j += nthr) {
        uint4 raw[R];
#pragma unroll
        for (int r = 0; r < R; r++) raw[r] = __ldcs(W + (int64_t)min(r0 + r, rows - 1) * cpr + j);
        float xv[NT][EPC];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float4 *xp = (const float4 *)(x + (int64_t)n * cols + (int64_t)j * EPC);
#pragma unroll
            for (int v = 0; v < EPC / 4; v++) {
                const float4 a = __ldg(xp + v);
                xv[n][4 * v] = a.x; xv[n][4 * v + 1] = a.y; xv[n][4 * v + 2] = a.z; xv[n][4 * v + 3] = a.w;
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            float wf[EPC];
            dense_chunk_to_f32<WK>(raw[r], wf);
#pragma unroll
            for (int k = 0; k < EPC; k++)
#pragma unroll
                for (int n = 0; n < NT; n++) acc[r][n] = fmaf(wf[k], xv[n][k], acc[r][n]);
        }
    }
    gemv_block_store<NT, R>(out, acc, s_red, r0, rows);
}

// ---- GEMV: any shape ----

// out (N,rows) = x (N,cols) @ W^T for any weight type, any cols, any x alignment;
// N <= OPS_CUDA_GEMV_MAX_N. One warp per row, lanes stride the columns; element
// by element (NF4 absmax rebuilt per element). For the shapes the fast kernels
// do not take. grid ceil(rows/GEMV_ANY_ROWS), block (32, GEMV_ANY_ROWS).
__global__ void __launch_bounds__(32 * GEMV_ANY_ROWS)
gemv_rows_any(float *__restrict__ out, const float *__restrict__ x, cuda_weight w, const float *__restrict__ tables,
              int N) {
    __shared__ float s_tab[NF4_TABLES_LEN];
    if (w.type == DT_NF4) nf4_tables_to_shared(s_tab, tables);  // uniform branch
    const int64_t row = (int64_t)blockIdx.x * GEMV_ANY_ROWS + threadIdx.y;
    if (row >= w.rows) return;  // whole warp
    float acc[OPS_CUDA_GEMV_MAX_N];
#pragma unroll
    for (int n = 0; n < OPS_CUDA_GEMV_MAX_N; n++) acc[n] = 0.0f;
    for (int64_t c = threadIdx.x; c < w.cols; c += 32) {
        const float wv = weight_elem(w, s_tab, row * w.cols + c);
#pragma unroll
        for (int n = 0; n < OPS_CUDA_GEMV_MAX_N; n++)
            if (n < N) acc[n] = fmaf(wv, x[n * w.cols + c], acc[n]);
    }
#pragma unroll
    for (int n = 0; n < OPS_CUDA_GEMV_MAX_N; n++)
        if (n < N) {
            const float v = warp_sum(acc[n]);
            if (threadIdx.x == 0) out[n * w.rows + row] = v;
        }
}

// ---- tensor-core path: conversions ----

__device__ __forceinline__ uint32_t half2_bits(__half2 h) { return *reinterpret_cast<uint32_t *>(&h); }

// Eight dequantized values into the tile at element i*8, as 16-byte stores.
__device__ __forceinline__ void store8(__half *tile, int64_t i, const float *f) {
    uint4 v;
    v.x = half2_bits(__floats2half2_rn(f[0], f[1]));  // .x: lower address
    v.y = half2_bits(__floats2half2_rn(f[2], f[3]));
    v.z = half2_bits(__floats2half2_rn(f[4], f[5]));
    v.w = half2_bits(__floats2half2_rn(f[6], f[7]));
    ((uint4 *)tile)[i] = v;
}
__device__ __forceinline__ void store8(float *tile, int64_t i, const float *f) {
    float4 *dst = (float4 *)(tile + i * 8);
    dst[0] = make_float4(f[0], f[1], f[2], f[3]);
    dst[1] = make_float4(f[4], f[5], f[6], f[7]);
}

// tile (count) = elements [e0, e0+count) of an NF4 W, dequantized exactly and
// rounded to T (fp16 for the forward, fp32 for the backward), 8 per thread: one
// 4-byte code load, one absmax, 16-byte stores. e0 % 8 == 0 and count % 8 == 0
// (whole rows of a W with cols % 8 == 0), so the 8 elements share one absmax.
// grid ceil(count/8/256), block 256.
template <typename T>
__global__ void nf4_dequant_x8(T *__restrict__ tile, cuda_weight w, const float *__restrict__ tables, int64_t e0,
                               int64_t count) {
    __shared__ float s_tab[NF4_TABLES_LEN];
    nf4_tables_to_shared(s_tab, tables);
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;  // group of 8 elements
    if (i * 8 >= count) return;
    const int64_t e = e0 + i * 8, b = e / NF4_BLOCK;
    const uint32_t word = __ldcs((const unsigned int *)(w.codes + (e >> 1)));
    const float am = nf4_block_absmax(s_tab + 16, w.absmax_q[b], w.absmax_scale[b / NF4_BLOCK2], w.absmax_offset);
    float f[8];
    nf4_lookup8(word, s_tab, f);
#pragma unroll
    for (int k = 0; k < 8; k++) f[k] = __fmul_rn(f[k], am);
    store8(tile, i, f);
}

__device__ __forceinline__ void store_as(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__half *p, float v) { *p = __float2half_rn(v); }

// tile (count) = elements [e0, e0+count) of any W, rounded to T (fp16 or fp32).
// Element by element; for the shapes nf4_dequant_x8 does not take. Grid-stride.
template <typename T>
__global__ void weight_to_tile(T *__restrict__ tile, cuda_weight w, const float *__restrict__ tables, int64_t e0,
                               int64_t count) {
    __shared__ float s_tab[NF4_TABLES_LEN];
    if (w.type == DT_NF4) nf4_tables_to_shared(s_tab, tables);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x)
        store_as(tile + i, weight_elem(w, s_tab, e0 + i));
}

// dst (n) = src (n) rounded to nearest fp16 (overflow gives inf, as a cast would).
__global__ void f32_to_f16_round(__half *__restrict__ dst, const float *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2half_rn(src[i]);
}

// dst (n) = src (n) rounded to nearest bf16.
__global__ void f32_to_bf16_round(__nv_bfloat16 *__restrict__ dst, const float *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// ---- host side ----

static const float k_one = 1.0f, k_zero = 0.0f;

static unsigned stride_blocks(const cuda_ctx *c, int64_t n, int threads) {
    const int64_t cap = (int64_t)c->prop.multiProcessorCount * 16, b = (n + threads - 1) / threads;
    return (unsigned)(b < cap ? b : cap);
}

void cuda_matmul_tile_shape(const cuda_ctx *c, const cuda_weight *w, int64_t *rows_per_tile, size_t *elem_bytes) {
    // fp16 tile for NF4, fp32 for BF16 without bf16 tensor cores; none: cuBLAS reads the weight itself
    const size_t esz = cuda_fwd_tile_esz(w->type, c->prop.major);
    *rows_per_tile = esz ? cuda_tile_rows(c->tile_budget, w->rows, w->cols, esz) : 0;
    *elem_bytes = esz;
}

template <int NT>
static void launch_gemv_fast(cuda_ctx *c, float *out, const float *x, const cuda_weight *w, dim3 block) {
    constexpr int R = GEMV_ROWS(NT);
    const unsigned grid = grid_1d(w->rows, R);
    const int rows = (int)w->rows, cols = (int)w->cols;
    const uint4 *W = (const uint4 *)w->data;
    switch (w->type) {
    case DT_NF4: nf4_gemv_rows<NT, R><<<grid, block, 0, c->stream>>>(out, x, *w, c->nf4_tables); break;
    case DT_F32: dense_gemv_rows<WK_F32, NT, R><<<grid, block, 0, c->stream>>>(out, x, W, rows, cols); break;
    case DT_F16: dense_gemv_rows<WK_F16, NT, R><<<grid, block, 0, c->stream>>>(out, x, W, rows, cols); break;
    case DT_BF16: dense_gemv_rows<WK_BF16, NT, R><<<grid, block, 0, c->stream>>>(out, x, W, rows, cols); break;
    default: QL_ASSERT(!"matmul: unsupported weight type");
    }
    cudaLaunchCheck(c);
}

static void matmul_gemv(cuda_ctx *c, float *out, const float *x, const cuda_weight *w, int N) {
    const int epc = w->type == DT_NF4 ? 32 : w->type == DT_F32 ? 4 : 8;  // elements per 16-byte chunk
    const bool aligned = ((uintptr_t)x & 15) == 0 && (w->type == DT_NF4 || ((uintptr_t)w->data & 15) == 0);
    if (!aligned || w->cols % epc != 0) {
        dim3 block(32, GEMV_ANY_ROWS);
        gemv_rows_any<<<grid_1d(w->rows, GEMV_ANY_ROWS), block, 0, c->stream>>>(out, x, *w, c->nf4_tables, N);
        cudaLaunchCheck(c);
        return;
    }
    const int64_t cpr = w->cols / epc;  // chunks per row
    int warps = (int)((cpr + 31) / 32);
    if (warps > GEMV_WARPS) warps = GEMV_WARPS;
    const dim3 block(32, (unsigned)warps);
    switch (N) {
    case 1: launch_gemv_fast<1>(c, out, x, w, block); break;
    case 2: launch_gemv_fast<2>(c, out, x, w, block); break;
    case 3: launch_gemv_fast<3>(c, out, x, w, block); break;
    case 4: launch_gemv_fast<4>(c, out, x, w, block); break;
    case 5: launch_gemv_fast<5>(c, out, x, w, block); break;
    case 6: launch_gemv_fast<6>(c, out, x, w, block); break;
    case 7: launch_gemv_fast<7>(c, out, x, w, block); break;
    case 8: launch_gemv_fast<8>(c, out, x, w, block); break;
    default: QL_ASSERT(!"matmul_gemv: N out of range");
    }
}

// x (n) fp32 -> scratch in fp16 or bf16; returns the scratch.
static const void *convert_x(cuda_ctx *c, const float *x, int64_t n, bool bf16) {
    void *dst = cuda_buf_reserve_abort(&c->xconv, (size_t)n * 2, "activations in 16 bits", __FILE__, __LINE__);
    if (bf16) f32_to_bf16_round<<<stride_blocks(c, n, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)dst, x, n);
    else f32_to_f16_round<<<stride_blocks(c, n, 256), 256, 0, c->stream>>>((__half *)dst, x, n);
    cudaLaunchCheck(c);
    return dst;
}

// Row-major out (N,rows) = x (N,cols) @ W^T is, column-major, out^T (rows,N) =
// W (cols,rows)^T @ x^T (cols,N): cuBLAS "TN" with lda = ldb = cols, ldc = rows.
static void matmul_tensor_cores(cuda_ctx *c, float *out, const float *x, const cuda_weight *w, int N) {
    const int rows = (int)w->rows, cols = (int)w->cols;
    if (w->type == DT_F32) {
        cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, N, cols, &k_one, (const float *)w->data,
                                     cols, x, cols, &k_zero, out, rows));
        cudaLaunchCheck(c);
        return;
    }
    if (w->type == DT_F16 || (w->type == DT_BF16 && c->prop.major >= 8)) {
        const bool bf16 = w->type == DT_BF16;
        const cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
        const void *xh = convert_x(c, x, (int64_t)N * cols, bf16);
        cublasCheckAbort(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, N, cols, &k_one, w->data, t, cols, xh, t,
                                      cols, &k_zero, out, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        cudaLaunchCheck(c);
        return;
    }
    // NF4 (fp16 tiles) or BF16 before sm_80 (fp32 tiles), a tile of rows at a time.
    int64_t tr;
    size_t esz;
    cuda_matmul_tile_shape(c, w, &tr, &esz);
    QL_ASSERT(tr > 0);
    void *tile = cuda_buf_reserve_abort(&c->tile, (size_t)tr * cols * esz, "dequantized weight tile", __FILE__, __LINE__);
    const void *xin = esz == 2 ? convert_x(c, x, (int64_t)N * cols, false) : (const void *)x;
    for (int64_t r0 = 0; r0 < rows; r0 += tr) {
        const int64_t nr = tr < rows - r0 ? tr : rows - r0, e0 = r0 * cols, count = nr * cols;
        if (esz == 2 && cols % 8 == 0)
            nf4_dequant_x8<__half><<<grid_1d(count / 8, 256), 256, 0, c->stream>>>((__half *)tile, *w, c->nf4_tables, e0,
                                                                                 count);
        else if (esz == 2)
            weight_to_tile<__half><<<stride_blocks(c, count, 256), 256, 0, c->stream>>>((__half *)tile, *w,
                                                                                         c->nf4_tables, e0, count);
        else
            weight_to_tile<float><<<stride_blocks(c, count, 256), 256, 0, c->stream>>>((float *)tile, *w,
                                                                                        c->nf4_tables, e0, count);
        cudaLaunchCheck(c);
        if (esz == 2)
            cublasCheckAbort(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, N, cols, &k_one, tile, CUDA_R_16F,
                                          cols, xin, CUDA_R_16F, cols, &k_zero, out + r0, CUDA_R_32F, rows,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        else
            cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, N, cols, &k_one, (const float *)tile,
                                         cols, x, cols, &k_zero, out + r0, rows));
        cudaLaunchCheck(c);
    }
}

void cuda_matmul(ops *o, float *out, const float *x, const qweight *qw, int N) {
    cuda_ctx *c = cuda_ctx_of(o);
    QL_ASSERT(qw->dev && "matmul: weight_upload the weight first");
    if (N <= 0) return;
    const cuda_weight *w = (const cuda_weight *)qw->dev;
    if (N <= OPS_CUDA_GEMV_MAX_N) matmul_gemv(c, out, x, w, N);
    else matmul_tensor_cores(c, out, x, w, N);
}

// ---- matmul_backward_input ----

int64_t cuda_matmul_bwd_tile_rows(const cuda_ctx *c, const cuda_weight *w) {
    return cuda_tile_rows(c->tile_budget, w->rows, w->cols, sizeof(float));
}

//
// dx (N,cols) (+)= dy (N,rows) @ W. Column-major: dx^T (cols,N) = W^T (cols,rows)
// @ dy^T (rows,N), and row-major W (rows,cols) already is W^T column-major with
// ld = cols: cuBLAS "NN" with lda = cols, ldb = rows, ldc = cols, one tile of W's
// rows (k) at a time, accumulating from the second tile on.
//
// Gradients are small (the loss is scaled by 1/trained tokens) and would lose
// bits or underflow in fp16, so dy stays fp32: weights that are not F32 are
// dequantized exactly into an fp32 tile and multiplied on TF32 tensor cores
// (CUBLAS_COMPUTE_32F_FAST_TF32: 10-bit mantissas, fp32 range and accumulation);
// F32 weights use SGEMM in full fp32, as the forward.
void cuda_matmul_backward_input(ops *o, float *dx, const float *dy, const qweight *qw, int N, int accumulate) {
    cuda_ctx *c = cuda_ctx_of(o);
    QL_ASSERT(qw->dev && "matmul_backward_input: weight_upload the weight first");
    if (N <= 0) return;
    const cuda_weight *w = (const cuda_weight *)qw->dev;
    const int rows = (int)w->rows, cols = (int)w->cols;
    if (w->type == DT_F32) {
        const float beta = accumulate ? 1.0f : 0.0f;
        cublasCheckAbort(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, cols, N, rows, &k_one, (const float *)w->data,
                                     cols, dy, rows, &beta, dx, cols));
        cudaLaunchCheck(c);
        return;
    }
    const int64_t tr = cuda_matmul_bwd_tile_rows(c, w);
    float *tile = (float *)cuda_buf_reserve_abort(&c->tile, (size_t)tr * cols * sizeof(float), "fp32 weight tile",
                                                  __FILE__, __LINE__);
    for (int64_t r0 = 0; r0 < rows; r0 += tr) {
        const int64_t nr = tr < rows - r0 ? tr : rows - r0, count = nr * cols;
        if (w->type == DT_NF4 && cols % 8 == 0)
            nf4_dequant_x8<float><<<grid_1d(count / 8, 256), 256, 0, c->stream>>>(tile, *w, c->nf4_tables, r0 * cols,
                                                                                count);
        else
            weight_to_tile<float><<<stride_blocks(c, count, 256), 256, 0, c->stream>>>(tile, *w, c->nf4_tables,
                                                                                        r0 * cols, count);
        cudaLaunchCheck(c);
        const float beta = accumulate || r0 > 0 ? 1.0f : 0.0f;
        cublasCheckAbort(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, cols, N, (int)nr, &k_one, tile, CUDA_R_32F, cols,
                                      dy + r0, CUDA_R_32F, rows, &beta, dx, CUDA_R_32F, cols,
                                      CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
        cudaLaunchCheck(c);
    }
}
