// Package soak migrates the self-checking test guest back and forth many times and checks every
// arrival: between two plain QEMUs (a fresh incoming QEMU and the same long-lived agents each
// time) and between the two libvirt hosts of the namespace lab. After every migration the guest
// verifies its memory through its console, and the receiving agent's resident memory (from
// /proc), Go heap and goroutine count (its SIGUSR1 stats line) are sampled, so a leak shows as a
// trend.
//
// It is not part of `make test`: run `make soak` (build tag "soak"). SOAK_PLAIN (default 100)
// and SOAK_LAB (default 40: 20 arrivals per lab agent, enough to judge a trend after the
// agent's warm-up) set the number of migrations; SOAK_OUT the JSON results file (default
// test/soak/results.json), which test/tools/reliability turns into docs/RELIABILITY.md.
package soak
