//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/v2proto/testcerts"
)

// mig2Bin is the mig2 binary under test: $MIG2_BIN (set by `make test-integration`) or one
// built by TestMain.
var mig2Bin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	mig2Bin = os.Getenv("MIG2_BIN")
	if mig2Bin == "" {
		dir, err := os.MkdirTemp("", "mig2-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		mig2Bin = filepath.Join(dir, "mig2")
		out, err := exec.Command("go", "build", "-o", mig2Bin, "github.com/mig2/mig2/cmd/mig2").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build mig2: %v\n%s", err, out)
			return 1
		}
	}
	return m.Run()
}

// vm is a test guest with a second QMP monitor for the test's own queries (mig2 holds the first).
type vm struct {
	*guest.QEMU
	mon *qmp.Conn
}

type vmOpts struct {
	incoming bool
	memMiB   int
	machine  string
	extra    []string
	dirty    int
}

func startVM(t *testing.T, dir, name string, o vmOpts) *vm {
	t.Helper()
	if o.memMiB == 0 {
		o.memMiB = 512
	}
	if o.dirty == 0 && !o.incoming {
		o.dirty = 20
	}
	o.dirty = max(o.dirty, 0) // negative: an idle guest
	monPath := filepath.Join(dir, name+".mon")
	extra := append([]string{"-qmp", "unix:" + monPath + ",server=on,wait=off"}, o.extra...)
	q := guest.StartTest(t, guest.Options{
		Name: name, Dir: dir, MemMiB: o.memMiB, TouchMiB: 256, DirtyMiBps: o.dirty,
		Incoming: o.incoming, Machine: o.machine, ExtraArgs: extra,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mon *qmp.Conn
	for {
		var err error
		if mon, err = qmp.Dial(ctx, monPath); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("second monitor of %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond) // QEMU creates its sockets one after the other
	}
	t.Cleanup(func() { mon.Close() })
	if !o.incoming {
		if _, err := q.Console().WaitReady(ctxT(t, 60*time.Second)); err != nil {
			t.Fatalf("guest %s did not become ready: %v", name, err)
		}
	}
	return &vm{QEMU: q, mon: mon}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "m2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// pki writes a throwaway CA, server and client certificates in QEMU's layout.
func pki(t *testing.T, dir string) string {
	p := filepath.Join(dir, "pki")
	if err := testcerts.Write(p, []string{"127.0.0.1", "localhost"}, "CN=mig2-test-source,O=mig2 tests"); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertRunning checks that a guest runs: QEMU says running and the guest's heartbeat advances.
func assertRunning(t *testing.T, v *vm) {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	st, err := qmp.QueryStatus(ctx, v.mon)
	if err != nil {
		t.Fatalf("%s: query-status: %v", v.Name, err)
	}
	if !st.Running {
		t.Fatalf("%s: guest is %s, want running", v.Name, st.Status)
	}
	last, _ := v.Console().LastHeartbeat()
	if _, err := v.Console().WaitHeartbeat(ctx, last.Seq); err != nil {
		t.Fatalf("%s: no heartbeat after seq %d: %v\n%s", v.Name, last.Seq, err, diagnose(v))
	}
}

// diagnose describes a guest that stopped answering: QEMU's run state and migration state, the
// console's last lines and QEMU's own output, for a failure that cannot be reproduced at will.
func diagnose(v *vm) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	if st, err := qmp.QueryStatus(ctx, v.mon); err != nil {
		fmt.Fprintf(&b, "query-status: %v\n", err)
	} else {
		fmt.Fprintf(&b, "query-status: %s (running %v)\n", st.Status, st.Running)
	}
	var mi json.RawMessage
	if err := v.mon.Execute(ctx, "query-migrate", nil, &mi); err != nil {
		fmt.Fprintf(&b, "query-migrate: %v\n", err)
	} else {
		fmt.Fprintf(&b, "query-migrate: %s\n", mi)
	}
	lines := v.Console().Lines()
	fmt.Fprintf(&b, "console, last lines:\n  %s\n", strings.Join(lines[max(0, len(lines)-15):], "\n  "))
	fmt.Fprintf(&b, "QEMU output:\n%s", v.Stderr())
	return b.String()
}

// assertIntact asks the guest for a full verify of its memory.
func assertIntact(t *testing.T, v *vm) {
	t.Helper()
	res, err := v.Console().Verify(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatalf("%s: verify: %v", v.Name, err)
	}
	if !res.OK() || res.Pages == 0 {
		t.Fatalf("%s: memory NOT intact: %d of %d pages bad (first %d)", v.Name, res.Bad, res.Pages, res.FirstBad)
	}
	t.Logf("%s: memory verified intact: %d pages, 0 bad", v.Name, res.Pages)
}

// assertNothingMoved checks that the source never started migrating.
func assertNothingMoved(t *testing.T, v *vm) {
	t.Helper()
	mi, err := qmp.QueryMigrate(ctxT(t, 10*time.Second), v.mon)
	if err != nil {
		t.Fatalf("%s: query-migrate: %v", v.Name, err)
	}
	if mi.Status != qmp.MigrationNone || (mi.RAM != nil && mi.RAM.Transferred > 0) {
		t.Fatalf("%s: a migration was started (status %s): the refusal came too late", v.Name, mi.Status)
	}
}

type agentProc struct {
	cmd  *exec.Cmd
	addr string
	log  string
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startAgent runs `mig2 agent` with the given flags (and --listen on a free port) until the
// test ends; it is stopped with SIGTERM and must exit cleanly.
func startAgent(t *testing.T, dir string, args ...string) *agentProc {
	t.Helper()
	return startAgentWrapped(t, dir, nil, args...)
}

// startAgentWrapped runs the agent under a wrapper command such as taskset.
func startAgentWrapped(t *testing.T, dir string, wrapper []string, args ...string) *agentProc {
	t.Helper()
	addr := freePort(t)
	a := &agentProc{addr: addr, log: filepath.Join(dir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))}
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string{}, wrapper...), mig2Bin, "agent", "--listen", addr), args...)
	a.cmd = exec.Command(argv[0], argv[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- a.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("agent exited with %v on SIGTERM", err)
			}
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("agent did not stop within 15 s of SIGTERM")
		}
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("agent log:\n%s", b)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return a
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(a.log)
			t.Fatalf("agent exited at start (%v):\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not listening on %s after 10 s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *agentProc) uri() string { return "mig2://" + a.addr }

func (a *agentProc) logText() string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

// run is one finished mig2 command.
type run struct {
	code     int
	stdout   string
	stderr   string
	elapsed  time.Duration
	summary  map[string]any
	progress int // progress events seen
}

// mig2 runs the mig2 binary to completion.
func mig2(t *testing.T, ctx context.Context, args ...string) run {
	t.Helper()
	cmd := exec.CommandContext(ctx, mig2Bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run mig2 %v: %v", args, err)
	}
	r.parse()
	t.Logf("mig2 %s → exit %d in %s\nstderr:\n%s", strings.Join(args, " "), r.code, r.elapsed.Round(time.Millisecond), lastLines(r.stderr, 15))
	return r
}

func (r *run) parse() {
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Event string         `json:"event"`
			Data  map[string]any `json:"data"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "summary":
			r.summary = ev.Data
		case "progress":
			r.progress++
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// adjustment finds the summary's adjustment of one parameter.
func adjustment(sum map[string]any, param string) map[string]any {
	adjs, _ := sum["adjustments"].([]any)
	for _, a := range adjs {
		m, _ := a.(map[string]any)
		if m["param"] == param {
			return m
		}
	}
	return nil
}

func waitExited(t *testing.T, v *vm, d time.Duration) {
	t.Helper()
	select {
	case <-v.Exited():
	case <-time.After(d):
		t.Fatalf("%s: QEMU still running after %s", v.Name, d)
	}
}
