#!/usr/bin/env bash
# test_eval_ref.sh QLORA SOURCE_DIR: `qlora eval` against an independent float64
# reference. tests/fixtures/eval/expected.txt (tests/reference/make_eval_fixture.py:
# its own rendering of each format from docs/datasets.md, spm_encode, llama_ref.py)
# holds the mean NLL over trained tokens of each data file of tests/fixtures/eval
# (text, prompt/completion, messages, alpaca, sharegpt, plain text; cut by
# --seq-len; --train-on-inputs) for tiny_gqa with f32 and NF4 linears, alone and
# with the fixture adapters (one at half scale). Every case must agree in tokens
# and samples exactly and in loss within RTOL.
#
# RTOL 1e-5, and why: the same losses computed in float32 by PyTorch differ from
# float64 by at most 1.5e-7 relative (make_eval_fixture.py --check), and eval
# prints 6 decimals (8e-8 relative at a loss of 6.4); 1e-5 leaves room for other
# fp32 summation orders. A real mistake is far larger: one token in 94 scored
# wrongly, or a missing EOS, moves these losses by about 1e-2.
q=$1; src=$2
RTOL=1e-5
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
fix=$src/tests/fixtures
exp=$fix/eval/expected.txt
model=$fix/models/tiny_gqa
ad=$fix/adapters
tmp=$(mktemp -d /tmp/qlora_evalref_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
[ -s "$exp" ] || { echo "FAIL: $exp is missing"; exit 1; }

# val LINE KEY: the value of KEY=... in a line of key=value fields
val() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

ncase=0
# one group per (data, seq_len, train_on_inputs, base_dtype): two runs of eval
grep -v '^#' "$exp" | awk '{print $1, $2, $3, $4}' | sort -u >"$tmp/groups"
while read -r gdata gseq gtio gdt; do
    data=${gdata#data=}; seq=${gseq#seq_len=}; tio=${gtio#train_on_inputs=}; dt=${gdt#base_dtype=}
    opts=(--base "$model" --base-dtype "$dt" --data "$fix/eval/$data" --seq-len "$seq" --threads 2)
    [ "$tio" = 1 ] && opts+=(--train-on-inputs)
    out=$tmp/out.txt
    : >"$out"
    "$q" eval "${opts[@]}" --with-base --adapters "$ad/tiny_gqa_bf16_r2,$ad/tiny_gqa_f32_rslora" >>"$out" 2>"$tmp/err" \
        || fail "$data $dt seq_len $seq tio $tio: eval exited $?: $(cat "$tmp/err")"
    "$q" eval "${opts[@]}" --adapters "$ad/tiny_gqa_f32_rslora:0.5" >>"$out" 2>"$tmp/err" \
        || fail "$data $dt seq_len $seq tio $tio: eval at scale 0.5 exited $?: $(cat "$tmp/err")"
    grep -F "$gdata $gseq $gtio $gdt " "$exp" >"$tmp/cases"
    while read -r line; do
        name=$(val "$line" adapter); scale=$(val "$line" scale)
        got=$(grep -E "^adapter=$name scale=$scale " "$out" | head -1)
        ncase=$((ncase + 1))
        if [ -z "$got" ]; then fail "$line: no 'adapter=$name scale=$scale' line in: $(cat "$out")"; continue; fi
        for k in tokens samples; do
            [ "$(val "$got" $k)" = "$(val "$line" $k)" ] || fail "$line: $k=$(val "$got" $k), expected $(val "$line" $k)"
        done
        awk -v a="$(val "$got" loss)" -v b="$(val "$line" loss)" -v r="$RTOL" \
            'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a == a + 0 && d <= r * b) }' \
            || fail "$line: loss=$(val "$got" loss), |d| > $RTOL relative"
    done <"$tmp/cases"
done <"$tmp/groups"

[ "$ncase" -ge 80 ] || fail "only $ncase cases read from $exp"
if [ $fails -gt 0 ]; then echo "$fails of $ncase checks failed"; exit 1; fi
echo "test_eval_ref: $ncase cases agree with the float64 reference (rtol $RTOL)"
