package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	v1 "github.com/mig2/mig2/fallback/v1"
	"github.com/mig2/mig2/qmp"
)

// V1Options configure a legacy (v1) migration of a plain-QEMU guest: today's single-stream
// QEMU migration, no handshake, no agent, nothing compared. The destination is configured only
// when the user names its QMP socket, exactly as QEMU users do today.
type V1Options struct {
	URI             string // QEMU's migration URI, e.g. tcp:192.0.2.7:4444
	DestQMP         string // optional: the destination QEMU's QMP socket (-incoming defer)
	Settings        v1.Settings
	ProgressTimeout time.Duration
	ConfirmTimeout  time.Duration
	KeepSource      bool
	OnProgress      func(Progress)
	Log             logrus.FieldLogger
}

// applyV1 is applyPlan for the v1 path, behind v1's own guard: it never turns multifd on.
func applyV1(ctx context.Context, ex qmp.Executor, p v1.Plan) (*applied, error) {
	if err := v1.Check(p); err != nil {
		return nil, err
	}
	return applyCaps(ctx, ex, qemuPlan{Caps: p.Caps, Params: p.Params, Objects: p.Objects}, nil)
}

// MigrateV1 runs a v1 migration. It still gives mig2's progress, summary, safe cancel and the
// source guest's survival on failure; with DestQMP it also confirms the destination runs.
func (q *QEMU) MigrateV1(ctx context.Context, o V1Options) (*Summary, error) {
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	DefaultTimeouts(&o.ProgressTimeout, &o.ConfirmTimeout)
	s := &source{q: q, id: NewMigrationID(), start: commandStart()}
	s.log = o.Log.WithFields(logrus.Fields{"migration_id": s.id, "domain": q.Name, "peer": o.URI})
	s.sum = Summary{MigrationID: s.id, Guest: q.Name, Protocol: "v1", Peer: o.URI}
	st, err := qmp.QueryStatus(ctx, q.mon)
	if err != nil {
		return nil, fmt.Errorf("driver: query-status: %w", err)
	}
	if st.Status == qmp.RunStatePostMigrate {
		return nil, ErrStaleSource
	}
	s.running = st.Running
	set := o.Settings
	set.BothEnds = o.DestQMP != ""

	var dest *qmp.Conn
	var destApplied *applied
	var stderr string
	var stderrOff int64
	if o.DestQMP != "" {
		if dest, err = qmp.Dial(ctx, o.DestQMP, qmp.WithLogger(s.log)); err != nil {
			return nil, &ConnectError{What: "reach the destination QEMU's QMP socket " + o.DestQMP, Err: err}
		}
		defer dest.Close()
		if pid, err := socketOwnerPID("/proc", o.DestQMP); err == nil {
			if stderr, err = stderrFile("/proc", pid); err == nil {
				stderrOff, _ = fileSize(stderr)
			}
		}
		caps, err := qmp.QueryMigrateCapabilities(ctx, dest)
		if err != nil {
			return nil, fmt.Errorf("driver: destination: %w", err)
		}
		dset := set
		dset.TLSDir = serverTLSDir(set.TLSDir) // no DH parameters generated (tlsdir.go)
		plan, err := v1.PlanFor(v1.Destination, dset, capNames(caps), s.id)
		if err != nil {
			return nil, err
		}
		if destApplied, err = applyV1(ctx, dest, plan); err != nil {
			return nil, fmt.Errorf("driver: configure the destination: %w", err)
		}
		if err := qmp.MigrateIncoming(ctx, dest, o.URI); err != nil {
			return nil, fmt.Errorf("driver: destination migrate-incoming %s: %w", o.URI, err)
		}
	}
	caps, err := qmp.QueryMigrateCapabilities(ctx, q.mon)
	if err != nil {
		return nil, fmt.Errorf("driver: query-migrate-capabilities: %w", err)
	}
	plan, err := v1.PlanFor(v1.Source, set, capNames(caps), s.id)
	if err != nil {
		return nil, err
	}
	srcApplied, err := applyV1(ctx, q.mon, plan)
	if err != nil {
		return nil, s.failed("apply", err, "")
	}
	if err := ExplainStuckMigration(qmp.Migrate(ctx, q.mon, o.URI)); err != nil {
		return nil, s.failed("migrate", errors.Join(err, srcApplied.restore(context.WithoutCancel(ctx), q.mon)), "")
	}
	s.log.WithField("stage", "run").Infof("driver: v1 migration to %s", o.URI)
	info, werr := watchSource(ctx, q.mon, watchConfig{Poll: 200 * time.Millisecond, StallTimeout: o.ProgressTimeout, OnProgress: o.OnProgress})
	s.fillStats(info)
	destText := func() string {
		if stderr == "" {
			return ""
		}
		t, _ := readTail(stderr, stderrOff, 16<<10)
		return qemuErrorText(t)
	}
	if werr != nil {
		bg := context.WithoutCancel(ctx)
		if mi, err := qmp.QueryMigrate(bg, q.mon); err == nil && !mi.Status.Terminal() && mi.Status != qmp.MigrationNone {
			_, _ = cancelAndWait(bg, q.mon, 30*time.Second, s.log)
		}
		_ = srcApplied.restore(bg, q.mon)
		if ctx.Err() != nil {
			werr = fmt.Errorf("driver: %w", ctx.Err())
		}
		time.Sleep(100 * time.Millisecond) // let a dying destination finish its stderr
		return nil, s.failed("migrate", werr, destText())
	}
	if dest != nil {
		if err := waitDestRunning(ctx, dest, o.ConfirmTimeout); err != nil {
			_ = srcApplied.restore(context.WithoutCancel(ctx), q.mon)
			return nil, s.failed("confirm", err, destText())
		}
		_ = destApplied.restore(context.WithoutCancel(ctx), dest)
		s.sum.DestStatus = "running"
	} else {
		s.sum.DestStatus = "unconfirmed (no --dest-qmp: the source QEMU says completed)"
	}
	s.sum.Total = time.Since(s.start)
	s.opts.KeepSource = o.KeepSource
	s.finishSource(ctx)
	return &s.sum, nil
}

// waitDestRunning waits for the destination QEMU to run the guest after the source completed.
func waitDestRunning(ctx context.Context, dest *qmp.Conn, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		select {
		case <-dest.Done():
			return errors.New("driver: the destination QEMU exited after the migration")
		default:
		}
		st, err := qmp.QueryStatus(ctx, dest)
		if err == nil && st.Running {
			return nil
		}
		if err == nil && st.Status == qmp.RunStatePaused {
			if err := qmp.Cont(ctx, dest); err == nil {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("driver: the destination guest does not run (%s): %w", st.Status, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func capNames(caps []qmp.MigrationCapabilityStatus) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		out = append(out, c.Capability)
	}
	return out
}
