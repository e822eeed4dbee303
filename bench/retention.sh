#!/usr/bin/env bash
# The state store's size after N daily engagement runs, with the engine's clock (USAGESYNC_NOW)
# and both emulators' clocks moved on a day before each run, then after `usagesync prune`.
# Prints one line per day (the SQLite file and its WAL) and the prune's report.
#
#   bench/retention.sh [BIN] ; ACCOUNTS=10000 DAYS=40 KEEP=30 by default
set -euo pipefail
bin=${1:-target/release/usagesync}
accounts=${ACCOUNTS:-10000}
days=${DAYS:-40}
keep=${KEEP:-30}
dir=$(mktemp -d)
"$bin" emulate --seed-salesforce --daily-api-requests 10000000 --accounts "$accounts" --days 30 >"$dir/addresses" 2>/dev/null &
emulators=$!
trap 'kill "$emulators" 2>/dev/null || true; rm -rf "$dir"' EXIT
until [ "$(grep -c '' "$dir/addresses")" -ge 2 ]; do sleep 0.2; done
salesforce=$(sed -n 's/^salesforce //p' "$dir/addresses")
pendo=$(sed -n 's/^pendo //p' "$dir/addresses")
sed -e "s#http://127.0.0.1:8443#$salesforce#" -e "s#http://127.0.0.1:8444#$pendo#" \
    -e "s#sqlite://usagesync.db#sqlite://$dir/state.db#" -e "s#history_days: 30#history_days: $keep#" \
    examples/usagesync.yaml >"$dir/usagesync.yaml"
export SF_CLIENT_SECRET=emulator-secret PENDO_INTEGRATION_KEY=emulator-integration-key
start=$(date -u +%s)
size() { du -cb "$dir"/state.db* | tail -1 | cut -f1; }
for d in $(seq 0 $((days - 1))); do
    now=$(date -u -d "@$((start + d * 86400))" +%Y-%m-%dT%H:%M:%SZ)
    curl -sf -X PUT "$salesforce/__emulator/clock" -H 'content-type: application/json' \
        -d "{\"advanceSeconds\": $([ "$d" = 0 ] && echo 0 || echo 86400)}" >/dev/null
    curl -sf -X PUT "$pendo/__emulator/clock" -H 'content-type: application/json' \
        -d "{\"offsetMs\": $((d * 86400000))}" >/dev/null
    written=$(USAGESYNC_NOW=$now "$bin" --config "$dir/usagesync.yaml" sync engagement --json | grep -o '"written": [0-9]*' | head -1)
    echo "day $((d + 1)) $now $written store_bytes $(size)"
done
USAGESYNC_NOW=$now "$bin" --config "$dir/usagesync.yaml" prune --dry-run --json
USAGESYNC_NOW=$now "$bin" --config "$dir/usagesync.yaml" prune --json
echo "after prune: store_bytes $(size)"
# Bytes per table and index, where the sqlite3 shell has the dbstat table.
if command -v sqlite3 >/dev/null; then
    sqlite3 "$dir/state.db" "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC" 2>/dev/null || true
fi
