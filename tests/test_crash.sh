#!/usr/bin/env bash
# test_crash.sh QLORA SOURCE_DIR: kill -9 at many points of `qlora train
# --save-every` (during a step, in the middle of a file of the checkpoint or the
# adapter, before a file's rename, before and after the directory swap, in the
# final export) and at random moments. After each kill, --out is absent (nothing
# saved yet) or a complete directory: adapter files that load, a checkpoint of the
# same step as the record, no half-written file under a final name and no temp
# file visible. --resume then gives the uninterrupted run's losses, adapter,
# checkpoint, record and loss.svg byte for byte, and removes the dead run's temp
# files. The kills are deterministic (QLORA_CRASH_AT=<event>:<n>, fileio.h
# crash_point); the random ones only add moments, every check holds at any.
q=$1; src=$2
export LC_ALL=C
fails=0
tmp=$(mktemp -d /tmp/qlora_crash_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
"$q" quantize --base "$src/tests/fixtures/models/tiny_gqa" --out "$tmp/base.qlb" 2>/dev/null || { echo "FAIL: quantize"; exit 1; }
common=(--base "$tmp/base.qlb" --data "$src/datasets/samples/pirate.jsonl" --max-steps 24 --batch-size 2 --seq-len 64
        --rank 4 --alpha 8 --lr 1e-3 --warmup 3 --dropout 0.1 --eval-every 6 --save-every 4 --threads 1)
files="adapter_config.json adapter_model.safetensors checkpoints loss.svg metrics.jsonl training_record.json"
# the files compared with the uninterrupted run's (--keep-checkpoints 1: the newest checkpoint only)
cmpfiles="adapter_config.json adapter_model.safetensors checkpoints/checkpoint-24.safetensors loss.svg metrics.jsonl training_record.json"
# a file as it must match the uninterrupted run's: timings and resources are the
# run's own (the record's "resources" line, metrics.jsonl's tokens_per_s and elapsed_s)
norm() {
    case $1 in
    *training_record.json) grep -v '"resources":' "$1" | sed 's/},$/}/' ;;
    *metrics.jsonl) sed 's/, "tokens_per_s": [^,]*//; s/, "elapsed_s": [^}]*//' "$1" ;;
    *) cat "$1" ;;
    esac
}

# the uninterrupted run, counting the crash points it passes
QLORA_CRASH_LOG=1 "$q" train "${common[@]}" --out "$tmp/ref/ad" 2>"$tmp/ref.log" || { echo "FAIL: reference run: $(tail -3 "$tmp/ref.log")"; exit 1; }
count() { grep -c "^crash_point $1 " "$tmp/ref.log"; }
nstep=$(count step) nwrite=$(count write) ncommit=$(count commit) nswap=$(count swap) nswapped=$(count swapped)
[ "$nstep" -eq 24 ] && [ "$nswap" -eq 6 ] && [ "$nswapped" -eq 6 ] && [ "$nwrite" -gt 100 ] && [ "$ncommit" -ge 24 ] ||
    { echo "FAIL: crash points of the reference run: step $nstep, write $nwrite, commit $ncommit, swap $nswap, swapped $nswapped"; exit 1; }

# The state after a kill (dir: the run's parent, holding ad). Sets $resumable.
check_after_kill() {
    local what=$1 dir=$2 e
    resumable=0
    for e in $(ls "$dir"); do  # visible names: only the adapter directory
        [ "$e" = ad ] || fail "$what: '$e' visible beside the adapter directory"
    done
    for e in $(ls -A "$dir"); do  # hidden: the lock and temp names of the dead run, nothing else
        case $e in ad | .ad.lock | .ad.tmp-*) ;; *) fail "$what: unexpected '$e' in the store" ;; esac
    done
    [ -e "$dir/ad" ] || return 0
    [ "$(ls -A "$dir/ad" | tr '\n' ' ')" = "$files " ] || fail "$what: the directory holds '$(ls -A "$dir/ad" | tr '\n' ' ')', not '$files'"
    "$q" infer --base "$tmp/base.qlb" --adapter "$dir/ad" --prompt "Hello" --max-tokens 2 --threads 1 >/dev/null 2>"$tmp/inf.log" ||
        fail "$what: the adapter left does not load: $(tail -2 "$tmp/inf.log")"
    local rs cs
    rs=$(sed -n 's/.*"final": {"steps": \([0-9]*\),.*/\1/p' "$dir/ad/training_record.json")
    [ "$(ls "$dir/ad/checkpoints" | wc -l)" = 1 ] || fail "$what: checkpoints/ holds '$(ls "$dir/ad/checkpoints" | tr '\n' ' ')', not one checkpoint"
    cs=$(cat "$dir"/ad/checkpoints/checkpoint-*.safetensors | head -c 65536 | grep -ao '"step":"[0-9]*"' | grep -o '[0-9][0-9]*')
    [ -e "$dir/ad/checkpoints/checkpoint-$cs.safetensors" ] || fail "$what: the checkpoint of step $cs is not named checkpoint-$cs.safetensors"
    [ -n "$rs" ] && [ "$rs" = "$cs" ] || fail "$what: record at step '$rs' beside a checkpoint at step '$cs'"
    resumable=1
}

# Continues the killed run and compares with the uninterrupted one.
check_resume() {
    local what=$1 dir=$2 f s
    local flag=(); [ "$resumable" = 1 ] && flag=(--resume)
    "$q" train "${common[@]}" "${flag[@]}" --out "$dir/ad" 2>"$dir.resume.log" || { fail "$what: resume failed: $(tail -2 "$dir.resume.log")"; return; }
    for f in $cmpfiles; do
        cmp -s <(norm "$tmp/ref/ad/$f") <(norm "$dir/ad/$f") || fail "$what: $f after the resume differs from the uninterrupted run's"
    done
    local from=0
    [ "$resumable" = 1 ] && from=$(sed -n 's/.*resumed from .* at step \([0-9]*\).*/\1/p' "$dir.resume.log")
    for s in $(seq $((from + 1)) 24); do
        a=$(grep "^step=$s loss=" "$tmp/ref.log" | sed 's/ trained_tok.*//'); b=$(grep "^step=$s loss=" "$dir.resume.log" | sed 's/ trained_tok.*//')
        [ -n "$a" ] && [ "$a" = "$b" ] || fail "$what: step $s: '$a' vs resumed '$b'"
    done
    [ "$(ls -A "$dir" | tr '\n' ' ')" = "ad " ] || fail "$what: after the resume the store holds '$(ls -A "$dir" | tr '\n' ' ')'"
}

# n evenly spread over 1..total, the first and the last included
spread() { local total=$1 k=$2 i; for i in $(seq 0 $((k - 1))); do echo $((1 + (total - 1) * i / (k - 1))); done | sort -nu; }
trials=0
for ev in step write commit swap swapped; do
    total=$(count $ev); k=4
    [ $ev = write ] && k=8
    [ -n "$QLORA_TEST_SANITIZED" ] && k=2  # fewer points under the sanitizers (each run is slower); the same checks
    for n in $(spread "$total" $k); do
        trials=$((trials + 1)); d="$tmp/t$trials"; mkdir "$d"
        { QLORA_CRASH_AT="$ev:$n" "$q" train "${common[@]}" --out "$d/ad" 2>"$d.kill.log"; rc=$?; } 2>/dev/null
        [ $rc -eq 137 ] || { fail "$ev:$n: expected death by SIGKILL (137), got $rc: $(tail -2 "$d.kill.log")"; continue; }
        check_after_kill "$ev:$n" "$d"
        check_resume "$ev:$n" "$d"
    done
done
# a kill during a resumed run (its first directory swap), then a resume again
trials=$((trials + 1)); d="$tmp/t$trials"; mkdir "$d"
{ QLORA_CRASH_AT=swap:2 "$q" train "${common[@]}" --out "$d/ad"; } 2>/dev/null
{ QLORA_CRASH_AT=swapped:1 "$q" train "${common[@]}" --resume --out "$d/ad"; rc=$?; } 2>/dev/null
[ $rc -eq 137 ] || fail "kill in a resumed run: expected death by SIGKILL (137), got $rc"
check_after_kill "kill in a resumed run" "$d"; check_resume "kill in a resumed run" "$d"
# kill -9 after random delays (whatever the moment, the same checks hold)
nrand=4; [ -n "$QLORA_TEST_SANITIZED" ] && nrand=1
for i in $(seq $nrand); do
    trials=$((trials + 1)); d="$tmp/t$trials"; mkdir "$d"
    "$q" train "${common[@]}" --out "$d/ad" 2>/dev/null &
    pid=$!
    sleep "0.$((RANDOM % 9))$((RANDOM % 10))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    check_after_kill "random kill $i" "$d"; check_resume "random kill $i" "$d"
done

[ $fails -eq 0 ] && echo "test_crash: passed ($trials kills)" || echo "test_crash: $fails failed checks"
[ $fails -eq 0 ]
