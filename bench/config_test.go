package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseCases(t *testing.T) {
	got, err := parseCases(" rand:0, text:50 ")
	if err != nil || !slices.Equal(got, []Case{{"rand", 0}, {"text", 50}}) {
		t.Fatalf("parseCases: %v %v", got, err)
	}
	for _, s := range []string{"", "all"} {
		if got, err := parseCases(s); err != nil || !slices.Equal(got, defaultCases) {
			t.Errorf("parseCases(%q) = %v %v, want the six defaults", s, got, err)
		}
	}
	for _, bad := range []string{"rand", "zero:5", "rand:-1", "rand:x", "rand:5,rand:5", "rand:5,"} {
		if _, err := parseCases(bad); err == nil || !strings.HasPrefix(err.Error(), "bench: ") {
			t.Errorf("parseCases(%q): err %v, want a bench: error", bad, err)
		}
	}
	for _, c := range defaultCases {
		if back, err := parseCases(c.String()); err != nil || back[0] != c {
			t.Errorf("%v does not round-trip: %v %v", c, back, err)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := configFromEnv(env(nil))
	if err != nil || !c.Full() || c.Reps != 3 || c.Cap != 40*time.Second || len(c.Cases) != 6 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = configFromEnv(env(map[string]string{"BENCH_REPS": "1", "BENCH_CASES": "text:200", "BENCH_SWEEP": "reduced", "BENCH_LIBVIRT": "0", "BENCH_CAP": "20s"}))
	if err != nil || c.Reps != 1 || len(c.Cases) != 1 || c.Sweep != sweepReduced || c.Libvirt || c.Cap != 20*time.Second || c.Full() {
		t.Fatalf("from env: %+v %v", c, err)
	}
	if _, err := configFromEnv(env(map[string]string{"BENCH_REPS": "0", "BENCH_SWEEP": "huge", "BENCH_LIBVIRT": "maybe", "BENCH_CAP": "soon"})); err == nil ||
		!strings.Contains(err.Error(), "BENCH_REPS") || !strings.Contains(err.Error(), "BENCH_SWEEP") ||
		!strings.Contains(err.Error(), "BENCH_LIBVIRT") || !strings.Contains(err.Error(), "BENCH_CAP") {
		t.Errorf("bad values: %v, want every one named", err)
	}
}

func TestSweepSettings(t *testing.T) {
	for level, n := range map[string]int{sweepFull: 32, sweepReduced: 8, sweepMinimal: 2} {
		s := sweepSettings(level)
		if len(s) != n {
			t.Errorf("%s: %d settings, want %d", level, len(s), n)
		}
		seen := map[Setting]bool{}
		for i, set := range s {
			if seen[set] {
				t.Errorf("%s: %v twice", level, set)
			}
			seen[set] = true
			if set.TLS != (i%2 == 0) {
				t.Errorf("%s: setting %d (%v) breaks the TLS/plaintext alternation", level, i, set)
			}
		}
		if s[0].Channels != slices.MaxFunc(s, func(a, b Setting) int { return a.Channels - b.Channels }).Channels {
			t.Errorf("%s: the sweep does not start with the most channels", level)
		}
	}
}

func TestBestSettingAndCap(t *testing.T) {
	s8, s4, s8p := Setting{Channels: 8, TLS: true}, Setting{Channels: 4, TLS: true}, Setting{Channels: 8}
	runs := []Run{
		{Setting: &s8, Status: statusCompleted, Total: 5 * time.Second},
		{Setting: &s4, Status: statusCompleted, Total: 4 * time.Second},
		{Setting: &s8p, Status: statusNotConverged, Total: 1 * time.Second},
	}
	if best, d, ok := bestSetting(runs, true); !ok || best != s4 || d != 4*time.Second {
		t.Errorf("best TLS: %v %v %v", best, d, ok)
	}
	if _, _, ok := bestSetting(runs, false); ok {
		t.Error("a plaintext best from an unconverged run")
	}
	if got := sweepCap(40*time.Second, 0); got != 40*time.Second {
		t.Errorf("cap with no best: %v", got)
	}
	if got := sweepCap(40*time.Second, 3*time.Second); got != 8*time.Second {
		t.Errorf("cap with best 3s: %v, want 8s", got)
	}
	if got := sweepCap(40*time.Second, 30*time.Second); got != 40*time.Second {
		t.Errorf("cap with best 30s: %v, want the convergence cap", got)
	}
}

func TestRepOrder(t *testing.T) {
	ids := []string{"a", "b", "c"}
	for rep, want := range map[int][]string{1: {"a", "b", "c"}, 2: {"b", "c", "a"}, 3: {"c", "a", "b"}, 4: {"a", "b", "c"}} {
		if got := repOrder(ids, rep); !slices.Equal(got, want) {
			t.Errorf("rep %d: %v, want %v", rep, got, want)
		}
	}
	if !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Error("repOrder changed its argument")
	}
	if got := caseContenders(false); slices.Contains(got, cVirsh) || slices.Contains(got, cVirshPar8) || len(got) != len(contenders)-2 {
		t.Errorf("without libvirt: %v", got)
	}
	if got := caseContenders(true); len(got) != len(contenders) {
		t.Errorf("with libvirt: %v", got)
	}
}
