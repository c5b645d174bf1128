#!/usr/bin/env bash
# Install the Debian packages listed in debian-packages.txt (or the list file
# given as the first argument) when missing.
# As root this runs apt-get; otherwise it names the command to run and fails.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
list="${1:-$here/debian-packages.txt}"
missing=()
while read -r pkg; do
  pkg=${pkg%%#*}; pkg=${pkg//[[:space:]]/}
  [ -z "$pkg" ] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$list"
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "tinygru: missing Debian packages: ${missing[*]}" >&2
  echo "tinygru: run as root:  apt-get update && $cmd" >&2
  exit 1
fi
echo "tinygru: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
