#!/usr/bin/env bash
# test_fanout_real.sh QLORA SOURCE_DIR MODELS: on the real stories260K model, two
# adapters trained by `qlora train` on different sample sets (a terse support
# agent, a Victorian letter writer) answer the same prompts, in one fan-out batch
# with the base, each in its own style: its answer uses words of its training
# completions (markers below, from datasets/samples), the base's uses neither
# set, and the three answers differ. Skips (77) without ../shared/models.
q=$1; src=$2; models=$3
base=$models/stories260K
[ -f "$base/model.safetensors" ] || { echo "skip: $base is absent"; exit 77; }
fails=0
tmp=$(mktemp -d /tmp/qlora_fanout_real_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
"$q" quantize --base "$base" --out "$tmp/base.qlb" 2>/dev/null || fail "quantize failed"
for d in support victorian; do
    "$q" train --base "$tmp/base.qlb" --data "$src/datasets/samples/$d.jsonl" --out "$tmp/store/$d" --max-steps 120 \
        --batch-size 4 --seq-len 128 --lr 2e-3 --rank 8 --alpha 16 --threads 2 2>"$tmp/train_$d.log" \
        || fail "training $d failed: $(tail -2 "$tmp/train_$d.log")"
done
# words of each set's completions that TinyStories does not use (matched whole, any case)
support='settings|billing|escalate|confirm|account|cancel|courier|download|restart|rejoin|update|email|refund|network|phone|wi-fi|screenshot|app'
victorian='madam|sir|honour|propriety|humble|servant|indulgence|gratitude|assure|pray|warmest|beg'
block() { awk -v h="$2" '$0 ~ "^=== " {on = index($0, "=== " h " ") == 1; next} on && NF {print}' "$1"; }
n=0
for p in "The printer will not connect." "Thank a friend for a gift."; do
    n=$((n + 1))
    "$q" infer --base "$tmp/base.qlb" --adapter-dir "$tmp/store" --with-base --chat-template llama2 --prompt "$p" \
        --temperature 0 --max-tokens 32 --threads 2 >"$tmp/fan$n.txt" 2>"$tmp/fan$n.log" || fail "fan-out failed: $(tail -2 "$tmp/fan$n.log")"
    grep -q "3 sequences in one batch" "$tmp/fan$n.log" || fail "'$p': not one batch of 3"
    b=$(block "$tmp/fan$n.txt" base); s=$(block "$tmp/fan$n.txt" support); v=$(block "$tmp/fan$n.txt" victorian)
    echo "'$p'"; echo "  base:      $b"; echo "  support:   $s"; echo "  victorian: $v"
    echo "$s" | grep -Eiqw "$support" || fail "'$p': the support answer has no support words: $s"
    echo "$v" | grep -Eiqw "$victorian" || fail "'$p': the victorian answer has no Victorian words: $v"
    echo "$b" | grep -Eiqw "$support|$victorian" && fail "'$p': the base answer has adapter words: $b"
    [ "$s" != "$v" ] && [ "$s" != "$b" ] && [ "$v" != "$b" ] || fail "'$p': the answers are not all different"
done
[ $fails = 0 ] && echo "test_fanout_real: passed" || echo "test_fanout_real: $fails failures"
[ $fails = 0 ]
