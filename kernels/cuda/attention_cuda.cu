// attention_cuda.cu: causal grouped-query attention for one sequence
// (kernels/ops.h). q (N,H,D) holds positions T0..T0+N-1; k, v (T0+N,Hkv,D) hold
// positions 0..T0+N-1; out (N,H,D). Query head h reads kv head h/(H/Hkv).
//
// A straightforward kernel, correct for any T: one block per (head, query).
// Keys are taken in chunks of ATT_CHUNK with the online-softmax rescaling
// between chunks, so shared memory does not grow with T:
//   1. scores s[t] = q.k[t] / sqrt(D): one thread per key (float4 loads of the
//      key row when D % 4 == 0), into shared memory;
//   2. chunk max, p[t] = exp(s[t] - m), chunk sum (block reductions);
//   3. o[d] += sum_t p[t] v[t][d]: threads form groups of D, thread (g, d)
//      takes keys g, g+G, ...; reads of a value row are coalesced over d.
// fp32 throughout; the reference accumulates in double.
#include "cuda_common.cuh"

#define ATT_THREADS 256
#define ATT_CHUNK 2048
#define ATT_MAX_D 256  // head dims up to this (one output element per thread at the end)

// grid (H, N), block ATT_THREADS. vec4: D % 4 == 0 and k 16-byte aligned.
__global__ void __launch_bounds__(ATT_THREADS)
attention_causal_gqa_f32(float *__restrict__ out, const float *__restrict__ q, const float *__restrict__ k,
                         const float *__restrict__ v, int T0, int H, int Hkv, int D, float scale, int vec4) {
    __shared__ float s_q[ATT_MAX_D];
    __shared__ float s_p[ATT_CHUNK];     // scores, then probabilities, of one chunk of keys
    __shared__ float s_o[ATT_THREADS];   // partial outputs of the G key groups, (G, D)
    __shared__ float s_red[32];
    const int h = blockIdx.x, n = blockIdx.y, tid = threadIdx.x;
    const int kh = h / (H / Hkv), last = T0 + n;  // keys 0..last are visible
    const int64_t kv_stride = (int64_t)Hkv * D;   // floats from one position to the next
    const float *kb = k + (int64_t)kh * D, *vb = v + (int64_t)kh * D;
    const float *qv = q + ((int64_t)n * H + h) * D;
    for (int i = tid; i < D; i += ATT_THREADS) s_q[i] = qv[i];
    __syncthreads();

    const int G = ATT_THREADS / D;           // key groups in step 3
    const int d = tid % D, g = tid / D;      // this thread's output dim and key group (active when g < G)
    float m = -INFINITY, l = 0.0f, acc = 0.0f;
    for (int base = 0; base <= last; base += ATT_CHUNK) {
        const int cnt = min(ATT_CHUNK, last + 1 - base);
        // 1. scores
        float cmax = -INFINITY;
        for (int i = tid; i < cnt; i += ATT_THREADS) {
            const float *kt = kb + (int64_t)(base + i) * kv_stride;
            float s = 0.0f;
            if (vec4) {
                for (int e = 0; e < D; e += 4) {
                    const float4 kk = __ldg((const float4 *)(kt + e));
                    s = fmaf(s_q[e], kk.x, s);
                    s = fmaf(s_q[e + 1], kk.y, s);
                    s = fmaf(s_q[e + 2], kk.z, s);
                    s = fmaf(s_q[e + 3], kk.w, s);
                }
            } else {
                for (int e = 0; e < D; e++) s = fmaf(s_q[e], __ldg(kt + e), s);
            }
            s *= scale;
            s_p[i] = s;
            cmax = fmaxf(cmax, s);
        }
        cmax = block_max(cmax, s_red);
        // 2. probabilities relative to the running max
        const float mnew = fmaxf(m, cmax);
        const float corr = expf(m - mnew);  // 0 on the first chunk (m = -inf)
        float psum = 0.0f;
        for (int i = tid; i < cnt; i += ATT_THREADS) {
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
    float *ov = out + ((int64_t)n * H + h) * D;
    for (int i = tid; i < D; i += ATT_THREADS) {
        float sum = 0.0f;
        for (int j = 0; j < G; j++) sum += s_o[j * D + i];
        ov[i] = sum / l;
    }
}

void cuda_attention(ops *o, float *out, const float *q, const float *k, const float *v, int N, int T0, int H, int Hkv,
                    int D) {
    cuda_ctx *c = cuda_ctx_of(o);
    if (N <= 0) return;
    QL_ASSERT(T0 >= 0 && H > 0 && Hkv > 0 && H % Hkv == 0);
    QL_ASSERT(D > 0 && D <= ATT_MAX_D && "attention: head dim above ATT_MAX_D");
    QL_ASSERT(N <= 65535 && "attention: more than 65535 queries in one call");
    const int vec4 = D % 4 == 0 && ((uintptr_t)k & 15) == 0;
    const dim3 grid((unsigned)H, (unsigned)N);
    attention_causal_gqa_f32<<<grid, ATT_THREADS, 0, c->stream>>>(out, q, k, v, T0, H, Hkv, D,
                                                                   (float)(1.0 / sqrt((double)D)), vec4);
    cudaLaunchCheck(c);
}
