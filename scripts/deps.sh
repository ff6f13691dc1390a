#!/usr/bin/env bash
# scripts/deps.sh - installs the Debian packages named on the command line that are missing.
# As root it runs apt-get; otherwise it says exactly what to install and fails.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "bnorm: missing packages: ${missing[*]}" >&2
    echo "bnorm: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "bnorm: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
