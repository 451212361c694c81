// Command initprog is /init of the mig2 test guest: a static Go program that
// runs as PID 1 in an initramfs, fills guest memory with content it can
// verify byte for byte, dirties it at a steady rate and reports on the serial
// console (see package qbline for the line format).
//
// Kernel command line knobs (read from /proc/cmdline):
//
//	qb_mem=MiB       memory to fill (default 1024; 0 = idle guest)
//	qb_rate=MiB/s    page-dirtying rate after the fill (default 0)
//	qb_fill=rand|text  rand = incompressible, text = compressible pseudo-text
//	qb_hb=ms         heartbeat period (default 1000)
//	qb_corrupt=S     debug: S seconds after ready, flip one byte of one page
//	                 without updating the bookkeeping and print "QB corrupted page=N"
//	qb_verify=N      full verify every N heartbeats (default 0 = on request only)
//
// Integrity: the content of every 4 KiB page is a pure function of (page
// index, generation[page], fill mode); see pageFiller. The generation table
// lives in guest RAM. A verify regenerates every page and compares all 4096
// bytes, so a page that migration lost, delivered stale, or damaged in any
// byte is found.
//
// Requests: the harness writes "verify K" lines to the serial port; the guest
// pauses dirtying, verifies every touched page and prints a verify line with
// req=K. PID 1 never exits: a fatal error prints "QB error ..." and the
// program sleeps forever.
//
// Build it with CGO_ENABLED=0 (test/guest/build.sh).
package main
