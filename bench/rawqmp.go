package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/mig2/mig2/qmp"
)

// unlimitedBandwidth is max-bandwidth "very high": libvirt's and mig2's value.
const unlimitedBandwidth = (math.MaxInt64 / (1 << 20)) * (1 << 20)

// pollEvery is how often a raw-QMP run asks QEMU for the migration's state.
const pollEvery = 50 * time.Millisecond

// rawPlan is the QMP a hand-tuner sends to each side for a setting (nil: QEMU's defaults,
// nothing sent). It is pure, so the commands can be checked without a QEMU.
type rawPlan struct {
	DstCaps, SrcCaps     []qmp.MigrationCapabilityStatus
	DstParams, SrcParams *qmp.MigrationParameters
	DstObjects           []qmp.Object
	SrcObjects           []qmp.Object
}

func planRaw(set *Setting, pki string) rawPlan {
	if set == nil {
		return rawPlan{}
	}
	ch, comp, bw := int64(set.Channels), set.Compression, int64(unlimitedBandwidth)
	p := rawPlan{
		DstCaps: []qmp.MigrationCapabilityStatus{{Capability: qmp.CapMultifd, State: true}},
		SrcCaps: []qmp.MigrationCapabilityStatus{{Capability: qmp.CapMultifd, State: true},
			{Capability: qmp.CapAutoConverge, State: set.AutoConverge}},
		DstParams: &qmp.MigrationParameters{MultifdChannels: &ch, MultifdCompression: &comp},
		SrcParams: &qmp.MigrationParameters{MultifdChannels: &ch, MultifdCompression: &comp, MaxBandwidth: &bw},
	}
	if set.Safe {
		rp := qmp.MigrationCapabilityStatus{Capability: qmp.CapReturnPath, State: true}
		p.DstCaps = append(p.DstCaps, rp)
		p.SrcCaps = append(p.SrcCaps, rp, qmp.MigrationCapabilityStatus{Capability: qmp.CapPauseBeforeSwitchover, State: true},
			qmp.MigrationCapabilityStatus{Capability: qmp.CapEvents, State: true})
	}
	if set.TLS {
		id, host := "bench-tls", "127.0.0.1"
		p.DstObjects = []qmp.Object{qmp.TLSCredsX509{ID: id, Dir: pki, Endpoint: "server"}}
		p.SrcObjects = []qmp.Object{qmp.TLSCredsX509{ID: id, Dir: pki, Endpoint: "client"}}
		p.DstParams.TLSCreds = &id
		p.SrcParams.TLSCreds, p.SrcParams.TLSHostname = &id, &host
	}
	return p
}

func applyRaw(ctx context.Context, mon *qmp.Conn, objs []qmp.Object, caps []qmp.MigrationCapabilityStatus, params *qmp.MigrationParameters) error {
	for _, o := range objs {
		if err := qmp.ObjectAdd(ctx, mon, o); err != nil {
			return err
		}
	}
	if len(caps) > 0 {
		if err := qmp.MigrateSetCapabilities(ctx, mon, caps); err != nil {
			return err
		}
	}
	if params != nil {
		return qmp.MigrateSetParameters(ctx, mon, *params)
	}
	return nil
}

// rawMigrate migrates over QMP as a plain-QEMU user would: configure both sides (or not, with
// set nil), migrate-incoming, migrate, poll query-migrate; at limit, migrate_cancel. Total runs
// from the first command to the destination reporting "running".
func rawMigrate(ctx context.Context, r *Run, src, dst *node, set *Setting, pki string, limit time.Duration) {
	fail := func(what string, err error) { r.Status, r.Error = statusFailed, fmt.Sprintf("%s: %v", what, err) }
	addr, err := freeAddr()
	if err != nil {
		fail("port", err)
		return
	}
	uri := "tcp:" + addr
	plan := planRaw(set, pki)
	start := time.Now()
	if err := applyRaw(ctx, dst.mon, plan.DstObjects, plan.DstCaps, plan.DstParams); err != nil {
		fail("configure the destination", err)
		return
	}
	if err := qmp.MigrateIncoming(ctx, dst.mon, uri); err != nil {
		fail("migrate-incoming", err)
		return
	}
	if err := applyRaw(ctx, src.mon, plan.SrcObjects, plan.SrcCaps, plan.SrcParams); err != nil {
		fail("configure the source", err)
		return
	}
	if err := qmp.Migrate(ctx, src.mon, uri); err != nil {
		fail("migrate", err)
		return
	}
	migrateAt := time.Now()
	r.Phases = map[string]int64{"configure_ns": int64(migrateAt.Sub(start))}
	var info qmp.MigrationInfo
	poll := pollEvery
	if set != nil && set.Safe {
		poll = 10 * time.Millisecond // the guest waits paused at pre-switchover: answer promptly, as mig2 does
	}
	for {
		if err := sleepCtx(ctx, poll); err != nil {
			fail("interrupted", err)
			cancelRaw(context.WithoutCancel(ctx), src.mon)
			return
		}
		if info, err = qmp.QueryMigrate(ctx, src.mon); err != nil {
			fail("query-migrate", err)
			cancelRaw(context.WithoutCancel(ctx), src.mon)
			return
		}
		if info.Status.Terminal() {
			break
		}
		if info.Status == qmp.MigrationPreSwitchover {
			if err := qmp.MigrateContinue(ctx, src.mon, qmp.MigrationPreSwitchover); err != nil {
				fail("migrate-continue", err)
				cancelRaw(context.WithoutCancel(ctx), src.mon)
				return
			}
		}
		if time.Since(start) > limit {
			r.Status, r.Error = statusNotConverged, fmt.Sprintf("still %s after %s%s: migrate_cancel", info.Status, limit.Round(time.Second), progressOf(info))
			fillRaw(r, info)
			cancelRaw(context.WithoutCancel(ctx), src.mon)
			r.Total = time.Since(start)
			return
		}
	}
	fillRaw(r, info)
	completedAt := time.Now()
	r.Total, r.Phases["migrate_ns"] = completedAt.Sub(start), int64(completedAt.Sub(migrateAt))
	if info.Status != qmp.MigrationCompleted {
		r.Status, r.Error = statusFailed, fmt.Sprintf("migration %s: %s", info.Status, info.ErrorDesc)
		return
	}
	// The source says completed; the migration is done when the destination runs the guest.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st, err := qmp.QueryStatus(wctx, dst.mon)
		if err == nil && st.Running {
			break
		}
		if wctx.Err() != nil {
			r.Status, r.Error = statusFailed, fmt.Sprintf("the source completed but the destination is %s: %v", st.Status, err)
			r.Total = time.Since(start)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.Total, r.Status = time.Since(start), statusCompleted
	r.Phases["confirm_ns"] = int64(time.Since(completedAt))
}

// fillRaw copies query-migrate's figures into the run.
func fillRaw(r *Run, info qmp.MigrationInfo) {
	ms := func(p *int64) time.Duration {
		if p == nil {
			return 0
		}
		return time.Duration(*p) * time.Millisecond
	}
	r.Migration, r.Downtime, r.Setup = ms(info.TotalTime), ms(info.Downtime), ms(info.SetupTime)
	if info.RAM != nil {
		r.Transferred = uint64(info.RAM.Transferred)
	}
	r.Throughput = throughputOf(r.Transferred, r.Migration)
}

// progressOf describes how far a migration got.
func progressOf(info qmp.MigrationInfo) string {
	if info.RAM == nil {
		return ""
	}
	return fmt.Sprintf(" (%d MiB sent, %d MiB remaining)", info.RAM.Transferred>>20, info.RAM.Remaining>>20)
}

// cancelRaw cancels the source's migration and waits (bounded) until it has ended; the source
// guest then runs on.
func cancelRaw(ctx context.Context, mon *qmp.Conn) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = qmp.MigrateCancel(ctx, mon)
	for ctx.Err() == nil {
		info, err := qmp.QueryMigrate(ctx, mon)
		if err != nil || info.Status.Terminal() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resetToDefaults gives the source QEMU the migration settings a fresh QEMU has (read from
// fresh, the destination just started): a QEMU that was a destination before may carry the last
// contender's capabilities and parameters, and a cancelled run leaves the source's. It runs
// before the clock starts.
func resetToDefaults(ctx context.Context, src, fresh *qmp.Conn) error {
	caps, err := qmp.QueryMigrateCapabilities(ctx, fresh)
	if err != nil {
		return err
	}
	params, err := qmp.QueryMigrateParameters(ctx, fresh)
	if err != nil {
		return err
	}
	if err := qmp.MigrateSetCapabilities(ctx, src, caps); err != nil {
		return fmt.Errorf("reset capabilities: %w", err)
	}
	reset := qmp.MigrationParameters{
		MultifdChannels: params.MultifdChannels, MultifdCompression: params.MultifdCompression,
		MultifdZstdLevel: params.MultifdZstdLevel, MultifdZlibLevel: params.MultifdZlibLevel,
		MaxBandwidth: params.MaxBandwidth, MaxPostcopyBandwidth: params.MaxPostcopyBandwidth,
		DowntimeLimit: params.DowntimeLimit, TLSCreds: params.TLSCreds, TLSHostname: params.TLSHostname,
		TLSAuthz: params.TLSAuthz,
	}
	if err := qmp.MigrateSetParameters(ctx, src, reset); err != nil {
		return fmt.Errorf("reset parameters: %w", err)
	}
	_ = qmp.ObjectDel(ctx, src, "bench-tls") // a hand-tuned TLS run's credentials, if any
	return nil
}
