// Package guest runs the mig2 migration test guest under QEMU and talks to it
// over its serial console.
//
// The guest is a Debian cloud kernel (booted as an ELF vmlinux through QEMU's
// PVH entry) and an initramfs whose /init is the static Go program in
// test/guest/initprog. Build both with `make guest` (test/guest/build.sh);
// [FindImage] locates them. The guest fills a configurable amount of RAM with
// content it can verify byte for byte, dirties it at a configurable rate, and
// prints "QB ..." lines on the serial port (package qbline defines them;
// [ParseLine] parses them).
//
// [Start] launches QEMU (-accel tcg, pti=on: FACTS.md, QEMU 7.2 TCG loses
// dirty pages otherwise) with a QMP socket and the serial port on unix
// sockets in Options.Dir; it returns once the QMP socket exists and the
// [Console] is connected. The harness never connects to the QMP socket
// itself: QEMU serves one QMP client and that is the caller's.
//
//	q, err := guest.Start(ctx, guest.Options{Name: "src", Dir: dir, DirtyMiBps: 50})
//	defer q.Kill()
//	ready, err := q.Console().WaitReady(ctx)
//	res, err := q.Console().Verify(ctx) // res.Bad == 0 when no page was lost
//
// A destination QEMU is started with Options.Incoming (-incoming defer); its
// console stays connected and picks up the guest's output once the migration
// has switched over, so WaitHeartbeat and Verify work there ("QB ready" was
// printed on the source and is not repeated).
//
// Tests use [StartTest], which fails (or skips with MIG2_ALLOW_SKIP=1) when
// QEMU or the image is missing, kills QEMU in t.Cleanup and logs the console
// and QEMU's stderr when the test failed.
package guest
