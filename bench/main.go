package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/v2proto/testcerts"
)

// guestName is the guest's name for mig2 (migrate's DOMAIN and the agents' --guest).
const guestName = "bench"

// sideNames name the two local QEMU slots the guest moves between.
var sideNames = [2]string{"a", "b"}

type bench struct {
	cfg    Config
	mig2   string
	out    string
	keep   bool
	dir    string // working directory: sockets, logs, certificates
	pki    string
	img    guest.Image
	agents map[string]*agent // by security level and side: "tls-a", "plain-b"
	lab    *labEnv
	res    Results
}

func main() { os.Exit(realMain()) }

func realMain() int {
	cfg, err := configFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b := &bench{cfg: cfg, keep: os.Getenv("BENCH_KEEP") == "1"}
	cases := ""
	flag.StringVar(&b.mig2, "mig2", "bin/mig2", "the mig2 binary")
	flag.StringVar(&b.out, "out", envOr("BENCH_OUT", "docs/bench"), "where README.md, the plots and results.json go")
	flag.IntVar(&b.cfg.Reps, "reps", cfg.Reps, "repetitions per contender and case (BENCH_REPS)")
	flag.StringVar(&cases, "cases", "", "cases as FILL:DIRTY_MIBPS,... (BENCH_CASES; default all six)")
	flag.StringVar(&b.cfg.Sweep, "sweep", cfg.Sweep, "hand-tuned sweep: full, reduced or minimal (BENCH_SWEEP)")
	flag.BoolVar(&b.cfg.Libvirt, "libvirt", cfg.Libvirt, "run the libvirt lab contenders (BENCH_LIBVIRT)")
	flag.DurationVar(&b.cfg.Cap, "cap", cfg.Cap, "convergence cap per migration (BENCH_CAP)")
	from := flag.String("from", "", "run nothing: write the report again from this results.json (after a change to the report code)")
	flag.Parse()
	if *from != "" {
		if err := rerender(*from, b.out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	if cases != "" {
		if b.cfg.Cases, err = parseCases(cases); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	if b.cfg.Reps < 1 || (b.cfg.Sweep != sweepFull && b.cfg.Sweep != sweepReduced && b.cfg.Sweep != sweepMinimal) {
		fmt.Fprintln(os.Stderr, "bench: -reps must be >= 1 and -sweep full, reduced or minimal")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = b.run(ctx)
	switch {
	case b.dir == "":
	case b.keep || err != nil:
		fmt.Printf("bench: working directory kept: %s\n", b.dir)
	default:
		os.RemoveAll(b.dir)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintf(os.Stderr, "\nBENCH FAILED: %v\n", err)
		return 1
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func logf(format string, args ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// run is the whole benchmark. Every process it starts is stopped before it returns.
func (b *bench) run(ctx context.Context) (err error) {
	b.res.Started = time.Now()
	b.res.Config = b.cfg
	if b.mig2, err = filepath.Abs(b.mig2); err != nil {
		return err
	}
	if _, err := os.Stat(b.mig2); err != nil {
		return fmt.Errorf("bench: mig2 binary: %w (run `make build`)", err)
	}
	if b.img, err = guest.FindImage(); err != nil {
		return fmt.Errorf("bench: %w (run `make guest`)", err)
	}
	// Unix socket paths are limited to 107 bytes: a short directory.
	if b.dir, err = os.MkdirTemp("/tmp", "mig2-bench."); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	// A private copy of mig2: a rebuild of bin/mig2 during the run must not mix versions
	// between the agents and mig2 migrate.
	// mig2 starts mig2-guard, and runs mig2-libvirt for libvirt domains, when they are next to it.
	companions := []string{"mig2-guard", "mig2-libvirt"}
	from := filepath.Dir(b.mig2)
	if b.mig2, err = copyExecutable(b.mig2, filepath.Join(b.dir, "mig2")); err != nil {
		return err
	}
	for _, c := range companions {
		if _, err := os.Stat(filepath.Join(from, c)); err == nil {
			if _, err := copyExecutable(filepath.Join(from, c), filepath.Join(b.dir, c)); err != nil {
				return err
			}
		}
	}
	b.pki = filepath.Join(b.dir, "pki")
	if err := testcerts.Write(b.pki, []string{"127.0.0.1", "localhost"}, "CN=mig2-bench-source,O=mig2 bench"); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	// An expert's PKI has dh-params.pem: without it QEMU generates DH parameters for every
	// server-side credential (~0.4 s), which mig2 avoids on its own but a hand-tuned run would pay.
	if err := writeDHParams(ctx, filepath.Join(b.pki, "dh-params.pem")); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	logf("bench: %d case(s) %v, %d repetition(s), sweep %s, libvirt %v, cap %s; working directory %s",
		len(b.cfg.Cases), b.cfg.Cases, b.cfg.Reps, b.cfg.Sweep, b.cfg.Libvirt, b.cfg.Cap, b.dir)

	b.res.Machine = describeMachine(ctx, b.mig2)
	logf("machine: %s, %d cores, %.1f GiB, kernel %s; %s; %s", b.res.Machine.CPU, b.res.Machine.Cores,
		float64(b.res.Machine.RAMBytes)/(1<<30), b.res.Machine.Kernel, b.res.Machine.QEMU, b.res.Machine.Libvirt)
	if err := b.measureCeilings(ctx); err != nil {
		return err
	}

	if err := b.startAgents(ctx); err != nil {
		return err
	}
	defer b.stopAgents()
	if b.cfg.Libvirt {
		if b.lab, err = upLab(ctx, b.img, b.dir, b.cfg.WarmMiB<<20); err != nil {
			return err
		}
		defer b.lab.down()
		b.res.Machine.Libvirt = b.lab.libvirtVersion(ctx, b.res.Machine.Libvirt)
	}

	for i, cs := range b.cfg.Cases {
		logf("=== case %d/%d: %s (%d MiB RAM, %d MiB %s-filled, dirtied at %d MiB/s)", i+1, len(b.cfg.Cases), cs,
			b.cfg.MemMiB, b.cfg.TouchMiB, cs.Fill, cs.Dirty)
		cr := b.runCase(ctx, cs)
		b.res.Cases = append(b.res.Cases, cr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cr.Error != "" {
			logf("case %s ABORTED: %s", cs, cr.Error)
		}
		b.writePartial()
	}
	b.res.Agents = b.agentStats()
	if err := b.measureCeilings(ctx); err != nil {
		return err
	}
	b.res.Wall = time.Since(b.res.Started)
	b.res.Stats = summarize(b.res.Cases, b.res.Ceilings)
	b.res.Verdicts = verdicts(b.res.Cases, b.res.Stats)
	if err := writeReport(b.out, &b.res); err != nil {
		return err
	}
	fmt.Print("\n" + verdictText(&b.res))
	logf("bench: done in %s; report in %s", b.res.Wall.Round(time.Second), filepath.Join(b.out, "README.md"))
	return nil
}

// rerender writes the report from a results.json, with the stats and verdicts computed anew.
func rerender(path, out string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var res Results
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	res.Stats = summarize(res.Cases, res.Ceilings)
	res.Verdicts = verdicts(res.Cases, res.Stats)
	if err := writeReport(out, &res); err != nil {
		return err
	}
	fmt.Print(verdictText(&res))
	return nil
}

// measureCeilings measures the physical ceilings (at the start and again at the end of the
// run: the machine is shared, and the higher figure is the one it can reach).
func (b *bench) measureCeilings(ctx context.Context) error {
	c, err := measureCeilings(ctx, b.cfg.Streams)
	if err != nil {
		return err
	}
	debug.FreeOSMemory() // the memory-copy buffers
	logf("ceilings: loopback TCP %s (1 stream), %s (%d streams); memcpy %s", rate(c.TCP1), rate(c.TCPN), c.Streams, rate(c.Memcpy))
	b.res.CeilingsMeasured = append(b.res.CeilingsMeasured, c)
	b.res.Ceilings = maxCeilings(b.res.CeilingsMeasured)
	return nil
}

func copyExecutable(src, dst string) (string, error) {
	data, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, data, 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("bench: copy %s: %w", src, err)
	}
	return dst, nil
}

// writePartial saves the results so far in the working directory (a crash keeps them).
func (b *bench) writePartial() {
	data, err := json.MarshalIndent(&b.res, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(b.dir, "results.partial.json"), data, 0o644)
	}
	if err != nil {
		logf("bench: saving partial results: %v", err)
	}
}

// rate formats bytes per second.
func rate(bps float64) string {
	switch {
	case bps >= 1<<30:
		return fmt.Sprintf("%.2f GiB/s", bps/(1<<30))
	case bps >= 1<<20:
		return fmt.Sprintf("%.0f MiB/s", bps/(1<<20))
	}
	return fmt.Sprintf("%.0f B/s", bps)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errGuestLost = errors.New("bench: guest lost")

// writeDHParams writes the standard RFC 7919 group that `certtool --get-dh-params` prints.
func writeDHParams(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "certtool", "--get-dh-params", "--sec-param", "medium").Output()
	if err != nil {
		return fmt.Errorf("certtool --get-dh-params: %w", err)
	}
	s := string(out)
	i, j := strings.Index(s, "-----BEGIN DH PARAMETERS-----"), strings.Index(s, "-----END DH PARAMETERS-----")
	if i < 0 || j < i {
		return fmt.Errorf("certtool --get-dh-params printed no DH PARAMETERS block")
	}
	return os.WriteFile(path, []byte(s[i:j+len("-----END DH PARAMETERS-----")]+"\n"), 0o644)
}
