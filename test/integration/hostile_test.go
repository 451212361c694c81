//go:build integration

package integration

// Hostile peers against a real `mig2 agent` with a real incoming QEMU (issue 9). Every peer must
// be refused before any migration begins (the destination QEMU still waits, untouched), be
// logged once by the agent (no log flood), and leave the agent serving honest sources: a
// `mig2 check` after each one, and at the end a real migration of the dirtying guest whose
// memory verifies intact on the destination.
//
// Each hostile peer connects from its own loopback address (127.0.0.20 and up), so the agent's
// log lines for it can be counted, and so that it meets the agent's per-host handshake cap
// (SPEC §10) on its own while honest sources come from 127.0.0.1.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
	"github.com/mig2/mig2/v2proto/testcerts"
)

// The agent's defaults that the hostile peers run into (SPEC §9.2, §10).
const (
	agentHandshakeDeadline = 10 * time.Second // TCP, TLS and preambles
	agentHelloDeadline     = 10 * time.Second // the Hello after the preambles
	agentPerHostCap        = 4                // handshakes at once from one address
	agentGlobalCap         = 16               // handshakes at once in all
	maxReportedHosts       = 8                // hosts whose refusals the agent logs one by one at once (v2proto/ratelog.go)
	refusalWindow          = 10 * time.Second // after logging a refusal from a host, the agent summarises its next ones for this long
	hostileDN              = "CN=mig2-test-source,O=mig2 tests"
	intruderDN             = "CN=mig2-intruder,O=mig2 tests"
)

// hostileEnv is what the hostile subtests share: one source guest, one incoming destination
// QEMU, one agent, and the credentials the peers use.
type hostileEnv struct {
	dir      string
	certs    string // the honest PKI: the agent's server pair, the honest client pair
	foreign  string // a second PKI: a client certificate from another CA, with the honest DN
	intruder string // a client certificate from the right CA whose DN is not allowed
	src, dst *vm
	agent    *agentProc
	// recorded is what a real source (mig2 check) sent the agent in a successful session,
	// and recordedID that session's migration id.
	recorded   []byte
	recordedID string
	nextIP     int
}

// TestHostile runs the hostile peers of issue 9 one after the other against one agent, then
// migrates the guest through that agent.
func TestHostile(t *testing.T) {
	e := setupHostile(t)

	// A successful session recorded through a TCP proxy, for the replay below.
	t.Run("RecordHonestSession", func(t *testing.T) {
		e.recordHonestSession(t)
		t.Logf("outcome: recorded %d bytes of a successful mig2 check session (migration %s)", len(e.recorded), e.recordedID)
	})
	if len(e.recorded) == 0 {
		t.Fatal("no honest session recorded: the replay cannot run")
	}

	e.scenario(t, "SlowLoris/DuringTLSHandshake", e.slowLorisTLS)
	e.scenario(t, "SlowLoris/DuringHello", e.slowLorisHello)
	e.scenario(t, "OversizeFrame", e.oversizeFrame)
	e.floodScenario(t, "ThousandStalledHandshakes/OneAddress", false)
	e.floodScenario(t, "ThousandStalledHandshakes/FiftyAddresses", true)
	e.scenario(t, "GarbageBeforeTLS/RandomBytes", e.garbageBeforeTLS)
	e.scenario(t, "GarbageBeforeTLS/TLSRecordOfJunk", e.junkTLSRecord)
	e.scenario(t, "GarbageAfterTLS/InsteadOfPreamble", e.garbageInsteadOfPreamble)
	e.scenario(t, "GarbageAfterTLS/InsteadOfHello", e.garbageInsteadOfHello)
	e.scenario(t, "ReplayedSession", e.replay)
	e.scenario(t, "ClientCertFromAnotherCA", e.foreignCA)
	e.scenario(t, "ClientDNNotAllowed", e.dnNotAllowed)
	e.scenario(t, "UnsupportedVersion/TLS12Only", e.tls12Only)
	e.scenario(t, "UnsupportedVersion/ProtocolV2Only", e.protocolV2Only)

	t.Run("HonestMigrationAfterwards", e.honestMigration)
}

func setupHostile(t *testing.T) *hostileEnv {
	t.Helper()
	dir := shortDir(t)
	e := &hostileEnv{dir: dir, certs: filepath.Join(dir, "pki"), foreign: filepath.Join(dir, "foreign"),
		intruder: filepath.Join(dir, "intruder"), nextIP: 20}
	ca, err := testcerts.NewCA("mig2 test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := testcerts.WriteWithCA(e.certs, ca, []string{"127.0.0.1", "localhost"}, hostileDN); err != nil {
		t.Fatal(err)
	}
	// Another CA, issuing a client certificate with the very DN the agent allows.
	if err := testcerts.Write(e.foreign, []string{"127.0.0.1"}, hostileDN); err != nil {
		t.Fatal(err)
	}
	// The right CA, a DN the agent does not allow.
	cert, key, err := ca.Issue(testcerts.Options{Subject: intruderDN, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := testcerts.WriteFiles(e.intruder, map[string][]byte{testcerts.CACert: ca.CertPEM, testcerts.ClientCert: cert, testcerts.ClientKey: key}); err != nil {
		t.Fatal(err)
	}
	e.src = startVM(t, dir, "src", vmOpts{})
	e.dst = startVM(t, dir, "dst", vmOpts{incoming: true})
	// A DN has commas: --authz takes it whole (one DN per flag).
	e.agent = startAgent(t, dir, "--tls-dir", e.certs, "--authz", hostileDN, "--guest", "demo="+e.dst.QMPSocket)
	return e
}

// scenario runs one hostile peer from its own address and checks the three promises: refused
// before any migration, logged once, and the agent still serves an honest source.
func (e *hostileEnv) scenario(t *testing.T, name string, attack func(t *testing.T, ip string) string) {
	ip := e.peerIP()
	t.Run(name, func(t *testing.T) {
		start := time.Now()
		how := attack(t, ip)
		if t.Failed() {
			return
		}
		lines := e.waitLogged(t, ip, 20*time.Second)
		if len(lines) != 1 {
			t.Fatalf("the agent logged %d lines for %s, want exactly 1:\n%s", len(lines), ip, strings.Join(lines, "\n"))
		}
		assertDestWaiting(t, e.dst)
		took := e.honestCheck(t)
		t.Logf("agent log: %s", lines[0])
		t.Logf("outcome: refused before migration (%s) in %s, 1 agent log line, destination QEMU still waiting (inmigrate, no migration), agent served the next source (mig2 check ok in %s)",
			how, time.Since(start).Round(100*time.Millisecond), took.Round(100*time.Millisecond))
	})
}

func (e *hostileEnv) peerIP() string {
	e.nextIP++
	return fmt.Sprintf("127.0.0.%d", e.nextIP)
}

// ---------------------------------------------------------------------------------------------
// The hostile peers. Each returns how the agent refused it, for the outcome line.

// slowLorisTLS trickles a real ClientHello, one byte a second: the handshake deadline cuts it.
func (e *hostileEnv) slowLorisTLS(t *testing.T, ip string) string {
	nc := dialFrom(t, ip, e.agent.addr)
	closed, sent := trickle(t, nc, e.recorded, 3*agentHandshakeDeadline)
	if closed < agentHandshakeDeadline-2*time.Second || closed > agentHandshakeDeadline+6*time.Second {
		t.Fatalf("the agent closed the slow connection after %s, want about the handshake deadline %s", closed, agentHandshakeDeadline)
	}
	e.assertLogMentions(t, ip, "did not finish its handshake in time")
	return fmt.Sprintf("handshake deadline: closed after %s, %d bytes of the ClientHello sent", closed.Round(100*time.Millisecond), sent)
}

// slowLorisHello completes TLS and the preambles, then trickles a Hello one byte a second.
func (e *hostileEnv) slowLorisHello(t *testing.T, ip string) string {
	c := e.tlsPeer(t, ip, e.certs, nil)
	preamble(t, c)
	hello := frame(v2proto.Marshal(&v2proto.Hello{Versions: v2proto.VersionRange{Min: 1, Max: 1}, MigrationID: "slow-loris",
		Guest: "demo", TLS: true, Features: v2proto.DefaultFeatures()}))
	type res struct {
		a   *v2proto.Abort
		err error
		at  time.Duration
	}
	got := make(chan res, 1)
	start := time.Now()
	go func() {
		a, err := readAbort(c, 3*agentHelloDeadline)
		got <- res{a, err, time.Since(start)}
	}()
	sent := 0
	var r res
loop:
	for ; sent < len(hello); sent++ {
		if _, err := c.Write(hello[sent : sent+1]); err != nil {
			break
		}
		select {
		case r = <-got:
			break loop
		case <-time.After(time.Second):
		}
	}
	if r.a == nil && r.err == nil {
		r = <-got
	}
	if r.err != nil {
		t.Fatalf("no Abort from the agent: %v", r.err)
	}
	if r.a.Code != v2proto.AbortTimeout || r.at > agentHelloDeadline+6*time.Second {
		t.Fatalf("the agent answered Abort %v (%q) after %s; want Abort timeout at about %s", r.a.Code, r.a.Message, r.at, agentHelloDeadline)
	}
	e.assertLogMentions(t, ip, "no Hello")
	return fmt.Sprintf("Hello deadline: Abort %v after %s, %d of %d bytes of the Hello sent", r.a.Code, r.at.Round(100*time.Millisecond), sent, len(hello))
}

// oversizeFrame announces a frame of 4 GiB after a valid handshake with a valid certificate.
func (e *hostileEnv) oversizeFrame(t *testing.T, ip string) string {
	c := e.tlsPeer(t, ip, e.certs, nil)
	preamble(t, c)
	start := time.Now()
	if _, err := c.Write([]byte{0xff, 0xff, 0xff, 0xf0, byte(v2proto.MsgHello), 0, 1, 0, 0}); err != nil {
		t.Fatal(err)
	}
	a, err := readAbort(c, 5*time.Second)
	if err != nil {
		t.Fatalf("no Abort for a 4 GiB frame: %v", err)
	}
	if a.Code != v2proto.AbortFrameTooLarge {
		t.Fatalf("Abort %v (%q), want frame-too-large", a.Code, a.Message)
	}
	took := time.Since(start)
	if took > 3*time.Second {
		t.Fatalf("the agent took %s to refuse the frame: it waited for the body", took)
	}
	assertClosed(t, c, 5*time.Second)
	e.assertLogMentions(t, ip, "exceeds the maximum")
	return fmt.Sprintf("Abort %v for a 4294967280-byte frame after %s, before the body, connection closed", a.Code, took.Round(time.Millisecond))
}

// garbageBeforeTLS sends random bytes instead of a ClientHello.
func (e *hostileEnv) garbageBeforeTLS(t *testing.T, ip string) string {
	nc := dialFrom(t, ip, e.agent.addr)
	junk := randomBytes(t, 4096)
	junk[0] = 0x80 | junk[0] // never 0x16, a TLS handshake record
	if _, err := nc.Write(junk); err != nil {
		t.Fatal(err)
	}
	line := readLineFrom(t, nc, 5*time.Second)
	if !strings.HasPrefix(line, "MIG2-ERR tls-required") {
		t.Fatalf("the agent answered %q, want MIG2-ERR tls-required", line)
	}
	assertClosed(t, nc, 5*time.Second)
	e.assertLogMentions(t, ip, "neither TLS nor a preamble")
	return fmt.Sprintf("answered %q in the clear, connection closed", strings.TrimSpace(line))
}

// junkTLSRecord sends a TLS handshake record header followed by random bytes.
func (e *hostileEnv) junkTLSRecord(t *testing.T, ip string) string {
	nc := dialFrom(t, ip, e.agent.addr)
	junk := append([]byte{0x16, 0x03, 0x01, 0x02, 0x00}, randomBytes(t, 512)...)
	if _, err := nc.Write(junk); err != nil {
		t.Fatal(err)
	}
	got, err := readUntilClosed(nc, 5*time.Second)
	if err != nil {
		t.Fatalf("the agent did not close the connection: %v", err)
	}
	if len(got) > 0 && got[0] != 0x15 {
		t.Fatalf("the agent answered % x, want a TLS alert or nothing", got[:min(len(got), 16)])
	}
	e.assertLogMentions(t, ip, "tls")
	return fmt.Sprintf("TLS handshake failed (%d bytes of TLS alert), connection closed", len(got))
}

// garbageInsteadOfPreamble completes TLS with a valid certificate, then sends random bytes.
func (e *hostileEnv) garbageInsteadOfPreamble(t *testing.T, ip string) string {
	c := e.tlsPeer(t, ip, e.certs, nil)
	junk := randomBytes(t, 4096)
	junk[0] = 'X'
	if _, err := c.Write(junk); err != nil {
		t.Fatal(err)
	}
	line := readLineFrom(t, c, 5*time.Second)
	if !strings.HasPrefix(line, "MIG2-ERR bad-preamble") {
		t.Fatalf("the agent answered %q, want MIG2-ERR bad-preamble", line)
	}
	assertClosed(t, c, 5*time.Second)
	e.assertLogMentions(t, ip, "bad preamble")
	return fmt.Sprintf("answered %q inside TLS, connection closed", strings.TrimSpace(line))
}

// garbageInsteadOfHello completes TLS and the preambles, then sends a frame of random bytes.
func (e *hostileEnv) garbageInsteadOfHello(t *testing.T, ip string) string {
	c := e.tlsPeer(t, ip, e.certs, nil)
	preamble(t, c)
	body := randomBytes(t, 1000)
	body[0] = byte(v2proto.MsgHello)
	if _, err := c.Write(frame(body)); err != nil {
		t.Fatal(err)
	}
	a, err := readAbort(c, 5*time.Second)
	if err != nil {
		t.Fatalf("no Abort for a random Hello: %v", err)
	}
	if a.Code != v2proto.AbortProtocol {
		t.Fatalf("Abort %v (%q), want protocol", a.Code, a.Message)
	}
	assertClosed(t, c, 5*time.Second)
	e.assertLogMentions(t, ip, "no Hello")
	return fmt.Sprintf("Abort %v (%s), connection closed", a.Code, a.Message)
}

// replay sends the agent, from another address, the bytes a real source sent it in a successful
// session. A fresh TLS handshake (new server random and key share) cannot accept them.
func (e *hostileEnv) replay(t *testing.T, ip string) string {
	before := strings.Count(e.agent.logText(), e.recordedID)
	nc := dialFrom(t, ip, e.agent.addr)
	if _, err := nc.Write(e.recorded); err != nil && !isReset(err) {
		t.Fatal(err)
	}
	got, err := readUntilClosed(nc, 10*time.Second)
	if err != nil {
		t.Fatalf("the agent did not close the replayed session: %v", err)
	}
	lines := e.waitLogged(t, ip, 20*time.Second)
	if len(lines) == 0 || !strings.Contains(lines[0], "tls") || strings.Contains(lines[0], "no Hello") {
		t.Fatalf("the replay was not refused in the TLS handshake: %q", lines)
	}
	if after := strings.Count(e.agent.logText(), e.recordedID); after != before {
		t.Fatalf("the replayed migration id %s reached a session (%d log mentions before, %d after)", e.recordedID, before, after)
	}
	return fmt.Sprintf("TLS handshake failed on the replayed client flight (%d bytes replayed, %d received), the recorded Hello never reached a session", len(e.recorded), len(got))
}

// foreignCA presents a client certificate from another CA, with the allowed DN.
func (e *hostileEnv) foreignCA(t *testing.T, ip string) string {
	c := e.tlsPeer(t, ip, e.foreign, func(c *tls.Config) { c.InsecureSkipVerify = true })
	err := preambleErr(c)
	if err == nil || !strings.Contains(err.Error(), "remote error") {
		t.Fatalf("a certificate from another CA: %v, want a TLS alert from the agent", err)
	}
	e.assertLogMentions(t, ip, "not signed by a CA")
	return fmt.Sprintf("TLS alert %q", strings.TrimPrefix(err.Error(), "remote error: "))
}

// dnNotAllowed presents a valid certificate (right CA) whose DN is not in --authz.
func (e *hostileEnv) dnNotAllowed(t *testing.T, ip string) string {
	c := e.tlsPeer(t, ip, e.intruder, nil)
	if _, err := c.Write([]byte(v2proto.Magic + "S")); err != nil {
		t.Fatal(err)
	}
	line := readLineFrom(t, c, 5*time.Second)
	if !strings.HasPrefix(line, "MIG2-ERR not-authorized") || !strings.Contains(line, intruderDN) {
		t.Fatalf("the agent answered %q, want MIG2-ERR not-authorized naming %s", line, intruderDN)
	}
	assertClosed(t, c, 5*time.Second)
	e.assertLogMentions(t, ip, "not in the allow-list")
	return fmt.Sprintf("answered %q inside TLS", strings.TrimSpace(line))
}

// tls12Only offers only TLS 1.2.
func (e *hostileEnv) tls12Only(t *testing.T, ip string) string {
	_, err := e.tlsHandshake(t, ip, e.certs, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 })
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("a TLS 1.2 client: %v, want a protocol version alert", err)
	}
	e.assertLogMentions(t, ip, "unsupported versions")
	return fmt.Sprintf("TLS handshake refused: %v", err)
}

// protocolV2Only is an authenticated source that speaks only mig2 protocol version 2.
func (e *hostileEnv) protocolV2Only(t *testing.T, ip string) string {
	creds, err := v2proto.LoadTLSDir(e.certs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := v2proto.DefaultConfig()
	cfg.TLS = creds
	cfg.Versions = v2proto.VersionRange{Min: 2, Max: 2}
	ctx := ctxT(t, 30*time.Second)
	nc := dialFrom(t, ip, e.agent.addr)
	c, err := v2proto.Client(ctx, nc, v2proto.RoleSource, "127.0.0.1", cfg)
	if err != nil {
		t.Fatalf("transport: %v", err)
	}
	s, err := c.Source()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Handshake(ctx, &v2proto.Hello{MigrationID: "hostile-v2-only", Guest: "demo"})
	if !v2proto.IsRefused(err) || v2proto.CodeOf(err) != v2proto.AbortVersion {
		t.Fatalf("a version-2-only source: %v, want a version refusal", err)
	}
	offer := s.Offer()
	if offer == nil || offer.Versions.Max != v2proto.ProtocolVersion {
		t.Fatalf("the agent's Offer: %+v", offer)
	}
	e.assertLogMentions(t, ip, "refused")
	return fmt.Sprintf("negotiation refused (%s): the agent offers versions %d–%d", v2proto.CodeOf(err), offer.Versions.Min, offer.Versions.Max)
}

// floodScenario: a thousand connections that never finish their handshake, from one address
// (many == false) or spread over fifty. The caps admit a few (4 per address, 16 in all), which
// the handshake deadline ends; the rest are refused at once with "busy". Meanwhile an honest
// source runs mig2 check: against one address it must succeed; when fifty addresses fill the
// global cap it must at least be refused at once with "busy", never hang, and succeed as soon
// as the deadline has cut the stalled handshakes. The agent's log holds a few lines and
// summaries, which account for every connection.
func (e *hostileEnv) floodScenario(t *testing.T, name string, many bool) {
	var addrs []string
	if many {
		for i := 1; i <= 50; i++ {
			addrs = append(addrs, fmt.Sprintf("127.0.1.%d", i))
		}
	} else {
		addrs = []string{e.peerIP()}
	}
	t.Run(name, func(t *testing.T) {
		if many {
			// The agent tracks the flood's first hosts until they have been quiet for a window
			// (refusals from new hosts are only summarised meanwhile); let that pass, even when
			// this scenario fails, so that the next hostile peer is logged on its own line.
			defer time.Sleep(refusalWindow + 3*time.Second)
		}
		const n = 1000
		logBefore := len(e.agent.logText())
		start := time.Now()
		type fate struct {
			busy bool // answered MIG2-ERR busy
			held time.Duration
		}
		fates := make(chan fate, n)
		var wg sync.WaitGroup
		dialed := 0
		for i := range n {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addrs[i%len(addrs)])}, Timeout: 5 * time.Second}
			nc, err := d.Dial("tcp", e.agent.addr)
			if err != nil {
				t.Fatalf("connection %d: %v", dialed+1, err)
			}
			dialed++
			t.Cleanup(func() { nc.Close() })
			// The start of a TLS record announcing a 512-byte ClientHello that never comes.
			_, _ = nc.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00})
			opened := time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, _ := readUntilClosed(nc, 3*agentHandshakeDeadline)
				fates <- fate{busy: bytes.HasPrefix(got, []byte("MIG2-ERR busy")), held: time.Since(opened)}
			}()
		}
		dialTime := time.Since(start)

		// An honest source while the flood holds its connections. From one address the flood
		// fills that address's share; from fifty it fills every slot, and the honest source
		// takes the slot of the oldest stalled handshake of an address holding more (SPEC §10).
		during := "ok"
		r := mig2(t, ctxT(t, 2*time.Minute), "check", "--qmp", e.src.QMPSocket, "--tls-dir", e.certs, "demo", e.agent.uri())
		if r.code != 0 || !strings.Contains(r.stdout, ": compatible") {
			t.Fatalf("honest mig2 check during the flood: exit %d in %s:\n%s", r.code, r.elapsed, r.stderr)
		}
		during += " in " + r.elapsed.Round(100*time.Millisecond).String()

		wg.Wait()
		close(fates)
		var busy, cut, held int
		var longest time.Duration
		for f := range fates {
			switch {
			case f.held > agentHandshakeDeadline/2:
				held++
				longest = max(longest, f.held)
			case f.busy:
				busy++
			default:
				cut++ // closed at once without the error line: evicted, or every refusal writer busy
			}
		}
		maxHeld := min(agentPerHostCap*len(addrs), agentGlobalCap)
		if held > maxHeld {
			t.Errorf("%d connections were held in their handshake, want at most %d (the caps)", held, maxHeld)
		}
		if longest > agentHandshakeDeadline+6*time.Second {
			t.Errorf("a stalled handshake was held %s, want about the handshake deadline %s", longest, agentHandshakeDeadline)
		}
		// From one address the excess is refused as busy; from fifty, nearly every connection
		// comes from an address holding fewer slots than the busiest and evicts its oldest.
		if (!many && busy == 0) || busy+cut+held != dialed {
			t.Errorf("fates: %d busy, %d cut, %d held, of %d", busy, cut, held, dialed)
		}

		// The log: a few lines, then summaries, that account for every connection.
		flood := regexp.MustCompile(`(^|[^0-9])` + regexp.QuoteMeta(addrs[0]) + `([^0-9]|$)|accept other hosts:`)
		if many {
			flood = regexp.MustCompile(`(^|[^0-9])127\.0\.1\.\d+([^0-9]|$)|accept other hosts:`)
		}
		floodLines := func() []string {
			var out []string
			for _, l := range strings.Split(e.agent.logText()[logBefore:], "\n") {
				if flood.MatchString(l) {
					out = append(out, l)
				}
			}
			return out
		}
		maxLines := 3 // one line, then a summary per window
		if many {
			maxLines = 2*maxReportedHosts + 2 // one line and summaries for the first few hosts, one summary for the others
		}
		want := dialed
		var lines []string
		accounted := 0
		deadline := time.Now().Add(3*agentHandshakeDeadline + 10*time.Second)
		for {
			lines = floodLines()
			accounted = accountedRefusals(lines)
			if accounted >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(time.Second)
		lines = floodLines()
		accounted = accountedRefusals(lines)
		t.Logf("agent log for the flood:\n%s", strings.Join(lines, "\n"))
		if accounted != want {
			t.Errorf("the agent's log accounts for %d refused connections, want %d", accounted, want)
		}
		if len(lines) > maxLines {
			t.Errorf("%d connections produced %d log lines, want at most %d", dialed, len(lines), maxLines)
		}
		if t.Failed() {
			return
		}
		assertDestWaiting(t, e.dst)
		after := e.honestCheck(t)
		t.Logf("outcome: %d stalled handshakes from %d address(es) capped (%d busy at once, %d evicted or closed at once, %d held until the handshake deadline, longest %s; dialled in %s), honest mig2 check during the flood %s, %d agent log lines accounting for all %d refusals, destination QEMU still waiting, agent served the next source (mig2 check ok in %s)",
			dialed, len(addrs), busy, cut, held, longest.Round(100*time.Millisecond), dialTime.Round(time.Millisecond), during, len(lines), accounted, after.Round(100*time.Millisecond))
	})
}

// accountedRefusals counts the refusals that log lines stand for: one per line, or the count
// of a summary ("N more connections refused").
var summaryCount = regexp.MustCompile(`(\d+) more connections? refused`)

func accountedRefusals(lines []string) int {
	n := 0
	for _, l := range lines {
		if m := summaryCount.FindStringSubmatch(l); m != nil {
			c, _ := strconv.Atoi(m[1])
			n += c
			continue
		}
		n++
	}
	return n
}

// honestMigration: after all the hostile peers, the same agent receives the dirtying guest,
// while one more pest keeps sending garbage from its own address.
func (e *hostileEnv) honestMigration(t *testing.T) {
	pestIP := e.peerIP()
	pestCtx, stopPest := context.WithCancel(context.Background())
	var pestWG sync.WaitGroup
	pests := 0
	pestWG.Add(1)
	go func() {
		defer pestWG.Done()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(pestIP)}, Timeout: time.Second}
		for pestCtx.Err() == nil {
			if nc, err := d.DialContext(pestCtx, "tcp", e.agent.addr); err == nil {
				pests++
				_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: mig2\r\n\r\n"))
				_, _ = readUntilClosed(nc, time.Second)
				nc.Close()
			}
			select {
			case <-pestCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	r := mig2(t, ctxT(t, 4*time.Minute), "migrate", "--json", "--qmp", e.src.QMPSocket, "--tls-dir", e.certs, "demo", e.agent.uri())
	stopPest()
	pestWG.Wait()
	pestTime := time.Since(start)
	if r.code != 0 {
		t.Fatalf("mig2 migrate exit %d: %s", r.code, r.stderr)
	}
	if r.summary == nil || r.summary["dest_status"] != "running" {
		t.Fatalf("summary %v", r.summary)
	}
	assertRunning(t, e.dst)
	assertIntact(t, e.dst)
	waitExited(t, e.src, 15*time.Second) // the stale source was shut down
	// The destination is clean: mig2's TLS setting is gone from its QEMU.
	p, err := qmp.QueryMigrateParameters(ctxT(t, 5*time.Second), e.dst.mon)
	if err != nil {
		t.Fatal(err)
	}
	if p.TLSCreds != nil && *p.TLSCreds != "" {
		t.Fatalf("destination still has tls-creds %q after the migration", *p.TLSCreds)
	}
	// The pest was logged once per window, not once per connection.
	time.Sleep(time.Second)
	lines := e.logLines(pestIP)
	if maxLines := 2 + int(pestTime/(10*time.Second)); pests > 0 && (len(lines) == 0 || len(lines) > maxLines) {
		t.Fatalf("%d garbage connections during the migration gave %d log lines, want 1 to %d:\n%s", pests, len(lines), maxLines, strings.Join(lines, "\n"))
	}
	total := strings.Count(e.agent.logText(), "\n")
	t.Logf("outcome: migrated in %s with memory verified intact on the destination, source shut down, destination clean; %d garbage connections meanwhile from %s gave %d log lines; agent log %d lines in all",
		r.elapsed.Round(100*time.Millisecond), pests, pestIP, len(lines), total)
}

// ---------------------------------------------------------------------------------------------
// Honest source, destination and log checks

// recordHonestSession runs mig2 check through a TCP proxy that records what the source sends.
func (e *hostileEnv) recordHonestSession(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var rec bytes.Buffer
	done := make(chan error, 1)
	go func() {
		client, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer client.Close()
		agent, err := net.Dial("tcp", e.agent.addr)
		if err != nil {
			done <- err
			return
		}
		defer agent.Close()
		back := make(chan struct{})
		go func() {
			_, _ = io.Copy(client, agent)
			_ = client.(*net.TCPConn).CloseWrite()
			close(back)
		}()
		_, err = io.Copy(agent, io.TeeReader(client, &rec))
		_ = agent.(*net.TCPConn).CloseWrite()
		<-back
		done <- err
	}()
	before := e.agent.logText()
	r := mig2(t, ctxT(t, time.Minute), "check", "--qmp", e.src.QMPSocket, "--tls-dir", e.certs, "demo", "mig2://"+ln.Addr().String())
	if r.code != 0 || !strings.Contains(r.stdout, ": compatible") {
		t.Fatalf("honest mig2 check through the proxy: exit %d:\n%s", r.code, r.stdout)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("proxy: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the proxied session did not end")
	}
	m := regexp.MustCompile(`migration_id=(\S+)`).FindStringSubmatch(strings.TrimPrefix(waitLogGrows(t, e.agent, before), before))
	if m == nil {
		t.Fatalf("the agent did not log the recorded session's migration id:\n%s", e.agent.logText())
	}
	e.recorded, e.recordedID = rec.Bytes(), strings.Trim(m[1], `"`)
}

func waitLogGrows(t *testing.T, a *agentProc, before string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := a.logText(); strings.Contains(strings.TrimPrefix(s, before), "migration_id=") || time.Now().After(deadline) {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// honestCheck runs mig2 check from 127.0.0.1 and says how long it took.
func (e *hostileEnv) honestCheck(t *testing.T) time.Duration {
	t.Helper()
	r := mig2(t, ctxT(t, 2*time.Minute), "check", "--qmp", e.src.QMPSocket, "--tls-dir", e.certs, "demo", e.agent.uri())
	if r.code != 0 || !strings.Contains(r.stdout, ": compatible") {
		t.Fatalf("the agent no longer serves an honest source: mig2 check exit %d:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The agent prepares its QEMU while Agree is on its way; a check never sends Agree, so
	// the agent puts the settings back, then releases the guest, then closes, and the check
	// returns only after that close (SPEC §4.9): no waiting here.
	if err := destUntouched(ctxT(t, 10*time.Second), e.dst); err != nil {
		t.Fatalf("right after mig2 check: %v", err)
	}
	return r.elapsed
}

// assertDestWaiting checks that the destination QEMU still waits for an incoming migration that
// nobody started: inmigrate, query-migrate status none, no TLS credentials set on it.
func assertDestWaiting(t *testing.T, v *vm) {
	t.Helper()
	if err := destUntouched(ctxT(t, 10*time.Second), v); err != nil {
		t.Fatal(err)
	}
}

// destUntouched says why v is not a destination QEMU that waits for a migration nobody started,
// with its migration settings as they were (multifd off, no TLS credentials): nil if it is.
func destUntouched(ctx context.Context, v *vm) error {
	st, err := qmp.QueryStatus(ctx, v.mon)
	if err != nil {
		return fmt.Errorf("%s: query-status: %w", v.Name, err)
	}
	if st.Status != qmp.RunStateInMigrate {
		return fmt.Errorf("%s: QEMU is %s, want inmigrate (still waiting)", v.Name, st.Status)
	}
	mi, err := qmp.QueryMigrate(ctx, v.mon)
	if err != nil {
		return fmt.Errorf("%s: query-migrate: %w", v.Name, err)
	}
	if mi.Status != qmp.MigrationNone {
		return fmt.Errorf("%s: query-migrate status %s: migrate-incoming was issued", v.Name, mi.Status)
	}
	p, err := qmp.QueryMigrateParameters(ctx, v.mon)
	if err != nil {
		return fmt.Errorf("%s: query-migrate-parameters: %w", v.Name, err)
	}
	if p.TLSCreds != nil && *p.TLSCreds != "" {
		return fmt.Errorf("%s: tls-creds %q set: the agent applied settings", v.Name, *p.TLSCreds)
	}
	caps, err := qmp.QueryMigrateCapabilities(ctx, v.mon)
	if err != nil {
		return fmt.Errorf("%s: query-migrate-capabilities: %w", v.Name, err)
	}
	for _, c := range caps {
		if c.Capability == qmp.CapMultifd && c.State {
			return fmt.Errorf("%s: multifd is on: the agent applied settings", v.Name)
		}
	}
	return nil
}

// logLines returns the agent's log lines that mention ip.
func (e *hostileEnv) logLines(ip string) []string {
	re := regexp.MustCompile(`(^|[^0-9])` + regexp.QuoteMeta(ip) + `([^0-9]|$)`)
	var out []string
	for _, l := range strings.Split(e.agent.logText(), "\n") {
		if re.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// waitLogged waits for the agent to log ip, then a moment more for any further line.
func (e *hostileEnv) waitLogged(t *testing.T, ip string, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for len(e.logLines(ip)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent logged nothing about %s in %s", ip, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	return e.logLines(ip)
}

func (e *hostileEnv) assertLogMentions(t *testing.T, ip, what string) {
	t.Helper()
	lines := e.waitLogged(t, ip, 20*time.Second)
	for _, l := range lines {
		if strings.Contains(l, what) {
			return
		}
	}
	t.Fatalf("the agent's log for %s does not say %q:\n%s", ip, what, strings.Join(lines, "\n"))
}

// ---------------------------------------------------------------------------------------------
// Raw peers

func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ip, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// tlsHandshake runs a TLS 1.3 client handshake from ip with the client pair in dir.
func (e *hostileEnv) tlsHandshake(t *testing.T, ip, dir string, mod func(*tls.Config)) (*tls.Conn, error) {
	t.Helper()
	creds, err := v2proto.LoadTLSDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*creds.Client}, RootCAs: creds.CAs, ServerName: "127.0.0.1"}
	if mod != nil {
		mod(cfg)
	}
	c := tls.Client(dialFrom(t, ip, e.agent.addr), cfg)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	err = c.Handshake()
	_ = c.SetDeadline(time.Time{})
	return c, err
}

// tlsPeer is tlsHandshake that must succeed (on the client's side: in TLS 1.3 the server's
// verdict on the client certificate comes with the first read).
func (e *hostileEnv) tlsPeer(t *testing.T, ip, dir string, mod func(*tls.Config)) *tls.Conn {
	t.Helper()
	c, err := e.tlsHandshake(t, ip, dir, mod)
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return c
}

// preamble exchanges the preambles as a source (SPEC §3.1).
func preamble(t *testing.T, c net.Conn) {
	t.Helper()
	if err := preambleErr(c); err != nil {
		t.Fatal(err)
	}
}

func preambleErr(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(v2proto.Magic + "S")); err != nil {
		return err
	}
	got := make([]byte, len(v2proto.Magic)+1)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != v2proto.Magic+"D" {
		return fmt.Errorf("the agent's preamble is %q", got)
	}
	return nil
}

func frame(payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

// readAbort reads one frame and decodes it as an Abort.
func readAbort(c net.Conn, within time.Duration) (*v2proto.Abort, error) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > v2proto.MaxFrameSizeV1 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(c, payload); err != nil {
		return nil, err
	}
	m, err := v2proto.Unmarshal(payload)
	if err != nil {
		return nil, err
	}
	a, ok := m.(*v2proto.Abort)
	if !ok {
		return nil, fmt.Errorf("got %s, want Abort", m.Type())
	}
	return a, nil
}

func readLineFrom(t *testing.T, c net.Conn, within time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	line, err := bufio.NewReader(io.LimitReader(c, 512)).ReadString('\n')
	if err != nil && line == "" {
		t.Fatalf("no error line from the agent: %v", err)
	}
	return line
}

// readUntilClosed reads until the peer closes (EOF or reset) and returns what came; an error
// means the connection was still open after within.
func readUntilClosed(c net.Conn, within time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(within))
	var got bytes.Buffer
	_, err := io.Copy(&got, io.LimitReader(c, 1<<20))
	if err == nil || isReset(err) || errors.Is(err, io.EOF) {
		return got.Bytes(), nil
	}
	return got.Bytes(), err
}

func assertClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	if _, err := readUntilClosed(c, within); err != nil {
		t.Fatalf("the agent did not close the connection: %v", err)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// trickle writes data one byte a second until the peer closes the connection, and returns when
// that happened (since the first byte) and how many bytes were written.
func trickle(t *testing.T, nc net.Conn, data []byte, limit time.Duration) (time.Duration, int) {
	t.Helper()
	closed := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		_, _ = readUntilClosed(nc, limit+5*time.Second)
		closed <- time.Since(start)
	}()
	sent := 0
	for ; sent < len(data); sent++ {
		if _, err := nc.Write(data[sent : sent+1]); err != nil {
			break
		}
		select {
		case at := <-closed:
			return at, sent + 1
		case <-time.After(time.Second):
		}
		if time.Since(start) > limit {
			t.Fatalf("the agent kept a connection that sent one byte a second for %s", limit)
		}
	}
	return <-closed, sent
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
