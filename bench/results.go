package main

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// Security levels: contenders are compared with mig2 at the same level.
const (
	secTLS   = "tls"
	secPlain = "plain"
)

// Contender IDs, in the order the tables list them.
const (
	cQEMUDefaults = "qemu-defaults"
	cVirsh        = "virsh"
	cVirshPar8    = "virsh-parallel8"
	cTunedTLS     = "tuned-tls"
	cTunedPlain   = "tuned-plain"
	cTunedSafe    = "tuned-plain-safe"
	cMig2TLS      = "mig2-tls"
	cMig2Insecure = "mig2-insecure"
	cMig2V1       = "mig2-v1"
	cSweep        = "sweep" // a sweep run (not a contender of the repetitions)
)

// Contender describes one way of migrating the guest.
type Contender struct {
	ID       string
	Security string
	Libvirt  bool   // runs in the libvirt lab
	Command  string // what it is, for the report
}

var contenders = []Contender{
	{cQEMUDefaults, secPlain, false, "raw QMP: `migrate-incoming` + `migrate`, no capability or parameter changed"},
	{cVirsh, secPlain, true, "`virsh migrate --live DOM qemu+tcp://hostb/system` (libvirt lab)"},
	{cVirshPar8, secPlain, true, "`virsh migrate --live --parallel --parallel-connections 8 ...` (KubeVirt's default; libvirt lab)"},
	{cTunedTLS, secTLS, false, "raw QMP, the fastest TLS setting of this case's sweep"},
	{cTunedPlain, secPlain, false, "raw QMP, the fastest plaintext setting of this case's sweep"},
	{cTunedSafe, secPlain, false, "raw QMP, the tuned-plain setting plus mig2's safety capabilities (return-path, pause-before-switchover: the source waits for the destination to load and run the guest)"},
	{cMig2TLS, secTLS, false, "`mig2 migrate --qmp SRC --tls-dir PKI bench mig2://AGENT`"},
	{cMig2Insecure, secPlain, false, "`mig2 migrate --qmp SRC --insecure bench mig2://AGENT` (agent --insecure)"},
	{cMig2V1, secPlain, false, "`mig2 migrate --protocol v1 --qmp SRC --dest-qmp DST bench tcp:127.0.0.1:PORT`"},
}

func contenderByID(id string) (Contender, bool) {
	for _, c := range contenders {
		if c.ID == id {
			return c, true
		}
	}
	return Contender{}, false
}

// mig2For is the mig2 contender every contender of a security level is compared with.
func mig2For(security string) string {
	if security == secTLS {
		return cMig2TLS
	}
	return cMig2Insecure
}

// Run statuses.
const (
	statusCompleted    = "completed"     // the destination runs the guest
	statusNotConverged = "not converged" // cancelled at the convergence cap
	statusStopped      = "stopped"       // a sweep run cut short: already slower than a better setting
	statusFailed       = "failed"        // the contender reported an error
)

// Setting is one hand-tuned raw-QMP configuration (multifd always on, bandwidth unlimited).
type Setting struct {
	Channels     int    `json:"channels"`
	Compression  string `json:"compression"` // none or zstd
	AutoConverge bool   `json:"auto_converge"`
	TLS          bool   `json:"tls"`
	// Safe adds what mig2 always enables: return-path on both sides, pause-before-switchover
	// and migrate-continue on the source.
	Safe bool `json:"safe,omitempty"`
}

func (s Setting) String() string {
	parts := []string{fmt.Sprintf("multifd %d", s.Channels), s.Compression}
	if s.AutoConverge {
		parts = append(parts, "auto-converge")
	}
	if s.Safe {
		parts = append(parts, "return-path+pause")
	}
	if s.TLS {
		parts = append(parts, "TLS")
	}
	return strings.Join(parts, ", ")
}

// Run is one migration.
type Run struct {
	Case        string           `json:"case"`
	Contender   string           `json:"contender"`
	Rep         int              `json:"rep"` // 1-based; 0 for sweep runs
	Setting     *Setting         `json:"setting,omitempty"`
	Direction   string           `json:"direction"` // e.g. "a->b", "hosta->hostb"
	Started     time.Time        `json:"started"`
	Status      string           `json:"status"`
	Error       string           `json:"error,omitempty"`
	Note        string           `json:"note,omitempty"`
	Total       time.Duration    `json:"total_ns"`     // command start to the destination running
	Migration   time.Duration    `json:"migration_ns"` // QEMU's (or libvirt's) migration time
	Downtime    time.Duration    `json:"downtime_ns"`
	Setup       time.Duration    `json:"setup_ns"`
	Transferred uint64           `json:"transferred"`            // bytes on the wire
	Throughput  float64          `json:"throughput_bps"`         // Transferred / Migration
	Preflight   map[string]int64 `json:"preflight_ns,omitempty"` // mig2's summary
	Phases      map[string]int64 `json:"phases_ns,omitempty"`    // raw QMP: configure, migrate, confirm
	Agreed      json.RawMessage  `json:"agreed,omitempty"`
	ProcCPU     time.Duration    `json:"proc_cpu_ns,omitempty"`       // the mig2 process (user+system)
	ProcMaxRSS  int64            `json:"proc_peak_rss_kib,omitempty"` // the mig2 process's VmHWM, sampled every 100 ms
}

// Moving is the run's time from its first RAM byte to the destination running the guest: the
// total without what came before the migration began — a raw run's configuration commands,
// mig2's pre-flight (mig2's own clock, which also leaves out the process's start and exit).
// ok is false when the run does not tell (libvirt's runs; a summary without pre-flight).
func (r Run) Moving() (d time.Duration, ok bool) {
	if c, ok := r.Phases["configure_ns"]; ok {
		return r.Total - time.Duration(c), true
	}
	t, ok1 := r.Phases["mig2_total_ns"]
	p, ok2 := r.Preflight["total_ns"]
	if ok1 && ok2 && t > p {
		return time.Duration(t - p), true
	}
	return 0, false
}

// Converged reports whether the migration completed and the destination runs the guest.
func (r Run) Converged() bool { return r.Status == statusCompleted }

func (r *Run) addNote(s string) { r.Note = appendNote(r.Note, s) }

// throughputOf is bytes per second over d, 0 when d is not positive.
func throughputOf(bytes uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds()
}

// CaseResult is everything measured for one case.
type CaseResult struct {
	Case  Case     `json:"case"`
	Sweep []Run    `json:"sweep"`
	Best  []string `json:"best,omitempty"` // informational: "tls: multifd 8, none"
	// BestTLS and BestPlain are the settings that joined the repetitions (nil: none converged).
	BestTLS   *Setting      `json:"best_tls,omitempty"`
	BestPlain *Setting      `json:"best_plain,omitempty"`
	Runs      []Run         `json:"runs"`
	Error     string        `json:"error,omitempty"` // the case was aborted
	Note      string        `json:"note,omitempty"`  // e.g. the libvirt contenders stopped
	Boot      time.Duration `json:"boot_ns"`
	Wall      time.Duration `json:"wall_ns"`
}

// Ceilings are the physical limits measured in the same run.
type Ceilings struct {
	TCP1    float64 `json:"loopback_tcp_1_bps"`
	TCPN    float64 `json:"loopback_tcp_n_bps"`
	Streams int     `json:"loopback_tcp_n_streams"`
	Memcpy  float64 `json:"memcpy_bps"`
}

// maxCeilings is each ceiling's higher measurement: the machine can do at least that.
func maxCeilings(ms []Ceilings) Ceilings {
	var c Ceilings
	for _, m := range ms {
		c.TCP1, c.TCPN, c.Memcpy = max(c.TCP1, m.TCP1), max(c.TCPN, m.TCPN), max(c.Memcpy, m.Memcpy)
		c.Streams = m.Streams
	}
	return c
}

// Machine is where the run happened.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	RAMBytes uint64 `json:"ram_bytes"`
	Kernel   string `json:"kernel"`
	OS       string `json:"os"`
	QEMU     string `json:"qemu"`
	Libvirt  string `json:"libvirt"`
	Accel    string `json:"accel"`
	Go       string `json:"go"`
	Mig2     string `json:"mig2"`
	Load     string `json:"loadavg_at_start"`
}

// ProcStats are a long-lived process's resources at the end of the run.
type ProcStats struct {
	Name      string        `json:"name"`
	PID       int           `json:"pid"`
	VmHWMKiB  int64         `json:"vm_hwm_kib"`
	VmRSSKiB  int64         `json:"vm_rss_kib"`
	CPU       time.Duration `json:"cpu_ns"` // utime+stime
	Served    int           `json:"migrations_served"`
	Available bool          `json:"available"`
}

// Results is a whole run: results.json.
type Results struct {
	Started  time.Time     `json:"started"`
	Wall     time.Duration `json:"wall_ns"`
	Config   Config        `json:"config"`
	Machine  Machine       `json:"machine"`
	Ceilings Ceilings      `json:"ceilings"` // the higher of the two measurements below
	// The ceilings measured at the start and at the end of the run.
	CeilingsMeasured []Ceilings   `json:"ceilings_measured"`
	Cases            []CaseResult `json:"cases"`
	Agents           []ProcStats  `json:"agents"`
	Stats            []Stat       `json:"stats"`
	Verdicts         []Verdict    `json:"verdicts"`
	Notes            []string     `json:"notes,omitempty"`
	Aborted          string       `json:"aborted,omitempty"`
}

// Float is a float64 that survives JSON when it is not finite: +Inf is "inf" (never
// converged), NaN is null (no data).
type Float float64

func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte("null"), nil
	case math.IsInf(v, 1):
		return []byte(`"inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-inf"`), nil
	}
	return json.Marshal(v)
}

func (f *Float) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "null":
		*f = Float(math.NaN())
		return nil
	case `"inf"`:
		*f = Float(math.Inf(1))
		return nil
	case `"-inf"`:
		*f = Float(math.Inf(-1))
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("bench: number: %w", err)
	}
	*f = Float(v)
	return nil
}
