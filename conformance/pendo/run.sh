#!/usr/bin/env bash
# Conformance: the unmodified tap-pendo (Singer, pinned in requirements.txt) discovers and syncs
# accounts, visitors, features, guides, events and poll events from the Pendo emulator, and the
# record counts must equal what the emulator holds. Only the tap's base-URL constant is pointed
# at the emulator (run_tap.py). Exits non-zero on any failure.
#
# Environment: CARGO_TARGET_DIR (shared build dir, optional), TAP_PENDO_VENV (virtualenv to
# create or reuse; default target/tap-pendo-venv), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${TAP_PENDO_VENV:-$target/tap-pendo-venv}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
emu_pid=""
cleanup() {
  if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; fi
  if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ ! -x "$venv/bin/tap-pendo" ]; then
  echo "Installing tap-pendo into $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi

echo "Building the emulator launcher"
(cd "$root" && cargo build --quiet -p pendo --example pendo_emulator)
"$target/debug/examples/pendo_emulator" serve --addr 127.0.0.1:0 --accounts 12 --seed 4 --days 6 >"$work/emulator.out" &
emu_pid=$!
base=""
for _ in $(seq 1 100); do
  base="$(sed -n 's/^pendo //p' "$work/emulator.out" | head -n1)"
  [ -n "$base" ] && break
  kill -0 "$emu_pid" 2>/dev/null || { echo "emulator exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { echo "emulator did not report its URL" >&2; exit 1; }
echo "Emulator at $base"

key="emulator-integration-key"
start_date="2020-01-01T00:00:00Z"
start_ms=1577836800000
run_pass() {
  local name="$1" extra="$2"
  cat >"$work/config.json" <<JSON
{"x_pendo_integration_key": "$key", "start_date": "$start_date", "period": "dayRange", "lookback_window": "0"$extra}
JSON
  echo "[$name] Discovering"
  "$venv/bin/python" "$here/run_tap.py" "$base" --config "$work/config.json" --discover >"$work/catalog.json" 2>"$work/discover.log" \
    || { cat "$work/discover.log" >&2; return 1; }
  "$venv/bin/python" "$here/select_streams.py" "$work/catalog.json" "$work/selected.json" \
    accounts visitors features guides events poll_events
  echo "[$name] Syncing (tap-pendo paces itself at one request per 2 s)"
  "$venv/bin/python" "$here/run_tap.py" "$base" --config "$work/config.json" --catalog "$work/selected.json" \
    >"$work/out.jsonl" 2>"$work/sync.log" || { tail -n 40 "$work/sync.log" >&2; return 1; }
  "$venv/bin/python" "$here/check.py" "$base" "$key" "$start_ms" "$work/out.jsonl" "$work/catalog.json"
}

# One pass with the tap's default page size (everything in one page), one with small pages so
# its keyset paging (visitors by id with a count pre-check, accounts by lastupdated, events by
# day) runs across page boundaries.
run_pass "single page" ""
run_pass "paged" ', "record_limit": "100"'
