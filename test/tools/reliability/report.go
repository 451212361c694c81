package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// Test is one test or subtest and what it showed.
type Test struct {
	Package  string
	Name     string // TestLabFault/network_cut
	Result   string // pass, fail, skip; "incomplete" when the run ended without a verdict
	Elapsed  time.Duration
	Outcomes []string // the text after "outcome: " in the test's log
	Parent   bool     // it has subtests
}

// outcomePrefix starts the one line per scenario that says what happened (the tests' contract
// with this tool).
const outcomePrefix = "outcome: "

// ParseTestJSON reads `go test -json` output and returns its tests in the order they started.
// Lines that are not JSON (a build failure's text, make's echo) are skipped.
func ParseTestJSON(r io.Reader) ([]*Test, error) {
	byKey := map[string]*Test{}
	var order []*Test
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Test == "" {
			continue
		}
		key := ev.Package + "\x00" + ev.Test
		t := byKey[key]
		if t == nil {
			t = &Test{Package: ev.Package, Name: ev.Test, Result: "incomplete"}
			byKey[key] = t
			order = append(order, t)
			if i := strings.LastIndexByte(ev.Test, '/'); i > 0 {
				if p := byKey[ev.Package+"\x00"+ev.Test[:i]]; p != nil {
					p.Parent = true
				}
			}
		}
		switch ev.Action {
		case "pass", "fail", "skip":
			t.Result = ev.Action
			t.Elapsed = time.Duration(ev.Elapsed * float64(time.Second))
		case "output":
			if i := strings.Index(ev.Output, outcomePrefix); i >= 0 {
				t.Outcomes = append(t.Outcomes, strings.TrimSpace(ev.Output[i+len(outcomePrefix):]))
			}
		}
	}
	return order, sc.Err()
}

// SoakResults is test/soak's results file (the fields this tool reads).
type SoakResults struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Host     string    `json:"host"`
	Runs     []struct {
		Name              string  `json:"name"`
		Requested         int     `json:"requested"`
		Migrations        int     `json:"migrations"`
		MigrationFailures int     `json:"migration_failures"`
		IntegrityFailures int     `json:"integrity_failures"`
		Seconds           float64 `json:"seconds"`
		Samples           []struct {
			N          int     `json:"n"`
			Exit       int     `json:"exit"`
			Intact     bool    `json:"intact"`
			Seconds    float64 `json:"seconds"`
			Agent      string  `json:"agent"`
			RSSKiB     int64   `json:"rss_kib"`
			GoHeapKiB  int64   `json:"go_heap_kib"`
			Goroutines int     `json:"goroutines"`
		} `json:"samples"`
	} `json:"runs"`
}

// ReadSoak reads the soak's results file.
func ReadSoak(path string) (*SoakResults, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s SoakResults
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// Report is everything the document shows.
type Report struct {
	Inputs      []string
	Tests       []*Test
	Soak        *SoakResults
	SoakMissing string // the soak file asked for but absent
}

// Rows are the tests the table shows: every test without subtests, and a parent only when it
// logged an outcome itself or failed (or never finished) without a subtest saying why.
func (r *Report) Rows() []*Test {
	var rows []*Test
	for _, t := range r.Tests {
		if !t.Parent || len(t.Outcomes) > 0 {
			rows = append(rows, t)
			continue
		}
		if t.Result == "pass" || t.Result == "skip" {
			continue
		}
		childFailed := false
		for _, c := range r.Tests {
			if c.Package == t.Package && strings.HasPrefix(c.Name, t.Name+"/") && c.Result != "pass" && c.Result != "skip" {
				childFailed = true
			}
		}
		if !childFailed {
			rows = append(rows, t)
		}
	}
	return rows
}

// Counts are the rows that passed, failed, and were skipped or did not finish.
func (r *Report) Counts() (pass, fail, other int) {
	for _, t := range r.Rows() {
		switch t.Result {
		case "pass":
			pass++
		case "fail":
			fail++
		default:
			other++
		}
	}
	return
}

// Scenario is a test's name as words: its subtests' names ("TestHostile/SlowLoris/DuringHello"
// → "slow loris: during hello"), else the test's name without "Test" and its family's prefix
// ("TestFaultNetworkCut" → "network cut", "TestDestinationKilled" → "destination killed").
func Scenario(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) > 1 {
		for i, p := range parts[1:] {
			parts[i+1] = words(p)
		}
		return strings.Join(parts[1:], ": ")
	}
	name = strings.TrimPrefix(name, "Test")
	for _, f := range families {
		if rest := strings.TrimPrefix(name, strings.TrimPrefix(f.prefix, "Test")); f.prefix != "" && rest != name && rest != "" {
			name = rest
			break
		}
	}
	return words(name)
}

// words splits a Go name at its capitals and underscores, lower-casing all but acronyms.
func words(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, c := range rs {
		if i > 0 && unicode.IsUpper(c) && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	ws := strings.Fields(strings.ReplaceAll(b.String(), "_", " "))
	for i, w := range ws {
		if len([]rune(w)) > 1 && strings.ToUpper(w) == w { // keep acronyms: TLS, QMP, SIGKILL
			continue
		}
		ws[i] = strings.ToLower(w)
	}
	return strings.Join(ws, " ")
}

func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

func duration(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0fs", d.Seconds())
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}

var resultMark = map[string]string{"pass": "PASS", "fail": "**FAIL**", "skip": "skip", "incomplete": "**did not finish**"}

// Write renders the document.
func (r *Report) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p("<!-- Generated by test/tools/reliability (`make reliability`) from test results. Do not edit by hand. -->\n\n")
	p("# Reliability\n\n")
	p("What mig2's fault, hostile-peer and soak tests showed on their last run. Every row is a test; the\n")
	p("outcome is the test's own `outcome: ` log line, what it observed and asserted. Regenerate with\n")
	p("`make reliability` (the tests, then this document); the soak figures come from `make soak`.\n\n")
	pass, failed, other := r.Counts()
	p("Inputs: %s. Tests: %d passed, %d failed, %d skipped or not finished.\n\n", strings.Join(quoted(r.Inputs), ", "), pass, failed, other)
	r.writeTests(p)
	r.writeSoak(p)
	return bw.Flush()
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = "`" + s + "`"
	}
	return out
}

// families group the rows by the test's top-level name, in this order; the last takes the rest.
var families = []struct{ prefix, title string }{
	{"TestFault", "Faults with plain QEMU (TestFault*)"},
	{"TestLabFault", "Faults in the libvirt lab (TestLabFault*)"},
	{"TestHostile", "Hostile peers (TestHostile*)"},
	{"", "Cancel and destination failure (TestCancel, TestDestinationKilled, others)"},
}

// family is the index in families of a test's group (the longest matching prefix).
func family(name string) int {
	top, _, _ := strings.Cut(name, "/")
	best, bestLen := len(families)-1, -1
	for i, f := range families {
		if f.prefix != "" && strings.HasPrefix(top, f.prefix) && len(f.prefix) > bestLen {
			best, bestLen = i, len(f.prefix)
		}
	}
	return best
}

func (r *Report) writeTests(p func(string, ...any)) {
	rows := r.Rows()
	if len(rows) == 0 {
		p("No test results in the inputs.\n\n")
		return
	}
	groups := make([][]*Test, len(families))
	for _, t := range rows {
		f := family(t.Name)
		groups[f] = append(groups[f], t)
	}
	for i, group := range groups {
		if len(group) == 0 {
			continue
		}
		p("## %s\n\n", families[i].title)
		p("| scenario | test | result | outcome | duration |\n|---|---|---|---|---|\n")
		for _, t := range group {
			outcome := strings.Join(t.Outcomes, "; ")
			if outcome == "" {
				outcome = "(no outcome line logged)"
			}
			took := duration(t.Elapsed)
			if t.Result == "incomplete" {
				took = "—"
			}
			p("| %s | `%s` | %s | %s | %s |\n", cell(Scenario(t.Name)), t.Name, resultMark[t.Result], cell(outcome), took)
		}
		p("\n")
	}
}

func (r *Report) writeSoak(p func(string, ...any)) {
	p("## Soak\n\n")
	if r.Soak == nil {
		if r.SoakMissing != "" {
			p("No soak results (`%s` is missing): run `make soak` first.\n", r.SoakMissing)
		} else {
			p("No soak results were given.\n")
		}
		return
	}
	s := r.Soak
	p("Migrations back and forth of the dirtying test guest, its memory verified through its console after\n")
	p("every one; after each, the receiving agent's resident memory (VmRSS from /proc), Go heap in use and\n")
	p("goroutine count (its SIGUSR1 stats line). Run %s to %s on `%s`.\n\n", s.Started.Format(time.RFC3339), s.Finished.Format(time.RFC3339), s.Host)
	p("| run | migrations | failed migrations | integrity failures | total time | median / max per migration |\n|---|---|---|---|---|---|\n")
	for _, run := range s.Runs {
		var secs []float64
		for _, x := range run.Samples {
			secs = append(secs, x.Seconds)
		}
		med, mx := median(secs), maxOf(secs)
		p("| %s | %d of %d | %d | %d | %s | %.1fs / %.1fs |\n", run.Name, run.Migrations, run.Requested, run.MigrationFailures,
			run.IntegrityFailures, duration(time.Duration(run.Seconds*float64(time.Second))), med, mx)
	}
	p("\n| run | agent | samples | RSS first / last / max (MiB) | RSS trend | Go heap max (MiB) | goroutines first / last / max | goroutine trend |\n|---|---|---|---|---|---|---|---|\n")
	for _, run := range s.Runs {
		byAgent := map[string][]int{}
		var names []string
		for i, x := range run.Samples {
			if byAgent[x.Agent] == nil {
				names = append(names, x.Agent)
			}
			byAgent[x.Agent] = append(byAgent[x.Agent], i)
		}
		sort.Strings(names)
		for _, name := range names {
			var rss, heap, gor []float64
			for _, i := range byAgent[name] {
				rss = append(rss, float64(run.Samples[i].RSSKiB))
				heap = append(heap, float64(run.Samples[i].GoHeapKiB))
				gor = append(gor, float64(run.Samples[i].Goroutines))
			}
			heapMax := "n/a" // results from before the stats line carried it
			if maxOf(heap) > 0 {
				heapMax = fmt.Sprintf("%.1f", maxOf(heap)/1024)
			}
			p("| %s | %s | %d | %.1f / %.1f / %.1f | %s | %s | %.0f / %.0f / %.0f | %s |\n", run.Name, name, len(rss),
				rss[0]/1024, rss[len(rss)-1]/1024, maxOf(rss)/1024, trend(rss, 0.10, 2048), heapMax,
				gor[0], gor[len(gor)-1], maxOf(gor), trend(gor, 0, 2))
		}
	}
	p("\nTrend: the mean of the last quarter of samples against the second quarter's (the first quarter is the\n")
	p("agent's warm-up: its Go heap and libvirt's caches fill during its first migrations); \"flat\" when it\n")
	p("grew by at most 10%% or 2 MiB (RSS) or 2 goroutines. With fewer than 8 samples there is no warm-up to\n")
	p("leave out: the first quarter is the base, and the verdict is only indicative.\n")
}

// trend compares the last quarter's mean with the second quarter's, after the warm-up (with
// fewer than 8 samples, with the first quarter's).
func trend(xs []float64, frac, abs float64) string {
	if len(xs) < 2 {
		return "n/a (one sample)"
	}
	q := max(len(xs)/4, 1)
	base := xs[:q]
	if len(xs) >= 8 {
		base = xs[q : 2*q]
	}
	early, late := mean(base), mean(xs[len(xs)-q:])
	growth := late - early
	pct := ""
	if early > 0 {
		pct = fmt.Sprintf(" (%+.0f%%)", 100*growth/early)
	}
	if growth <= math.Max(frac*early, abs) {
		return "flat" + pct
	}
	return "**growing**" + pct
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}
