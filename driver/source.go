package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// Wants is what the user asks for; zero values mean "choose for me" (SPEC §6).
type Wants struct {
	Channels         int    // multifd channels, 0 = from both hosts' cores
	Compression      string // "" or "auto", "none", "zlib", "zstd"
	CompressionLevel int
	Postcopy         bool
	ZeroCopySend     bool
	MaxBandwidth     int64         // bytes/s, 0 = unlimited
	DowntimeLimit    time.Duration // 0 = 300 ms
}

// MigrateOptions configure one v2 migration from the source side.
type MigrateOptions struct {
	Dest            string // the agent's host:port
	Wants           Wants
	TLSDir          string // QEMU's x509 layout; used for the control channel and QEMU's stream
	Insecure        bool   // plaintext on both channels: labs only, the agent must agree
	ServerName      string // the name the agent's certificate must carry (default: Dest's host)
	ProgressTimeout time.Duration
	ConfirmTimeout  time.Duration // how long to wait for the destination's verdict after QEMU completes
	KeepSource      bool          // leave the stale source paused instead of shutting it down
	SkipDeviceCheck bool          // experts only: do not compare device trees (the agent must allow it)
	CheckOnly       bool          // handshake and compatibility report, no migration
	// Guard starts the source guard, which takes over the source QEMU if this process dies
	// without finishing (SIGKILL, a crash: see guard.go and docs/FAULTS.md); nil = no guard.
	Guard      *GuardCommand
	OnProgress func(Progress)
	Log        logrus.FieldLogger
}

// DefaultTimeouts sets a progress or confirm timeout left at zero to 60 s, the default of every
// migration path (plain QEMU v2 and v1, libvirt).
func DefaultTimeouts(progress, confirm *time.Duration) {
	for _, d := range []*time.Duration{progress, confirm} {
		if *d <= 0 {
			*d = 60 * time.Second
		}
	}
}

func (o *MigrateOptions) defaults() {
	DefaultTimeouts(&o.ProgressTimeout, &o.ConfirmTimeout)
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
}

// ProtoConfig builds the control channel's configuration from the user's TLS choice.
func ProtoConfig(tlsDir string, insecure bool, log logrus.FieldLogger) (*v2proto.Config, error) {
	cfg := v2proto.DefaultConfig()
	cfg.Logger = log
	if insecure {
		cfg.Insecure = true
		return cfg, nil
	}
	creds, err := v2proto.LoadTLSDir(tlsDir)
	if err != nil {
		return nil, &ConnectError{What: "load the TLS credentials", Err: err}
	}
	cfg.TLS = creds
	return cfg, nil
}

func (w Wants) proto() v2proto.Wants {
	return v2proto.Wants{
		Channels:         uint32(max(w.Channels, 0)),
		Compression:      w.Compression,
		CompressionLevel: uint32(max(w.CompressionLevel, 0)),
		Postcopy:         w.Postcopy,
		PostcopyPreempt:  w.Postcopy,
		ZeroCopySend:     w.ZeroCopySend,
		MaxBandwidth:     uint64(max(w.MaxBandwidth, 0)),
		DowntimeLimitMs:  uint64(w.DowntimeLimit.Milliseconds()),
	}
}

// SettingsOf is the agreement as one QEMU applies it.
func SettingsOf(a *v2proto.Agreement) Settings {
	return Settings{
		Channels:         int(a.Channels),
		Compression:      a.Compression,
		CompressionLevel: int(a.CompressionLevel),
		Postcopy:         a.Postcopy,
		PostcopyPreempt:  a.PostcopyPreempt,
		ZeroCopySend:     a.ZeroCopySend,
		MaxBandwidth:     int64(a.MaxBandwidth),
		DowntimeLimit:    time.Duration(a.DowntimeLimitMs) * time.Millisecond,
		TLS:              a.TLS,
	}
}

func AdjustmentsOf(a *v2proto.Agreement) []Adjustment {
	var out []Adjustment
	for _, adj := range a.Adjustments {
		out = append(out, Adjustment{Param: adj.Param, Asked: adj.Asked, Agreed: adj.Agreed, Reason: string(adj.Reason), Detail: adj.Detail})
	}
	return out
}

// dialTimeout bounds TCP connect, TLS and the preambles on the source.
const dialTimeout = 4 * time.Second

// CheckReport is what `mig2 check` shows: the negotiated set and the device-tree comparison.
type CheckReport struct {
	Peer        string        `json:"peer"`
	Guest       string        `json:"guest"`
	Agreed      *Settings     `json:"agreed,omitempty"`
	Adjustments []Adjustment  `json:"adjustments,omitempty"`
	Diff        *v2proto.Diff `json:"diff"`
	SourceQEMU  string        `json:"source_qemu"`
	DestQEMU    string        `json:"destination_qemu"`
	Compatible  bool          `json:"compatible"`
}

// source is one migration in progress on the source side.
type source struct {
	q       *QEMU
	opts    MigrateOptions
	id      string
	log     logrus.FieldLogger
	start   time.Time
	sum     Summary
	running bool            // the guest was running when mig2 started
	state   *migrationState // the QEMU's migration settings as read for Hello (nil: read them at apply)
}

// Migrate runs a v2 migration of this guest to the agent at opts.Dest and returns when the
// destination has confirmed that its guest runs, or with an error after making sure the source
// guest runs (SPEC §4, DESIGN "Nothing is lost").
func (q *QEMU) Migrate(ctx context.Context, opts MigrateOptions) (*Summary, error) {
	opts.defaults()
	s := &source{q: q, opts: opts, id: NewMigrationID(), start: commandStart()}
	s.log = opts.Log.WithFields(logrus.Fields{"migration_id": s.id, "domain": q.Name, "peer": opts.Dest})
	s.sum = Summary{MigrationID: s.id, Guest: q.Name, Protocol: "v2", Peer: opts.Dest}
	return s.run(ctx)
}

// Check runs the handshake up to the agreement and reports, without migrating.
func (q *QEMU) Check(ctx context.Context, opts MigrateOptions) (*CheckReport, error) {
	opts.defaults()
	opts.CheckOnly = true
	s := &source{q: q, opts: opts, id: NewMigrationID(), start: commandStart()}
	s.log = opts.Log.WithFields(logrus.Fields{"migration_id": s.id, "domain": q.Name, "peer": opts.Dest})
	hello, err := s.hello(ctx)
	if err != nil {
		return nil, err
	}
	sess, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	hello.Host.LinkMbps = LinkMbps(sess.Conn())
	if err := sess.SendHello(ctx, hello); err != nil {
		return nil, err
	}
	offer, err := sess.ReadOffer(ctx)
	if err != nil {
		return nil, err
	}
	hello = sess.Hello() // as sent: versions, features and nonce filled in
	rep := &CheckReport{Peer: opts.Dest, Guest: q.Name, SourceQEMU: hello.Host.QEMUVersion, DestQEMU: offer.Host.QEMUVersion,
		Diff: v2proto.DiffTrees(&hello.DeviceTree, &offer.DeviceTree)}
	agreed, negErr := v2proto.Negotiate(hello, offer)
	if negErr == nil {
		st := SettingsOf(agreed)
		rep.Agreed, rep.Adjustments, rep.Compatible = &st, AdjustmentsOf(agreed), true
	}
	_ = sess.Abort(ctx, v2proto.AbortCancelled, "mig2 check: compatibility report only, no migration")
	return rep, negErr
}

func (s *source) hello(ctx context.Context) (*v2proto.Hello, error) {
	t0 := time.Now()
	// The run state and the probe go out together: probing a QEMU that turns out to have
	// nothing to send reads it and changes nothing.
	var (
		st              qmp.StatusInfo
		p               *sourceProbe
		stErr, probeErr error
	)
	_ = concurrently(
		func() error { st, stErr = qmp.QueryStatus(ctx, s.q.mon); return nil },
		func() error {
			p, probeErr = s.q.probeSource(ctx, measureMemory(s.opts.Wants, !s.opts.Insecure, s.opts.Dest))
			return nil
		},
	)
	switch {
	case stErr != nil:
		return nil, fmt.Errorf("driver: query-status: %w", stErr)
	case st.Status == qmp.RunStatePostMigrate:
		return nil, ErrStaleSource
	case st.Status == qmp.RunStateInMigrate:
		return nil, fmt.Errorf("driver: guest %s is waiting for an incoming migration; it has nothing to send", s.q.Name)
	case probeErr != nil:
		return nil, probeErr
	}
	s.running = st.Running
	s.state = p.state
	if p.compErr != nil {
		s.log.WithError(p.compErr).Debug("driver: compressibility not measured")
	}
	s.sum.Preflight.Facts, s.sum.Preflight.DeviceTree, s.sum.Preflight.Sample = p.tFacts, p.tTree, p.tSample
	p.facts.Traits = append(p.facts.Traits, SourceTraits(p.facts.QEMUVersion, true)...)
	h := &v2proto.Hello{
		MigrationID: s.id, Guest: s.q.Name, Wants: s.opts.Wants.proto(), Host: p.facts,
		TLS: !s.opts.Insecure, DeviceTree: p.tree, Compressibility: p.comp,
	}
	if s.opts.SkipDeviceCheck {
		h.Features = []v2proto.Feature{} // no device-tree feature: the trees are not compared
		s.log.Warn("driver: --skip-device-check: the device trees will NOT be compared; a mismatch is found only when the destination loads device state")
	}
	s.sum.Preflight.Source = time.Since(t0)
	return h, nil
}

func (s *source) dial(ctx context.Context) (*v2proto.Source, error) {
	cfg, err := ProtoConfig(s.opts.TLSDir, s.opts.Insecure, s.log)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = s.opts.ServerName
	// A port where something that is not an agent listens must fail fast: shorter than
	// SPEC §9.2's recommended 10 s, which an implementation may lower.
	cfg.HandshakeTimeout = dialTimeout
	// v2proto bounds connect, TLS and preambles with HandshakeTimeout itself.
	sess, err := v2proto.Dial(ctx, s.opts.Dest, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no mig2 agent answered within %s (is something else listening on that port?): %w", dialTimeout, err)
		}
		return nil, &ConnectError{What: "reach the mig2 agent at " + s.opts.Dest, Err: err}
	}
	return sess, nil
}

// run is Migrate's body. Every error path below leaves the source guest running.
func (s *source) run(ctx context.Context) (*Summary, error) {
	// Pre-flight's three slow starts overlap: connecting to the agent (TCP, TLS), starting the
	// guard process, and reading the source QEMU for Hello.
	type dialed struct {
		sess *v2proto.Source
		err  error
	}
	dialCh := make(chan dialed, 1)
	go func() {
		sess, err := s.dial(ctx)
		dialCh <- dialed{sess, err}
	}()
	type started struct {
		g   *guardProc
		err error
	}
	hello, err := s.hello(ctx)
	t0 := time.Now()
	d := <-dialCh
	if err != nil {
		if d.sess != nil {
			_ = d.sess.Abort(ctx, v2proto.AbortCancelled, "the source cannot migrate: "+err.Error())
			d.sess.Close()
		}
		return nil, err
	}
	if d.err != nil {
		return nil, d.err
	}
	// The guard starts during the handshake (it needs the guest's run state, read for Hello).
	guardCh := make(chan started, 1)
	go func() {
		g, err := startGuard(s.opts.Guard, GuardConfig{QMP: s.q.Socket, Guest: s.q.Name, MigrationID: s.id, ParentPID: os.Getpid(), Resume: s.running})
		guardCh <- started{g, err}
	}()
	var guard *guardProc
	guardTaken := false
	defer func() { // released when run returns, whatever happened
		if !guardTaken {
			guard = (<-guardCh).g
		}
		guard.release(s.log)
	}()
	sess := d.sess
	defer sess.Close()
	hello.Host.LinkMbps = LinkMbps(sess.Conn())
	agreed, err := sess.Handshake(ctx, hello)
	if err != nil {
		return nil, err // nothing has been touched yet
	}
	s.sum.Agreed, s.sum.Adjustments = SettingsOf(agreed), AdjustmentsOf(agreed)
	s.log.WithField("stage", "agreed").Infof("driver: agreed %s", agreed)

	// The source applies the agreed set while the destination prepares its QEMU (Ready): both
	// know the agreement now. From here on the source QEMU is changed: a guard makes sure a mig2
	// that dies (SIGKILL, a crash) never leaves it half-way, so the apply waits for the guard.
	// The TLS hostname is the agent's, as dialled; Ready may name another host (below).
	tlsHost := s.opts.ServerName
	if tlsHost == "" {
		tlsHost, _, _ = net.SplitHostPort(s.opts.Dest)
	}
	type applyResult struct {
		guard    *guardProc
		guardErr error // the guard did not start: nothing was applied
		applied  *applied
		err      error
		took     time.Duration
	}
	applyCh := make(chan applyResult, 1)
	go func() { // owned: run receives its result on every path below
		st := <-guardCh
		if st.err != nil {
			applyCh <- applyResult{guardErr: st.err}
			return
		}
		t1 := time.Now()
		plan, err := planV2(RoleSource, s.sum.Agreed, TLSSetup{Dir: s.opts.TLSDir, Hostname: tlsHost}, hello.Host.Capabilities, s.id)
		var applied *applied
		if err == nil {
			applied, err = applyPlan(ctx, s.q.mon, plan, s.state)
		}
		if err == nil {
			st.g.noteApplied(applied, s.log)
		}
		applyCh <- applyResult{guard: st.g, applied: applied, err: err, took: time.Since(t1)}
	}()
	ready, rerr := sess.ReadReady(ctx)
	ar := <-applyCh
	guard, guardTaken = ar.guard, true
	applied := ar.applied
	if rerr != nil {
		if err := applied.restore(context.WithoutCancel(ctx), s.q.mon); err != nil {
			rerr = errors.Join(rerr, err)
		}
		return nil, rerr
	}
	s.sum.Preflight.Handshake = time.Since(t0)
	s.sum.Preflight.Destination = min(ready.Prepare, s.sum.Preflight.Handshake)
	s.sum.Preflight.Protocol = s.sum.Preflight.Handshake - s.sum.Preflight.Destination
	switch {
	case ar.guardErr != nil:
		_ = sess.Abort(ctx, v2proto.AbortInternal, "the source could not start its guard process: "+ar.guardErr.Error())
		return nil, s.failed("apply", ar.guardErr, "")
	case ar.err != nil:
		_ = sess.Abort(context.WithoutCancel(ctx), v2proto.AbortApplyFailed, "the source could not apply the agreed set: "+ar.err.Error())
		return nil, s.failed("apply", ar.err, "")
	}
	if host := uriHost(ready.MigrationURI); agreed.TLS && s.opts.ServerName == "" && host != "" && host != tlsHost {
		// The destination listens under another name than the agent's: QEMU checks that one.
		if err := qmp.MigrateSetParameters(ctx, s.q.mon, qmp.MigrationParameters{TLSHostname: &host}); err != nil {
			_ = sess.Abort(context.WithoutCancel(ctx), v2proto.AbortApplyFailed, "the source could not set tls-hostname: "+err.Error())
			return nil, s.failed("apply", errors.Join(err, applied.restore(context.WithoutCancel(ctx), s.q.mon)), "")
		}
	}
	s.sum.Preflight.ApplySource = ar.took
	if err := sess.SendStart(ctx); err != nil {
		return nil, s.failed("start", errors.Join(err, applied.restore(context.WithoutCancel(ctx), s.q.mon)), "")
	}
	s.sum.Preflight.Total = time.Since(s.start)
	if err := ExplainStuckMigration(qmp.Migrate(ctx, s.q.mon, ready.MigrationURI)); err != nil {
		_ = sess.Abort(context.WithoutCancel(ctx), v2proto.AbortSourceFailed, "the source QEMU refused migrate: "+err.Error())
		return nil, s.failed("migrate", errors.Join(err, applied.restore(context.WithoutCancel(ctx), s.q.mon)), "")
	}
	s.log.WithField("stage", "run").Infof("driver: migrating to %s", ready.MigrationURI)
	return s.follow(ctx, sess, applied)
}

// peerEvent is what the reader goroutine hands to the migration loop.
type peerEvent struct {
	result *v2proto.Result
	err    error
}

// follow watches the QEMU migration and the destination together until the destination's
// verdict, then finishes or rolls back.
func (s *source) follow(ctx context.Context, sess *v2proto.Source, applied *applied) (*Summary, error) {
	// The reader goroutine is owned here: it ends when the session ends (Result, Abort, Close),
	// and follow waits for it before returning.
	readCtx, stopRead := context.WithCancel(context.WithoutCancel(ctx))
	events := make(chan peerEvent, 4)
	readerDone := make(chan struct{})
	var lastHeard atomic.Int64 // unix ns of the destination's last message, for stall reports
	lastHeard.Store(time.Now().UnixNano())
	go func() {
		defer close(readerDone)
		for {
			m, err := sess.Recv(readCtx)
			if err != nil {
				events <- peerEvent{err: err}
				return
			}
			lastHeard.Store(time.Now().UnixNano())
			if r, ok := m.(*v2proto.Result); ok {
				events <- peerEvent{result: r}
				return
			}
		}
	}()
	forward := make(chan struct{})
	defer func() {
		stopRead()
		sess.Close()
		<-readerDone
		<-forward
	}()

	// Errors from the destination end the watch; a Result during the run is a failure report.
	peerErr := make(chan error, 1)
	var early *peerEvent
	go func() { // owned here too: ends when an event arrives or reading stops
		defer close(forward)
		select {
		case ev := <-events:
			early = &ev
			if ev.result != nil {
				peerErr <- &destinationResultError{r: ev.result}
			} else {
				peerErr <- ev.err
			}
		case <-readCtx.Done():
		}
	}()

	lastKeepalive := time.Now()
	info, werr := watchSource(ctx, s.q.mon, watchConfig{
		Poll:         200 * time.Millisecond,
		StallTimeout: s.opts.ProgressTimeout,
		OnProgress: func(p Progress) {
			if s.opts.OnProgress != nil {
				s.opts.OnProgress(p)
			}
			if time.Since(lastKeepalive) > 5*time.Second {
				lastKeepalive = time.Now()
				_ = sess.SendProgress(ctx, &v2proto.Progress{Status: string(p.Status), Transferred: p.Transferred, Remaining: p.Remaining, Total: p.Total})
			}
		},
		OnPreSwitchover: func(ctx context.Context, p Progress) error {
			return sess.SendSwitchover(ctx, string(qmp.MigrationPreSwitchover))
		},
		Peer: peerErr,
	})
	s.fillStats(info)
	var se *StallError
	if errors.As(werr, &se) {
		se.PeerSilent = time.Since(time.Unix(0, lastHeard.Load()))
	}

	var dr *destinationResultError
	if errors.As(werr, &dr) && dr.r.Outcome == v2proto.OutcomeRunning {
		// The verdict overtook the poll that would have seen the source complete. The guest runs
		// on the destination: never resume the source now, whatever its QEMU says.
		if i, err := s.awaitCompleted(ctx); err == nil {
			info = i
		} else {
			s.log.WithError(err).Warn("driver: the destination runs the guest but the source QEMU has not reported completed")
		}
		werr = nil
	}
	if werr == nil { // the source QEMU says completed: only the destination's verdict counts
		s.fillStats(s.finalFigures(ctx, info))
		return s.confirm(ctx, sess, forward, &early, applied)
	}
	if dr == nil {
		// A failure, a cancel or a lost destination after the source QEMU was told to continue
		// (status device): the final state is on its way and may already run on the destination,
		// so cancelling now could leave the guest running twice. Let the source QEMU finish
		// and decide by the destination's verdict, as after a normal completion (FAULTS.md).
		if info, ok := s.pastSwitchover(context.WithoutCancel(ctx)); ok {
			s.log.WithError(werr).Warnf("driver: the source QEMU had already let go of the guest (%s): finishing the switchover instead of cancelling", info.Status)
			s.fillStats(s.finalFigures(context.WithoutCancel(ctx), info))
			return s.confirm(context.WithoutCancel(ctx), sess, forward, &early, applied)
		}
	}
	// Failure, cancel or stall before the source QEMU completed: roll back.
	return nil, s.rollback(ctx, sess, werr, forward, &early, applied)
}

// pastSwitchover reports whether the source QEMU has passed the point of no return
// (migrate-continue was issued): it waits for such a migration to end and returns its final
// state when it completed.
func (s *source) pastSwitchover(ctx context.Context) (qmp.MigrationInfo, bool) {
	info, err := qmp.QueryMigrate(ctx, s.q.mon)
	if err != nil || (info.Status != qmp.MigrationDevice && info.Status != qmp.MigrationCompleted) {
		return info, false
	}
	if info.Status == qmp.MigrationDevice {
		if info, err = settle(ctx, s.q.mon, 2*time.Minute); err != nil {
			s.log.WithError(err).Error("driver: waiting for the source QEMU to finish the switchover")
			return info, false
		}
	}
	return info, info.Status == qmp.MigrationCompleted
}

// lostDestination reports whether an error from the control connection leaves the
// destination's state unknown: anything but an explicit Abort from the agent.
func lostDestination(err error) bool {
	var ae *v2proto.AbortError
	return err != nil && !(errors.As(err, &ae) && ae.FromPeer)
}

// resultText is the destination's account of a failure: its QEMU's own words, else its details.
func resultText(r *v2proto.Result) string {
	switch {
	case r.DestError != "" && r.Details != "":
		return r.DestError + "\n(" + r.Details + ")"
	case r.DestError != "":
		return r.DestError
	}
	return r.Details
}

// figuresPending reports whether a completed migration's figures are not written yet: QEMU 7.2
// sets "completed" (and sends the event) just before it computes total-time and downtime, so a
// query-migrate in between reads them as 0.
func figuresPending(info qmp.MigrationInfo) bool {
	return info.Status == qmp.MigrationCompleted && (info.TotalTime == nil || *info.TotalTime == 0)
}

// finalFigures re-reads a completed migration's figures until QEMU has written them (briefly:
// microseconds in QEMU); on any error it returns what it had.
func (s *source) finalFigures(ctx context.Context, info qmp.MigrationInfo) qmp.MigrationInfo {
	for i := 0; i < 50 && figuresPending(info); i++ {
		select {
		case <-ctx.Done():
			return info
		case <-time.After(20 * time.Millisecond):
		}
		next, err := qmp.QueryMigrate(ctx, s.q.mon)
		if err != nil {
			return info
		}
		info = next
	}
	return info
}

// awaitCompleted waits briefly for the source QEMU to report completed.
func (s *source) awaitCompleted(ctx context.Context) (qmp.MigrationInfo, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := qmp.QueryMigrate(ctx, s.q.mon)
		if err != nil || info.Status == qmp.MigrationCompleted {
			return info, err
		}
		if info.Status.Terminal() || time.Now().After(deadline) {
			return info, &QEMUMigrationError{Status: info.Status, Desc: "the destination reports running but the source QEMU did not complete: " + info.ErrorDesc}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// destinationResultError carries a Result that arrived while the source was still migrating.
type destinationResultError struct{ r *v2proto.Result }

func (e *destinationResultError) Error() string {
	return fmt.Sprintf("the destination reports the migration %s (its QEMU: %s)", e.r.Outcome, e.r.Status)
}

// confirm waits for the destination's Result after the source QEMU completed.
func (s *source) confirm(ctx context.Context, sess *v2proto.Source, forward <-chan struct{}, early **peerEvent, applied *applied) (*Summary, error) {
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConfirmTimeout)
	defer cancel()
	var ev peerEvent
	timedOut := false
	select {
	case <-forward:
		if *early == nil {
			ev = peerEvent{err: errors.New("driver: the control connection ended without a verdict")}
		} else {
			ev = **early
		}
	case <-cctx.Done():
		timedOut = true
		ev = peerEvent{err: fmt.Errorf("driver: no verdict from the destination within %s of the source completing: %w", s.opts.ConfirmTimeout, cctx.Err())}
	}
	if ev.result != nil && ev.result.Outcome == v2proto.OutcomeRunning {
		s.sum.DestStatus = "running"
		s.sum.Total = time.Since(s.start)
		s.finishSource(ctx)
		s.log.WithField("stage", "done").Info("driver: the destination confirms its guest runs")
		return &s.sum, nil
	}
	// The source QEMU completed but the destination did not confirm: its guest is not running
	// there, so the source guest (paused in postmigrate, all state intact) is resumed.
	dest, err := "", ev.err
	if ev.result != nil {
		dest = resultText(ev.result)
		err = fmt.Errorf("driver: the destination reports the migration %s after the source completed", ev.result.Outcome)
		if ev.result.Details != "" {
			err = fmt.Errorf("%w: %s", err, ev.result.Details)
		}
	}
	if ev.result == nil && !timedOut && lostDestination(ev.err) {
		// The connection to the agent broke after the source let go of the guest. The agent
		// follows an incoming migration that has seen Switchover to its end, so the guest may
		// well run there: resuming the source could run it twice. Leave it paused.
		s.sum.SourceAfter = "paused (postmigrate)"
		return nil, &MigrationError{Stage: "confirm", Err: fmt.Errorf("driver: the connection to the destination was lost after the source QEMU completed, before the destination's verdict: %w", ev.err),
			SourceNote: "the source QEMU completed and is left paused (postmigrate): the guest may be running on the destination; check it there, and resume the source only if it does not run"}
	}
	if ev.result == nil {
		_ = sess.Abort(context.WithoutCancel(ctx), v2proto.AbortTimeout, "no verdict from the destination; resuming the source guest")
	}
	_ = applied.restore(context.WithoutCancel(ctx), s.q.mon)
	return nil, s.failed("confirm", err, dest)
}

// rollback cancels the QEMU migration if it is still going, tells the destination, collects
// its account of what happened and resumes the source guest.
func (s *source) rollback(ctx context.Context, sess *v2proto.Source, cause error, forward <-chan struct{}, early **peerEvent, applied *applied) error {
	bg := context.WithoutCancel(ctx)
	info, qerr := qmp.QueryMigrate(bg, s.q.mon)
	stuck := false
	if qerr == nil && !info.Status.Terminal() && info.Status != qmp.MigrationNone {
		// A cancel takes milliseconds, unless QEMU's sending threads are blocked on a dead
		// network: QEMU 7.2 then stays "cancelling" until the connection fails or recovers.
		// The guest runs meanwhile (precopy never paused it), so waiting longer gains nothing.
		if _, err := cancelAndWait(bg, s.q.mon, cancelLimit, s.log); err != nil {
			s.log.WithError(err).Error("driver: cancelling the source migration")
			stuck = true
		}
	}
	// The destination's own words: from a Result or Abort it already sent, or, when the source
	// QEMU failed on its own, from the report the destination sends once its QEMU fails too.
	dest := ""
	var fromPeer *v2proto.AbortError
	var dr *destinationResultError
	var se *StallError
	switch {
	case errors.As(cause, &dr):
		dest = resultText(dr.r)
	case errors.As(cause, &fromPeer) && fromPeer.FromPeer:
		dest = fromPeer.Message
	case ctx.Err() != nil || errors.As(cause, &se):
		code, msg := abortFor(ctx, cause)
		_ = sess.Abort(bg, code, msg)
	default:
		select {
		case <-forward:
			if e := *early; e != nil && e.result != nil {
				dest = resultText(e.result)
			} else if e != nil && errors.As(e.err, &fromPeer) && fromPeer.FromPeer {
				dest = fromPeer.Message
			}
		case <-time.After(3 * time.Second):
		}
		code, msg := abortFor(ctx, cause)
		_ = sess.Abort(bg, code, msg)
	}
	if err := applied.restore(bg, s.q.mon); err != nil {
		s.log.WithError(err).Warn("driver: restoring the source QEMU's migration settings")
	}
	if ctx.Err() != nil {
		cause = fmt.Errorf("driver: %w", context.Cause(ctx))
	}
	if stuck {
		cause = fmt.Errorf("%w\n  the source QEMU is still cancelling: either its migration connections are stuck on a dead network (QEMU ends the cancel once they fail or recover), or QEMU hit its multifd cancel deadlock (QEMU 7.2: query-migrate stays \"cancelling\" for good, docs/FAULTS.md); the guest keeps running either way, but in the second case this QEMU cannot migrate again until the guest is restarted", cause)
	}
	return s.failed("migrate", cause, dest)
}

// cancelLimit bounds the wait for the source QEMU to confirm a cancel during a rollback.
const cancelLimit = 15 * time.Second

// abortFor picks the Abort code and message sent to the destination for a local failure.
func abortFor(ctx context.Context, err error) (v2proto.AbortCode, string) {
	var se *StallError
	switch {
	case ctx.Err() != nil:
		return v2proto.AbortCancelled, "cancelled on the source: " + context.Cause(ctx).Error()
	case errors.As(err, &se):
		return v2proto.AbortTimeout, se.Error()
	default:
		return v2proto.AbortSourceFailed, err.Error()
	}
}

// failed builds the error for a migration that did not happen, after making sure the source
// guest runs.
func (s *source) failed(stage string, err error, destText string) error {
	me := &MigrationError{Stage: stage, DestError: destText, Err: err}
	if !s.running {
		me.SourceRunning, me.SourceNote = true, "it was paused before the migration and stays paused"
		return me
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resumed, rerr := ensureRunning(ctx, s.q.mon)
	switch {
	case rerr != nil:
		me.SourceNote = rerr.Error()
	case resumed:
		me.SourceRunning, me.SourceNote = true, "resumed by mig2"
	default:
		me.SourceRunning = true
	}
	return me
}

// finishSource makes the stale source impossible to resume by accident after a confirmed
// success: it is shut down, as libvirt does, unless the user asked to keep it paused.
func (s *source) finishSource(ctx context.Context) {
	if s.opts.KeepSource {
		s.sum.SourceAfter = "kept paused (postmigrate); mig2 refuses to migrate or resume it"
		return
	}
	if err := qmp.Quit(context.WithoutCancel(ctx), s.q.mon); err != nil && !errors.Is(err, qmp.ErrClosed) {
		s.log.WithError(err).Warn("driver: shutting down the stale source QEMU")
		s.sum.SourceAfter = "paused (postmigrate); shutting it down failed: " + err.Error()
		return
	}
	s.sum.SourceAfter = "shut down"
}

func (s *source) fillStats(info qmp.MigrationInfo) {
	ms := func(p *int64) time.Duration {
		if p == nil {
			return 0
		}
		return time.Duration(*p) * time.Millisecond
	}
	s.sum.Migration, s.sum.Downtime, s.sum.Setup = ms(info.TotalTime), ms(info.Downtime), ms(info.SetupTime)
	if info.RAM != nil {
		s.sum.Transferred = nonNeg(info.RAM.Transferred)
		if s.sum.Migration > 0 {
			s.sum.Throughput = float64(s.sum.Transferred) / s.sum.Migration.Seconds()
		}
	}
}

// uriHost is the host part of a QEMU migration URI such as tcp:192.0.2.7:49152.
func uriHost(uri string) string {
	rest, ok := strings.CutPrefix(uri, "tcp:")
	if !ok {
		return ""
	}
	host, _, err := net.SplitHostPort(rest)
	if err != nil {
		return ""
	}
	return host
}
