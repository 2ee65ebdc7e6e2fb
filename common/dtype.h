// dtype.h: element types of tensors in files and memory, and exact scalar
// conversions between fp16/bf16 and fp32 (round-to-nearest-even).
#ifndef QL_DTYPE_H
#define QL_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    DT_F32 = 0,
    DT_F16,
    DT_BF16,
    DT_I32,
    DT_I64,
    DT_U8,
    DT_I8,
    DT_NF4,  // packed 4-bit NormalFloat, see kernels/nf4.h and docs/formats.md
    DT_COUNT
} dtype;

// bytes per element; 0 for DT_NF4 (packed, see nf4_bytes)
size_t dtype_size(dtype t);
// The index of the first Inf or NaN among n values of type t (F32, F16 or BF16)
// at p, or -1 when all are finite (and for any other type).
int64_t dtype_first_nonfinite(const void *p, dtype t, int64_t n);
// safetensors spelling ("F32", "F16", "BF16", "I32", "I64", "U8", "I8"); NULL for NF4
const char *dtype_name(dtype t);
// parse a safetensors dtype name; returns -1 when unknown
int dtype_parse(const char *s, size_t len);

static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return f32_from_bits(sign);
        // subnormal: value = man * 2^-24
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000 | (man << 13));
    return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffff;
    if (a > 0x7f800000) return sign | 0x7e00;            // NaN
    if (a >= 0x477ff000) return sign | 0x7c00;           // overflow -> inf (rounds past 65504)
    if (a < 0x38800000) {                                // subnormal or zero in f16
        if (a < 0x33000000) return sign;                 // below half the smallest subnormal
        uint32_t man = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)(a >> 23);                // 14..24 (value = man * 2^(e-150))
        // value = man * 2^(e-150) = r * 2^-24, so r = man >> (126 - e)
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return sign | (uint16_t)r;
    }
    uint32_t r = a + 0xfff + ((a >> 13) & 1);            // round to nearest even at bit 13
    return sign | (uint16_t)((r - 0x38000000) >> 13);
}

#endif
