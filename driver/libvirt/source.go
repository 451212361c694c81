package libvirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/mig2/mig2/driver"
	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/qmp/libvirtqmp"
	"github.com/mig2/mig2/v2proto"
)

// Source is a libvirt domain on the source host.
type Source struct {
	conn *golibvirt.Connect
	dom  *golibvirt.Domain
	Name string
	log  logrus.FieldLogger
}

// Open connects to libvirt at uri and looks the domain up.
func Open(ctx context.Context, uri, domain string, log logrus.FieldLogger) (*Source, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	conn, err := golibvirt.NewConnect(uri)
	if err != nil {
		return nil, &driver.ConnectError{What: "connect to libvirt at " + uriOrDefault(uri), Err: err}
	}
	dom, err := conn.LookupDomainByName(domain)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("libvirt: domain %q: %w", domain, err)
	}
	return &Source{conn: conn, dom: dom, Name: domain, log: log.WithField("domain", domain)}, nil
}

func uriOrDefault(uri string) string {
	if uri == "" {
		return "the default URI"
	}
	return uri
}

// Close releases the libvirt connection.
func (s *Source) Close() error {
	s.dom.Free()
	_, err := s.conn.Close()
	return err
}

// MigrateOptions configure one v2 migration of a libvirt domain. Flags carry the virsh options
// that keep their libvirt meaning (--live, --persistent, --undefinesource, --suspend …); mig2
// adds peer-to-peer, parallel, TLS and postcopy from the agreement.
type MigrateOptions struct {
	DestURI         string // the destination libvirt, e.g. qemu+tls://hostb/system
	Agent           string // the destination agent's host:port; default DestURI's host, port 16520
	Wants           driver.Wants
	TLSDir          string
	Insecure        bool
	ServerName      string
	Flags           golibvirt.DomainMigrateFlags
	DestXML         string // --xml: the domain XML the destination should create
	MigrateURI      string
	ListenAddress   string
	DestName        string
	SkipDeviceCheck bool // experts only: the agent must allow it
	// Deep reads the source QEMU's migration capabilities through QMP pass-through
	// (QemuMonitorCommand) instead of inferring them from libvirt's version. libvirt then marks
	// the domain tainted "custom-monitor".
	Deep           bool
	ConfirmTimeout time.Duration
	// ProgressTimeout aborts a job that has moved nothing for this long (--progress-timeout;
	// default 60 s, as on the plain-QEMU path).
	ProgressTimeout time.Duration
	OnProgress      func(driver.Progress)
	Log             logrus.FieldLogger
}

func (o *MigrateOptions) defaults() { driver.DefaultTimeouts(&o.ProgressTimeout, &o.ConfirmTimeout) }

// AgentAddress derives the agent's address from a libvirt URI's host.
func AgentAddress(destURI string) (string, error) {
	u, err := url.Parse(destURI)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("libvirt: destination URI %q names no host: give the agent's address with --agent HOST:PORT", destURI)
	}
	return net.JoinHostPort(u.Hostname(), "16520"), nil
}

// Migrate runs the v2 handshake with the destination's agent and then a peer-to-peer,
// parallel MigrateToURI3 with the agreed parameters. It returns when libvirt has finished the
// migration and the agent confirmed the domain runs there.
func (s *Source) Migrate(ctx context.Context, o MigrateOptions) (*driver.Summary, error) {
	start := time.Now()
	o.defaults()
	if o.Log == nil {
		o.Log = s.log
	}
	id := driver.NewMigrationID()
	log := o.Log.WithFields(logrus.Fields{"migration_id": id, "domain": s.Name, "peer": o.Agent})
	sum := &driver.Summary{MigrationID: id, Guest: s.Name, Protocol: "v2", Peer: o.DestURI}

	hello, err := s.hello(id, o)
	if err != nil {
		return nil, err
	}
	sum.Preflight.Source = time.Since(start)
	sum.Preflight.Facts = sum.Preflight.Source
	t0 := time.Now()
	sess, err := dialAgent(ctx, o, log)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	hello.Host.LinkMbps = driver.LinkMbps(sess.Conn())
	agreed, err := sess.Handshake(ctx, hello)
	if err != nil {
		return nil, err
	}
	sum.Agreed, sum.Adjustments = driver.SettingsOf(agreed), driver.AdjustmentsOf(agreed)
	log.WithField("stage", "agreed").Infof("libvirt: agreed %s", agreed)
	ready, err := sess.ReadReady(ctx)
	if err != nil {
		return nil, err
	}
	sum.Preflight.Handshake = time.Since(t0)
	sum.Preflight.Destination = min(ready.Prepare, sum.Preflight.Handshake)
	sum.Preflight.Protocol = sum.Preflight.Handshake - sum.Preflight.Destination

	// Always set: libvirt keeps a domain's speed across migrations, and an earlier
	// `migrate-setspeed` would otherwise cap this one. The binding's Bandwidth parameter would
	// cap postcopy too (FACTS.md), so the speed is set on the domain.
	if err := s.setSpeed(sum.Agreed.MaxBandwidth); err != nil {
		_ = sess.Abort(ctx, v2proto.AbortSourceFailed, "setting the bandwidth: "+err.Error())
		return nil, s.failed("apply", err, "")
	}
	params, flags := migrateParams(sum.Agreed, o)
	if err := sess.SendStart(ctx); err != nil {
		return nil, s.failed("start", err, "")
	}
	log.WithField("stage", "run").Infof("libvirt: MigrateToURI3 %s (parallel connections %d)", o.DestURI, sum.Agreed.Channels)

	// libvirt's job runs in its own goroutine, owned here; cancel aborts the job.
	done := make(chan error, 1)
	sum.Preflight.Total = time.Since(start)
	go func() { done <- s.dom.MigrateToURI3(o.DestURI, params, flags) }()
	var lastKeepalive time.Time
	last, stalled, migErr := s.follow(ctx, done, o.ProgressTimeout, func(p driver.Progress) {
		if o.OnProgress != nil {
			o.OnProgress(p)
		}
		// SPEC §4.6: a Progress at least every 10 s keeps the session alive.
		if time.Since(lastKeepalive) > 5*time.Second {
			lastKeepalive = time.Now()
			_ = sess.SendProgress(ctx, &v2proto.Progress{Status: "active", Transferred: p.Transferred, Remaining: p.Remaining, Total: p.Total})
		}
	})
	if st, err := s.dom.GetJobStats(golibvirt.DOMAIN_JOB_STATS_COMPLETED); err == nil && st.DataTotalSet {
		fillStats(sum, st)
	} else if last != nil {
		// A transient domain is gone from the source once migrated: use the last sample.
		fillStats(sum, last)
	}
	if migErr != nil {
		code := v2proto.AbortSourceFailed
		migErr = jobError(ctx, stalled, migErr)
		if ctx.Err() != nil {
			code = v2proto.AbortCancelled
		}
		dest := s.destReport(sess, code, migErr)
		return nil, s.failed("migrate", migErr, dest)
	}
	// libvirt finished: the destination resumed the domain (peer-to-peer Finish). The agent
	// confirms with its own eyes.
	if err := sess.SendSwitchover(ctx, "completed"); err != nil {
		log.WithError(err).Warn("libvirt: Switchover")
	}
	res, err := waitResult(ctx, sess, o.ConfirmTimeout)
	if err != nil || res.Outcome != v2proto.OutcomeRunning {
		text := ""
		if res != nil {
			text = res.DestError + " " + res.Details
		}
		return nil, &driver.MigrationError{Stage: "confirm", SourceRunning: false,
			SourceNote: "libvirt reported success but the agent did not confirm the domain runs on the destination", DestError: text, Err: errors.Join(err, errors.New("no confirmation"))}
	}
	sum.DestStatus, sum.SourceAfter = "running", "stopped by libvirt"
	sum.Total = time.Since(start)
	return sum, nil
}

// setCommon sets the parameters both paths pass as the user gave them: --xml, --migrateuri,
// --listen-address, --dname.
func (o MigrateOptions) setCommon(p *golibvirt.DomainMigrateParameters) {
	if o.DestXML != "" {
		p.DestXMLSet, p.DestXML = true, o.DestXML
	}
	if o.MigrateURI != "" {
		p.URISet, p.URI = true, o.MigrateURI
	}
	if o.ListenAddress != "" {
		p.ListenAddressSet, p.ListenAddress = true, o.ListenAddress
	}
	if o.DestName != "" {
		p.DestNameSet, p.DestName = true, o.DestName
	}
}

// setSpeed sets the domain's migration speed (bytes/s; 0 = unlimited). Always set: libvirt
// keeps a domain's speed across migrations, and an earlier cap would otherwise apply.
func (s *Source) setSpeed(bps int64) error {
	speed := uint64(unlimitedMiBps)
	if bps > 0 {
		speed = uint64(bps >> 20)
	}
	return s.dom.MigrateSetMaxSpeed(speed, 0)
}

// unlimitedMiBps is libvirt's largest migration speed (QEMU_DOMAIN_MIG_BANDWIDTH_MAX): no cap.
const unlimitedMiBps = (1<<63 - 1) / (1 << 20)

// dialAgent opens the control channel to the destination's agent.
func dialAgent(ctx context.Context, o MigrateOptions, log logrus.FieldLogger) (*v2proto.Source, error) {
	cfg, err := driver.ProtoConfig(o.TLSDir, o.Insecure, log)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = o.ServerName
	cfg.HandshakeTimeout = 4 * time.Second
	sess, err := v2proto.Dial(ctx, o.Agent, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &driver.ConnectError{What: "reach the mig2 agent at " + o.Agent, Err: err}
	}
	return sess, nil
}

// migrateParams maps the agreement and the user's options onto libvirt's typed parameters.
func migrateParams(a driver.Settings, o MigrateOptions) (*golibvirt.DomainMigrateParameters, golibvirt.DomainMigrateFlags) {
	p := &golibvirt.DomainMigrateParameters{
		ParallelConnectionsSet: true, ParallelConnections: a.Channels,
	}
	flags := o.Flags | golibvirt.MIGRATE_PEER2PEER | golibvirt.MIGRATE_PARALLEL
	if a.Compression != "" && a.Compression != "none" {
		p.CompressionSet, p.Compression = true, a.Compression
	}
	if a.TLS {
		flags |= golibvirt.MIGRATE_TLS
	}
	if a.Postcopy {
		flags |= golibvirt.MIGRATE_POSTCOPY
	}
	o.setCommon(p)
	return p, flags
}

func (s *Source) hello(id string, o MigrateOptions) (*v2proto.Hello, error) {
	xml, err := s.dom.GetXMLDesc(golibvirt.DOMAIN_XML_MIGRATABLE)
	if err != nil {
		return nil, fmt.Errorf("libvirt: domain XML: %w", err)
	}
	tree, _, err := TreeFromXML([]byte(xml))
	if err != nil {
		return nil, err
	}
	facts, err := hostFacts(s.conn)
	if err != nil {
		return nil, err
	}
	if o.Deep {
		if err := s.deepFacts(&facts); err != nil {
			return nil, err
		}
		if err := s.deepDevices(&tree); err != nil {
			return nil, err
		}
	}
	facts.Traits = append(facts.Traits, driver.SourceTraits(facts.QEMUVersion, false)...)
	destXML := o.DestXML
	if destXML == "" {
		destXML = xml
	}
	h := &v2proto.Hello{
		MigrationID: id, Guest: s.Name, Wants: wantsOf(o.Wants), Host: facts, TLS: !o.Insecure,
		DeviceTree: tree, GuestConfig: destXML,
	}
	if o.SkipDeviceCheck {
		h.Features = []v2proto.Feature{} // no device-tree feature: the trees are not compared
		s.log.Warn("libvirt: --skip-device-check: the device trees will NOT be compared")
	}
	return h, nil
}

func wantsOf(w driver.Wants) v2proto.Wants {
	return v2proto.Wants{
		Channels: uint32(max(w.Channels, 0)), Compression: w.Compression,
		Postcopy: w.Postcopy, PostcopyPreempt: w.Postcopy,
		MaxBandwidth: uint64(max(w.MaxBandwidth, 0)), DowntimeLimitMs: uint64(w.DowntimeLimit.Milliseconds()),
	}
}

// follow polls libvirt's job statistics until MigrateToURI3 returns, and returns the last
// statistics seen and MigrateToURI3's error. It aborts the job (libvirt then keeps the source
// domain running) when ctx is cancelled, or when nothing has moved for stall (0: never); stalled
// then says so. A job still running YankAfter after its abort is a cancel stuck on a dead
// network (docs/FAULTS.md): it is ended by yanking the migration's connections, tried again every
// yankRetry while libvirt holds the yank back.
func (s *Source) follow(ctx context.Context, done <-chan error, stall time.Duration, onProgress func(driver.Progress)) (last *golibvirt.DomainJobInfo, stalled *driver.StallError, err error) {
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	moving := driver.NewStallDetector(stall, time.Now())
	var aborted bool
	var nextYank time.Time // when to try to end a stuck cancel; zero: not (or no longer)
	attempts := 0
	abort := func() {
		if !aborted {
			aborted, nextYank = true, time.Now().Add(driver.YankAfter)
			if err := s.dom.AbortJob(); err != nil {
				s.log.WithError(err).Warn("libvirt: AbortJob")
			}
		}
	}
	for {
		select {
		case err := <-done:
			return last, stalled, err
		case <-ctx.Done():
			abort()
		case <-tick.C:
			if st, err := s.dom.GetJobStats(0); err == nil && st.DataTotalSet {
				last = st
				if onProgress != nil {
					onProgress(progressOf(st))
				}
			}
			var sent uint64
			if last != nil {
				sent = last.DataProcessed
			}
			if stalled == nil && !aborted && moving.Observe(time.Now(), sent) {
				stalled = &driver.StallError{Status: qmp.MigrationActive, Transferred: sent, For: stall}
				s.log.WithError(stalled).Warn("libvirt: aborting the migration job")
				s.yankStalled()
				abort()
			}
			if !nextYank.IsZero() && time.Now().After(nextYank) {
				attempts++
				if s.yankStuckCancel(attempts == 1) {
					nextYank = time.Time{}
				} else {
					nextYank = time.Now().Add(yankRetry)
				}
			}
		}
	}
}

// yankStalled yanks the connections of a migration that has stopped moving, before its job is
// aborted. A stall is most often a dead link, on which QEMU's cancel would hang (see
// yankStuckCancel); and libvirt lets QMP pass-through in while its job still waits for QEMU,
// but not always once the cancel has started (docs/FAULTS.md). QEMU then fails the migration
// and keeps running the guest, as it does for a cancel.
func (s *Source) yankStalled() {
	st, act, err := s.yankThrough(onStall)
	switch {
	case err != nil:
		s.log.WithError(err).Warn("libvirt: could not yank the stalled migration's connections through QMP pass-through; aborting the job only")
	case act == yankNow:
		s.log.Warnf("libvirt: the migration was %s but moved nothing: yanked its connections through QMP pass-through (libvirt marks the domain tainted \"custom-monitor\")", st)
	}
}

// yankStuckCancel ends a cancel that QEMU has not finished YankAfter after libvirt asked for
// it: QEMU 7.2's sending threads block on a dead network, and the migration stays
// "cancelling" (and MigrateToURI3 with it) until the link returns or TCP gives up, ~15 min
// later. Yanking the migration's connections ends it at once, as on mig2's plain-QEMU path.
// libvirt has no call for it, so it goes through QMP pass-through, which marks the domain
// tainted "custom-monitor". libvirt may hold the pass-through back while its own job waits for
// the cancel: the yank then gives up after 5 s and is tried again. It reports whether it is
// done: yanked, or nothing to yank. Only the first failure is logged (first).
func (s *Source) yankStuckCancel(first bool) (done bool) {
	st, act, err := s.yankThrough(onStuckCancel)
	switch {
	case err != nil:
		if first {
			s.log.WithError(err).Warnf("libvirt: the cancel is still not over after %s and libvirt's QMP pass-through did not let the yank of its connections through: trying again every %s", driver.YankAfter, yankRetry)
		}
		return false
	case act == yankNow:
		s.log.Warnf("libvirt: the cancel was still %s (the network is probably down): yanked the migration's connections through QMP pass-through (libvirt marks the domain tainted \"custom-monitor\")", st)
	}
	return act != yankLater
}

// yankThrough reads QEMU's migration status through QMP pass-through and, if decide says so,
// yanks the migration's connections.
func (s *Source) yankThrough(decide func(qmp.MigrationStatus) yankAction) (qmp.MigrationStatus, yankAction, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mon := libvirtqmp.New(s.dom)
	defer mon.Close()
	info, err := qmp.QueryMigrate(ctx, mon)
	if err != nil {
		return "", yankLater, err
	}
	act := decide(info.Status)
	if act == yankNow {
		err = qmp.YankMigration(ctx, mon)
	}
	return info.Status, act, err
}

// yankAction is what to do about the connections of a migration in a given status.
type yankAction int

const (
	yankNothing yankAction = iota // over, or past the point where QEMU can cancel
	yankNow
	yankLater // not yet: ask again
)

// onStall decides for a migration that moved nothing for the progress timeout, before the abort.
func onStall(st qmp.MigrationStatus) yankAction {
	switch st {
	case qmp.MigrationSetup, qmp.MigrationActive, qmp.MigrationCancelling:
		return yankNow
	}
	return yankNothing // finishing, or over: the abort decides
}

// onStuckCancel decides for a migration whose job was aborted YankAfter ago.
func onStuckCancel(st qmp.MigrationStatus) yankAction {
	switch st {
	case qmp.MigrationCancelling:
		return yankNow
	case qmp.MigrationSetup, qmp.MigrationActive, qmp.MigrationPreSwitchover:
		return yankLater // the cancel has not reached QEMU yet
	}
	return yankNothing
}

// yankRetry is how often a yank that libvirt held back is tried again.
const yankRetry = 3 * time.Second

func progressOf(st *golibvirt.DomainJobInfo) driver.Progress {
	p := driver.Progress{Status: "active", Transferred: st.DataProcessed, Remaining: st.DataRemaining, Total: st.DataTotal}
	if st.TimeElapsedSet {
		p.Elapsed = time.Duration(st.TimeElapsed) * time.Millisecond
	}
	if st.MemBpsSet {
		p.Throughput = float64(st.MemBps)
	}
	if st.MemDirtyRateSet {
		p.DirtyRate = st.MemDirtyRate * 4096
	}
	if st.DowntimeSet {
		p.ExpectedDowntime = time.Duration(st.Downtime) * time.Millisecond
	}
	return p
}

func fillStats(sum *driver.Summary, st *golibvirt.DomainJobInfo) {
	sum.Migration = time.Duration(st.TimeElapsed) * time.Millisecond
	sum.Downtime = time.Duration(st.Downtime) * time.Millisecond
	sum.Setup = time.Duration(st.SetupTime) * time.Millisecond
	sum.Transferred = st.DataProcessed
	if sum.Migration > 0 {
		sum.Throughput = float64(sum.Transferred) / sum.Migration.Seconds()
	}
}

// destReport tells the agent the migration failed here (a Progress with status "failed"),
// collects its account — what the destination QEMU wrote to libvirt's log — and ends the
// session.
func (s *Source) destReport(sess *v2proto.Source, code v2proto.AbortCode, cause error) string {
	ctx := context.Background()
	if err := sess.SendProgress(ctx, &v2proto.Progress{Status: "failed", Message: cause.Error()}); err == nil {
		if res, err := waitResult(ctx, sess, 5*time.Second); err == nil && res != nil {
			return strings.TrimSpace(res.DestError)
		}
	}
	_ = sess.Abort(ctx, code, cause.Error())
	return ""
}

// waitResult waits for the agent's Result, skipping Progress.
func waitResult(ctx context.Context, sess *v2proto.Source, limit time.Duration) (*v2proto.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		m, err := sess.Recv(ctx)
		if err != nil {
			return nil, err
		}
		if r, ok := m.(*v2proto.Result); ok {
			return r, nil
		}
	}
}

// failed builds the error for a migration that did not happen; libvirt keeps (or resumes) the
// source domain itself when a migration fails, and mig2 checks.
func (s *Source) failed(stage string, err error, dest string) error {
	me := &driver.MigrationError{Stage: stage, DestError: dest, Err: err}
	state, _, serr := s.dom.GetState()
	switch {
	case serr != nil:
		me.SourceNote = serr.Error()
	case state == golibvirt.DOMAIN_RUNNING:
		me.SourceRunning = true
	case state == golibvirt.DOMAIN_PAUSED:
		if rerr := s.dom.Resume(); rerr == nil {
			me.SourceRunning, me.SourceNote = true, "resumed by mig2"
		} else {
			me.SourceNote = "paused; resume failed: " + rerr.Error()
		}
	default:
		me.SourceNote = fmt.Sprintf("domain state %d", state)
	}
	return me
}

// jobError is the error of a failed MigrateToURI3, saying first why mig2 aborted the job, if it
// did, and what a QEMU that can no longer migrate means.
func jobError(ctx context.Context, stalled *driver.StallError, err error) error {
	err = driver.ExplainStuckMigration(plainLibvirtError(err))
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("libvirt: %w (%v)", ctx.Err(), err)
	case stalled != nil:
		return fmt.Errorf("%w (%v)", stalled, err)
	}
	return err
}

// plainLibvirtError turns the binding's virError(Code=…, Domain=…, Message='…') into libvirt's
// own message, which is what virsh prints.
func plainLibvirtError(err error) error {
	var le golibvirt.Error
	if errors.As(err, &le) && le.Message != "" {
		return fmt.Errorf("libvirt: %s", le.Message)
	}
	return err
}

// deepFacts asks the domain's QEMU itself, through libvirt's QMP pass-through, which migration
// capabilities and compression methods it has; libvirt's own limits still apply (it can pass
// multifd compression only from 9.4).
func (s *Source) deepFacts(f *v2proto.HostFacts) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := driver.QEMUFacts(ctx, libvirtqmp.New(s.dom))
	if err != nil {
		return fmt.Errorf("libvirt: --deep: %w", err)
	}
	f.QEMUVersion, f.Capabilities, f.Parameters = q.QEMUVersion, q.Capabilities, q.Parameters
	var comp []string
	for _, c := range f.Compression {
		if c == "none" || slices.Contains(q.Compression, c) {
			comp = append(comp, c)
		}
	}
	f.Compression = comp
	s.log.Warn("libvirt: --deep: QMP pass-through marks the domain tainted (custom-monitor)")
	return nil
}

// MigrateV1 runs a legacy (v1) migration through libvirt's own flow: MigrateToURI3 without
// VIR_MIGRATE_PARALLEL, the user's flags as given, no agent and no handshake. mig2 adds its
// progress and error reporting, and checks the source domain survives a failure.
func (s *Source) MigrateV1(ctx context.Context, o MigrateOptions, compMethods []string) (*driver.Summary, error) {
	start := time.Now()
	o.defaults()
	sum := &driver.Summary{MigrationID: driver.NewMigrationID(), Guest: s.Name, Protocol: "v1", Peer: o.DestURI}
	if o.Flags&golibvirt.MIGRATE_PARALLEL != 0 {
		return nil, fmt.Errorf("libvirt: v1 invariant violated: the legacy path never runs a parallel (multifd) migration")
	}
	p := &golibvirt.DomainMigrateParameters{}
	if len(compMethods) > 0 {
		p.CompressionSet, p.Compression = true, strings.Join(compMethods, ",")
	}
	o.setCommon(p)
	if err := s.setSpeed(o.Wants.MaxBandwidth); err != nil {
		return nil, s.failed("apply", err, "")
	}
	done := make(chan error, 1)
	go func() { done <- s.dom.MigrateToURI3(o.DestURI, p, o.Flags) }()
	last, stalled, err := s.follow(ctx, done, o.ProgressTimeout, o.OnProgress)
	if last != nil {
		fillStats(sum, last)
	}
	if err != nil {
		return nil, s.failed("migrate", jobError(ctx, stalled, err), "")
	}
	sum.DestStatus, sum.SourceAfter = "running (libvirt's confirmation)", "stopped by libvirt"
	sum.Total = time.Since(start)
	return sum, nil
}

// deepDevices reads the QOM device tree through QMP pass-through and adds to the XML's tree
// every device QEMU has that libvirt does not know (hot-plugged through QMP behind libvirt's
// back): the destination, built from the XML, will lack it, and the diff says so before any RAM
// moves instead of the destination failing at device load.
func (s *Source) deepDevices(tree *v2proto.DeviceTree) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live, err := s.dom.GetXMLDesc(0) // aliases are the QOM ids libvirt gave its devices
	if err != nil {
		return fmt.Errorf("libvirt: --deep: domain XML: %w", err)
	}
	known, err := knownIDs([]byte(live))
	if err != nil {
		return err
	}
	qt, err := qmp.ReadDeviceTree(ctx, libvirtqmp.New(s.dom))
	if err != nil {
		return fmt.Errorf("libvirt: --deep: %w", err)
	}
	for _, d := range qt.Devices {
		if d.ID == "" || known[d.ID] {
			continue
		}
		tree.Devices = append(tree.Devices, v2proto.Device{ID: "qom:" + d.ID, Type: d.Type,
			Props: map[string]string{"info.source": "in QEMU but not in the domain XML (hot-plugged behind libvirt's back?)"}})
	}
	slices.SortFunc(tree.Devices, func(a, b v2proto.Device) int { return strings.Compare(a.ID, b.ID) })
	return nil
}

// knownIDs are the device ids a domain XML accounts for: libvirt's aliases and the ids of
// <qemu:commandline> devices.
func knownIDs(xml []byte) (map[string]bool, error) {
	tree, _, err := TreeFromXML(xml)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, d := range tree.Devices {
		if a := d.Props["info.alias"]; a != "" {
			known[a] = true
		}
		if id, ok := strings.CutPrefix(d.ID, "qemu:commandline/"); ok {
			known[id] = true
		}
	}
	return known, nil
}

// Check runs the handshake with the agent up to the agreement and reports, without migrating:
// what would be agreed and how the device trees compare (mig2 check).
func (s *Source) Check(ctx context.Context, o MigrateOptions) (*driver.CheckReport, error) {
	if o.Log == nil {
		o.Log = s.log
	}
	hello, err := s.hello(driver.NewMigrationID(), o)
	if err != nil {
		return nil, err
	}
	sess, err := dialAgent(ctx, o, o.Log)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	hello.Host.LinkMbps = driver.LinkMbps(sess.Conn())
	if err := sess.SendHello(ctx, hello); err != nil {
		return nil, err
	}
	offer, err := sess.ReadOffer(ctx)
	if err != nil {
		return nil, err
	}
	hello = sess.Hello()
	rep := &driver.CheckReport{Peer: o.DestURI, Guest: s.Name, SourceQEMU: hello.Host.QEMUVersion, DestQEMU: offer.Host.QEMUVersion,
		Diff: v2proto.DiffTrees(&hello.DeviceTree, &offer.DeviceTree)}
	agreed, negErr := v2proto.Negotiate(hello, offer)
	if negErr == nil {
		st := driver.SettingsOf(agreed)
		rep.Agreed, rep.Adjustments, rep.Compatible = &st, driver.AdjustmentsOf(agreed), true
	}
	_ = sess.Abort(ctx, v2proto.AbortCancelled, "mig2 check: compatibility report only, no migration")
	return rep, negErr
}
