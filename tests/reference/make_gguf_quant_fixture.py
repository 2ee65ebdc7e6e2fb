#!/usr/bin/env python3
"""make_gguf_quant_fixture.py: llama.cpp's own Q8_0 and Q4_0 blocks of a few
rows, for test_gguf's byte-equality check of export/gguf_quant.c.

    python3 tests/reference/make_gguf_quant_fixture.py --qlora build/qlora \\
        --llamacpp /work/scratch/llama.cpp/build/bin

1. `qlora export --format gguf-base --dtype f32` of tests/fixtures/models/tiny_mha
   (every matrix has rows of 64 or 128 values, so llama-quantize needs no fallback);
2. the first 4 rows of blk.1.attn_v.weight (8 blocks of 32) are overwritten in that
   file with hand-made blocks that probe the edges of the reference quantizers:
   zeros, exact rounding ties for Q8_0 and Q4_0, equal magnitudes of both signs,
   values whose f16 scale is subnormal or rounds to 0, the Q4_0 clamp at 15;
3. `llama-quantize --pure` writes Q8_0 and Q4_0 files from it (no importance matrix:
   quantize_row_q8_0_ref / quantize_row_q4_0_ref);
4. for each tensor in ROWS, the fp32 rows and llama.cpp's bytes of the same rows go
   into tests/fixtures/gguf_quant/llamacpp_q8_0_q4_0.safetensors:
   `<name>.f32` F32 [rows, cols], `<name>.q8_0` U8 [rows * cols/32 * 34],
   `<name>.q4_0` U8 [rows * cols/32 * 18]; the metadata names llama.cpp's commit.

Pure Python 3 (no numpy): a GGUF reader written from ggml's docs/gguf.md and a
safetensors writer. The output is deterministic.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "tests", "fixtures", "gguf_quant", "llamacpp_q8_0_q4_0.safetensors")
ROWS = {  # tensor -> how many leading rows go into the fixture
    "token_embd.weight": 3,
    "output.weight": 2,
    "blk.0.attn_q.weight": 2,
    "blk.1.ffn_down.weight": 2,
    "blk.1.attn_v.weight": 4,  # the hand-made blocks
}
GGML_F32, GGML_Q4_0, GGML_Q8_0 = 0, 2, 8
BLOCK_BYTES = {GGML_F32: None, GGML_Q8_0: 34, GGML_Q4_0: 18}
GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def f32(v):
    """v rounded to fp32."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def edge_blocks():
    """8 blocks of 32 fp32 values (4 rows of 64)."""
    b = []
    z = [0.0] * 32
    z[7] = -0.0
    b.append(z)                                            # all zero: d = 0, every code 0 (Q8_0) / 8 (Q4_0)
    b.append([127.0] + [k - 15.5 for k in range(31)])      # Q8_0: d = 1, x.5 ties round away from zero
    b.append([-8.0, 8.0] + [k * 0.5 - 7.5 for k in range(30)])  # Q4_0: d = 1; +8 after -8 (first wins), clamp, ties
    b.append([3.0, 1.0, -2.0, 0.5, 0.25, -3.0] + [0.1 * (k % 7) - 0.3 for k in range(26)])  # +-3: the first sets d's sign
    b.append([1e-6 * ((k * 37) % 11 - 5) for k in range(32)])  # d = amax/127 rounds to an f16 subnormal
    b.append([2e-9 * (k - 16) for k in range(32)])         # d rounds to 0 in f16 (codes still from the fp32 d)
    b.append([1000.0 * (((k * 13) % 17) - 8) / 8 for k in range(32)])  # large values, repeated magnitudes
    b.append([((k * 7919) % 101 - 50) / 37.0 for k in range(32)])   # a mixed ramp
    return [f32(v) for blk in b for v in blk]


def read_gguf(path):
    """(tensors: name -> (type, ne, offset in file), data start), from ggml's docs/gguf.md."""
    with open(path, "rb") as f:
        buf = f.read()
    p = 0

    def take(fmt):
        nonlocal p
        v = struct.unpack_from("<" + fmt, buf, p)
        p += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal p
        n = take("Q")
        s = buf[p:p + n].decode("utf-8")
        p += n
        return s

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(GGUF_SCALAR[t])

    assert buf[:4] == b"GGUF", path
    p = 4
    assert take("I") == 3
    nt, nkv = take("Q"), take("Q")
    kv = {}
    for _ in range(nkv):
        k = string()
        kv[k] = value(take("I"))
    align = kv.get("general.alignment", 32)
    tensors = {}
    for _ in range(nt):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        tensors[name] = (take("I"), ne, take("Q"))
    start = (p + align - 1) // align * align
    return buf, {k: (t, ne, start + off) for k, (t, ne, off) in tensors.items()}


def row_bytes(t, cols):
    return cols * 4 if t == GGML_F32 else cols // 32 * BLOCK_BYTES[t]


def write_safetensors(path, tensors, meta):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, off = {"__metadata__": meta}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qlora", required=True, help="the qlora binary")
    ap.add_argument("--llamacpp", required=True, help="llama.cpp's build/bin (llama-quantize)")
    ap.add_argument("--commit", default="34af94cd9", help="llama.cpp's commit, for the metadata")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "f32.gguf")
        subprocess.run([a.qlora, "export", "--base", os.path.join(REPO, "tests/fixtures/models/tiny_mha"),
                        "--format", "gguf-base", "--dtype", "f32", "--out", src], check=True)
        buf, ts = read_gguf(src)
        t, ne, off = ts["blk.1.attn_v.weight"]
        edge = edge_blocks()
        assert t == GGML_F32 and ne[0] == 64 and len(edge) == 4 * 64
        with open(src, "r+b") as f:
            f.seek(off)
            f.write(struct.pack("<%df" % len(edge), *edge))
        out = []
        quant = {}
        for name, gt in (("Q8_0", GGML_Q8_0), ("Q4_0", GGML_Q4_0)):
            path = os.path.join(tmp, name + ".gguf")
            r = subprocess.run([os.path.join(a.llamacpp, "llama-quantize"), "--pure", src, path, name],
                               capture_output=True, text=True)
            if r.returncode:
                sys.exit("llama-quantize %s failed:\n%s" % (name, r.stderr[-2000:]))
            quant[gt] = read_gguf(path)
        buf, ts = read_gguf(src)
        for name, rows in ROWS.items():
            t, ne, off = ts[name]
            cols = ne[0]
            out.append((name + ".f32", "F32", [rows, cols], buf[off:off + rows * cols * 4]))
            for gt, suffix in ((GGML_Q8_0, "q8_0"), (GGML_Q4_0, "q4_0")):
                qb, qts = quant[gt]
                qt, qne, qoff = qts[name]
                assert qt == gt and qne == ne, "%s in the %s file: type %d, ne %s" % (name, suffix, qt, qne)
                n = rows * row_bytes(gt, cols)
                out.append(("%s.%s" % (name, suffix), "U8", [n], qb[qoff:qoff + n]))
    meta = {"llama.cpp": a.commit, "made_by": "tests/reference/make_gguf_quant_fixture.py",
            "source": "qlora export --format gguf-base --dtype f32 of tests/fixtures/models/tiny_mha, "
                      "blk.1.attn_v.weight rows 0-3 replaced by edge_blocks(); llama-quantize --pure Q8_0 / Q4_0"}
    write_safetensors(OUT, out, meta)
    print("wrote %s: %d tensors, %d bytes" % (OUT, len(out), os.path.getsize(OUT)))


if __name__ == "__main__":
    main()
