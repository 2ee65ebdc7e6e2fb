#!/usr/bin/env bash
# test_cli.sh QLORA SOURCE_DIR MODELS_DIR: the command line as users meet it.
# Every check that fails prints why; the script exits 1 if any failed.
q=$1; src=$2
fails=0
tmp=$(mktemp -d /tmp/qlora_cli_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
model=$src/tests/fixtures/models/tiny_gqa

# --help lists every option with its default, for every command
"$q" --help >"$tmp/h" 2>&1 || fail "qlora --help exits non-zero"
for c in infer eval quantize bench; do
    grep -q "^  $c " "$tmp/h" || fail "qlora --help does not list $c"
    "$q" $c --help 2>"$tmp/ch" || fail "qlora $c --help exits non-zero"
    n_opt=$(grep -c '^  --' "$tmp/ch"); n_def=$(grep -c '(default: ' "$tmp/ch")
    [ "$n_opt" -ge 3 ] && [ "$n_def" -eq $((n_opt - 1)) ] || fail "qlora $c --help: $n_opt options but $n_def defaults"
done

# usage errors: exit 2 and a message naming the problem
expect() {  # expect CODE PATTERN -- command...
    local code=$1 pat=$2; shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    [ $rc -eq "$code" ] || fail "'$*' exited $rc, expected $code ($(head -c 300 "$tmp/err"))"
    grep -q -- "$pat" "$tmp/err" || fail "'$*': stderr lacks '$pat': $(head -c 300 "$tmp/err")"
}
expect 2 "unknown command" -- "$q" frobnicate
# a typo gets the nearest name; something far from every name gets none
expect 2 "unknown command 'trian' (did you mean 'train'?)" -- "$q" trian
"$q" frobnicate 2>&1 | grep -q "did you mean" && fail "frobnicate got a suggestion"
expect 2 "unknown option '--max-token' (did you mean --max-tokens?" -- "$q" infer --base "$model" --prompt x --max-token 5
expect 2 "unknown option '--adapterdir' (did you mean --adapter-dir?" -- "$q" chat --base "$model" --adapterdir x
"$q" infer --base "$model" --prompt x --zzzzzz 2>&1 | grep -q "did you mean" && fail "--zzzzzz got a suggestion"
# --version on the binary and on every command: version, commit, backends, SIMD, BLAS core
for c in "" train infer chat serve eval quantize bench; do
    "$q" $c --version >"$tmp/v" 2>&1 || fail "qlora $c --version exits non-zero"
    grep -Eq '^qlora [0-9]+\.[0-9]+\.[0-9]+ \(commit ([0-9a-f]{7,}|unknown)\)$' "$tmp/v" || fail "qlora $c --version: $(head -1 "$tmp/v")"
    grep -Eq '^backends: cpu \(SIMD (generic|avx2|avx512), sgemm by OpenBLAS [0-9.]+ core [A-Za-z0-9_]+\)' "$tmp/v" \
        || fail "qlora $c --version: $(tail -1 "$tmp/v")"
done
expect 2 "give --prompt or --requests" -- "$q" infer --base "$model"
expect 2 "unknown option '--nope'" -- "$q" infer --base "$model" --prompt x --nope
expect 2 "expected an integer, found 'ten'" -- "$q" infer --base "$model" --prompt x --max-tokens ten
expect 2 "expected nf4, f16 or f32, found 'q8'" -- "$q" infer --base "$model" --prompt x --base-dtype q8
expect 2 "expected auto, cpu, cuda or ref" -- "$q" infer --base "$model" --prompt x --backend tpu
expect 1 "no such model directory" -- "$q" infer --base "$tmp/none" --prompt x
expect 1 "cannot open" -- "$q" eval --base "$model" --data "$tmp/none.txt"
printf '{"text": "ok"}\n{"txt": 1}\n' >"$tmp/bad.jsonl"
expect 1 "bad.jsonl:2:1: unknown format" -- "$q" eval --base "$model" --data "$tmp/bad.jsonl"
printf '{"text": "ok"\n' >"$tmp/bad2.jsonl"
expect 1 "bad2.jsonl:1:14: invalid JSON" -- "$q" eval --base "$model" --data "$tmp/bad2.jsonl"

# infer: stdout carries only the generated text; greedy is deterministic; the
# base file gives the same text as quantizing on load
"$q" infer --base "$model" --prompt "The lighthouse" --temperature 0 --max-tokens 20 --ignore-eos >"$tmp/a" 2>"$tmp/a.err" || fail "infer failed: $(cat "$tmp/a.err")"
[ -s "$tmp/a" ] || fail "infer printed nothing on stdout"
grep -q '\[info\]' "$tmp/a" && fail "infer printed logs on stdout"
grep -q 'tok/s' "$tmp/a.err" || fail "infer printed no timings on stderr"
"$q" quantize --base "$model" --out "$tmp/m.qlb" 2>/dev/null || fail "quantize failed"
"$q" infer --base "$tmp/m.qlb" --prompt "The lighthouse" --temperature 0 --max-tokens 20 --ignore-eos >"$tmp/b" 2>/dev/null || fail "infer on the base file failed"
cmp -s "$tmp/a" "$tmp/b" || fail "greedy text differs between the model directory and its base file"
ls "$tmp"/m.qlb.tmp.* >/dev/null 2>&1 && fail "quantize left a temp file"
# a failed quantize leaves nothing behind
"$q" quantize --base "$tmp/none" --out "$tmp/x.qlb" 2>/dev/null && fail "quantize of a missing model succeeded"
[ -e "$tmp/x.qlb" ] && fail "failed quantize left an output file"
# sampling with the same seed repeats; another seed differs (on a 20-token sample of a random model)
"$q" infer --base "$tmp/m.qlb" --prompt "The" --seed 5 --max-tokens 20 --ignore-eos >"$tmp/s1" 2>/dev/null
"$q" infer --base "$tmp/m.qlb" --prompt "The" --seed 5 --max-tokens 20 --ignore-eos >"$tmp/s2" 2>/dev/null
cmp -s "$tmp/s1" "$tmp/s2" || fail "same seed gave different samples"

# eval: the last line is loss=<f> ppl=<f> tokens=<n>; a JSONL "text" line is scored as
# training renders it: the plain text line's tokens plus a trained EOS
printf 'the keeper lit the lamp\n\nwaves broke on the rocks\n' >"$tmp/e.txt"
printf '{"text": "the keeper lit the lamp"}\n{"text": "waves broke on the rocks"}\n' >"$tmp/e.jsonl"
"$q" eval --base "$model" --data "$tmp/e.txt" >"$tmp/e1" 2>/dev/null || fail "eval (text) failed"
"$q" eval --base "$model" --data "$tmp/e.jsonl" >"$tmp/e2" 2>/dev/null || fail "eval (jsonl) failed"
tail -1 "$tmp/e1" | grep -Eq '^loss=[0-9.]+ ppl=[0-9.]+ tokens=[0-9]+$' || fail "eval last line: $(tail -1 "$tmp/e1")"
[ "$(sed -n 's/.*tokens=//p' "$tmp/e2")" = $(( $(sed -n 's/.*tokens=//p' "$tmp/e1") + 2 )) ] \
    || fail "eval: JSONL text should score 2 more tokens (EOS) than plain text: $(cat "$tmp/e1") vs $(cat "$tmp/e2")"

# sampling penalties: out of range is refused by name; in range they run (greedy,
# a strong repetition penalty changes a tiny model's repetitive answer)
"$q" infer --base "$model" --prompt "The" --min-p 2 >/dev/null 2>"$tmp/pen.log"
[ $? = 2 ] && grep -q -- "--min-p: expected \[0, 1\]" "$tmp/pen.log" || fail "--min-p 2: $(cat "$tmp/pen.log")"
"$q" chat --base "$model" --repetition-penalty 0 </dev/null >/dev/null 2>"$tmp/pen.log"
[ $? = 2 ] && grep -q -- "--repetition-penalty: expected" "$tmp/pen.log" || fail "chat --repetition-penalty 0: $(cat "$tmp/pen.log")"
"$q" infer --base "$model" --prompt "The" --temperature 0 --max-tokens 24 --ignore-eos >"$tmp/g0" 2>/dev/null || fail "greedy run failed"
"$q" infer --base "$model" --prompt "The" --temperature 0 --max-tokens 24 --ignore-eos --repetition-penalty 5 \
    --frequency-penalty 1 --presence-penalty 1 --min-p 0.05 >"$tmp/g1" 2>/dev/null || fail "run with penalties failed"
cmp -s "$tmp/g0" "$tmp/g1" && fail "penalties changed nothing in a 24-token greedy answer: $(cat "$tmp/g0")"

# --backend: auto by default (the CPU here when no GPU is usable); cuda without a
# usable GPU fails in words and points at --backend cpu, whether CUDA is built or not
"$q" infer --base "$model" --prompt "The" --max-tokens 2 --verbose >/dev/null 2>"$tmp/auto.log" || fail "infer with the default backend failed"
grep -q "backend: cpu" "$tmp/auto.log" || fail "default backend: $(grep backend "$tmp/auto.log")"
"$q" infer --base "$model" --prompt "The" --max-tokens 2 --backend cuda >/dev/null 2>"$tmp/cuda.log"
rc=$?
if [ $rc -ne 0 ]; then  # no usable GPU (where there is one, the run succeeds)
    grep -q -- "--backend cpu runs on the CPU" "$tmp/cuda.log" || fail "--backend cuda without a GPU: $(cat "$tmp/cuda.log")"
    grep -qi "insufficient" "$tmp/cuda.log" && ! grep -q "driver is older" "$tmp/cuda.log" && fail "CUDA's jargon alone: $(cat "$tmp/cuda.log")"
fi

[ $fails -eq 0 ] && echo "test_cli: passed" || echo "test_cli: $fails failed checks"
[ $fails -eq 0 ]
