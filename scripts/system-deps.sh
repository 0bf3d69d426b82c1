#!/usr/bin/env bash
# Install the Debian packages speechbatch needs that are not already present.
# Usage: scripts/system-deps.sh espeak-ng redis-server postgresql
set -euo pipefail

missing=()
for package in "$@"; do
  case "$package" in
    postgresql) present=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -n1) ;;
    *) present=$(command -v "$package" || true) ;;
  esac
  [ -n "$present" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts services it installs; the tests start their own on free ports.
