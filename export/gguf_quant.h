// gguf_quant.h: ggml's Q8_0 and Q4_0 blocks, computed as llama.cpp's reference
// quantizers compute them (ggml/src/ggml-quants.c, quantize_row_q8_0_ref and
// quantize_row_q4_0_ref, llama.cpp 34af94cd9 read in the unslothai/llama.cpp
// snapshot; llama-quantize calls them through quantize_q8_0 / quantize_q4_0 when
// no importance matrix is given), so that qlora's GGUF base holds the bytes that
// `llama-quantize --pure` writes from the same fp32 values (tests/test_gguf.c
// checks this against tests/fixtures/gguf_quant, made by llama-quantize).
// A block is 32 consecutive values x[0..31] of a row (ggml's QK8_0 = QK4_0 = 32):
//   Q8_0, 34 bytes: d = amax / 127 (amax the largest |x|), then 32 int8
//         q[j] = roundf(x[j] * id) (halves away from zero), id = 1/d or 0 when d is 0;
//         the value is q[j] * d.
//   Q4_0, 18 bytes: d = m / -8 (m the value of largest magnitude, with its sign;
//         the first of equal magnitudes), then 16 bytes: byte j holds element j in
//         its low nibble and element 16 + j in its high one, each
//         q = min(15, trunc(x * id + 8.5)); the value is (q - 8) * d.
// d is computed and used in fp32 and stored rounded to f16 (little-endian, first);
// every step is one fp32 operation as in ggml, never fused (CMake: ISO C, no FMA
// contraction). A non-finite product (an underflowing d, |x| < ~1e-36) is taken as
// 0 here, where ggml's conversion is undefined; the writer refuses NaN and Inf first.
#ifndef QL_GGUF_QUANT_H
#define QL_GGUF_QUANT_H

#include <stdint.h>

#define GGUF_QK 32           // values per block (Q8_0 and Q4_0)
#define GGUF_Q8_0_BYTES 34   // f16 d + 32 int8
#define GGUF_Q4_0_BYTES 18   // f16 d + 16 bytes of nibbles

// x: n values, n a multiple of GGUF_QK -> dst: n / 32 blocks.
void gguf_quantize_q8_0(uint8_t *dst /* out: n/32 * 34 bytes */, const float *x, int64_t n);
void gguf_quantize_q4_0(uint8_t *dst /* out: n/32 * 18 bytes */, const float *x, int64_t n);

#endif
