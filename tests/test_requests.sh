#!/usr/bin/env bash
# test_requests.sh QLORA SOURCE_DIR: qlora infer --requests on the project's tiny
# model with two trained adapters. One JSONL result per non-blank line, in input
# order, ids echoed; each result equals the same request run alone (batch of
# one) and, for a prompt, the plain `qlora infer` answer; a "messages" request
# equals its llama2 rendering sent as a prompt; stop strings, max_tokens 0 and
# seeds behave; an unknown field is a warning; "adapter": "name:scale" works; bad
# lines get error results naming file:line and the field while the rest run; --out is written atomically; bad options fail cleanly.
q=$1; src=$2
source "$src/tests/store_lib.sh"
store_train pirate support
run=(--base "$model" --adapter-dir "$tmp/store" --threads 2)
g='"max_tokens": 10, "temperature": 0'
cat >"$tmp/req.jsonl" <<EOF
{"id": 1, "prompt": "Tell me about the sea", "adapter": "pirate", $g}
{"id": "two", "prompt": "Tell me about the sea", $g}

{"id": 3, "messages": [{"role": "user", "content": "Where is my order?"}], "adapter": "support", $g}
{"id": 4, "prompt": "[INST] Where is my order? [/INST]", "adapter": "support", $g}
{"id": 5, "prompt": "Tell me about the sea", "adapter": "pirate", "max_tokens": 10, "temperature": 0.9, "seed": 7}
{"id": 6, "prompt": "Tell me about the sea", "adapter": "pirate", "max_tokens": 10, "temperature": 0.9, "seed": 7}
{"id": 7, "prompt": "Tell me about the sea", "adapter": "support", "max_tokens": 0}
{"id": 8, "prompt": "Tell me", "adapter": "nope", $g}
{"id": 9, "prompt": "Tell me", "max_tokns": 3}
{"id": 10, "prompt": "Tell me", "temperature": "hot"}
{"id": 11 "prompt": "Tell me"}
{"id": 12, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
{"id": 13, "adapter": "pirate"}
{"id": 14, "prompt": "Tell me about the sea", "adapter": "support", $g}
{"id": 15, "prompt": "Tell me about the sea", "adapter": "pirate:0", $g}
{"id": 16, "prompt": "Tell me", "adapter": "pirate:0.5", "scale": 1}
EOF
"$q" infer "${run[@]}" --requests "$tmp/req.jsonl" --batch 4 >"$tmp/out.jsonl" 2>"$tmp/log" && fail "failed lines but exit 0"
grep -q "6 requests failed" "$tmp/log" || fail "no summary of failures: $(tail -3 "$tmp/log")"
[ "$(wc -l <"$tmp/out.jsonl")" = 16 ] || fail "expected 16 results, got $(wc -l <"$tmp/out.jsonl")"
[ "$(sed 's/^{"id": \([^,]*\),.*/\1/' "$tmp/out.jsonl" | tr '\n' ' ')" = '1 "two" 3 4 5 6 7 8 9 10 null 12 13 14 15 16 ' ] \
    || fail "ids not in input order: $(cut -c1-16 "$tmp/out.jsonl" | tr '\n' ' ')"
res() { sed -n "$1p" "$tmp/out.jsonl"; }
text() { res "$1" | sed 's/.*"text": \(".*"\), "tokens".*/\1/'; }
# each good line alone (a batch of one) gives the same result
for i in 1 2 3 4 5 7 14; do
    grep -v '^$' "$tmp/req.jsonl" | sed -n "${i}p" >"$tmp/one.jsonl"
    "$q" infer "${run[@]}" --requests "$tmp/one.jsonl" >"$tmp/one.out" 2>/dev/null || fail "line $i alone failed"
    [ "$(cat "$tmp/one.out")" = "$(res "$i")" ] || fail "line $i: batched $(res "$i") vs alone $(cat "$tmp/one.out")"
done
# the plain command agrees with the JSON text (escape-free answers only; tiny_gqa's text is noise)
"$q" infer --base "$model" --adapter "$tmp/store/pirate" --prompt "Tell me about the sea" --max-tokens 10 \
    --temperature 0 --threads 2 >"$tmp/plain.txt" 2>/dev/null || fail "plain infer failed"
if ! text 1 | grep -q '\\'; then
    [ "\"$(head -c -1 "$tmp/plain.txt")\"" = "$(text 1)" ] || fail "plain infer '$(cat "$tmp/plain.txt")' vs $(text 1)"
fi
[ "$(text 1)" != "$(text 2)" ] || fail "the pirate adapter did not change the answer"
[ "$(text 3)" = "$(text 4)" ] || fail "messages vs its llama2 rendering: $(text 3) vs $(text 4)"
[ "$(text 5)" = "$(text 6)" ] || fail "the same seed gave different samples: $(text 5) vs $(text 6)"
res 7 | grep -q '"text": "", "tokens": 0, .*"finish_reason": "length"' || fail "max_tokens 0: $(res 7)"
res 1 | grep -q '"adapter": "pirate", "text": .*"tokens": 10, "prompt_tokens": [0-9]*, "finish_reason": "length"}' \
    || fail "result fields: $(res 1)"
res 2 | grep -q '"adapter": null' || fail "a base request's adapter is not null: $(res 2)"
# error results (file line = result line + 1 after the blank line)
want_err() { res "$1" | grep -q "\"error\": \".*$2.*\", \"finish_reason\": \"error\"" || fail "line $1: want error '$2': $(res "$1")"; }
want_err 8 "req.jsonl:9: adapter 'nope' not loaded: .*no such adapter directory"
# an unknown field is ignored with a warning that names it (once per name)
res 9 | grep -q '"finish_reason": "error"' && fail "line 9 (an unknown field) did not run: $(res 9)"
[ "$(grep -c 'req.jsonl:10: unknown field "max_tokns" ignored' "$tmp/log")" = 1 ] || fail "no single warning for max_tokns: $(grep -i unknown "$tmp/log")"
# "adapter": "name:scale" as --adapters takes it: pirate:0 is the base; a scale given twice must agree
[ "$(text 15)" = "$(text 2)" ] || fail "pirate:0 differs from the base: $(text 15) vs $(text 2)"
res 15 | grep -q '"adapter": "pirate"' || fail "line 15's adapter: $(res 15)"
want_err 16 "req.jsonl:17: the scale in 'adapter' (0.5) and the field 'scale' (1) disagree"
want_err 10 "req.jsonl:11: field 'temperature': expected a number"
want_err 11 'req.jsonl:12:11: invalid JSON: expected .,. or .}. after the value of key \\"id\\"'
want_err 12 "req.jsonl:13:[0-9]*: messages: the last message must be the user's turn"
want_err 13 'req.jsonl:14: expected one of \\"prompt\\" and \\"messages\\", found neither'
# a stop string (two ASCII characters of an answer): cut before it, finish "stop"
sreq='"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0'
echo "{$sreq}" >"$tmp/full.jsonl"
"$q" infer "${run[@]}" --requests "$tmp/full.jsonl" >"$tmp/full.out" 2>/dev/null || fail "stop: the full run failed"
full=$(sed 's/.*"text": \(".*"\), "tokens".*/\1/' "$tmp/full.out")
# the first two different printable ASCII characters in a row past the answer's start
stop=$(printf %s "$full" | LC_ALL=C awk '{for (i = 3; i < length($0) - 1; i++) {a = substr($0, i, 1); b = substr($0, i + 1, 1);
    if (a != b && a ~ /[A-Za-z0-9+=*.,;:!?-]/ && b ~ /[A-Za-z0-9+=*.,;:!?-]/) {print a b; exit}}}')
[ -n "$stop" ] || fail "stop: no two different ASCII characters in a row to stop at in $full"
echo "{$sreq, \"stop\": \"$stop\"}" >"$tmp/stop.jsonl"
"$q" infer "${run[@]}" --requests "$tmp/stop.jsonl" >"$tmp/stop.out" 2>/dev/null || fail "stop run failed"
grep -q '"finish_reason": "stop"' "$tmp/stop.out" || fail "stop '$stop' did not stop: $(cat "$tmp/stop.out")"
LC_ALL=C grep -qF "\"text\": ${full%%"$stop"*}\", " "$tmp/stop.out" || fail "stop '$stop': not cut before it: $(cat "$tmp/stop.out") vs $full"
# --out: the same results, written atomically (no temp file left)
"$q" infer "${run[@]}" --requests "$tmp/req.jsonl" --batch 4 --out "$tmp/res.jsonl" >"$tmp/stdout" 2>/dev/null
cmp -s "$tmp/res.jsonl" "$tmp/out.jsonl" || fail "--out differs from stdout"
[ ! -s "$tmp/stdout" ] || fail "--out still printed results"
ls "$tmp" | grep -q '\.tmp\.' && fail "a temp file was left: $(ls "$tmp")"
# --adapters limits the store; a request for another adapter is an error result
"$q" infer "${run[@]}" --adapters support --requests "$tmp/req.jsonl" >"$tmp/sub.jsonl" 2>/dev/null
sed -n 1p "$tmp/sub.jsonl" | grep -q "adapter 'pirate' is not among --adapters" || fail "--adapters subset: $(sed -n 1p "$tmp/sub.jsonl")"
[ "$(sed -n 3p "$tmp/sub.jsonl")" = "$(res 3)" ] || fail "--adapters subset changed line 3"
# bad options
"$q" infer "${run[@]}" --requests "$tmp/req.jsonl" --prompt hi >/dev/null 2>&1; [ $? = 2 ] || fail "--prompt with --requests: want exit 2"
"$q" infer "${run[@]}" --requests "$tmp/req.jsonl" --with-base >/dev/null 2>&1; [ $? = 2 ] || fail "--with-base with --requests: want exit 2"
"$q" infer "${run[@]}" --requests "$tmp/nowhere.jsonl" >/dev/null 2>"$tmp/e1"; [ $? = 1 ] || fail "missing file: want exit 1"
grep -q "nowhere.jsonl" "$tmp/e1" || fail "missing file message: $(cat "$tmp/e1")"
printf '\n\n' >"$tmp/blank.jsonl"
"$q" infer "${run[@]}" --requests "$tmp/blank.jsonl" >/dev/null 2>"$tmp/e2" && fail "a blank file exited 0"
grep -q "no requests" "$tmp/e2" || fail "blank file message: $(cat "$tmp/e2")"
[ $fails = 0 ] && echo "test_requests: passed" || echo "test_requests: $fails failures"
[ $fails = 0 ]
