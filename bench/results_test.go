package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sampleResults is a small run with every kind of value: converged and not, sweep runs,
// mig2's pre-flight and agreed set, a failed case.
func sampleResults() *Results {
	set := Setting{Channels: 8, Compression: "zstd", AutoConverge: true, TLS: true}
	mig2 := run("rand:50", cMig2TLS, 2.5, 40)
	mig2.Preflight = map[string]int64{"total_ns": 300e6, "facts_ns": 20e6, "handshake_ns": 200e6, "apply_source_ns": 10e6}
	mig2.Agreed = json.RawMessage(`{"channels":2,"compression":"none","tls":true}`)
	mig2.ProcCPU, mig2.ProcMaxRSS = 400*time.Millisecond, 30000
	tuned := run("rand:50", cTunedTLS, 2.4, 35)
	tuned.Setting = &set
	failed := Run{Case: "rand:50", Contender: cVirsh, Status: statusFailed, Error: "virsh migrate: exit status 1: error: | pipe", Note: "source left paused; the bench resumed it"}
	res := &Results{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Wall: 95 * time.Second,
		Config:           defaultConfig(),
		Machine:          Machine{CPU: "AMD EPYC", Cores: 2, RAMBytes: 24 << 30, Kernel: "6.1", QEMU: "QEMU 7.2", Accel: "TCG"},
		Ceilings:         Ceilings{TCP1: 3e9, TCPN: 5e9, Streams: 4, Memcpy: 12e9},
		CeilingsMeasured: []Ceilings{{TCP1: 3e9, TCPN: 4e9, Streams: 4, Memcpy: 12e9}, {TCP1: 2e9, TCPN: 5e9, Streams: 4, Memcpy: 11e9}},
		Cases: []CaseResult{
			{Case: Case{"rand", 50}, Sweep: []Run{tuned, {Setting: &Setting{Channels: 1}, Status: statusStopped, Total: 9 * time.Second}},
				BestTLS: &set, Best: []string{"TLS: " + set.String()},
				Runs: []Run{mig2, tuned, failed, notConverged("rand:50", cQEMUDefaults), run("rand:50", cMig2Insecure, 1, 20), run("rand:50", cTunedPlain, 1.05, 20)}},
			{Case: Case{"text", 200}, Error: "bench: guest lost: neither QEMU runs it"},
		},
		Agents: []ProcStats{{Name: "agent-tls-a", PID: 42, VmHWMKiB: 27000, VmRSSKiB: 25000, CPU: time.Second, Served: 3, Available: true}},
	}
	res.Stats = summarize(res.Cases, res.Ceilings)
	res.Verdicts = verdicts(res.Cases, res.Stats)
	return res
}

func TestResultsJSONRoundTrip(t *testing.T) {
	res := sampleResults()
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(&back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) {
		t.Fatalf("results do not round-trip:\n%s\n%s", data, again)
	}
	s := findCaseStat(back.Stats, "rand:50", cQEMUDefaults)
	if s == nil || !math.IsInf(float64(s.MedTotal), 1) || !math.IsNaN(float64(s.MedDown)) {
		t.Errorf("non-finite stats lost in JSON: %+v", s)
	}
	if back.Cases[0].Runs[0].Preflight["handshake_ns"] != 200e6 || back.Cases[0].BestTLS.Compression != "zstd" {
		t.Errorf("run details lost: %+v", back.Cases[0])
	}
}

func TestFloatJSON(t *testing.T) {
	for _, f := range []float64{0, 1.5, -2, math.Inf(1), math.Inf(-1)} {
		b, err := json.Marshal(Float(f))
		if err != nil {
			t.Fatal(err)
		}
		var back Float
		if err := json.Unmarshal(b, &back); err != nil || float64(back) != f {
			t.Errorf("%v -> %s -> %v %v", f, b, back, err)
		}
	}
	var nan Float
	if err := json.Unmarshal([]byte("null"), &nan); err != nil || !math.IsNaN(float64(nan)) {
		t.Errorf("null: %v %v", nan, err)
	}
	if err := json.Unmarshal([]byte(`"x"`), &nan); err == nil {
		t.Error(`"x" decoded as a number`)
	}
}

func TestRerender(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	want := res.Verdicts
	res.Stats, res.Verdicts = nil, nil // rerender computes them
	data, _ := json.Marshal(res)
	path := filepath.Join(dir, "in.json")
	os.WriteFile(path, data, 0o644)
	out := filepath.Join(dir, "out")
	if err := rerender(path, out); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(out, "results.json"))
	var back Results
	if err := json.Unmarshal(data, &back); err != nil || len(back.Verdicts) != len(want) || back.Verdicts[0].OK != want[0].OK || len(back.Stats) == 0 {
		t.Errorf("rerendered: %v %+v", err, back.Verdicts)
	}
	if err := rerender(filepath.Join(dir, "missing.json"), out); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestMaxCeilings(t *testing.T) {
	res := sampleResults()
	if got := maxCeilings(res.CeilingsMeasured); got != res.Ceilings {
		t.Errorf("maxCeilings = %+v, want %+v", got, res.Ceilings)
	}
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	res := sampleResults()
	res.Config.Reps = 1
	if err := writeReport(dir, res); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"README.md", "results.json", "plot-rand.svg", "plot-text.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "plot-rand.svg"))
	wellFormed(t, string(svg))
	md, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	for _, want := range []string{
		"make bench", "1m35s", "Partial run", "## Verdict", "AMD EPYC", "QEMU 7.2", "TCG", "## Physical ceilings",
		"plot-rand.svg", "| rand:50 | `mig2-tls` |", "guest lost", `error: \| pipe`, "multifd 8, zstd, auto-converge, TLS",
		"agent-tls-a", "n/c", "handshake",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	// Every table row has as many cells as its header.
	var header int
	for _, line := range strings.Split(string(md), "\n") {
		if !strings.HasPrefix(line, "|") {
			header = 0
			continue
		}
		n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|")
		if header == 0 {
			header = n
		} else if n != header {
			t.Errorf("table row with %d separators under a header with %d: %s", n, header, line)
		}
	}
}
