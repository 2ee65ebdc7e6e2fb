// matmul_avx512.c: AVX-512 kernels for matmul_cpu (see matmul_kernels.h).
// Compiled without -march flags: every function carries a target attribute and
// runs only after matmul_kernels_avx512() has checked the CPU.
//
// NF4 decoding keeps the 16-entry table in one zmm register and looks codes up
// with vpermps (_mm512_permutexvar_ps reads only the low 4 bits of each index,
// so the low nibble needs no mask). The idea of a register-resident codebook
// looked up by a permute is the one ggml uses for its IQ4_NL type
// (ggml-cpu/arch/x86/quants.c); the code is ours.
#include <immintrin.h>
#include <string.h>

#include "matmul_kernels.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define INLINE512 AVX512 static inline __attribute__((always_inline))

// ---- loads of 16 weights as fp32 (exact conversions) ----

INLINE512 __m512 ld_f32(const float *p) { return _mm512_loadu_ps(p); }
INLINE512 __m512 ld_f32_m(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
INLINE512 __m512 ld_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
INLINE512 __m512 ld_f16_m(const uint16_t *p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
INLINE512 __m512 ld_bf16(const uint16_t *p) {
    __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
INLINE512 __m512 ld_bf16_m(const uint16_t *p, __mmask16 m) {
    __m512i u = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}

// Software prefetch distance, in bytes ahead of the weight stream. Decoding
// streams every weight once per token; the hardware prefetchers alone leave the
// core waiting on memory. Measured on the 2-core AVX-512 VM of docs/benchmarks.md
// (TinyLlama shape, decode tok/s at 1/2 threads): none 6.4/11.0, 512 B 9.4/15.2,
// 1536 B 10.9/19.1, 2048 B 11.9/23.6, 3072 B 12.1/22.5, 4096 B 10.3/19.7.
#define PF_DIST 2048

// ---- dense GEMV: out[n*ostride + i] = W[i,:] . x[n,:] for NN (1..7) vectors ----
// Each 16-wide slice of a weight row is converted once and used for all NN
// vectors. NN is a constant after inlining, so acc[][] lives in registers; with
// few vectors, U independent accumulators per vector hide the FMA latency.
#define DEFINE_GEMV(NAME, T, LD, LDM)                                                               \
    INLINE512 void NAME##_nn(float *out, int64_t ostride, const T *w, int64_t nrows, int64_t cols,  \
                             const float *x, const int NN) {                                        \
        enum { UMAX = 4 };                                                                          \
        const int U = NN <= 2 ? 4 : NN <= 4 ? 2 : 1;                                                \
        const int64_t kstep = 16 * U, kfull = cols / kstep * kstep;                                 \
        for (int64_t i = 0; i < nrows; i++) {                                                       \
            const T *wr = w + i * cols;                                                             \
            __m512 acc[MATMUL_GEMV_MAX_N][UMAX];                                                    \
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++)                                     \
                _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) acc[n][u] = _mm512_setzero_ps(); \
            for (int64_t k = 0; k < kfull; k += kstep) {                                            \
                for (int pb = 0; pb < (int)(kstep * sizeof(T)); pb += 64)                           \
                    _mm_prefetch((const char *)(wr + k) + PF_DIST + pb, _MM_HINT_T0);               \
                _Pragma("GCC unroll 4") for (int u = 0; u < U; u++) {                                \
                    const __m512 wv = LD(wr + k + 16 * u);                                          \
                    _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n][u] =                 \
                        _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + n * cols + k + 16 * u), acc[n][u]); \
                }                                                                                   \
            }                                                                                       \
            for (int64_t k = kfull; k < cols; k += 16) {                                            \
                const __mmask16 m = cols - k >= 16 ? (__mmask16)0xFFFF                              \
                                                   : (__mmask16)((1u << (cols - k)) - 1);           \
                const __m512 wv = LDM(wr + k, m);                                                   \
                _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n][0] =                     \
                    _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + n * cols + k), acc[n][0]);     \
            }                                                                                       \
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) {                                   \
                _Pragma("GCC unroll 4") for (int u = 1; u < U; u++) acc[n][0] =                      \
                    _mm512_add_ps(acc[n][0], acc[n][u]);                                            \
                out[n * ostride + i] = _mm512_reduce_add_ps(acc[n][0]);                             \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    AVX512 static void NAME(float *out, int64_t ostride, const T *w, int64_t nrows, int64_t cols,   \
                            const float *x, int N) {                                                \
        MATMUL_SWITCH_N(N, NAME##_nn, out, ostride, w, nrows, cols, x)                            \
    }

DEFINE_GEMV(gemv_f32_avx512, float, ld_f32, ld_f32_m)
DEFINE_GEMV(gemv_f16_avx512, uint16_t, ld_f16, ld_f16_m)
DEFINE_GEMV(gemv_bf16_avx512, uint16_t, ld_bf16, ld_bf16_m)

#ifndef PF_DIST
#define PF_DIST 3072
#endif
// ---- fused NF4 GEMV, cols % 64 == 0 ----
// Per 64-block: 32 code bytes -> 4 vectors of 16 table values (high nibbles of
// bytes 0..15, low nibbles of 0..15, high of 16..31, low of 16..31), which
// nf4_permute_x(g = 16) has lined x up with. The block's partial dot product is
// scaled once by its dequantized absmax.
INLINE512 void gemv_nf4_nn(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                           int64_t cols, const float *xp, const int NN) {
    const __m512 tab = _mm512_loadu_ps(NF4_TABLE);
    const int64_t nbr = cols / NF4_BLOCK;
    const float offset = w->absmax_offset;
    for (int64_t i = 0; i < nrows; i++) {
        int64_t b = (r0 + i) * nbr;
        const uint8_t *cp = w->codes + b * (NF4_BLOCK / 2);
        __m512 acc[MATMUL_GEMV_MAX_N];
        _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) acc[n] = _mm512_setzero_ps();
        for (int64_t kb = 0; kb < nbr; kb++, b++, cp += NF4_BLOCK / 2) {
            const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2];
            const __m512 am = _mm512_set1_ps(t + offset);
            _mm_prefetch((const char *)cp + PF_DIST, _MM_HINT_T0);
            const __m256i v = _mm256_loadu_si256((const __m256i *)cp);
            const __m512i i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(v));
            const __m512i i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(v, 1));
            const __m512 wh0 = _mm512_permutexvar_ps(_mm512_srli_epi32(i0, 4), tab);
            const __m512 wl0 = _mm512_permutexvar_ps(i0, tab);
            const __m512 wh1 = _mm512_permutexvar_ps(_mm512_srli_epi32(i1, 4), tab);
            const __m512 wl1 = _mm512_permutexvar_ps(i1, tab);
            const float *xb = xp + kb * NF4_BLOCK;
            _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) {
                const float *xn = xb + n * cols;
                __m512 s = _mm512_mul_ps(wh0, _mm512_loadu_ps(xn));
                s = _mm512_fmadd_ps(wl0, _mm512_loadu_ps(xn + 16), s);
                s = _mm512_fmadd_ps(wh1, _mm512_loadu_ps(xn + 32), s);
                s = _mm512_fmadd_ps(wl1, _mm512_loadu_ps(xn + 48), s);
                acc[n] = _mm512_fmadd_ps(s, am, acc[n]);
            }
        }
        _Pragma("GCC unroll 8") for (int n = 0; n < NN; n++) out[n * ostride + i] = _mm512_reduce_add_ps(acc[n]);
    }
}

AVX512 static void gemv_nf4_avx512(float *out, int64_t ostride, const nf4_data *w, int64_t r0, int64_t nrows,
                                   int64_t cols, const float *xp, int N) {
    MATMUL_SWITCH_N(N, gemv_nf4_nn, out, ostride, w, r0, nrows, cols, xp)
}

// ---- exact dequantization of whole 64-blocks ----
// The two nibbles of each byte are spread in element order at 16-bit width:
// u16 = byte -> (byte >> 4) | (byte & 15) << 8, i.e. bytes [hi, lo]. Then one
// fp32 multiply by the block's absmax, exactly as nf4_dequantize does.
AVX512 static void nf4_blocks_avx512(float *out, const nf4_data *w, int64_t b0, int64_t nblocks) {
    const __m512 tab = _mm512_loadu_ps(NF4_TABLE);
    const __m256i lo4 = _mm256_set1_epi16(0x0F);
    for (int64_t b = b0; b < b0 + nblocks; b++, out += NF4_BLOCK) {
        const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2];
        const __m512 am = _mm512_set1_ps(t + w->absmax_offset);
        const uint8_t *cp = w->codes + b * (NF4_BLOCK / 2);
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(cp + 16 * h)));
            const __m256i idx = _mm256_or_si256(_mm256_srli_epi16(v, 4), _mm256_slli_epi16(_mm256_and_si256(v, lo4), 8));
            const __m512 w0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(idx)), tab);
            const __m512 w1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(idx, 1)), tab);
            _mm512_storeu_ps(out + 32 * h, _mm512_mul_ps(w0, am));
            _mm512_storeu_ps(out + 32 * h + 16, _mm512_mul_ps(w1, am));
        }
    }
}

// exact conversion of n 16-bit floats, masked at the tail
#define DEFINE_CVT(NAME, LD, LDM)                                                    \
    AVX512 static void NAME(float *out, const uint16_t *in, int64_t n) {            \
        int64_t i = 0;                                                              \
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, LD(in + i));         \
        if (i < n) {                                                                \
            const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);                   \
            _mm512_mask_storeu_ps(out + i, m, LDM(in + i, m));                      \
        }                                                                           \
    }

DEFINE_CVT(cvt_f16_avx512, ld_f16, ld_f16_m)
DEFINE_CVT(cvt_bf16_avx512, ld_bf16, ld_bf16_m)

static const matmul_kernels KERNELS_AVX512 = {
    .name = "avx512",
    .gemv_f32 = gemv_f32_avx512,
    .gemv_f16 = gemv_f16_avx512,
    .gemv_bf16 = gemv_bf16_avx512,
    .gemv_nf4 = gemv_nf4_avx512,
    .xgroup = 16,
    .gemv_nf4_q8 = gemv_nf4_q8_avx2,  // memory-bound already at AVX2 width
    .nf4_blocks = nf4_blocks_avx512,
    .cvt_f16 = cvt_f16_avx512,
    .cvt_bf16 = cvt_bf16_avx512,
};

const matmul_kernels *matmul_kernels_avx512(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return &KERNELS_AVX512;
    return NULL;
}
