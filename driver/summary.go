package driver

import (
	"fmt"
	"os"
	"time"
)

// Adjustment is one agreed value that differs from what the source asked for, with the reason
// (v2proto SPEC §6.8, §6.9).
type Adjustment struct {
	Param  string `json:"param"`
	Asked  string `json:"asked"`
	Agreed string `json:"agreed"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Preflight is the time from the command's start to the first RAM byte, split by what it was
// spent on. Facts, DeviceTree and Sample run at once (Source is their wall time); Handshake is
// Protocol plus Destination.
type Preflight struct {
	Total       time.Duration `json:"total_ns"`        // process start to the source's migrate command
	Source      time.Duration `json:"source_ns"`       // reading the source QEMU for Hello
	Facts       time.Duration `json:"facts_ns"`        // the source QEMU's facts (version, capabilities, schema)
	DeviceTree  time.Duration `json:"device_tree_ns"`  // the source QEMU's device tree
	Sample      time.Duration `json:"sample_ns"`       // sampling guest RAM for compressibility
	Handshake   time.Duration `json:"handshake_ns"`    // Dial through Ready
	Protocol    time.Duration `json:"protocol_ns"`     // the v2 protocol itself: connect, TLS, messages
	Destination time.Duration `json:"destination_ns"`  // the destination's own work (Ready's prepare_us)
	ApplySource time.Duration `json:"apply_source_ns"` // configuring the source QEMU
}

// processStart approximates the command's start: package initialisation runs on the process's
// first thread, after the dynamic loader (for mig2, libvirt's ~60 libraries: tens of
// milliseconds), so the time that thread has spent on a CPU and waiting for one since the
// process began (/proc/thread-self/schedstat) is taken off the clock's reading.
var processStart = time.Now().Add(-sinceThreadStart("/proc/thread-self/schedstat"))

// commandStart is when the command began, for its summary's clock: processStart in a process
// that began moments ago (mig2 migrate), else now (a long-running program using the driver).
func commandStart() time.Time {
	if time.Since(processStart) < 5*time.Second {
		return processStart
	}
	return time.Now()
}

// sinceThreadStart reads a schedstat file (run and wait time of the thread, in ns): 0 when it
// cannot be read or makes no sense (more than 10 s).
func sinceThreadStart(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parseSchedstat(string(b))
}

func parseSchedstat(s string) time.Duration {
	var run, wait int64
	if _, err := fmt.Sscanf(s, "%d %d", &run, &wait); err != nil || run < 0 || wait < 0 {
		return 0
	}
	if d := time.Duration(run + wait); d <= 10*time.Second {
		return d
	}
	return 0
}

// Summary is what a finished migration reports.
type Summary struct {
	MigrationID string       `json:"migration_id"`
	Guest       string       `json:"guest"`
	Protocol    string       `json:"protocol"` // "v2" or "v1"
	Peer        string       `json:"peer"`
	Agreed      Settings     `json:"agreed"`
	Adjustments []Adjustment `json:"adjustments,omitempty"`
	Preflight   Preflight    `json:"preflight"`

	Total       time.Duration `json:"total_ns"`       // command start to the destination's confirmation
	Migration   time.Duration `json:"migration_ns"`   // QEMU's total-time
	Downtime    time.Duration `json:"downtime_ns"`    // QEMU's downtime
	Setup       time.Duration `json:"setup_ns"`       // QEMU's setup-time
	Transferred uint64        `json:"transferred"`    // bytes
	Throughput  float64       `json:"throughput_bps"` // bytes/s over the migration
	DestStatus  string        `json:"dest_status"`    // the destination QEMU's run state at the end
	SourceAfter string        `json:"source_after"`   // "shut down" or "paused"
}
