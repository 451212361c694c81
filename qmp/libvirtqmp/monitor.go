package libvirtqmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qmp"
	"github.com/sirupsen/logrus"
	"libvirt.org/go/libvirt"

	"github.com/mig2/mig2/qmp"
)

var (
	_ goqemu.Monitor = (*Monitor)(nil)
	_ qmp.Monitor    = (*Monitor)(nil)
)

// ErrNoConnect is returned by Connect and Events when events were asked for
// but the Monitor was built without WithConnect.
var ErrNoConnect = errors.New("libvirtqmp: events need the domain's libvirt connection (WithConnect)")

// ErrOOB is returned by Run for "exec-oob" commands: libvirt does not pass
// out-of-band execution through.
var ErrOOB = errors.New("libvirtqmp: out-of-band execution is not available through libvirt")

type config struct {
	conn        *libvirt.Connect
	log         logrus.FieldLogger
	eventBuffer int
	runTimeout  time.Duration
}

// Option configures a Monitor.
type Option func(*config)

// WithConnect gives the libvirt connection the domain belongs to; it is
// needed for events (the Go binding has no virDomainGetConnect). The caller
// must have called libvirt.EventRegisterDefaultImpl before opening it and
// must run libvirt.EventRunDefaultImpl in a loop, or no event arrives.
func WithConnect(c *libvirt.Connect) Option { return func(cfg *config) { cfg.conn = c } }

// WithLogger sets the logger (default: discard).
func WithLogger(l logrus.FieldLogger) Option { return func(cfg *config) { cfg.log = l } }

// WithEventBuffer sets the default subscription buffer (qmp.DefaultEventBuffer).
func WithEventBuffer(n int) Option { return func(cfg *config) { cfg.eventBuffer = n } }

// WithRunTimeout bounds go-qemu's Run, which has no context
// (qmp.DefaultRunTimeout).
func WithRunTimeout(d time.Duration) Option { return func(cfg *config) { cfg.runTimeout = d } }

// Monitor talks QMP to the QEMU of a libvirt domain through libvirt
// (virDomainQemuMonitorCommand and virConnectDomainQemuMonitorEventRegister).
// It implements qmp.Executor, qmp.EventSource and go-qemu's Monitor, so the
// typed commands of package qmp work on it as on a *qmp.Conn.
//
// Every command marks the domain tainted "custom-monitor" in libvirt; keep
// to read-only queries on libvirt-managed guests (DESIGN.md).
type Monitor struct {
	run  func(cmd string) (string, error)
	conn *libvirt.Connect
	dom  *libvirt.Domain
	log  logrus.FieldLogger
	hub  *qmp.EventHub
	cfg  config

	mu         sync.Mutex
	callbackID int
	registered bool
	closed     bool
	wg         sync.WaitGroup // in-flight libvirt calls
}

// New returns a Monitor for dom. It does not take ownership of dom (the
// caller frees it after Close). Events start flowing after Connect.
func New(dom *libvirt.Domain, opts ...Option) *Monitor {
	m := newMonitor(func(cmd string) (string, error) {
		return dom.QemuMonitorCommand(cmd, libvirt.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
	}, opts...)
	m.dom = dom
	return m
}

func newMonitor(run func(string) (string, error), opts ...Option) *Monitor {
	cfg := config{eventBuffer: qmp.DefaultEventBuffer, runTimeout: qmp.DefaultRunTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		cfg.log = l
	}
	return &Monitor{run: run, conn: cfg.conn, log: cfg.log, hub: qmp.NewEventHub(cfg.eventBuffer), cfg: cfg}
}

// Execute runs cmd through libvirt; see qmp.Executor. A QMP error (which
// libvirt returns inside the output, with no libvirt error) comes back as
// *qmp.Error; a libvirt failure as a wrapped libvirt.Error. libvirt calls
// cannot be interrupted: when ctx ends first, Execute returns ctx's error at
// once and the call finishes in the background (Close waits for it).
func (m *Monitor) Execute(ctx context.Context, cmd string, args, result any) error {
	data, err := qmp.EncodeCommand(cmd, args, "", false)
	if err != nil {
		return err
	}
	out, err := m.call(ctx, cmd, string(data[:len(data)-1]))
	if err != nil {
		return err
	}
	return decodeOutput(cmd, out, result)
}

// call runs one command string, honouring ctx.
func (m *Monitor) call(ctx context.Context, cmd, command string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("libvirtqmp: %s: %w", cmd, err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return "", fmt.Errorf("libvirtqmp: %s: %w", cmd, qmp.ErrClosed)
	}
	m.wg.Add(1)
	m.mu.Unlock()

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer m.wg.Done()
		out, err := m.run(command)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return "", fmt.Errorf("libvirtqmp: %s: %w", cmd, r.err)
		}
		return r.out, nil
	case <-ctx.Done():
		return "", fmt.Errorf("libvirtqmp: %s: no reply: %w", cmd, ctx.Err())
	}
}

// decodeOutput turns virDomainQemuMonitorCommand's output into the result:
// QEMU's whole reply, {"return": ...} or {"error": ...}.
func decodeOutput(cmd, out string, result any) error {
	ret, err := qmp.DecodeReply(cmd, []byte(out))
	if err != nil {
		return err
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(ret, result); err != nil {
		return fmt.Errorf("libvirtqmp: %s: decode reply: %w", cmd, err)
	}
	return nil
}

// eventFromLibvirt converts what libvirt hands a QEMU monitor event callback
// (details is the JSON of the event's "data", or "" when it had none).
func eventFromLibvirt(name string, seconds int64, micros uint, details string) (qmp.Event, error) {
	e := qmp.Event{Name: name}
	if name == "" {
		return e, errors.New("libvirtqmp: event without a name")
	}
	if seconds >= 0 {
		e.Timestamp = time.Unix(seconds, int64(micros)*1000).UTC()
	}
	if details != "" && details != "null" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(details), &obj); err != nil || obj == nil {
			return e, fmt.Errorf("libvirtqmp: event %s: data is not a JSON object: %.60q", name, details)
		}
		e.Data = json.RawMessage(details)
	}
	return e, nil
}

// onEvent runs on libvirt's event loop goroutine: it must not block, and
// the hub never does.
func (m *Monitor) onEvent(name string, seconds int64, micros uint, details string) {
	e, err := eventFromLibvirt(name, seconds, micros, details)
	if err != nil {
		m.log.WithError(err).Warn("libvirtqmp: dropping undecodable event")
		return
	}
	m.hub.Publish(e)
}

// Connect implements go-qemu's Monitor: it registers for the domain's QEMU
// monitor events (all of them: event ".*" with the regex flag) when the
// Monitor has a connection (WithConnect). Without one, Connect succeeds and
// only commands are available. Calling it twice is harmless.
func (m *Monitor) Connect() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("libvirtqmp: connect: %w", qmp.ErrClosed)
	}
	if m.registered || m.conn == nil {
		return nil
	}
	id, err := m.conn.DomainQemuMonitorEventRegister(m.dom, ".*",
		func(_ *libvirt.Connect, _ *libvirt.Domain, ev *libvirt.DomainQemuMonitorEvent) {
			m.onEvent(ev.Event, ev.Seconds, ev.Micros, ev.Details)
		}, libvirt.CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX)
	if err != nil {
		return fmt.Errorf("libvirtqmp: registering for QEMU monitor events: %w", err)
	}
	m.callbackID, m.registered = id, true
	return nil
}

// Close deregisters events, closes every subscription and waits for libvirt
// calls still running. It is idempotent.
func (m *Monitor) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.wg.Wait()
		return nil
	}
	m.closed = true
	var err error
	if m.registered {
		if derr := m.conn.DomainQemuEventDeregister(m.callbackID); derr != nil {
			err = fmt.Errorf("libvirtqmp: deregistering events: %w", derr)
		}
		m.registered = false
	}
	m.mu.Unlock()
	m.hub.Close()
	m.wg.Wait()
	return err
}

// Disconnect implements go-qemu's Monitor: Close.
func (m *Monitor) Disconnect() error { return m.Close() }

// Subscribe implements qmp.EventSource. Events arrive only after Connect on
// a Monitor built WithConnect.
func (m *Monitor) Subscribe(buffer int) *qmp.Subscription { return m.hub.Subscribe(buffer) }

// Events implements go-qemu's Monitor (see qmp.EventHub.MonitorEvents).
func (m *Monitor) Events(ctx context.Context) (<-chan goqemu.Event, error) {
	m.mu.Lock()
	noConn := m.conn == nil
	m.mu.Unlock()
	if noConn {
		return nil, ErrNoConnect
	}
	return m.hub.MonitorEvents(ctx)
}

// Run implements go-qemu's Monitor: a raw QMP command through libvirt,
// bounded by WithRunTimeout. The reply is {"return": ...} (with the
// caller's id); a QMP error is returned as *qmp.Error.
func (m *Monitor) Run(command []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.runTimeout)
	defer cancel()
	return qmp.RunRaw(ctx, command, func(ctx context.Context, cmd string, args json.RawMessage, oob bool) (json.RawMessage, error) {
		if oob {
			return nil, ErrOOB
		}
		data, err := qmp.EncodeCommand(cmd, args, "", false)
		if err != nil {
			return nil, err
		}
		out, err := m.call(ctx, cmd, string(data[:len(data)-1]))
		if err != nil {
			return nil, err
		}
		return qmp.DecodeReply(cmd, []byte(out))
	})
}
