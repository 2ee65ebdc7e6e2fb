# serve_lib.sh: sourced by the tests of qlora serve (after store_lib.sh).
# serve_start LOG ARGS...: starts `qlora serve ARGS --port 0` in the background
# and waits for its "listening" line; sets spid, port and url (fails the test
# and returns 1 when it does not come up in 30 s). serve_stop: SIGTERM, then
# checks the exit code is 0.
serve_start() {
    local log=$1; shift
    "$q" serve "$@" --port 0 2>"$log" &
    spid=$!
    for _ in $(seq 300); do
        port=$(sed -n 's/.*serve: listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
        [ -n "$port" ] && break
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        fail "the server did not start: $(tail -3 "$log")"
        return 1
    fi
    url=http://127.0.0.1:$port
}
serve_stop() {
    kill -TERM "$spid"
    local rc=0
    wait "$spid" || rc=$?
    [ "$rc" = 0 ] || fail "the server exited $rc on SIGTERM: $(tail -3 "$1")"
}
# post PATH BODY: the response body, then a line with the status code
post() { curl -s -w '\n%{http_code}' -H 'Content-Type: application/json' "$url$1" -d "$2" "${@:3}"; }
# the "text" (or chat "content") values of a streamed response, concatenated (still JSON-escaped)
sse_text() { grep '^data: {' | grep -v '"choices": \[\]' | sed -n 's/.*"\(text\|content\)": "\(.*\)"}*, "logprobs".*/\2/p' | tr -d '\n'; }
