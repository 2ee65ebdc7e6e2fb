#!/usr/bin/env bash
# test_infer_choices.sh QLORA SOURCE_DIR: the chat template an adapter was
# trained in (training_record.json) is what infer, --requests and chat render its
# prompts with by default, a --chat-template given by hand wins with a warning, and
# `none` keeps the raw prompt; `--n N` / "n" give N answers, answer k being the
# single answer with --seed + k (checked against runs of one answer each).
q=$1; src=$2
source "$src/tests/store_lib.sh"
export LC_ALL=C
# support: messages data trained in chatml (the record says so); pirate: prompt/completion (no template)
"$q" train --base "$model" --data "$src/datasets/samples/support.jsonl" --out "$tmp/store/support" --max-steps 8 \
    --batch-size 2 --seq-len 160 --rank 4 --alpha 8 --lr 1e-2 --threads 2 --chat-template chatml 2>"$tmp/train.log" \
    || fail "training support failed: $(tail -2 "$tmp/train.log")"
store_train pirate
grep -q '"chat_template": "chatml"' "$tmp/store/support/training_record.json" || fail "the record lacks the chatml template"
grep -q '"chat_template": null' "$tmp/store/pirate/training_record.json" || fail "pirate's record names a template"
g=(--base "$model" --max-tokens 8 --temperature 0 --threads 2)
p="Where is my order?"

# 1. infer --prompt: the adapter's recorded template by default
"$q" infer "${g[@]}" --adapter "$tmp/store/support" --prompt "$p" >"$tmp/auto.txt" 2>"$tmp/auto.log" || fail "infer (default) failed: $(tail -2 "$tmp/auto.log")"
grep -q "the prompt is a user turn in its chat template chatml" "$tmp/auto.log" || fail "infer does not say it used the recorded template"
"$q" infer "${g[@]}" --adapter "$tmp/store/support" --chat-template chatml --prompt "$p" >"$tmp/chatml.txt" 2>/dev/null || fail "infer --chat-template chatml failed"
cmp -s "$tmp/auto.txt" "$tmp/chatml.txt" || fail "default '$(cat "$tmp/auto.txt")' is not the chatml rendering '$(cat "$tmp/chatml.txt")'"
"$q" infer "${g[@]}" --adapter "$tmp/store/support" --chat-template llama2 --prompt "$p" >/dev/null 2>"$tmp/given.log" || fail "infer --chat-template llama2 failed"
grep -q "was trained in the chatml chat template; its prompt is rendered in --chat-template llama2 as asked" "$tmp/given.log" \
    || fail "no warning for a --chat-template that differs from the recorded one: $(tail -2 "$tmp/given.log")"
"$q" infer "${g[@]}" --adapter "$tmp/store/support" --chat-template none --prompt "$p" >/dev/null 2>"$tmp/none.log" || fail "--chat-template none failed"
grep -q "user turn" "$tmp/none.log" && fail "--chat-template none still rendered a template"
"$q" infer "${g[@]}" --adapter "$tmp/store/pirate" --prompt "$p" >/dev/null 2>"$tmp/pirate.log" || fail "pirate infer failed"
grep -q "user turn" "$tmp/pirate.log" && fail "an adapter without a recorded template got one"
# fan-out: each column in its own adapter's template (support as above, pirate raw)
"$q" infer "${g[@]}" --adapter-dir "$tmp/store" --adapters support,pirate --format json --prompt "$p" >"$tmp/fan.json" 2>"$tmp/fan.log" \
    || fail "fan-out failed: $(tail -2 "$tmp/fan.log")"
"$q" infer "${g[@]}" --adapter "$tmp/store/pirate" --prompt "$p" >"$tmp/pirate.txt" 2>/dev/null
if command -v jq >/dev/null; then
    [ "$(jq -r '.results[0].text' "$tmp/fan.json")" = "$(cat "$tmp/auto.txt")" ] || fail "fan-out support column differs from its single run"
    [ "$(jq -r '.results[1].text' "$tmp/fan.json")" = "$(cat "$tmp/pirate.txt")" ] || fail "fan-out pirate column differs from its single run"
fi

# 2. --requests "messages": the adapter's recorded template, unless --chat-template
echo "{\"id\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"$p\"}], \"adapter\": \"support\", \"max_tokens\": 8, \"temperature\": 0}" >"$tmp/req.jsonl"
"$q" infer --base "$model" --threads 2 --adapter-dir "$tmp/store" --requests "$tmp/req.jsonl" >"$tmp/req_auto.jsonl" 2>/dev/null || fail "requests failed"
"$q" infer --base "$model" --threads 2 --adapter-dir "$tmp/store" --requests "$tmp/req.jsonl" --chat-template chatml >"$tmp/req_chatml.jsonl" 2>/dev/null || fail "requests --chat-template chatml failed"
cmp -s "$tmp/req_auto.jsonl" "$tmp/req_chatml.jsonl" || fail "requests: default $(cat "$tmp/req_auto.jsonl") is not chatml $(cat "$tmp/req_chatml.jsonl")"
"$q" infer --base "$model" --threads 2 --adapter-dir "$tmp/store" --requests "$tmp/req.jsonl" --chat-template llama2 >/dev/null 2>"$tmp/req_given.log" || fail "requests --chat-template llama2 failed"
grep -q "adapter support was trained in the chatml chat template" "$tmp/req_given.log" || fail "requests: no warning for an overridden template"
# the same rendering as the prompt: the single-turn answer equals infer's
if command -v jq >/dev/null; then
    [ "$(jq -r .text "$tmp/req_auto.jsonl")" = "$(cat "$tmp/auto.txt")" ] || fail "requests messages answer differs from infer's templated prompt"
fi

# 3. chat: the answering adapter's template; greedy answers equal infer's
printf '%s\n' "$p" | "$q" chat --base "$model" --adapter-dir "$tmp/store" --adapter support --max-tokens 8 --temperature 0 \
    --threads 2 >"$tmp/chat.txt" 2>"$tmp/chat.log" || fail "chat failed: $(tail -2 "$tmp/chat.log")"
[ "$(cat "$tmp/chat.txt")" = "support> $(cat "$tmp/auto.txt")" ] || fail "chat '$(cat "$tmp/chat.txt")' vs infer 'support> $(cat "$tmp/auto.txt")'"
printf '%s\n' "$p" | "$q" chat --base "$model" --adapter-dir "$tmp/store" --adapter support --chat-template llama2 --max-tokens 8 \
    --temperature 0 --threads 2 >/dev/null 2>"$tmp/chat2.log" || fail "chat --chat-template llama2 failed"
grep -q "adapter support was trained in the chatml chat template; answering in --chat-template llama2" "$tmp/chat2.log" \
    || fail "chat: no warning for an overridden template"

# 3b. eval on messages data: each adapter in its own template, in one command
head -6 "$src/datasets/samples/support.jsonl" >"$tmp/held.jsonl"
e=(--base "$model" --threads 2 --data "$tmp/held.jsonl")
"$q" eval "${e[@]}" --adapter-dir "$tmp/store" --adapters support,pirate >"$tmp/ev.txt" 2>"$tmp/ev.log" || fail "eval failed: $(tail -2 "$tmp/ev.log")"
"$q" eval "${e[@]}" --adapter "$tmp/store/support" --chat-template chatml >"$tmp/ev_s.txt" 2>/dev/null || fail "eval support chatml failed"
"$q" eval "${e[@]}" --adapter "$tmp/store/pirate" --chat-template llama2 >"$tmp/ev_p.txt" 2>/dev/null || fail "eval pirate llama2 failed"
"$q" eval "${e[@]}" --adapter "$tmp/store/support" --chat-template llama2 >"$tmp/ev_s2.txt" 2>"$tmp/ev_s2.log" || fail "eval support llama2 failed"
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" | head -1; }
[ "$(grep '^adapter=support ' "$tmp/ev.txt" | field loss)" = "$(grep '^adapter=support ' "$tmp/ev_s.txt" | field loss)" ] \
    || fail "eval: support not scored in its chatml template: $(cat "$tmp/ev.txt") vs $(cat "$tmp/ev_s.txt")"
[ "$(grep '^adapter=pirate ' "$tmp/ev.txt" | field tokens)" = "$(grep '^adapter=pirate ' "$tmp/ev_p.txt" | field tokens)" ] \
    || fail "eval: pirate (no recorded template) not scored in the default llama2"
[ "$(grep '^adapter=support ' "$tmp/ev_s.txt" | field tokens)" != "$(grep '^adapter=support ' "$tmp/ev_s2.txt" | field tokens)" ] \
    || fail "eval: chatml and llama2 score the same tokens: the template checks above prove nothing"
grep -q "adapter support was trained in the chatml chat template; it is scored in --chat-template llama2 as asked" "$tmp/ev_s2.log" \
    || fail "eval: no warning for an overridden template"

# 4. --n: answer k is the single answer with --seed + k
s=(--base "$model" --max-tokens 8 --temperature 1 --top-k 0 --top-p 1 --threads 2 --chat-template none)
"$q" infer "${s[@]}" --seed 5 --n 3 --format json --prompt "Once upon" >"$tmp/n3.json" 2>"$tmp/n3.log" || fail "--n 3 failed: $(tail -2 "$tmp/n3.log")"
"$q" infer "${s[@]}" --seed 5 --n 3 --prompt "Once upon" >"$tmp/n3.txt" 2>/dev/null || fail "--n 3 (text) failed"
for k in 0 1 2; do
    "$q" infer "${s[@]}" --seed $((5 + k)) --prompt "Once upon" >"$tmp/s$k.txt" 2>/dev/null || fail "--seed $((5 + k)) failed"
    grep -qF "=== base [$((k + 1))/3] ===" "$tmp/n3.txt" || fail "--n 3 text lacks the block of answer $((k + 1))"
    if command -v jq >/dev/null; then
        [ "$(jq -r ".results[$k].text" "$tmp/n3.json")" = "$(cat "$tmp/s$k.txt")" ] \
            || fail "--n 3 answer $k '$(jq -r ".results[$k].text" "$tmp/n3.json")' is not --seed $((5 + k))'s '$(cat "$tmp/s$k.txt")'"
        [ "$(jq -r ".results[$k].index" "$tmp/n3.json")" = "$k" ] || fail "--n 3 answer $k has no index $k"
    fi
done
cmp -s "$tmp/s0.txt" "$tmp/s1.txt" && cmp -s "$tmp/s1.txt" "$tmp/s2.txt" && fail "three seeds gave one answer: the check above proves nothing"
# requests "n": the same
echo '{"id": "a", "prompt": "Once upon", "max_tokens": 8, "temperature": 1, "top_k": 0, "top_p": 1, "seed": 5, "n": 3}' >"$tmp/rn.jsonl"
"$q" infer --base "$model" --threads 2 --requests "$tmp/rn.jsonl" >"$tmp/rn.out" 2>"$tmp/rn.log" || fail "requests n failed: $(tail -2 "$tmp/rn.log")"
if command -v jq >/dev/null; then
    [ "$(jq '.choices | length' "$tmp/rn.out")" = 3 ] || fail "requests n: $(cat "$tmp/rn.out")"
    for k in 0 1 2; do
        [ "$(jq -r ".choices[$k].text" "$tmp/rn.out")" = "$(cat "$tmp/s$k.txt")" ] || fail "requests n: choice $k differs from --seed $((5 + k))"
    done
fi
echo '{"prompt": "x", "n": 17}' >"$tmp/rbad.jsonl"
"$q" infer --base "$model" --threads 2 --requests "$tmp/rbad.jsonl" >"$tmp/rbad.out" 2>/dev/null
grep -q "field 'n'" "$tmp/rbad.out" || fail "requests n 17: $(cat "$tmp/rbad.out")"
"$q" infer --base "$model" --n 0 --prompt x 2>"$tmp/n0.log"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--n: expected 1 to 16, found 0" "$tmp/n0.log" || fail "--n 0: exit $rc, $(cat "$tmp/n0.log")"
# chat --n: N answers, /pick keeps one
printf 'Hello\n/pick 2\n' | "$q" chat --base "$model" --n 2 --max-tokens 6 --temperature 1 --top-k 0 --top-p 1 --seed 5 --threads 2 \
    >"$tmp/cn.txt" 2>"$tmp/cn.log" || fail "chat --n 2 failed: $(tail -2 "$tmp/cn.log")"
grep -q "^base \[1/2\]> " "$tmp/cn.txt" && grep -q "^base \[2/2\]> " "$tmp/cn.txt" && grep -q "^(kept answer 2)" "$tmp/cn.txt" \
    || fail "chat --n 2: $(cat "$tmp/cn.txt")"

[ $fails -eq 0 ] && echo "test_infer_choices: all passed"
[ $fails -eq 0 ]
