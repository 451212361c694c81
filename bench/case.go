package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// repOrder is the contenders' order in repetition rep (1-based): the list rotated by one per
// repetition, so no contender always runs first or right after another.
func repOrder(ids []string, rep int) []string {
	if len(ids) == 0 {
		return nil
	}
	k := (rep - 1) % len(ids)
	return append(append([]string{}, ids[k:]...), ids[:k]...)
}

// caseContenders are the contenders of a run.
func caseContenders(libvirt bool) []string {
	var ids []string
	for _, c := range contenders {
		if c.Libvirt && !libvirt {
			continue
		}
		ids = append(ids, c.ID)
	}
	return ids
}

// runCase boots the case's guests, runs the sweep, then the interleaved repetitions. A lost
// guest aborts the case; every other failure is a recorded run.
func (b *bench) runCase(ctx context.Context, c Case) (cr CaseResult) {
	cr.Case = c
	t0 := time.Now()
	defer func() { cr.Wall = time.Since(t0) }()
	lp, err := b.bootLocal(ctx, c)
	if err != nil {
		cr.Error = err.Error()
		return cr
	}
	defer lp.close()
	cr.Boot = time.Since(t0)
	logf("local guest booted in %s", cr.Boot.Round(100*time.Millisecond))
	// The lab guest: if it cannot boot or is lost, the libvirt contenders' runs of this case
	// are recorded as failed and the local contenders go on.
	var lg *labGuest
	var labErr error
	dropLab := func(err error) {
		labErr = err
		cr.Note = appendNote(cr.Note, "libvirt contenders stopped: "+err.Error())
		logf("libvirt contenders stopped for this case: %v", err)
		lg.destroy()
		lg = nil
	}
	if b.lab != nil {
		t1 := time.Now()
		if lg, err = b.lab.boot(ctx, c, b.cfg.MemMiB, b.cfg.TouchMiB); err != nil {
			if ctx.Err() != nil {
				cr.Error = err.Error()
				return cr
			}
			dropLab(err)
		} else if err := lg.suspend(ctx); err != nil {
			dropLab(fmt.Errorf("suspend the lab guest: %w", err))
		} else {
			logf("lab guest booted in %s (suspended while the local contenders run)", time.Since(t1).Round(100*time.Millisecond))
		}
		defer func() { lg.destroy() }()
	}

	// The sweep: every hand-tuned setting once; the fastest of each security level joins the
	// repetitions.
	settings := sweepSettings(b.cfg.Sweep)
	for i, set := range settings {
		_, bestT, _ := bestSetting(cr.Sweep, set.TLS)
		set := set
		limit := sweepCap(b.cfg.Cap, bestT)
		r, err := lp.migrate(ctx, cSweep, &set, limit)
		if r.Status == statusNotConverged && limit < b.cfg.Cap {
			r.Status = statusStopped
			r.addNote(fmt.Sprintf("stopped at 2x the best so far (%s) + 2 s", bestT.Round(time.Millisecond)))
		}
		cr.Sweep = append(cr.Sweep, r)
		logf("sweep %d/%d %-34s %s", i+1, len(settings), set.String(), runLine(r))
		if err != nil {
			cr.Error = err.Error()
			return cr
		}
	}
	for _, tls := range []bool{true, false} {
		if best, t, ok := bestSetting(cr.Sweep, tls); ok {
			if tls {
				cr.BestTLS = &best
			} else {
				cr.BestPlain = &best
			}
			level := "plaintext"
			if tls {
				level = "TLS"
			}
			cr.Best = append(cr.Best, fmt.Sprintf("%s: %s (%s)", level, best, t.Round(time.Millisecond)))
		}
	}
	logf("best hand-tuned: %v", cr.Best)

	// The repetitions, interleaved.
	ids := caseContenders(b.lab != nil)
	if len(b.cfg.Only) > 0 {
		ids = slices.DeleteFunc(ids, func(id string) bool { return !slices.Contains(b.cfg.Only, id) })
	}
	for rep := 1; rep <= b.cfg.Reps; rep++ {
		for _, id := range repOrder(ids, rep) {
			r, err := b.runContender(ctx, lp, lg, labErr, &cr, id, rep)
			r.Rep = rep
			cr.Runs = append(cr.Runs, r)
			logf("rep %d/%d %-16s %s", rep, b.cfg.Reps, id, runLine(r))
			if errors.Is(err, errLabLost) && ctx.Err() == nil {
				dropLab(err)
				continue
			}
			if err != nil {
				cr.Error = err.Error()
				return cr
			}
		}
	}
	return cr
}

// runContender runs one repetition of one contender. An error wrapping errLabLost means the
// lab guest is gone (the local guest runs on); any other error ends the case.
func (b *bench) runContender(ctx context.Context, lp *localPair, lg *labGuest, labErr error, cr *CaseResult, id string, rep int) (Run, error) {
	ct, _ := contenderByID(id)
	if ct.Libvirt {
		if lg == nil {
			err := errNoLab
			if labErr != nil {
				err = labErr
			}
			return Run{Case: cr.Case.String(), Contender: id, Status: statusFailed, Error: err.Error()}, nil
		}
		// Only the guest being migrated runs: the other one is paused.
		if err := lp.pause(ctx); err != nil {
			return Run{Case: cr.Case.String(), Contender: id, Status: statusFailed}, fmt.Errorf("%w: pause the local guest: %v", errGuestLost, err)
		}
		r, lerr := b.labRun(ctx, lg, id)
		if err := lp.resume(ctx); err != nil {
			return r, fmt.Errorf("%w: resume the local guest: %v", errGuestLost, err)
		}
		if lerr != nil {
			return r, fmt.Errorf("%w: %v", errLabLost, lerr)
		}
		return r, nil
	}
	var set *Setting
	switch id {
	case cTunedTLS:
		set = cr.BestTLS
	case cTunedPlain:
		set = cr.BestPlain
	case cTunedSafe:
		if cr.BestPlain != nil {
			s := *cr.BestPlain
			s.Safe = true
			set = &s
		}
	}
	if (id == cTunedTLS || id == cTunedPlain || id == cTunedSafe) && set == nil {
		return Run{Case: cr.Case.String(), Contender: id, Status: statusNotConverged,
			Error: "no hand-tuned setting of this security level converged in the sweep"}, nil
	}
	return lp.migrate(ctx, id, set, b.cfg.Cap)
}

// labRun runs one libvirt contender with the lab guest resumed, and suspends it again.
func (b *bench) labRun(ctx context.Context, lg *labGuest, id string) (Run, error) {
	if err := lg.resume(ctx); err != nil {
		return Run{Contender: id, Status: statusFailed, Error: "resume the lab guest: " + err.Error()}, err
	}
	r, err := lg.migrate(ctx, id, b.cfg.Cap)
	if err != nil {
		return r, err
	}
	if err := lg.suspend(ctx); err != nil {
		return r, fmt.Errorf("suspend the lab guest: %w", err)
	}
	return r, nil
}

func appendNote(note, s string) string {
	if note != "" {
		note += "; "
	}
	return note + s
}

// runLine is one run for the log.
func runLine(r Run) string {
	s := fmt.Sprintf("%-6s %-13s total %7.2fs", r.Direction, r.Status, r.Total.Seconds())
	if r.Converged() {
		s += fmt.Sprintf("  downtime %4dms  setup %4dms  %6.0f MiB  %s", r.Downtime.Milliseconds(), r.Setup.Milliseconds(),
			float64(r.Transferred)/(1<<20), rate(r.Throughput))
	}
	if r.Error != "" {
		s += "  (" + r.Error + ")"
	}
	if r.Note != "" {
		s += "  [" + r.Note + "]"
	}
	return s
}
