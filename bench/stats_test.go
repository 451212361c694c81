package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestMinMedian(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		in       []float64
		min, med float64
	}{
		{[]float64{3}, 3, 3},
		{[]float64{3, 1, 2}, 1, 2},
		{[]float64{4, 1, 3, 2}, 1, 2.5},
		{[]float64{2, inf, 1}, 1, 2},
		{[]float64{2, inf, inf}, 2, inf},
		{[]float64{1, inf}, 1, inf},
		{[]float64{inf, inf, inf}, inf, inf},
	} {
		if got := minOf(tc.in); got != tc.min {
			t.Errorf("minOf(%v) = %v, want %v", tc.in, got, tc.min)
		}
		if got := median(tc.in); got != tc.med {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.med)
		}
	}
	if !math.IsNaN(median(nil)) || !math.IsInf(minOf(nil), 1) {
		t.Errorf("empty: median %v minOf %v, want NaN and +Inf", median(nil), minOf(nil))
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Error("median sorted its argument")
	}
}

func TestRatio(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	for _, tc := range []struct{ a, b, want float64 }{
		{2, 1, 2}, {1, 4, 0.25}, {inf, 2, inf}, {2, inf, 0},
	} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	for _, tc := range [][2]float64{{inf, inf}, {nan, 1}, {1, nan}, {1, 0}} {
		if got := ratio(tc[0], tc[1]); !math.IsNaN(got) {
			t.Errorf("ratio(%v, %v) = %v, want NaN", tc[0], tc[1], got)
		}
	}
}

// run is a converged run of total seconds and downtime milliseconds. Its moving time is the
// total less 50 ms: a raw run's configuration, or mig2's pre-flight (of which 5 ms protocol).
func run(c, contender string, total float64, downMs int) Run {
	return runPre(c, contender, total, downMs, 50*time.Millisecond)
}

func runPre(c, contender string, total float64, downMs int, pre time.Duration) Run {
	d := time.Duration(total * float64(time.Second))
	r := Run{Case: c, Contender: contender, Status: statusCompleted, Total: d, Migration: d - time.Second,
		Downtime: time.Duration(downMs) * time.Millisecond, Transferred: 1 << 30, Throughput: 1 << 29}
	switch contender {
	case cMig2TLS, cMig2Insecure, cMig2V1:
		r.Phases = map[string]int64{"mig2_total_ns": int64(d)}
		r.Preflight = map[string]int64{"total_ns": int64(pre), "protocol_ns": int64(5 * time.Millisecond)}
	case cVirsh, cVirshPar8:
	default:
		r.Phases = map[string]int64{"configure_ns": int64(pre)}
	}
	return r
}

func notConverged(c, contender string) Run {
	return Run{Case: c, Contender: contender, Status: statusNotConverged, Total: 40 * time.Second}
}

func TestStatOf(t *testing.T) {
	c := Case{"rand", 50}
	ct, _ := contenderByID(cQEMUDefaults)
	ceil := Ceilings{TCP1: 1 << 30, TCPN: 1 << 31, Memcpy: 1 << 32}
	s := statOf(c, ct, []Run{run("rand:50", cQEMUDefaults, 3, 100), notConverged("rand:50", cQEMUDefaults), run("rand:50", cQEMUDefaults, 2, 300)}, ceil)
	if s.Runs != 3 || s.Converged != 2 || s.Failed != 0 {
		t.Fatalf("counts: %+v", s)
	}
	if s.MinTotal != 2 || s.MedTotal != 3 {
		t.Errorf("time: min %v median %v, want 2 and 3 (the unconverged run counts as +Inf)", s.MinTotal, s.MedTotal)
	}
	if s.MinDown != 0.1 || s.MedDown != 0.2 {
		t.Errorf("downtime: min %v median %v, want 0.1 and 0.2 (converged runs only)", s.MinDown, s.MedDown)
	}
	if s.ShareTCP1 != 0.5 || s.ShareTCPN != 0.25 || s.ShareMemcpy != 0.125 {
		t.Errorf("shares: %v %v %v", s.ShareTCP1, s.ShareTCPN, s.ShareMemcpy)
	}
	// A converged run without QEMU's figures counts for time only.
	blind := statOf(c, ct, []Run{{Status: statusCompleted, Total: 5 * time.Second, Transferred: 1 << 30}}, ceil)
	if blind.MedTotal != 5 || !math.IsNaN(float64(blind.MedDown)) || !math.IsNaN(float64(blind.MedThroughput)) || blind.MedBytes != 1<<30 {
		t.Errorf("run without figures: %+v", blind)
	}
	none := statOf(c, ct, []Run{notConverged("rand:50", cQEMUDefaults), {Status: statusFailed}}, ceil)
	if !math.IsInf(float64(none.MedTotal), 1) || !math.IsInf(float64(none.MinTotal), 1) || !math.IsNaN(float64(none.MedDown)) || none.Failed != 1 {
		t.Errorf("never converged: %+v", none)
	}
}

func TestSummarizeRatios(t *testing.T) {
	cr := CaseResult{Case: Case{"text", 0}, Runs: []Run{
		run("text:0", cMig2TLS, 2, 100), run("text:0", cMig2Insecure, 1, 50),
		run("text:0", cTunedTLS, 3, 200), run("text:0", cTunedPlain, 1.5, 50),
		notConverged("text:0", cQEMUDefaults),
	}}
	stats := summarize([]CaseResult{cr}, Ceilings{})
	want := map[string]float64{cMig2TLS: 1, cMig2Insecure: 1, cTunedTLS: 1.5, cTunedPlain: 1.5, cQEMUDefaults: math.Inf(1)}
	if len(stats) != len(want) {
		t.Fatalf("%d stats, want %d", len(stats), len(want))
	}
	for _, s := range stats {
		if float64(s.RatioTotal) != want[s.Contender] {
			t.Errorf("%s: time ratio %v, want %v", s.Contender, s.RatioTotal, want[s.Contender])
		}
	}
	if s := findStat(stats, cTunedTLS); s.RatioDown != 2 {
		t.Errorf("tuned-tls downtime ratio %v, want 2 (against mig2-tls, not mig2-insecure)", s.RatioDown)
	}
	// Table order is the contenders' order, not the runs'.
	if stats[0].Contender != cQEMUDefaults || stats[len(stats)-1].Contender != cMig2Insecure {
		t.Errorf("order: %s ... %s", stats[0].Contender, stats[len(stats)-1].Contender)
	}
}

func TestJudge(t *testing.T) {
	const c = "rand:200"
	for _, tc := range []struct {
		name                 string
		runs                 []Run
		tls, plain, conv, ok bool
		note                 string
	}{
		{"pass", []Run{run(c, cMig2TLS, 2.1, 1), run(c, cTunedTLS, 2, 1), run(c, cMig2Insecure, 1, 1), run(c, cTunedPlain, 1, 1)},
			true, true, true, true, ""},
		{"TLS too slow", []Run{run(c, cMig2TLS, 2.3, 1), run(c, cTunedTLS, 2, 1), run(c, cMig2Insecure, 1, 1), run(c, cTunedPlain, 1, 1)},
			false, true, true, false, "tuned-tls's median total is 1.15x faster"},
		{"mig2 never converged", []Run{notConverged(c, cMig2TLS), run(c, cTunedTLS, 2, 1), run(c, cMig2Insecure, 1, 1), run(c, cTunedPlain, 1, 1)},
			false, true, false, false, "mig2-tls converged in 0 of 1 runs"},
		{"nobody converged", []Run{notConverged(c, cMig2TLS), notConverged(c, cMig2Insecure), notConverged(c, cQEMUDefaults)},
			false, false, true, false, "did not complete"},
		{"no tuned median", []Run{run(c, cMig2TLS, 2, 1), notConverged(c, cTunedTLS), run(c, cMig2Insecure, 1, 1), run(c, cTunedPlain, 1, 1)},
			true, true, true, true, "no converged hand-tuned median"},
		{"a non-tuned contender is faster", []Run{run(c, cMig2TLS, 2, 1), run(c, cTunedTLS, 2, 1), run(c, cMig2Insecure, 2, 1), run(c, cTunedPlain, 2, 1), run(c, cVirshPar8, 1, 1)},
			true, true, true, true, "virsh-parallel8's median total is 2.00x faster than mig2-insecure's"},
		{"pre-flight over budget", []Run{runPre(c, cMig2TLS, 2, 1, 150*time.Millisecond), run(c, cTunedTLS, 2, 1), run(c, cMig2Insecure, 1, 1), run(c, cTunedPlain, 1, 1)},
			true, true, true, false, "pre-flight median 150 ms"},
		{"moving within, total not: the settings pass, the pre-flight counts on its own", []Run{runPre(c, cMig2Insecure, 0.7, 1, 90*time.Millisecond), runPre(c, cTunedPlain, 0.6, 1, 10*time.Millisecond), run(c, cMig2TLS, 2, 1), run(c, cTunedTLS, 2, 1)},
			true, true, true, true, "tuned-plain's median total is 1.17x faster"},
		{"one of three mig2 runs not converged", []Run{run(c, cMig2TLS, 2, 1), notConverged(c, cMig2TLS), run(c, cMig2TLS, 2, 1), run(c, cTunedTLS, 2, 1), run(c, cMig2Insecure, 1, 1), run(c, cTunedPlain, 1, 1)},
			true, true, false, false, "converged in 2 of 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(c, summarize([]CaseResult{{Case: Case{"rand", 200}, Runs: tc.runs}}, Ceilings{}))
			if v.TLSOK != tc.tls || v.PlainOK != tc.plain || v.ConvergedOK != tc.conv || v.OK != tc.ok {
				t.Errorf("verdict %+v, want tls %v plain %v converged %v ok %v", v, tc.tls, tc.plain, tc.conv, tc.ok)
			}
			if notes := strings.Join(v.Notes, "; "); !strings.Contains(notes, tc.note) {
				t.Errorf("notes %q do not mention %q", notes, tc.note)
			}
		})
	}
}
