package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	text := "Name:\tmig2\nVmPeak:\t  800000 kB\nVmHWM:\t   27464 kB\nVmRSS:\t   21140 kB\nThreads:\t9\n"
	hwm, rss, err := parseStatus(text)
	if err != nil || hwm != 27464 || rss != 21140 {
		t.Fatalf("parseStatus: %d %d %v", hwm, rss, err)
	}
	for _, bad := range []string{"", "Name:\tx\n", "VmHWM:\tlots kB\nVmRSS:\t1 kB\n"} {
		if _, _, err := parseStatus(bad); err == nil {
			t.Errorf("parseStatus(%q): no error", bad)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 250 and stime 50 ticks.
	text := "1234 (mig2 (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0\n"
	d, err := parseStatCPU(text)
	if err != nil || d != 3*time.Second {
		t.Fatalf("parseStatCPU: %v %v, want 3s", d, err)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
	if ps := procStats("self", os.Getpid()); !ps.Available || ps.VmRSSKiB <= 0 || ps.VmHWMKiB < ps.VmRSSKiB {
		t.Errorf("procStats of this process: %+v", ps)
	}
	if ps := procStats("gone", 1<<30); ps.Available {
		t.Errorf("procStats of no process: %+v", ps)
	}
}
