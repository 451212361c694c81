package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Case is one guest workload: the kind of memory content and how fast the guest rewrites it.
type Case struct {
	Fill  string `json:"fill"`        // "rand" (incompressible) or "text" (compressible)
	Dirty int    `json:"dirty_mibps"` // MiB/s rewritten while the guest is migrated
}

func (c Case) String() string { return c.Fill + ":" + strconv.Itoa(c.Dirty) }

// defaultCases are the six: two fills times three dirty rates.
var defaultCases = []Case{
	{"rand", 0}, {"rand", 50}, {"rand", 200},
	{"text", 0}, {"text", 50}, {"text", 200},
}

// Sweep levels: full is the 16 settings per security level.
const (
	sweepFull    = "full"    // channels 1,2,4,8 × none/zstd × auto-converge off/on
	sweepReduced = "reduced" // channels 2,8 × none/zstd, auto-converge off
	sweepMinimal = "minimal" // 4 channels, no compression: development only
)

// Config is what one benchmark run does.
type Config struct {
	Reps     int           `json:"reps"`
	Cases    []Case        `json:"cases"`
	Sweep    string        `json:"sweep"`
	Libvirt  bool          `json:"libvirt"`
	Cap      time.Duration `json:"convergence_cap_ns"`
	MemMiB   int           `json:"mem_mib"`
	TouchMiB int           `json:"touch_mib"`
	Streams  int           `json:"tcp_streams"`         // N of the loopback ceiling
	Idle     time.Duration `json:"destination_idle_ns"` // how long each fresh destination waits idle
	WarmMiB  int           `json:"warm_mib,omitempty"`  // host memory touched and freed before each run, outside the clock (0: none)
	Only     []string      `json:"only,omitempty"`      // contenders of the repetitions (none: all)
}

func defaultConfig() Config {
	return Config{
		Reps: 3, Cases: slices.Clone(defaultCases), Sweep: sweepFull, Libvirt: true,
		Cap: 40 * time.Second, MemMiB: 2048, TouchMiB: 1024, Streams: 4, Idle: time.Second,
		WarmMiB: 3072,
	}
}

// Full reports whether c is the complete run (what `make bench` does by default).
func (c Config) Full() bool {
	d := defaultConfig()
	return c.Reps >= d.Reps && slices.Equal(c.Cases, d.Cases) && c.Sweep == sweepFull && c.Libvirt && len(c.Only) == 0 &&
		c.MemMiB == d.MemMiB && c.TouchMiB == d.TouchMiB
}

// parseCases reads "rand:0,text:50"; "all" or "" is every default case.
func parseCases(s string) ([]Case, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return slices.Clone(defaultCases), nil
	}
	var out []Case
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		fill, rate, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("bench: case %q: want FILL:DIRTY_MIBPS, e.g. rand:50", f)
		}
		if fill != "rand" && fill != "text" {
			return nil, fmt.Errorf("bench: case %q: fill must be rand or text", f)
		}
		n, err := strconv.Atoi(rate)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bench: case %q: dirty rate must be a whole number of MiB/s", f)
		}
		c := Case{Fill: fill, Dirty: n}
		if slices.Contains(out, c) {
			return nil, fmt.Errorf("bench: case %s given twice", c)
		}
		out = append(out, c)
	}
	return out, nil
}

// configFromEnv applies the BENCH_* variables to the defaults.
func configFromEnv(getenv func(string) string) (Config, error) {
	c := defaultConfig()
	var errs []error
	if v := getenv("BENCH_REPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("bench: BENCH_REPS=%q: want a whole number >= 1", v))
		}
		c.Reps = n
	}
	if v := getenv("BENCH_CASES"); v != "" {
		cs, err := parseCases(v)
		errs = append(errs, err)
		c.Cases = cs
	}
	if v := getenv("BENCH_SWEEP"); v != "" {
		if v != sweepFull && v != sweepReduced && v != sweepMinimal {
			errs = append(errs, fmt.Errorf("bench: BENCH_SWEEP=%q: want full, reduced or minimal", v))
		}
		c.Sweep = v
	}
	if v := getenv("BENCH_LIBVIRT"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: BENCH_LIBVIRT=%q: want 0 or 1", v))
		}
		c.Libvirt = b
	}
	for _, v := range []struct {
		name string
		dst  *int
	}{{"BENCH_MEM_MIB", &c.MemMiB}, {"BENCH_TOUCH_MIB", &c.TouchMiB}} {
		if s := getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("bench: %s=%q: want a whole number of MiB", v.name, s))
			}
			*v.dst = n
		}
	}
	if s := getenv("BENCH_WARM_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("bench: BENCH_WARM_MIB=%q: want a whole number of MiB (0: off)", s))
		}
		c.WarmMiB = n
	}
	if v := getenv("BENCH_CONTENDERS"); v != "" {
		for _, id := range strings.Split(v, ",") {
			if _, ok := contenderByID(strings.TrimSpace(id)); !ok {
				errs = append(errs, fmt.Errorf("bench: BENCH_CONTENDERS: unknown contender %q", id))
			}
			c.Only = append(c.Only, strings.TrimSpace(id))
		}
	}
	if v := getenv("BENCH_CAP"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("bench: BENCH_CAP=%q: want a duration such as 40s", v))
		}
		c.Cap = d
	}
	return c, errors.Join(errs...)
}
