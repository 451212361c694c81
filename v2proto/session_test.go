package v2proto

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestExchangeTransports runs the whole protocol over every transport and with the roles
// reversed (the dialer as destination), like yamux's session tests.
func TestExchangeTransports(t *testing.T) {
	creds, _ := testCreds(t)
	for _, tc := range []struct {
		name     string
		tls      bool
		pipe     bool
		dialRole Role
	}{
		{"pipe/plaintext", false, true, RoleSource},
		{"pipe/tls", true, true, RoleSource},
		{"tcp/plaintext", false, false, RoleSource},
		{"tcp/tls", true, false, RoleSource},
		{"pipe/tls/reversed", true, true, RoleDestination},
		{"tcp/tls/reversed", true, false, RoleDestination},
		{"tcp/plaintext/reversed", false, false, RoleDestination},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cr *TLSCredentials
			if tc.tls {
				cr = creds
			}
			cfg := testConfig(cr)
			var client, server *Conn
			if tc.pipe {
				client, server = pipePair(t, tc.dialRole, cfg, cfg)
			} else {
				client, server = listenerPair(t, tc.dialRole, cfg, cfg)
			}
			if client.Role() != tc.dialRole || server.Role() != tc.dialRole.other() {
				t.Fatalf("roles: client %v server %v", client.Role(), server.Role())
			}
			if client.TLS() != tc.tls || server.TLS() != tc.tls {
				t.Fatalf("TLS flags: %v %v", client.TLS(), server.TLS())
			}
			if tc.tls && server.PeerDN() != "CN=src.example,O=mig2 test" {
				t.Errorf("server sees client DN %q", server.PeerDN())
			}
			src, dst := client, server
			if tc.dialRole == RoleDestination {
				src, dst = server, client
			}
			ex := runExchange(t, src, dst, sampleHello(5), sampleOffer(5))
			if ex.srcErr != nil || ex.dstErr != nil {
				t.Fatalf("source: %v\ndestination: %v", ex.srcErr, ex.dstErr)
			}
			if ok, diff := EqualAgreements(ex.srcAgreement, ex.dstAgreement); !ok {
				t.Fatalf("agreements differ: %s", diff)
			}
			a := ex.srcAgreement
			if a.Channels != 4 || a.Compression != "zstd" || a.TLS != tc.tls || !a.ReturnPath || !a.PauseBeforeSwitchover {
				t.Errorf("agreement: %v", a)
			}
			if ex.ready.MigrationURI != "tcp:127.0.0.1:49152" || ex.ready.Prepare < prepareDelay || ex.ready.Prepare > 10*time.Second {
				t.Errorf("ready (Prepare must cover the destination's %s of work): %+v", prepareDelay, ex.ready)
			}
			if ex.result == nil || ex.result.Outcome != OutcomeRunning {
				t.Errorf("result: %+v", ex.result)
			}
			if !slices.Equal(ex.dstSaw, []MsgType{MsgProgress, MsgSwitchover}) {
				t.Errorf("destination saw %v", ex.dstSaw)
			}
		})
	}
}

// TestTranscriptBindsTLS checks that the two sides compute the same transcript, and that it
// differs between connections (nonces, TLS exporter).
func TestTranscriptDiffersPerConnection(t *testing.T) {
	creds, _ := testCreds(t)
	cfg := testConfig(creds)
	var hashes [][32]byte
	for range 2 {
		c, s := pipePair(t, RoleSource, cfg, cfg)
		if c.TranscriptHash() != s.TranscriptHash() {
			t.Fatal("client and server transcripts differ after the preambles")
		}
		hashes = append(hashes, c.TranscriptHash())
	}
	if hashes[0] == hashes[1] {
		t.Fatal("two TLS connections have the same transcript: the exporter is not bound")
	}
}

// TestVersionSkew: [1,1] against [1,2] agrees on 1, both ways round.
func TestVersionSkew(t *testing.T) {
	for _, tc := range []struct{ src, dst VersionRange }{
		{VersionRange{1, 1}, VersionRange{1, 2}},
		{VersionRange{1, 2}, VersionRange{1, 1}},
	} {
		scfg, dcfg := testConfig(nil), testConfig(nil)
		scfg.Versions, dcfg.Versions = tc.src, tc.dst
		c, s := pipePair(t, RoleSource, scfg, dcfg)
		h, o := sampleHello(2), sampleOffer(2)
		h.Versions, o.Versions = VersionRange{}, VersionRange{} // from the Configs
		ex := runExchange(t, c, s, h, o)
		if ex.srcErr != nil || ex.dstErr != nil {
			t.Fatalf("%v vs %v: %v / %v", tc.src, tc.dst, ex.srcErr, ex.dstErr)
		}
		if ex.srcAgreement.Version != 1 {
			t.Fatalf("version %d", ex.srcAgreement.Version)
		}
	}
}

// TestUnknownFeatures: unknown features are ignored; a required unknown one is refused on both
// sides with the feature named.
func TestUnknownFeatures(t *testing.T) {
	h := sampleHello(1)
	h.Features = []Feature{{Name: FeatureDeviceTree, Required: true}, {Name: "vendor.future-thing"}}
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ex := runExchange(t, c, s, h, sampleOffer(1))
	if ex.srcErr != nil || ex.dstErr != nil {
		t.Fatalf("%v / %v", ex.srcErr, ex.dstErr)
	}
	if !slices.Equal(ex.srcAgreement.Features, []string{FeatureDeviceTree}) {
		t.Fatalf("features %v", ex.srcAgreement.Features)
	}

	h.Features = []Feature{{Name: FeatureDeviceTree, Required: true}, {Name: "vendor.future-thing", Required: true}}
	c, s = listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ex = runExchange(t, c, s, h, sampleOffer(1))
	for side, err := range map[string]error{"source": ex.srcErr, "destination": ex.dstErr} {
		var re *RefusalError
		if !errors.As(err, &re) || re.Code != AbortFeature || !strings.Contains(err.Error(), "vendor.future-thing") {
			t.Errorf("%s: want feature refusal naming the feature, got %v", side, err)
		}
	}
}

// TestDeviceMismatchBothSides: a fatal diff is refused on both sides with the diff.
func TestDeviceMismatchBothSides(t *testing.T) {
	o := sampleOffer(3)
	o.DeviceTree.Devices = o.DeviceTree.Devices[:2]
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ex := runExchange(t, c, s, sampleHello(3), o)
	for side, err := range map[string]error{"source": ex.srcErr, "destination": ex.dstErr} {
		var de *DeviceMismatchError
		if !errors.As(err, &de) || !IsRefused(err) || !IsDeviceMismatch(err) {
			t.Fatalf("%s: want *DeviceMismatchError, got %v", side, err)
		}
		if !strings.Contains(de.Error(), `device "dev002" (virtio-net-pci): missing on the destination`) {
			t.Errorf("%s: diff does not name the device:\n%v", side, de)
		}
	}
}

// TestRefusedOffer: the destination refuses the Hello (unknown guest); the source gets a typed
// Abort from the peer.
func TestRefusedOffer(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	errc := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		if _, err := d.ReadHello(ctx); err != nil {
			errc <- err
			return
		}
		errc <- d.Abort(ctx, AbortUnknownGuest, `no guest "guest1" waiting for a migration`)
	}()
	src, _ := c.Source()
	if err := src.SendHello(ctx, sampleHello(1)); err != nil {
		t.Fatal(err)
	}
	_, err := src.ReadOffer(ctx)
	var ae *AbortError
	if !errors.As(err, &ae) || !ae.FromPeer || ae.Code != AbortUnknownGuest || ae.Stage != StageOffer {
		t.Fatalf("want peer Abort unknown-guest at offer, got %#v", err)
	}
	if !IsRefused(err) || !IsAborted(err) {
		t.Errorf("IsRefused/IsAborted false for %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The session is over: further calls say so.
	if _, err := src.SendAgree(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("SendAgree after Abort: %v", err)
	}
}

// TestSourceAbortDuringRun: the destination notices an Abort while it waits in Recv.
func TestSourceAbortDuringRun(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	dstErr := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		defer d.Close()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		d.ReadAgree(ctx)
		d.SendReady(ctx, "tcp:127.0.0.1:1")
		if err := d.ReadStart(ctx); err != nil {
			dstErr <- err
			return
		}
		_, err := d.Recv(ctx)
		dstErr <- err
	}()
	src, _ := c.Source()
	if _, err := src.Handshake(ctx, sampleHello(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := src.ReadReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.SendStart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.Abort(ctx, AbortSourceFailed, "source QEMU: migration failed"); err != nil {
		t.Fatal(err)
	}
	err := <-dstErr
	var ae *AbortError
	if !errors.As(err, &ae) || !ae.FromPeer || ae.Code != AbortSourceFailed || ae.Stage != StageRun || ae.Message != "source QEMU: migration failed" {
		t.Fatalf("destination got %v", err)
	}
}

// TestAbortWhileRecv: Abort from another goroutine wakes a Recv, which returns that Abort.
func TestAbortWhileRecv(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		d.ReadAgree(ctx)
		d.SendReady(ctx, "tcp:127.0.0.1:1")
		d.ReadStart(ctx)
		d.Recv(ctx) // gets the Abort
		d.Close()
	}()
	src, _ := c.Source()
	src.Handshake(ctx, sampleHello(1))
	src.ReadReady(ctx)
	if err := src.SendStart(ctx); err != nil {
		t.Fatal(err)
	}
	recvErr := make(chan error, 1)
	go func() { _, err := src.Recv(ctx); recvErr <- err }()
	time.Sleep(50 * time.Millisecond)
	src.Abort(ctx, AbortCancelled, "user pressed Ctrl-C")
	select {
	case err := <-recvErr:
		var ae *AbortError
		if !errors.As(err, &ae) || ae.FromPeer || ae.Code != AbortCancelled {
			t.Fatalf("Recv returned %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Recv did not return after Abort")
	}
}

// TestRecvCancelIsSoft: cancelling Recv's context leaves the session usable.
func TestRecvCancelIsSoft(t *testing.T) {
	creds, _ := testCreds(t)
	for _, cr := range []*TLSCredentials{nil, creds} {
		testRecvCancelIsSoft(t, cr)
	}
}

func testRecvCancelIsSoft(t *testing.T, creds *TLSCredentials) {
	c, s := listenerPair(t, RoleSource, testConfig(creds), testConfig(creds))
	ctx := testCtx(t)
	release := make(chan struct{})
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		d.ReadAgree(ctx)
		d.SendReady(ctx, "tcp:127.0.0.1:1")
		d.ReadStart(ctx)
		<-release
		d.SendProgress(ctx, &Progress{Status: "active"})
		d.Recv(ctx)
		d.SendResult(ctx, &Result{Outcome: OutcomeRunning})
	}()
	src, _ := c.Source()
	src.Handshake(ctx, sampleHello(1))
	src.ReadReady(ctx)
	src.SendStart(ctx)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := src.Recv(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with a short ctx: %v", err)
	}
	close(release)
	m, err := src.Recv(ctx)
	if err != nil || m.Type() != MsgProgress {
		t.Fatalf("Recv after a cancelled Recv: %v %v", m, err)
	}
	src.SendSwitchover(ctx, "pre-switchover")
	m, err = src.Recv(ctx)
	if err != nil || m.(*Result).Outcome != OutcomeRunning {
		t.Fatalf("result: %v %v", m, err)
	}
}

// TestStallMidHandshake: a peer that stops answering trips the stage deadline; the stalled side
// gets Abort timeout.
func TestStallMidHandshake(t *testing.T) {
	cfg := testConfig(nil)
	cfg.OfferTimeout = 200 * time.Millisecond
	c, s := pipePair(t, RoleSource, cfg, testConfig(nil))
	ctx := testCtx(t)
	peer := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx) // ... and never answers
		_, _, err := d.c.readMsg(ctx, time.Now().Add(3*time.Second))
		peer <- err
	}()
	src, _ := c.Source()
	if err := src.SendHello(ctx, sampleHello(1)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := src.ReadOffer(ctx)
	if !IsTimeout(err) || CodeOf(err) != AbortTimeout {
		t.Fatalf("want timeout, got %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("deadline took %v", el)
	}
	// The stalled peer receives the Abort.
	if err := <-peer; err != nil {
		t.Fatalf("peer read: %v", err)
	}
}

// TestStallBeforePreamble: a client that connects and sends nothing is dropped at the
// handshake deadline, and the listener reports it.
func TestStallBeforePreamble(t *testing.T) {
	cfg := testConfig(nil)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := testCtx(t)
	_, err = l.Accept(ctx)
	var ce *ConnError
	if !errors.As(err, &ce) || !errors.Is(err, ErrNotMig2) && !IsTimeout(err) {
		t.Fatalf("Accept: %v", err)
	}
	nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("stalled connection not closed")
	}
}

// TestOversizeFrame: a frame over the limit is refused before its body is read, with Abort
// frame-too-large.
func TestOversizeFrame(t *testing.T) {
	c, s := pipePair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	got := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		_, err := d.ReadHello(ctx)
		got <- err
	}()
	hdr := binary.BigEndian.AppendUint32(nil, MaxFrameSizeV1+1)
	if _, err := c.nc.Write(hdr); err != nil {
		t.Fatal(err)
	}
	// The destination answers with Abort frame-too-large without waiting for the body.
	m, _, err := c.readMsg(ctx, time.Now().Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := m.(*Abort); !ok || a.Code != AbortFrameTooLarge {
		t.Fatalf("got %#v", m)
	}
	if err := <-got; !errors.Is(err, ErrFrameTooLarge) || CodeOf(err) != AbortFrameTooLarge {
		t.Fatalf("destination: %v", err)
	}
}

// TestUnexpectedMessage: a message out of order is a protocol Abort naming the stage.
func TestUnexpectedMessage(t *testing.T) {
	c, s := pipePair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	got := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		_, err := d.ReadHello(ctx)
		got <- err
	}()
	if err := c.writeFrame(ctx, Marshal(&Start{}), false); err != nil {
		t.Fatal(err)
	}
	m, _, err := c.readMsg(ctx, time.Now().Add(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	err = <-got
	var ue *UnexpectedMessageError
	if !errors.As(err, &ue) || ue.Got != MsgStart || ue.Stage != StageHello || !IsProtocol(err) {
		t.Fatalf("got %v", err)
	}
	if a := m.(*Abort); a.Code != AbortProtocol || !strings.Contains(a.Message, "unexpected Start at stage hello") {
		t.Fatalf("abort %+v", a)
	}
}

// TestAgreementMismatch: a source that sends a different agreement is refused.
func TestAgreementMismatch(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	got := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		_, err := d.ReadAgree(ctx)
		got <- err
	}()
	src, _ := c.Source()
	src.SendHello(ctx, sampleHello(1))
	src.ReadOffer(ctx)
	a, err := Negotiate(src.Hello(), src.Offer())
	if err != nil {
		t.Fatal(err)
	}
	a.Channels = 64 // cheat
	if err := src.send(ctx, StageAgree, &Agree{Agreement: *a, TranscriptHash: src.c.TranscriptHash()}, true); err != nil {
		t.Fatal(err)
	}
	err = <-got
	if CodeOf(err) != AbortAgreementMismatch || !strings.Contains(err.Error(), "channels=64") {
		t.Fatalf("got %v", err)
	}
}

// TestAgreeTranscriptMismatch: an Agree not bound to this session's Offer (a replay) is refused
// before the agreement is even compared.
func TestAgreeTranscriptMismatch(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	got := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		_, err := d.ReadAgree(ctx)
		got <- err
	}()
	src, _ := c.Source()
	src.SendHello(ctx, sampleHello(1))
	src.ReadOffer(ctx)
	a, err := Negotiate(src.Hello(), src.Offer())
	if err != nil {
		t.Fatal(err)
	}
	if err := src.send(ctx, StageAgree, &Agree{Agreement: *a, TranscriptHash: [32]byte{7}}, true); err != nil {
		t.Fatal(err)
	}
	if err := <-got; CodeOf(err) != AbortTranscript || !errors.Is(err, ErrTranscript) {
		t.Fatalf("got %v", err)
	}
}

// TestTranscriptMismatch: a Ready whose hash is wrong is refused by the source.
func TestTranscriptMismatch(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		d.ReadAgree(ctx)
		d.send(ctx, StageReady, &Ready{MigrationURI: "tcp:127.0.0.1:1", TranscriptHash: [32]byte{1}}, true)
		d.c.readMsg(ctx, time.Now().Add(3*time.Second))
	}()
	src, _ := c.Source()
	src.Handshake(ctx, sampleHello(1))
	_, err := src.ReadReady(ctx)
	if !errors.Is(err, ErrTranscript) || CodeOf(err) != AbortTranscript {
		t.Fatalf("got %v", err)
	}
}

// TestReflectedNonce: an Offer that repeats the Hello's nonce is refused.
func TestReflectedNonce(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	go func() {
		d, _ := s.Destination()
		h, _ := d.ReadHello(ctx)
		o := sampleOffer(1)
		o.Versions, o.Features, o.Nonce = VersionRange{1, 1}, DefaultFeatures(), h.Nonce
		d.send(ctx, StageOffer, o, true)
		d.c.readMsg(ctx, time.Now().Add(3*time.Second))
	}()
	src, _ := c.Source()
	src.SendHello(ctx, sampleHello(1))
	_, err := src.ReadOffer(ctx)
	if !IsProtocol(err) || !strings.Contains(err.Error(), "nonce") {
		t.Fatalf("got %v", err)
	}
}

// TestRoleConflict: two sources refuse each other at once.
func TestRoleConflict(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	// The server side gets the destination role; an application that can only be a source
	// refuses it.
	done := make(chan error, 1)
	go func() { _, err := s.Source(); done <- err }()
	src, _ := c.Source()
	src.SendHello(ctx, sampleHello(1))
	_, err := src.ReadOffer(ctx)
	if CodeOf(err) != AbortRole || !IsProtocol(err) {
		t.Fatalf("dialer got %v", err)
	}
	if err := <-done; CodeOf(err) != AbortRole {
		t.Fatalf("listener got %v", err)
	}
}

// TestStageOrder: calling a stage out of order is a local error; nothing is sent.
func TestStageOrder(t *testing.T) {
	c, _ := pipePair(t, RoleSource, testConfig(nil), testConfig(nil))
	src, _ := c.Source()
	if _, err := src.ReadReady(testCtx(t)); !errors.Is(err, ErrState) {
		t.Fatalf("got %v", err)
	}
}

// TestResultRunningNeedsSwitchover: the destination cannot claim success before Switchover.
func TestResultRunningNeedsSwitchover(t *testing.T) {
	c, s := pipePair(t, RoleSource, testConfig(nil), testConfig(nil))
	ctx := testCtx(t)
	res := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		d.ReadHello(ctx)
		d.SendOffer(ctx, sampleOffer(1))
		d.ReadAgree(ctx)
		d.SendReady(ctx, "tcp:127.0.0.1:1")
		d.ReadStart(ctx)
		err := d.SendResult(ctx, &Result{Outcome: OutcomeRunning})
		if !errors.Is(err, ErrState) {
			res <- err
			return
		}
		res <- d.SendResult(ctx, &Result{Outcome: OutcomeFailed, DestError: "qemu-system-x86_64: Unknown savevm section"})
	}()
	src, _ := c.Source()
	src.Handshake(ctx, sampleHello(1))
	src.ReadReady(ctx)
	src.SendStart(ctx)
	m, err := src.Recv(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := m.(*Result); r.Outcome != OutcomeFailed || !strings.Contains(r.DestError, "Unknown savevm section") {
		t.Fatalf("result %+v", r)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// TestAbortWaitsForReceiverClose: the receiver of an Abort keeps the connection until its owner
// closes the session, and the sender's Abort returns only then (SPEC §4.9), so a source that
// cancels (mig2 check) knows the destination has undone the session.
func TestAbortWaitsForReceiverClose(t *testing.T) {
	creds, _ := testCreds(t)
	c, s := listenerPair(t, RoleSource, testConfig(creds), testConfig(creds)) // TCP and TLS: half-close matters
	ctx := testCtx(t)
	closed := make(chan time.Time, 1)
	go func() {
		d, _ := s.Destination()
		if _, err := d.ReadHello(ctx); err != nil {
			closed <- time.Time{}
			return
		}
		_ = d.SendOffer(ctx, sampleOffer(1))
		_, err := d.ReadAgree(ctx)
		if CodeOf(err) != AbortCancelled {
			t.Errorf("destination: %v, want the source's cancel", err)
		}
		time.Sleep(300 * time.Millisecond) // undoing the session
		at := time.Now()
		d.Close()
		closed <- at
	}()
	src, _ := c.Source()
	if err := src.SendHello(ctx, sampleHello(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := src.ReadOffer(ctx); err != nil {
		t.Fatal(err)
	}
	src.Abort(ctx, AbortCancelled, "check only")
	returned := time.Now()
	at := <-closed
	if at.IsZero() {
		t.Fatal("the destination read no Hello")
	}
	if returned.Before(at) {
		t.Fatalf("Abort returned %v before the receiver closed", at.Sub(returned))
	}
	if returned.Sub(at) > 200*time.Millisecond {
		t.Fatalf("Abort returned %v after the receiver closed, want at once", returned.Sub(at))
	}
}
