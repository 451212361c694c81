#!/usr/bin/env bash
# `make demo`: migrate a real guest with mig2 (v2 handshake, TLS) between two local QEMUs and
# check on the destination that its memory arrived intact. The Makefile has already installed the
# packages and built bin/mig2 and the test guest; extra arguments go to the demo program
# (test/demo: -mem MiB, -touch MiB, -dirty MiB/s, -fill rand|text). MIG2_DEMO_KEEP=1 keeps its
# temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
MIG2=bin/mig2
for f in "$MIG2" test/guest/out/vmlinux test/guest/out/initrd.cpio.gz; do
  if [ ! -f "$f" ]; then
    echo "demo: $f is missing: run \`make demo\` (it installs, builds and then runs this script)" >&2
    exit 1
  fi
done
if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "demo: qemu-system-x86_64 is not installed: run \`make demo\` as root" >&2
  exit 1
fi

"$GO" build -o bin/mig2-demo ./test/demo
exec bin/mig2-demo -mig2 "$MIG2" "$@"
