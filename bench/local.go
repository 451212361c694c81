package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/test/guest"
)

// node is one local QEMU running (or waiting for) the guest. The bench talks to it on a
// second QMP socket of its own, so the main socket stays free for mig2 and its agents.
type node struct {
	side int
	q    *guest.QEMU
	mon  *qmp.Conn // the bench's socket
}

func (n *node) kill() {
	if n == nil {
		return
	}
	if n.mon != nil {
		n.mon.Close()
	}
	n.q.Kill()
}

// localPair is the guest of one case moving between the two local sides.
type localPair struct {
	b    *bench
	c    Case
	opts guest.Options
	cur  *node // where the guest runs now
}

func (b *bench) benchQMP(side int) string {
	return filepath.Join(b.dir, sideNames[side]+"-bench.qmp")
}

// startNode starts a QEMU on side: the booting guest, or an idle destination with -incoming
// defer.
func (p *localPair) startNode(ctx context.Context, side int, incoming bool) (*node, error) {
	o := p.opts
	o.Name, o.Incoming = sideNames[side], incoming
	o.ExtraArgs = []string{"-qmp", "unix:" + p.b.benchQMP(side) + ",server=on,wait=off"}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	q, err := guest.Start(sctx, o)
	if err != nil {
		return nil, fmt.Errorf("bench: start QEMU %s: %w", o.Name, err)
	}
	n := &node{side: side, q: q}
	for {
		if n.mon, err = qmp.Dial(sctx, p.b.benchQMP(side)); err == nil {
			return n, nil
		}
		if sctx.Err() != nil {
			q.Kill()
			return nil, fmt.Errorf("bench: QMP of QEMU %s: %w", o.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bootLocal boots the case's guest on side a and waits until it has filled its memory and
// dirties it.
func (b *bench) bootLocal(ctx context.Context, c Case) (*localPair, error) {
	p := &localPair{b: b, c: c, opts: guest.Options{
		Dir: b.dir, Image: b.img, MemMiB: b.cfg.MemMiB, TouchMiB: b.cfg.TouchMiB,
		DirtyMiBps: c.Dirty, Fill: c.Fill, Heartbeat: 500 * time.Millisecond,
	}}
	n, err := p.startNode(ctx, 0, false)
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if _, err := n.q.Console().WaitReady(bctx); err == nil {
		_, err = n.q.Console().WaitHeartbeat(bctx, 0)
	}
	if err != nil {
		n.kill()
		return nil, fmt.Errorf("bench: local guest did not boot: %w", err)
	}
	p.cur = n
	if b.res.Machine.Accel == "" {
		b.res.Machine.Accel = accelOf(ctx, n.mon)
	}
	return p, nil
}

// accelOf asks QEMU whether KVM is in use.
func accelOf(ctx context.Context, mon *qmp.Conn) string {
	var kvm struct {
		Enabled bool `json:"enabled"`
		Present bool `json:"present"`
	}
	if err := mon.Execute(ctx, "query-kvm", nil, &kvm); err != nil {
		return "unknown"
	}
	if kvm.Enabled {
		return "KVM"
	}
	return fmt.Sprintf("TCG (query-kvm: enabled=false, present=%v)", kvm.Present)
}

func (p *localPair) close() {
	if p != nil {
		p.cur.kill()
	}
}

// pause and resume stop the local guest's vCPUs while the libvirt lab migrates its own, so
// the two do not compete for the machine's cores.
func (p *localPair) pause(ctx context.Context) error { return qmp.Stop(ctx, p.cur.mon) }
func (p *localPair) resume(ctx context.Context) error {
	if err := qmp.Cont(ctx, p.cur.mon); err != nil {
		return err
	}
	last, _ := p.cur.q.Console().LastHeartbeat()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := p.cur.q.Console().WaitHeartbeat(wctx, last.Seq)
	return err
}

// migrate moves the guest to the other side with one contender (set: the hand-tuned setting
// for tuned and sweep runs; limit: the convergence cap). It returns the run; an error means the
// guest is lost and the case cannot go on.
func (p *localPair) migrate(ctx context.Context, contender string, set *Setting, limit time.Duration) (Run, error) {
	src := p.cur
	r := Run{Case: p.c.String(), Contender: contender, Setting: set,
		Direction: sideNames[src.side] + "->" + sideNames[1-src.side], Started: time.Now()}
	dst, err := p.startNode(ctx, 1-src.side, true)
	if err != nil {
		r.Status, r.Error = statusFailed, err.Error()
		return r, ctx.Err()
	}
	if err := resetToDefaults(ctx, src.mon, dst.mon); err != nil {
		dst.kill()
		r.Status, r.Error = statusFailed, "bench: reset the source to QEMU's defaults: "+err.Error()
		return r, ctx.Err()
	}
	// Every contender finds an idle, pre-started destination.
	if err := sleepCtx(ctx, p.b.cfg.Idle); err != nil {
		dst.kill()
		return r, err
	}
	if p.b.cfg.WarmMiB > 0 {
		// Outside the clock: see warmHostMemory.
		warmHostMemory(p.b.cfg.WarmMiB << 20)
	}
	last, _ := src.q.Console().LastHeartbeat()
	switch contender {
	case cQEMUDefaults:
		rawMigrate(ctx, &r, src, dst, nil, p.b.pki, limit)
	case cTunedTLS, cTunedPlain, cTunedSafe, cSweep:
		rawMigrate(ctx, &r, src, dst, set, p.b.pki, limit)
	case cMig2TLS, cMig2Insecure, cMig2V1:
		p.b.mig2Migrate(ctx, &r, src, dst, limit)
	default:
		r.Status, r.Error = statusFailed, "unknown contender "+contender
	}
	if ctx.Err() != nil {
		dst.kill()
		return r, ctx.Err()
	}
	return r, p.settle(ctx, &r, src, dst, last)
}

// settle confirms where the guest runs after a run: on the destination after a completed
// migration (its heartbeat), else still on the source. The QEMU that lost the guest is stopped.
func (p *localPair) settle(ctx context.Context, r *Run, src, dst *node, last guest.Heartbeat) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if r.Converged() {
		if _, err := dst.q.Console().WaitHeartbeat(wctx, last.Seq); err == nil {
			src.kill()
			p.cur = dst
			return nil
		} else {
			r.Status, r.Error = statusFailed, "reported complete, but the destination guest does not run: "+err.Error()+consoleTail(dst.q.Console(), 12)
		}
	}
	dst.kill()
	st, err := qmp.QueryStatus(wctx, src.mon)
	if err != nil {
		return fmt.Errorf("%w: neither QEMU runs it after %s (%s): source: %v", errGuestLost, r.Contender, r.Status, err)
	}
	if !st.Running {
		r.addNote(fmt.Sprintf("source left %s; the bench resumed it", st.Status))
		if err := qmp.Cont(wctx, src.mon); err != nil {
			return fmt.Errorf("%w: the source is %s after %s and cont failed: %v", errGuestLost, st.Status, r.Contender, err)
		}
	}
	if _, err := src.q.Console().WaitHeartbeat(wctx, last.Seq); err != nil {
		return fmt.Errorf("%w: the source does not run after %s: %v", errGuestLost, r.Contender, err)
	}
	return nil
}

// warmHostMemory touches n bytes of transparent-huge-page memory and frees it, so that the
// kernel's free lists hold that much recently used memory when the destination QEMU fills its
// RAM. When the bench machine is itself a VM whose hypervisor takes freed memory back
// (virtio-balloon free page reporting, about 2 s after the free) and the kernel maps no shared
// zero page, the first touch of memory that was reported costs some 3-5 ms per 2 MiB instead of
// 0.1 ms, and QEMU 7.2's destination main thread pays it for every zero page it receives (it
// reads each one): up to 2.5 s inside the downtime, for any contender. BENCH_WARM_MIB turns
// this on.
func warmHostMemory(n int) {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		logf("warm host memory: %v", err)
		return
	}
	_ = syscall.Madvise(b, 14) // MADV_HUGEPAGE, as QEMU advises guest RAM
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	_ = syscall.Munmap(b)
}

// isGuestLost reports whether err ends the case.
func isGuestLost(err error) bool { return errors.Is(err, errGuestLost) }

// consoleTail is the last n lines of a guest's console, for an error: what the guest said
// before it stopped (a kernel panic, a failed check).
func consoleTail(c *guest.Console, n int) string {
	lines := c.Lines()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return ""
	}
	return "; its console ended with: " + strings.Join(lines, " | ")
}
