package driver

import (
	"context"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// The destination's share of the pre-flight starts with Hello: connect to the guest's QMP,
// check that it waits for an incoming migration, read its facts and device tree for Offer.
// The source sends Hello only after reading its own QEMU, some 10-20 ms after the TLS
// handshake. An agent that serves a single guest (the plain-QEMU case) therefore reads that
// guest's QEMU as soon as an authenticated source has connected, and Hello finds it done. If
// Hello names another guest, or comes late, the reading is dropped and done again.

// readAheadFresh is how old a reading may be when Hello arrives.
const readAheadFresh = 2 * time.Second

// guestReading is one guest's QEMU as read for Offer, in progress until done is closed.
type guestReading struct {
	guest    string
	at       time.Time
	cancel   context.CancelFunc
	done     chan struct{}
	tConn    time.Duration // QMP connect, from at
	dialErr  error
	waitErr  error // checkWaiting
	probeErr error
	facts    v2proto.HostFacts
	tree     *qmp.DeviceTree
	state    *migrationState // nil if not read

	expiry *time.Timer // expire, unless claimed or discarded before

	mu    sync.Mutex
	mon   *qmp.Conn
	taken bool
}

// readGuest starts reading g's QEMU. The caller claims the reading (and its QMP connection)
// or drops it (discard); unclaimed, it expires after readAheadFresh.
func readGuest(ctx context.Context, g AgentGuest, log logrus.FieldLogger) *guestReading {
	ctx, cancel := context.WithCancel(ctx)
	r := &guestReading{guest: g.Name, at: time.Now(), cancel: cancel, done: make(chan struct{})}
	go func() { // owned: discard or take waits for it
		defer close(r.done)
		mon, err := qmp.Dial(ctx, g.QMP, qmp.WithLogger(log))
		r.tConn = time.Since(r.at)
		if err != nil {
			r.dialErr = err
			return
		}
		r.mu.Lock()
		r.mon = mon
		r.mu.Unlock()
		_ = concurrently( // pipelined on the one connection
			func() error { r.facts, r.tree, r.state, r.probeErr = probeQEMUState(ctx, mon); return nil },
			func() error { r.waitErr = checkWaiting(ctx, mon, g.Name); return nil },
		)
	}()
	r.expiry = time.AfterFunc(readAheadFresh, func() { r.wait(); r.expire() })
	return r
}

// wait blocks until the reading is complete.
func (r *guestReading) wait() { <-r.done }

// claim hands the reading to the migration once it is complete: true when it holds a QMP
// connection, which the migration then owns (and closes). False when the dial failed or the
// reading expired unclaimed.
func (r *guestReading) claim() bool {
	r.wait()
	r.expiry.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mon == nil {
		return false
	}
	r.taken = true
	return true
}

// expire closes the connection of a reading nobody claimed in time: QEMU serves one QMP
// client per socket, and a source that connected but never sends Hello must not hold it.
func (r *guestReading) expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.taken && r.mon != nil {
		r.mon.Close()
		r.mon = nil
	}
}

// discard stops a reading nobody claimed and closes its connection. It is safe on nil and
// after claim.
func (r *guestReading) discard() {
	if r == nil {
		return
	}
	r.cancel()
	r.expiry.Stop()
	r.wait()
	r.expire()
}

// usableFor returns the reading if Hello for guest may use it, else nil.
func (r *guestReading) usableFor(guest string, now time.Time) *guestReading {
	if r == nil || r.guest != guest || now.Sub(r.at) > readAheadFresh {
		return nil
	}
	return r
}

// readAhead starts reading the agent's only guest when it serves exactly one, through its own
// QMP socket (not libvirt), and no migration holds it; nil otherwise.
func (a *Agent) readAhead(ctx context.Context, log logrus.FieldLogger) *guestReading {
	if len(a.guests) != 1 || a.cfg.Incoming != nil {
		return nil
	}
	for _, g := range a.guests {
		if a.isBusy(g.Name) {
			return nil
		}
		return readGuest(ctx, g, log)
	}
	return nil
}
