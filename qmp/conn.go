package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qmp"
	"github.com/sirupsen/logrus"
)

// Executor runs one QMP command: args is nil or anything that marshals to a
// JSON object; the reply's "return" member is unmarshalled into result
// unless result is nil. A QMP error comes back as *Error. Both *Conn and
// libvirtqmp.Monitor are Executors; every typed command takes one.
type Executor interface {
	Execute(ctx context.Context, cmd string, args, result any) error
}

// EventSource hands out event subscriptions. Both *Conn and
// libvirtqmp.Monitor are EventSources.
type EventSource interface {
	Subscribe(buffer int) *Subscription
}

// Monitor is what both mig2 monitors provide: typed commands, events, and
// go-qemu's Monitor interface so go-qemu's ecosystem plugs in.
type Monitor interface {
	Executor
	EventSource
	goqemu.Monitor
}

var (
	_ goqemu.Monitor = (*Conn)(nil)
	_ Monitor        = (*Conn)(nil)
)

// Defaults.
const (
	DefaultConnectTimeout = 5 * time.Second  // dial + greeting + qmp_capabilities
	DefaultRunTimeout     = 60 * time.Second // go-qemu's Run, which takes no context
)

// TraceDirection tells which way a traced message went.
type TraceDirection string

// Trace directions.
const (
	TraceSend TraceDirection = "->" // to QEMU
	TraceRecv TraceDirection = "<-" // from QEMU
)

type config struct {
	log            logrus.FieldLogger
	eventBuffer    int
	connectTimeout time.Duration
	runTimeout     time.Duration
	oob            bool
	trace          func(TraceDirection, []byte)
}

// Option configures a Conn.
type Option func(*config)

// WithLogger sets the logger (default: discard). The Conn logs only
// protocol anomalies (unmatched replies, undecodable messages) at debug and
// warn level.
func WithLogger(l logrus.FieldLogger) Option { return func(c *config) { c.log = l } }

// WithEventBuffer sets the default subscription buffer (events), used by
// Subscribe(0), by go-qemu's Events and by the backlog that keeps events
// arriving before the first Events call. Default DefaultEventBuffer.
func WithEventBuffer(n int) Option { return func(c *config) { c.eventBuffer = n } }

// WithConnectTimeout bounds dial, greeting and capability negotiation
// (default DefaultConnectTimeout); the ctx given to Dial/NewConn bounds them
// too. QEMU serves one QMP client per socket: a second client waits for the
// greeting forever, so this timeout is what turns that into an error.
func WithConnectTimeout(d time.Duration) Option { return func(c *config) { c.connectTimeout = d } }

// WithRunTimeout bounds go-qemu's Run, which has no context (default
// DefaultRunTimeout). Execute is bounded by its ctx only.
func WithRunTimeout(d time.Duration) Option { return func(c *config) { c.runTimeout = d } }

// WithOOB enables QMP out-of-band execution when QEMU offers it (the "oob"
// capability), so ExecuteOOB can be used (e.g. migrate-pause while the main
// loop is stuck).
func WithOOB() Option { return func(c *config) { c.oob = true } }

// WithTrace calls fn with every message sent and received (raw JSON, no
// trailing newline), including the greeting; a command is traced just
// before it is written, so it always precedes its reply. fn runs on the
// Conn's reader and writer paths, possibly concurrently, and must not
// block. Tests use it to record transcripts.
func WithTrace(fn func(dir TraceDirection, msg []byte)) Option {
	return func(c *config) { c.trace = fn }
}

func newConfig(opts []Option) config {
	c := config{eventBuffer: DefaultEventBuffer, connectTimeout: DefaultConnectTimeout, runTimeout: DefaultRunTimeout}
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.log = l
	}
	return c
}

// Conn is a QMP connection to one QEMU monitor socket. It is safe for
// concurrent use: every command carries an id and replies are matched by id
// by a reader goroutine the Conn owns; events go to subscriptions without
// ever blocking that reader. Close stops everything the Conn started.
type Conn struct {
	nc       net.Conn
	cfg      config
	log      logrus.FieldLogger
	greeting Greeting
	oob      bool
	hub      *EventHub
	nextID   atomic.Uint64

	wsem chan struct{} // one writer at a time; a channel so waiting honours ctx

	mu        sync.Mutex
	pending   map[string]chan *Message
	closing   bool  // Close was called
	failCause error // a write left the stream unusable
	cause     error // why the connection ended; set before done is closed

	done      chan struct{} // closed when the reader has stopped
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Dial connects to QEMU's QMP unix socket at path, reads the greeting and
// negotiates capabilities. Dial, greeting and negotiation are bounded by ctx
// and by the connect timeout (WithConnectTimeout, default 5 s).
func Dial(ctx context.Context, path string, opts ...Option) (*Conn, error) {
	cfg := newConfig(opts)
	hctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(hctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	c, err := NewConn(hctx, nc, opts...)
	if err != nil {
		return nil, &pathError{path: path, err: err}
	}
	return c, nil
}

// NewConn runs the QMP handshake on an established connection (the caller's
// net.Conn, e.g. one end of net.Pipe in tests) and returns a Conn that owns
// it. On error nc is closed.
func NewConn(ctx context.Context, nc net.Conn, opts ...Option) (*Conn, error) {
	cfg := newConfig(opts)
	hctx, cancel := context.WithTimeout(ctx, cfg.connectTimeout)
	defer cancel()

	dec := json.NewDecoder(bufio.NewReaderSize(nc, 64<<10))
	g, err := readGreeting(hctx, nc, dec, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := &Conn{
		nc:       nc,
		cfg:      cfg,
		log:      cfg.log,
		greeting: *g,
		hub:      NewEventHub(cfg.eventBuffer),
		wsem:     make(chan struct{}, 1),
		pending:  make(map[string]chan *Message),
		done:     make(chan struct{}),
	}
	c.wg.Add(1)
	go c.readLoop(dec)

	var args any
	if cfg.oob && g.HasCapability("oob") {
		args = map[string][]string{"enable": {"oob"}}
	}
	if err := c.Execute(hctx, "qmp_capabilities", args, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp: handshake: %w", err)
	}
	c.oob = args != nil
	return c, nil
}

// pathError names the socket in an error from NewConn.
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string {
	return "qmp: " + e.path + ": " + strings.TrimPrefix(e.err.Error(), "qmp: ")
}

func (e *pathError) Unwrap() error { return e.err }

// aLongTimeAgo is a deadline in the past, used to abort blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

func readGreeting(ctx context.Context, nc net.Conn, dec *json.Decoder, cfg config) (*Greeting, error) {
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(aLongTimeAgo) })
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if !stop() {
		// ctx ended: the read was (or could still be) aborted.
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("qmp: no greeting from QEMU (QEMU serves one QMP client per socket: is another client connected?): %w", cerr)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			err = &qemuClosed{err: err}
		}
		return nil, fmt.Errorf("qmp: reading greeting: %w", err)
	}
	if cfg.trace != nil {
		cfg.trace(TraceRecv, raw)
	}
	m, err := DecodeMessage(raw)
	if err != nil {
		return nil, fmt.Errorf("qmp: reading greeting: %w", err)
	}
	if m.Kind != KindGreeting {
		return nil, fmt.Errorf("qmp: reading greeting: got a %s first", m.Kind)
	}
	return m.Greeting, nil
}

// Greeting returns what QEMU announced on connect (version, capabilities).
func (c *Conn) Greeting() Greeting { return c.greeting }

// PeerPID is the pid of the process at the other end of a unix socket (SO_PEERCRED): the QEMU
// itself for a socket QEMU listens on. 0 when unknown (another kind of connection).
func (c *Conn) PeerPID() int {
	uc, ok := c.nc.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	var pid int
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// OOB reports whether out-of-band execution was negotiated.
func (c *Conn) OOB() bool { return c.oob }

// Done is closed when the connection has ended (QEMU went away or Close).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended (wrapping ErrClosed), or nil while it
// is open.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.closedErr("")
	default:
		return nil
	}
}

// Execute runs cmd and waits for its reply or for ctx to end. See Executor.
// When QEMU does not answer in time the error wraps ctx.Err() (a late reply
// is discarded); when the connection is gone it wraps ErrClosed and the
// cause.
func (c *Conn) Execute(ctx context.Context, cmd string, args, result any) error {
	ret, err := c.execute(ctx, cmd, args, false)
	if err != nil {
		return err
	}
	return decodeResult(cmd, ret, result)
}

// ExecuteOOB is Execute with "exec-oob": QEMU runs the command out of band,
// ahead of queued commands. It needs WithOOB and a QEMU that offers OOB, and
// only commands marked allow-oob in the schema.
func (c *Conn) ExecuteOOB(ctx context.Context, cmd string, args, result any) error {
	if !c.oob {
		return ErrOOBDisabled
	}
	ret, err := c.execute(ctx, cmd, args, true)
	if err != nil {
		return err
	}
	return decodeResult(cmd, ret, result)
}

func decodeResult(cmd string, ret json.RawMessage, result any) error {
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(ret, result); err != nil {
		return fmt.Errorf("qmp: %s: decode reply: %w", cmd, err)
	}
	return nil
}

func (c *Conn) execute(ctx context.Context, cmd string, args any, oob bool) (json.RawMessage, error) {
	id, ch, err := c.send(ctx, cmd, args, oob)
	defer c.forget(id)
	if err != nil {
		return nil, err
	}
	return c.await(ctx, cmd, ch)
}

// Command is one command of ExecuteInOrder: its reply's "return" member is unmarshalled into
// Result unless Result is nil.
type Command struct {
	Name         string
	Args, Result any
}

// ExecuteInOrder sends cmds one after another without waiting, then waits for every reply:
// one round trip for all of them. QEMU runs a monitor's commands in the order they arrive,
// each to its end, so a command may rely on the ones before it having run; but it runs even
// when one before it failed, so callers batch only commands whose failures they can undo. It
// returns one error per command, nil where the command succeeded.
func (c *Conn) ExecuteInOrder(ctx context.Context, cmds ...Command) []error {
	errs := make([]error, len(cmds))
	chans := make([]chan *Message, len(cmds))
	for i, cmd := range cmds {
		id, ch, err := c.send(ctx, cmd.Name, cmd.Args, false)
		defer c.forget(id)
		if err != nil {
			for j := i; j < len(cmds); j++ { // the connection is unusable from here on
				errs[j] = err
			}
			break
		}
		chans[i] = ch
	}
	for i, ch := range chans {
		if ch == nil {
			continue
		}
		ret, err := c.await(ctx, cmds[i].Name, ch)
		if err == nil {
			err = decodeResult(cmds[i].Name, ret, cmds[i].Result)
		}
		errs[i] = err
	}
	return errs
}

// send writes one command and returns its id and the channel its reply will arrive on; the
// caller forgets the id when done with it (also after an error).
func (c *Conn) send(ctx context.Context, cmd string, args any, oob bool) (string, chan *Message, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	id := "mig2-" + strconv.FormatUint(c.nextID.Add(1), 10)
	data, err := EncodeCommand(cmd, args, id, oob)
	if err != nil {
		return "", nil, err
	}
	ch := make(chan *Message, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		return "", nil, c.closedErr(cmd)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.write(ctx, cmd, data); err != nil {
		return id, nil, err
	}
	return id, ch, nil
}

// await waits for the reply on ch.
func (c *Conn) await(ctx context.Context, cmd string, ch chan *Message) (json.RawMessage, error) {
	select {
	case m := <-ch:
		return replyResult(cmd, m)
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp: %s: no reply from QEMU: %w", cmd, ctx.Err())
	case <-c.done:
		select {
		case m := <-ch: // the reply made it just before the end
			return replyResult(cmd, m)
		default:
		}
		return nil, c.closedErr(cmd)
	}
}

func replyResult(cmd string, m *Message) (json.RawMessage, error) {
	if m.Error != nil {
		e := *m.Error
		e.Command = cmd
		return nil, &e
	}
	return m.Return, nil
}

func (c *Conn) forget(id string) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// write sends one message, honouring ctx while waiting for the writer slot
// and while writing. A write that fails after sending part of the message
// leaves the stream unusable: the connection is then closed.
func (c *Conn) write(ctx context.Context, cmd string, data []byte) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("qmp: %s: waiting to send: %w", cmd, ctx.Err())
	case <-c.done:
		return c.closedErr(cmd)
	}
	defer func() { <-c.wsem }()

	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.nc.SetWriteDeadline(aLongTimeAgo)
		close(fired)
	})
	if c.cfg.trace != nil {
		c.cfg.trace(TraceSend, data[:len(data)-1]) // before the reply can be traced
	}
	n, err := c.nc.Write(data)
	if !stop() {
		<-fired
		c.nc.SetWriteDeadline(time.Time{})
	}
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		if n > 0 {
			c.fail(fmt.Errorf("partial write of %s: %w", cmd, err))
		}
		return fmt.Errorf("qmp: %s: QEMU is not reading commands: %w", cmd, cerr)
	}
	// Any other write error leaves the connection unusable: end it, and
	// report why it ended.
	cause := fmt.Errorf("write: %w", err)
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrClosedPipe) {
		cause = &qemuClosed{err: err}
	}
	c.fail(cause)
	<-c.done
	return c.closedErr(cmd)
}

// fail ends the connection because of a local failure.
func (c *Conn) fail(cause error) {
	c.mu.Lock()
	if c.failCause == nil {
		c.failCause = cause
	}
	c.mu.Unlock()
	c.nc.Close()
}

func (c *Conn) closedErr(cmd string) error {
	c.mu.Lock()
	cause := c.cause
	c.mu.Unlock()
	return &closedError{cmd: cmd, cause: cause}
}

func (c *Conn) readLoop(dec *json.Decoder) {
	defer c.wg.Done()
	var err error
	for {
		var raw json.RawMessage
		if err = dec.Decode(&raw); err != nil {
			break
		}
		if c.cfg.trace != nil {
			c.cfg.trace(TraceRecv, raw)
		}
		m, derr := DecodeMessage(raw)
		if derr != nil {
			c.log.WithError(derr).Warn("qmp: ignoring undecodable message from QEMU")
			continue
		}
		switch m.Kind {
		case KindReply:
			c.dispatch(m)
		case KindEvent:
			c.hub.Publish(*m.Event)
		default:
			c.log.WithField("kind", m.Kind.String()).Warn("qmp: ignoring unexpected message from QEMU")
		}
	}
	c.shutdown(err)
}

// dispatch hands a reply to the command waiting for it.
func (c *Conn) dispatch(m *Message) {
	var id string
	if len(m.ID) > 0 {
		if err := json.Unmarshal(m.ID, &id); err != nil {
			c.log.WithField("id", string(m.ID)).Warn("qmp: ignoring reply with a foreign id")
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == "" && len(c.pending) == 1 {
		// QEMU omits the id when it could not parse the request: with one
		// command in flight, the reply is its.
		for k := range c.pending {
			id = k
		}
	}
	ch, ok := c.pending[id]
	if !ok {
		c.log.WithField("id", id).Debug("qmp: discarding reply nobody waits for (late or unknown)")
		return
	}
	delete(c.pending, id)
	ch <- m // buffered, one reply per id
}

func (c *Conn) shutdown(readErr error) {
	c.mu.Lock()
	switch {
	case c.closing:
		c.cause = errClosedByClient
	case c.failCause != nil:
		c.cause = c.failCause
	case errors.Is(readErr, io.EOF) || errors.Is(readErr, syscall.ECONNRESET):
		c.cause = &qemuClosed{err: readErr}
	case errors.As(readErr, new(*json.SyntaxError)):
		c.cause = fmt.Errorf("malformed JSON from QEMU: %w", readErr)
	default:
		c.cause = readErr
	}
	c.pending = nil
	c.mu.Unlock()
	c.nc.Close()
	close(c.done)
	c.hub.Close()
}

// Close closes the connection and waits for the Conn's goroutines to end.
// Pending commands fail with ErrClosed; subscriptions' channels close. It is
// idempotent and always returns nil.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		c.nc.Close()
	})
	c.wg.Wait()
	return nil
}

// Subscribe returns a subscription to the events QEMU sends from now on,
// buffering up to buffer events (WithEventBuffer's value when <= 0).
func (c *Conn) Subscribe(buffer int) *Subscription { return c.hub.Subscribe(buffer) }

// Connect implements go-qemu's Monitor. A Conn is connected by Dial or
// NewConn, so Connect only reports whether it still is.
func (c *Conn) Connect() error { return c.Err() }

// Disconnect implements go-qemu's Monitor: it closes the connection.
func (c *Conn) Disconnect() error { return c.Close() }

// Events implements go-qemu's Monitor. The first call also receives the
// events QEMU sent since the connection was made (up to the event buffer).
// The channel is closed when ctx ends or the connection does; a consumer
// that falls behind loses events instead of blocking the Conn.
func (c *Conn) Events(ctx context.Context) (<-chan goqemu.Event, error) {
	return c.hub.MonitorEvents(ctx)
}

// Run implements go-qemu's Monitor: it sends a raw QMP command and returns
// QEMU's reply as JSON ({"return": ...}, with the caller's "id" if it gave
// one). Run is bounded by WithRunTimeout since it takes no context; a QMP
// error is returned as *Error.
func (c *Conn) Run(command []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.runTimeout)
	defer cancel()
	return RunRaw(ctx, command, func(ctx context.Context, cmd string, args json.RawMessage, oob bool) (json.RawMessage, error) {
		if oob {
			if !c.oob {
				return nil, ErrOOBDisabled
			}
		}
		return c.execute(ctx, cmd, args, oob)
	})
}

// RunRaw implements go-qemu's Run contract for any transport: it decodes a
// raw QMP command, runs it with exec and encodes the reply as
// {"return": ..., "id": <the caller's id>}.
func RunRaw(ctx context.Context, command []byte, exec func(ctx context.Context, cmd string, args json.RawMessage, oob bool) (json.RawMessage, error)) ([]byte, error) {
	var w wireCommand
	if err := json.Unmarshal(command, &w); err != nil {
		return nil, fmt.Errorf("qmp: run: bad command: %w", err)
	}
	cmd, oob := w.Execute, false
	if cmd == "" {
		cmd, oob = w.ExecOOB, true
	}
	if cmd == "" || (w.Execute != "" && w.ExecOOB != "") {
		return nil, errors.New("qmp: run: command needs exactly one of execute and exec-oob")
	}
	var args json.RawMessage
	if len(w.Arguments) > 0 && string(w.Arguments) != "null" {
		args = w.Arguments
	}
	ret, err := exec(ctx, cmd, args, oob)
	if err != nil {
		return nil, err
	}
	return EncodeReply(w.ID, ret, nil)
}
