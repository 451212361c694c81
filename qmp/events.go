package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	goqemu "github.com/digitalocean/go-qemu/qmp"
)

// DefaultEventBuffer is the subscription buffer used when none is given.
const DefaultEventBuffer = 64

// EventHub fans events out to subscriptions without ever blocking the
// publisher: each subscription has a bounded buffer, and an event that does
// not fit is dropped and counted (Subscription.Dropped). Both monitors (Conn
// and libvirtqmp.Monitor) use one; it is exported for that reason and for
// fakes.
//
// A hub starts with a backlog subscription that collects events from the
// moment it is created; the first go-qemu style Events call adopts it, so
// events sent before anyone asked for them are not lost (go-qemu's
// SocketMonitor drops them).
type EventHub struct {
	mu            sync.Mutex
	subs          map[*Subscription]struct{}
	backlog       *Subscription
	defaultBuffer int
	closed        bool
}

// NewEventHub returns a hub whose subscriptions default to defaultBuffer
// events (DefaultEventBuffer when <= 0).
func NewEventHub(defaultBuffer int) *EventHub {
	if defaultBuffer <= 0 {
		defaultBuffer = DefaultEventBuffer
	}
	h := &EventHub{subs: make(map[*Subscription]struct{}), defaultBuffer: defaultBuffer}
	h.backlog = h.Subscribe(defaultBuffer)
	return h
}

// Subscribe returns a subscription that receives every event published from
// now on, buffering up to buffer events (the hub's default when <= 0). On a
// closed hub the subscription's channel is already closed.
func (h *EventHub) Subscribe(buffer int) *Subscription {
	if buffer <= 0 {
		buffer = h.defaultBuffer
	}
	s := &Subscription{hub: h, ch: make(chan Event, buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.closed = true
		close(s.ch)
		return s
	}
	h.subs[s] = struct{}{}
	return s
}

// Publish hands e to every subscription. It never blocks.
func (h *EventHub) Publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.deliver(e)
	}
}

// Close closes every subscription's channel; later subscriptions start
// closed. It is idempotent.
func (h *EventHub) Close() {
	h.mu.Lock()
	subs := h.subs
	h.subs = nil
	h.closed = true
	h.mu.Unlock()
	for s := range subs {
		s.shut()
	}
}

// MonitorEvents implements go-qemu's Monitor.Events on top of the hub: the
// first call receives the backlog (events since the hub was created), later
// calls start empty. The channel is closed when ctx ends or the hub closes.
// A consumer that falls behind loses events (counted) instead of blocking
// the monitor.
func (h *EventHub) MonitorEvents(ctx context.Context) (<-chan goqemu.Event, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, &closedError{cmd: "events"}
	}
	s := h.backlog
	h.backlog = nil
	h.mu.Unlock()
	if s == nil {
		s = h.Subscribe(0)
	}
	g := s.toGoQEMU()
	stop := context.AfterFunc(ctx, s.Close)
	s.mu.Lock()
	s.stop = stop
	s.mu.Unlock()
	return g, nil
}

func (h *EventHub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs != nil {
		delete(h.subs, s)
	}
}

// Subscription receives events from one monitor. Its buffer is bounded: when
// it is full, new events are dropped and counted, so a slow or absent reader
// never blocks the monitor.
type Subscription struct {
	hub     *EventHub
	mu      sync.Mutex
	ch      chan Event        // qmp events (nil once converted to go-qemu events)
	gch     chan goqemu.Event // go-qemu events (MonitorEvents)
	stop    func() bool       // deregisters the ctx watcher of MonitorEvents
	closed  bool
	dropped atomic.Uint64
}

// Events returns the channel events arrive on. It is closed when the
// subscription or the monitor is closed.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Dropped returns how many events did not fit in the buffer and were lost.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close stops the subscription and closes its channel. It is idempotent.
func (s *Subscription) Close() {
	s.hub.remove(s)
	s.shut()
}

func (s *Subscription) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.stop != nil {
		s.stop()
	}
	if s.ch != nil {
		close(s.ch)
	}
	if s.gch != nil {
		close(s.gch)
	}
}

// deliver is called with the hub's lock held; it never blocks.
func (s *Subscription) deliver(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if s.gch != nil {
		select {
		case s.gch <- ToGoQEMUEvent(e):
		default:
			s.dropped.Add(1)
		}
		return
	}
	select {
	case s.ch <- e:
	default:
		s.dropped.Add(1)
	}
}

// toGoQEMU switches the subscription to go-qemu events, carrying over what
// it has buffered.
func (s *Subscription) toGoQEMU() chan goqemu.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := make(chan goqemu.Event, cap(s.ch))
	if s.closed {
		close(g)
		return g
	}
	for n := len(s.ch); n > 0; n-- {
		g <- ToGoQEMUEvent(<-s.ch)
	}
	s.gch = g
	s.ch = nil
	return g
}

// ToGoQEMUEvent converts an event to go-qemu's representation.
func ToGoQEMUEvent(e Event) goqemu.Event {
	var g goqemu.Event
	g.Event = e.Name
	if len(e.Data) > 0 {
		_ = json.Unmarshal(e.Data, &g.Data) // Data was checked to be an object when decoded
	}
	ts := timestampOf(e.Timestamp)
	g.Timestamp.Seconds, g.Timestamp.Microseconds = ts.Seconds, ts.Microseconds
	return g
}

// Event names decoded by this package.
const (
	EventMigration     = "MIGRATION"
	EventMigrationPass = "MIGRATION_PASS"
	EventStop          = "STOP"
	EventResume        = "RESUME"
	EventShutdown      = "SHUTDOWN"
)

// MigrationEvent is the data of MIGRATION (needs the "events" capability).
type MigrationEvent struct {
	Status MigrationStatus `json:"status"`
}

// MigrationPassEvent is the data of MIGRATION_PASS: a new dirty-page pass.
type MigrationPassEvent struct {
	Pass int64 `json:"pass"`
}

// ShutdownEvent is the data of SHUTDOWN.
type ShutdownEvent struct {
	Guest  bool   `json:"guest"`  // the guest asked for it
	Reason string `json:"reason"` // ShutdownCause, e.g. "host-qmp-quit", "guest-shutdown"
}

// EventError reports an event that is not the one asked for or whose data
// does not decode.
type EventError struct {
	Want, Got string
	Err       error
}

func (e *EventError) Error() string {
	if e.Want != e.Got {
		return fmt.Sprintf("qmp: event %s is not %s", e.Got, e.Want)
	}
	return fmt.Sprintf("qmp: event %s: %v", e.Got, e.Err)
}

func (e *EventError) Unwrap() error { return e.Err }

func decodeEvent(e Event, want string, v any) error {
	if e.Name != want {
		return &EventError{Want: want, Got: e.Name}
	}
	if len(e.Data) == 0 {
		return &EventError{Want: want, Got: e.Name, Err: fmt.Errorf("no data")}
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return &EventError{Want: want, Got: e.Name, Err: err}
	}
	return nil
}

// DecodeMigrationEvent decodes a MIGRATION event.
func DecodeMigrationEvent(e Event) (MigrationEvent, error) {
	var v MigrationEvent
	if err := decodeEvent(e, EventMigration, &v); err != nil {
		return MigrationEvent{}, err
	}
	if v.Status == "" {
		return MigrationEvent{}, &EventError{Want: EventMigration, Got: e.Name, Err: fmt.Errorf("no status")}
	}
	return v, nil
}

// DecodeMigrationPassEvent decodes a MIGRATION_PASS event.
func DecodeMigrationPassEvent(e Event) (MigrationPassEvent, error) {
	var v MigrationPassEvent
	err := decodeEvent(e, EventMigrationPass, &v)
	return v, err
}

// DecodeShutdownEvent decodes a SHUTDOWN event.
func DecodeShutdownEvent(e Event) (ShutdownEvent, error) {
	var v ShutdownEvent
	err := decodeEvent(e, EventShutdown, &v)
	return v, err
}

// IsStop reports whether e is a STOP event (the guest's vCPUs stopped).
func IsStop(e Event) bool { return e.Name == EventStop }

// IsResume reports whether e is a RESUME event (the guest's vCPUs run again).
func IsResume(e Event) bool { return e.Name == EventResume }
