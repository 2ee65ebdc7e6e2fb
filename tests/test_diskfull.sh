#!/usr/bin/env bash
# test_diskfull.sh QLORA SOURCE_DIR: a full disk (a small tmpfs) while writing an
# adapter, a checkpoint, an export (gguf and peft) and an infer results file:
# each gets a clear error that names what it was writing and says "No space left
# on device", the files that were there stay byte for byte, and no temporary
# file is left behind. Skips (77) where a tmpfs cannot be mounted (not root).
q=$1; src=$2
export LC_ALL=C
fails=0
tmp=$(mktemp -d /tmp/qlora_diskfull_XXXXXX)
mnt=$tmp/mnt
mkdir "$mnt"
if ! mount -t tmpfs -o size=3m tmpfs "$mnt" 2>"$tmp/mount.log"; then
    echo "test_diskfull: skipped: cannot mount a tmpfs ($(cat "$tmp/mount.log")); needs root"
    rm -rf "$tmp"
    exit 77
fi
trap 'umount "$mnt"; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
model=$src/tests/fixtures/models/tiny_gqa
data=$src/datasets/samples/pirate.jsonl
common=(--base "$model" --data "$data" --max-steps 12 --batch-size 2 --seq-len 64 --rank 4 --alpha 8 --lr 1e-3
        --save-every 4 --threads 1)

# Fills the tmpfs, leaving about $1 KiB free.
fill() {
    rm -f "$mnt/fill"
    dd if=/dev/zero of="$mnt/fill" bs=64k 2>/dev/null
    [ "$1" -gt 0 ] && truncate -s "-$(($1 * 1024))" "$mnt/fill"
    sync
}
# Copies of what is in the tmpfs, to compare after a failure.
snapshot() { rm -rf "$tmp/snap"; mkdir "$tmp/snap"; (cd "$mnt" && find . -path ./fill -prune -o -type f -print | sort >"$tmp/snap.list" && tar cf "$tmp/snap/all.tar" --exclude=./fill .); }
unchanged() {
    local what=$1
    (cd "$mnt" && find . -path ./fill -prune -o -type f -print | sort) | cmp -s - "$tmp/snap.list" ||
        fail "$what: the files changed: $(cd "$mnt" && find . -path ./fill -prune -o -print | sort | tr '\n' ' ')"
    rm -rf "$tmp/cmp" && mkdir "$tmp/cmp" && tar xf "$tmp/snap/all.tar" -C "$tmp/cmp"
    while read -r f; do cmp -s "$tmp/cmp/$f" "$mnt/$f" || fail "$what: $f differs from before"; done <"$tmp/snap.list"
    local left
    left=$(cd "$mnt" && find . -name '*tmp*' -o -name '*.lock' | tr '\n' ' ')
    [ -z "$left" ] || fail "$what: left behind: $left"
}
# expect WHAT LOGFILE: the command failed (exit 1) with a message naming a path and ENOSPC
expect_enospc() {
    local what=$1 rc=$2 log=$3 name=$4
    [ "$rc" -eq 1 ] || fail "$what: exit $rc, expected 1: $(tail -2 "$log")"
    grep -q "No space left on device" "$log" || fail "$what: no 'No space left on device' in: $(tail -2 "$log")"
    grep -q "$name" "$log" || fail "$what: the message does not name $name: $(tail -2 "$log")"
    echo "$what: $(grep -m1 'error' "$log")"
}

# the files that must survive: an adapter, a stopped run's checkpoint, a gguf, results
"$q" train "${common[@]}" --out "$mnt/ad" 2>"$tmp/t0.log" || { echo "FAIL: first training: $(tail -2 "$tmp/t0.log")"; exit 1; }
"$q" train "${common[@]}" --out "$mnt/ck" --stop-after 4 2>"$tmp/t1.log" || { echo "FAIL: stopped training: $(tail -2 "$tmp/t1.log")"; exit 1; }
"$q" export --base "$model" --adapter "$mnt/ad" --format gguf --out "$mnt/a.gguf" 2>/dev/null || { echo "FAIL: first export"; exit 1; }
printf '{"id": 1, "prompt": "Tell me about the sea", "max_tokens": 40, "temperature": 0}\n' >"$tmp/req.jsonl"
for i in 2 3 4 5 6 7 8; do printf '{"id": %d, "prompt": "Tell me about the sea", "max_tokens": 40, "temperature": 0}\n' $i >>"$tmp/req.jsonl"; done
"$q" infer --base "$model" --requests "$tmp/req.jsonl" --out "$mnt/res.jsonl" --threads 1 2>"$tmp/r0.log" || { echo "FAIL: first infer: $(tail -2 "$tmp/r0.log")"; exit 1; }
[ "$(ls "$mnt" | tr '\n' ' ')" = "a.gguf ad ck res.jsonl " ] || fail "before filling: $(ls -A "$mnt" | tr '\n' ' ')"
snapshot

# the adapter: replacing it with room for its config and weights but not the checkpoint
fill 64
"$q" train "${common[@]}" --out "$mnt/ad" --overwrite --seed 7 2>"$tmp/e1.log"
expect_enospc "train --overwrite (adapter)" $? "$tmp/e1.log" "$mnt/ad"
unchanged "train --overwrite (adapter)"
# a new adapter on a full disk: nothing appears
fill 0
"$q" train "${common[@]}" --out "$mnt/new" 2>"$tmp/e2.log"
expect_enospc "train (new adapter)" $? "$tmp/e2.log" "$mnt/new"
unchanged "train (new adapter)"
# the checkpoint: a resumed run cannot save its next one
fill 64
"$q" train "${common[@]}" --out "$mnt/ck" --resume 2>"$tmp/e3.log"
expect_enospc "train --resume (checkpoint)" $? "$tmp/e3.log" "$mnt/ck"
unchanged "train --resume (checkpoint)"
# exports: gguf over the old one, a new gguf, a new peft directory
fill 8
"$q" export --base "$model" --adapter "$mnt/ad" --format gguf --dtype f32 --out "$mnt/a.gguf" --overwrite 2>"$tmp/e4.log"
expect_enospc "export gguf --overwrite" $? "$tmp/e4.log" "$mnt/a.gguf"
unchanged "export gguf --overwrite"
"$q" export --base "$model" --adapter "$mnt/ad" --format gguf --out "$mnt/b.gguf" 2>"$tmp/e5.log"
expect_enospc "export gguf" $? "$tmp/e5.log" "$mnt/b.gguf"
unchanged "export gguf"
"$q" export --adapter "$mnt/ad" --format peft --dtype f32 --out "$mnt/p" 2>"$tmp/e6.log"
expect_enospc "export peft" $? "$tmp/e6.log" "$mnt/p"
unchanged "export peft"
# the results file of infer --requests, over the old one
fill 0
"$q" infer --base "$model" --requests "$tmp/req.jsonl" --out "$mnt/res.jsonl" --threads 1 2>"$tmp/e7.log"
expect_enospc "infer --requests --out" $? "$tmp/e7.log" "$mnt/res.jsonl"
unchanged "infer --requests --out"
# with room again, everything works and the old files are replaced as asked
rm -f "$mnt/fill"
"$q" train "${common[@]}" --out "$mnt/ck" --resume 2>"$tmp/ok.log" || fail "resume with room: $(tail -2 "$tmp/ok.log")"
[ "$(ls -A "$mnt" | tr '\n' ' ')" = "a.gguf ad ck res.jsonl " ] || fail "at the end: $(ls -A "$mnt" | tr '\n' ' ')"

[ $fails -eq 0 ] && echo "test_diskfull: passed" || echo "test_diskfull: $fails failed checks"
[ $fails -eq 0 ]
