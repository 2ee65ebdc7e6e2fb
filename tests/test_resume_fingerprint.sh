#!/usr/bin/env bash
# test_resume_fingerprint.sh QLORA SOURCE_DIR: --resume continues only the run
# its checkpoint came from. A changed --chat-template, --train-on-inputs,
# --skip-invalid or --val-data, or another base file of the same shape and dtype
# (a different model), is refused with "other options or data"; the same run
# resumes.
q=$1; src=$2
fails=0
tmp=$(mktemp -d /tmp/qlora_fp_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
"$q" quantize --base "$src/tests/fixtures/models/tiny_gqa" --out "$tmp/a.qlb" 2>/dev/null || { echo "FAIL: quantize"; exit 1; }
# another model of the same shape: the same file with one weight block's bytes changed
# (four bytes in the middle of the data area: weights, whatever their type, that still load)
cp "$tmp/a.qlb" "$tmp/b.qlb"
size=$(stat -c %s "$tmp/b.qlb")
printf '\x5a\x5a\x5a\x5a' | dd of="$tmp/b.qlb" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
cmp -s "$tmp/a.qlb" "$tmp/b.qlb" && { echo "FAIL: b.qlb equals a.qlb"; exit 1; }
"$q" infer --base "$tmp/b.qlb" --prompt Hi --max-tokens 1 >/dev/null 2>&1 || { echo "FAIL: b.qlb does not load"; exit 1; }
c=(--data "$src/datasets/samples/support.jsonl" --max-steps 6 --batch-size 1 --seq-len 160 --rank 2 --threads 1
   --chat-template llama2 --save-every 2)
"$q" train --base "$tmp/a.qlb" "${c[@]}" --out "$tmp/ad" --stop-after 2 2>"$tmp/s.log" || fail "stopped run: $(tail -1 "$tmp/s.log")"
refused() {
    "$q" train "$@" --out "$tmp/ad" --resume 2>"$tmp/r.log"; local rc=$?
    [ $rc -eq 2 ] && grep -q "other options or data" "$tmp/r.log" || fail "resume with $*: exit $rc: $(tail -1 "$tmp/r.log")"
}
refused --base "$tmp/a.qlb" "${c[@]}" --chat-template chatml
refused --base "$tmp/a.qlb" "${c[@]}" --train-on-inputs
refused --base "$tmp/a.qlb" "${c[@]}" --skip-invalid
refused --base "$tmp/a.qlb" "${c[@]}" --val-data "$src/datasets/samples/support.jsonl"
refused --base "$tmp/b.qlb" "${c[@]}"
cp "$tmp/a.qlb" "$tmp/moved.qlb"  # the same model elsewhere is the same base
"$q" train --base "$tmp/moved.qlb" "${c[@]}" --out "$tmp/ad" --resume 2>"$tmp/ok.log" || fail "resume of the same run: $(tail -1 "$tmp/ok.log")"
grep -q "resumed from .* at step 2" "$tmp/ok.log" || fail "did not resume at step 2"

[ $fails -eq 0 ] && echo "test_resume_fingerprint: passed" || echo "test_resume_fingerprint: $fails failed checks"
[ $fails -eq 0 ]
