package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// agent is one long-lived `mig2 agent`, serving the guest on one side at one security level.
// Each side's QEMU always has the same QMP socket path, so the agent finds every fresh
// destination QEMU there.
type agent struct {
	name, addr, logPath string
	cmd                 *exec.Cmd
	done                chan struct{} // closed once the process has been reaped
}

func agentKey(security string, side int) string { return security + "-" + sideNames[side] }

// qmpPath and qemuLog are where guest.Start puts a side's QMP socket and QEMU log.
func (b *bench) qmpPath(side int) string { return filepath.Join(b.dir, sideNames[side]+".qmp") }
func (b *bench) qemuLog(side int) string { return filepath.Join(b.dir, sideNames[side]+".log") }

// startAgents starts a TLS and an --insecure agent for each side.
func (b *bench) startAgents(ctx context.Context) error {
	b.agents = map[string]*agent{}
	for _, sec := range []string{secTLS, secPlain} {
		for side := range sideNames {
			a, err := b.startAgent(ctx, sec, side)
			if err != nil {
				b.stopAgents()
				return err
			}
			b.agents[agentKey(sec, side)] = a
		}
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (b *bench) startAgent(ctx context.Context, sec string, side int) (*agent, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	a := &agent{name: "agent-" + agentKey(sec, side), addr: addr}
	a.logPath = filepath.Join(b.dir, a.name+".log")
	logFile, err := os.Create(a.logPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer logFile.Close() // the agent keeps its own descriptor
	args := []string{"--log-level", envOr("BENCH_AGENT_LOG_LEVEL", "info"), "agent", "--listen", addr, "--guest", guestName + "=" + b.qmpPath(side) + ",log=" + b.qemuLog(side)}
	if sec == secTLS {
		args = append(args, "--tls-dir", b.pki)
	} else {
		args = append(args, "--insecure")
	}
	a.cmd = exec.Command(b.mig2, args...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	// Its own process group (Ctrl-C reaches it only through stop), killed if the bench dies.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", a.name, err)
	}
	a.done = make(chan struct{})
	go func() { a.cmd.Wait(); close(a.done) }()

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if data, _ := os.ReadFile(a.logPath); strings.Contains(string(data), "listening on "+addr) {
			logf("%s: pid %d on %s", a.name, a.cmd.Process.Pid, addr)
			return a, nil
		}
		select {
		case <-a.done:
			data, _ := os.ReadFile(a.logPath)
			return nil, fmt.Errorf("bench: %s exited at start-up (%v): %s", a.name, a.cmd.ProcessState, tail(string(data), 5))
		case <-wctx.Done():
			a.stop()
			return nil, fmt.Errorf("bench: %s does not listen on %s: %w", a.name, addr, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the agent: SIGTERM, then SIGKILL to its process group after 10 s.
func (a *agent) stop() {
	if a == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	}
}

func (b *bench) stopAgents() {
	for _, a := range b.agents {
		a.stop()
	}
}

// agentStats reads each agent's memory and CPU time while it still runs, and how many
// migrations it completed (from its log).
func (b *bench) agentStats() []ProcStats {
	var out []ProcStats
	for _, sec := range []string{secTLS, secPlain} {
		for side := range sideNames {
			a := b.agents[agentKey(sec, side)]
			if a == nil {
				continue
			}
			ps := procStats(a.name, a.cmd.Process.Pid)
			data, _ := os.ReadFile(a.logPath)
			ps.Served = strings.Count(string(data), "incoming migration finished")
			out = append(out, ps)
		}
	}
	return out
}
