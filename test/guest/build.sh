#!/bin/bash
# Build the mig2 migration test guest (see doc.go of package guest).
#
#   test/guest/build.sh [all|kernel|initrd]     (default: all)
#
# kernel: the Debian cloud kernel that linux-image-cloud-amd64 depends on,
#         downloaded once with `apt-get download` (kept in out/deb/), unpacked
#         with dpkg-deb, and its LZ4 payload decompressed to the ELF out/vmlinux,
#         which QEMU boots directly through the PVH entry point.
#         With `all`, skipped when out/vmlinux already exists.
# initrd: out/initrd.cpio.gz, a newc cpio whose /init is the static Go program
#         in initprog/ (CGO_ENABLED=0).
#
# Environment: MIG2_GUEST_OUT overrides the output directory (default test/guest/out),
# GO the go binary. Runs as root on Debian 12 without a terminal.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${MIG2_GUEST_OUT:-$HERE/out}
GO=${GO:-go}
what=${1:-all}
export DEBIAN_FRONTEND=noninteractive

log() { echo "guest: $*" >&2; }
die() { echo "guest: error: $*" >&2; exit 1; }

mkdir -p "$OUT/work" "$OUT/deb"

mkimage() {
	if [ ! -x "$OUT/work/mkimage" ] || [ -n "$(find "$HERE/internal/mkimage" -newer "$OUT/work/mkimage" -name '*.go')" ]; then
		(cd "$ROOT" && CGO_ENABLED=0 "$GO" build -o "$OUT/work/mkimage" ./test/guest/internal/mkimage)
	fi
	"$OUT/work/mkimage" "$@"
}

apt_install() {
	log "installing $*"
	apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y --no-install-recommends "$@" >/dev/null; } ||
		die "apt-get install $* failed"
}

kernel_package() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'
}

build_kernel() {
	command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian is required to fetch the guest kernel)"
	command -v lz4 >/dev/null || apt_install lz4
	local kpkg deb
	kpkg=$(kernel_package)
	if [ -z "$kpkg" ]; then
		log "apt-get update (no linux-image-cloud-amd64 in the package lists)"
		apt-get update -q >/dev/null || die "apt-get update failed"
		kpkg=$(kernel_package)
	fi
	[ -n "$kpkg" ] || die "cannot resolve the package linux-image-cloud-amd64 depends on"
	deb=$(ls "$OUT/deb/${kpkg}"_*.deb 2>/dev/null | tail -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading $kpkg"
		(cd "$OUT/deb" && apt-get download -q "$kpkg" 2>&1 | grep -v 'unsandboxed as root' >&2 || true)
		deb=$(ls "$OUT/deb/${kpkg}"_*.deb 2>/dev/null | tail -n1 || true)
		[ -n "$deb" ] || die "apt-get download $kpkg failed"
	fi
	log "kernel from $(basename "$deb")"
	rm -rf "$OUT/work/kx"
	dpkg-deb -x "$deb" "$OUT/work/kx"
	local vmlinuz
	vmlinuz=$(ls "$OUT"/work/kx/boot/vmlinuz-* | head -n1)
	mkimage lz4payload "$vmlinuz" "$OUT/work/kernel.lz4"
	# lz4 stops with an error at the bzImage trailer after the payload: judge by the result.
	lz4 -dc "$OUT/work/kernel.lz4" >"$OUT/work/vmlinux.tmp" 2>/dev/null || true
	mkimage checkelf "$OUT/work/vmlinux.tmp" || die "vmlinux extraction failed"
	cp "$vmlinuz" "$OUT/vmlinuz"
	echo "$kpkg $(basename "$deb")" >"$OUT/kernel.txt"
	mv -f "$OUT/work/vmlinux.tmp" "$OUT/vmlinux"
	rm -rf "$OUT/work/kx" "$OUT/work/kernel.lz4"
	log "wrote $OUT/vmlinux ($(du -h "$OUT/vmlinux" | cut -f1))"
}

build_initrd() {
	command -v "$GO" >/dev/null || die "go not found"
	(cd "$ROOT" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags='-s -w' -o "$OUT/work/init" ./test/guest/initprog)
	mkimage cpio "$OUT/initrd.cpio.gz" "$OUT/work/init"
	log "wrote $OUT/initrd.cpio.gz ($(du -h "$OUT/initrd.cpio.gz" | cut -f1))"
}

case $what in
all)
	[ -s "$OUT/vmlinux" ] || build_kernel
	build_initrd
	;;
kernel) build_kernel ;;
initrd) build_initrd ;;
*) die "usage: $0 [all|kernel|initrd]" ;;
esac
