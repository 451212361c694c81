// Command bench is mig2's migration benchmark: `make bench` runs it and writes docs/bench/
// (README.md with tables and verdicts, one SVG plot per memory fill, results.json).
//
// The test guest (test/guest: 2 GiB RAM, 1 GiB filled with random or text-like content and
// rewritten at 0, 50 or 200 MiB/s) is migrated back and forth between two QEMUs on this machine
// by every contender in turn, interleaved within each repetition:
//
//	qemu-defaults    raw QMP migrate, nothing changed (what a plain-QEMU user gets)
//	virsh            virsh migrate --live, in the two-host libvirt lab (test/integration/lab)
//	virsh-parallel8  virsh migrate --live --parallel --parallel-connections 8 (KubeVirt's default)
//	tuned-tls        the fastest raw-QMP setting a sweep found for this case, with TLS
//	tuned-plain      the same, without TLS
//	mig2-tls         mig2 migrate --qmp SRC --tls-dir PKI bench mig2://AGENT (no tuning flags)
//	mig2-insecure    the same with --insecure on both sides
//	mig2-v1          mig2 migrate --protocol v1 --qmp SRC --dest-qmp DST bench tcp:127.0.0.1:PORT
//
// Each migration gets a fresh destination QEMU (-incoming defer) started on the other side and
// left idle for a second; the guest's heartbeat on the destination's serial console confirms
// that it runs before the old source is stopped. Every migration has a convergence cap (40 s):
// then it is cancelled and recorded as not converged. Loopback TCP (1 and 4 streams) and memory
// copy bandwidth are measured in the same run as ceilings.
//
// Settings for development come from flags or the environment:
//
//	BENCH_REPS=3                   repetitions per contender and case
//	BENCH_CASES=rand:0,text:50     cases as FILL:DIRTY_MIBPS (default: all six)
//	BENCH_SWEEP=full|reduced|minimal   the hand-tuned sweep (default full: 16 settings per security level)
//	BENCH_LIBVIRT=0                skip the libvirt lab and its two contenders
//	BENCH_CAP=40s                  convergence cap
//	BENCH_CONTENDERS=tuned-plain,mig2-insecure   only these contenders in the repetitions
//	BENCH_MEM_MIB=2048, BENCH_TOUCH_MIB=1024   guest RAM and how much of it is filled
//	BENCH_OUT=docs/bench           where the report goes
//	BENCH_KEEP=1                   keep the working directory (logs, certificates)
//	BENCH_AGENT_LOG_LEVEL=debug    the agents' log level (debug logs their preparation times)
//	BENCH_WARM_MIB=3072            touch and free this much memory before each run, outside the
//	                               clock (0: off; why: warmHostMemory in local.go, docs/bench/NOTES.md)
//
// `bench -from docs/bench/results.json` runs nothing and writes the report again from saved
// results (after a change to the report code).
//
// Every process the benchmark starts (QEMUs, agents, mig2, the lab) is stopped by pid when it
// ends, fails or is interrupted.
package main
