package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

type fillMode int

const (
	fillRand fillMode = iota
	fillText
)

func (m fillMode) String() string {
	if m == fillText {
		return "text"
	}
	return "rand"
}

// config is what the kernel command line asks for.
type config struct {
	memMiB    int
	rateMiBps int
	fill      fillMode
	heartbeat time.Duration
	corrupt   time.Duration // 0 = never
	verify    int           // auto verify every N heartbeats, 0 = off
}

func defaultConfig() config {
	return config{memMiB: 1024, heartbeat: time.Second}
}

// parseCmdline reads the qb_* knobs from a kernel command line. Unknown
// words are ignored; a malformed qb_* value is an error.
func parseCmdline(cmdline string) (config, error) {
	c := defaultConfig()
	for _, w := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(w, "=")
		if !ok || !strings.HasPrefix(k, "qb_") {
			continue
		}
		num := func(min int) (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("initprog: %s=%q: %w", k, v, err)
			}
			if n < min {
				return 0, fmt.Errorf("initprog: %s=%d below %d", k, n, min)
			}
			return n, nil
		}
		var err error
		var n int
		switch k {
		case "qb_mem":
			c.memMiB, err = num(0)
		case "qb_rate":
			c.rateMiBps, err = num(0)
		case "qb_hb":
			n, err = num(1)
			c.heartbeat = time.Duration(n) * time.Millisecond
		case "qb_corrupt":
			n, err = num(0)
			c.corrupt = time.Duration(n) * time.Second
		case "qb_verify":
			c.verify, err = num(0)
		case "qb_fill":
			switch v {
			case "rand":
				c.fill = fillRand
			case "text":
				c.fill = fillText
			default:
				err = fmt.Errorf("initprog: qb_fill=%q: want rand or text", v)
			}
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}
