#!/usr/bin/env bash
# test_train_plan.sh QLORA SOURCE_DIR: qlora train --plan against hand counts.
# Each plan's plan_total_bytes must equal, to the byte, a count written here in
# awk from the formulas (the shapes' dims, the buffers trainer_init allocates, the
# NF4 storage, the CUDA backend's padding, tiles and scratch, the CPU ops'
# temporaries) rather than from the code: llama2-7b at seq 2048 with
# checkpointing on cuda (the issue's target), TinyLlama and Llama 3.2 1B (GQA,
# tied, f16) on cuda, and the tiny fixture model on cuda and cpu. Then: the table
# is sorted and sums to the total, there is exactly one plan_total_MB= line, bad
# usage fails with a clear message, and a run whose plan exceeds MemAvailable is
# refused before it reads its data, naming the largest parts.
q=$1; src=$2
fails=0
tmp=$(mktemp -d /tmp/qlora_plan_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
tiny=$src/tests/fixtures/models/tiny_gqa
unset QLORA_CUDA_TILE_BYTES  # the tile budget the hand counts assume is the default one

# The hand count, in bytes. Model: C F L H Hkv D V tied; linears nf4|f16; the
# embedding's (and untied lm_head's) bytes per value; run: N R targets (all|qv)
# dropout (0|1) ckpt (0|1) backend (cpu|cuda) threads accum.
count() {
    awk -v C="$1" -v F="$2" -v L="$3" -v H="$4" -v Hkv="$5" -v D="$6" -v V="$7" -v tied="$8" -v lin="$9" \
        -v eb="${10}" -v N="${11}" -v R="${12}" -v tg="${13}" -v drop="${14}" -v ck="${15}" -v be="${16}" \
        -v nth="${17}" -v acc="${18}" '
    function up(x, m) { return int((x + m - 1) / m) * m }         # x rounded up to a multiple of m
    function cdiv(a, b) { return int((a + b - 1) / b) }
    function max(a, b) { return a > b ? a : b }
    function min(a, b) { return a < b ? a : b }
    # one frozen weight of rows x cols: NF4 = codes, absmax codes, fp32 scale per 256 blocks (+ the
    # 4-byte offset in host memory); CUDA pads each array to 16 bytes and keeps the offset on the host
    function weight(t, rows, cols,   n, nb, ng) {
        n = rows * cols
        if (t != "nf4") return be == "cuda" ? up(n * t, 16) : n * t
        nb = cdiv(n, 64); ng = cdiv(nb, 256)
        if (be == "cuda") return up(cdiv(n, 2), 16) + up(nb, 16) + up(4 * ng, 16)
        return cdiv(n, 2) + nb + 4 * ng + 4
    }
    # rows per dequantized CUDA tile within 64 MiB at e bytes per value
    function tile(rows, cols, e,   tr) {
        tr = int(67108864 / (cols * e)); if (tr >= 64) tr = int(tr / 64) * 64
        return min(max(tr, 1), rows) * cols * e
    }
    # the CPU matmul (N >= 16: sgemm over per-thread fp32 tiles of 2^20 values) and its backward (2^22)
    function cpu_fwd(rows, cols,   tr, per) {
        per = cdiv(rows, nth); tr = min(max(int(1048576 / cols), 16), per)
        return (cdiv(rows, tr) > 1 ? nth : 1) * tr * cols * 4
    }
    function cpu_bwd(rows, cols) { return min(max(int(4194304 / cols), 16), rows) * cols * 4 }
    BEGIN {
        HD = H * D; KV = Hkv * D; W = max(max(C, F), HD)
        lt = lin == "nf4" ? "nf4" : 2
        # the seven linears: rows, cols, LoRA in, targeted
        split(HD " " KV " " KV " " C " " F " " F " " C, rows, " ")
        split(C " " C " " C " " HD " " C " " C " " F, cols, " ")
        for (k = 1; k <= 7; k++) on[k] = tg == "all" || k == 1 || k == 3
        total = 0
        for (k = 1; k <= 7; k++) total += L * weight(lt, rows[k], cols[k])
        total += weight(eb, V, C) * (tied ? 1 : 2)
        total += (2 * L + 1) * C * 4 * (be == "cpu" ? 2 : 1)          # norms: the model s, the backend s copy
        nblk = ck ? 1 : L
        acts = (ck ? 0 : N * C) + 3 * N * C + 2 * N * HD + 2 * N * KV + N * H + 3 * N * F
        total += nblk * acts * 4
        np = 0
        for (k = 1; k <= 7; k++) if (on[k]) {
            total += nblk * N * R * 4                                    # x A^T
            if (drop) total += nblk * N * cols[k] * 4                    # the dropped-out input
            np += L * R * (rows[k] + cols[k])
        }
        if (ck) total += (L + 1) * N * C * 4                            # block inputs
        total += (2 * N * C + N * V + N + 3 * N * C + 3 * N * F + 2 * N * HD + 2 * N * KV + N * R + N * W) * 4
        total += 4 * np * 4                                             # weights, grads, m, v
        if (be == "cuda") {
            t = 0
            for (k = 1; k <= 7; k++) {
                if (lt == "nf4") t = max(t, tile(rows[k], cols[k], 2))
                t = max(t, tile(rows[k], cols[k], 4))
            }
            t = max(t, tile(V, C, 4))                                   # the 16-bit embedding s backward tile
            total += t
            if (N > 8) total += N * max(max(C, F), HD) * 2              # x in fp16
            total += max(N * H * 4, 8 * min(cdiv(np, 256), 1024))     # attention delta or sumsq parts
            total += max(1048576, max(2 * up(4 * N, 256), up(4 * N, 256) + up(4 * (D / 2), 256)))
            total += 272 * 4 + 8 + 33554432                             # NF4 tables, sumsq, cuBLAS
        } else {
            s = 4 * (N * H + 1) + (N > 1 ? nth : 1) * 2 * 64 * N * 4   # attention backward
            for (k = 1; k <= 7; k++) if (lt != 4) s = max(s, max(cpu_fwd(rows[k], cols[k]), cpu_bwd(rows[k], cols[k])))
            s = max(s, max(cpu_fwd(V, C), cpu_bwd(V, C)))
            total += max(s, N * 4)
            total += np * 4 + 3 * np * 4 + 4 * N * (4 * acc + 3)        # host adapter, saves, batches
        }
        printf "%.0f\n", total
    }'
}

# plan NAME EXPECTED_BYTES ARGS...: runs --plan, checks the total, the table and the key lines
plan() {
    local name=$1 want=$2; shift 2
    "$q" train --plan "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"; local rc=$?
    [ $rc -eq 0 ] || { fail "$name: exit $rc: $(tail -2 "$tmp/$name.err")"; return; }
    local got mb n
    got=$(sed -n 's/^plan_total_bytes=//p' "$tmp/$name.out")
    [ "$got" = "$want" ] || fail "$name: plan_total_bytes=$got, the hand count is $want (off by $((got - want)))"
    n=$(grep -c '^plan_total_MB=' "$tmp/$name.out")
    [ "$n" = 1 ] || fail "$name: $n plan_total_MB= lines"
    mb=$(sed -n 's/^plan_total_MB=//p' "$tmp/$name.out")
    [ "$mb" = "$(awk -v b="$want" 'BEGIN { printf "%.1f", b / 1e6 }')" ] || fail "$name: plan_total_MB=$mb for $want bytes"
    # the parts: largest first, and their MB add up to the total
    awk -v name="$name" '
        /^part / { on = 1; next }
        /^total / { t = $(NF - 1); on = 0; next }
        on { mb = $(NF - 1); if (n++ && mb > last + 0.05) { print name ": " $0 " is after a smaller part"; bad = 1 }
             last = mb; sum += mb }
        END { if (n < 10 || sum < t - 0.05 * n - 0.1 || sum > t + 0.05 * n + 0.1) { print name ": " n " parts sum to " sum ", total " t; bad = 1 }
              exit bad }' "$tmp/$name.out" || fail "$name: the table (above)"
    grep -q '^fits: ' "$tmp/$name.out" || fail "$name: no fits: line"
    echo "ok $name: $got bytes"
}

#                      C     F     L  H  Hkv D   V      tied lin eb N    R  tg  drop ck be   nth acc
want=$(count            4096  11008 32 32 32  128 32000  0    nf4 2  2048 16 all 1    1  cuda 2   1)
plan llama2-7b "$want" --shape llama2-7b --seq-len 2048 --batch-size 1 --grad-checkpoint --rank 16 --targets all --backend cuda
grep -q '^plan_backend=cuda$' "$tmp/llama2-7b.out" || fail "llama2-7b: not planned for cuda"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    grep -q '^plan_fits=unknown$' "$tmp/llama2-7b.out" && grep -q '^fits: unknown: no GPU here to compare against' "$tmp/llama2-7b.out" \
        || fail "llama2-7b without a GPU: $(grep fits "$tmp/llama2-7b.out")"
fi
want=$(count            2048  5632  22 32 4   64  32000  0    nf4 2  300  8  qv  0    0  cuda 2   1)
plan tinyllama "$want" --shape tinyllama-1.1b --seq-len 100 --batch-size 3 --rank 8 --targets q_proj,v_proj --dropout 0 --backend cuda
want=$(count            2048  8192  16 32 8   64  128256 1    2   2  512  4  all 1    0  cuda 2   1)
plan llama3.2-1b-f16 "$want" --shape llama3.2-1b --seq-len 256 --batch-size 2 --rank 4 --base-dtype f16 --backend cuda
want=$(count            96    172   3  6  2   16  384    1    nf4 2  80   4  all 1    1  cuda 2   1)
plan tiny-cuda "$want" --base "$tiny" --seq-len 40 --batch-size 2 --rank 4 --grad-checkpoint --backend cuda
want=$(count            96    172   3  6  2   16  384    1    nf4 2  80   4  all 1    0  cpu  2   3)
plan tiny-cpu "$want" --base "$tiny" --seq-len 40 --batch-size 2 --rank 4 --grad-accum 3 --backend cpu --threads 2
grep -q '^plan_backend=cpu$' "$tmp/tiny-cpu.out" && grep -Eq '^plan_fits=(yes|no)$' "$tmp/tiny-cpu.out" \
    && grep -q '^plan_available_MB=' "$tmp/tiny-cpu.out" || fail "tiny-cpu: backend or fit: $(grep '^plan_' "$tmp/tiny-cpu.out" | tr '\n' ' ')"
# a base file holds the same weights as the directory it was quantized from: the same plan,
# read from its header (and the file's dtype wins over --base-dtype)
"$q" quantize --base "$tiny" --out "$tmp/tiny.qlb" >/dev/null 2>"$tmp/quantize.err" || fail "quantize: $(tail -2 "$tmp/quantize.err")"
plan tiny-qlb "$(sed -n 's/^plan_total_bytes=//p' "$tmp/tiny-cpu.out")" --base "$tmp/tiny.qlb" --base-dtype f16 \
    --seq-len 40 --batch-size 2 --rank 4 --grad-accum 3 --backend cpu --threads 2
"$q" train --plan --base "$tiny" --backend auto >"$tmp/auto.out" 2>&1 && grep -Eq '^plan_backend=(cpu|cuda)$' "$tmp/auto.out" \
    || fail "--backend auto: $(tail -3 "$tmp/auto.out")"
# a recipe's options are planned (rank 8, 2 x 256 tokens, 4 micro-batches), as a run takes them
want=$(count            96    172   3  6  2   16  384    1    nf4 2  512  8  all 1    0  cpu  2   4)
plan tiny-recipe "$want" --base "$tiny" --recipe "$src/recipes/tinyllama-style-cpu.json" --backend cpu --threads 2

# bad usage: exit 2 and a message that says what to do
bad() {
    local want=$1; shift
    "$q" train "$@" >"$tmp/bad.out" 2>"$tmp/bad.err"; local rc=$?
    [ $rc -eq 2 ] || fail "'$*': exit $rc, expected 2"
    grep -q -- "$want" "$tmp/bad.err" || fail "'$*': no '$want' in: $(cat "$tmp/bad.err")"
}
bad "unknown shape 'llama9-99b' (known: tinyllama-1.1b, llama2-7b, llama3.2-1b, llama3.1-8b)" --plan --shape llama9-99b
bad "both were given" --plan --shape llama2-7b --base "$tiny"
bad "neither was given" --plan
bad "shape is for --plan" --shape llama2-7b --data x.jsonl --out "$tmp/o"
bad "missing required option --data" --base "$tiny" --out "$tmp/o"
bad "expected auto, cpu or cuda, found 'ref'" --plan --shape llama2-7b --backend ref
bad "lower --seq-len or --batch-size" --plan --shape llama2-7b --seq-len 1000000 --batch-size 1000
bad "seq-len >= 2" --plan --shape llama2-7b --seq-len 1
"$q" train --plan --base "$tmp/no-such-model" >"$tmp/bad.out" 2>"$tmp/bad.err"; rc=$?
[ $rc -eq 1 ] && grep -q "no such model directory or base file" "$tmp/bad.err" || fail "--plan of a missing base: exit $rc: $(cat "$tmp/bad.err")"

# refusal: a run whose plan exceeds MemAvailable stops before it loads the model or reads
# its data (which does not exist here), naming the three largest parts and what to change
huge=(--base "$tiny" --seq-len 12000000 --batch-size 1 --backend cpu --threads 2)
"$q" train --plan "${huge[@]}" >"$tmp/huge.out" 2>&1 || fail "--plan of the huge run: $(tail -2 "$tmp/huge.out")"
need=$(sed -n 's/^plan_total_bytes=//p' "$tmp/huge.out")
avail=$(awk '/^MemAvailable:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo 2>/dev/null)
if [ -z "$avail" ]; then
    echo "no MemAvailable in /proc/meminfo: the refusal is not tested"
elif awk -v n="$need" -v a="$avail" 'BEGIN { exit !(n <= a) }'; then
    echo "this machine has $avail bytes available, more than the huge plan's $need: the refusal is not tested"
else
    grep -q '^plan_fits=no$' "$tmp/huge.out" && grep -q '^fits: no: .*try --grad-checkpoint' "$tmp/huge.out" \
        || fail "--plan of the huge run does not say it will not fit: $(grep fits "$tmp/huge.out")"
    t0=$(date +%s)
    "$q" train "${huge[@]}" --data "$tmp/no-such-data.jsonl" --out "$tmp/refused" >"$tmp/ref.out" 2>"$tmp/ref.err"; rc=$?
    [ $rc -eq 1 ] || fail "the huge run: exit $rc, expected 1: $(cat "$tmp/ref.err")"
    msg=$(cat "$tmp/ref.err")
    for w in "this run needs" "MB of memory" "MB are available" "the largest parts: " "block activations, every layer (" \
             "LoRA dropout inputs (" "gradient scratch (" "--grad-checkpoint" "--seq-len or --batch-size" "--dropout 0"; do
        case $msg in *"$w"*) ;; *) fail "the refusal does not say '$w': $msg" ;; esac
    done
    case $msg in *no-such-data*) fail "the huge run read its data before refusing: $msg" ;; esac
    [ $(( $(date +%s) - t0 )) -le 20 ] || fail "the refusal took more than 20 s (did it allocate?)"
    # the same run told to go ahead gets as far as its (missing) data: the plan was what stopped it
    "$q" train "${huge[@]}" --data "$tmp/no-such-data.jsonl" --out "$tmp/refused" --no-memory-check >"$tmp/go.out" 2>"$tmp/go.err"
    grep -q "no-such-data" "$tmp/go.err" || fail "--no-memory-check did not reach the data: $(cat "$tmp/go.err")"
fi

[ $fails -eq 0 ] && echo "test_train_plan: passed" || echo "test_train_plan: $fails failure(s)"
[ $fails -eq 0 ]
