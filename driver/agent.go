package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// AgentGuest is a guest the agent can receive: a QEMU started with -incoming defer.
type AgentGuest struct {
	Name    string
	QMP     string // its QMP socket
	LogPath string // where that QEMU writes its stderr; found through /proc when empty
}

// AgentConfig configures the destination agent. Nothing in it concerns a migration's
// parameters: those are negotiated (DESIGN promise 1).
type AgentConfig struct {
	Listen     string   // host:port for the control channel
	TLSDir     string   // QEMU's x509 layout (server-cert.pem, server-key.pem, ca-cert.pem)
	Insecure   bool     // plaintext, labs only: sources must be configured for it too
	AllowedDNs []string // client certificate DNs allowed; empty = any certificate the CA signed
	Guests     []AgentGuest
	// MigrationHost is the address the destination QEMU listens on for the migration stream;
	// default: the listening address, or the address the source reached the agent at.
	MigrationHost        string
	MaxChannels          int  // local limit on multifd channels; 0 = none
	DenyPostcopy         bool // local policy
	AllowSkipDeviceCheck bool // accept sources that skip the device-tree comparison
	ShutdownGrace        time.Duration
	Log                  logrus.FieldLogger
	// Incoming serves guests that are not among Guests (libvirt domains); nil = none.
	Incoming IncomingHandler
}

// IncomingHandler serves an incoming migration after Hello, with the guest claimed: Offer
// through Result. driver/libvirt implements it for libvirt domains.
type IncomingHandler interface {
	HandleIncoming(ctx context.Context, d *v2proto.Destination, hello *v2proto.Hello, log logrus.FieldLogger) error
}

// Agent is the destination side: it serves v2 handshakes for its guests and supervises their
// incoming migrations.
type Agent struct {
	cfg    AgentConfig
	ln     *v2proto.Listener
	guests map[string]AgentGuest
	log    logrus.FieldLogger

	mu   sync.Mutex
	busy map[string]string // guest → the migration id of the session holding it
	wg   sync.WaitGroup
}

// NewAgent checks the configuration and starts listening.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 2 * time.Minute
	}
	if len(cfg.Guests) == 0 && cfg.Incoming == nil {
		return nil, errors.New("driver: the agent serves no guest: give at least one NAME=QMP_SOCKET, or a libvirt connection")
	}
	guests := map[string]AgentGuest{}
	for _, g := range cfg.Guests {
		if _, dup := guests[g.Name]; dup {
			return nil, fmt.Errorf("driver: guest %q is named twice", g.Name)
		}
		guests[g.Name] = g
	}
	pcfg, err := ProtoConfig(cfg.TLSDir, cfg.Insecure, cfg.Log)
	if err != nil {
		return nil, err
	}
	pcfg.AllowedDNs = cfg.AllowedDNs
	if cfg.AllowSkipDeviceCheck {
		pcfg.Features = []v2proto.Feature{{Name: v2proto.FeatureDeviceTree}}
	}
	ln, err := v2proto.Listen(cfg.Listen, pcfg)
	if err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, ln: ln, guests: guests, log: cfg.Log, busy: map[string]string{}}, nil
}

// Addr is where the agent listens.
func (a *Agent) Addr() net.Addr { return a.ln.Addr() }

// Serve accepts migrations until ctx is cancelled, then shuts down gracefully: it stops
// accepting, lets migrations in flight finish for up to ShutdownGrace, cancels the rest cleanly
// (the source is told and resumes its guest), and returns when every session has ended.
func (a *Agent) Serve(ctx context.Context) error {
	runCtx, cancelRuns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRuns()
	warmCtx, stopWarming := context.WithCancel(ctx)
	warmDone := make(chan struct{})
	go func() {
		defer close(warmDone)
		a.warmCaches(warmCtx)
	}()
	defer func() { stopWarming(); <-warmDone }()
	for {
		d, err := a.ln.AcceptDestination(ctx, func(err error) {
			a.log.WithError(err).Warn("driver: refused a connection")
		})
		if err != nil {
			break
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.serve(runCtx, d)
		}()
	}
	_ = a.ln.Close()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	if n := a.inFlight(); n > 0 {
		a.log.Infof("driver: shutting down: waiting up to %s for %d migration(s) in flight", a.cfg.ShutdownGrace, n)
	}
	select {
	case <-done:
	case <-time.After(a.cfg.ShutdownGrace):
		a.log.Warn("driver: shutdown grace expired: cancelling the migrations in flight")
		cancelRuns()
		<-done
	}
	return nil
}

func (a *Agent) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.busy)
}

// claim takes guest for migration id; ok is false, with the migration holding it, if it is
// taken. The session that took it releases it once, when it ends.
func (a *Agent) claim(guest, id string) (other string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held, taken := a.busy[guest]; taken {
		return held, false
	}
	a.busy[guest] = id
	return "", true
}

// release frees guest for the next session.
func (a *Agent) release(guest string) {
	a.mu.Lock()
	delete(a.busy, guest)
	a.mu.Unlock()
}

func (a *Agent) guestNames() string {
	names := make([]string, 0, len(a.guests))
	for n := range a.guests {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// incoming is one incoming migration on the destination.
type incoming struct {
	a       *Agent
	d       *v2proto.Destination
	g       AgentGuest
	mon     *qmp.Conn
	log     logrus.FieldLogger
	id      string
	stderr  string // the QEMU's stderr file, "" when unknown
	offset  int64  // its size when the migration began
	applied *applied
	started bool // migrate-incoming was called: this QEMU cannot take another migration
}

func (a *Agent) serve(ctx context.Context, d *v2proto.Destination) {
	defer d.Close()
	log := a.log.WithField("peer", d.Conn().PeerAddr())
	ahead := a.readAhead(ctx, log) // readahead.go
	defer ahead.discard()
	hello, err := d.ReadHello(ctx)
	if err != nil {
		log.WithError(err).Warn("driver: no Hello")
		return
	}
	log = log.WithFields(logrus.Fields{"migration_id": hello.MigrationID, "domain": hello.Guest})
	g, ok := a.guests[hello.Guest]
	if !ok && a.cfg.Incoming == nil {
		_ = d.Abort(ctx, v2proto.AbortUnknownGuest, fmt.Sprintf("this agent has no guest %q (it serves: %s)", hello.Guest, a.guestNames()))
		log.Warn("driver: refused: unknown guest")
		return
	}
	other, claimed := a.claim(hello.Guest, hello.MigrationID)
	if !claimed {
		_ = d.Abort(ctx, v2proto.AbortBusy, fmt.Sprintf("guest %q is already being migrated here (migration %s)", hello.Guest, other))
		log.Warn("driver: refused: guest busy")
		return
	}
	defer a.release(hello.Guest) // before d.Close: a source waiting for the close finds it free
	if ok {
		in := &incoming{a: a, d: d, g: g, log: log, id: hello.MigrationID}
		err = in.run(ctx, hello, ahead.usableFor(hello.Guest, time.Now()))
	} else {
		err = a.cfg.Incoming.HandleIncoming(ctx, d, hello, log)
	}
	switch {
	case err == nil:
		log.Info("driver: incoming migration finished: the guest runs here")
	case v2proto.IsRefused(err) || v2proto.IsDeviceMismatch(err):
		log.WithError(err).Warn("driver: incoming migration refused")
	case sourceCancelledBeforeStart(err):
		// `mig2 check`, or a source that changed its mind: nothing was migrated or lost.
		log.WithError(err).Info("driver: the source ended the session before the migration started")
	default:
		log.WithError(err).Error("driver: incoming migration failed")
	}
}

// sourceCancelledBeforeStart reports an Abort "cancelled" from the source before Start.
func sourceCancelledBeforeStart(err error) bool {
	var ae *v2proto.AbortError
	return errors.As(err, &ae) && ae.FromPeer && ae.Code == v2proto.AbortCancelled &&
		(ae.Stage == v2proto.StageHello || ae.Stage == v2proto.StageOffer || ae.Stage == v2proto.StageAgree || ae.Stage == v2proto.StageReady || ae.Stage == v2proto.StageStart)
}

// run is one incoming migration from Hello to Result. r is the guest's QEMU as read ahead of
// Hello, nil if it was not.
func (in *incoming) run(ctx context.Context, hello *v2proto.Hello, r *guestReading) error {
	d := in.d
	t0 := time.Now()
	if r == nil || !r.claim() { // none read ahead, or it failed or expired: read now
		r = readGuest(ctx, in.g, in.log)
		r.claim()
	}
	defer r.discard() // after claim, only releases the reading's context
	if r.dialErr != nil {
		msg := fmt.Sprintf("cannot reach the QMP socket of guest %q here: %v", in.g.Name, r.dialErr)
		_ = d.Abort(ctx, v2proto.AbortUnknownGuest, msg)
		return errors.New("driver: " + msg)
	}
	mon := r.mon
	in.mon = mon
	defer mon.Close()
	if err := r.waitErr; err != nil {
		_ = d.Abort(ctx, v2proto.AbortUnknownGuest, err.Error())
		return err
	}
	if err := r.probeErr; err != nil {
		_ = d.Abort(ctx, v2proto.AbortInternal, err.Error())
		return err
	}
	facts, tree := r.facts, r.tree
	facts.LinkMbps = LinkMbps(d.Conn())
	offer := &v2proto.Offer{
		Guest: in.g.Name, Host: facts, DeviceTree: convertTree(tree),
		Limits: v2proto.Limits{MaxChannels: uint32(max(in.a.cfg.MaxChannels, 0)), DenyPostcopy: in.a.cfg.DenyPostcopy},
	}
	if err := d.SendOffer(ctx, offer); err != nil {
		return err
	}
	tOffer := time.Now()
	// The agreement is known once the Offer is out: the source's Agree must equal this side's
	// own computation (ReadAgree refuses any other). So the QEMU is prepared while Agree is on
	// its way, sending only what changes from the settings read ahead. A source that aborts
	// instead (mig2 check does) finds it put back.
	type applyResult struct {
		applied *applied
		planErr error // the agreed set cannot be planned for this QEMU
		err     error
		at      time.Time
	}
	var applyCh chan applyResult
	if expected, err := d.Expected(); err == nil {
		applyCh = make(chan applyResult, 1)
		go func() { // owned: run receives its result on every path below
			plan, err := planV2(RoleDestination, SettingsOf(expected), TLSSetup{Dir: serverTLSDir(in.a.cfg.TLSDir), Peers: dnForms(d.Conn().PeerDN())}, facts.Capabilities, in.id)
			if err != nil {
				applyCh <- applyResult{planErr: err, at: time.Now()}
				return
			}
			a, err := applyPlan(ctx, mon, plan, r.state)
			applyCh <- applyResult{applied: a, err: err, at: time.Now()}
		}()
	}
	agreed, err := d.ReadAgree(ctx)
	var ar applyResult
	if applyCh != nil {
		ar = <-applyCh
	}
	if err != nil {
		// Nothing is migrating. The settings go back before the guest is released and the
		// connection closed, so a source that waits for the close (SPEC §4.9: a migrate right
		// after a check) finds this QEMU as it was.
		if rerr := ar.applied.restore(context.WithoutCancel(ctx), mon); rerr != nil {
			in.log.WithError(rerr).Warn("driver: putting the QEMU's migration settings back")
		}
		return err
	}
	tAgree := time.Now()
	in.log.WithField("stage", "agreed").Infof("driver: agreed %s", agreed)
	in.findStderr()
	switch {
	case ar.planErr != nil:
		_ = d.Abort(ctx, v2proto.AbortApplyFailed, ar.planErr.Error())
		return ar.planErr
	case ar.err != nil:
		_ = d.Abort(ctx, v2proto.AbortApplyFailed, "the destination could not apply the agreed set: "+ar.err.Error())
		return ar.err
	}
	in.applied = ar.applied
	tApplied := ar.at
	uri, err := in.listen(ctx)
	if err != nil {
		_ = d.Abort(ctx, v2proto.AbortApplyFailed, "the destination could not start its incoming migration: "+err.Error())
		return in.cleanup(false, err)
	}
	if err := d.SendReady(ctx, uri); err != nil {
		return in.cleanup(false, err)
	}
	in.log.WithField("stage", "ready").Debugf("driver: prepared: Hello to Offer %s (QEMU read %s before Hello, QMP connect %s), Offer to Agree %s, Agree to Ready %s (apply from Offer %s, after Agree %s)",
		tOffer.Sub(t0).Round(time.Microsecond), max(t0.Sub(r.at), 0).Round(time.Microsecond), r.tConn.Round(time.Microsecond), tAgree.Sub(tOffer).Round(time.Microsecond),
		time.Since(tAgree).Round(time.Microsecond), tApplied.Sub(tOffer).Round(time.Microsecond), max(tApplied.Sub(tAgree), 0).Round(time.Microsecond))
	if err := d.ReadStart(ctx); err != nil {
		return in.cleanup(false, err)
	}
	in.log.WithField("stage", "run").Info("driver: incoming migration started")
	return in.supervise(ctx)
}

// checkWaiting makes sure the guest's QEMU waits for an incoming migration and has none yet.
func checkWaiting(ctx context.Context, mon *qmp.Conn, name string) error {
	var (
		mi     qmp.MigrationInfo
		miErr  error
		miDone = make(chan struct{})
	)
	go func() {
		defer close(miDone)
		mi, miErr = qmp.QueryMigrate(ctx, mon)
	}()
	defer func() { <-miDone }()
	st, err := qmp.QueryStatus(ctx, mon)
	if err != nil {
		return fmt.Errorf("driver: query-status of guest %q: %w", name, err)
	}
	if st.Status != qmp.RunStateInMigrate {
		return fmt.Errorf("driver: guest %q's QEMU here is %s, not waiting for an incoming migration (start it with -incoming defer)", name, st.Status)
	}
	<-miDone
	if err := miErr; err != nil {
		return fmt.Errorf("driver: query-migrate of guest %q: %w", name, err)
	}
	if mi.Status != qmp.MigrationNone {
		return fmt.Errorf("driver: guest %q's QEMU here already has an incoming migration (%s); start a fresh QEMU with -incoming defer", name, mi.Status)
	}
	return nil
}

// findStderr locates the QEMU's stderr so its own words can be sent to the source.
func (in *incoming) findStderr() {
	path := in.g.LogPath
	if path == "" {
		pid, err := socketOwnerPID("/proc", in.g.QMP)
		if err == nil {
			path, err = stderrFile("/proc", pid)
		}
		if err != nil {
			in.log.WithError(err).Debug("driver: the destination QEMU's stderr is not readable; its errors will be reported without its own words")
			return
		}
	}
	in.stderr = path
	if off, err := fileSize(path); err == nil {
		in.offset = off
	}
}

// destError is the destination QEMU's own account of a failure: what it wrote to stderr during
// this migration, else what query-migrate said.
func (in *incoming) destError(fallback string) string {
	if in.stderr != "" {
		if tail, err := readTail(in.stderr, in.offset, 16<<10); err == nil && strings.TrimSpace(tail) != "" {
			return qemuErrorText(tail)
		}
	}
	return fallback
}

// listen starts the incoming migration on a port QEMU picks and returns the URI for the source.
func (in *incoming) listen(ctx context.Context) (string, error) {
	host := in.a.cfg.MigrationHost
	if host == "" {
		host = listenHost(in.a.cfg.Listen, in.a.ln.Addr())
	}
	in.started = true
	mi, err := qmp.StartIncoming(ctx, in.mon, "tcp:"+net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("driver: start the incoming migration: %w", err)
	}
	port, err := incomingPort(mi)
	if err != nil {
		return "", err
	}
	return "tcp:" + net.JoinHostPort(host, port), nil
}

// listenHost picks the address the destination QEMU listens on: the agent's own listening host,
// or, when the agent listens on every address, the host's name (as libvirt advertises it).
func listenHost(listen string, actual net.Addr) string {
	host, _, err := net.SplitHostPort(listen)
	if err == nil && host != "" && !net.ParseIP(host).IsUnspecified() {
		return host
	}
	if ta, ok := actual.(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		return ta.IP.String()
	}
	if h, err := osHostname(); err == nil {
		return h
	}
	return "localhost"
}

// incomingPort reads the port QEMU listens on from query-migrate's socket-address.
func incomingPort(mi qmp.MigrationInfo) (string, error) {
	raw, ok := mi.Extra["socket-address"]
	if !ok {
		return "", errors.New("driver: query-migrate reports no socket-address for the incoming migration")
	}
	var addrs []struct {
		Type string `json:"type"`
		Host string `json:"host"`
		Port string `json:"port"`
	}
	if err := json.Unmarshal(raw, &addrs); err != nil {
		return "", fmt.Errorf("driver: socket-address: %w", err)
	}
	for _, a := range addrs {
		if a.Type == "inet" && a.Port != "" {
			return a.Port, nil
		}
	}
	return "", fmt.Errorf("driver: socket-address %s has no inet port", raw)
}

// supervise follows the incoming migration to its end and sends the verdict.
func (in *incoming) supervise(ctx context.Context) error {
	d := in.d
	// The reader goroutine is owned here and ends with the session.
	fromSource := make(chan error, 1)
	readerDone := make(chan struct{})
	readCtx, stopRead := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(readerDone)
		for {
			if _, err := d.Recv(readCtx); err != nil {
				fromSource <- err
				return
			}
		}
	}()
	defer func() { stopRead(); d.Close(); <-readerDone }()

	// QEMU's MIGRATION and RESUME events (the events capability is on) wake the loop at once:
	// the source waits for the verdict with its guest paused. The tick is the fallback.
	sub := in.mon.Subscribe(64)
	defer sub.Close()
	events := sub.Events()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastProgress := time.Now()
	var orphanDeadline <-chan time.Time // set when the source vanished after Switchover
	srcCh := (<-chan error)(fromSource) // nil once the source is gone
	for {
		select {
		case <-ctx.Done(): // the agent is shutting down and the grace period is over
			_ = d.Abort(context.WithoutCancel(ctx), v2proto.AbortCancelled, "the destination agent is shutting down")
			return in.cleanup(false, fmt.Errorf("driver: cancelled by agent shutdown: %w", ctx.Err()))
		case err := <-srcCh:
			var ae *v2proto.AbortError
			if !d.SwitchoverReceived() || (errors.As(err, &ae) && ae.FromPeer) {
				// Before Switchover the source still owns the guest (its mig2, or mig2's guard,
				// cancels its side); an explicit Abort means the source resumes its copy.
				// Either way this QEMU can never receive the guest: clean up (FAULTS.md).
				return in.cleanup(false, fmt.Errorf("driver: the source ended the migration: %w", err))
			}
			// The connection broke after Switchover: the source may have let go of the guest,
			// whose final state is then on its way here, and never resumes a source that
			// completed without a verdict. Follow the incoming migration to its end: the guest
			// runs here if it completes, and this QEMU is cleaned up if it fails.
			in.log.WithError(err).Warn("driver: the connection to the source was lost after Switchover: following the incoming migration to its end")
			srcCh = nil
			orphanDeadline = time.After(orphanGrace)
			continue
		case <-orphanDeadline:
			return in.cleanup(false, fmt.Errorf("driver: the source vanished after Switchover and the incoming migration did not end within %s", orphanGrace))
		case <-in.mon.Done():
			text := in.awaitDeathText("")
			details := "the destination QEMU exited during the incoming migration"
			if text == "" {
				details += " without an error message (killed?)"
			}
			_ = d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeFailed, Status: "exited", DestError: text, Details: details})
			return in.cleanup(false, fmt.Errorf("driver: %s: %s", details, text))
		case _, ok := <-events:
			if !ok {
				events = nil // the monitor closed: mon.Done() fires
			}
		case <-tick.C:
		}
		mi, err := qmp.QueryMigrate(ctx, in.mon)
		if err != nil {
			continue // a dying QEMU: mon.Done() fires next
		}
		if time.Since(lastProgress) > 5*time.Second {
			lastProgress = time.Now()
			p := progressOf(mi)
			_ = d.SendProgress(ctx, &v2proto.Progress{Status: string(mi.Status), Transferred: p.Transferred, Remaining: p.Remaining, Total: p.Total})
		}
		switch mi.Status {
		case qmp.MigrationFailed, qmp.MigrationCancelled:
			text := in.destError(mi.ErrorDesc)
			_ = d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeFailed, Status: string(mi.Status), DestError: text})
			return in.cleanup(false, fmt.Errorf("driver: the incoming migration %s: %s", mi.Status, text))
		case qmp.MigrationCompleted:
			return in.finish(ctx, srcCh)
		}
	}
}

// orphanGrace bounds how long an incoming migration is followed after its source vanished
// past Switchover: the final device state takes seconds, not minutes.
const orphanGrace = 2 * time.Minute

// awaitDeathText gives a dying QEMU a moment to finish writing its stderr, then reads it.
func (in *incoming) awaitDeathText(fallback string) string {
	time.Sleep(100 * time.Millisecond)
	return in.destError(fallback)
}

// finish confirms that the guest runs here and sends Result running. The source announced
// Switchover before it let its QEMU send the final state, so it has arrived by now or is about to.
func (in *incoming) finish(ctx context.Context, fromSource <-chan error) error {
	d := in.d
	st, err := qmp.QueryStatus(ctx, in.mon)
	if err == nil && !st.Running && (st.Status == qmp.RunStatePaused || st.Status == qmp.RunStatePrelaunch) {
		// Started with -S: the guest ran on the source, so it runs here.
		if err := qmp.Cont(ctx, in.mon); err == nil {
			st, err = qmp.QueryStatus(ctx, in.mon)
		}
	}
	if err != nil || !st.Running {
		text := in.destError(fmt.Sprintf("the guest is %s after the migration completed", st.Status))
		_ = d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeFailed, Status: string(st.Status), DestError: text})
		return in.cleanup(false, fmt.Errorf("driver: the guest does not run after the migration: %s", text))
	}
	deadline := time.After(10 * time.Second)
	for !d.SwitchoverReceived() {
		select {
		case err := <-fromSource:
			return in.cleanup(true, fmt.Errorf("driver: the source ended the session before Switchover: %w", err))
		case <-deadline:
			return in.cleanup(true, errors.New("driver: the guest runs here but the source never announced Switchover"))
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeRunning, Status: string(st.Status)}); err != nil {
		in.log.WithError(err).Error("driver: the guest runs here but the verdict could not be sent; the source will resume its copy after its confirm timeout")
	}
	return in.cleanup(true, nil)
}

// cleanup undoes what the agent set on its QEMU. After a failure, a QEMU still waiting for
// this incoming migration can never receive it (QEMU 7.2 accepts one migrate-incoming per
// process), so it is shut down, as libvirt destroys a failed incoming domain. A QEMU that runs
// the guest is never touched beyond removing mig2's objects.
func (in *incoming) cleanup(guestRuns bool, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-in.mon.Done():
		return cause // the QEMU is gone; nothing to undo
	default:
	}
	if !guestRuns && in.started {
		if st, err := qmp.QueryStatus(ctx, in.mon); err == nil && st.Status == qmp.RunStateInMigrate {
			in.log.Info("driver: shutting down the destination QEMU that waited for the failed incoming migration")
			if err := qmp.Quit(ctx, in.mon); err != nil && !errors.Is(err, qmp.ErrClosed) {
				in.log.WithError(err).Warn("driver: quit")
			}
			return cause
		}
	}
	if err := in.applied.restore(ctx, in.mon); err != nil {
		in.log.WithError(err).Warn("driver: restoring the destination QEMU's migration settings")
	}
	return cause
}

// dnForms lists a DN in the order Go prints it and reversed, so QEMU's tls-authz matches
// whichever order its gnutls prints.
func dnForms(dn string) []string {
	if dn == "" {
		return nil
	}
	parts := splitDN(dn)
	slices.Reverse(parts)
	rev := strings.Join(parts, ",")
	if rev == dn {
		return []string{dn}
	}
	return []string{dn, rev}
}

// splitDN splits a DN at the commas that are not escaped.
func splitDN(dn string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(dn); i++ {
		switch dn[i] {
		case '\\':
			i++
		case ',':
			parts = append(parts, dn[start:i])
			start = i + 1
		}
	}
	return append(parts, dn[start:])
}
