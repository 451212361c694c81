package driver

// The source guard: what happens when `mig2 migrate` itself dies (docs/FAULTS.md).
//
// mig2 enables pause-before-switchover (SPEC §4.7), so a source QEMU whose mig2 has vanished
// either keeps migrating to a destination nobody supervises, or stops the guest at
// pre-switchover and waits for a migrate-continue that never comes. Signals mig2 can catch
// (SIGINT, SIGTERM, SIGHUP) cancel the migration cleanly in-process; SIGKILL, the OOM killer or
// a crash cannot be caught, so before it touches the source QEMU, mig2 starts a guard: a small
// process (the same binary, a hidden sub-command) in its own session, linked to mig2 by a pipe
// on its stdin. mig2 tells it what it changed on the source QEMU ("applied ...") and, when it
// has finished whatever the outcome, that it is done ("done"). End of file on the pipe without
// "done" means mig2 died: the pipe's write end is closed only by the kernel when mig2 exits.
// Then the guard connects to the source's QMP socket (which mig2's death freed) and never
// leaves the migration half-way:
//
//   - setup, active, pre-switchover: the source still owns the guest and the destination has
//     not received the device state, so the migration is cancelled (migrate_cancel), the guest
//     resumed if the migration paused it, and mig2's settings put back. The agent sees the
//     control connection drop before Switchover and cleans the destination up.
//   - device: the source QEMU was told to continue and is sending the final state; cancelling
//     now could race the destination's start, so the guard waits for the outcome.
//   - completed: the guest may run on the destination (the agent follows an incoming
//     migration to its end once it has seen Switchover); the source stays paused in
//     postmigrate and is never resumed by the guard. The report says to check the destination.
//   - failed or cancelled: the guest is resumed if the migration paused it.
//   - none: no migration was started; nothing to do beyond putting the settings back.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
)

// GuardCommand says how to start the source guard: Argv runs a process that calls RunGuard with
// the flags GuardArgs builds appended (cmd/mig2 uses its own binary's hidden sub-command).
// Output receives the guard's report; it must be a file so that it outlives mig2.
type GuardCommand struct {
	Argv   []string
	Output *os.File
}

// GuardConfig is what the guard needs to know about the migration it guards.
type GuardConfig struct {
	QMP         string // the source QEMU's QMP socket
	Guest       string
	MigrationID string
	ParentPID   int
	Resume      bool // the guest ran before the migration: resume it if the migration paused it
	// DialTimeout bounds reaching the QMP socket after mig2 died (default 30 s); SettleTimeout
	// bounds waiting for a migration to end (default 5 min).
	DialTimeout   time.Duration
	SettleTimeout time.Duration
	Log           logrus.FieldLogger
}

// Guard protocol lines, mig2 → guard, one per line on the guard's stdin.
const (
	guardDone    = "done"
	guardApplied = "applied"
)

// GuardArgs is the guard's command line (after GuardCommand.Argv) for cfg.
func GuardArgs(cfg GuardConfig) []string {
	args := []string{"--qmp", cfg.QMP, "--guest", cfg.Guest, "--migration-id", cfg.MigrationID, "--parent-pid", strconv.Itoa(cfg.ParentPID)}
	if cfg.Resume {
		args = append(args, "--resume")
	}
	return args
}

// appliedState is applied in a form that crosses the pipe.
type appliedState struct {
	Caps    []qmp.MigrationCapabilityStatus `json:"caps"`
	Params  qmp.MigrationParameters         `json:"params"`
	Objects []string                        `json:"objects"`
}

func (a *applied) state() appliedState {
	return appliedState{Caps: a.prevCaps, Params: a.prevParams, Objects: a.objects}
}

func (s appliedState) applied() *applied {
	return &applied{prevCaps: s.Caps, prevParams: s.Params, objects: s.Objects}
}

// guardProc is the parent's handle on its guard.
type guardProc struct {
	cmd    *exec.Cmd
	pipe   io.WriteCloser
	exited chan struct{}
	mu     sync.Mutex
	closed bool
}

// startGuard starts the guard in its own session (a terminal's Ctrl-C or hang-up reaches only
// mig2, which cancels by itself); the guard outlives mig2 by design.
func startGuard(gc *GuardCommand, cfg GuardConfig) (*guardProc, error) {
	if gc == nil || len(gc.Argv) == 0 {
		return nil, nil
	}
	argv := append(append([]string{}, gc.Argv...), GuardArgs(cfg)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if gc.Output != nil {
		cmd.Stdout, cmd.Stderr = gc.Output, gc.Output
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	pipe, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("driver: start the source guard: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("driver: start the source guard %s: %w", argv[0], err)
	}
	g := &guardProc{cmd: cmd, pipe: pipe, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(g.exited) }() // owned here: ends when the guard exits; release waits for it
	return g, nil
}

func (g *guardProc) send(line string) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("driver: the source guard was released")
	}
	_, err := io.WriteString(g.pipe, line+"\n")
	return err
}

// noteApplied tells the guard what to put back if mig2 dies.
func (g *guardProc) noteApplied(a *applied, log logrus.FieldLogger) {
	if g == nil || a == nil {
		return
	}
	b, err := json.Marshal(a.state())
	if err == nil {
		err = g.send(guardApplied + " " + string(b))
	}
	if err != nil {
		log.WithError(err).Warn("driver: the source guard does not know the settings to restore")
	}
}

// release tells the guard mig2 is done (it exits without touching anything) and waits for it.
func (g *guardProc) release(log logrus.FieldLogger) {
	if g == nil {
		return
	}
	if err := g.send(guardDone); err != nil {
		log.WithError(err).Warn("driver: telling the source guard that mig2 is done")
	}
	g.mu.Lock()
	g.closed = true
	_ = g.pipe.Close()
	g.mu.Unlock()
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		log.Warn("driver: the source guard did not exit after mig2 finished: killing it")
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
}

// alive reports whether the guard still runs (it can only guard while it does).
func (g *guardProc) alive() bool {
	if g == nil {
		return false
	}
	select {
	case <-g.exited:
		return false
	default:
		return true
	}
}

// GuardReport says what the guard found and did.
type GuardReport struct {
	Released      bool                // mig2 said done: nothing was touched
	Found         qmp.MigrationStatus // the source QEMU's migration status when the guard took over
	Final         qmp.MigrationStatus
	Action        string // what the guard did, for people
	SourceRunning bool
	SourceGone    bool // the source QEMU's QMP socket could not be reached
}

func (r *GuardReport) String() string {
	if r.Released {
		return "mig2 finished normally; nothing to do"
	}
	s := r.Action
	switch {
	case r.SourceGone:
	case r.SourceRunning:
		s += "; the source guest is running"
	case r.Final == qmp.MigrationCompleted:
		s += "; the source guest is paused (postmigrate): check that the guest runs on the destination, and resume the source only if it does not"
	default:
		s += "; the source guest is NOT running: check it now"
	}
	return s
}

// parentState is what the guard learns from mig2 over the pipe.
type parentState struct {
	done    bool
	applied *applied
}

// readParent reads the pipe until "done" or end of file.
func readParent(r io.Reader) parentState {
	var st parentState
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		word, rest, _ := strings.Cut(sc.Text(), " ")
		switch word {
		case guardDone:
			st.done = true
			return st
		case guardApplied:
			var a appliedState
			if json.Unmarshal([]byte(rest), &a) == nil {
				st.applied = a.applied()
			}
		}
	}
	return st
}

// GuardMain is the guard program's body (mig2-guard, or mig2's hidden sub-command): RunGuard
// on stdin, and, if mig2 died, what the guard did, written to stderr for mig2's own stderr.
// The caller ignores the signals that end mig2 first: the guard must outlive them.
func GuardMain(cfg GuardConfig, stdin io.Reader, stderr io.Writer) error {
	rep, err := RunGuard(context.Background(), cfg, stdin)
	if rep != nil && !rep.Released {
		fmt.Fprintf(stderr, "mig2: guard: mig2 migrate (pid %d) died during migration %s of %q: %s\n",
			cfg.ParentPID, cfg.MigrationID, cfg.Guest, rep)
	}
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	return nil
}

// RunGuard is the guard's body: it waits for mig2 on parent (the pipe) and, if mig2 dies
// without saying it is done, takes over the source QEMU (see the top of this file).
func RunGuard(ctx context.Context, cfg GuardConfig, parent io.Reader) (*GuardReport, error) {
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = 5 * time.Minute
	}
	log := cfg.Log.WithFields(logrus.Fields{"migration_id": cfg.MigrationID, "domain": cfg.Guest, "stage": "guard"})
	st := readParent(parent)
	if st.done {
		return &GuardReport{Released: true}, nil
	}
	log.Warnf("driver: mig2 migrate (pid %d) died during the migration: the guard takes over the source QEMU", cfg.ParentPID)
	mon, err := dialAfterParent(ctx, cfg, log)
	if err != nil {
		return &GuardReport{SourceGone: true, Action: "the source QEMU's QMP socket could not be reached"}, err
	}
	defer mon.Close()
	return recoverSource(ctx, mon, st.applied, cfg, log)
}

// dialAfterParent connects to the QMP socket; QEMU serves one client at a time and takes the
// next once it has noticed that mig2's connection closed.
func dialAfterParent(ctx context.Context, cfg GuardConfig, log logrus.FieldLogger) (*qmp.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	for {
		mon, err := qmp.Dial(ctx, cfg.QMP, qmp.WithLogger(log), qmp.WithConnectTimeout(5*time.Second))
		if err == nil {
			return mon, nil
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("driver: guard: the source QEMU is gone (%s): %w", cfg.QMP, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("driver: guard: the source QEMU's QMP socket %s did not answer within %s: %w", cfg.QMP, cfg.DialTimeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// recoverSource brings the source QEMU to a safe end state after mig2 died; see the top of the
// file for the rules.
func recoverSource(ctx context.Context, ex qmp.Executor, a *applied, cfg GuardConfig, log logrus.FieldLogger) (*GuardReport, error) {
	rep := &GuardReport{}
	info, err := qmp.QueryMigrate(ctx, ex)
	if err != nil {
		return rep, fmt.Errorf("driver: guard: query-migrate: %w", err)
	}
	rep.Found = info.Status
	switch info.Status {
	case qmp.MigrationNone:
		rep.Action = "no migration had started"
	case qmp.MigrationSetup, qmp.MigrationActive, qmp.MigrationPreSwitchover, qmp.MigrationWaitUnplug, qmp.MigrationCancelling:
		rep.Action = fmt.Sprintf("the migration was %s: cancelled it", info.Status)
		if info, err = cancelAndWait(ctx, ex, cfg.SettleTimeout, log); err != nil {
			rep.Final = info.Status
			return rep, err
		}
	case qmp.MigrationDevice:
		rep.Action = "the source had let go of the guest (device state): waited for the migration to end"
		if info, err = settle(ctx, ex, cfg.SettleTimeout); err != nil {
			rep.Final = info.Status
			return rep, err
		}
	case qmp.MigrationCompleted, qmp.MigrationFailed, qmp.MigrationCancelled:
		rep.Action = fmt.Sprintf("the migration had already %s", info.Status)
	default: // postcopy: the destination runs the guest and QEMU serves its pages on its own
		rep.Action = fmt.Sprintf("the migration is %s: the destination runs the guest; left alone", info.Status)
		rep.Final = info.Status
		return rep, nil
	}
	rep.Final = info.Status
	if info.Status == qmp.MigrationCompleted {
		// Never resume a source whose guest may run on the destination.
		rep.Action += "; the source QEMU completed the migration"
		return rep, nil
	}
	if err := a.restore(ctx, ex); err != nil {
		log.WithError(err).Warn("driver: guard: restoring the source QEMU's migration settings")
	}
	st, err := qmp.QueryStatus(ctx, ex)
	if err != nil {
		return rep, fmt.Errorf("driver: guard: query-status: %w", err)
	}
	if st.Running {
		rep.SourceRunning = true
		return rep, nil
	}
	if !cfg.Resume {
		rep.Action += "; the guest was paused before the migration and stays paused"
		rep.SourceRunning = true // as the user left it
		return rep, nil
	}
	resumed, err := ensureRunning(ctx, ex)
	if err != nil {
		return rep, err
	}
	rep.SourceRunning = true
	if resumed {
		rep.Action += "; resumed the guest"
	}
	return rep, nil
}

// settle waits while the source QEMU sends the final device state (status device).
func settle(ctx context.Context, ex qmp.Executor, limit time.Duration) (qmp.MigrationInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		info, err := qmp.QueryMigrate(ctx, ex)
		if err != nil {
			return info, fmt.Errorf("driver: query-migrate: %w", err)
		}
		if info.Status != qmp.MigrationDevice && info.Status != qmp.MigrationCancelling {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("driver: the migration is still %s after %s: %w", info.Status, limit, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
