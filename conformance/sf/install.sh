#!/usr/bin/env bash
# Installs the pinned Salesforce CLI (and the Node.js 22 runtime package it runs on) from the npm
# registry, exactly as package-lock.json says, and prints the folder that holds it.
#
# Usage: conformance/sf/install.sh [CACHE_ROOT]
#
# The install (about 480 MB, a minute over the network) is kept between runs on this machine in
# CACHE_ROOT/sf-cli-<hash of package.json and package-lock.json> (CACHE_ROOT defaults to
# $USAGESYNC_CACHE, else $XDG_CACHE_HOME/usagesync, else ~/.cache/usagesync), so a run whose
# pins did not change reuses it; a changed pin installs into a new folder and removes the old
# ones. Install scripts are skipped (--ignore-scripts): the CLI needs none, and the runtime
# package ships its binary in the tarball. Progress goes to stderr; stdout is the folder only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${1:-${USAGESYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usagesync}}
HASH=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-16)
DIR=$ROOT/sf-cli-$HASH

start=$SECONDS
if [[ -f $DIR/.installed ]]; then
  echo "install.sh: the Salesforce CLI is cached in $DIR" >&2
else
  mkdir -p "$ROOT"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$DIR/"
  (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  touch "$DIR/.installed"
  # Older pins' installs are dead weight once a new one is complete.
  find "$ROOT" -maxdepth 1 -name 'sf-cli-*' ! -name "sf-cli-$HASH" -exec rm -rf {} +
  echo "install.sh: installed the Salesforce CLI into $DIR in $((SECONDS - start)) s" >&2
fi
echo "$DIR"
