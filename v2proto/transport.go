package v2proto

// The transport (SPEC §2, §3): TLS or plaintext, the preambles, error lines, frames, the
// transcript hash (SPEC §7), and deadlines that honour both a context and a stage timeout.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Role is a protocol role, declared by the dialer in its preamble (SPEC §3.1).
type Role byte

const (
	RoleSource      Role = 'S'
	RoleDestination Role = 'D'
)

func (r Role) String() string {
	switch r {
	case RoleSource:
		return "source"
	case RoleDestination:
		return "destination"
	}
	return fmt.Sprintf("role(%#x)", byte(r))
}

func (r Role) other() Role {
	if r == RoleSource {
		return RoleDestination
	}
	return RoleSource
}

// Magic starts every preamble (SPEC §3.1).
const Magic = "MIG2HS\r\n"

const (
	preambleLen     = len(Magic) + 1
	errLinePrefix   = "MIG2-ERR "
	maxErrLine      = 256
	transcriptLabel = "mig2 v2proto transcript"
	exporterLabel   = "EXPORTER-mig2-transcript"
	tlsHandshakeRec = 0x16
	tlsAlertRec     = 0x15
)

// Error-line tokens, SPEC §3.2.
const (
	ErrLineTLSRequired   = "tls-required"
	ErrLinePlaintextOnly = "plaintext-only"
	ErrLineBusy          = "busy"
	ErrLineNotAuthorized = "not-authorized"
	ErrLineBadPreamble   = "bad-preamble"
	ErrLineShuttingDown  = "shutting-down"
)

var aLongTimeAgo = time.Unix(1, 0)

// Conn is an established transport: TLS (or plaintext) is up and the preambles are exchanged.
// Make a session on it with Source or Destination, as Role says.
type Conn struct {
	nc     net.Conn // *tls.Conn with TLS
	raw    net.Conn // the connection under TLS
	tls    bool
	role   Role // this side's protocol role
	peer   string
	peerDN string
	cfg    *Config
	log    logrus.FieldLogger

	rmu    sync.Mutex // one reader at a time
	fr     frameReader
	rguard deadlineGuard
	wmu    sync.Mutex // one writer at a time
	wguard deadlineGuard

	hmu sync.Mutex
	th  hash.Hash // the transcript; nil once Start has been hashed

	closeOnce sync.Once
	closeErr  error
}

// Role returns this side's protocol role.
func (c *Conn) Role() Role { return c.role }

// TLS reports whether the connection is TLS.
func (c *Conn) TLS() bool { return c.tls }

// PeerAddr returns the peer's network address.
func (c *Conn) PeerAddr() string { return c.peer }

// LocalAddr and RemoteAddr are the TCP connection's addresses.
func (c *Conn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// PeerDN returns the subject DN of the peer's verified certificate ("" in plaintext).
func (c *Conn) PeerDN() string { return c.peerDN }

// Close closes the connection at once. Prefer the session's Close, which tells the peer.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.raw.Close() })
	return c.closeErr
}

// closeGracefully shuts down the sending side, discards what the peer still sends for up to
// linger (so a final frame is not lost to a TCP reset), then closes (SPEC §3.2).
func (c *Conn) closeGracefully(linger time.Duration) {
	c.closeOnce.Do(func() { c.closeErr = lingerClose(c.nc, c.raw, linger) })
}

type closeWriter interface{ CloseWrite() error }

// lingerClose shuts down nc's sending side (TLS close_notify, TCP FIN) while it discards what
// the peer still sends, until EOF or linger, then closes raw (the connection under nc). The two
// run at once so that neither side can block the other, even on a synchronous pipe.
func lingerClose(nc, raw net.Conn, linger time.Duration) error {
	_ = raw.SetDeadline(time.Now().Add(linger))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cw, ok := nc.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
	err := raw.Close() // also ends a CloseWrite still blocked on an unresponsive peer
	<-done
	return err
}

// deadlineGuard lets a context cancel one blocking operation without the cancellation leaking
// into the next one.
type deadlineGuard struct {
	mu  sync.Mutex
	gen uint64
}

// do runs f with the deadline set by set(deadline) and with ctx able to interrupt it. If ctx
// ended, the context's error is returned (wrapped by the caller); a timeout is reported as
// os.ErrDeadlineExceeded from f.
func (g *deadlineGuard) do(ctx context.Context, deadline time.Time, set func(time.Time) error, f func() error) (ctxErr, err error) {
	if err := ctx.Err(); err != nil {
		return err, err
	}
	g.mu.Lock()
	g.gen++
	my := g.gen
	_ = set(deadline)
	g.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		if g.gen == my {
			_ = set(aLongTimeAgo)
		}
		g.mu.Unlock()
	})
	err = f()
	stopped := stop()
	g.mu.Lock()
	g.gen++
	g.mu.Unlock()
	if !stopped && err != nil {
		return context.Cause(ctx), err
	}
	return nil, err
}

// ---------------------------------------------------------------------------------------------
// Dialling

// Dial connects to a destination agent at addr ("host:port") as the source and returns the
// source session, ready for SendHello. The server certificate is checked against the host part
// of addr (or cfg.ServerName).
func Dial(ctx context.Context, addr string, cfg *Config) (*Source, error) {
	c, err := DialConn(ctx, addr, RoleSource, cfg)
	if err != nil {
		return nil, err
	}
	return c.Source()
}

// DialConn connects to addr and declares role in the preamble; the listener takes the other
// role. Dial is DialConn with RoleSource.
func DialConn(ctx context.Context, addr string, role Role, cfg *Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.HandshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &ConnError{Op: "dial", Peer: addr, Err: err}
	}
	c, err := Client(ctx, nc, role, cfg.serverNameFor(addr), cfg)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// Client runs the client side of the transport on an established connection (TCP, a pipe...):
// TLS unless cfg.Insecure, then the preambles. serverName is what the server certificate must
// name. On error nc is left open; the caller closes it.
func Client(ctx context.Context, nc net.Conn, role Role, serverName string, cfg *Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if role != RoleSource && role != RoleDestination {
		return nil, fmt.Errorf("v2proto: invalid role %v", role)
	}
	peer := addrString(nc.RemoteAddr())
	c := &Conn{nc: nc, raw: nc, role: role, peer: peer, cfg: cfg, tls: !cfg.Insecure}
	c.log = cfg.logger().WithFields(logrus.Fields{"peer": peer, "role": role.String()})
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	var g deadlineGuard
	ctxErr, err := g.do(ctx, deadline, nc.SetDeadline, func() error {
		if c.tls {
			tc, err := cfg.clientTLS(serverName)
			if err != nil {
				return err
			}
			rec := &recordingConn{Conn: nc}
			conn := tls.Client(rec, tc)
			if err := conn.HandshakeContext(ctx); err != nil {
				return c.clientTLSError(err, rec)
			}
			st := conn.ConnectionState()
			if len(st.PeerCertificates) > 0 {
				c.peerDN = SubjectDN(st.PeerCertificates[0])
			}
			c.nc = conn
		}
		return c.clientPreamble()
	})
	if ctxErr != nil {
		return nil, &ConnError{Op: "dial", Peer: peer, Err: ctxErr}
	}
	if err != nil {
		return nil, dialError(peer, err)
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.fr = frameReader{r: c.nc, max: cfg.MaxFrameSize}
	return c, nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.String()
}

func dialError(peer string, err error) error {
	var ce *ConnError
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &ConnError{Op: "dial", Peer: peer, Reason: ErrTimeout, Detail: "no answer within the handshake deadline", Err: err}
	}
	return &ConnError{Op: "dial", Peer: peer, Err: err}
}

// recordingConn keeps the first bytes it reads, so that a plaintext peer's error line can be
// quoted after the TLS client has swallowed it into its own buffer.
type recordingConn struct {
	net.Conn
	seen []byte
}

func (r *recordingConn) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	if room := maxErrLine - len(r.seen); room > 0 {
		r.seen = append(r.seen, b[:min(n, room)]...)
	}
	return n, err
}

// clientTLSError maps a failed client TLS handshake, including a plaintext server's error line.
func (c *Conn) clientTLSError(err error, rec *recordingConn) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		// Not a TLS record: a plaintext endpoint (SPEC §2.4). Quote its error line if it sent one.
		line := string(rec.seen)
		if strings.HasPrefix(line, "MIG2-") && !strings.Contains(line, "\n") {
			line += readLine(c.raw, maxErrLine-len(line), time.Now().Add(time.Second))
		}
		ce := &ConnError{Op: "dial", Peer: c.peer, Reason: ErrPlaintextPeer, Err: err,
			Detail: fmt.Sprintf("the peer answered without TLS, so it is configured for plaintext (insecure) but this side requires TLS (%s)", err)}
		if tok, text, ok := parseErrLine(line); ok {
			ce.Remote = true
			ce.Detail = fmt.Sprintf("the peer is not speaking TLS; it said %q (%s); this side requires TLS", text, tok)
			if tok == ErrLinePlaintextOnly {
				ce.Detail = fmt.Sprintf("the agent is configured for plaintext (insecure) but this side requires TLS; it said %q", text)
			}
			if tok == ErrLineBusy || tok == ErrLineShuttingDown {
				ce.Reason, ce.Detail = ErrBusy, "the agent is busy: "+text
			}
		}
		return ce
	}
	return classifyTLS("dial", c.peer, false, err)
}

// readLine reads up to max bytes until '\n' with a deadline, for error lines.
func readLine(r io.Reader, max int, deadline time.Time) string {
	if nc, ok := r.(net.Conn); ok {
		_ = nc.SetReadDeadline(deadline)
	}
	var b []byte
	one := make([]byte, 1)
	for len(b) < max {
		n, err := r.Read(one)
		if n == 1 {
			b = append(b, one[0])
			if one[0] == '\n' {
				break
			}
		}
		if err != nil {
			break
		}
	}
	return string(b)
}

// parseErrLine parses "MIG2-ERR token text\n".
func parseErrLine(line string) (token, text string, ok bool) {
	rest, found := strings.CutPrefix(line, errLinePrefix)
	if !found {
		return "", "", false
	}
	rest = strings.TrimRight(rest, "\r\n")
	token, text, _ = strings.Cut(rest, " ")
	return token, text, token != ""
}

func errLine(token, text string) []byte {
	line := errLinePrefix + token + " " + text
	if len(line) > maxErrLine-1 {
		line = line[:maxErrLine-1]
	}
	return []byte(line + "\n")
}

// clientPreamble sends the client preamble and reads the server's (SPEC §3.1), or its error line.
func (c *Conn) clientPreamble() error {
	mine := append([]byte(Magic), byte(c.role))
	if _, err := c.nc.Write(mine); err != nil {
		return c.firstIOError(err)
	}
	theirs := make([]byte, preambleLen)
	n, err := io.ReadFull(c.nc, theirs)
	got := theirs[:n]
	switch {
	case n > 0 && (got[0] == tlsAlertRec || got[0] == tlsHandshakeRec) && !c.tls:
		return &ConnError{Op: "dial", Peer: c.peer, Reason: ErrTLSRequired, Remote: true,
			Detail: "the peer answered with TLS, so it requires TLS, but this side is configured for plaintext (insecure)"}
	case bytes.HasPrefix(got, []byte("MIG2-")):
		line := string(got)
		if !strings.Contains(line, "\n") {
			line += readLine(c.nc, maxErrLine-len(line), time.Now().Add(time.Second))
		}
		return errLineError(c.peer, line)
	case err != nil:
		return c.firstIOError(err)
	case string(got[:len(Magic)]) != Magic:
		return &ConnError{Op: "dial", Peer: c.peer, Reason: ErrNotMig2, Detail: fmt.Sprintf("unexpected preamble %q", got)}
	case Role(got[len(Magic)]) != c.role.other():
		return &ConnError{Op: "dial", Peer: c.peer, Reason: ErrProtocol,
			Detail: fmt.Sprintf("the server declared role %v; this side is the %v", Role(got[len(Magic)]), c.role)}
	}
	c.startTranscript(mine, theirs)
	return nil
}

// firstIOError maps an error on the first application read/write: in TLS 1.3 that is where the
// server's verdict on our certificate arrives.
func (c *Conn) firstIOError(err error) error {
	if _, ok := remoteAlert(err); ok {
		return classifyTLS("dial", c.peer, false, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &ConnError{Op: "dial", Peer: c.peer, Reason: ErrNotMig2, Err: err,
			Detail: "the peer closed the connection during the preamble"}
	}
	return err
}

// errLineError maps a received error line (SPEC §3.2) to a *ConnError.
func errLineError(peer, line string) *ConnError {
	tok, text, ok := parseErrLine(line)
	ce := &ConnError{Op: "dial", Peer: peer, Remote: true, Detail: fmt.Sprintf("the peer said %q", strings.TrimSpace(line))}
	if !ok {
		ce.Reason = ErrNotMig2
		return ce
	}
	switch tok {
	case ErrLineTLSRequired:
		ce.Reason = ErrTLSRequired
		ce.Detail = fmt.Sprintf("the agent requires TLS but this side is configured for plaintext (insecure); it said %q", text)
	case ErrLinePlaintextOnly:
		ce.Reason = ErrPlaintextPeer
		ce.Detail = fmt.Sprintf("the agent is configured for plaintext (insecure) but this side requires TLS; it said %q", text)
	case ErrLineBusy, ErrLineShuttingDown:
		ce.Reason = ErrBusy
		ce.Detail = fmt.Sprintf("the agent is busy: %s", text)
	case ErrLineNotAuthorized:
		ce.Reason = ErrNotAuthorized
		ce.Detail = fmt.Sprintf("the agent does not authorize this client's certificate: %s", text)
	default:
		ce.Reason = ErrProtocol
		ce.Detail = fmt.Sprintf("the agent refused the connection (%s): %s", tok, text)
	}
	return ce
}

// ---------------------------------------------------------------------------------------------
// Serving

// peekedConn replays bytes buffered while peeking at the first byte.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *peekedConn) CloseWrite() error {
	if cw, ok := p.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Server runs the server side of the transport on an accepted connection: it checks the first
// byte (TLS or not, SPEC §2.4), runs TLS and the DN check, then the preambles. The protocol role
// is the other one than the client declared. On error the connection has been answered (error
// line or TLS alert) and closed. Listener.Accept calls it, with the listener's caps in front.
func Server(ctx context.Context, nc net.Conn, cfg *Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		_ = nc.Close()
		return nil, err
	}
	var serverTLS *tls.Config
	if !cfg.Insecure {
		var err error
		if serverTLS, err = cfg.serverTLS(); err != nil {
			_ = nc.Close()
			return nil, err
		}
	}
	return server(ctx, nc, cfg, serverTLS)
}

func server(ctx context.Context, nc net.Conn, cfg *Config, serverTLS *tls.Config) (*Conn, error) {
	peer := addrString(nc.RemoteAddr())
	c := &Conn{nc: nc, raw: nc, peer: peer, cfg: cfg, tls: !cfg.Insecure}
	c.log = cfg.logger().WithField("peer", peer)
	var g deadlineGuard
	ctxErr, err := g.do(ctx, time.Now().Add(cfg.HandshakeTimeout), nc.SetDeadline, func() error {
		pc := &peekedConn{Conn: nc, r: bufio.NewReaderSize(nc, 1024)}
		first, err := pc.r.Peek(1)
		if err != nil {
			return &ConnError{Op: "accept", Peer: peer, Reason: ErrNotMig2, Err: err, Detail: "the client sent nothing"}
		}
		isTLS := first[0] == tlsHandshakeRec
		switch {
		case cfg.Insecure && isTLS:
			c.reject(pc, ErrLinePlaintextOnly, "this agent is configured for plaintext (insecure) connections")
			return &ConnError{Op: "accept", Peer: peer, Reason: ErrTLSRequired,
				Detail: "the client speaks TLS but this agent is configured for plaintext (insecure)"}
		case !cfg.Insecure && !isTLS:
			c.reject(pc, ErrLineTLSRequired, "this agent requires TLS")
			if first[0] == Magic[0] {
				return &ConnError{Op: "accept", Peer: peer, Reason: ErrPlaintextPeer,
					Detail: "the client is configured for plaintext (insecure) but this agent requires TLS"}
			}
			return &ConnError{Op: "accept", Peer: peer, Reason: ErrNotMig2, Detail: fmt.Sprintf("the client sent neither TLS nor a preamble (first byte %#x)", first[0])}
		}
		if !cfg.Insecure {
			conn := tls.Server(pc, serverTLS)
			if err := conn.HandshakeContext(ctx); err != nil {
				return classifyTLS("accept", peer, true, err)
			}
			c.nc = conn
			dn, ok := cfg.authorize(conn.ConnectionState())
			c.peerDN = dn
			if !ok {
				c.reject(conn, ErrLineNotAuthorized, fmt.Sprintf("client certificate DN %q is not in this agent's allow-list", dn))
				return &ConnError{Op: "accept", Peer: peer, Reason: ErrNotAuthorized,
					Detail: fmt.Sprintf("client certificate DN %q is not in the allow-list (AllowedDNs)", dn)}
			}
		} else {
			c.nc = pc
		}
		return c.serverPreamble()
	})
	if ctxErr != nil {
		_ = nc.Close()
		return nil, &ConnError{Op: "accept", Peer: peer, Err: ctxErr}
	}
	if err != nil {
		_ = nc.Close()
		var ce *ConnError
		if errors.As(err, &ce) {
			return nil, ce
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &ConnError{Op: "accept", Peer: peer, Reason: ErrTimeout, Detail: "the client did not finish its handshake in time", Err: err}
		}
		return nil, &ConnError{Op: "accept", Peer: peer, Err: err}
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.fr = frameReader{r: c.nc, max: cfg.MaxFrameSize}
	c.log = c.log.WithField("role", c.role.String())
	return c, nil
}

// reject sends an error line and closes gracefully (SPEC §3.2).
func (c *Conn) reject(nc net.Conn, token, text string) {
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = nc.Write(errLine(token, text))
	_ = lingerClose(nc, c.raw, 500*time.Millisecond)
}

func (c *Conn) serverPreamble() error {
	theirs := make([]byte, preambleLen)
	if _, err := io.ReadFull(c.nc, theirs); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return &ConnError{Op: "accept", Peer: c.peer, Reason: ErrNotMig2, Err: err, Detail: "the client closed the connection before its preamble"}
		}
		return err
	}
	role := Role(theirs[len(Magic)])
	if string(theirs[:len(Magic)]) != Magic || (role != RoleSource && role != RoleDestination) {
		c.reject(c.nc, ErrLineBadPreamble, "expected the mig2 v2 preamble")
		return &ConnError{Op: "accept", Peer: c.peer, Reason: ErrNotMig2, Detail: fmt.Sprintf("bad preamble %q", theirs)}
	}
	c.role = role.other()
	mine := append([]byte(Magic), byte(c.role))
	if _, err := c.nc.Write(mine); err != nil {
		return err
	}
	c.startTranscript(theirs, mine)
	return nil
}

// ---------------------------------------------------------------------------------------------
// Transcript (SPEC §7)

func (c *Conn) startTranscript(clientPreamble, serverPreamble []byte) {
	h := sha256.New()
	h.Write([]byte(transcriptLabel))
	if tc, ok := c.nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		if km, err := st.ExportKeyingMaterial(exporterLabel, nil, 32); err == nil {
			h.Write(km)
		}
	}
	h.Write(clientPreamble)
	h.Write(serverPreamble)
	c.th = h
}

func (c *Conn) hashFrame(frame []byte) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.th != nil {
		c.th.Write(frame)
	}
}

// TranscriptHash returns the transcript hash so far (SPEC §7).
func (c *Conn) TranscriptHash() [32]byte {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	var out [32]byte
	if c.th != nil {
		copy(out[:], c.th.Sum(nil))
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// Frames (SPEC §3.3)

// frameTooLargeError is a frame length over the receiver's maximum.
type frameTooLargeError struct{ n, max uint32 }

func (e *frameTooLargeError) Error() string {
	return fmt.Sprintf("v2proto: frame of %d bytes exceeds the maximum of %d", e.n, e.max)
}
func (e *frameTooLargeError) Is(target error) bool {
	return target == ErrFrameTooLarge || target == ErrProtocol
}

// frameReader reads frames. A read interrupted by a deadline keeps what it has read, so the next
// call resumes where it stopped.
type frameReader struct {
	r     io.Reader
	max   uint32
	buf   []byte
	chunk [16 << 10]byte
}

// readFrame returns the next complete frame (length prefix included), in a fresh slice. An
// oversize length is reported before the body is read.
func (fr *frameReader) readFrame() ([]byte, error) {
	for {
		if len(fr.buf) >= 4 {
			n := binary.BigEndian.Uint32(fr.buf)
			if n == 0 {
				return nil, decodeErrorf("empty frame")
			}
			if n > fr.max {
				return nil, &frameTooLargeError{n: n, max: fr.max}
			}
			if uint64(len(fr.buf)) >= 4+uint64(n) {
				frame := bytes.Clone(fr.buf[:4+n])
				rest := copy(fr.buf, fr.buf[4+n:])
				fr.buf = fr.buf[:rest]
				return frame, nil
			}
		}
		n, err := fr.r.Read(fr.chunk[:])
		fr.buf = append(fr.buf, fr.chunk[:n]...)
		if err != nil {
			if n > 0 {
				continue // use what arrived before the error
			}
			if errors.Is(err, io.EOF) && len(fr.buf) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// appendFrame appends the frame for payload.
func appendFrame(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}

// readMsg reads and decodes one message, waiting until deadline or ctx.
func (c *Conn) readMsg(ctx context.Context, deadline time.Time) (Message, []byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	var frame []byte
	ctxErr, err := c.rguard.do(ctx, deadline, c.nc.SetReadDeadline, func() error {
		var err error
		frame, err = c.fr.readFrame()
		return err
	})
	if ctxErr != nil {
		return nil, nil, ctxErr
	}
	if err != nil {
		return nil, nil, err
	}
	m, err := Unmarshal(frame[4:])
	if err != nil {
		return nil, nil, err
	}
	return m, frame, nil
}

// writeFrame writes one frame; hash adds it to the transcript.
func (c *Conn) writeFrame(ctx context.Context, payload []byte, hash bool) error {
	if len(payload) > MaxFrameSizeV1 {
		return fmt.Errorf("v2proto: %s of %d bytes exceeds the maximum frame size %d: %w", MsgType(payload[0]), len(payload), MaxFrameSizeV1, ErrFrameTooLarge)
	}
	frame := appendFrame(nil, payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if hash {
		c.hashFrame(frame)
	}
	ctxErr, err := c.wguard.do(ctx, time.Now().Add(c.cfg.WriteTimeout), c.nc.SetWriteDeadline, func() error {
		_, err := c.nc.Write(frame)
		return err
	})
	if ctxErr != nil {
		return ctxErr
	}
	return err
}
