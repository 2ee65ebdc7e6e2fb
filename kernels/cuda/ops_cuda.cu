// ops_cuda.cu: the CUDA backend of kernels/ops.h: device setup, memory,
// weight upload, and the element-wise and per-row ops (embed, rmsnorm, rope,
// swiglu, add). matmul lives in matmul_cuda.cu, attention in attention_cuda.cu,
// the training ops in grad_cuda.cu and lora_cuda.cu.
// Every op is queued on the backend's one stream; to_host and sync wait for it.
#include "cuda_common.cuh"
extern "C" {
#include "ops_cuda.h"
}

// ---- errors and scratch ----

void cuda_fatal(const char *file, int line, const char *what, const char *msg) {
    log_error("%s:%d: %s: %s (CUDA backend; fatal because the op has no status to return)", file, line, what, msg);
    abort();
}

void cuda_launch_check(cuda_ctx *c, const char *file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) cuda_fatal(file, line, "kernel launch", cudaGetErrorString(e));
    if (c->sync_debug) {
        e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) cuda_fatal(file, line, "kernel execution (QLORA_CUDA_SYNC=1)", cudaGetErrorString(e));
    }
}

int cuda_buf_reserve(cuda_buf *b, size_t bytes, const char *what) {
    if (bytes <= b->cap) return QL_OK;
    if (b->p) {
        cudaCheck(cudaFree(b->p));  // synchronizes: no queued kernel still reads the old buffer
        b->p = NULL;
        b->cap = 0;
    }
    cudaError_t e = cudaMalloc(&b->p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        b->p = NULL;
        return ql_err(QL_ENOMEM, "CUDA scratch for %s: cannot allocate %zu bytes: %s", what, bytes,
                      cudaGetErrorString(e));
    }
    b->cap = bytes;
    return QL_OK;
}

void *cuda_buf_reserve_abort(cuda_buf *b, size_t bytes, const char *what, const char *file, int line) {
    if (cuda_buf_reserve(b, bytes, what) != QL_OK) cuda_fatal(file, line, "scratch", ql_errmsg());
    return b->p;
}

// Copies host arrays into the argument buffer: n pieces (src[i], bytes[i]); returns
// their device addresses in dst[i]. Stream order keeps a later call from
// overwriting arguments an earlier kernel still reads.
void cuda_upload_args(cuda_ctx *c, int n, const void *const *src, const size_t *bytes, void **dst) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += cuda_args_piece(bytes[i]);
    char *base = (char *)cuda_buf_reserve_abort(&c->args, total ? total : CUDA_ARGS_ALIGN, "op arguments", __FILE__, __LINE__);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        dst[i] = base + off;
        if (bytes[i]) cudaCheckAbort(cudaMemcpyAsync(dst[i], src[i], bytes[i], cudaMemcpyHostToDevice, c->stream));
        off += cuda_args_piece(bytes[i]);
    }
}

// ---- memory ----

static void *cuda_alloc(ops *o, size_t bytes) {
    cuda_ctx *c = cuda_ctx_of(o);
    void *p = NULL;
    if (!bytes) bytes = 1;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        cudaGetLastError();
        ql_err(QL_ENOMEM, "CUDA alloc of %zu bytes on device %d: %s (%zu of %zu MiB free)", bytes, c->device,
               cudaGetErrorString(e), fr >> 20, tot >> 20);
        return NULL;
    }
    e = cudaMemsetAsync(p, 0, bytes, c->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        cudaFree(p);
        ql_err(QL_EDEVICE, "CUDA alloc: cudaMemsetAsync of %zu bytes: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_free(ops *o, void *p) {
    if (p) cudaCheckAbort(cudaFree(p));
}

static void cuda_to_device(ops *o, void *dst, const void *src_host, size_t bytes) {
    if (!bytes) return;
    cuda_ctx *c = cuda_ctx_of(o);
    cudaCheckAbort(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void cuda_to_host(ops *o, void *dst_host, const void *src, size_t bytes) {
    if (!bytes) return;
    cuda_ctx *c = cuda_ctx_of(o);
    cudaCheckAbort(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    cudaCheckAbort(cudaStreamSynchronize(c->stream));
}

static void cuda_copy(ops *o, void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cuda_ctx *c = cuda_ctx_of(o);
    cudaCheckAbort(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

static void cuda_zero(ops *o, void *p, size_t bytes) {
    if (bytes) cudaCheckAbort(cudaMemsetAsync(p, 0, bytes, cuda_ctx_of(o)->stream));
}

static void cuda_sync(ops *o) { cudaCheckAbort(cudaStreamSynchronize(cuda_ctx_of(o)->stream)); }

// ---- weights ----

static void cuda_weight_free(cuda_weight *dw) {
    if (!dw) return;
    cudaFree((void *)dw->data);
    cudaFree((void *)dw->codes);
    cudaFree((void *)dw->absmax_q);
    cudaFree((void *)dw->absmax_scale);
    free(dw);
}

static void cuda_weight_release(ops *o, qweight *w) {
    if (!w || !w->dev) return;
    cudaStreamSynchronize(cuda_ctx_of(o)->stream);  // no queued kernel may still read it
    cuda_weight_free((cuda_weight *)w->dev);
    w->dev = NULL;
}

// Allocates cuda_upload_bytes(bytes) (rounded up to 16, zero-padded) and copies `bytes` from host.
static int upload_array(cuda_ctx *c, void **dst, const void *src, size_t bytes, const char *what) {
    const size_t padded = cuda_upload_bytes(bytes);
    cudaError_t e = cudaMalloc(dst, padded);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *dst = NULL;
        return ql_err(QL_ENOMEM, "weight upload: cannot allocate %zu bytes for %s on device %d: %s", padded, what,
                      c->device, cudaGetErrorString(e));
    }
    if (padded > bytes) cudaCheck(cudaMemsetAsync((char *)*dst + bytes, 0, padded - bytes, c->stream));
    if (bytes) cudaCheck(cudaMemcpyAsync(*dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return QL_OK;
}

static int upload_weight(cuda_ctx *c, cuda_weight *dw, const qweight *w) {
    const int64_t n = w->rows * w->cols;
    if (w->type == DT_NF4) {
        const nf4_data *q = &w->nf4;
        if (q->n != n || !q->codes || !q->absmax_q || !q->absmax_scale)
            return ql_err(QL_EINVAL, "weight upload: NF4 weight (%lld,%lld) has nf4.n=%lld and %s pointers",
                          (long long)w->rows, (long long)w->cols, (long long)q->n,
                          (!q->codes || !q->absmax_q || !q->absmax_scale) ? "missing" : "all");
        QL_CHECK(upload_array(c, (void **)&dw->codes, q->codes, (size_t)((n + 1) / 2), "NF4 codes"));
        QL_CHECK(upload_array(c, (void **)&dw->absmax_q, q->absmax_q, (size_t)nf4_nblocks(n), "NF4 absmax codes"));
        QL_CHECK(upload_array(c, (void **)&dw->absmax_scale, q->absmax_scale, sizeof(float) * (size_t)nf4_ngroups(n),
                              "NF4 absmax scales"));
        dw->absmax_offset = q->absmax_offset;
    } else {
        if (!w->data) return ql_err(QL_EINVAL, "weight upload: %s weight (%lld,%lld) has no data", dtype_name(w->type),
                                    (long long)w->rows, (long long)w->cols);
        QL_CHECK(upload_array(c, (void **)&dw->data, w->data, (size_t)n * dtype_size(w->type), "weight data"));
    }
    // Reserve the dequantization tile now, where an error can still be returned.
    int64_t tile_rows = 0;
    size_t esz = 0;
    cuda_matmul_tile_shape(c, dw, &tile_rows, &esz);
    if (tile_rows) QL_CHECK(cuda_buf_reserve(&c->tile, (size_t)tile_rows * (size_t)w->cols * esz, "dequantized weight tile"));
    // and the backward's fp32 tile (training), so no op has to grow it mid-step
    if (w->type != DT_F32)
        QL_CHECK(cuda_buf_reserve(&c->tile, (size_t)cuda_matmul_bwd_tile_rows(c, dw) * (size_t)w->cols * sizeof(float),
                                  "fp32 weight tile (backward)"));
    cudaCheck(cudaStreamSynchronize(c->stream));  // the host arrays may go away once we return
    return QL_OK;
}

static int cuda_weight_upload(ops *o, qweight *w) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (w->type != DT_F32 && w->type != DT_F16 && w->type != DT_BF16 && w->type != DT_NF4)
        return ql_err(QL_EUNSUP, "weight upload: dtype %d is not a weight type (F32, F16, BF16 or NF4)", (int)w->type);
    if (w->rows <= 0 || w->cols <= 0 || w->rows > INT32_MAX || w->cols > INT32_MAX)
        return ql_err(QL_EINVAL, "weight upload: shape (%lld,%lld): expected 1..%d rows and columns",
                      (long long)w->rows, (long long)w->cols, INT32_MAX);
    if (w->dev) cuda_weight_release(o, w);  // uploading again replaces the old copy
    cuda_weight *dw = (cuda_weight *)calloc(1, sizeof *dw);
    if (!dw) return ql_err(QL_ENOMEM, "weight upload: out of host memory");
    dw->type = w->type;
    dw->rows = w->rows;
    dw->cols = w->cols;
    int rc = upload_weight(c, dw, w);
    if (rc != QL_OK) {
        cudaStreamSynchronize(c->stream);
        cudaGetLastError();
        cuda_weight_free(dw);
        return rc;
    }
    w->dev = dw;
    return QL_OK;
}

// ---- embed ----

// out (N,C) = rows tokens[n] of W (V,C), any weight type, exact.
// grid (N, ceil(C/256)), block 256.
__global__ void embed_rows_f32(float *__restrict__ out, cuda_weight w, const int *__restrict__ tokens,
                               const float *__restrict__ tables) {
    __shared__ float s_tab[NF4_TABLES_LEN];
    if (w.type == DT_NF4) nf4_tables_to_shared(s_tab, tables);  // uniform branch
    const int64_t C = w.cols, n = blockIdx.x, c = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (c < C) out[n * C + c] = weight_elem(w, s_tab, (int64_t)tokens[n] * C + c);
}

static void cuda_embed(ops *o, float *out, const qweight *table, const int *tokens, int N) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0) return;
    QL_ASSERT(table->dev && "embed: weight_upload the table first");
    const cuda_weight *w = (const cuda_weight *)table->dev;
    for (int n = 0; n < N; n++)
        if (tokens[n] < 0 || tokens[n] >= w->rows) {
            log_error("embed: token %d at %d is outside the table's %lld rows", tokens[n], n, (long long)w->rows);
            QL_ASSERT(!"embed: token id out of range");
        }
    const void *src[1] = {tokens};
    size_t bytes[1] = {sizeof(int) * (size_t)N};
    void *dst[1];
    cuda_upload_args(c, 1, src, bytes, dst);
    QL_ASSERT(grid_1d(w->cols, 256) <= 65535);
    dim3 grid((unsigned)N, grid_1d(w->cols, 256));
    embed_rows_f32<<<grid, 256, 0, c->stream>>>(out, *w, (const int *)dst[0], c->nf4_tables);
    cudaLaunchCheck(c);
}

// ---- rmsnorm ----

// out (N,C) = x * rsqrt(mean(x^2) + eps) * w; one block of 256 threads per row.
// Sum of squares in fp32 (tree), the reciprocal root in double as in the reference.
// out may alias x.
__global__ void rmsnorm_rows_f32(float *out, const float *x, const float *__restrict__ w, int C, float eps) {
    __shared__ float s_red[32];
    const float *xr = x + (int64_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) ss = fmaf(xr[c], xr[c], ss);
    ss = block_sum(ss, s_red);
    const float r = (float)(1.0 / sqrt((double)ss / C + (double)eps));
    float *orow = out + (int64_t)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) orow[c] = __fmul_rn(__fmul_rn(xr[c], r), w[c]);
}

static void cuda_rmsnorm(ops *o, float *out, const float *x, const float *w, int N, int C, float eps) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0 || C <= 0) return;
    rmsnorm_rows_f32<<<(unsigned)N, 256, 0, c->stream>>>(out, x, w, C, eps);
    cudaLaunchCheck(c);
}

// ---- rope ----

// x (N,H,D) rotated in place, pairs (i, i+D/2) by pos[n]*inv_freq[i] (rotate_half).
// One thread per (n, i) computes the angle's sin/cos once, in double as in the
// reference, and rotates that pair in all H heads. Products and sums are
// rounded one by one (no FMA) to match the reference's double arithmetic.
__global__ void rope_rotate_half_f32(float *x, const int *__restrict__ pos, const float *__restrict__ inv_freq, int N,
                                     int H, int D) {
    const int half = D / 2;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)N * half) return;
    const int n = (int)(idx / half), i = (int)(idx % half);
    double s, co;
    sincos((double)pos[n] * (double)inv_freq[i], &s, &co);
    for (int h = 0; h < H; h++) {
        float *v = x + ((int64_t)n * H + h) * D;
        const double x0 = v[i], x1 = v[i + half];
        v[i] = (float)__dsub_rn(__dmul_rn(x0, co), __dmul_rn(x1, s));
        v[i + half] = (float)__dadd_rn(__dmul_rn(x1, co), __dmul_rn(x0, s));
    }
}

static void cuda_rope(ops *o, float *x, const int *pos, int N, int H, int D, const float *inv_freq) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0 || H <= 0 || D < 2) return;
    QL_ASSERT(D % 2 == 0);
    const void *src[2] = {pos, inv_freq};
    size_t bytes[2] = {sizeof(int) * (size_t)N, sizeof(float) * (size_t)(D / 2)};
    void *dst[2];
    cuda_upload_args(c, 2, src, bytes, dst);
    const int64_t pairs = (int64_t)N * (D / 2);
    rope_rotate_half_f32<<<grid_1d(pairs, 128), 128, 0, c->stream>>>(x, (const int *)dst[0], (const float *)dst[1],
                                                                       N, H, D);
    cudaLaunchCheck(c);
}

// ---- swiglu, add ----

// out (n) = silu(gate) * up = gate / (1 + exp(-gate)) * up
__global__ void swiglu_f32(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// y (n) += x (n)
__global__ void add_inplace_f32(float *y, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

static void cuda_swiglu(ops *o, float *out, const float *gate, const float *up, int n) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (n <= 0) return;
    swiglu_f32<<<elementwise_blocks(c, n), 256, 0, c->stream>>>(out, gate, up, n);
    cudaLaunchCheck(c);
}

static void cuda_add(ops *o, float *y, const float *x, int n) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (n <= 0) return;
    add_inplace_f32<<<elementwise_blocks(c, n), 256, 0, c->stream>>>(y, x, n);
    cudaLaunchCheck(c);
}

// ---- the backend ----

// Writes 1 to *flag: proves that this binary has code for the device.
__global__ void device_probe(int *flag) { *flag = 1; }

static void cuda_ctx_free(cuda_ctx *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->blas) cublasDestroy(c->blas);
    cudaFree(c->nf4_tables);
    cudaFree(c->tile.p);
    cudaFree(c->xconv.p);
    cudaFree(c->args.p);
    cudaFree(c->work.p);
    cudaFree(c->sumsq_acc);
    cudaFreeHost(c->sumsq_host);
    if (c->stream) cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
}

static void cuda_destroy(ops *o) {
    cuda_ctx_free(cuda_ctx_of(o));
    free(o);
}

static int cuda_ctx_init(cuda_ctx *c, int device) {
    c->device = device;
    cudaCheck(cudaSetDevice(device));
    cudaCheck(cudaGetDeviceProperties(&c->prop, device));
    const cudaDeviceProp *p = &c->prop;
    log_debug("cuda: device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB, L2 %.1f MiB, "
              "%zu KiB shared memory per block (opt-in)",
              device, p->name, p->major, p->minor, p->multiProcessorCount, p->totalGlobalMem / 1073741824.0,
              p->l2CacheSize / 1048576.0, p->sharedMemPerBlockOptin >> 10);

    const char *env = getenv("QLORA_CUDA_SYNC");
    c->sync_debug = env && env[0] && strcmp(env, "0") != 0;
    if (c->sync_debug) log_info("cuda: QLORA_CUDA_SYNC set: synchronizing after every launch");
    c->tile_budget = CUDA_TILE_BUDGET_DEFAULT;
    env = getenv("QLORA_CUDA_TILE_BYTES");
    if (env && env[0]) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end || v == 0)
            return ql_err(QL_EINVAL, "QLORA_CUDA_TILE_BYTES: expected a positive byte count, found '%s'", env);
        c->tile_budget = (size_t)v;
    }

    cudaCheck(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    cublasCheck(cublasCreate(&c->blas));
    cublasCheck(cublasSetStream(c->blas, c->stream));
    cublasCheck(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));  // fp32 GEMMs stay fp32 (no TF32)

    // The NF4 tables, once. They live in global memory and kernels stage them in
    // shared memory: lookups are divergent across lanes, which __constant__
    // memory would serialize.
    cudaCheck(cudaMalloc(&c->nf4_tables, sizeof(float) * NF4_TABLES_LEN));
    cudaCheck(cudaMemcpyAsync(c->nf4_tables, NF4_TABLE, sizeof(float) * 16, cudaMemcpyHostToDevice, c->stream));
    cudaCheck(cudaMemcpyAsync(c->nf4_tables + 16, NF4_CODE8, sizeof(float) * 256, cudaMemcpyHostToDevice, c->stream));
    QL_CHECK(cuda_buf_reserve(&c->args, CUDA_ARGS_INITIAL, "op arguments"));
    cudaCheck(cudaMalloc(&c->sumsq_acc, sizeof(double)));
    cudaCheck(cudaMallocHost(&c->sumsq_host, sizeof(double)));

    // One tiny kernel: fails here, with a clear message, when the binary has no
    // code for this GPU (built for other architectures).
    int flag = 0;
    device_probe<<<1, 1, 0, c->stream>>>((int *)c->args.p);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpyAsync(&flag, c->args.p, sizeof flag, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess || flag != 1) {
        cudaGetLastError();
        return ql_err(QL_EDEVICE, "CUDA device %d (%s, sm_%d%d) cannot run this build's kernels: %s "
                      "(rebuild with CMAKE_CUDA_ARCHITECTURES including %d%d)",
                      device, p->name, p->major, p->minor, cudaGetErrorString(e), p->major, p->minor);
    }
    return QL_OK;
}

extern "C" ops *ops_cuda_new(int device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        // in words a user can act on; CUDA's own string after it
        const char *why = e == cudaErrorInsufficientDriver
                              ? "the NVIDIA driver is older than the CUDA runtime this qlora was built with (update the driver)"
                          : e == cudaErrorNoDevice || (e == cudaSuccess && count == 0) ? "no NVIDIA GPU was found"
                          : e == cudaErrorInitializationError || e == cudaErrorSystemDriverMismatch
                              ? "the NVIDIA driver is not loaded or does not match its kernel module"
                              : "the GPU cannot be used";
        ql_err(QL_EDEVICE, "no usable GPU: %s (CUDA: %s); --backend cpu runs on the CPU", why,
               e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
        return NULL;
    }
    if (device < 0 || device >= count) {
        ql_err(QL_EDEVICE, "CUDA device %d: expected 0..%d (%d devices found)", device, count - 1, count);
        return NULL;
    }
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    ops *o = (ops *)calloc(1, sizeof *o);
    if (!c || !o) {
        free(c);
        free(o);
        ql_err(QL_ENOMEM, "ops_cuda_new: out of host memory");
        return NULL;
    }
    int rc = cuda_ctx_init(c, device);
    if (rc != QL_OK) {
        // keep the message of the failure, not of the cleanup
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ql_errmsg());
        cuda_ctx_free(c);
        free(o);
        ql_err(rc, "%s", msg);
        return NULL;
    }
    o->name = "cuda";
    o->ctx = c;
    o->alloc = cuda_alloc;
    o->free = cuda_free;
    o->to_device = cuda_to_device;
    o->to_host = cuda_to_host;
    o->copy = cuda_copy;
    o->weight_upload = cuda_weight_upload;
    o->weight_release = cuda_weight_release;
    o->sync = cuda_sync;
    o->destroy = cuda_destroy;
    o->embed = cuda_embed;
    o->rmsnorm = cuda_rmsnorm;
    o->matmul = cuda_matmul;
    o->rope = cuda_rope;
    o->attention = cuda_attention;
    o->swiglu = cuda_swiglu;
    o->add = cuda_add;
    o->zero = cuda_zero;
    o->lora_shrink = cuda_lora_shrink;
    o->lora_expand = cuda_lora_expand;
    o->rmsnorm_backward = cuda_rmsnorm_backward;
    o->rope_backward = cuda_rope_backward;
    o->attention_train = cuda_attention_train;
    o->attention_backward = cuda_attention_backward;
    o->swiglu_backward = cuda_swiglu_backward;
    o->matmul_backward_input = cuda_matmul_backward_input;
    o->cross_entropy = cuda_cross_entropy;
    o->lora_forward = cuda_lora_forward;
    o->lora_backward = cuda_lora_backward;
    o->dropout = cuda_dropout;
    o->sumsq = cuda_sumsq;
    o->adamw = cuda_adamw;
    o->host_memory = 0;
    return o;
}

extern "C" int ops_cuda_mem_info(ops *o, size_t *free_bytes, size_t *total_bytes) {
    QL_ASSERT(o && o->name && !strcmp(o->name, "cuda"));
    cudaCheck(cudaSetDevice(cuda_ctx_of(o)->device));
    cudaCheck(cudaMemGetInfo(free_bytes, total_bytes));
    return QL_OK;
}

extern "C" struct CUstream_st *ops_cuda_stream(ops *o) {
    QL_ASSERT(o && o->name && !strcmp(o->name, "cuda"));
    return cuda_ctx_of(o)->stream;
}
