package driver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// Progress is one sample of a running migration, from the source QEMU's query-migrate.
type Progress struct {
	Status           qmp.MigrationStatus `json:"status"`
	Elapsed          time.Duration       `json:"elapsed_ns"`
	Transferred      uint64              `json:"transferred"`
	Remaining        uint64              `json:"remaining"`
	Total            uint64              `json:"total"`
	Throughput       float64             `json:"throughput_bps"` // bytes/s
	DirtyRate        uint64              `json:"dirty_rate_bps"` // bytes/s
	ExpectedDowntime time.Duration       `json:"expected_downtime_ns"`
	Passes           int64               `json:"passes"`
}

// progressOf turns a query-migrate reply into a Progress sample.
func progressOf(info qmp.MigrationInfo) Progress {
	p := Progress{Status: info.Status}
	if info.TotalTime != nil {
		p.Elapsed = time.Duration(*info.TotalTime) * time.Millisecond
	}
	if info.ExpectedDowntime != nil {
		p.ExpectedDowntime = time.Duration(*info.ExpectedDowntime) * time.Millisecond
	}
	if r := info.RAM; r != nil {
		p.Transferred, p.Remaining, p.Total = nonNeg(r.Transferred), nonNeg(r.Remaining), nonNeg(r.Total)
		p.Throughput = r.MBps * 1e6 / 8
		pageSize := r.PageSize
		if pageSize <= 0 {
			pageSize = 4096
		}
		p.DirtyRate = nonNeg(r.DirtyPagesRate * pageSize)
		p.Passes = r.DirtySyncCount
	}
	return p
}

func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

// StallDetector notices a migration that stopped moving: some mismatches make QEMU hang
// forever with no error on either side (FACTS.md), and a dead network makes every side wait, so
// every wait has a progress timeout. The libvirt path uses it on libvirt's job statistics.
type StallDetector struct {
	limit    time.Duration
	best     uint64
	progress time.Time
}

// NewStallDetector starts a detector at now; a limit of 0 never reports a stall.
func NewStallDetector(limit time.Duration, now time.Time) *StallDetector {
	return &StallDetector{limit: limit, progress: now}
}

// Observe records a sample and reports whether the migration has made no progress for longer
// than the limit. Any increase of the transferred bytes is progress.
func (s *StallDetector) Observe(now time.Time, transferred uint64) bool {
	if transferred > s.best {
		s.best, s.progress = transferred, now
		return false
	}
	return s.limit > 0 && now.Sub(s.progress) > s.limit
}

// StallError says a migration made no progress within its progress timeout.
type StallError struct {
	Status      qmp.MigrationStatus
	Transferred uint64
	For         time.Duration
	PeerSilent  time.Duration // how long the destination's agent had been silent, when known
}

func (e *StallError) Error() string {
	msg := fmt.Sprintf("driver: migration made no progress for %s (status %s, %s sent): cancelled", e.For.Round(time.Second), e.Status, FormatBytes(e.Transferred))
	// The agent sends Progress every few seconds: silence as long as the stall points at the
	// network (or a frozen destination host) rather than at QEMU.
	// (It sends Progress every 5 s: a silence that is both longer than that and as long as
	// the stall is not the agent's normal cadence.)
	if e.PeerSilent >= e.For && e.PeerSilent > 6*time.Second {
		msg += fmt.Sprintf("; nothing heard from the destination agent for %s either: the network to the destination is probably down", e.PeerSilent.Round(time.Second))
	}
	return msg
}

// QEMUMigrationError is a migration the source QEMU reported failed, with its own words.
type QEMUMigrationError struct {
	Status qmp.MigrationStatus
	Desc   string
}

func (e *QEMUMigrationError) Error() string {
	if e.Desc == "" {
		return fmt.Sprintf("driver: the source QEMU reports the migration %s (it gave no reason)", e.Status)
	}
	return fmt.Sprintf("driver: the source QEMU reports the migration %s: %s", e.Status, e.Desc)
}

// watchConfig is what watchSource needs besides the monitor.
type watchConfig struct {
	Poll            time.Duration                               // query-migrate period
	StallTimeout    time.Duration                               // no progress for this long = stalled
	OnProgress      func(Progress)                              // every sample; must not block
	OnPreSwitchover func(ctx context.Context, p Progress) error // before the source lets go of its guest
	Peer            <-chan error                                // errors from the destination end the watch
}

// watchSource follows the source QEMU's migration to a terminal state. With
// pause-before-switchover on, it calls OnPreSwitchover and then lets QEMU continue. It returns
// the last query-migrate reply; err is non-nil unless the source QEMU reports completed.
// It never cancels the migration itself: the caller decides what to do on error.
func watchSource(ctx context.Context, mon qmp.Monitor, cfg watchConfig) (qmp.MigrationInfo, error) {
	sub := mon.Subscribe(64)
	defer sub.Close()
	tick := time.NewTicker(cfg.Poll)
	defer tick.Stop()
	stall := NewStallDetector(cfg.StallTimeout, time.Now())
	switched := false
	var last qmp.MigrationInfo
	for {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case err := <-cfg.Peer:
			return last, err
		case <-sub.Events():
		case <-tick.C:
		}
		info, err := qmp.QueryMigrate(ctx, mon)
		if err != nil {
			return last, fmt.Errorf("driver: query-migrate on the source: %w", err)
		}
		last = info
		p := progressOf(info)
		if cfg.OnProgress != nil {
			cfg.OnProgress(p)
		}
		switch info.Status {
		case qmp.MigrationCompleted:
			return info, nil
		case qmp.MigrationFailed:
			return info, &QEMUMigrationError{Status: info.Status, Desc: info.ErrorDesc}
		case qmp.MigrationCancelled:
			return info, &QEMUMigrationError{Status: info.Status, Desc: "cancelled"}
		case qmp.MigrationPreSwitchover:
			if switched {
				continue
			}
			switched = true
			if cfg.OnPreSwitchover != nil {
				if err := cfg.OnPreSwitchover(ctx, p); err != nil {
					return info, err
				}
			}
			if err := qmp.MigrateContinue(ctx, mon, qmp.MigrationPreSwitchover); err != nil {
				return info, fmt.Errorf("driver: migrate-continue: %w", err)
			}
			continue
		}
		if stall.Observe(time.Now(), p.Transferred) {
			return info, &StallError{Status: info.Status, Transferred: p.Transferred, For: cfg.StallTimeout}
		}
	}
}

// cancelAndWait cancels the source QEMU's migration and waits until QEMU says it is over.
//
// A cancel that has not finished after YankAfter is stuck: QEMU 7.2's sending threads block on
// a dead network, the migration stays "cancelling" until the connection fails or comes back —
// and with more than two multifd channels the source QEMU then aborts (yank.c assertion; the
// guest is lost; docs/FAULTS.md). Yanking the migration's connections (QMP yank, QEMU 6.0+)
// ends the cancel at once and cleanly, so it is done then. A QEMU without yank is waited for.
func cancelAndWait(ctx context.Context, mon qmp.Executor, limit time.Duration, log logrus.FieldLogger) (qmp.MigrationInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := qmp.MigrateCancel(ctx, mon); err != nil {
		return qmp.MigrationInfo{}, fmt.Errorf("driver: migrate_cancel: %w", err)
	}
	yankAt := time.Now().Add(YankAfter)
	for {
		info, err := qmp.QueryMigrate(ctx, mon)
		if err != nil {
			return info, fmt.Errorf("driver: query-migrate after cancel: %w", err)
		}
		switch info.Status {
		case qmp.MigrationCancelled, qmp.MigrationFailed, qmp.MigrationCompleted, qmp.MigrationNone:
			return info, nil
		}
		if !yankAt.IsZero() && time.Now().After(yankAt) {
			yankAt = time.Time{}
			if err := qmp.YankMigration(ctx, mon); err != nil {
				log.WithError(err).Warnf("driver: the cancel is still %s after %s and QEMU cannot yank the migration's connections: waiting", info.Status, YankAfter)
			} else {
				log.Warnf("driver: the cancel was still %s after %s (the network is probably down): yanked the migration's connections", info.Status, YankAfter)
			}
		}
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("driver: the migration is still %s %s after migrate_cancel: %w", info.Status, limit, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ExplainStuckMigration adds what a refused migration means when QEMU's words (however they
// reached mig2: a QMP error, or libvirt passing them on) show that an earlier migration of this
// QEMU never finished its cleanup: QEMU 7.2's multifd cancel deadlock leaves the migration's
// yank instance registered for good (docs/FAULTS.md). Any other error is returned as it is.
func ExplainStuckMigration(err error) error {
	if err != nil && strings.Contains(err.Error(), "duplicate yank instance") {
		return fmt.Errorf("%w\n  an earlier migration of this QEMU never finished cleaning up (QEMU 7.2's multifd cancel deadlock, docs/FAULTS.md): the guest runs, but this QEMU cannot migrate again until the guest is restarted", err)
	}
	return err
}

// SourceTraits are the traits a source announces in Hello besides its QEMU's (SPEC §4.0.1) for a
// QEMU of that version; yanks says whether this source's mig2 can be relied on to yank a stuck
// cancel (the plain-QEMU path; libvirt's yank goes through QMP pass-through, which libvirtd may
// hold back, so it is best effort and not announced).
//   - cancel-yank: QMP yank came with QEMU 6.0, and cancelAndWait uses it.
//   - multifd-teardown is announced for no QEMU yet: every QEMU measured lost or wedged a
//     source when a migration with more than two multifd channels failed (docs/FAULTS.md).
//     QEMU 7.2 deadlocked its cancel or aborted; QEMU 10.0.2, whose multifd teardown 9.0
//     rewrote, aborted (yank assertion) in 1 of 32 runs with the agent killed mid-migration and
//     8 TLS channels. A QEMU earns it when such fault loops show it safe.
func SourceTraits(qemuVersion string, yanks bool) []string {
	var t []string
	if yanks && qemuAtLeast(qemuVersion, 6, 0) {
		t = append(t, v2proto.TraitCancelYank)
	}
	return t
}

// qemuAtLeast reports whether a HostFacts QEMU version ("7.2.0") is at least major.minor.
func qemuAtLeast(version string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(version, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// YankAfter is how long a cancel may take before its connections are yanked: a cancel on a
// live network takes milliseconds.
const YankAfter = time.Second

// ensureRunning resumes a guest that a failed or cancelled migration left paused. It is the
// last line of "nothing is lost": the source guest keeps running whatever happened.
func ensureRunning(ctx context.Context, ex qmp.Executor) (resumed bool, err error) {
	st, err := qmp.QueryStatus(ctx, ex)
	if err != nil {
		return false, fmt.Errorf("driver: query-status on the source: %w", err)
	}
	if st.Running {
		return false, nil
	}
	switch st.Status {
	case qmp.RunStatePaused, qmp.RunStatePostMigrate, qmp.RunStateFinishMigrate:
		if err := qmp.Cont(ctx, ex); err != nil {
			return false, fmt.Errorf("driver: resume the source guest (was %s): %w", st.Status, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("driver: the source guest is %s, not running", st.Status)
}

// FormatBytes renders a byte count for people: 1023 B, 1.5 GiB.
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
