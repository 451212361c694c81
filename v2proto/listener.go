package v2proto

// The listener: accepts TCP connections, caps concurrent handshakes overall and per peer IP
// (SPEC §10), runs each transport handshake in a goroutine it owns, and hands out ready
// connections through Accept, with the refused ones aggregated per peer host (ratelog.go).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Listener accepts mig2 connections. Close stops it and waits for every goroutine it started.
type Listener struct {
	ln        net.Listener
	cfg       *Config
	serverTLS *tls.Config

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	active  int            // handshakes in progress (including ready, not yet accepted)
	perHost map[string]int // the same, per peer IP
	rejects int            // rejecting goroutines (bounded)

	refusals *refusalLog // which refusals Accept reports one by one

	ready     chan acceptResult
	closeOnce sync.Once
}

type acceptResult struct {
	c   *Conn
	err error
}

const maxRejecters = 64

// Listen listens on addr ("host:port"; ":0" picks a port) and starts accepting.
func Listen(addr string, cfg *Config) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Insecure {
		if _, err := cfg.serverTLS(); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("v2proto: listen %s: %w", addr, err)
	}
	return NewListener(ln, cfg)
}

// NewListener serves on an existing net.Listener (which it closes on Close).
func NewListener(ln net.Listener, cfg *Config) (*Listener, error) {
	return newListener(ln, cfg, refusalWindow)
}

// newListener is NewListener with the window of refusal aggregation (short in tests).
func newListener(ln net.Listener, cfg *Config, window time.Duration) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var serverTLS *tls.Config
	if !cfg.Insecure {
		var err error
		if serverTLS, err = cfg.serverTLS(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		ln: ln, cfg: cfg, serverTLS: serverTLS, ctx: ctx, cancel: cancel,
		perHost:  map[string]int{},
		ready:    make(chan acceptResult, cfg.MaxConcurrentHandshakes),
		refusals: newRefusalLog(window),
	}
	l.wg.Add(2)
	go l.acceptLoop()
	go l.summaryLoop()
	return l, nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Accept returns the next connection whose transport handshake succeeded (see Conn.Role,
// Conn.Destination, Conn.Source). A connection that failed its handshake is returned as a
// *ConnError (the listener stays usable: log it and call Accept again); after Close, Accept
// returns an error matching ErrClosed.
//
// Refusals are reported one by one only while they are rare: after reporting a refused
// connection from a peer host, the listener counts that host's further refusals for 10 seconds
// and then returns them as one *RefusalSummary (which unwraps to a *ConnError), so a peer that
// opens connections by the thousand produces a report and a summary per 10 seconds, not
// thousands of reports; at most eight hosts are reported one by one at once, the others are
// summarised together (SPEC §10).
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	select {
	case r := <-l.ready:
		return r.c, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("v2proto: accept: %w", ctx.Err())
	case <-l.ctx.Done():
		return nil, fmt.Errorf("v2proto: accept: listener: %w", ErrClosed)
	}
}

// AcceptDestination accepts connections until one from a source arrives and returns its
// destination session. Connections that fail their handshake are skipped, unless report is
// non-nil, in which case it is called with each error.
func (l *Listener) AcceptDestination(ctx context.Context, report func(error)) (*Destination, error) {
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			var ce *ConnError
			if errors.As(err, &ce) {
				if report != nil {
					report(err)
				}
				continue
			}
			return nil, err
		}
		d, err := c.Destination()
		if err != nil {
			if report != nil {
				report(err)
			}
			continue
		}
		return d, nil
	}
}

// Close stops accepting, aborts handshakes in progress, closes connections that were never
// accepted, and waits for the listener's goroutines. Refusals not yet reported go to the
// Config's Logger, summarised.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.cancel()
		err = l.ln.Close()
		l.wg.Wait()
		for _, s := range l.refusals.due(time.Now(), true) {
			l.cfg.logger().WithField("peer", s.Host).Warn(s.Error())
		}
		for {
			select {
			case r := <-l.ready:
				if r.c != nil {
					_ = r.c.Close()
				}
			default:
				return
			}
		}
	})
	return err
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (e.g. EMFILE): back off briefly, like net/http.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		host := hostOf(nc.RemoteAddr())
		if why := l.admit(host); why != "" {
			l.rejectBusy(nc, host, why)
			continue
		}
		l.wg.Add(1)
		go l.handshake(nc, host)
	}
}

// admit takes a handshake slot for host, or says why not.
func (l *Listener) admit(host string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active >= l.cfg.MaxConcurrentHandshakes {
		return fmt.Sprintf("too many concurrent handshakes (%d)", l.cfg.MaxConcurrentHandshakes)
	}
	if max := l.cfg.MaxHandshakesPerHost; max > 0 && l.perHost[host] >= max {
		return fmt.Sprintf("too many concurrent handshakes from %s (%d)", host, max)
	}
	l.active++
	l.perHost[host]++
	return ""
}

func (l *Listener) free(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if l.perHost[host]--; l.perHost[host] <= 0 {
		delete(l.perHost, host)
	}
}

// rejectBusy answers "MIG2-ERR busy" without any TLS work. The graceful close runs in a bounded
// set of goroutines; when those are all in use the connection is closed at once.
func (l *Listener) rejectBusy(nc net.Conn, host, why string) {
	l.report(host, &ConnError{Op: "accept", Peer: addrString(nc.RemoteAddr()), Reason: ErrBusy, Detail: "refused: " + why})
	l.mu.Lock()
	ok := l.rejects < maxRejecters
	if ok {
		l.rejects++
	}
	l.mu.Unlock()
	if !ok {
		_ = nc.Close()
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() {
			l.mu.Lock()
			l.rejects--
			l.mu.Unlock()
		}()
		_ = nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = nc.Write(errLine(ErrLineBusy, why))
		_ = lingerClose(nc, nc, 300*time.Millisecond)
	}()
}

// report delivers a refusal to Accept: the first from host in its window at once, if there is
// room (refusals never block the listener); the others are counted for summaryLoop.
func (l *Listener) report(host string, err error) {
	if !l.refusals.note(host, err, time.Now()) {
		return
	}
	select {
	case l.ready <- acceptResult{err: err}:
	default:
		l.refusals.undeliverable(host, err)
	}
}

// summaryLoop delivers the summaries of refusals that were not reported one by one, when their
// host's window ends.
func (l *Listener) summaryLoop() {
	defer l.wg.Done()
	tick := time.NewTicker(max(l.refusals.window/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case now := <-tick.C:
			due := l.refusals.due(now, false)
			for i, s := range due {
				select {
				case l.ready <- acceptResult{err: s}:
				case <-l.ctx.Done():
					for _, s := range due[i:] {
						l.cfg.logger().WithField("peer", s.Host).Warn(s.Error())
					}
					return
				}
			}
		}
	}
}

// handshake runs the server transport handshake for one connection. A successful connection
// keeps its slot until it is queued for Accept (the queue holds at most MaxConcurrentHandshakes).
func (l *Listener) handshake(nc net.Conn, host string) {
	defer l.wg.Done()
	c, err := server(l.ctx, nc, l.cfg, l.serverTLS)
	if err != nil {
		l.free(host)
		if l.ctx.Err() == nil {
			l.report(host, handshakeTimeout(err))
		}
		return
	}
	select {
	case l.ready <- acceptResult{c: c}:
		l.free(host)
	case <-l.ctx.Done():
		l.free(host)
		_ = c.Close()
	}
}

// handshakeTimeout gives a TLS handshake cut by the handshake deadline the same reason and words
// as a stalled preamble (server reports it as the bare "i/o timeout" of the TLS library).
func handshakeTimeout(err error) error {
	var ce *ConnError
	if errors.As(err, &ce) && ce.Reason == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return &ConnError{Op: ce.Op, Peer: ce.Peer, Reason: ErrTimeout, Detail: "the client did not finish its handshake in time", Err: ce.Err}
	}
	return err
}
