package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// mig2Args is the mig2 command line of a contender (the destination's agent address, or its
// QMP socket and a free port for v1). No tuning flag is ever given.
func mig2Args(contender, srcQMP, agentAddr, pki, dstQMP, v1Addr string) []string {
	switch contender {
	case cMig2TLS:
		return []string{"migrate", "--qmp", srcQMP, "--tls-dir", pki, guestName, "mig2://" + agentAddr}
	case cMig2Insecure:
		return []string{"migrate", "--qmp", srcQMP, "--insecure", guestName, "mig2://" + agentAddr}
	case cMig2V1:
		return []string{"migrate", "--protocol", "v1", "--qmp", srcQMP, "--dest-qmp", dstQMP, guestName, "tcp:" + v1Addr}
	}
	return nil
}

// mig2Summary is the part of mig2's summary event the bench reads. Preflight is read as a map,
// so fields added later are recorded too.
type mig2Summary struct {
	Protocol    string           `json:"protocol"`
	Agreed      json.RawMessage  `json:"agreed"`
	Preflight   map[string]int64 `json:"preflight"`
	Total       int64            `json:"total_ns"`
	Migration   int64            `json:"migration_ns"`
	Downtime    int64            `json:"downtime_ns"`
	Setup       int64            `json:"setup_ns"`
	Transferred uint64           `json:"transferred"`
	Throughput  float64          `json:"throughput_bps"`
	DestStatus  string           `json:"dest_status"`
}

// parseMig2Output finds the summary event in mig2 migrate's JSON lines (nil if none).
func parseMig2Output(stdout []byte) (*mig2Summary, error) {
	var sum *mig2Summary
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Event != "summary" {
			continue
		}
		s := new(mig2Summary)
		if err := json.Unmarshal(ev.Data, s); err != nil {
			return nil, fmt.Errorf("bench: mig2 summary: %w", err)
		}
		sum = s
	}
	return sum, sc.Err()
}

// mig2 migrate's exit codes (cmd/mig2/exitcodes.go) that mean "not converged" when the bench
// itself stopped mig2 at the cap.
const mig2ExitCancelled = 6

// mig2Migrate runs one mig2 contender. Total is the mig2 process's wall time: it ends once
// the destination confirmed its guest runs. At limit the bench sends SIGTERM, which mig2 turns
// into a safe cancel (the source guest keeps running).
func (b *bench) mig2Migrate(ctx context.Context, r *Run, src, dst *node, limit time.Duration) {
	fail := func(format string, args ...any) { r.Status, r.Error = statusFailed, fmt.Sprintf(format, args...) }
	var args []string
	switch r.Contender {
	case cMig2TLS, cMig2Insecure:
		sec := secTLS
		if r.Contender == cMig2Insecure {
			sec = secPlain
		}
		a := b.agents[agentKey(sec, dst.side)]
		args = mig2Args(r.Contender, src.q.QMPSocket, a.addr, b.pki, "", "")
	case cMig2V1:
		addr, err := freeAddr()
		if err != nil {
			fail("%v", err)
			return
		}
		args = mig2Args(r.Contender, src.q.QMPSocket, "", "", dst.q.QMPSocket, addr)
	}
	stderrPath := filepath.Join(b.dir, fmt.Sprintf("mig2-%s-%s.stderr", r.Contender, r.Started.Format("150405.000")))
	errf, err := os.Create(stderrPath)
	if err != nil {
		fail("%v", err)
		return
	}
	defer errf.Close()
	var stdout bytes.Buffer
	cmd := exec.Command(b.mig2, args...)
	cmd.Stdout, cmd.Stderr = &stdout, errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fail("start mig2: %v", err)
		return
	}
	stopSampling := make(chan struct{})
	peak := sampleHWM(cmd.Process.Pid, stopSampling)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	capped := false
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case werr = <-done:
	case <-timer.C:
		capped = true
		werr = stopMig2(cmd, done)
	case <-ctx.Done():
		werr = stopMig2(cmd, done)
	}
	r.Total = time.Since(start)
	close(stopSampling)
	r.ProcMaxRSS = <-peak
	// (rusage's ru_maxrss is no use here: Linux folds the forking parent's high-water mark
	// into the child's at exec.)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.ProcCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	sum, perr := parseMig2Output(stdout.Bytes())
	if sum != nil {
		r.Migration, r.Downtime, r.Setup = time.Duration(sum.Migration), time.Duration(sum.Downtime), time.Duration(sum.Setup)
		r.Transferred, r.Preflight, r.Agreed = sum.Transferred, sum.Preflight, sum.Agreed
		r.Phases = map[string]int64{"mig2_total_ns": sum.Total} // mig2's own clock; Total adds process start and exit
		r.Throughput = throughputOf(r.Transferred, r.Migration)
		if sum.Migration == 0 {
			r.addNote("mig2's summary gives no migration time: downtime, setup and throughput unknown")
		}
	}
	errText, _ := os.ReadFile(stderrPath)
	if sum == nil {
		if agreed := agreedFromLog(string(errText)); agreed != "" {
			r.addNote("agreed " + agreed)
		}
	}
	var ee *exec.ExitError
	switch {
	case werr == nil && sum != nil:
		r.Status = statusCompleted
	case werr == nil:
		fail("mig2 exited 0 without a summary (%v)", perr)
	case capped && errors.As(werr, &ee) && ee.ExitCode() == mig2ExitCancelled:
		r.Status, r.Error = statusNotConverged, fmt.Sprintf("not converged after %s: mig2 cancelled on SIGTERM", limit.Round(time.Second))
	case capped:
		r.Status, r.Error = statusNotConverged, fmt.Sprintf("not converged after %s; mig2 ended with %v: %s", limit.Round(time.Second), werr, lastLine(string(errText)))
	default:
		fail("mig2 %v: %s", werr, lastLine(string(errText)))
	}
}

// sampleHWM reads a process's peak RSS (VmHWM, KiB) every 100 ms until stop is closed, then
// sends the last value read.
func sampleHWM(pid int, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var last int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				if hwm, _, err := parseStatus(string(b)); err == nil {
					last = hwm
				}
			}
			select {
			case <-stop:
				out <- last
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// stopMig2 asks mig2 to cancel (SIGTERM, as Ctrl-C) and waits; SIGKILL to its process group if
// it has not ended after 60 s.
func stopMig2(cmd *exec.Cmd, done <-chan error) error {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return <-done
	}
}

// agreedFromLog finds the agreed set in mig2's log (for runs that end without a summary):
// the text after "driver: agreed " up to the end of the message.
func agreedFromLog(log string) string {
	const marker = "driver: agreed "
	i := strings.LastIndex(log, marker)
	if i < 0 {
		return ""
	}
	rest := log[i+len(marker):]
	if j := strings.IndexAny(rest, "\"\n"); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest)
}

// lastLine is the last non-empty line of s, shortened.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 300 {
		l = l[:300] + "..."
	}
	return l
}
