"""nf4_ref.py: independent Python model of 4-bit NormalFloat (NF4) quantization
with double-quantized absmax, as specified in kernels/nf4.h.

The algorithm is bitsandbytes' (QLoRA); this is a reimplementation written from
reading these files of github.com/bitsandbytes-foundation/bitsandbytes:
  csrc/kernels.cu        kQuantizeBlockwise (absmax, reciprocal, packing),
                         dQuantizeNF4 (decision tree), dQuantize<0> (8-bit
                         binary search + midpoint rule), kDequantizeBlockwise
  bitsandbytes/functional.py
                         quantize_4bit (compress_statistics: offset = mean,
                         nested quantize_blockwise with blocksize 256),
                         create_dynamic_map, dequantize_4bit
Every fp32 operation is done in numpy float32 (IEEE single, round to nearest
even, one rounding per operation, no fused multiply-add), so results are
bit-exact with a correct C implementation of nf4.h.

Layouts (n = number of elements of the flattened (out,in) weight):
  codes         u8[(n+1)/2]  element 2j in the high nibble of byte j
  absmax        f32[nblocks] nblocks = ceil(n/64)      (quantization only)
  absmax_q      u8[nblocks]  index into CODE8
  absmax_scale  f32[ngroups] ngroups = ceil(nblocks/256)
  absmax_offset f32
"""
import numpy as np
import torch

BLOCK = 64    # NF4_BLOCK: elements per absmax block
BLOCK2 = 256  # NF4_BLOCK2: absmax values per second-level group

f32 = np.float32

def f32_literal(text):
    """The float32 nearest to a decimal literal, rounded once (ties to even),
    as a C/CUDA compiler reads `text` with an f suffix. np.float32(float(text))
    would round twice (decimal -> double -> float) and differs when the double
    lands on a tie between two floats, which happens for 4 of the 15 NF4
    thresholds below."""
    from fractions import Fraction
    exact = Fraction(text)
    near = np.float32(float(text))
    best = None
    for c in (np.nextafter(near, f32(-np.inf)), near, np.nextafter(near, f32(np.inf))):
        d = abs(Fraction(float(c)) - exact)
        even = (int(np.array(c, dtype=f32).view(np.uint32)) & 1) == 0
        if best is None or d < best[0] or (d == best[0] and even):
            best = (d, c)
    return f32(best[1])


# The 16 NF4 values (bitsandbytes csrc/kernels.cu nf4_dequantization_lut; they
# are fp32 roundings of normal quantiles, see functional.py create_normal_map).
NF4_TABLE = np.array([f32_literal(t) for t in """
    -1.0 -0.6961928009986877 -0.5250730514526367 -0.39491748809814453
    -0.28444138169288635 -0.18477343022823334 -0.09105003625154495 0.0
    0.07958029955625534 0.16093020141124725 0.24611230194568634 0.33791524171829224
    0.44070982933044434 0.5626170039176941 0.7229568362236023 1.0""".split()], dtype=f32)

# dQuantizeNF4's thresholds, ascending: t[k] separates code k from code k+1 and
# the code goes up when xn > t[k] (a strict comparison in fp32). In
# csrc/kernels.cu they are these decimal literals with an f suffix, so each is
# the decimal rounded once to fp32. The decimals are the float64 midpoints of
# neighbouring table entries; for k = 0, 8, 12, 14 that midpoint is a tie
# between two floats and the fp32 threshold is NOT the fp32-computed midpoint
# (T[k] + T[k+1]) / 2 (nf4_selftest checks both facts).
NF4_THRESH = np.array([f32_literal(t) for t in """
    -0.8480964004993439 -0.6106329262256622 -0.4599952697753906 -0.33967943489551544
    -0.23460740596055984 -0.13791173323988914 -0.045525018125772476 0.03979014977812767
    0.1202552504837513 0.2035212516784668 0.2920137718319893 0.3893125355243683
    0.5016634166240692 0.6427869200706482 0.8614784181118011""".split()], dtype=f32)


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes' signed 8-bit dynamic map, as f32[256] sorted ascending.

    For exponent level i (0..max_exponent_bits-1) the positive values are the
    midpoints of 2^(i + non_sign_bits - max_exponent_bits) + 1 (signed) evenly
    spaced fp32 points on [0.1, 1] (torch.linspace), scaled by
    10^(i - (max_exponent_bits - 1)); the signed map adds their negatives,
    then 0 and 1.0, then zeros to 256 entries, then sorts. All of it in fp32
    as torch does (the decimal scale is a Python number, so torch multiplies
    by its fp32 rounding).
    """
    non_sign_bits = total_bits - 1
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    vals = []

    def level(npoints, scale):
        pts = torch.linspace(0.1, 1, npoints, dtype=torch.float32)
        mids = (pts[:-1] + pts[1:]) / 2.0
        out = (scale * mids).tolist()
        if signed:
            out += (-scale * mids).tolist()
        return out

    for i in range(max_exponent_bits):
        npoints = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1)) + 1
        vals += level(npoints, 10 ** (-(max_exponent_bits - 1) + i))
    if extra > 0:  # not reached for the default (7 exponent bits of 8)
        vals += level(extra + 1, 10 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1))
    vals += [0.0, 1.0]
    assert len(vals) <= 2 ** total_bits
    vals += [0.0] * (256 - len(vals))
    vals.sort()
    return np.array(vals, dtype=f32)


CODE8 = create_dynamic_map()


def quantize_nf4_value(xn):
    """4-bit code of normalized values (f32 array) -> u8 array.

    dQuantizeNF4 is a balanced decision tree over NF4_THRESH; since the tree is
    a binary search tree over sorted thresholds, its result equals the number
    of thresholds t with xn > t. (A NaN compares false everywhere and gets 0,
    as on the GPU.)"""
    xn = np.asarray(xn, dtype=f32)
    code = np.zeros(xn.shape, dtype=np.uint8)
    for t in NF4_THRESH:
        code += (xn > t).astype(np.uint8)
    return code


def quantize_code8(xn, code=CODE8):
    """8-bit code of normalized values in `code` (sorted f32[256]): bitsandbytes
    dQuantize<0> (not stochastic), step by step, vectorized over xn.

    Binary search: pivot starts at 127 with the bracket (lower, upper) =
    (-1, 1) and indices (0, 255); for step in 64, 32, ..., 1: if xn > code[pivot]
    the pivot becomes the lower bracket and moves up by step, else it becomes
    the upper bracket and moves down. After the loop, an untouched bracket
    index 255 / 0 takes code[255] / code[0] as its value. Then with
    val = code[pivot]: if xn > val, return the upper index when
    xn > (upper + val) * 0.5 else pivot; otherwise return the lower index when
    xn < (lower + val) * 0.5 else pivot. The midpoints are fp32."""
    xn = np.asarray(xn, dtype=f32).reshape(-1)
    m = xn.shape[0]
    pivot = np.full(m, 127, dtype=np.int64)
    lo_i = np.zeros(m, dtype=np.int64)
    hi_i = np.full(m, 255, dtype=np.int64)
    lo = np.full(m, -1.0, dtype=f32)
    hi = np.full(m, 1.0, dtype=f32)
    val = code[pivot]
    step = 64
    while step > 0:
        up = xn > val
        lo_i = np.where(up, pivot, lo_i)
        lo = np.where(up, val, lo)
        hi_i = np.where(up, hi_i, pivot)
        hi = np.where(up, hi, val)
        pivot = np.where(up, pivot + step, pivot - step)
        val = code[pivot]
        step >>= 1
    hi = np.where(hi_i == 255, code[255], hi).astype(f32)
    lo = np.where(lo_i == 0, code[0], lo).astype(f32)
    half = f32(0.5)
    mid_hi = ((hi + val).astype(f32) * half).astype(f32)
    mid_lo = ((lo + val).astype(f32) * half).astype(f32)
    up = xn > val
    res = np.where(up, np.where(xn > mid_hi, hi_i, pivot), np.where(xn < mid_lo, lo_i, pivot))
    return res.astype(np.uint8)


def _recip_scaled(x, m):
    """x * (1/m) in fp32 for each row; a row whose max is 0 gives xn = 0 (nf4.h;
    see the note in README.md: the CUDA kernel of bitsandbytes gets NaN there)."""
    safe = np.where(m == 0, f32(1), m).astype(f32)
    inv = (f32(1) / safe).astype(f32)
    inv = np.where(m == 0, f32(0), inv).astype(f32)
    return (x * inv[:, None]).astype(f32)


def _blocks(x, size):
    """Pad a 1-D f32 array with zeros to whole blocks: (nblocks, size)."""
    n = x.shape[0]
    nb = (n + size - 1) // size
    pad = np.zeros(nb * size, dtype=f32)
    pad[:n] = x
    return pad.reshape(nb, size)


def quantize(x):
    """Quantize f32 values (any shape, flattened row-major). Returns a dict with
    codes u8[(n+1)/2], absmax f32[nb], absmax_q u8[nb], absmax_scale f32[ng],
    absmax_offset f32 (numpy scalar)."""
    x = np.ascontiguousarray(x, dtype=f32).reshape(-1)
    n = x.shape[0]
    assert n > 0
    xb = _blocks(x, BLOCK)                       # padding is 0, like the kernel's load
    absmax = np.abs(xb).max(axis=1).astype(f32)  # (nb,)
    xn = _recip_scaled(xb, absmax).reshape(-1)
    c = quantize_nf4_value(xn)
    nbytes = (n + 1) // 2
    # codes for padding elements are code(0) = 7; an odd n keeps one in the
    # low nibble of its last byte, as bitsandbytes does.
    c = c[: 2 * nbytes]
    codes = ((c[0::2] << 4) | c[1::2]).astype(np.uint8)

    # double quantization of absmax
    nb = absmax.shape[0]
    s = 0.0
    for v in absmax:                       # sequential float64 sum
        s += float(v)
    offset = f32(s / nb)
    a = (absmax - offset).astype(f32)
    ab = _blocks(a, BLOCK2)
    scale2 = np.abs(ab).max(axis=1).astype(f32)  # zero padding cannot raise a max of |a|
    an = _recip_scaled(ab, scale2).reshape(-1)[:nb]
    q8 = quantize_code8(an)
    return dict(codes=codes, absmax=absmax, absmax_q=q8, absmax_scale=scale2, absmax_offset=offset, n=n)


def dequantize_absmax(absmax_q, absmax_scale, absmax_offset):
    """absmax'[i] = CODE8[q8[i]] * scale2[i/256] + offset, two fp32 roundings."""
    q8 = np.asarray(absmax_q, dtype=np.uint8)
    g = np.arange(q8.shape[0]) // BLOCK2
    prod = (CODE8[q8] * np.asarray(absmax_scale, dtype=f32)[g]).astype(f32)
    return (prod + f32(absmax_offset)).astype(f32)


def dequantize(codes, absmax_dq, n):
    """w[e] = NF4_TABLE[code(e)] * absmax'[e/64] in fp32 -> f32[n]."""
    codes = np.asarray(codes, dtype=np.uint8)
    c = np.empty(2 * codes.shape[0], dtype=np.uint8)
    c[0::2] = codes >> 4
    c[1::2] = codes & 0x0F
    c = c[:n]
    b = np.arange(n) // BLOCK
    return (NF4_TABLE[c] * np.asarray(absmax_dq, dtype=f32)[b]).astype(f32)


def quant_dequant(w):
    """Round trip of a weight array through NF4 with double quantization; same
    shape, f32."""
    w = np.asarray(w, dtype=f32)
    q = quantize(w)
    amx = dequantize_absmax(q["absmax_q"], q["absmax_scale"], q["absmax_offset"])
    return dequantize(q["codes"], amx, q["n"]).reshape(w.shape)


def nf4_selftest():
    """Checks of the tables against the properties bitsandbytes relies on."""
    t64 = NF4_TABLE.astype(np.float64)
    mid64 = (t64[:-1] + t64[1:]) / 2                 # exact: 25 significant bits at most
    lo = np.array([np.nextafter(f32(m), f32(-2)) if f32(m) > m else f32(m) for m in mid64], f32)
    hi = np.array([np.nextafter(f32(m), f32(2)) if f32(m) < m else f32(m) for m in mid64], f32)
    assert np.all((NF4_THRESH == lo) | (NF4_THRESH == hi)), "thresholds are not the table midpoints"
    mid32 = ((NF4_TABLE[:-1] + NF4_TABLE[1:]) * f32(0.5)).astype(f32)
    assert list(np.nonzero(mid32 != NF4_THRESH)[0]) == [0, 8, 12, 14], np.nonzero(mid32 != NF4_THRESH)
    assert np.all(np.diff(CODE8) > 0), "dynamic map must be strictly ascending"
    assert CODE8[127] == 0 and CODE8[255] == 1, (CODE8[127], CODE8[255])
    assert quantize_nf4_value(np.array([0], f32))[0] == 7
    assert quantize_code8(np.array([0], f32))[0] == 127
    # the tree and the map reproduce their own entries
    assert np.array_equal(quantize_nf4_value(NF4_TABLE), np.arange(16))
    assert np.array_equal(quantize_code8(CODE8), np.arange(256))
    # the tree against a literal nested-if transcription of its structure
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.uniform(-1.1, 1.1, 20000).astype(f32), NF4_THRESH,
                         np.nextafter(NF4_THRESH, f32(2)), np.nextafter(NF4_THRESH, f32(-2))])
    assert np.array_equal(quantize_nf4_value(xs), [_nf4_tree(v) for v in xs])
    # dQuantize<0> against nearest-value rounding with ties resolved as bnb
    # does: away from the nearest map entry only when strictly past the fp32
    # midpoint. For a sorted map this is: count of fp32 midpoints < x (x above
    # the pivot) -- check on random values away from the midpoints.
    ys = rng.uniform(-1, 1, 20000).astype(f32)
    mid8 = ((CODE8[:-1] + CODE8[1:]) * f32(0.5)).astype(f32)
    near = np.searchsorted(mid8, ys, side="left")
    ok = np.min(np.abs(ys[:, None] - mid8[None, :]), axis=1) > 0
    assert np.array_equal(quantize_code8(ys)[ok], near[ok].astype(np.uint8))


def _nf4_tree(x):
    """Scalar transcription of the branch structure of dQuantizeNF4 (thresholds
    by index into NF4_THRESH; the root splits codes 0-7 from 8-15)."""
    t = NF4_THRESH
    if x > t[7]:
        if x > t[11]:
            if x > t[13]:
                return 15 if x > t[14] else 14
            return 13 if x > t[12] else 12
        if x > t[9]:
            return 11 if x > t[10] else 10
        return 9 if x > t[8] else 8
    if x > t[3]:
        if x > t[5]:
            return 7 if x > t[6] else 6
        return 5 if x > t[4] else 4
    if x > t[1]:
        return 3 if x > t[2] else 2
    return 1 if x > t[0] else 0


if __name__ == "__main__":
    nf4_selftest()
    print("nf4_ref self-test ok")
