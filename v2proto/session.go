package v2proto

// The handshake state machine (SPEC §9): a state struct per role with one method per stage.
// On failure a method sends the peer a typed Abort and returns a readable error locally.

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Stage names a point in the state machine (SPEC §9.1); it travels in Abort.
type Stage string

// Stages, SPEC §9.1.
const (
	StageHello      Stage = "hello"      // source sends / destination waits for Hello
	StageOffer      Stage = "offer"      // destination sends / source waits for Offer
	StageAgree      Stage = "agree"      // source sends / destination waits for Agree
	StageReady      Stage = "ready"      // destination applies, sends / source waits for Ready
	StageStart      Stage = "start"      // source configures, sends / destination waits for Start
	StageRun        Stage = "run"        // the QEMU migration runs
	StageSwitchover Stage = "switchover" // after Switchover, waiting for Result
	StageDone       Stage = "done"       // Result delivered
)

// session is what both roles share.
type session struct {
	c   *Conn
	cfg *Config
	log logrus.FieldLogger

	mu         sync.Mutex
	stage      Stage
	ended      error // non-nil once the session is over (Abort, error, Result)
	hello      *Hello
	offer      *Offer
	agreement  *Agreement
	switchover bool
}

func newSession(c *Conn) session {
	return session{c: c, cfg: c.cfg, log: c.log, stage: StageHello}
}

// Source returns the source session on c; c must have the source role. If it has not (the
// dialer also declared itself the source) the peer gets Abort role and c is closed.
func (c *Conn) Source() (*Source, error) {
	if c.role != RoleSource {
		return nil, c.refuseRole(RoleSource)
	}
	return &Source{session: newSession(c)}, nil
}

// Destination returns the destination session on c; c must have the destination role.
func (c *Conn) Destination() (*Destination, error) {
	if c.role != RoleDestination {
		return nil, c.refuseRole(RoleDestination)
	}
	return &Destination{session: newSession(c)}, nil
}

func (c *Conn) refuseRole(want Role) error {
	err := &AbortError{Code: AbortRole, Stage: StageHello,
		Message: fmt.Sprintf("this side can only be the %v but the connection gives it the %v role", want, c.role)}
	_ = c.writeFrame(context.Background(), Marshal(&Abort{Code: err.Code, Stage: err.Stage, Message: err.Message}), false)
	c.closeGracefully(500 * time.Millisecond)
	return err
}

// Conn returns the transport.
func (s *session) Conn() *Conn { return s.c }

// Stage returns the current stage.
func (s *session) Stage() Stage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stage
}

// Hello returns the Hello as sent or received (after decoding), or nil.
func (s *session) Hello() *Hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hello
}

// Offer returns the Offer as sent or received (after decoding), or nil.
func (s *session) Offer() *Offer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offer
}

// Agreement returns the agreement once Agree has been sent (source) or checked (destination).
func (s *session) Agreement() *Agreement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agreement
}

// begin checks that the session is alive and in one of the given stages.
func (s *session) begin(method string, stages ...Stage) (Stage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended != nil {
		return s.stage, fmt.Errorf("v2proto: %s: %w: %w", method, ErrClosed, s.ended)
	}
	if !slices.Contains(stages, s.stage) {
		return s.stage, fmt.Errorf("v2proto: %s called at stage %s (want %v): %w", method, s.stage, stages, ErrState)
	}
	return s.stage, nil
}

func (s *session) setStage(st Stage) {
	s.mu.Lock()
	s.stage = st
	s.mu.Unlock()
	s.log.WithField("stage", st).Debug("v2proto: stage")
}

// end marks the session over; the first reason sticks.
func (s *session) end(err error) {
	s.mu.Lock()
	if s.ended == nil {
		s.ended = err
	}
	s.mu.Unlock()
}

// fail sends Abort(code) to the peer (best effort), ends the session, closes the connection and
// returns the local *AbortError (SPEC §4.9).
func (s *session) fail(stage Stage, code AbortCode, msg string, cause error) error {
	ae := &AbortError{Code: code, Stage: stage, Message: msg, Err: cause}
	s.sendAbortCtx(context.Background(), ae, brokenPeerLinger)
	return ae
}

// sendAbort sends a deliberate Abort (a refusal, a cancel) to a peer that is expected to close
// once it has undone the session.
func (s *session) sendAbort(ae *AbortError) {
	s.sendAbortCtx(context.Background(), ae, s.abortLinger())
}

func (s *session) sendAbortCtx(ctx context.Context, ae *AbortError, linger time.Duration) {
	s.mu.Lock()
	already := s.ended != nil
	if !already {
		s.ended = ae
	}
	s.mu.Unlock()
	if already {
		return
	}
	s.log.WithFields(logrus.Fields{"stage": ae.Stage, "code": ae.Code.String()}).Debug("v2proto: sending Abort: " + ae.Message)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = s.c.writeFrame(ctx, Marshal(&Abort{Code: ae.Code, Stage: ae.Stage, Message: ae.Message}), false)
	s.c.closeGracefully(linger)
}

// abortLinger is how long the sender of a deliberate Abort (a refusal, a cancel) waits for the
// receiver to close (SPEC §4.9). A source waits long enough for the destination to undo the
// session, so that it then knows the destination is ready for the next one (a migrate right after
// a check). A destination waits only so long that its Abort is not lost to a TCP reset, as does
// any side whose peer broke the protocol or stopped answering (brokenPeerLinger).
func (s *session) abortLinger() time.Duration {
	if s.c.role == RoleSource {
		return 2 * time.Second
	}
	return brokenPeerLinger
}

const brokenPeerLinger = 500 * time.Millisecond

// send writes m; a failed write ends the session (a TLS stream is unusable after one).
func (s *session) send(ctx context.Context, stage Stage, m Message, hash bool) error {
	err := s.c.writeFrame(ctx, Marshal(m), hash)
	if err == nil {
		s.log.WithField("stage", stage).Debugf("v2proto: sent %s", m.Type())
		return nil
	}
	if errors.Is(err, ErrFrameTooLarge) {
		return s.fail(stage, AbortInternal, err.Error(), err)
	}
	if ctx.Err() != nil {
		return s.fail(stage, AbortCancelled, "cancelled while sending "+m.Type().String(), err)
	}
	// The peer is probably gone. Keep the read side open: a Recv in progress may still read the
	// Abort the peer sent before it closed, which says more than this write error.
	e := fmt.Errorf("v2proto: send %s at stage %s: %w", m.Type(), stage, err)
	s.end(e)
	return e
}

// expect reads the next message and checks it against want (SPEC §9.1). An Abort from the
// peer becomes *AbortError{FromPeer: true}; a wrong message, a decode error, a timeout or a
// cancelled ctx sends Abort and ends the session, unless soft is set, in which case a cancelled
// ctx just returns its error (the session stays usable).
func (s *session) expect(ctx context.Context, stage Stage, timeout time.Duration, soft bool, want ...MsgType) (Message, []byte, error) {
	m, frame, err := s.c.readMsg(ctx, time.Now().Add(timeout))
	if err != nil {
		if prev := s.endedErr(); prev != nil {
			return nil, nil, prev // ended meanwhile (Abort from another goroutine, Close)
		}
		switch {
		case ctx.Err() != nil && soft:
			return nil, nil, fmt.Errorf("v2proto: waiting at stage %s: %w", stage, err)
		case ctx.Err() != nil:
			return nil, nil, s.fail(stage, AbortCancelled, fmt.Sprintf("cancelled while waiting for %s", wantString(want)), err)
		case errors.Is(err, ErrFrameTooLarge):
			return nil, nil, s.fail(stage, AbortFrameTooLarge, err.Error(), err)
		case errors.Is(err, ErrProtocol):
			return nil, nil, s.fail(stage, AbortProtocol, err.Error(), err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, nil, s.fail(stage, AbortTimeout, fmt.Sprintf("no %s within %v", wantString(want), timeout), ErrTimeout)
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			e := fmt.Errorf("v2proto: the peer closed the connection at stage %s (waiting for %s): %w", stage, wantString(want), ErrClosed)
			s.end(e)
			_ = s.c.Close()
			return nil, nil, e
		default:
			e := fmt.Errorf("v2proto: receive at stage %s: %w", stage, err)
			s.end(e)
			_ = s.c.Close()
			return nil, nil, e
		}
	}
	if a, ok := m.(*Abort); ok {
		ae := &AbortError{Code: a.Code, Stage: a.Stage, Message: a.Message, FromPeer: true}
		s.log.WithFields(logrus.Fields{"stage": stage, "code": a.Code.String()}).Debug("v2proto: peer aborted: " + a.Message)
		s.end(ae)
		// The connection stays open until the owner's Close, once it has undone what the
		// session changed: the sender waits for that close (SPEC §4.9).
		return nil, nil, ae
	}
	if !slices.Contains(want, m.Type()) {
		ue := &UnexpectedMessageError{Stage: stage, Want: want, Got: m.Type()}
		return nil, nil, s.fail(stage, AbortProtocol, ue.Error(), ue)
	}
	s.log.WithField("stage", stage).Debugf("v2proto: received %s", m.Type())
	return m, frame, nil
}

func (s *session) endedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

func wantString(want []MsgType) string {
	switch len(want) {
	case 0:
		return "a message"
	case 1:
		return want[0].String()
	}
	out := ""
	for i, w := range want {
		if i > 0 {
			out += " or "
		}
		out += w.String()
	}
	return out
}

// Abort sends Abort(code, message) to the peer, best effort, and ends the session; it returns
// nil. It is safe to call from any goroutine, at any stage, also while another goroutine waits
// in Recv (which then returns the same *AbortError). Aborting an ended session is a no-op.
func (s *session) Abort(ctx context.Context, code AbortCode, message string) error {
	s.mu.Lock()
	stage := s.stage
	s.mu.Unlock()
	s.sendAbortCtx(ctx, &AbortError{Code: code, Stage: stage, Message: message}, s.abortLinger())
	return nil
}

// Close ends the session. A session still in progress sends Abort(cancelled) first; one that
// finished (Result) or was aborted just closes.
func (s *session) Close() error {
	s.mu.Lock()
	ended, stage := s.ended, s.stage
	s.mu.Unlock()
	if ended == nil && stage != StageDone {
		s.sendAbort(&AbortError{Code: AbortCancelled, Stage: stage, Message: "session closed"})
		return nil
	}
	s.end(ErrClosed)
	s.c.closeGracefully(500 * time.Millisecond)
	return nil
}

func (s *session) nonce() ([32]byte, error) {
	var n [32]byte
	r := s.cfg.Rand
	if r == nil {
		r = rand.Reader
	}
	_, err := io.ReadFull(r, n[:])
	return n, err
}

// roundTrip encodes m and decodes it back, so that what we keep is exactly what the peer will
// decode, and nothing leaves this side that the spec forbids.
func roundTrip(m Message) (Message, []byte, error) {
	payload := Marshal(m)
	if len(payload) > MaxFrameSizeV1 {
		return nil, nil, fmt.Errorf("v2proto: %s of %d bytes exceeds the maximum frame size %d: %w", m.Type(), len(payload), MaxFrameSizeV1, ErrFrameTooLarge)
	}
	back, err := Unmarshal(payload)
	if err != nil {
		return nil, nil, fmt.Errorf("v2proto: refusing to send an invalid %s: %w", m.Type(), err)
	}
	return back, payload, nil
}

// sendChecked round-trips m, then sends it; on a local validation error nothing is sent and the
// session stays as it was.
func (s *session) sendChecked(ctx context.Context, stage Stage, m Message, hash bool) (Message, error) {
	back, _, err := roundTrip(m)
	if err != nil {
		return nil, err
	}
	if err := s.send(ctx, stage, m, hash); err != nil {
		return nil, err
	}
	return back, nil
}

// ---------------------------------------------------------------------------------------------
// Source

// Source is the source side of a session: SendHello, ReadOffer, SendAgree, ReadReady,
// SendStart, then Recv (Progress, Result) with SendProgress and SendSwitchover, in that order.
// Abort and Close may be called at any time.
type Source struct {
	session
}

// SendHello sends Hello (SPEC §4.1). Zero Versions and nil Features take the Config's; a fresh
// nonce and the TLS flag are always filled in here. h is not modified.
func (s *Source) SendHello(ctx context.Context, h *Hello) error {
	if _, err := s.begin("SendHello", StageHello); err != nil {
		return err
	}
	m := *h
	if m.Versions == (VersionRange{}) {
		m.Versions = s.cfg.Versions
	}
	if m.Features == nil {
		m.Features = s.cfg.features()
	}
	m.TLS = s.c.tls
	var err error
	if m.Nonce, err = s.nonce(); err != nil {
		return fmt.Errorf("v2proto: nonce: %w", err)
	}
	back, err := s.sendChecked(ctx, StageHello, &m, true)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.hello = back.(*Hello)
	s.mu.Unlock()
	s.log = s.log.WithFields(logrus.Fields{"migration_id": m.MigrationID, "domain": m.Guest})
	s.setStage(StageOffer)
	return nil
}

// ReadOffer waits for the Offer (SPEC §4.2). An Abort instead (unknown guest, busy, policy)
// returns *AbortError{FromPeer: true}.
func (s *Source) ReadOffer(ctx context.Context) (*Offer, error) {
	if _, err := s.begin("ReadOffer", StageOffer); err != nil {
		return nil, err
	}
	m, frame, err := s.expect(ctx, StageOffer, s.cfg.OfferTimeout, false, MsgOffer)
	if err != nil {
		return nil, err
	}
	o := m.(*Offer)
	if o.Nonce == s.hello.Nonce {
		return nil, s.fail(StageOffer, AbortProtocol, "the Offer repeats the Hello's nonce (reflection?)", ErrProtocol)
	}
	s.c.hashFrame(frame)
	s.mu.Lock()
	s.offer = o
	s.mu.Unlock()
	s.setStage(StageAgree)
	return o, nil
}

// SendAgree computes the agreement (Negotiate) and sends it (SPEC §4.3). A refusal is sent to
// the peer as Abort with its code, and returned as *RefusalError or *DeviceMismatchError.
func (s *Source) SendAgree(ctx context.Context) (*Agreement, error) {
	if _, err := s.begin("SendAgree", StageAgree); err != nil {
		return nil, err
	}
	a, err := Negotiate(s.hello, s.offer)
	if err != nil {
		s.sendAbort(&AbortError{Code: CodeOf(err), Stage: StageAgree, Message: err.Error(), Err: err})
		return nil, err
	}
	back, err := s.sendChecked(ctx, StageAgree, &Agree{Agreement: *a, TranscriptHash: s.c.TranscriptHash()}, true)
	if err != nil {
		return nil, err
	}
	agreed := &back.(*Agree).Agreement
	s.mu.Lock()
	s.agreement = agreed
	s.mu.Unlock()
	s.setStage(StageReady)
	return agreed, nil
}

// Handshake runs SendHello, ReadOffer and SendAgree.
func (s *Source) Handshake(ctx context.Context, h *Hello) (*Agreement, error) {
	if err := s.SendHello(ctx, h); err != nil {
		return nil, err
	}
	if _, err := s.ReadOffer(ctx); err != nil {
		return nil, err
	}
	return s.SendAgree(ctx)
}

// ReadReady waits for Ready (SPEC §4.4) while the destination applies the agreement, and checks
// its transcript hash.
func (s *Source) ReadReady(ctx context.Context) (*Ready, error) {
	if _, err := s.begin("ReadReady", StageReady); err != nil {
		return nil, err
	}
	want := s.c.TranscriptHash()
	m, frame, err := s.expect(ctx, StageReady, s.cfg.ReadyTimeout, false, MsgReady)
	if err != nil {
		return nil, err
	}
	r := m.(*Ready)
	if r.TranscriptHash != want {
		return nil, s.fail(StageReady, AbortTranscript, fmt.Sprintf("Ready carries transcript hash %x, this side computed %x", r.TranscriptHash[:8], want[:8]), ErrTranscript)
	}
	if r.MigrationURI == "" {
		return nil, s.fail(StageReady, AbortProtocol, "Ready has an empty migration URI", ErrProtocol)
	}
	s.c.hashFrame(frame)
	s.setStage(StageStart)
	return r, nil
}

// SendStart tells the destination that the source is starting its QEMU migration (SPEC §4.5).
// Call it after configuring the source QEMU, right before `migrate`.
func (s *Source) SendStart(ctx context.Context) error {
	if _, err := s.begin("SendStart", StageStart); err != nil {
		return err
	}
	if err := s.send(ctx, StageStart, &Start{TranscriptHash: s.c.TranscriptHash()}, false); err != nil {
		return err
	}
	s.setStage(StageRun)
	return nil
}

// SendProgress sends the source QEMU's status (SPEC §4.6); send one at least every 10 s while
// the migration runs.
func (s *Source) SendProgress(ctx context.Context, p *Progress) error {
	stage, err := s.begin("SendProgress", StageRun, StageSwitchover)
	if err != nil {
		return err
	}
	_, err = s.sendChecked(ctx, stage, p, false)
	return err
}

// SendSwitchover tells the destination the source QEMU reached pre-switchover (SPEC §4.7); call
// it before `migrate-continue`. Only once.
func (s *Source) SendSwitchover(ctx context.Context, status string) error {
	if _, err := s.begin("SendSwitchover", StageRun); err != nil {
		return err
	}
	if _, err := s.sendChecked(ctx, StageRun, &Switchover{Status: status}, false); err != nil {
		return err
	}
	s.mu.Lock()
	s.switchover = true
	s.mu.Unlock()
	s.setStage(StageSwitchover)
	return nil
}

// Recv waits for the destination's next message after Start: *Progress or *Result (which ends
// the session). An Abort from the destination returns *AbortError{FromPeer: true}. Silence for
// longer than RunIdleTimeout aborts with timeout. Cancelling ctx only interrupts the wait: the
// session stays usable (call Abort to end it).
func (s *Source) Recv(ctx context.Context) (Message, error) {
	stage, err := s.begin("Recv", StageRun, StageSwitchover)
	if err != nil {
		return nil, err
	}
	m, _, err := s.expect(ctx, stage, s.cfg.RunIdleTimeout, true, MsgProgress, MsgResult)
	if err != nil {
		return nil, err
	}
	if r, ok := m.(*Result); ok {
		s.mu.Lock()
		sw := s.switchover
		s.mu.Unlock()
		if r.Outcome == OutcomeRunning && !sw {
			return nil, s.fail(stage, AbortProtocol, "Result running before this side sent Switchover", ErrProtocol)
		}
		s.setStage(StageDone)
		s.end(fmt.Errorf("v2proto: session finished with Result %s: %w", r.Outcome, ErrClosed))
	}
	return m, nil
}

// ---------------------------------------------------------------------------------------------
// Destination

// Destination is the destination side of a session: ReadHello, SendOffer (or Abort),
// ReadAgree, SendReady, ReadStart, then Recv (Progress, Switchover) with SendProgress, and
// finally SendResult. Abort and Close may be called at any time.
type Destination struct {
	session
	local    *Agreement // Negotiate's result on this side
	localErr error
	// The time this side spent preparing: Hello to Offer and Agree to Ready (Ready.Prepare).
	turn    time.Time
	prepare time.Duration
}

// ReadHello waits for the source's Hello (SPEC §4.1).
func (d *Destination) ReadHello(ctx context.Context) (*Hello, error) {
	if _, err := d.begin("ReadHello", StageHello); err != nil {
		return nil, err
	}
	m, frame, err := d.expect(ctx, StageHello, d.cfg.HelloTimeout, false, MsgHello)
	if err != nil {
		return nil, err
	}
	h := m.(*Hello)
	if h.TLS != d.c.tls {
		return nil, d.fail(StageHello, AbortProtocol, fmt.Sprintf("Hello says tls=%t but the connection is tls=%t", h.TLS, d.c.tls), ErrProtocol)
	}
	d.c.hashFrame(frame)
	d.mu.Lock()
	d.hello = h
	d.mu.Unlock()
	d.log = d.log.WithFields(logrus.Fields{"migration_id": h.MigrationID, "domain": h.Guest})
	d.setStage(StageOffer)
	d.turn = time.Now()
	return h, nil
}

// SendOffer answers the Hello (SPEC §4.2). Zero Versions and nil Features take the Config's; a
// fresh nonce and the TLS flag are always filled in here. To refuse instead (unknown guest,
// busy), call Abort.
func (d *Destination) SendOffer(ctx context.Context, o *Offer) error {
	if _, err := d.begin("SendOffer", StageOffer); err != nil {
		return err
	}
	m := *o
	if m.Versions == (VersionRange{}) {
		m.Versions = d.cfg.Versions
	}
	if m.Features == nil {
		m.Features = d.cfg.features()
	}
	m.TLS = d.c.tls
	d.prepare += time.Since(d.turn)
	var err error
	for first := true; first || m.Nonce == d.hello.Nonce; first = false {
		if m.Nonce, err = d.nonce(); err != nil { // always fresh (SPEC §7)
			return fmt.Errorf("v2proto: nonce: %w", err)
		}
	}
	back, err := d.sendChecked(ctx, StageOffer, &m, true)
	if err != nil {
		return err
	}
	offer := back.(*Offer)
	d.local, d.localErr = Negotiate(d.hello, offer)
	d.mu.Lock()
	d.offer = offer
	d.mu.Unlock()
	d.setStage(StageAgree)
	return nil
}

// Expected returns this side's own negotiation result, available after SendOffer: the agreement
// the source must send, or the refusal the source must abort with.
func (d *Destination) Expected() (*Agreement, error) { return d.local, d.localErr }

// ReadAgree waits for Agree and checks it against this side's own computation (SPEC §4.3).
// If negotiation fails here too, it waits for the source's Abort and returns the refusal
// (*RefusalError or *DeviceMismatchError).
func (d *Destination) ReadAgree(ctx context.Context) (*Agreement, error) {
	if _, err := d.begin("ReadAgree", StageAgree); err != nil {
		return nil, err
	}
	want := d.c.TranscriptHash()
	m, frame, err := d.expect(ctx, StageAgree, d.cfg.AgreeTimeout, false, MsgAgree)
	if d.localErr != nil {
		// SPEC §5: both sides know the refusal; the source aborts with it. Whatever arrived
		// (that Abort, a timeout, or an Agree it should not have sent), report the refusal.
		if err == nil {
			d.sendAbort(&AbortError{Code: CodeOf(d.localErr), Stage: StageAgree,
				Message: "the source sent Agree but negotiation fails: " + d.localErr.Error(), Err: d.localErr})
		}
		return nil, d.localErr
	}
	if err != nil {
		return nil, err
	}
	if h := m.(*Agree).TranscriptHash; h != want {
		return nil, d.fail(StageAgree, AbortTranscript, fmt.Sprintf("Agree carries transcript hash %x, this side computed %x", h[:8], want[:8]), ErrTranscript)
	}
	got := &m.(*Agree).Agreement
	if ok, diff := EqualAgreements(d.local, got); !ok {
		return nil, d.fail(StageAgree, AbortAgreementMismatch, "Agree differs from this side's computation: "+diff, ErrProtocol)
	}
	d.c.hashFrame(frame)
	d.mu.Lock()
	d.agreement = got
	d.mu.Unlock()
	d.turn = time.Now()
	d.setStage(StageReady)
	return got, nil
}

// SendReady tells the source where to migrate to (SPEC §4.4), after this side applied the
// agreement to its QEMU and started its incoming migration on migrationURI.
func (d *Destination) SendReady(ctx context.Context, migrationURI string) error {
	if _, err := d.begin("SendReady", StageReady); err != nil {
		return err
	}
	if migrationURI == "" {
		return fmt.Errorf("v2proto: SendReady: empty migration URI")
	}
	d.prepare += time.Since(d.turn)
	r := &Ready{MigrationURI: migrationURI, TranscriptHash: d.c.TranscriptHash(), Prepare: d.prepare}
	if _, err := d.sendChecked(ctx, StageReady, r, true); err != nil {
		return err
	}
	d.setStage(StageStart)
	return nil
}

// ReadStart waits for Start (SPEC §4.5) while the source configures its QEMU, and checks the
// transcript hash.
func (d *Destination) ReadStart(ctx context.Context) error {
	if _, err := d.begin("ReadStart", StageStart); err != nil {
		return err
	}
	want := d.c.TranscriptHash()
	m, _, err := d.expect(ctx, StageStart, d.cfg.StartTimeout, false, MsgStart)
	if err != nil {
		return err
	}
	if st := m.(*Start); st.TranscriptHash != want {
		return d.fail(StageStart, AbortTranscript, fmt.Sprintf("Start carries transcript hash %x, this side computed %x", st.TranscriptHash[:8], want[:8]), ErrTranscript)
	}
	d.setStage(StageRun)
	return nil
}

// SendProgress sends the destination QEMU's status (SPEC §4.6); send one at least every 10 s.
func (d *Destination) SendProgress(ctx context.Context, p *Progress) error {
	stage, err := d.begin("SendProgress", StageRun, StageSwitchover)
	if err != nil {
		return err
	}
	_, err = d.sendChecked(ctx, stage, p, false)
	return err
}

// Recv waits for the source's next message after Start: *Progress or *Switchover. An Abort from
// the source returns *AbortError{FromPeer: true}: cancel the incoming migration. Cancelling ctx
// only interrupts the wait.
func (d *Destination) Recv(ctx context.Context) (Message, error) {
	stage, err := d.begin("Recv", StageRun, StageSwitchover)
	if err != nil {
		return nil, err
	}
	want := []MsgType{MsgProgress, MsgSwitchover}
	if stage == StageSwitchover {
		want = want[:1]
	}
	m, _, err := d.expect(ctx, stage, d.cfg.RunIdleTimeout, true, want...)
	if err != nil {
		return nil, err
	}
	if _, ok := m.(*Switchover); ok {
		d.mu.Lock()
		d.switchover = true
		d.mu.Unlock()
		d.setStage(StageSwitchover)
	}
	return m, nil
}

// SwitchoverReceived reports whether the source has announced Switchover.
func (d *Destination) SwitchoverReceived() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.switchover
}

// SendResult sends the verdict and ends the session (SPEC §4.8). OutcomeRunning is allowed only
// after Switchover was received.
func (d *Destination) SendResult(ctx context.Context, r *Result) error {
	stage, err := d.begin("SendResult", StageRun, StageSwitchover)
	if err != nil {
		return err
	}
	if r.Outcome == OutcomeRunning && stage != StageSwitchover {
		return fmt.Errorf("v2proto: SendResult running before Switchover was received: %w", ErrState)
	}
	if _, err := d.sendChecked(ctx, stage, r, false); err != nil {
		return err
	}
	d.setStage(StageDone)
	d.end(fmt.Errorf("v2proto: session finished with Result %s: %w", r.Outcome, ErrClosed))
	return nil
}
