#!/usr/bin/env bash
# test_fanout.sh QLORA SOURCE_DIR: qlora infer's fan-out mode on the project's tiny
# model: two adapters trained on different sample sets and the base answer one
# prompt in one batch, and each answer equals the same request run alone
# (greedy); scale 0 equals the base; a broken adapter in the store is reported
# and the others still answer; Ctrl-C prints what was generated and exits 130;
# bad options fail cleanly.
q=$1; src=$2
source "$src/tests/store_lib.sh"
store_train pirate support
gen=(--base "$model" --prompt "Tell me about the sea" --max-tokens 12 --temperature 0 --ignore-eos --threads 2)
# the block of one name in fan-out text output
block() { awk -v h="$2" '$0 ~ "^=== " {on = index($0, "=== " h " ") == 1; next} on && NF {print}' "$1"; }

"$q" infer "${gen[@]}" --adapter-dir "$tmp/store" --with-base >"$tmp/fan.txt" 2>"$tmp/fan.log" \
    || fail "fan-out failed: $(tail -2 "$tmp/fan.log")"
grep -q "3 sequences in one batch" "$tmp/fan.log" || fail "fan-out did not run one batch of 3"
[ "$(grep -c '^=== ' "$tmp/fan.txt")" = 3 ] || fail "expected 3 blocks: $(grep '^===' "$tmp/fan.txt" | tr '\n' ' ')"
[ "$(grep '^=== ' "$tmp/fan.txt" | cut -d' ' -f2 | tr '\n' ' ')" = "base pirate support " ] || fail "blocks not in base, name order"
"$q" infer "${gen[@]}" >"$tmp/solo_base.txt" 2>/dev/null || fail "solo base failed"
[ "$(block "$tmp/fan.txt" base)" = "$(grep . "$tmp/solo_base.txt")" ] || fail "base in the batch differs from the base alone"
for d in pirate support; do
    "$q" infer "${gen[@]}" --adapter "$tmp/store/$d" >"$tmp/solo_$d.txt" 2>/dev/null || fail "solo $d failed"
    [ -n "$(block "$tmp/fan.txt" "$d")" ] || fail "$d: empty answer"
    [ "$(block "$tmp/fan.txt" "$d")" = "$(grep . "$tmp/solo_$d.txt")" ] || fail "$d in the batch differs from $d alone"
done
[ "$(block "$tmp/fan.txt" pirate)" != "$(block "$tmp/fan.txt" base)" ] || fail "the pirate adapter did not change the answer"
# scale 0 is the base; a path works as a name
"$q" infer "${gen[@]}" --adapters "$tmp/store/pirate:0" >"$tmp/zero.txt" 2>/dev/null || fail "scale 0 run failed"
[ "$(block "$tmp/zero.txt" pirate)" = "$(block "$tmp/fan.txt" base)" ] || fail "pirate:0 differs from the base"
# JSON output
"$q" infer "${gen[@]}" --adapter-dir "$tmp/store" --adapters support --format json >"$tmp/fan.json" 2>/dev/null || fail "json run failed"
grep -q '"adapter": "support", "scale": 1, "text": ' "$tmp/fan.json" || fail "json result missing: $(cat "$tmp/fan.json")"
grep -q '"finish_reason": "length"' "$tmp/fan.json" || fail "json finish_reason missing"
# Ctrl-C (a SIGINT before the 4th decoding step): exit 130, every block printed,
# each answer a prefix of the uninterrupted one; in JSON, finish_reason "cancelled"
QLORA_CRASH_AT=decode:4 QLORA_CRASH_SIGNAL=INT "$q" infer "${gen[@]}" --adapter-dir "$tmp/store" --with-base \
    >"$tmp/int.txt" 2>"$tmp/int.log"
rc=$?
[ $rc -eq 130 ] || fail "Ctrl-C: exit $rc, expected 130: $(tail -2 "$tmp/int.log")"
grep -q "interrupted: the output holds what was generated" "$tmp/int.log" || fail "Ctrl-C: not said"
[ "$(grep '^=== ' "$tmp/int.txt" | cut -d' ' -f2 | tr '\n' ' ')" = "base pirate support " ] || fail "Ctrl-C: blocks missing"
for d in base pirate support; do
    part=$(block "$tmp/int.txt" "$d"); full=$(block "$tmp/fan.txt" "$d")
    [ -n "$part" ] && [ "$part" != "$full" ] && [ "${full#"$part"}" != "$full" ] || fail "Ctrl-C: $d's '$part' is not a proper prefix of '$full'"
done
QLORA_CRASH_AT=decode:4 QLORA_CRASH_SIGNAL=INT "$q" infer "${gen[@]}" --adapter-dir "$tmp/store" --format json \
    >"$tmp/int.json" 2>/dev/null
[ $? -eq 130 ] && grep -q '"finish_reason": "cancelled"' "$tmp/int.json" || fail "Ctrl-C, json: $(cat "$tmp/int.json")"
# a broken adapter: reported, the others answer, exit non-zero
mkdir -p "$tmp/store/broken" && echo '{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": true}' >"$tmp/store/broken/adapter_config.json"
"$q" infer "${gen[@]}" --adapter-dir "$tmp/store" >"$tmp/bad.txt" 2>"$tmp/bad.log" && fail "a broken adapter in the store exited 0"
grep -q "=== broken: not loaded ===" "$tmp/bad.txt" || fail "no block for the broken adapter"
grep -qi "dora" "$tmp/bad.txt" || fail "the broken adapter's reason is not given: $(cat "$tmp/bad.txt")"
[ "$(block "$tmp/bad.txt" pirate)" = "$(block "$tmp/fan.txt" pirate)" ] || fail "pirate's answer changed beside a broken adapter"
# bad options
"$q" infer "${gen[@]}" --adapter-dir "$tmp/store" --adapters pirate:abc >/dev/null 2>"$tmp/e1.log"; [ $? = 2 ] || fail "bad scale: want exit 2"
grep -q "expected name:scale" "$tmp/e1.log" || fail "bad scale message: $(cat "$tmp/e1.log")"
"$q" infer "${gen[@]}" --adapter-dir "$tmp/nowhere" >/dev/null 2>"$tmp/e2.log" && fail "missing --adapter-dir exited 0"
grep -q "nowhere" "$tmp/e2.log" || fail "missing --adapter-dir message: $(cat "$tmp/e2.log")"
"$q" infer "${gen[@]}" --adapter-dir "$tmp/store" --format xml >/dev/null 2>&1; [ $? = 2 ] || fail "bad --format: want exit 2"
[ $fails = 0 ] && echo "test_fanout: passed" || echo "test_fanout: $fails failures"
[ $fails = 0 ]
