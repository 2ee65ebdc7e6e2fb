// nf4.h: 4-bit NormalFloat with double-quantized absmax, bit-exact with the
// bitsandbytes algorithm (QLoRA). docs/formats.md describes the bytes.
//
// A weight of n elements, flattened row-major (out,in), is cut into absmax
// blocks of NF4_BLOCK = 64 elements (the last may be partial):
//   codes   u8[(n+1)/2]      element 2j in the HIGH nibble of byte j, 2j+1 low
//   absmax  fp32 per block   max |x| over the block (only during quantization)
// Double quantization of the absmax values:
//   offset  fp32             mean(absmax): sequential double sum / nblocks, rounded to fp32
//   a[i]    = absmax[i] - offset                         (fp32)
//   scale2  fp32[ceil(nblocks/256)]  max |a| over each group of NF4_BLOCK2 = 256
//   q8[i]   u8 = nf4_quantize_code8(a[i] * (1/scale2[g]))  (bitsandbytes dQuantize, not stochastic)
// Dequantization (all fp32, no fused multiply-add):
//   absmax'[i] = NF4_CODE8[q8[i]] * scale2[i/256] + offset
//   w[e]       = NF4_TABLE[code(e)] * absmax'[e/64]
// Quantizing element x: xn = x * (1/absmax[b]) with the TRUE fp32 absmax, then
// the bitsandbytes dQuantizeNF4 decision tree (threshold t: code goes up when xn > t;
// the thresholds are its decimal literals rounded once to fp32).
// Where bitsandbytes leaves the bits open we define them (docs/formats.md):
//  - a block (or group) whose max is 0 quantizes as if xn = 0 (codes 7 and 127;
//    bitsandbytes' CUDA kernel computes 0*(1/0) = NaN there, code 0);
//  - for odd n the spare low nibble is 7, the code of 0.0;
//  - the offset is a sequential double sum (torch's fp32 mean has no fixed order).
// NF4_CODE8[0] is -0.99296875, not -1: that is the dynamic map.
#ifndef QL_NF4_H
#define QL_NF4_H

#include <stddef.h>
#include <stdint.h>

#define NF4_BLOCK 64
#define NF4_BLOCK2 256

extern const float NF4_TABLE[16];   // the 16 NF4 values, ascending
extern const float NF4_CODE8[256];  // bitsandbytes create_dynamic_map(signed=True), ascending

// A quantized weight's storage. Pointers may point into an mmapped file.
typedef struct {
    int64_t n;                 // elements
    const uint8_t *codes;      // (n+1)/2 bytes
    const uint8_t *absmax_q;   // nf4_nblocks(n) bytes
    const float *absmax_scale; // nf4_ngroups(n) floats
    float absmax_offset;
} nf4_data;

static inline int64_t nf4_nblocks(int64_t n) { return (n + NF4_BLOCK - 1) / NF4_BLOCK; }
static inline int64_t nf4_ngroups(int64_t n) { return (nf4_nblocks(n) + NF4_BLOCK2 - 1) / NF4_BLOCK2; }
// total bytes of codes + absmax codes + scales (+ 4 for offset)
static inline size_t nf4_bytes(int64_t n) {
    return (size_t)((n + 1) / 2) + (size_t)nf4_nblocks(n) + 4 * (size_t)nf4_ngroups(n) + 4;
}

// 4-bit code of a normalized value (bitsandbytes dQuantizeNF4)
uint8_t nf4_quantize_value(float xn);
// 8-bit code of a normalized value in the NF4_CODE8 map (bitsandbytes dQuantize<0>)
uint8_t nf4_quantize_code8(float xn);

// Quantize n fp32 values. Outputs are caller-allocated with the sizes above.
void nf4_quantize(uint8_t *codes /* out */, uint8_t *absmax_q /* out */, float *absmax_scale /* out */,
                  float *absmax_offset /* out */, const float *x, int64_t n);
// Dequantized absmax of every block: out[nf4_nblocks(n)]
void nf4_absmax(float *out, const nf4_data *w);
// Dequantize elements [start, start+count) into out. Reference; exact.
void nf4_dequantize(float *out, const nf4_data *w, int64_t start, int64_t count);

#endif
