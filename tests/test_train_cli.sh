#!/usr/bin/env bash
# test_train_cli.sh QLORA SOURCE_DIR: qlora train end to end on the project's
# tiny model: checkpoint -> resume gives bitwise-identical losses and adapter,
# Ctrl-C keeps a checkpoint that resumes to the same result (twice: exits at once),
# the adapter directory is complete and loads back, recipes apply and the
# command line overrides them, bad input fails cleanly.
q=$1; src=$2
fails=0
tmp=$(mktemp -d /tmp/qlora_train_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
model=$src/tests/fixtures/models/tiny_gqa
data=$src/datasets/samples/pirate.jsonl
# Under ASan+UBSan (QLORA_TEST_SANITIZED) the same checks run on shorter rows and a
# shorter reference-backend run (the fp64 reference is ~10x slower there).
seq=96 rseq=64 rsteps=4 rstop=2
[ -n "${QLORA_TEST_SANITIZED:-}" ] && seq=48 rseq=32 rsteps=2 rstop=1
common=(--base "$model" --data "$data" --max-steps 12 --batch-size 2 --grad-accum 2 --seq-len $seq --rank 4
        --alpha 8 --lr 1e-3 --warmup 3 --dropout 0.1 --eval-every 6 --threads 2)

# one uninterrupted run, and one stopped at step 5 then resumed
"$q" train "${common[@]}" --out "$tmp/full" --save-every 12 2>"$tmp/full.log" || fail "full run failed: $(tail -3 "$tmp/full.log")"
"$q" train "${common[@]}" --out "$tmp/part" --save-every 12 --stop-after 5 2>"$tmp/p1.log" || fail "stopped run failed: $(tail -3 "$tmp/p1.log")"
grep -q "\"steps\": 5, \"planned_steps\": 12" "$tmp/part/training_record.json" || fail "a stopped run did not write the adapter of step 5"
"$q" train "${common[@]}" --out "$tmp/part" --save-every 12 --resume 2>"$tmp/p2.log" || fail "resume failed: $(tail -3 "$tmp/p2.log")"
grep -q "resumed from .* at step 5" "$tmp/p2.log" || fail "resume did not start at step 5"
cmp -s "$tmp/full/checkpoints/checkpoint-12.safetensors" "$tmp/part/checkpoints/checkpoint-12.safetensors" || fail "checkpoint after resume differs from the uninterrupted run (losses, masters or moments)"
cmp -s "$tmp/full/adapter_model.safetensors" "$tmp/part/adapter_model.safetensors" || fail "adapter after resume differs"
for s in 6 7 8 9 10 11 12; do
    a=$(grep "^step=$s loss=" "$tmp/full.log" | sed 's/ lr=.*//'); b=$(grep "^step=$s loss=" "$tmp/p2.log" | sed 's/ lr=.*//')
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "step $s: '$a' vs resumed '$b'"
done
# metrics.jsonl: JSON lines for the logged steps and each evaluation (steps 0, 6, 12);
# the last step's loss is the one logged; the stopped-and-resumed run has the same
# history as the uninterrupted one, timings aside
if command -v jq >/dev/null; then
    jq -e . "$tmp/full/metrics.jsonl" >/dev/null || fail "metrics.jsonl is not JSON lines"
    [ "$(jq -r 'select(.val_loss) | .step' "$tmp/full/metrics.jsonl" | tr '\n' ' ')" = "0 6 12 " ] \
        || fail "metrics.jsonl evaluations: $(jq -c 'select(.val_loss)' "$tmp/full/metrics.jsonl")"
    want=$(grep "^step=12 loss=" "$tmp/full.log" | sed 's/.*loss=\([0-9.]*\).*/\1/')
    got=$(jq -r 'select(.step == 12 and .loss) | .loss' "$tmp/full/metrics.jsonl" | xargs printf '%.6f')
    [ -n "$want" ] && [ "$got" = "$want" ] || fail "metrics.jsonl step 12 loss '$got', logged '$want'"
    # training_record.json: the options in readable form, the resources used
    r=$tmp/full/training_record.json
    [ "$(jq -c '.options | [.targets, .rank, .alpha, .schedule, .warmup_steps, .grad_accum, .dropout]' "$r")" = \
      '[["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"],4,8,"cosine",3,2,0.1]' ] \
        || fail "training_record options: $(jq -c .options "$r")"
    jq -e '.resources.wall_s >= 0 and .resources.peak_rss_mb > 1 and (.fingerprint | type) == "string"' "$r" >/dev/null \
        || fail "training_record resources: $(jq -c '{resources, fingerprint}' "$r")"
    hist() { jq -c '{step, epoch, loss, lr, grad_norm, val_loss}' "$1"; }
    [ "$(hist "$tmp/full/metrics.jsonl")" = "$(hist "$tmp/part/metrics.jsonl")" ] \
        || fail "metrics.jsonl after --resume differs: $(diff <(hist "$tmp/full/metrics.jsonl") <(hist "$tmp/part/metrics.jsonl"))"
else
    echo "jq not found: metrics.jsonl checked for presence only"
    [ -s "$tmp/full/metrics.jsonl" ] || fail "no metrics.jsonl"
fi

# Ctrl-C in step 5 (a SIGINT from the crash_point hook, in its first micro-batch):
# the step finishes, the checkpoint and adapter of step 5 are written, exit 130, and
# --resume ends where the uninterrupted run did, bit for bit
QLORA_CRASH_AT=step:9 QLORA_CRASH_SIGNAL=INT "$q" train "${common[@]}" --out "$tmp/intr" --save-every 12 2>"$tmp/i1.log"
rc=$?
[ $rc -eq 130 ] || fail "Ctrl-C: exit $rc, expected 130: $(tail -3 "$tmp/i1.log")"
grep -q "interrupted after step 5 of 12; .* holds the checkpoint (checkpoints/) and the adapter of that step. Continue with the same command and --resume" "$tmp/i1.log" \
    || fail "Ctrl-C: no resume hint: $(tail -3 "$tmp/i1.log")"
grep -q "\"steps\": 5, \"planned_steps\": 12" "$tmp/intr/training_record.json" 2>/dev/null || fail "Ctrl-C: no adapter of step 5"
"$q" train "${common[@]}" --out "$tmp/intr" --save-every 12 --resume 2>"$tmp/i2.log" || fail "resume after Ctrl-C failed: $(tail -3 "$tmp/i2.log")"
cmp -s "$tmp/full/checkpoints/checkpoint-12.safetensors" "$tmp/intr/checkpoints/checkpoint-12.safetensors" || fail "Ctrl-C then resume: checkpoint differs from the uninterrupted run"
# Ctrl-C twice: exit 130 at once; nothing is written
QLORA_CRASH_AT=step:9 QLORA_CRASH_SIGNAL=INT2 "$q" train "${common[@]}" --out "$tmp/intr2" --save-every 12 2>"$tmp/i3.log"
rc=$?
[ $rc -eq 130 ] || fail "Ctrl-C twice: exit $rc, expected 130"
grep -q "interrupted again: exiting now" "$tmp/i3.log" || fail "Ctrl-C twice: no message"
[ ! -e "$tmp/intr2/adapter_model.safetensors" ] || fail "Ctrl-C twice: an adapter was written"

# the same through a backend whose memory is apart from the host's (ref stands in
# for a GPU): the trainer's flat state goes in and out by copies for the
# checkpoint, the resume and the final adapter
refc=(--base "$model" --data "$data" --max-steps $rsteps --batch-size 2 --seq-len $rseq --rank 4 --alpha 8 --lr 1e-3
      --dropout 0.1 --backend ref)
"$q" train "${refc[@]}" --out "$tmp/rfull" --save-every $rsteps 2>"$tmp/rf.log" || fail "ref run failed: $(tail -3 "$tmp/rf.log")"
"$q" train "${refc[@]}" --out "$tmp/rpart" --save-every $rsteps --stop-after $rstop 2>/dev/null || fail "ref stopped run failed"
"$q" train "${refc[@]}" --out "$tmp/rpart" --save-every $rsteps --resume 2>"$tmp/rp.log" || fail "ref resume failed: $(tail -3 "$tmp/rp.log")"
cmp -s "$tmp/rfull/checkpoints/checkpoint-$rsteps.safetensors" "$tmp/rpart/checkpoints/checkpoint-$rsteps.safetensors" || fail "ref backend: checkpoint after resume differs"
cmp -s "$tmp/rfull/adapter_model.safetensors" "$tmp/rpart/adapter_model.safetensors" || fail "ref backend: adapter after resume differs"
# the adapter directory
for f in adapter_config.json adapter_model.safetensors training_record.json loss.svg metrics.jsonl; do
    [ -s "$tmp/full/$f" ] || fail "missing $f"
done
grep -q '"peft_type": "LORA"' "$tmp/full/adapter_config.json" || fail "adapter_config.json lacks peft_type LORA"
grep -q '<svg' "$tmp/full/loss.svg" || fail "loss.svg is not an SVG"
# labelled axes, a grid, the train curve and the validation curve (evaluations at 0, 6, 12)
for want in '>step</text>' '>loss</text>' 'stroke="#e0e0e0"' '<polyline fill="none" stroke="#1f77b4"' '<polyline fill="none" stroke="#d62728"'; do
    grep -qF "$want" "$tmp/full/loss.svg" || fail "loss.svg lacks $want"
done
[ "$(grep -c '<circle' "$tmp/full/loss.svg")" = 3 ] || fail "loss.svg: $(grep -c '<circle' "$tmp/full/loss.svg") validation points, expected 3"
grep -q '"fnv1a64"' "$tmp/full/training_record.json" || fail "training record lacks the dataset hash"
ls "$tmp/full"/*.tmp.* >/dev/null 2>&1 && fail "temp files left in the adapter directory"
"$q" eval --base "$model" --adapter "$tmp/full" --data "$src/tests/fixtures/stories260K/eval.txt" >/dev/null 2>&1 || fail "eval --adapter on the trained adapter failed"
# a recipe, overridden on the command line
printf '{"_about": "test", "rank": 2, "alpha": 4, "max-steps": 2, "seq-len": 64, "batch-size": 1, "rslora": true}\n' >"$tmp/r.json"
"$q" train --recipe "$tmp/r.json" --base "$model" --data "$data" --out "$tmp/rec" --rank 3 2>"$tmp/rec.log" || fail "recipe run failed: $(tail -3 "$tmp/rec.log")"
grep -q '"r": 3' "$tmp/rec/adapter_config.json" || fail "--rank did not override the recipe"
grep -q '"use_rslora": true' "$tmp/rec/adapter_config.json" || fail "the recipe's rslora was not applied"
# runs that will not do what their options suggest get a warning (and still run)
"$q" train --base "$model" --data "$data" --out "$tmp/w1" --max-steps 3 --batch-size 2 --seq-len 32 --warmup 10 \
    --val-split 0 2>"$tmp/w1.log" || fail "warned run failed: $(tail -3 "$tmp/w1.log")"
grep -q -- "--warmup 10 is as long as the whole run (3 steps)" "$tmp/w1.log" || fail "no warmup warning: $(grep warn "$tmp/w1.log")"
grep -q -- "--max-steps 3 sees 6 of the data's [0-9]* packed rows: less than one epoch" "$tmp/w1.log" || fail "no epoch warning"
grep -q "300 of 300 samples of .*pirate.jsonl are longer than --seq-len 32" "$tmp/w1.log" || fail "no seq-len warning: $(grep warn "$tmp/w1.log")"
"$q" train --base "$model" --data "$data" --out "$tmp/w2" --epochs 1 --batch-size 64 --grad-accum 4 --seq-len 256 \
    --warmup 0 --max-steps 1 2>"$tmp/w2.log" || fail "second warned run failed: $(tail -3 "$tmp/w2.log")"
grep -q "one step takes 256 (--batch-size 64 x --grad-accum 4): each step repeats rows" "$tmp/w2.log" || fail "no rows warning: $(grep warn "$tmp/w2.log")"
grep -q "warmup\|were cut" "$tmp/w2.log" && fail "a warning the second run does not deserve: $(grep warn "$tmp/w2.log")"
# bad input: clear messages, non-zero exits
printf '{"prompt": "a", "completion": 5}\n' >"$tmp/bad.jsonl"
"$q" train --base "$model" --data "$tmp/bad.jsonl" --out "$tmp/bad" 2>"$tmp/bad.log" && fail "bad JSONL accepted"
grep -q 'bad.jsonl:1:' "$tmp/bad.log" || fail "bad JSONL message lacks file:line: $(cat "$tmp/bad.log")"
"$q" train --base "$model" --data "$data" --out "$tmp/x" --targets q_proj,nope 2>"$tmp/t.log"; [ $? -eq 2 ] || fail "bad --targets did not exit 2"
grep -q "unknown module 'nope'" "$tmp/t.log" || fail "bad --targets message: $(cat "$tmp/t.log")"
printf '{"rank": [1]}\n' >"$tmp/badr.json"
"$q" train --recipe "$tmp/badr.json" --base "$model" --data "$data" --out "$tmp/x" 2>"$tmp/br.log"; [ $? -eq 2 ] || fail "bad recipe did not exit 2"
grep -q "badr.json: key 'rank': expected an integer" "$tmp/br.log" || fail "bad recipe message: $(cat "$tmp/br.log")"
"$q" train "${common[@]}" --out "$tmp/full" --resume --rank 8 2>"$tmp/rr.log" && fail "resume with other options accepted"
grep -q "other options or data" "$tmp/rr.log" || fail "resume mismatch message: $(cat "$tmp/rr.log")"

[ $fails -eq 0 ] && echo "test_train_cli: passed" || echo "test_train_cli: $fails failed checks"
[ $fails -eq 0 ]
