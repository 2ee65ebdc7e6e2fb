#!/usr/bin/env bash
# test_train_stop.sh QLORA SOURCE_DIR: how a training run ends and what it
# leaves. --early-stopping N stops at the evaluation the logged validation losses
# say (recomputed here from the log); --save-best leaves the adapter of the best
# evaluation, byte for byte the adapter a run stopped at that step writes, also
# across a Ctrl-C and --resume; checkpoints go into checkpoints/ and
# --keep-checkpoints keeps the newest N (0: none once the run completes);
# --resume still reads a checkpoint.safetensors of the older layout; and the
# options that cannot work say why.
q=$1; src=$2
export LC_ALL=C
fails=0
tmp=$(mktemp -d /tmp/qlora_stop_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
model=$src/tests/fixtures/models/tiny_gqa
head -12 "$src/datasets/samples/support.jsonl" >"$tmp/val.jsonl"  # another style: its loss turns up
steps=24
common=(--base "$model" --data "$src/datasets/samples/pirate.jsonl" --val-data "$tmp/val.jsonl" --max-steps $steps
        --batch-size 2 --seq-len 256 --rank 4 --alpha 8 --lr 2e-2 --warmup 0 --eval-every 2 --threads 2)
# the record and metrics without the run's timings
norm() { grep -v '"resources":' "$1" | sed 's/},$/}/'; }

# 1. --early-stopping 3 --save-best
"$q" train "${common[@]}" --early-stopping 3 --save-best --out "$tmp/es" 2>"$tmp/es.log" || fail "early-stopping run failed: $(tail -3 "$tmp/es.log")"
# where it must stop, from the logged losses: the first evaluation after step 0
# that is the 3rd in a row not below the best
read -r want_stop want_best < <(sed -n 's/^step=\([0-9]*\) val_loss=\([0-9.]*\).*/\1 \2/p' "$tmp/es.log" | awk '
    $1 > 0 { if (best == "" || $2 < best) { best = $2; bstep = $1; n = 0 } else if (++n == 3) { print $1, bstep; exit } }')
[ -n "$want_stop" ] || fail "the validation loss never stalled 3 times: no early stop to check ($(grep val_loss "$tmp/es.log" | tr '\n' ' '))"
got_stop=$(sed -n 's/.*"final": {"steps": \([0-9]*\),.*"early_stopped": true.*/\1/p' "$tmp/es/training_record.json")
[ "$got_stop" = "$want_stop" ] || fail "early stop at step '$got_stop', the losses say $want_stop"
[ "$(grep -c '^step=[0-9]* loss=' "$tmp/es.log")" = "$want_stop" ] || fail "steps trained after the early stop"
grep -q "\"adapter\": {\"step\": $want_best, \"best_step\": $want_best," "$tmp/es/training_record.json" \
    || fail "record: $(grep '"adapter"' "$tmp/es/training_record.json"), expected the adapter of step $want_best"
# the adapter of the best step: what a run stopped there writes (the schedule is the same)
"$q" train "${common[@]}" --stop-after "$want_best" --out "$tmp/at_best" 2>/dev/null || fail "--stop-after $want_best failed"
cmp -s "$tmp/es/adapter_model.safetensors" "$tmp/at_best/adapter_model.safetensors" \
    || fail "--save-best adapter is not the adapter of step $want_best"
# without --save-best the adapter is the last step's
"$q" train "${common[@]}" --early-stopping 3 --out "$tmp/es_last" 2>/dev/null || fail "early stop without --save-best failed"
"$q" train "${common[@]}" --stop-after "$want_stop" --out "$tmp/at_stop" 2>/dev/null || fail "--stop-after $want_stop failed"
cmp -s "$tmp/es_last/adapter_model.safetensors" "$tmp/at_stop/adapter_model.safetensors" \
    || fail "early stop without --save-best: the adapter is not that of step $want_stop"
[ ! -e "$tmp/es/checkpoints" ] || fail "a run without --save-every left checkpoints/"

# 2. --save-best across Ctrl-C (after the best step) and --resume: the same adapter and record
cut=$((want_best + 1))
QLORA_CRASH_AT=step:$cut QLORA_CRASH_SIGNAL=INT "$q" train "${common[@]}" --early-stopping 3 --save-best --out "$tmp/sbi" 2>"$tmp/sbi1.log"
rc=$?
[ $rc -eq 130 ] || fail "Ctrl-C at step $cut: exit $rc, expected 130: $(tail -2 "$tmp/sbi1.log")"
grep -q "the adapter with the lowest validation loss so far" "$tmp/sbi1.log" || fail "Ctrl-C with --save-best: the message does not say which adapter is kept"
cmp -s "$tmp/sbi/adapter_model.safetensors" "$tmp/at_best/adapter_model.safetensors" || fail "after Ctrl-C the best adapter was replaced"
"$q" train "${common[@]}" --early-stopping 3 --save-best --out "$tmp/sbi" --resume 2>"$tmp/sbi2.log" || fail "resume failed: $(tail -2 "$tmp/sbi2.log")"
cmp -s "$tmp/sbi/adapter_model.safetensors" "$tmp/es/adapter_model.safetensors" || fail "--save-best: the resumed run's adapter differs"
cmp -s <(norm "$tmp/sbi/training_record.json") <(norm "$tmp/es/training_record.json") \
    || fail "--save-best: the resumed run's record differs: $(diff <(norm "$tmp/sbi/training_record.json") <(norm "$tmp/es/training_record.json"))"

# 3. checkpoints/ and --keep-checkpoints
ck=(--base "$model" --data "$src/datasets/samples/pirate.jsonl" --max-steps 12 --batch-size 2 --seq-len 96 --rank 4
    --alpha 8 --lr 1e-3 --warmup 2 --eval-every 6 --save-every 4 --threads 2)
"$q" train "${ck[@]}" --keep-checkpoints 2 --out "$tmp/k2" 2>/dev/null || fail "--keep-checkpoints 2 failed"
[ "$(ls "$tmp/k2/checkpoints" | tr '\n' ' ')" = "checkpoint-12.safetensors checkpoint-8.safetensors " ] \
    || fail "--keep-checkpoints 2: checkpoints/ holds '$(ls "$tmp/k2/checkpoints" | tr '\n' ' ')'"
[ ! -e "$tmp/k2/checkpoint.safetensors" ] || fail "a checkpoint beside the adapter"
"$q" train "${ck[@]}" --out "$tmp/k1" 2>/dev/null || fail "default --keep-checkpoints failed"
[ "$(ls "$tmp/k1/checkpoints" | tr '\n' ' ')" = "checkpoint-12.safetensors " ] || fail "default: checkpoints/ holds '$(ls "$tmp/k1/checkpoints" | tr '\n' ' ')'"
cmp -s "$tmp/k1/checkpoints/checkpoint-12.safetensors" "$tmp/k2/checkpoints/checkpoint-12.safetensors" || fail "the same run's checkpoints differ"
# 0: an interrupted run still keeps its checkpoint (to resume), a completed one none
"$q" train "${ck[@]}" --keep-checkpoints 0 --stop-after 5 --out "$tmp/k0" 2>/dev/null || fail "--keep-checkpoints 0 --stop-after 5 failed"
[ "$(ls "$tmp/k0/checkpoints" | tr '\n' ' ')" = "checkpoint-5.safetensors " ] || fail "--keep-checkpoints 0, stopped: checkpoints/ holds '$(ls "$tmp/k0/checkpoints" 2>&1 | tr '\n' ' ')'"
"$q" train "${ck[@]}" --keep-checkpoints 0 --resume --out "$tmp/k0" 2>"$tmp/k0.log" || fail "resume with --keep-checkpoints 0 failed: $(tail -2 "$tmp/k0.log")"
[ "$(ls -A "$tmp/k0" | tr '\n' ' ')" = "adapter_config.json adapter_model.safetensors loss.svg metrics.jsonl training_record.json " ] \
    || fail "--keep-checkpoints 0 after the run: $(ls -A "$tmp/k0" | tr '\n' ' ')"
cmp -s "$tmp/k0/adapter_model.safetensors" "$tmp/k1/adapter_model.safetensors" || fail "--keep-checkpoints 0 then resume: the adapter differs"
# a checkpoint.safetensors beside the adapter (the layout before checkpoints/) still resumes
"$q" train "${ck[@]}" --stop-after 5 --out "$tmp/old" 2>/dev/null || fail "--stop-after 5 failed"
mv "$tmp/old/checkpoints/checkpoint-5.safetensors" "$tmp/old/checkpoint.safetensors" && rmdir "$tmp/old/checkpoints"
"$q" train "${ck[@]}" --resume --out "$tmp/old" 2>"$tmp/old.log" || fail "resume from the old layout failed: $(tail -2 "$tmp/old.log")"
grep -q "resumed from .*/old/checkpoint.safetensors at step 5" "$tmp/old.log" || fail "old layout: not resumed from its checkpoint"
cmp -s "$tmp/old/checkpoints/checkpoint-12.safetensors" "$tmp/k1/checkpoints/checkpoint-12.safetensors" || fail "old layout: the resumed checkpoint differs"
# a directory with something else in checkpoints/ is not ours to replace
mkdir -p "$tmp/foreign/checkpoints" && cp "$tmp/k1"/*.json "$tmp/foreign/" && echo x >"$tmp/foreign/checkpoints/notes.txt"
"$q" train "${ck[@]}" --overwrite --out "$tmp/foreign" 2>"$tmp/f.log"; rc=$?
[ $rc -eq 2 ] && grep -q "its checkpoints/ holds notes.txt, which qlora does not write); not replaced" "$tmp/f.log" \
    || fail "a foreign file in checkpoints/: exit $rc, $(tail -1 "$tmp/f.log")"
[ -e "$tmp/foreign/checkpoints/notes.txt" ] || fail "a foreign file in checkpoints/ was removed"

# 4. what cannot work says why (exit 2)
expect_err() {  # what, message, args...
    local what=$1 msg=$2; shift 2
    "$q" train "$@" 2>"$tmp/e.log"; local rc=$?
    [ $rc -eq 2 ] && grep -qF -- "$msg" "$tmp/e.log" || fail "$what: exit $rc, '$(tail -1 "$tmp/e.log")', expected '$msg'"
}
expect_err "no validation set" "--early-stopping needs a validation set, and there is none: give --val-split > 0 or --val-data" \
    "${ck[@]}" --val-split 0 --early-stopping 2 --out "$tmp/e1"
expect_err "--save-best, no validation set" "--save-best needs a validation set" "${ck[@]}" --val-split 0 --save-best --out "$tmp/e2"
expect_err "no evaluations" "--early-stopping 2 counts evaluations, and --eval-every 0 evaluates only at the end" \
    "${ck[@]}" --eval-every 0 --early-stopping 2 --out "$tmp/e3"
expect_err "nothing to resume" "holds no checkpoint" "${ck[@]}" --save-every 0 --resume --out "$tmp/es_last"
expect_err "negative keep" "bad value" "${ck[@]}" --keep-checkpoints -1 --out "$tmp/e4"

[ $fails -eq 0 ] && echo "test_train_stop: all passed"
[ $fails -eq 0 ]
