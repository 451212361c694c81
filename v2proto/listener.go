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
	slots   map[*slot]struct{} // handshakes in progress (including ready, not yet accepted)
	perHost map[string]int     // the same, counted per peer IP
	rejects int                // rejecting goroutines (bounded)

	refusals *refusalLog // which refusals Accept reports one by one

	ready     chan acceptResult
	closeOnce sync.Once
}

// slot is one handshake in progress. Its context ends when the listener closes, or when the
// slot is taken from it for a peer with fewer handshakes (evictVictim).
type slot struct {
	host   string
	start  time.Time
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   bool // the handshake finished: it waits for Accept and is no longer evictable
}

// errEvicted ends a stalled handshake whose slot went to a peer with fewer handshakes.
var errEvicted = errors.New("evicted from its handshake slot for a peer address with fewer handshakes in progress")

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
		slots:    map[*slot]struct{}{},
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
		s, why := l.admit(host, time.Now())
		if s == nil {
			l.rejectBusy(nc, host, why)
			continue
		}
		l.wg.Add(1)
		go l.handshake(nc, s)
	}
}

// admit takes a handshake slot for host, or says why not. When every slot is taken, the oldest
// stalled handshake of the peer address holding the most slots gives its slot up, if that address
// holds more than host does (SPEC §10): a flood from many addresses then churns through its own
// connections and an honest source still gets a slot.
func (l *Listener) admit(host string, now time.Time) (*slot, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if max := l.cfg.MaxHandshakesPerHost; max > 0 && l.perHost[host] >= max {
		return nil, fmt.Sprintf("too many concurrent handshakes from %s (%d)", host, max)
	}
	if len(l.slots) >= l.cfg.MaxConcurrentHandshakes {
		v := evictVictim(l.evictable(), l.perHost, host)
		if v == nil {
			return nil, fmt.Sprintf("too many concurrent handshakes (%d)", l.cfg.MaxConcurrentHandshakes)
		}
		l.release(v)
		v.cancel(errEvicted)
	}
	s := &slot{host: host, start: now}
	s.ctx, s.cancel = context.WithCancelCause(l.ctx)
	l.slots[s] = struct{}{}
	l.perHost[host]++
	return s, ""
}

// evictable lists the slots whose handshake is still in progress. Called with mu held.
func (l *Listener) evictable() []*slot {
	out := make([]*slot, 0, len(l.slots))
	for s := range l.slots {
		if !s.done {
			out = append(out, s)
		}
	}
	return out
}

// evictVictim chooses the handshake that gives its slot up to a new connection from host: the
// oldest among those of the address holding the most slots, provided that address holds more
// slots than host. Nil means nobody gives way, and the new connection is refused as busy.
func evictVictim(candidates []*slot, perHost map[string]int, host string) *slot {
	var v *slot
	for _, s := range candidates {
		if perHost[s.host] <= perHost[host] {
			continue
		}
		if v == nil || perHost[s.host] > perHost[v.host] ||
			(perHost[s.host] == perHost[v.host] && s.start.Before(v.start)) {
			v = s
		}
	}
	return v
}

// release gives a slot back. Called with mu held; a slot is released once (eviction releases it
// before its goroutine ends).
func (l *Listener) release(s *slot) {
	if _, ok := l.slots[s]; !ok {
		return
	}
	delete(l.slots, s)
	if l.perHost[s.host]--; l.perHost[s.host] <= 0 {
		delete(l.perHost, s.host)
	}
}

func (l *Listener) free(s *slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.release(s)
	s.cancel(nil)
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
func (l *Listener) handshake(nc net.Conn, s *slot) {
	defer l.wg.Done()
	c, err := server(s.ctx, nc, l.cfg, l.serverTLS)
	if err != nil {
		l.free(s)
		switch {
		case l.ctx.Err() != nil:
		case errors.Is(context.Cause(s.ctx), errEvicted):
			l.report(s.host, &ConnError{Op: "accept", Peer: addrString(nc.RemoteAddr()), Reason: ErrBusy, Detail: "refused: " + errEvicted.Error()})
		default:
			l.report(s.host, handshakeTimeout(err))
		}
		return
	}
	l.mu.Lock()
	s.done = true
	l.mu.Unlock()
	select {
	case l.ready <- acceptResult{c: c}:
		l.free(s)
	case <-l.ctx.Done():
		l.free(s)
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
