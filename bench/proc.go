package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's utime and stime (100 on every Linux
// architecture Go runs on).
const clockTicks = 100

// parseStatus reads VmHWM and VmRSS (KiB) from /proc/PID/status text.
func parseStatus(text string) (hwm, rss int64, err error) {
	found := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmHWM" && key != "VmRSS") {
			continue
		}
		n, perr := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if perr != nil {
			return 0, 0, fmt.Errorf("bench: /proc status %s: %w", key, perr)
		}
		if key == "VmHWM" {
			hwm = n
		} else {
			rss = n
		}
		found++
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("bench: /proc status: no VmHWM and VmRSS")
	}
	return hwm, rss, nil
}

// parseStatCPU reads utime+stime from /proc/PID/stat text.
func parseStatCPU(text string) (time.Duration, error) {
	i := strings.LastIndexByte(text, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc stat: no command name")
	}
	f := strings.Fields(text[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc stat: %d fields", len(f)+2)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// procStats reads a live process's memory and CPU time.
func procStats(name string, pid int) ProcStats {
	ps := ProcStats{Name: name, PID: pid}
	st, err1 := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	sp, err2 := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err1 != nil || err2 != nil {
		return ps
	}
	var err error
	if ps.VmHWMKiB, ps.VmRSSKiB, err = parseStatus(string(st)); err != nil {
		return ps
	}
	if ps.CPU, err = parseStatCPU(string(sp)); err != nil {
		return ps
	}
	ps.Available = true
	return ps
}
