package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseTestJSON(t *testing.T) {
	f, err := os.Open("testdata/gotest.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests, err := ParseTestJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Test{}
	for _, x := range tests {
		got[x.Name] = x
	}
	if len(tests) != 6 {
		t.Fatalf("%d tests, want 6", len(tests))
	}
	if c := got["TestCancel"]; c.Result != "pass" || len(c.Outcomes) != 1 || c.Outcomes[0] != "SIGINT mid-migration: exit 6, source running | intact" || c.Elapsed.Seconds() != 9.5 {
		t.Errorf("TestCancel = %+v", c)
	}
	if p := got["TestLabFault"]; !p.Parent || p.Result != "fail" {
		t.Errorf("TestLabFault = %+v, want a failed parent", p)
	}
	if h := got["TestFaultQMPHang"]; h.Result != "incomplete" {
		t.Errorf("a test without a verdict: %+v", h)
	}
}

func TestScenario(t *testing.T) {
	for in, want := range map[string]string{
		"TestDestinationKilled":                         "destination killed",
		"TestCancel":                                    "cancel",
		"TestLabFault/network_cut":                      "network cut",
		"TestHostileTLSDowngrade":                       "TLS downgrade",
		"TestFaultQMPHang":                              "QMP hang",
		"TestLabFaultX":                                 "x",
		"TestHostile":                                   "hostile",
		"TestHostile/oversized_frame":                   "oversized frame",
		"TestHostile/SlowLoris/DuringTLSHandshake":      "slow loris: during TLS handshake",
		"TestFaultSourceKilled/SIGKILL_while_RAM_moves": "SIGKILL while RAM moves",
	} {
		if got := Scenario(in); got != want {
			t.Errorf("Scenario(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWrite(t *testing.T) {
	f, err := os.Open("testdata/gotest.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests, err := ParseTestJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	soak, err := ReadSoak("testdata/soak.json")
	if err != nil {
		t.Fatal(err)
	}
	rep := Report{Inputs: []string{"gotest.json", "soak.json"}, Tests: tests, Soak: soak}
	var b strings.Builder
	if err := rep.Write(&b); err != nil {
		t.Fatal(err)
	}
	doc := b.String()
	for _, want := range []string{
		"Do not edit by hand",
		"| network cut | `TestLabFault/network_cut` | PASS | link down: exit 5 | 1m10s |",
		"| cancel | `TestCancel` | PASS | SIGINT mid-migration: exit 6, source running \\| intact | 9.5s |",
		"| source mig2 killed | `TestLabFault/source_mig2_killed` | **FAIL** | (no outcome line logged) | 1m00s |",
		"| QMP hang | `TestFaultQMPHang` | **did not finish** |",
		"| slowloris | `TestHostileSlowloris` | skip |",
		"| plain | 4 of 4 | 0 | 0 | 1m00s | 6.5s / 8.0s |",
		"| plain | agent-a | 2 | 20.0 / 20.0 / 20.0 | flat (+0%) | 3.0 | 8 / 8 / 8 | flat (+0%) |",
		"| plain | agent-b | 2 | 20.0 / 40.0 / 40.0 | **growing** (+100%) | n/a | 8 / 20 / 20 | **growing** (+150%) |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the document lacks %q:\n%s", want, doc)
		}
	}
	// The failed parent is not a row of its own: its failed subtest says it.
	if strings.Contains(doc, "`TestLabFault` |") {
		t.Errorf("the parent TestLabFault has a row:\n%s", doc)
	}
	if pass, fail, other := rep.Counts(); pass != 2 || fail != 1 || other != 2 {
		t.Errorf("counts %d %d %d, want 2 1 2", pass, fail, other)
	}
}

func TestTrend(t *testing.T) {
	warmThenFlat := []float64{27000, 28000, 29000, 30500, 32000, 32100, 32000, 32200, 32100, 32000, 32200, 32100}
	leak := []float64{27000, 28000, 29000, 30000, 31000, 32000, 33000, 34000, 35000, 36000, 37000, 38000}
	for _, c := range []struct {
		name string
		xs   []float64
		want string
	}{
		{"warm-up then flat", warmThenFlat, "flat"},
		{"steady growth", leak, "**growing**"},
		{"flat goroutines", []float64{8, 8, 8, 8, 8, 8, 8, 8}, "flat"},
		{"growing goroutines", []float64{8, 8, 9, 10, 11, 12, 13, 14}, "**growing**"},
		{"few samples, first quarter is the base", []float64{27000, 30000, 31000, 32000}, "**growing**"},
		{"one sample", []float64{27000}, "n/a (one sample)"},
	} {
		got := trend(c.xs, 0.10, 2048)
		if c.name == "flat goroutines" || c.name == "growing goroutines" {
			got = trend(c.xs, 0, 2)
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: trend(%v) = %q, want %q…", c.name, c.xs, got, c.want)
		}
	}
}
