package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/test/guest/qbline"
)

// ErrConsoleClosed is wrapped by waits that end because the console
// connection closed (QEMU exited, or Close/Kill was called).
var ErrConsoleClosed = errors.New("guest: console closed")

// maxLine bounds one console line; longer output is split.
const maxLine = 4096

// verifyRequests numbers verify requests process-wide, so that a request
// number is never reused for the same guest on two consoles (source and
// destination of a migration).
var verifyRequests atomic.Int64

// Console is a connection to the guest's serial port. It reads lines in a
// goroutine it owns (stopped by Close) and keeps the parsed QB state; all
// methods are safe for concurrent use.
type Console struct {
	path string
	conn net.Conn
	log  logrus.FieldLogger
	wmu  sync.Mutex // serializes writes to conn

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced whenever state changes
	lines     []string
	start     *StartLine
	ready     *Ready
	beats     []Heartbeat
	verifies  []VerifyResult
	corrupted *Corrupted
	guestErr  *GuestError
	closed    bool  // the reader has stopped
	readErr   error // why it stopped
	exitInfo  func() string

	closeOnce sync.Once
	done      chan struct{} // closed when the reader goroutine has returned
}

// DialConsole connects to a serial port exposed as a unix socket server
// (QEMU -chardev socket,server=on). log may be nil.
func DialConsole(ctx context.Context, path string, log logrus.FieldLogger) (*Console, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("guest: connect console %s: %w", path, err)
	}
	return newConsole(path, conn, log), nil
}

func newConsole(path string, conn net.Conn, log logrus.FieldLogger) *Console {
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = l
	}
	c := &Console{path: path, conn: conn, log: log, changed: make(chan struct{}), done: make(chan struct{})}
	go c.read()
	return c
}

// Close disconnects and waits for the reader goroutine. Idempotent.
func (c *Console) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.conn.Close() })
	<-c.done
	return err
}

func (c *Console) read() {
	defer close(c.done)
	r := bufio.NewReaderSize(c.conn, maxLine)
	var cur []byte
	for {
		frag, isPrefix, err := r.ReadLine()
		if err != nil {
			c.mu.Lock()
			if len(cur) > 0 {
				c.addLocked(string(cur))
			}
			c.closed, c.readErr = true, err
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
		cur = append(cur, frag...)
		if isPrefix && len(cur) < maxLine {
			continue
		}
		c.mu.Lock()
		c.addLocked(string(cur))
		c.notifyLocked()
		c.mu.Unlock()
		cur = cur[:0]
	}
}

// addLocked records one line and folds a QB line into the state.
func (c *Console) addLocked(s string) {
	for len(s) > 0 && s[len(s)-1] == '\r' {
		s = s[:len(s)-1]
	}
	c.lines = append(c.lines, s)
	// Output without a newline before ours (firmware, an interleaved kernel
	// message) may precede a QB line: parse from the first "QB ".
	if i := strings.Index(s, qbline.Prefix); i > 0 {
		s = s[i:]
	}
	l, err := qbline.Parse(s)
	switch {
	case errors.Is(err, qbline.ErrNotProtocol):
		return
	case err != nil:
		c.log.WithError(err).Warn("guest: malformed console line")
		return
	}
	c.log.WithField("console", c.path).Debug(s)
	switch l := l.(type) {
	case *StartLine:
		c.start = l
	case *Ready:
		c.ready = l
	case *Heartbeat:
		c.beats = append(c.beats, *l)
	case *VerifyResult:
		c.verifies = append(c.verifies, *l)
	case *Corrupted:
		c.corrupted = l
	case *GuestError:
		c.guestErr = l
	}
}

func (c *Console) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// wait blocks until cond (called with c.mu held) reports true, the guest
// reports an error, the console closes, or ctx ends.
func (c *Console) wait(ctx context.Context, what string, cond func() bool) error {
	for {
		c.mu.Lock()
		ok := cond()
		ch, gerr, closed, rerr, exitInfo := c.changed, c.guestErr, c.closed, c.readErr, c.exitInfo
		c.mu.Unlock()
		switch {
		case ok:
			return nil
		case gerr != nil:
			return fmt.Errorf("guest: waiting for %s: %w", what, gerr)
		case closed:
			info := ""
			if exitInfo != nil {
				info = exitInfo()
			}
			if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, net.ErrClosed) {
				info += fmt.Sprintf(" (read: %v)", rerr)
			}
			return fmt.Errorf("%w while waiting for %s%s", ErrConsoleClosed, what, info)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest: waiting for %s: %w", what, ctx.Err())
		case <-ch:
		}
	}
}

// WaitReady waits for "QB ready" (the memory is filled). On a migration
// destination it never comes: the source printed it; use WaitHeartbeat.
func (c *Console) WaitReady(ctx context.Context) (Ready, error) {
	var r Ready
	err := c.wait(ctx, "QB ready", func() bool {
		if c.ready != nil {
			r = *c.ready
		}
		return c.ready != nil
	})
	return r, err
}

// WaitStart waits for "QB start" (the guest's configuration).
func (c *Console) WaitStart(ctx context.Context) (StartLine, error) {
	var s StartLine
	err := c.wait(ctx, "QB start", func() bool {
		if c.start != nil {
			s = *c.start
		}
		return c.start != nil
	})
	return s, err
}

// WaitHeartbeat returns the first heartbeat seen with Seq > after.
func (c *Console) WaitHeartbeat(ctx context.Context, after int) (Heartbeat, error) {
	var hb Heartbeat
	err := c.wait(ctx, fmt.Sprintf("QB hb seq>%d", after), func() bool {
		for _, b := range c.beats {
			if b.Seq > after {
				hb = b
				return true
			}
		}
		return false
	})
	return hb, err
}

// LastHeartbeat returns the latest heartbeat, if any.
func (c *Console) LastHeartbeat() (Heartbeat, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.beats) == 0 {
		return Heartbeat{}, false
	}
	return c.beats[len(c.beats)-1], true
}

// WaitCorrupted waits for "QB corrupted page=N" (qb_corrupt).
func (c *Console) WaitCorrupted(ctx context.Context) (Corrupted, error) {
	var r Corrupted
	err := c.wait(ctx, "QB corrupted", func() bool {
		if c.corrupted != nil {
			r = *c.corrupted
		}
		return c.corrupted != nil
	})
	return r, err
}

// Verify asks the guest for a full verify of every byte of every touched
// page ("verify K" on the serial port) and returns its answer. It first
// waits until the guest runs its main loop (ready or a heartbeat seen), since
// input sent earlier may be lost. The guest pauses dirtying while it
// verifies; 1 GiB takes a few seconds under TCG. A result with Bad > 0 is
// not an error: check it.
func (c *Console) Verify(ctx context.Context) (VerifyResult, error) {
	if err := c.wait(ctx, "the guest to run (QB ready or hb)", func() bool {
		return c.ready != nil || len(c.beats) > 0
	}); err != nil {
		return VerifyResult{}, err
	}
	req := int(verifyRequests.Add(1))
	if err := c.Send(ctx, fmt.Sprintf("verify %d", req)); err != nil {
		return VerifyResult{}, err
	}
	var res VerifyResult
	err := c.wait(ctx, fmt.Sprintf("QB verify req=%d", req), func() bool {
		for _, v := range c.verifies {
			if v.Req == req {
				res = v
				return true
			}
		}
		return false
	})
	return res, err
}

// Send writes one line (a newline is appended) to the guest's serial port.
func (c *Console) Send(ctx context.Context, line string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(c.conn, line+"\n"); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("guest: console write: %w", ctx.Err())
		}
		return fmt.Errorf("guest: console write: %w", err)
	}
	return nil
}

// Lines returns every console line so far (QB lines and everything else),
// without line terminators.
func (c *Console) Lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// Verifies returns every verify result so far (requested and automatic).
func (c *Console) Verifies() []VerifyResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]VerifyResult(nil), c.verifies...)
}

// Err returns the guest's fatal error ("QB error ..."), if it printed one.
func (c *Console) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.guestErr == nil {
		return nil
	}
	return c.guestErr
}
