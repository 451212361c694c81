package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// judgeFactor: mig2 passes a case when its median time is within this factor of the best
// hand-tuned median of its security level.
const judgeFactor = 1.1

// The pre-flight budget: at most 100 ms, of which the v2 protocol itself 10 ms.
const (
	preflightBudget = 100 * time.Millisecond
	protocolBudget  = 10 * time.Millisecond
)

// minOf is the smallest value, +Inf for none.
func minOf(xs []float64) float64 {
	m := math.Inf(1)
	for _, x := range xs {
		if x < m {
			m = x
		}
	}
	return m
}

// median is the middle value (the mean of the two middle values for an even count), NaN for
// none. +Inf values sort last, so a median of mostly-unconverged runs is +Inf.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	a, b := s[n/2-1], s[n/2]
	if math.IsInf(a, 1) || math.IsInf(b, 1) {
		return math.Inf(1)
	}
	return (a + b) / 2
}

// ratio is a/b for the tables: NaN when either is missing or both are infinite.
func ratio(a, b float64) float64 {
	switch {
	case math.IsNaN(a) || math.IsNaN(b):
		return math.NaN()
	case math.IsInf(a, 1) && math.IsInf(b, 1):
		return math.NaN()
	case b == 0:
		return math.NaN()
	}
	return a / b
}

// Stat summarises one contender in one case.
type Stat struct {
	Case      string `json:"case"`
	Contender string `json:"contender"`
	Security  string `json:"security"`
	Setting   string `json:"setting,omitempty"` // the hand-tuned setting, for tuned-*
	Runs      int    `json:"runs"`
	Converged int    `json:"converged"`
	Failed    int    `json:"failed"`
	// Times in seconds. A run that did not converge counts as +Inf in MinTotal and MedTotal;
	// downtime, setup, bytes and throughput are over converged runs that report them (NaN: none).
	MinTotal Float `json:"min_total_s"`
	MedTotal Float `json:"median_total_s"`
	// Moving time: first RAM byte to the destination running (Run.Moving), like the totals.
	MinMoving     Float `json:"min_moving_s"`
	MedMoving     Float `json:"median_moving_s"`
	MedPreflight  Float `json:"median_preflight_s"`          // mig2: start to the first RAM byte, on mig2's clock
	MedProtocol   Float `json:"median_preflight_protocol_s"` // mig2: the v2 protocol's own share of it
	MinDown       Float `json:"min_downtime_s"`
	MedDown       Float `json:"median_downtime_s"`
	MedSetup      Float `json:"median_setup_s"`
	MedBytes      Float `json:"median_transferred_bytes"`
	MedThroughput Float `json:"median_throughput_bps"`
	ShareTCP1     Float `json:"share_loopback_tcp_1"`
	ShareTCPN     Float `json:"share_loopback_tcp_n"`
	ShareMemcpy   Float `json:"share_memcpy"`
	// Ratios against mig2 of the same security level: this contender's median / mig2's.
	RatioTotal Float `json:"ratio_total_vs_mig2"`
	RatioDown  Float `json:"ratio_downtime_vs_mig2"`
	RatioMove  Float `json:"ratio_moving_vs_mig2"`
}

func secs(d time.Duration) float64 { return d.Seconds() }

// statOf summarises runs (all of one case and contender).
func statOf(c Case, ct Contender, runs []Run, ceil Ceilings) Stat {
	s := Stat{Case: c.String(), Contender: ct.ID, Security: ct.Security, Runs: len(runs)}
	var total, down, setup, bytes, tput, moving, pre, proto []float64
	for _, r := range runs {
		if r.Setting != nil && s.Setting == "" {
			s.Setting = r.Setting.String()
		}
		if !r.Converged() {
			total = append(total, math.Inf(1))
			if _, ok := r.Moving(); ok || r.Phases == nil {
				moving = append(moving, math.Inf(1))
			}
			if r.Status == statusFailed {
				s.Failed++
			}
			continue
		}
		s.Converged++
		total = append(total, secs(r.Total))
		if m, ok := r.Moving(); ok {
			moving = append(moving, secs(m))
		}
		if p, ok := r.Preflight["total_ns"]; ok {
			pre = append(pre, secs(time.Duration(p)))
		}
		if p, ok := r.Preflight["protocol_ns"]; ok {
			proto = append(proto, secs(time.Duration(p)))
		}
		if r.Migration > 0 { // QEMU's figures are known (a summary may lack them)
			down = append(down, secs(r.Downtime))
			setup = append(setup, secs(r.Setup))
			tput = append(tput, r.Throughput)
		}
		if r.Transferred > 0 {
			bytes = append(bytes, float64(r.Transferred))
		}
	}
	s.MinTotal, s.MedTotal = Float(minOf(total)), Float(median(total))
	if len(total) == 0 {
		s.MinTotal = Float(math.NaN())
	}
	s.MinMoving, s.MedMoving = Float(math.NaN()), Float(math.NaN())
	if slices.ContainsFunc(moving, func(f float64) bool { return !math.IsInf(f, 1) }) {
		s.MinMoving, s.MedMoving = Float(minOf(moving)), Float(median(moving))
	}
	s.MedPreflight, s.MedProtocol = Float(median(pre)), Float(median(proto))
	s.MinDown, s.MedDown = Float(minOf(down)), Float(median(down))
	if len(down) == 0 {
		s.MinDown = Float(math.NaN())
	}
	s.MedSetup, s.MedBytes, s.MedThroughput = Float(median(setup)), Float(median(bytes)), Float(median(tput))
	s.ShareTCP1 = Float(ratio(float64(s.MedThroughput), ceil.TCP1))
	s.ShareTCPN = Float(ratio(float64(s.MedThroughput), ceil.TCPN))
	s.ShareMemcpy = Float(ratio(float64(s.MedThroughput), ceil.Memcpy))
	return s
}

// summarize computes every case's stats, in contender order, with the ratios against mig2.
func summarize(cases []CaseResult, ceil Ceilings) []Stat {
	var out []Stat
	for _, cr := range cases {
		byID := map[string][]Run{}
		for _, r := range cr.Runs {
			byID[r.Contender] = append(byID[r.Contender], r)
		}
		var stats []Stat
		for _, ct := range contenders {
			if runs, ok := byID[ct.ID]; ok {
				stats = append(stats, statOf(cr.Case, ct, runs, ceil))
			}
		}
		for i := range stats {
			ref := findStat(stats, mig2For(stats[i].Security))
			if ref == nil {
				stats[i].RatioTotal, stats[i].RatioDown, stats[i].RatioMove = Float(math.NaN()), Float(math.NaN()), Float(math.NaN())
				continue
			}
			stats[i].RatioTotal = Float(ratio(float64(stats[i].MedTotal), float64(ref.MedTotal)))
			stats[i].RatioDown = Float(ratio(float64(stats[i].MedDown), float64(ref.MedDown)))
			stats[i].RatioMove = Float(ratio(float64(stats[i].MedMoving), float64(ref.MedMoving)))
		}
		out = append(out, stats...)
	}
	return out
}

func findStat(stats []Stat, contender string) *Stat {
	for i := range stats {
		if stats[i].Contender == contender {
			return &stats[i]
		}
	}
	return nil
}

// Verdict is the judgement for one case. The settings are judged on the moving time
// (first RAM byte to the guest running on the destination): mig2's pre-flight has its own
// budget (PreflightOK). The ratios of the totals are reported too.
type Verdict struct {
	Case string `json:"case"`
	// mig2 (TLS) median moving time / the best hand-tuned TLS median; OK within judgeFactor.
	TLSRatio      Float `json:"tls_ratio"`
	TLSTotalRatio Float `json:"tls_total_ratio"` // the same for the totals, pre-flight included
	TLSOK         bool  `json:"tls_ok"`
	// mig2 --insecure against the best hand-tuned plaintext setting, likewise.
	PlainRatio      Float `json:"plain_ratio"`
	PlainTotalRatio Float `json:"plain_total_ratio"`
	PlainOK         bool  `json:"plain_ok"`
	// mig2's median pre-flight at most preflightBudget, its protocol share at most protocolBudget.
	Preflight   Float `json:"preflight_s"`
	Protocol    Float `json:"protocol_s"`
	PreflightOK bool  `json:"preflight_ok"`
	// mig2 converged in every run wherever any contender converged at least once.
	ConvergedOK bool     `json:"converged_ok"`
	OK          bool     `json:"ok"`
	Notes       []string `json:"notes,omitempty"`
}

// judge applies the criteria to one case's stats.
func judge(caseName string, stats []Stat) Verdict {
	v := Verdict{Case: caseName}
	var mine []Stat
	for _, s := range stats {
		if s.Case == caseName {
			mine = append(mine, s)
		}
	}
	level := func(mig2ID, tunedID, label string) (moving, total Float, ok bool) {
		m, t := findStat(mine, mig2ID), findStat(mine, tunedID)
		switch {
		case m == nil:
			v.Notes = append(v.Notes, fmt.Sprintf("%s: no %s runs", label, mig2ID))
			return Float(math.NaN()), Float(math.NaN()), false
		case math.IsInf(float64(m.MedTotal), 1):
			v.Notes = append(v.Notes, fmt.Sprintf("%s: %s's median run did not complete", label, mig2ID))
			return Float(math.Inf(1)), Float(math.Inf(1)), false
		case t == nil || math.IsInf(float64(t.MedTotal), 1) || math.IsNaN(float64(t.MedTotal)):
			v.Notes = append(v.Notes, fmt.Sprintf("%s: no converged hand-tuned median to compare with", label))
			return Float(math.NaN()), Float(math.NaN()), true
		}
		total = Float(ratio(float64(m.MedTotal), float64(t.MedTotal)))
		r := ratio(float64(m.MedMoving), float64(t.MedMoving))
		if math.IsNaN(r) {
			v.Notes = append(v.Notes, fmt.Sprintf("%s: no moving time for %s or %s", label, mig2ID, tunedID))
			return Float(r), total, false
		}
		return Float(r), total, r <= judgeFactor
	}
	v.TLSRatio, v.TLSTotalRatio, v.TLSOK = level(cMig2TLS, cTunedTLS, "TLS")
	v.PlainRatio, v.PlainTotalRatio, v.PlainOK = level(cMig2Insecure, cTunedPlain, "plaintext")

	// The pre-flight budget, over both v2 contenders' runs: the larger median counts.
	v.Preflight, v.Protocol, v.PreflightOK = Float(math.NaN()), Float(math.NaN()), false
	for _, id := range []string{cMig2TLS, cMig2Insecure} {
		m := findStat(mine, id)
		if m == nil || math.IsNaN(float64(m.MedPreflight)) {
			continue
		}
		if math.IsNaN(float64(v.Preflight)) || m.MedPreflight > v.Preflight {
			v.Preflight = m.MedPreflight
		}
		if math.IsNaN(float64(v.Protocol)) || m.MedProtocol > v.Protocol {
			v.Protocol = m.MedProtocol
		}
	}
	v.PreflightOK = float64(v.Preflight) <= preflightBudget.Seconds() && float64(v.Protocol) <= protocolBudget.Seconds()
	if !v.PreflightOK {
		v.Notes = append(v.Notes, fmt.Sprintf("pre-flight median %s (protocol %s): budget %s (protocol %s)",
			fmtMs(v.Preflight), fmtMs(v.Protocol), preflightBudget, protocolBudget))
	}

	anyConverged := false
	for _, s := range mine {
		anyConverged = anyConverged || s.Converged > 0
	}
	v.ConvergedOK = true
	if anyConverged {
		for _, id := range []string{cMig2TLS, cMig2Insecure} {
			m := findStat(mine, id)
			if m == nil || m.Converged < m.Runs {
				v.ConvergedOK = false
				n, runs := 0, 0
				if m != nil {
					n, runs = m.Converged, m.Runs
				}
				v.Notes = append(v.Notes, fmt.Sprintf("%s converged in %d of %d runs while another contender converged", id, n, runs))
			}
		}
	}
	// Honesty beyond the criteria: any plaintext or TLS contender faster than mig2 by more than
	// the factor is named, hand-tuned or not.
	for _, s := range mine {
		ref := findStat(mine, mig2For(s.Security))
		if ref == nil || s.Contender == ref.Contender || s.Converged == 0 || math.IsInf(float64(ref.MedTotal), 1) {
			continue
		}
		if r := ratio(float64(ref.MedTotal), float64(s.MedTotal)); r > judgeFactor {
			v.Notes = append(v.Notes, fmt.Sprintf("%s's median total is %.2fx faster than %s's", s.Contender, r, ref.Contender))
		}
	}
	v.OK = v.TLSOK && v.PlainOK && v.ConvergedOK && v.PreflightOK
	return v
}

// verdicts judges every case that has stats.
func verdicts(cases []CaseResult, stats []Stat) []Verdict {
	var out []Verdict
	for _, cr := range cases {
		out = append(out, judge(cr.Case.String(), stats))
	}
	return out
}
