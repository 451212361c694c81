#!/usr/bin/env bash
# Install the Debian packages mig2's build, tests and demo need, only if missing.
# Safe to run repeatedly, as root, with no terminal.
set -euo pipefail
pkgs=(qemu-system-x86 qemu-utils gnutls-bin lz4 pkg-config gcc libvirt-dev libvirt-daemon-system libvirt-clients iproute2 python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -o Dpkg::Options::=--force-confnew -o Dpkg::Options::=--force-confdef "${missing[@]}" >/dev/null
