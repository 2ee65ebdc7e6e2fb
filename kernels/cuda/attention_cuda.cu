// attention_cuda.cu: causal grouped-query attention (kernels/ops.h) for
// inference (attention: q (N,H,D) at positions T0..T0+N-1 against the KV cache
// k, v (T0+N,Hkv,D)) and training (attention_train over a packed batch, where
// token n attends to keys [seg_start[n], n], with its log-sum-exp; and
// attention_backward). seg_start is a host array; only 0 <= seg_start[n] <= n is
// assumed (not necessarily monotonic). Query head h reads kv head h/(H/Hkv).
// Scale 1/sqrt(D).
//
// Forward (attention_fwd_f32, both ops), one block per (query, head): keys in
// chunks of ATTN_CHUNK through shared memory with the online-softmax rescaling
// between chunks; out (N,H,D) =, and for training lse (N,H) = m + log(l), the
// natural log-sum-exp of the scaled scores.
//
// Backward, three kernels, no atomics, each output element written once by one
// thread (so the results are deterministic):
//   a. delta (N,H) = sum_d dout*out, one warp per row, into c->work;
//   b. dq, one block per (query n, head h), over keys t in [seg_start[n], n]:
//        p = exp(scale q.k_t - lse), dp = dout.v_t, ds = p (dp - delta),
//        dq = scale * sum_t ds k_t;
//   c. dk, dv, one block per (key j, kv head kh), over the pairs (query i,
//      query head h of kh) with i in [j, qend[j]) and seg_start[i] <= j:
//        dv_j = sum p dout_i,  dk_j = scale * sum ds q_i.
//      qend[j] = 1 + max{i : seg_start[i] <= j} is computed on the host; no
//      query at or past it sees key j, and every query before it is tested.
// In b and c the dot products are one thread per key (b) or per pair (c),
// against the block's own row(s) staged in shared memory, with float4 loads
// when D % 4 == 0 and the pointers are 16-byte aligned; the weighted sums
// are threads in G = ATTN_THREADS/D groups of D (coalesced over d), then the
// groups' partials are added in a fixed order.
//
// Numerics: fp32 throughout, expf/logf; the CPU twin (grad_cpu.c) uses OpenBLAS
// sgemm with a double softmax sum, the reference (grad_ref.c) double.
// Expect agreement to fp32 rounding of sums over up to N terms.
#include "cuda_common.cuh"

#define ATTN_THREADS 256
#define ATTN_CHUNK 1024  // keys (forward, dq) or (query, head) pairs (dk/dv) per pass through shared memory
#define ATTN_MAX_D 256   // head dims up to this (one output element per thread at the end)

// s_x (D, shared) . row (D, global); vec4: D % 4 == 0 and row 16-byte aligned.
__device__ __forceinline__ float attn_dot(const float *s_x, const float *__restrict__ row, int D, int vec4) {
    float s = 0.0f;
    if (vec4) {
        for (int e = 0; e < D; e += 4) {
            const float4 r = __ldg((const float4 *)(row + e));
            s = fmaf(s_x[e], r.x, s);
            s = fmaf(s_x[e + 1], r.y, s);
            s = fmaf(s_x[e + 2], r.z, s);
            s = fmaf(s_x[e + 3], r.w, s);
        }
    } else {
        for (int e = 0; e < D; e++) s = fmaf(s_x[e], __ldg(row + e), s);
    }
    return s;
}

// Sums the G partials s_part (G, D) of each output element: out[i] = mul * sum_g.
// Called by all threads after a barrier that published s_part.
__device__ __forceinline__ void attn_store_rows(float *__restrict__ out, const float *s_part, int G, int D,
                                                float mul) {
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float sum = 0.0f;
        for (int j = 0; j < G; j++) sum += s_part[j * D + i];
        out[i] = mul * sum;
    }
}

// ---- forward ----

// grid (N, H), block ATTN_THREADS. Query n (position T0+n) sees keys
// [first, T0+n], first = seg_start[n] (training) or 0 (seg_start NULL: the KV
// cache). out (N,H,D) =; lse (N,H) = unless NULL. vec4: D % 4 == 0 and k 16-byte
// aligned.
__global__ void __launch_bounds__(ATTN_THREADS)
attention_fwd_f32(float *__restrict__ out, float *__restrict__ lse, const float *__restrict__ q,
                  const float *__restrict__ k, const float *__restrict__ v, const int *__restrict__ seg_start, int T0,
                  int H, int Hkv, int D, float scale, int vec4) {
    __shared__ float s_q[ATTN_MAX_D];
    __shared__ float s_p[ATTN_CHUNK];     // scores, then probabilities, of one chunk of keys
    __shared__ float s_o[ATTN_THREADS];   // partial outputs of the G key groups, (G, D)
    __shared__ float s_red[32];
    const int n = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int kh = h / (H / Hkv), last = T0 + n, first = seg_start ? seg_start[n] : 0;  // keys first..last
    const int64_t kv_stride = (int64_t)Hkv * D;  // floats from one position to the next
    const float *kb = k + (int64_t)kh * D, *vb = v + (int64_t)kh * D;
    const float *qv = q + ((int64_t)n * H + h) * D;
    for (int i = tid; i < D; i += ATTN_THREADS) s_q[i] = qv[i];
    __syncthreads();

    const int G = ATTN_THREADS / D;           // key groups in step 3
    const int d = tid % D, g = tid / D;       // this thread's output dim and key group (active when g < G)
    float m = -INFINITY, l = 0.0f, acc = 0.0f;
    for (int base = first; base <= last; base += ATTN_CHUNK) {
        const int cnt = min(ATTN_CHUNK, last + 1 - base);
        // 1. scores
        float cmax = -INFINITY;
        for (int i = tid; i < cnt; i += ATTN_THREADS) {
            const float s = attn_dot(s_q, kb + (int64_t)(base + i) * kv_stride, D, vec4) * scale;
            s_p[i] = s;
            cmax = fmaxf(cmax, s);
        }
        cmax = block_max(cmax, s_red);
        // 2. probabilities relative to the running max
        const float mnew = fmaxf(m, cmax);
        const float corr = expf(m - mnew);  // 0 on the first chunk (m = -inf)
        float psum = 0.0f;
        for (int i = tid; i < cnt; i += ATTN_THREADS) {
            const float p = expf(s_p[i] - mnew);
            s_p[i] = p;
            psum += p;
        }
        psum = block_sum(psum, s_red);  // its barriers also publish s_p
        l = l * corr + psum;
        // 3. values
        if (g < G) {
            float a = 0.0f;
            const float *vt = vb + (int64_t)base * kv_stride + d;
#pragma unroll 4
            for (int i = g; i < cnt; i += G) a = fmaf(s_p[i], __ldg(vt + (int64_t)i * kv_stride), a);
            acc = acc * corr + a;
        }
        m = mnew;
        __syncthreads();  // the next chunk overwrites s_p
    }
    if (g < G) s_o[g * D + d] = acc;
    __syncthreads();
    attn_store_rows(out + ((int64_t)n * H + h) * D, s_o, G, D, 1.0f / l);
    if (lse && tid == 0) lse[(int64_t)n * H + h] = m + logf(l);
}

// ---- backward ----

// delta (rows) = sum_d dout*out per (n,h) row of D; one warp per row, 8 rows per
// block of 256 threads.
__global__ void __launch_bounds__(256)
attention_backward_delta_f32(float *__restrict__ delta, const float *__restrict__ dout, const float *__restrict__ out,
                             int64_t rows, int D) {
    const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // the whole warp leaves together
    const float *a = dout + row * D, *b = out + row * D;
    float s = 0.0f;
    for (int i = lane; i < D; i += 32) s = fmaf(a[i], b[i], s);
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
}

// dq (N,H,D) =. grid (N, H), block ATTN_THREADS. vec4: D % 4 == 0 and k, v 16-byte aligned.
__global__ void __launch_bounds__(ATTN_THREADS)
attention_backward_dq_f32(float *__restrict__ dq, const float *__restrict__ dout, const float *__restrict__ q,
                          const float *__restrict__ k, const float *__restrict__ v, const float *__restrict__ lse,
                          const float *__restrict__ delta, const int *__restrict__ seg_start, int H, int Hkv, int D,
                          float scale, int vec4) {
    __shared__ float s_q[ATTN_MAX_D];
    __shared__ float s_do[ATTN_MAX_D];
    __shared__ float s_ds[ATTN_CHUNK];   // ds of one chunk of keys
    __shared__ float s_o[ATTN_THREADS];  // partial dq of the G key groups, (G, D)
    const int n = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int kh = h / (H / Hkv), first = seg_start[n];  // keys first..n are visible
    const int64_t kv_stride = (int64_t)Hkv * D, qrow = ((int64_t)n * H + h) * D;
    const float *kb = k + (int64_t)kh * D, *vb = v + (int64_t)kh * D;
    for (int i = tid; i < D; i += ATTN_THREADS) {
        s_q[i] = q[qrow + i];
        s_do[i] = dout[qrow + i];
    }
    const float L = lse[(int64_t)n * H + h], dl = delta[(int64_t)n * H + h];
    __syncthreads();

    const int G = ATTN_THREADS / D;
    const int d = tid % D, g = tid / D;
    float acc = 0.0f;
    for (int base = first; base <= n; base += ATTN_CHUNK) {
        const int cnt = min(ATTN_CHUNK, n + 1 - base);
        for (int i = tid; i < cnt; i += ATTN_THREADS) {
            const int64_t ko = (int64_t)(base + i) * kv_stride;
            const float s = attn_dot(s_q, kb + ko, D, vec4) * scale;
            const float dp = attn_dot(s_do, vb + ko, D, vec4);
            s_ds[i] = expf(s - L) * (dp - dl);
        }
        __syncthreads();
        if (g < G) {
            const float *kt = kb + (int64_t)base * kv_stride + d;
#pragma unroll 4
            for (int i = g; i < cnt; i += G) acc = fmaf(s_ds[i], __ldg(kt + (int64_t)i * kv_stride), acc);
        }
        __syncthreads();  // the next chunk overwrites s_ds
    }
    if (g < G) s_o[g * D + d] = acc;
    __syncthreads();
    attn_store_rows(dq + qrow, s_o, G, D, scale);
}

// dk, dv (N,Hkv,D) =. grid (N, Hkv), block ATTN_THREADS: block (j, kh) takes the
// pairs (query i, query head h) with i in [j, qend[j]) and h in kv head kh's
// group, pair index e = (i - j) * group + (h - kh*group); pairs whose query does
// not see key j (seg_start[i] > j) count zero. vec4: D % 4 == 0 and q, dout
// 16-byte aligned.
__global__ void __launch_bounds__(ATTN_THREADS)
attention_backward_dkdv_f32(float *__restrict__ dk, float *__restrict__ dv, const float *__restrict__ dout,
                            const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                            const float *__restrict__ lse, const float *__restrict__ delta,
                            const int *__restrict__ seg_start, const int *__restrict__ qend, int H, int Hkv, int D,
                            float scale, int vec4) {
    __shared__ float s_k[ATTN_MAX_D];
    __shared__ float s_v[ATTN_MAX_D];
    __shared__ float s_p[ATTN_CHUNK];     // p of one chunk of pairs
    __shared__ float s_ds[ATTN_CHUNK];    // ds of the same pairs
    __shared__ float s_ak[ATTN_THREADS];  // partial dk of the G pair groups, (G, D)
    __shared__ float s_av[ATTN_THREADS];  // partial dv, likewise
    const int j = blockIdx.x, kh = blockIdx.y, tid = threadIdx.x;
    const int group = H / Hkv, h0 = kh * group;
    const int64_t krow = ((int64_t)j * Hkv + kh) * D;
    for (int i = tid; i < D; i += ATTN_THREADS) {
        s_k[i] = k[krow + i];
        s_v[i] = v[krow + i];
    }
    __syncthreads();

    const int total = (qend[j] - j) * group;  // pairs
    const int G = ATTN_THREADS / D;
    const int d = tid % D, g = tid / D;
    float ak = 0.0f, av = 0.0f;
    for (int base = 0; base < total; base += ATTN_CHUNK) {
        const int cnt = min(ATTN_CHUNK, total - base);
        for (int e = tid; e < cnt; e += ATTN_THREADS) {
            const int pe = base + e, i = j + pe / group, h = h0 + pe % group;
            float p = 0.0f, ds = 0.0f;
            if (seg_start[i] <= j) {
                const int64_t r = (int64_t)i * H + h;
                const float s = attn_dot(s_k, q + r * D, D, vec4) * scale;
                const float dp = attn_dot(s_v, dout + r * D, D, vec4);
                p = expf(s - lse[r]);
                ds = p * (dp - delta[r]);
            }
            s_p[e] = p;
            s_ds[e] = ds;
        }
        __syncthreads();
        if (g < G) {
            for (int e = g; e < cnt; e += G) {
                const int pe = base + e, i = j + pe / group, h = h0 + pe % group;
                const int64_t r = ((int64_t)i * H + h) * D + d;
                av = fmaf(s_p[e], __ldg(dout + r), av);
                ak = fmaf(s_ds[e], __ldg(q + r), ak);
            }
        }
        __syncthreads();  // the next chunk overwrites s_p, s_ds
    }
    if (g < G) {
        s_ak[g * D + d] = ak;
        s_av[g * D + d] = av;
    }
    __syncthreads();
    attn_store_rows(dk + krow, s_ak, G, D, scale);
    attn_store_rows(dv + krow, s_av, G, D, 1.0f);
}

// ---- host ----

static void attn_train_check(const int *seg_start, int N, int H, int Hkv, int D) {
    QL_ASSERT(H > 0 && Hkv > 0 && H % Hkv == 0);
    QL_ASSERT(H <= 65535 && "attention_train: more than 65535 heads (grid.y)");
    QL_ASSERT(D > 0 && D <= ATTN_MAX_D && "attention_train: head dim above ATTN_MAX_D");
    QL_ASSERT((int64_t)N * H <= INT32_MAX && "attention_train: N*H above 2^31-1");
    for (int n = 0; n < N; n++) QL_ASSERT(seg_start[n] >= 0 && seg_start[n] <= n);
}

static int attn_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

void cuda_attention(ops *o, float *out, const float *q, const float *k, const float *v, int N, int T0, int H, int Hkv,
                    int D) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0) return;
    QL_ASSERT(T0 >= 0 && H > 0 && Hkv > 0 && H % Hkv == 0 && H <= 65535);
    QL_ASSERT(D > 0 && D <= ATTN_MAX_D && "attention: head dim above ATTN_MAX_D");
    const int vec4 = D % 4 == 0 && attn_aligned16(k);
    attention_fwd_f32<<<dim3((unsigned)N, (unsigned)H), ATTN_THREADS, 0, c->stream>>>(
        out, NULL, q, k, v, NULL, T0, H, Hkv, D, (float)(1.0 / sqrt((double)D)), vec4);
    cudaLaunchCheck(c);
}

void cuda_attention_train(ops *o, float *out, float *lse, const float *q, const float *k, const float *v,
                          const int *seg_start, int N, int H, int Hkv, int D) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0) return;
    attn_train_check(seg_start, N, H, Hkv, D);
    const void *src[1] = {seg_start};
    size_t bytes[1] = {sizeof(int) * (size_t)N};
    void *dst[1];
    cuda_upload_args(c, 1, src, bytes, dst);
    const int vec4 = D % 4 == 0 && attn_aligned16(k);
    const dim3 grid((unsigned)N, (unsigned)H);
    attention_fwd_f32<<<grid, ATTN_THREADS, 0, c->stream>>>(out, lse, q, k, v, (const int *)dst[0], 0, H, Hkv, D,
                                                            (float)(1.0 / sqrt((double)D)), vec4);
    cudaLaunchCheck(c);
}

void cuda_attention_backward(ops *o, float *dq, float *dk, float *dv, const float *dout, const float *q,
                             const float *k, const float *v, const float *out, const float *lse, const int *seg_start,
                             int N, int H, int Hkv, int D) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0) return;
    attn_train_check(seg_start, N, H, Hkv, D);
    const float scale = (float)(1.0 / sqrt((double)D));

    // qend[j] = 1 + max{i : seg_start[i] <= j} (>= j+1 since seg_start[j] <= j):
    // the last query at which key j can be visible, as a prefix max over j of
    // the last query that starts at each position.
    int *qend = (int *)mallocCheck(sizeof(int) * (size_t)N);
    for (int j = 0; j < N; j++) qend[j] = -1;
    for (int i = 0; i < N; i++)
        if (i > qend[seg_start[i]]) qend[seg_start[i]] = i;
    for (int j = 0, run = -1; j < N; j++) {  // qend[j] still holds the last query starting at j
        run = qend[j] > run ? qend[j] : run;
        qend[j] = run + 1;
    }
    const void *src[2] = {seg_start, qend};
    size_t bytes[2] = {sizeof(int) * (size_t)N, sizeof(int) * (size_t)N};
    void *dst[2];
    cuda_upload_args(c, 2, src, bytes, dst);  // pageable source: staged before the call returns
    free(qend);
    const int *d_seg = (const int *)dst[0], *d_qend = (const int *)dst[1];

    const int64_t rows = (int64_t)N * H;
    float *delta = (float *)cuda_buf_reserve_abort(&c->work, sizeof(float) * (size_t)rows, "attention delta",
                                                   __FILE__, __LINE__);
    attention_backward_delta_f32<<<grid_1d(rows, 8), 256, 0, c->stream>>>(delta, dout, out, rows, D);
    cudaLaunchCheck(c);

    const int vec4_kv = D % 4 == 0 && attn_aligned16(k) && attn_aligned16(v);
    attention_backward_dq_f32<<<dim3((unsigned)N, (unsigned)H), ATTN_THREADS, 0, c->stream>>>(
        dq, dout, q, k, v, lse, delta, d_seg, H, Hkv, D, scale, vec4_kv);
    cudaLaunchCheck(c);

    const int vec4_q = D % 4 == 0 && attn_aligned16(q) && attn_aligned16(dout);
    attention_backward_dkdv_f32<<<dim3((unsigned)N, (unsigned)Hkv), ATTN_THREADS, 0, c->stream>>>(
        dk, dv, dout, q, k, v, lse, delta, d_seg, d_qend, H, Hkv, D, scale, vec4_q);
    cudaLaunchCheck(c);
}
