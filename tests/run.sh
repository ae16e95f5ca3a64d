#!/usr/bin/env bash
# Runs the test suite with a JACK dummy server (started here unless one already answers).
set -uo pipefail
cd "$(dirname "$0")/.."
jack_pid=""
if [ "$(jack_wait -c 2>/dev/null)" != "running" ]; then
    jackd --no-realtime -d dummy -r 48000 -p 256 >/tmp/spectro-fx-jackd.log 2>&1 &
    jack_pid=$!
    jack_wait -w -t 10 >/dev/null || { echo "jackd did not start:"; cat /tmp/spectro-fx-jackd.log; exit 1; }
fi
stop_jack() { [ -n "$jack_pid" ] && kill -INT "$jack_pid" 2>/dev/null && wait "$jack_pid" 2>/dev/null; }
trap stop_jack EXIT
.venv/bin/python -m pytest "$@"
status=$?
# pytest exits 5 when a selection ran no test; that is not a failure of the suite
[ "$status" -eq 5 ] && status=0
exit "$status"
