package driver

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/mig2/mig2/qmp"
)

// warmInterval is how often the agent looks for a new QEMU behind each guest's QMP socket.
const warmInterval = 200 * time.Millisecond

// warmCaches keeps the destination's share of pre-flight small: when a guest's QEMU appears
// (its QMP socket is created anew), the agent reads that QEMU's facts and device tree once,
// ahead of any migration, so that a Hello finds both in the cache (qemucache.go) and only the
// hot-pluggable part of the tree is read then. The same cache serves `mig2 migrate` when that
// guest later leaves this host. Watching costs one stat per guest per interval.
func (a *Agent) warmCaches(ctx context.Context) {
	warmed := map[string]string{} // guest → identity of the socket whose QEMU was read
	failures := map[string]int{}
	tick := time.NewTicker(warmInterval)
	defer tick.Stop()
	for {
		for _, g := range a.cfg.Guests {
			ino := socketIdentity(g.QMP)
			if ino == "" || warmed[g.Name] == ino || a.isBusy(g.Name) {
				continue
			}
			t0 := time.Now()
			if err := a.warm(ctx, g); err != nil {
				// QEMU may not answer yet; a few tries, then leave it to the migration.
				if failures[g.Name]++; failures[g.Name] < 5 {
					continue
				}
				a.log.WithError(err).WithField("domain", g.Name).Debug("driver: could not read the guest's QEMU ahead of a migration")
			} else {
				a.log.WithField("domain", g.Name).Debugf("driver: read the guest's QEMU ahead of a migration in %s", time.Since(t0).Round(time.Millisecond))
			}
			warmed[g.Name], failures[g.Name] = ino, 0
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *Agent) warm(ctx context.Context, g AgentGuest) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	mon, err := qmp.Dial(ctx, g.QMP, qmp.WithConnectTimeout(time.Second), qmp.WithLogger(a.log))
	if err != nil {
		return err
	}
	defer mon.Close()
	_, _, err = probeQEMU(ctx, mon)
	return err
}

func (a *Agent) isBusy(guest string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, busy := a.busy[guest]
	return busy
}

// socketIdentity identifies the socket file at path: its inode and change time, since a QEMU
// restarted on the same path often gets the inode of the socket it replaces. "" when there is
// no socket.
func socketIdentity(path string) string {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return ""
	}
	return fmt.Sprintf("%d:%d.%09d", st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
}
