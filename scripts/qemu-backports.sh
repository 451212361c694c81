#!/usr/bin/env bash
# Unpack Debian bookworm-backports' QEMU (10.0 when written) into a private prefix, beside the
# system's QEMU 7.2, without installing it: for measuring mig2 on a QEMU that has the
# multifd-teardown trait (SPEC §4.0.1). Nothing of the system changes; apt runs with its own
# source list, lists and archive cache under the prefix.
#
#   scripts/qemu-backports.sh [PREFIX]     (default /var/cache/mig2/qemu-backports)
#
# It prints the path of a qemu-system-x86_64 wrapper that runs the unpacked binary with its own
# modules and firmware directories; point MIG2_QEMU at it for the tests and the bench:
#   MIG2_QEMU=$(scripts/qemu-backports.sh) make bench
set -euo pipefail
prefix=${1:-/var/cache/mig2/qemu-backports}
suite=${QEMU_BACKPORTS_SUITE:-bookworm-backports}
wrapper=$prefix/bin/qemu-system-x86_64
if [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi
apt_dir=$prefix/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$prefix/debs"
echo "deb http://deb.debian.org/debian $suite main" >"$apt_dir/sources.list"
apt_opts=(-q -o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
  -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" update </dev/null >&2
# The system emulator, its common and data files, the firmware it wants, and every module the
# system QEMU has too (QEMU looks for a module it lacks in the system's module directory, and
# aborts on one from another build); the libraries they link are bookworm's own, installed with
# the system QEMU by scripts/deps.sh.
cd "$prefix/debs"
rm -f ./*.deb
apt-get "${apt_opts[@]}" download \
  "qemu-system-x86/$suite" "qemu-system-common/$suite" "qemu-system-data/$suite" "seabios/$suite" \
  "qemu-system-modules-opengl/$suite" "qemu-system-modules-spice/$suite" </dev/null >&2
rm -rf "$prefix/root"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$prefix/root"; done
bin=$prefix/root/usr/bin/qemu-system-x86_64
if missing=$(ldd "$bin" "$prefix"/root/usr/lib/x86_64-linux-gnu/qemu/*.so | grep -B1000 'not found'); then
  echo "qemu-backports: the unpacked QEMU lacks libraries:" >&2
  echo "$missing" >&2
  exit 1
fi
mkdir -p "$prefix/bin"
cat >"$wrapper" <<EOF
#!/bin/sh
# $( "$bin" --version | head -1 ), unpacked by scripts/qemu-backports.sh: its own modules, and
# its own firmware first (the system QEMU's would be loaded otherwise, and refused).
QEMU_MODULE_DIR="$prefix/root/usr/lib/x86_64-linux-gnu/qemu" exec "$bin" -L "$prefix/root/usr/share/qemu" -L "$prefix/root/usr/share/seabios" "\$@"
EOF
chmod 755 "$wrapper"
"$wrapper" --version >&2
echo "$wrapper"
