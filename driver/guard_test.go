package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// fakeSource is a source QEMU as the guard sees it: a migration status, a run state, and what
// QEMU 7.2 does on migrate_cancel (the guest restarts if the migration paused it).
type fakeSource struct {
	mu         *sync.Mutex
	status     qmp.MigrationStatus
	run        qmp.RunState
	wasRunning bool
	deviceLeft int                 // query-migrates left before device ends
	deviceEnd  qmp.MigrationStatus // what device ends in
	stuck      bool                // the network is dead: a cancel stays "cancelling" until yank
	noYank     bool                // a QEMU without the yank command
	calls      []string
}

func (f *fakeSource) Execute(ctx context.Context, cmd string, args, result any) error {
	if f.mu == nil {
		f.mu = &sync.Mutex{}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, cmd)
	var reply any
	switch cmd {
	case "query-migrate":
		if f.status == qmp.MigrationDevice {
			if f.deviceLeft--; f.deviceLeft < 0 {
				f.status = f.deviceEnd
				if f.status == qmp.MigrationCompleted {
					f.run = qmp.RunStatePostMigrate
				}
			}
		}
		if f.status == qmp.MigrationNone {
			reply = map[string]any{}
		} else {
			reply = map[string]any{"status": f.status}
		}
	case "migrate_cancel":
		switch f.status {
		case qmp.MigrationSetup, qmp.MigrationActive, qmp.MigrationPreSwitchover:
			f.status = qmp.MigrationCancelled
			if f.stuck {
				f.status = qmp.MigrationCancelling
			}
			if f.wasRunning {
				f.run = qmp.RunStateRunning
			}
		}
	case "yank":
		if f.noYank {
			return errors.New("fake: The command yank has not been found")
		}
		if f.status == qmp.MigrationCancelling {
			f.status = qmp.MigrationCancelled
		}
	case "query-status":
		reply = map[string]any{"status": f.run, "running": f.run == qmp.RunStateRunning}
	case "cont":
		f.run = qmp.RunStateRunning
	case "migrate-set-parameters", "migrate-set-capabilities", "object-del":
	default:
		return errors.New("fake: unexpected " + cmd)
	}
	if result != nil && reply != nil {
		b, _ := json.Marshal(reply)
		return json.Unmarshal(b, result)
	}
	return nil
}

func (f *fakeSource) called(cmd string) bool {
	return slices.Contains(f.calls, cmd)
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.Out = io.Discard
	return l
}

func TestRecoverSource(t *testing.T) {
	snap := &applied{objects: []string{"mig2-tls-x"}}
	for _, tc := range []struct {
		name        string
		f           fakeSource
		resume      bool
		wantCancel  bool
		wantCont    bool
		wantRestore bool
		wantFinal   qmp.MigrationStatus
		wantRunning bool
	}{
		{"active: cancelled, QEMU resumes", fakeSource{status: qmp.MigrationActive, run: qmp.RunStateRunning, wasRunning: true},
			true, true, false, true, qmp.MigrationCancelled, true},
		{"pre-switchover: cancelled, guest resumed", fakeSource{status: qmp.MigrationPreSwitchover, run: qmp.RunStatePaused, wasRunning: true},
			true, true, false, true, qmp.MigrationCancelled, true},
		{"pre-switchover, QEMU leaves it paused: cont", fakeSource{status: qmp.MigrationPreSwitchover, run: qmp.RunStatePaused},
			true, true, true, true, qmp.MigrationCancelled, true},
		{"paused before the migration: stays paused", fakeSource{status: qmp.MigrationPreSwitchover, run: qmp.RunStatePaused},
			false, true, false, true, qmp.MigrationCancelled, true},
		{"device then completed: never resumed", fakeSource{status: qmp.MigrationDevice, run: qmp.RunStateFinishMigrate, deviceLeft: 2, deviceEnd: qmp.MigrationCompleted},
			true, false, false, false, qmp.MigrationCompleted, false},
		{"device then failed: resumed", fakeSource{status: qmp.MigrationDevice, run: qmp.RunStateFinishMigrate, deviceLeft: 1, deviceEnd: qmp.MigrationFailed},
			true, false, true, true, qmp.MigrationFailed, true},
		{"completed: left paused", fakeSource{status: qmp.MigrationCompleted, run: qmp.RunStatePostMigrate},
			true, false, false, false, qmp.MigrationCompleted, false},
		{"failed, guest paused: resumed", fakeSource{status: qmp.MigrationFailed, run: qmp.RunStatePaused},
			true, false, true, true, qmp.MigrationFailed, true},
		{"none: nothing but the settings", fakeSource{status: qmp.MigrationNone, run: qmp.RunStateRunning},
			true, false, false, true, qmp.MigrationNone, true},
		{"postcopy: left alone", fakeSource{status: qmp.MigrationPostcopyActive, run: qmp.RunStatePostMigrate},
			true, false, false, false, qmp.MigrationPostcopyActive, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			rep, err := recoverSource(context.Background(), &f, snap, GuardConfig{Resume: tc.resume, SettleTimeout: 5 * time.Second}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			if got := f.called("migrate_cancel"); got != tc.wantCancel {
				t.Errorf("migrate_cancel issued: %v, want %v (calls %v)", got, tc.wantCancel, f.calls)
			}
			if got := f.called("cont"); got != tc.wantCont {
				t.Errorf("cont issued: %v, want %v (calls %v)", got, tc.wantCont, f.calls)
			}
			if got := f.called("object-del"); got != tc.wantRestore {
				t.Errorf("settings restored: %v, want %v (calls %v)", got, tc.wantRestore, f.calls)
			}
			if rep.Final != tc.wantFinal || rep.SourceRunning != tc.wantRunning {
				t.Errorf("report final %s running %v, want %s %v: %s", rep.Final, rep.SourceRunning, tc.wantFinal, tc.wantRunning, rep)
			}
			if tc.wantFinal == qmp.MigrationCompleted && !strings.Contains(rep.String(), "check that the guest runs on the destination") {
				t.Errorf("a completed source's report does not send the operator to the destination: %s", rep)
			}
		})
	}
}

func TestReadParent(t *testing.T) {
	a := &applied{prevCaps: []qmp.MigrationCapabilityStatus{{Capability: "multifd", State: false}}, objects: []string{"o1", "o2"}}
	b, _ := json.Marshal(a.state())
	for _, tc := range []struct {
		name        string
		in          string
		done        bool
		wantApplied bool
	}{
		{"done at once", "done\n", true, false},
		{"applied then done", "applied " + string(b) + "\ndone\n", true, true},
		{"died before applying", "", false, false},
		{"died after applying", "applied " + string(b) + "\n", false, true},
		{"died mid-line", "applied " + string(b)[:10], false, false},
		{"unknown lines are skipped", "hello\napplied " + string(b) + "\n", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := readParent(strings.NewReader(tc.in))
			if st.done != tc.done || (st.applied != nil) != tc.wantApplied {
				t.Fatalf("done %v applied %v, want %v %v", st.done, st.applied != nil, tc.done, tc.wantApplied)
			}
			if tc.wantApplied && !reflect.DeepEqual(st.applied, a) {
				t.Fatalf("applied %+v, want %+v", st.applied, a)
			}
		})
	}
}

func TestGuardArgs(t *testing.T) {
	cfg := GuardConfig{QMP: "/run/a b.qmp", Guest: "web", MigrationID: "m1", ParentPID: 42, Resume: true}
	want := []string{"--qmp", "/run/a b.qmp", "--guest", "web", "--migration-id", "m1", "--parent-pid", "42", "--resume"}
	if got := GuardArgs(cfg); !reflect.DeepEqual(got, want) {
		t.Fatalf("GuardArgs = %q, want %q", got, want)
	}
	cfg.Resume = false
	if got := GuardArgs(cfg); slices.Contains(got, "--resume") {
		t.Fatalf("--resume without Resume: %q", got)
	}
}

// TestRunGuardReleased: "done" from mig2 makes the guard exit without touching the source.
func TestRunGuardReleased(t *testing.T) {
	rep, err := RunGuard(context.Background(), GuardConfig{QMP: "/nonexistent/qmp", Log: quietLog()}, strings.NewReader("done\n"))
	if err != nil || !rep.Released {
		t.Fatalf("RunGuard after done: %v, %+v", err, rep)
	}
}

// TestRunGuardSourceGone: mig2 died and the source QEMU is gone too: the guard says so quickly.
func TestRunGuardSourceGone(t *testing.T) {
	start := time.Now()
	rep, err := RunGuard(context.Background(), GuardConfig{QMP: t.TempDir() + "/missing.qmp", Log: quietLog()}, strings.NewReader(""))
	if err == nil || !rep.SourceGone {
		t.Fatalf("RunGuard with no QEMU: %v, %+v", err, rep)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s", time.Since(start))
	}
}

// TestGuardProcessLifecycle: the parent's side over a real pipe and process: a released guard
// exits at once and reads everything mig2 sent.
func TestGuardProcessLifecycle(t *testing.T) {
	out, err := os.CreateTemp(t.TempDir(), "guard")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// cat echoes the protocol to Output: what the guard would read.
	g, err := startGuard(&GuardCommand{Argv: []string{"sh", "-c", "cat; exit 0", "guard"}, Output: out}, GuardConfig{QMP: "/q", Guest: "g", MigrationID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if !g.alive() {
		t.Fatal("guard not running after start")
	}
	g.noteApplied(&applied{objects: []string{"o"}}, quietLog())
	g.release(quietLog())
	if g.alive() {
		t.Fatal("guard still running after release")
	}
	b, _ := os.ReadFile(out.Name())
	st := readParent(strings.NewReader(string(b)))
	if !st.done || st.applied == nil || st.applied.objects[0] != "o" {
		t.Fatalf("the guard read %q", b)
	}
	var nilGuard *guardProc // no guard configured: every method is a no-op
	nilGuard.noteApplied(&applied{}, quietLog())
	nilGuard.release(quietLog())
}

// TestLostDestination: only an explicit Abort from the agent tells the source what the
// destination did; anything else after the source let go leaves the guest's place unknown.
func TestLostDestination(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"no error", nil, false},
		{"abort from the agent", &v2proto.AbortError{Code: v2proto.AbortCancelled, FromPeer: true}, false},
		{"wrapped abort from the agent", fmt.Errorf("x: %w", &v2proto.AbortError{Code: v2proto.AbortInternal, FromPeer: true}), false},
		{"our own abort", &v2proto.AbortError{Code: v2proto.AbortTimeout}, true},
		{"connection closed", fmt.Errorf("v2proto: the peer closed the connection: %w", v2proto.ErrClosed), true},
		{"reset", errors.New("read: connection reset by peer"), true},
	} {
		if got := lostDestination(tc.err); got != tc.want {
			t.Errorf("%s: lostDestination = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStallErrorNamesTheNetwork: a stall during which the agent was silent too points at the
// network; a stall with a chatty agent does not.
func TestStallErrorNamesTheNetwork(t *testing.T) {
	quiet := &StallError{Status: qmp.MigrationActive, Transferred: 4 << 20, For: 8 * time.Second, PeerSilent: 10 * time.Second}
	if !strings.Contains(quiet.Error(), "network to the destination is probably down") {
		t.Errorf("silent agent: %s", quiet)
	}
	for _, silent := range []time.Duration{0, 2 * time.Second, 7 * time.Second} {
		chatty := &StallError{Status: qmp.MigrationActive, For: 8 * time.Second, PeerSilent: silent}
		if strings.Contains(chatty.Error(), "network") {
			t.Errorf("agent silent %s: %s", silent, chatty)
		}
	}
	short := &StallError{Status: qmp.MigrationActive, For: 3 * time.Second, PeerSilent: 4 * time.Second}
	if strings.Contains(short.Error(), "network") {
		t.Errorf("silence within the agent's Progress period: %s", short)
	}
}

// TestCancelAndWaitYanks: a cancel stuck on a dead network ("cancelling") is ended by yanking
// the migration's connections after YankAfter; a QEMU without yank is waited for until the
// limit.
func TestCancelAndWaitYanks(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	f := &fakeSource{status: qmp.MigrationActive, run: qmp.RunStateRunning, wasRunning: true, stuck: true}
	start := time.Now()
	info, err := cancelAndWait(context.Background(), f, 10*time.Second, log)
	if err != nil || info.Status != qmp.MigrationCancelled {
		t.Fatalf("stuck cancel: %s, %v; want cancelled", info.Status, err)
	}
	if el := time.Since(start); el < YankAfter || el > YankAfter+2*time.Second {
		t.Errorf("stuck cancel ended after %s, want about %s", el, YankAfter)
	}
	if !slices.Contains(f.calls, "yank") {
		t.Errorf("calls %v: no yank", f.calls)
	}

	f = &fakeSource{status: qmp.MigrationActive, stuck: true, noYank: true}
	info, err = cancelAndWait(context.Background(), f, 1500*time.Millisecond, log)
	if err == nil || info.Status != qmp.MigrationCancelling {
		t.Fatalf("without yank: %s, %v; want still cancelling and an error at the limit", info.Status, err)
	}

	f = &fakeSource{status: qmp.MigrationActive}
	if _, err := cancelAndWait(context.Background(), f, 10*time.Second, log); err != nil || slices.Contains(f.calls, "yank") {
		t.Errorf("a cancel that finishes at once: %v, calls %v (no yank wanted)", err, f.calls)
	}
}

// A migrate refused for a yank instance left registered (QEMU 7.2's multifd cancel deadlock)
// says what it means; other refusals pass unchanged.
func TestExplainStuckMigration(t *testing.T) {
	stale := &qmp.Error{Class: qmp.ClassGenericError, Desc: "duplicate yank instance", Command: "migrate"}
	err := ExplainStuckMigration(stale)
	if !errors.Is(err, stale) || !strings.Contains(err.Error(), "cannot migrate again until the guest is restarted") {
		t.Errorf("stale yank instance: %v", err)
	}
	other := &qmp.Error{Class: qmp.ClassGenericError, Desc: "There's a migration process in progress", Command: "migrate"}
	if err := ExplainStuckMigration(other); err != error(other) {
		t.Errorf("other refusal changed: %v", err)
	}
	if ExplainStuckMigration(nil) != nil {
		t.Error("nil became an error")
	}
}

// TestStallDetector: only more bytes sent is progress; a limit of 0 never stalls.
func TestStallDetector(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := NewStallDetector(10*time.Second, t0)
	steps := []struct {
		at   time.Duration
		sent uint64
		want bool
	}{
		{5 * time.Second, 100, false},
		{14 * time.Second, 100, false}, // 9 s without progress
		{16 * time.Second, 100, true},  // 11 s
		{17 * time.Second, 50, true},   // fewer bytes is no progress
		{18 * time.Second, 101, false}, // moving again
		{27 * time.Second, 101, false},
		{29 * time.Second, 101, true},
	}
	for _, s := range steps {
		if got := d.Observe(t0.Add(s.at), s.sent); got != s.want {
			t.Errorf("at %s with %d sent: stalled %v, want %v", s.at, s.sent, got, s.want)
		}
	}
	never := NewStallDetector(0, t0)
	if never.Observe(t0.Add(time.Hour), 0) {
		t.Error("a detector without a limit reported a stall")
	}
}
