package main

import (
	"math"
	"time"
)

// sweepSettings lists the hand-tuned settings a case's sweep tries, TLS and plaintext
// alternating, most channels first: an early fast run lets later, slower settings be cut short
// (sweepCap). Multifd is always on and bandwidth unlimited.
func sweepSettings(level string) []Setting {
	channels, comps, acs := []int{8, 4, 2, 1}, []string{"none", "zstd"}, []bool{false, true}
	switch level {
	case sweepReduced:
		channels, acs = []int{8, 2}, []bool{false}
	case sweepMinimal:
		channels, comps, acs = []int{4}, []string{"none"}, []bool{false}
	}
	var out []Setting
	for _, ch := range channels {
		for _, comp := range comps {
			for _, ac := range acs {
				for _, tls := range []bool{true, false} {
					out = append(out, Setting{Channels: ch, Compression: comp, AutoConverge: ac, TLS: tls})
				}
			}
		}
	}
	return out
}

// sweepCap is how long a sweep run may take: the convergence cap, or less once a setting of
// the same security level has converged — a run that has taken more than twice the best so far
// (plus 2 s for noise) cannot become the fastest, and is stopped.
func sweepCap(convergenceCap time.Duration, bestSoFar time.Duration) time.Duration {
	if bestSoFar <= 0 {
		return convergenceCap
	}
	return min(convergenceCap, 2*bestSoFar+2*time.Second)
}

// bestSetting is the setting of the fastest converged sweep run at the security level (tls),
// and its time; ok is false when none converged.
func bestSetting(runs []Run, tls bool) (best Setting, total time.Duration, ok bool) {
	bestT := time.Duration(math.MaxInt64)
	for _, r := range runs {
		if r.Setting == nil || r.Setting.TLS != tls || !r.Converged() {
			continue
		}
		if r.Total < bestT {
			best, bestT, ok = *r.Setting, r.Total, true
		}
	}
	if !ok {
		return Setting{}, 0, false
	}
	return best, bestT, true
}
