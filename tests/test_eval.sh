#!/usr/bin/env bash
# test_eval.sh QLORA SOURCE_DIR: qlora eval with several adapters, its output
# lines, and its errors. (The numbers themselves: test_eval_ref.sh.)
#  - several adapters scored side by side give each adapter's loss alone: 18 of
#    them (two passes of at most 16 KV slots), copies of two fixture adapters
#    at two scales, against one run per adapter;
#  - the output format: one adapter=... line each, in the order given; one model
#    scored: the last line is loss= ppl= tokens=, equal to its adapter line;
#    a name with a space is JSON-quoted;
#  - --seq-len cuts and says how many; --chat-template changes what a chat line
#    scores; --train-on-inputs scores more tokens;
#  - errors: a bad JSONL line (file:line:column), an unknown adapter (named; the
#    others still scored; exit 1), usage errors (exit 2).
q=$1; src=$2
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
fix=$src/tests/fixtures
model=$fix/models/tiny_gqa
ad=$fix/adapters
data=$fix/eval/messages.jsonl
tmp=$(mktemp -d /tmp/qlora_eval_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
ev() { "$q" eval --base "$model" --threads 2 "$@"; }
val() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# close A B: |A - B| <= 2e-6. Side by side, the base's matmuls run over more rows,
# which may sum in another order (fp32, ~1e-7 relative), and the 6 printed
# decimals round (5e-7); a row that met another adapter's LoRA moves the loss by
# about 0.05 here.
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 2e-6) }'; }

# --- one run per adapter, then 18 side by side (scales 1 and 0.5)
mkdir "$tmp/store"
for i in $(seq 1 18); do
    src_ad=tiny_gqa_bf16_r2; [ $((i % 2)) = 1 ] && src_ad=tiny_gqa_f32_rslora
    cp -r "$ad/$src_ad" "$tmp/store/a$i"
done
declare -A single
for a in tiny_gqa_bf16_r2 tiny_gqa_f32_rslora; do
    for s in 1 0.5; do
        ev --data "$data" --adapters "$ad/$a:$s" >"$tmp/one" 2>"$tmp/err" || fail "eval --adapters $a:$s: $(cat "$tmp/err")"
        single[${a}_$s]=$(val "$(head -1 "$tmp/one")" loss)
    done
done
list=""
for i in $(seq 1 18); do s=1; [ $((i % 4)) -ge 2 ] && s=0.5; list="$list${list:+,}a$i:$s"; done
ev --data "$data" --adapter-dir "$tmp/store" --adapters "$list" --with-base >"$tmp/many" 2>"$tmp/err" \
    || fail "eval of 18 adapters: $(cat "$tmp/err")"
[ "$(wc -l <"$tmp/many")" = 19 ] || fail "18 adapters and the base: $(wc -l <"$tmp/many") lines, expected 19"
base=$(ev --data "$data" 2>/dev/null | tail -1)
close "$(val "$(head -1 "$tmp/many")" loss)" "$(val "$base" loss)" || fail "--with-base: $(head -1 "$tmp/many") vs $base"
head -1 "$tmp/many" | grep -q '^adapter=base scale=0 ' || fail "--with-base: the base's line is not first: $(head -1 "$tmp/many")"
for i in $(seq 1 18); do
    s=1; [ $((i % 4)) -ge 2 ] && s=0.5
    a=tiny_gqa_bf16_r2; [ $((i % 2)) = 1 ] && a=tiny_gqa_f32_rslora
    line=$(sed -n "$((i + 1))p" "$tmp/many")
    [ "$(val "$line" adapter) $(val "$line" scale)" = "a$i $s" ] || fail "line $((i + 1)) is not a$i at $s: $line"
    close "$(val "$line" loss)" "${single[${a}_$s]}" || fail "a$i ($a at $s) side by side: $line; alone: ${single[${a}_$s]}"
done
# the two adapters and two scales differ from each other and from the base
n_distinct=$(printf '%s\n' "${single[@]}" "$(val "$base" loss)" | sort -u | wc -l)
[ "$n_distinct" = 5 ] || fail "expected 5 different losses (base, 2 adapters x 2 scales): ${single[*]} $(val "$base" loss)"

# --- one model scored: its line, then loss= ppl= tokens= with the same numbers
ev --data "$data" --adapter "$ad/tiny_gqa_bf16_r2/" >"$tmp/one" 2>"$tmp/err" || fail "eval --adapter: $(cat "$tmp/err")"
[ "$(wc -l <"$tmp/one")" = 2 ] || fail "eval --adapter: $(cat "$tmp/one")"
l1=$(head -1 "$tmp/one"); l2=$(tail -1 "$tmp/one")
printf '%s\n' "$l1" | grep -Eq '^adapter=tiny_gqa_bf16_r2 scale=1 loss=[0-9]+\.[0-9]{6} ppl=[0-9]+\.[0-9]{6} tokens=[0-9]+ samples=2$' \
    || fail "eval --adapter, first line: $l1"
printf '%s\n' "$l2" | grep -Eq '^loss=[0-9.]+ ppl=[0-9.]+ tokens=[0-9]+$' || fail "eval --adapter, last line: $l2"
[ "${l1#*scale=1 }" = "$l2 samples=2" ] || fail "eval --adapter: the last line differs from the adapter's: $l1 / $l2"
close "$(val "$l2" loss)" "${single[tiny_gqa_bf16_r2_1]}" || fail "--adapter vs --adapters: $l2 vs ${single[tiny_gqa_bf16_r2_1]}"
[ "$(ev --data "$data" 2>/dev/null | wc -l)" = 1 ] || fail "eval of the base alone prints more than one line"
# a name with a space is quoted, so a line always splits into key=value fields
mkdir "$tmp/s2" && cp -r "$ad/tiny_gqa_bf16_r2" "$tmp/s2/my adapter"
ev --data "$data" --adapter-dir "$tmp/s2" >"$tmp/q" 2>"$tmp/err" || fail "eval of 'my adapter': $(cat "$tmp/err")"
head -1 "$tmp/q" | grep -q '^adapter="my adapter" scale=1 loss=' || fail "a name with a space: $(head -1 "$tmp/q")"

# --- --seq-len, --chat-template, --train-on-inputs
ev --data "$fix/eval/text.jsonl" --seq-len 8 >"$tmp/cut" 2>"$tmp/err" || fail "--seq-len 8: $(cat "$tmp/err")"
grep -q "3 of 3 samples of .*text.jsonl are longer than 8 tokens" "$tmp/err" || fail "--seq-len 8: no warning: $(cat "$tmp/err")"
[ "$(val "$(tail -1 "$tmp/cut")" tokens)" = 21 ] || fail "--seq-len 8: 3 samples of 7 targets, found $(tail -1 "$tmp/cut")"
ev --data "$fix/eval/text.jsonl" >/dev/null 2>"$tmp/err"; grep -q "were cut" "$tmp/err" && fail "a cut without --seq-len: $(cat "$tmp/err")"
t_llama2=$(ev --data "$data" 2>/dev/null | tail -1)
t_chatml=$(ev --data "$data" --chat-template chatml 2>/dev/null | tail -1)
[ "$(val "$t_llama2" tokens)" != "$(val "$t_chatml" tokens)" ] || fail "--chat-template chatml scores what llama2 does: $t_chatml"
t_tio=$(ev --data "$data" --train-on-inputs 2>/dev/null | tail -1)
[ "$(val "$t_tio" tokens)" -gt "$(val "$t_llama2" tokens)" ] || fail "--train-on-inputs: $t_tio vs $t_llama2"

# --- errors
expect() {  # expect CODE PATTERN -- args of eval...
    local code=$1 pat=$2; shift 3
    ev "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    [ $rc -eq "$code" ] || fail "eval $*: exited $rc, expected $code ($(head -c 300 "$tmp/err"))"
    grep -q -- "$pat" "$tmp/err" || fail "eval $*: stderr lacks '$pat': $(head -c 300 "$tmp/err")"
}
printf '{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 5}\n' >"$tmp/bad.jsonl"
expect 1 'bad.jsonl:2:31: field "completion": expected a string, found a number' -- --data "$tmp/bad.jsonl"
printf '{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}\n' >"$tmp/role.jsonl"
expect 1 'role.jsonl:1:' -- --data "$tmp/role.jsonl"
expect 1 "adapter 'nope'" -- --data "$data" --adapter-dir "$tmp/store" --adapters a1,nope
grep -q "^adapter=a1 " "$tmp/out" || fail "a bad adapter took down the good one: $(cat "$tmp/out")"
grep -q "1 of 2 adapters were not loaded" "$tmp/err" || fail "unknown adapter: $(cat "$tmp/err")"
expect 1 "$tmp/none" -- --data "$data" --adapters "$tmp/none"
expect 1 "no such adapter directory" -- --data "$data" --adapter "$tmp/none"
expect 2 "not an adapter name" -- --data "$data" --adapter-dir "$tmp/store" --adapters ../a1
mkdir "$tmp/s3" && cp -r "$ad/tiny_gqa_bf16_r2" "$tmp/s3/base"
expect 2 "an adapter is called 'base'" -- --data "$data" --with-base --adapters "$tmp/s3/base"
expect 2 "--adapter is one adapter" -- --data "$data" --adapter "$ad/tiny_gqa_bf16_r2" --adapters "$ad/tiny_gqa_f32_rslora"
expect 2 "max_position_embeddings is 256" -- --data "$data" --seq-len 257
expect 2 "expected 0 (max_position_embeddings) or at least 2, found 1" -- --data "$data" --seq-len 1
expect 2 "llama2" -- --data "$data" --chat-template jinja
expect 1 "cannot open" -- --data "$tmp/none.jsonl"

# --help says what a line holds
"$q" eval --help 2>"$tmp/h"
grep -q "adapter=NAME scale=<f> loss=<f> ppl=<f> tokens=<n> samples=<n>" "$tmp/h" || fail "eval --help lacks the line format"

if [ $fails -gt 0 ]; then echo "$fails checks failed"; exit 1; fi
echo "test_eval: passed"
