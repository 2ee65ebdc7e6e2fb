// nf4.c: NF4 quantization with double-quantized absmax (the format is
// specified in nf4.h). Plain C in fp32; the build is ISO C11, so gcc does not
// contract a*b+c into a fused multiply-add, and every result is the same on
// every machine.
//
// The algorithm follows bitsandbytes (csrc/kernels.cu: dQuantizeNF4,
// dQuantize<0>, kQuantizeBlockwise; bitsandbytes/functional.py:
// create_dynamic_map, quantize_4bit); the code is our own.
#include "nf4.h"

#include <math.h>
#include <stdlib.h>

#include "../common/err.h"

// The 16 NF4 values (bitsandbytes dDequantizeNF4), ascending: code c -> NF4_TABLE[c].
const float NF4_TABLE[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

// bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8),
// the map quantize_4bit uses to quantize absmax a second time.
// Made by mirroring functional.py with Debian's /usr/bin/python3 and torch 1.13 (CPU):
//   for i in 0..6: b = torch.linspace(0.1, 1, 2**i + 1)            (float32)
//                  m = (b[:-1] + b[1:]) / 2.0
//                  data += (10**(i-6) * m).tolist() + (-(10**(i-6)) * m).tolist()
//   data += [0, 1.0]; data.sort(); t = torch.tensor(data, dtype=torch.float32)
// and printing each float(t[k]) with float.hex. Index 127 is 0, index 255 is 1,
// index 0 is -0.99296875 (the map is not symmetric at the ends).
const float NF4_CODE8[256] = {
    -0x1.fc6666p-1f, -0x1.f53332p-1f, -0x1.eep-1f, -0x1.e6ccccp-1f,
    -0x1.df9998p-1f, -0x1.d86666p-1f, -0x1.d13334p-1f, -0x1.cap-1f,
    -0x1.c2ccccp-1f, -0x1.bb9998p-1f, -0x1.b46666p-1f, -0x1.ad3332p-1f,
    -0x1.a6p-1f, -0x1.9eccccp-1f, -0x1.979998p-1f, -0x1.906666p-1f,
    -0x1.893334p-1f, -0x1.82p-1f, -0x1.7acccep-1f, -0x1.73999ap-1f,
    -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5ep-1f, -0x1.56cccep-1f,
    -0x1.4f999ap-1f, -0x1.486666p-1f, -0x1.413334p-1f, -0x1.3ap-1f,
    -0x1.32ccccp-1f, -0x1.2b999ap-1f, -0x1.246668p-1f, -0x1.1d3334p-1f,
    -0x1.16p-1f, -0x1.0eccccp-1f, -0x1.07999ap-1f, -0x1.006666p-1f,
    -0x1.f26668p-2f, -0x1.e4p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f,
    -0x1.b8ccccp-2f, -0x1.aa6664p-2f, -0x1.9cp-2f, -0x1.8d9998p-2f,
    -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626664p-2f, -0x1.54p-2f,
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f,
    -0x1.0cp-2f, -0x1.fb3334p-3f, -0x1.de6668p-3f, -0x1.c1999ap-3f,
    -0x1.a4ccccp-3f, -0x1.88p-3f, -0x1.6b3332p-3f, -0x1.4e6666p-3f,
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.fp-4f, -0x1.b66668p-4f,
    -0x1.93d70ap-4f, -0x1.8851eap-4f, -0x1.7ccccep-4f, -0x1.7147aep-4f,
    -0x1.65c29p-4f, -0x1.5a3d7p-4f, -0x1.4eb85p-4f, -0x1.433334p-4f,
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f,
    -0x1.09999ap-4f, -0x1.fc28f4p-5f, -0x1.e51ebap-5f, -0x1.ce147ap-5f,
    -0x1.b70a3ep-5f, -0x1.ap-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f,
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c28ep-5f,
    -0x1.fd70a4p-6f, -0x1.cf5c26p-6f, -0x1.a147aep-6f, -0x1.733334p-6f,
    -0x1.451eb8p-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c29p-7f,
    -0x1.3e76c8p-7f, -0x1.2c083p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f,
    -0x1.e978d4p-8f, -0x1.c49ba6p-8f, -0x1.9fbe76p-8f, -0x1.7ae148p-8f,
    -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f,
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f,
    -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f, -0x1.3dd982p-11f,
    -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f,
    -0x1.040bfep-17f, -0x1.b43528p-19f, -0x1.27476ep-21f, 0x0p+0f,
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f,
    0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f,
    0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f,
    0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f,
    0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f,
    0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f,
    0x1.d1eb86p-7f, 0x1.170a3ep-6f, 0x1.451eb8p-6f, 0x1.733334p-6f,
    0x1.a147aep-6f, 0x1.cf5c26p-6f, 0x1.fd70a4p-6f, 0x1.15c28ep-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f,
    0x1.88f5c2p-5f, 0x1.ap-5f, 0x1.b70a3ep-5f, 0x1.ce147ap-5f,
    0x1.e51ebap-5f, 0x1.fc28f4p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f,
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f,
    0x1.4eb85p-4f, 0x1.5a3d7p-4f, 0x1.65c29p-4f, 0x1.7147aep-4f,
    0x1.7ccccep-4f, 0x1.8851eap-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,
    0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f,
    0x1.6b3332p-3f, 0x1.88p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f,
    0x1.de6668p-3f, 0x1.fb3334p-3f, 0x1.0cp-2f, 0x1.1a6668p-2f,
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f,
    0x1.626664p-2f, 0x1.70ccccp-2f, 0x1.7f3334p-2f, 0x1.8d9998p-2f,
    0x1.9cp-2f, 0x1.aa6664p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,
    0x1.d59998p-2f, 0x1.e4p-2f, 0x1.f26668p-2f, 0x1.006666p-1f,
    0x1.07999ap-1f, 0x1.0eccccp-1f, 0x1.16p-1f, 0x1.1d3334p-1f,
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f,
    0x1.413334p-1f, 0x1.486666p-1f, 0x1.4f999ap-1f, 0x1.56cccep-1f,
    0x1.5ep-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f,
    0x1.7acccep-1f, 0x1.82p-1f, 0x1.893334p-1f, 0x1.906666p-1f,
    0x1.979998p-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3332p-1f,
    0x1.b46666p-1f, 0x1.bb9998p-1f, 0x1.c2ccccp-1f, 0x1.cap-1f,
    0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df9998p-1f, 0x1.e6ccccp-1f,
    0x1.eep-1f, 0x1.f53332p-1f, 0x1.fc6666p-1f, 0x1p+0f,
};

// Thresholds of dQuantizeNF4, ascending: the code of xn is the number of
// thresholds t with xn > t. The bitsandbytes tree is a binary search over
// these same fp32 constants; NaN compares false everywhere and gets code 0.
static const float NF4_THRESH[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

uint8_t nf4_quantize_value(float xn) {
    // four comparisons, the same ones the bitsandbytes tree makes
    int c = 0;
    for (int step = 8; step > 0; step >>= 1)
        if (xn > NF4_THRESH[c + step - 1]) c += step;
    return (uint8_t)c;
}

uint8_t nf4_quantize_code8(float x) {
    // dQuantize<STOCHASTIC=0>: binary search from index 127 with steps 64..1,
    // then the nearer neighbour by an fp32 midpoint (a tie stays at the pivot).
    const float *code = NF4_CODE8;
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float midpoint = (upper + val) * 0.5f;
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    }
    float midpoint = (lower + val) * 0.5f;
    return (uint8_t)(x < midpoint ? lower_pivot : pivot);
}

void nf4_quantize(uint8_t *codes /* out */, uint8_t *absmax_q /* out */, float *absmax_scale /* out */,
                  float *absmax_offset /* out */, const float *x, int64_t n) {
    const int64_t nb = nf4_nblocks(n), ng = nf4_ngroups(n);
    float *absmax = mallocCheck((size_t)(nb > 0 ? nb : 1) * sizeof(float));

    // 1. absmax of each 64-block; codes of xn = x * (1/absmax) with the true absmax.
    double sum = 0;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t e0 = b * NF4_BLOCK, e1 = e0 + NF4_BLOCK < n ? e0 + NF4_BLOCK : n;
        float m = 0.0f;
        for (int64_t e = e0; e < e1; e++) m = fmaxf(m, fabsf(x[e]));
        absmax[b] = m;
        sum += m;
        const float inv = m > 0.0f ? 1.0f / m : 0.0f;
        for (int64_t e = e0; e < e1; e++) {
            const uint8_t c = nf4_quantize_value(m > 0.0f ? x[e] * inv : 0.0f);  // zero block: xn = 0
            if ((e & 1) == 0) codes[e >> 1] = (uint8_t)(c << 4);
            else codes[e >> 1] |= c;
        }
    }
    // Odd n: the spare low nibble of the last byte holds the code of 0.0, which is
    // what bitsandbytes' zero-padded block load writes there.
    if (n & 1) codes[n >> 1] |= nf4_quantize_value(0.0f);

    // 2. offset = mean(absmax): sequential double sum / nblocks, rounded to fp32.
    const float offset = nb > 0 ? (float)(sum / (double)nb) : 0.0f;
    *absmax_offset = offset;

    // 3. per group of 256 blocks: scale2 = max |absmax - offset|; q8 = code8(a * (1/scale2)).
    for (int64_t g = 0; g < ng; g++) {
        const int64_t b0 = g * NF4_BLOCK2, b1 = b0 + NF4_BLOCK2 < nb ? b0 + NF4_BLOCK2 : nb;
        float s = 0.0f;
        for (int64_t b = b0; b < b1; b++) {
            absmax[b] = absmax[b] - offset;
            s = fmaxf(s, fabsf(absmax[b]));
        }
        absmax_scale[g] = s;
        const float inv = s > 0.0f ? 1.0f / s : 0.0f;
        for (int64_t b = b0; b < b1; b++)
            absmax_q[b] = nf4_quantize_code8(s > 0.0f ? absmax[b] * inv : 0.0f);  // zero group: xn = 0
    }
    free(absmax);
}

void nf4_absmax(float *out, const nf4_data *w) {
    const int64_t nb = nf4_nblocks(w->n);
    for (int64_t b = 0; b < nb; b++) {
        const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2];
        out[b] = t + w->absmax_offset;
    }
}

void nf4_dequantize(float *out, const nf4_data *w, int64_t start, int64_t count) {
    QL_ASSERT(start >= 0 && count >= 0 && start + count <= w->n);
    int64_t cur_block = -1;
    float am = 0.0f;
    for (int64_t i = 0; i < count; i++) {
        const int64_t e = start + i, b = e / NF4_BLOCK;
        if (b != cur_block) {
            const float t = NF4_CODE8[w->absmax_q[b]] * w->absmax_scale[b / NF4_BLOCK2];
            am = t + w->absmax_offset;
            cur_block = b;
        }
        const uint8_t byte = w->codes[e >> 1];
        const int c = (e & 1) ? (byte & 15) : (byte >> 4);
        out[i] = NF4_TABLE[c] * am;
    }
}
