// Command demo migrates a real guest with mig2 between two QEMUs on this machine, step by step,
// and proves the guest's memory arrived intact. `make demo` runs it (through scripts/demo.sh);
// it is also a worked example of using mig2:
//
//	mig2 agent --listen HOST:PORT --tls-dir PKI --guest NAME=QMP_SOCKET[,log=PATH]   # destination
//	mig2 migrate --qmp QMP_SOCKET --tls-dir PKI NAME mig2://HOST:PORT               # source
//
// The guest is the self-checking test guest (test/guest): it fills -touch MiB of its RAM with
// content it can verify and rewrites it at -dirty MiB/s while it is migrated over TLS. Every
// process the demo starts is stopped when it ends, fails or is interrupted.
//
//	demo -mig2 bin/mig2 [-mem 2048] [-touch 1024] [-dirty 50] [-fill rand|text]
//
// MIG2_DEMO_KEEP=1 keeps the temporary directory (certificates, sockets, logs).
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/mig2/mig2/driver"
	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/v2proto/testcerts"
)

const steps = 7

// mig2 migrate's exit codes (cmd/mig2/exitcodes.go), to explain a failure.
var exitMeaning = map[int]string{
	1: "internal error", 2: "usage error", 3: "incompatible: refused before any RAM moved",
	4: "could not reach the agent, or TLS/authorization failed", 5: "migration failed; the source guest is running",
	6: "cancelled or timed out; the source guest is running", 7: "the source guest's state could not be confirmed",
}

type demo struct {
	mig2                     string
	memMiB, touchMiB, dirty  int
	fill                     string
	dir, pki, agentLog, addr string
	src, dst                 *guest.QEMU
	agent                    *exec.Cmd
	agentDone                chan struct{} // closed when the agent has exited
	started                  time.Time
}

func main() {
	d := &demo{started: time.Now()}
	flag.StringVar(&d.mig2, "mig2", "bin/mig2", "path of the mig2 binary")
	flag.IntVar(&d.memMiB, "mem", 2048, "guest RAM in MiB")
	flag.IntVar(&d.touchMiB, "touch", 1024, "MiB of RAM the guest fills with verifiable content")
	flag.IntVar(&d.dirty, "dirty", 50, "MiB/s the guest rewrites while it is migrated")
	flag.StringVar(&d.fill, "fill", "rand", "memory content: rand (incompressible) or text (compressible)")
	flag.Parse()
	os.Exit(d.main())
}

func (d *demo) main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := d.run(ctx)
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	step(7, "Cleaning up")
	d.stopAll()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nDEMO FAILED: %v\n", err)
		if ctx.Err() == nil {
			d.showLogs()
		}
	}
	switch {
	case d.dir == "":
	case os.Getenv("MIG2_DEMO_KEEP") == "1":
		fmt.Printf("Kept %s (MIG2_DEMO_KEEP=1).\n", d.dir)
	default:
		os.RemoveAll(d.dir)
	}
	if err != nil {
		return 1
	}
	fmt.Printf("\nDemo finished in %s; every process it started has been stopped.\n", since(d.started))
	return 0
}

func step(n int, format string, args ...any) {
	fmt.Printf("\n==> [%d/%d] %s\n", n, steps, fmt.Sprintf(format, args...))
}

func info(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.mig2, err = filepath.Abs(d.mig2); err != nil {
		return err
	}
	if _, err := os.Stat(d.mig2); err != nil {
		return fmt.Errorf("demo: mig2 binary: %w (run `make build`)", err)
	}
	img, err := guest.FindImage()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	// 1. A short temporary directory (unix socket paths must stay under 108 bytes) and a CA.
	step(1, "Throwaway CA and certificates")
	if d.dir, err = os.MkdirTemp("/tmp", "mig2-demo."); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.pki = filepath.Join(d.dir, "pki")
	if err := testcerts.Write(d.pki, []string{"127.0.0.1", "localhost"}, "CN=mig2-demo-source,O=mig2 demo"); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	info("%s: ca-cert.pem, server-{cert,key}.pem (agent, destination QEMU), client-{cert,key}.pem (source)", d.pki)

	// 2. The source: a guest that fills its memory and keeps rewriting it.
	step(2, "Source QEMU: %d MiB guest, %d MiB filled (%s), dirtied at %d MiB/s", d.memMiB, d.touchMiB, d.fill, d.dirty)
	opts := guest.Options{Dir: d.dir, Image: img, MemMiB: d.memMiB, TouchMiB: d.touchMiB, DirtyMiBps: d.dirty, Fill: d.fill}
	t0 := time.Now()
	src := opts
	src.Name = "demo-src"
	if d.src, err = guest.Start(ctx, src); err != nil {
		return err
	}
	info("QMP %s, serial %s (TCG)", d.src.QMPSocket, d.src.SerialSocket)
	bootCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ready, err := d.src.Console().WaitReady(bootCtx)
	if err != nil {
		return err
	}
	info("guest booted and filled %d MiB in %s", ready.TouchedMiB, since(t0))
	hb, err := d.src.Console().WaitHeartbeat(bootCtx, 0)
	if err != nil {
		return err
	}
	info("dirtying load running: heartbeat #%d, %.0f MiB/s rewritten", hb.Seq, hb.Rate)

	// 3. The destination: same guest configuration, waiting with -incoming defer.
	step(3, "Destination QEMU with -incoming defer")
	dst := opts
	dst.Name, dst.Incoming = "demo-dst", true
	if d.dst, err = guest.Start(ctx, dst); err != nil {
		return err
	}
	info("QMP %s; it knows nothing about the migration to come", d.dst.QMPSocket)

	// 4. The agent: all the destination needs is an address and its TLS identity.
	if d.addr, err = freeAddr(); err != nil {
		return err
	}
	step(4, "mig2 agent on %s", d.addr)
	if err := d.startAgent(ctx); err != nil {
		return err
	}

	// 5. The migration: v2 handshake, device trees compared, multifd over TLS.
	step(5, "mig2 migrate (v2 over TLS)")
	if err := d.migrate(ctx); err != nil {
		return err
	}

	// 6. Proof: the guest checks every byte of its memory, on the destination.
	step(6, "Checking the guest on the destination's serial console")
	vctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	con := d.dst.Console()
	t0 = time.Now()
	res, err := con.Verify(vctx)
	if err != nil {
		return err
	}
	if res.Bad != 0 {
		return fmt.Errorf("demo: memory CORRUPTED on the destination: %d of %d pages differ (first bad page %d)", res.Bad, res.Pages, res.FirstBad)
	}
	info("memory verified intact on the destination: %d pages (%d MiB), 0 bad (checked in %s)", res.Pages, res.Pages*4096>>20, since(t0))
	last, _ := con.LastHeartbeat()
	if hb, err = con.WaitHeartbeat(vctx, last.Seq); err != nil {
		return err
	}
	info("the guest runs on the destination: heartbeat #%d, %.1fs after it booted on the source", hb.Seq, hb.T)
	select {
	case <-d.src.Exited():
		info("the source QEMU has exited (%v): mig2 shut the stale source down", d.src.Cmd.ProcessState)
	case <-time.After(15 * time.Second):
		return errors.New("demo: the source QEMU still runs 15s after a successful migration")
	case <-ctx.Done():
		return ctx.Err()
	}

	return nil // 7. cleanup: in main, on success, failure and Ctrl-C alike
}

// freeAddr finds a loopback port nobody listens on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (d *demo) startAgent(ctx context.Context) error {
	d.agentLog = filepath.Join(d.dir, "agent.log")
	logf, err := os.Create(d.agentLog)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer logf.Close() // the agent keeps its own descriptor
	args := []string{"agent", "--listen", d.addr, "--tls-dir", d.pki,
		"--guest", "demo=" + d.dst.QMPSocket + ",log=" + d.dst.StderrPath}
	fmt.Printf("    $ mig2 %s\n", strings.Join(args, " "))
	d.agent = exec.Command(d.mig2, args...)
	d.agent.Stdout, d.agent.Stderr = logf, logf
	// Its own process group, so Ctrl-C reaches it only through stopAll.
	d.agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.agent.Start(); err != nil {
		return fmt.Errorf("demo: start agent: %w", err)
	}
	d.agentDone = make(chan struct{})
	go func() { d.agent.Wait(); close(d.agentDone) }()
	info("pid %d, log %s", d.agent.Process.Pid, d.agentLog)

	// The agent logs "listening" once its socket is bound. (A bare TCP probe would work too, but
	// the agent would log it as a refused connection.)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if b, _ := os.ReadFile(d.agentLog); strings.Contains(string(b), "listening on "+d.addr) {
			info("agent is listening")
			return nil
		}
		select {
		case <-d.agentDone:
			return fmt.Errorf("demo: the agent exited at start-up: %v", d.agent.ProcessState)
		case <-wctx.Done():
			return fmt.Errorf("demo: the agent does not listen on %s: %w", d.addr, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// migrate runs mig2 migrate in the foreground. On a terminal it draws its progress bar and
// prints its summary; otherwise it writes JSON lines, which are passed through and summarised.
func (d *demo) migrate(ctx context.Context) error {
	args := []string{"migrate", "--qmp", d.src.QMPSocket, "--tls-dir", d.pki, "demo", "mig2://" + d.addr}
	fmt.Printf("    $ mig2 %s\n\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.mig2, args...)
	// Cancelling asks mig2 to cancel safely (it resumes the source guest), as Ctrl-C does.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	tty := term.IsTerminal(int(os.Stdout.Fd()))
	var sum *driver.Summary
	if tty {
		cmd.Stdout = os.Stdout
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("demo: start mig2 migrate: %w", err)
		}
	} else {
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("demo: start mig2 migrate: %w", err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Println(sc.Text())
			var ev struct {
				Event string          `json:"event"`
				Data  json.RawMessage `json:"data"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Event == "summary" {
				sum = new(driver.Summary)
				if err := json.Unmarshal(ev.Data, sum); err != nil {
					sum = nil
				}
			}
		}
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return fmt.Errorf("demo: mig2 migrate exited with status %d (%s)", ee.ExitCode(), exitMeaning[ee.ExitCode()])
	}
	if err != nil {
		return fmt.Errorf("demo: mig2 migrate: %w", err)
	}
	if sum != nil {
		a := sum.Agreed
		fmt.Println()
		info("negotiated: protocol %s, multifd channels %d, compression %s, postcopy %v, TLS %v, downtime limit %s",
			sum.Protocol, a.Channels, a.Compression, a.Postcopy, a.TLS, a.DowntimeLimit)
		for _, adj := range sum.Adjustments {
			info("  %s = %s: %s", adj.Param, adj.Agreed, cmp.Or(adj.Detail, adj.Reason))
		}
		info("migrated %d MiB in %s (downtime %s); destination guest %s, source %s",
			sum.Transferred>>20, sum.Migration.Round(time.Millisecond), sum.Downtime.Round(time.Millisecond), sum.DestStatus, sum.SourceAfter)
	}
	return nil
}

// stopAll stops every process the demo started and waits for each.
func (d *demo) stopAll() {
	if d.agent != nil && d.agent.Process != nil {
		d.agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.agentDone:
		case <-time.After(10 * time.Second):
			syscall.Kill(-d.agent.Process.Pid, syscall.SIGKILL)
			<-d.agentDone
		}
		info("agent stopped (%v)", d.agent.ProcessState)
	}
	for _, q := range []*guest.QEMU{d.dst, d.src} {
		if q != nil {
			q.Kill()
			info("QEMU %s stopped", q.Name)
		}
	}
}

// showLogs prints the end of every log the demo's processes wrote, to explain a failure.
func (d *demo) showLogs() {
	logs := []string{d.agentLog}
	for _, q := range []*guest.QEMU{d.src, d.dst} {
		if q != nil {
			logs = append(logs, q.StderrPath)
		}
	}
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if p == "" || err != nil || len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(os.Stderr, "--- %s (last %d lines)\n%s\n", p, len(lines), strings.Join(lines, "\n"))
	}
	for _, q := range []*guest.QEMU{d.src, d.dst} {
		if q == nil || q.Console() == nil || len(q.Console().Lines()) == 0 {
			continue
		}
		lines := q.Console().Lines()
		if len(lines) > 10 {
			lines = lines[len(lines)-10:]
		}
		fmt.Fprintf(os.Stderr, "--- %s serial console (last lines)\n%s\n", q.Name, strings.Join(lines, "\n"))
	}
}
