#!/usr/bin/env bash
# Side-by-side serving benchmark: qlora serve against llama.cpp's llama-server, on the same model and adapters.
# A benchmark run by hand, not a test.
#
# usage: tests/serve/bench_serve.sh QLORA_BIN LLAMA_SERVER_BIN WORKDIR
#
# WORKDIR holds: tl.qlb (the base, e.g. from `qlora bench --save-base`), store/a0..a7 (PEFT adapters),
# tl-f16.gguf (`qlora export --format gguf-base`) and a0.gguf..a7.gguf (`qlora export --format gguf`).
# For each case (base, one adapter, distinct adapters: request i on adapter i mod 8) and concurrency, it
# runs tests/serve/bench_serve.py against qlora serve and then against llama-server (interleaved, never
# both loads at once) and prints both serve_bench lines and a serve_bench_ratio line (qlora / llama).
#
# Settings (environment):
#   CASES="base one distinct"  CONCS="1 4 8 16"  PROMPT_TOKENS=32  MAX_TOKENS=32
#   REQ_MULT=2 MIN_REQ=8       requests per run: max(MIN_REQ, REQ_MULT * concurrency); REQUESTS=N fixes it
#   THREADS=2 CTX=512 SLOTS=16 both servers: CPU threads, context per sequence, sequences in flight
#   ADAPTERS="a0 ... a7"       names in store/ and WORKDIR/NAME.gguf (llama-server id k = k-th name)
#   SERVERS="qlora llama"      which servers to run (one of them alone works too)
#   ONE_AT_A_TIME=0            1: start each server for its run and stop it after (only one process up)
#   LLAMA_MODEL=WORKDIR/tl-f16.gguf  QLORA_BASE=WORKDIR/tl.qlb  QLORA_PORT=18181  LLAMA_PORT=18182
#   QLORA_EXTRA= LLAMA_EXTRA=  more flags for either server;  LOGDIR=WORKDIR/logs  PYTHON=python3
# On 2 cores with TinyLlama-1.1B the defaults take roughly 15-20 minutes (MAX_TOKENS=64 about twice that);
# llama-server's distinct-adapter runs are the slowest, since it decodes one adapter's slots per step.
set -euo pipefail

if [ $# -ne 3 ]; then
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
QLORA=$(realpath "$1")
LLAMA=$(realpath "$2")
WORK=$(realpath "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH="$HERE/bench_serve.py"

CASES=${CASES:-"base one distinct"}
CONCS=${CONCS:-"1 4 8 16"}
PROMPT_TOKENS=${PROMPT_TOKENS:-32}
MAX_TOKENS=${MAX_TOKENS:-32}
REQ_MULT=${REQ_MULT:-2}
MIN_REQ=${MIN_REQ:-8}
REQUESTS=${REQUESTS:-}
THREADS=${THREADS:-2}
CTX=${CTX:-512}
SLOTS=${SLOTS:-16}
ADAPTERS=${ADAPTERS:-"a0 a1 a2 a3 a4 a5 a6 a7"}
SERVERS=${SERVERS:-"qlora llama"}
ONE_AT_A_TIME=${ONE_AT_A_TIME:-0}
LLAMA_MODEL=${LLAMA_MODEL:-$WORK/tl-f16.gguf}
QLORA_BASE=${QLORA_BASE:-$WORK/tl.qlb}
QLORA_PORT=${QLORA_PORT:-18181}
LLAMA_PORT=${LLAMA_PORT:-18182}
QLORA_EXTRA=${QLORA_EXTRA:-}
LLAMA_EXTRA=${LLAMA_EXTRA:-}
LOGDIR=${LOGDIR:-$WORK/logs}
PYTHON=${PYTHON:-python3}
BASE_ID=tl

mkdir -p "$LOGDIR"
# shellcheck disable=SC2086 # split the list on purpose
ADAPTER_CSV=$(printf '%s,' $ADAPTERS)
ADAPTER_CSV=${ADAPTER_CSV%,}
for s in $SERVERS; do
    case $s in
    qlora)
        [ -x "$QLORA" ] || { echo "bench_serve.sh: no qlora binary at $QLORA" >&2; exit 1; }
        [ -f "$QLORA_BASE" ] || { echo "bench_serve.sh: no $QLORA_BASE" >&2; exit 1; }
        for a in $ADAPTERS; do [ -d "$WORK/store/$a" ] || { echo "bench_serve.sh: no $WORK/store/$a" >&2; exit 1; }; done ;;
    llama)
        [ -x "$LLAMA" ] || { echo "bench_serve.sh: no llama-server binary at $LLAMA" >&2; exit 1; }
        [ -f "$LLAMA_MODEL" ] || { echo "bench_serve.sh: no $LLAMA_MODEL" >&2; exit 1; }
        for a in $ADAPTERS; do [ -f "$WORK/$a.gguf" ] || { echo "bench_serve.sh: no $WORK/$a.gguf" >&2; exit 1; }; done ;;
    *) echo "bench_serve.sh: unknown server '$s' in SERVERS" >&2; exit 2 ;;
    esac
done

declare -A PID=()
declare -A PORT=([qlora]=$QLORA_PORT [llama]=$LLAMA_PORT)

start_server() {  # $1: qlora or llama
    local s=$1 log="$LOGDIR/$1.log"
    if [ "$s" = qlora ]; then
        # shellcheck disable=SC2086
        "$QLORA" serve --base "$QLORA_BASE" --adapter-dir "$WORK/store" --served-model-name "$BASE_ID" \
            --max-batch "$SLOTS" --ctx "$CTX" --threads "$THREADS" --host 127.0.0.1 --port "$QLORA_PORT" \
            $QLORA_EXTRA >>"$log" 2>&1 &
    else
        local loras=""
        for a in $ADAPTERS; do loras="${loras:+$loras,}$WORK/$a.gguf"; done
        # -c is the total context, split over the -np slots: SLOTS * CTX gives each slot CTX tokens.
        # --lora takes the files comma-separated (repeating it is deprecated); adapter id k is the k-th file.
        # --lora-init-without-apply: no adapter applied at start. Requests choose adapters with their "lora"
        # field; bench_serve.py sends one in every case, the base case with every scale 0, since a request
        # without it gets the global scales (1.0 here, whatever --lora-init-without-apply says).
        # --no-repack: weight repacking (AMX/AVX-512 layouts) faults on some of these VMs.
        # -cram 0: no host-memory prompt cache (requests also send "cache_prompt": false).
        # shellcheck disable=SC2086
        "$LLAMA" -m "$LLAMA_MODEL" --lora "$loras" --lora-init-without-apply --no-repack \
            -t "$THREADS" -tb "$THREADS" -c $((SLOTS * CTX)) -np "$SLOTS" --no-kv-unified -cram 0 \
            --no-webui --host 127.0.0.1 --port "$LLAMA_PORT" $LLAMA_EXTRA >>"$log" 2>&1 &
    fi
    PID[$s]=$!
    local t=0
    until curl -sf "http://127.0.0.1:${PORT[$s]}/health" >/dev/null 2>&1; do
        if ! kill -0 "${PID[$s]}" 2>/dev/null; then
            echo "bench_serve.sh: $s exited while starting; the end of $log:" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        t=$((t + 1))
        if [ $t -gt 600 ]; then echo "bench_serve.sh: $s not healthy after 300 s (see $log)" >&2; exit 1; fi
        sleep 0.5
    done
}

stop_server() {
    local s=$1
    if [ -n "${PID[$s]:-}" ]; then
        kill "${PID[$s]}" 2>/dev/null || true
        wait "${PID[$s]}" 2>/dev/null || true
        unset "PID[$s]"
    fi
}

# shellcheck disable=SC2317 # called by the trap
cleanup() { for s in "${!PID[@]}"; do stop_server "$s"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

field() {  # $1: key, $2: a serve_bench line
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

ratio() {  # $1 / $2, or nan
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "nan" || b == "nan" || b + 0 == 0) print "nan"; else printf "%.2f", a / b }'
}

echo "serve_bench_config qlora=$QLORA llama=$LLAMA work=$WORK llama_model=$(basename "$LLAMA_MODEL") cases=\"$CASES\"" \
    "concs=\"$CONCS\" prompt_tokens=$PROMPT_TOKENS max_tokens=$MAX_TOKENS threads=$THREADS ctx=$CTX slots=$SLOTS" \
    "adapters=$ADAPTER_CSV one_at_a_time=$ONE_AT_A_TIME nproc=$(nproc) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""

if [ "$ONE_AT_A_TIME" != 1 ]; then
    for s in $SERVERS; do start_server "$s"; done
fi

status=0
for c in $CASES; do
    for n in $CONCS; do
        if [ -n "$REQUESTS" ]; then req=$REQUESTS; else
            req=$((REQ_MULT * n))
            if [ $req -lt "$MIN_REQ" ]; then req=$MIN_REQ; fi
        fi
        declare -A LINE=()
        for s in $SERVERS; do
            if [ "$ONE_AT_A_TIME" = 1 ]; then start_server "$s"; fi
            out=$("$PYTHON" "$BENCH" --url "http://127.0.0.1:${PORT[$s]}" --server "$s" --case "$c" \
                --adapters "$ADAPTER_CSV" --base-model "$BASE_ID" --concurrency "$n" --requests "$req" \
                --prompt-tokens "$PROMPT_TOKENS" --max-tokens "$MAX_TOKENS") || status=1
            if [ "$ONE_AT_A_TIME" = 1 ]; then stop_server "$s"; fi
            LINE[$s]=$out
            echo "$out"
        done
        if [ -n "${LINE[qlora]:-}" ] && [ -n "${LINE[llama]:-}" ]; then
            q=${LINE[qlora]} l=${LINE[llama]}
            echo "serve_bench_ratio case=$c conc=$n qlora_over_llama:" \
                "tok_s=$(ratio "$(field tok_s "$q")" "$(field tok_s "$l")")" \
                "ttft_p50=$(ratio "$(field ttft_p50_ms "$q")" "$(field ttft_p50_ms "$l")")" \
                "ttft_p99=$(ratio "$(field ttft_p99_ms "$q")" "$(field ttft_p99_ms "$l")")" \
                "itl_p50=$(ratio "$(field itl_p50_ms "$q")" "$(field itl_p50_ms "$l")")" \
                "itl_p99=$(ratio "$(field itl_p99_ms "$q")" "$(field itl_p99_ms "$l")")" \
                "load1=$(cut -d' ' -f1 /proc/loadavg)"
        fi
        unset LINE
    done
done
exit $status
