#!/usr/bin/env bash
# Conformance: the unmodified tap-pendo (Singer, pinned in requirements.txt) discovers and syncs
# accounts, visitors, features, guides, events and poll events from the Pendo emulator, and the
# record counts must equal what the emulator holds. Only the tap's base-URL constant is pointed
# at the emulator (run_tap.py). Exits non-zero on any failure.
#
# Then, when a Python 3.9 or 3.10 is available (airbyte-cdk 0.80 needs one), the unmodified
# Airbyte Pendo source runs check, discover and read against the same emulator.
#
# Environment: CARGO_TARGET_DIR (shared build dir, optional), TAP_PENDO_VENV (virtualenv to
# create or reuse; default target/tap-pendo-venv), PYTHON (default python3), AIRBYTE_PYTHON
# (a Python 3.9/3.10 for the Airbyte source; searched for when unset), REQUIRE_AIRBYTE=1 (fail
# instead of skipping when no such Python exists), AIRBYTE_VENV (default
# target/airbyte-pendo-venv).
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

find_airbyte_python() {
  if [ -n "${AIRBYTE_PYTHON:-}" ]; then echo "$AIRBYTE_PYTHON"; return; fi
  for candidate in python3.10 python3.9 "$HOME"/.pyenv/versions/3.10.*/bin/python3.10 "$HOME"/.pyenv/versions/3.9.*/bin/python3.9; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 9), (3, 10)) else 1)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
}

airbyte_python="$(find_airbyte_python || true)"
if [ -z "$airbyte_python" ]; then
  if [ -n "${REQUIRE_AIRBYTE:-}" ]; then echo "no Python 3.9/3.10 for the Airbyte source" >&2; exit 1; fi
  echo "[airbyte] SKIPPED: airbyte-cdk 0.80 needs Python 3.9 or 3.10 and none was found"
  exit 0
fi
abvenv="${AIRBYTE_VENV:-$target/airbyte-pendo-venv}"
if [ ! -x "$abvenv/bin/source-pendo" ]; then
  echo "[airbyte] Installing airbyte-source-pendo into $abvenv"
  "$airbyte_python" -m venv "$abvenv"
  "$abvenv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements-airbyte.txt"
fi
echo "{\"api_key\": \"$key\"}" >"$work/ab_config.json"
echo '{"api_key": "not-a-key"}' >"$work/ab_bad.json"
ab() { "$abvenv/bin/python" "$here/run_airbyte.py" "$base" "$@"; }
echo "[airbyte] check, discover, read"
ab check --config "$work/ab_config.json" >"$work/ab_check.jsonl" 2>"$work/ab.log" || true
ab check --config "$work/ab_bad.json" >"$work/ab_check_bad.jsonl" 2>>"$work/ab.log" || true
ab discover --config "$work/ab_config.json" >"$work/ab_discover.jsonl" 2>>"$work/ab.log" || { tail -n 30 "$work/ab.log" >&2; exit 1; }
"$abvenv/bin/python" - "$work/ab_discover.jsonl" "$work/ab_catalog.json" <<'PY'
import json, sys
catalog = next(json.loads(l)["catalog"] for l in open(sys.argv[1]) if l.startswith("{") and json.loads(l).get("type") == "CATALOG")
configured = {"streams": [{"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"} for s in catalog["streams"]]}
json.dump(configured, open(sys.argv[2], "w"))
PY
ab read --config "$work/ab_config.json" --catalog "$work/ab_catalog.json" >"$work/ab_read.jsonl" 2>>"$work/ab.log" || { tail -n 30 "$work/ab.log" >&2; exit 1; }
"$abvenv/bin/python" "$here/check_airbyte.py" "$base" "$key" "$work/ab_check.jsonl" "$work/ab_check_bad.jsonl" "$work/ab_discover.jsonl" "$work/ab_read.jsonl"
