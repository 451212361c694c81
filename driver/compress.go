package driver

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// Whether multifd compression pays depends on the guest's memory: on random data zstd gains
// nothing, on text-like data it cut a migration to 0.27x (FACTS.md). So the source samples its
// guest's RAM and sends the share of pages that compress well (SPEC §4.1 compressibility);
// negotiation picks zstd only when that share is high.

const (
	sampleChunks    = 32
	sampleChunkSize = 16 << 10 // 128 pages in all: enough for a 30% threshold, and cheap to deflate
	pageSize        = 4096
)

// sampleCompressibility reads evenly spaced chunks of guest RAM and measures them. Failure is
// not an error: the hint is then "not measured" and negotiation chooses no compression.
//
// On this host with the QEMU's pid known, the chunks are read straight from the QEMU process's
// memory (/proc/PID/mem, at the host address HMP's gpa2hva gives for low RAM): one round of QMP
// requests and no file. Otherwise QEMU writes each chunk to a file with pmemsave, requests
// pipelined.
func sampleCompressibility(ctx context.Context, ex qmp.Executor, pid int) (v2proto.Compressibility, error) {
	var (
		mem struct {
			Base int64 `json:"base-memory"`
		}
		lowHVA uint64
		hvaErr error
	)
	err := concurrently(
		func() error {
			if err := ex.Execute(ctx, "query-memory-size-summary", nil, &mem); err != nil {
				return fmt.Errorf("driver: query-memory-size-summary: %w", err)
			}
			return nil
		},
		func() error {
			if pid > 0 {
				lowHVA, hvaErr = gpa2hva(ctx, ex, lowRAM)
			}
			return nil
		},
	)
	if err != nil {
		return v2proto.Compressibility{}, err
	}
	addrs, err := sampleAddrs(uint64(max(mem.Base, 0)))
	if err != nil {
		return v2proto.Compressibility{}, err
	}
	var chunks [][]byte
	if pid > 0 && hvaErr == nil {
		chunks, err = readGuestRAM(fmt.Sprintf("/proc/%d", pid), lowHVA, addrs)
	}
	if pid <= 0 || hvaErr != nil || err != nil {
		chunks, err = pmemsaveChunks(ctx, ex, addrs)
	}
	if err != nil {
		return v2proto.Compressibility{}, err
	}
	var pages [][]byte
	for _, b := range chunks {
		for off := 0; off+pageSize <= len(b); off += pageSize {
			pages = append(pages, b[off:off+pageSize])
		}
	}
	return v2proto.Compressibility{Measured: true, Percent: compressiblePercent(pages)}, nil
}

// lowRAM is where the sampled region starts: guest RAM below 4 GiB starts at 0 and, on both pc
// and q35, is contiguous up to at least 2 GiB or the RAM size; the first MiB holds firmware.
const lowRAM = 1 << 20

// sampleAddrs spreads the chunks over low guest RAM.
func sampleAddrs(ramBytes uint64) ([]uint64, error) {
	top := min(ramBytes, 2<<30)
	if top <= lowRAM+sampleChunkSize {
		return nil, fmt.Errorf("driver: guest RAM too small to sample")
	}
	span := top - lowRAM - sampleChunkSize
	addrs := make([]uint64, sampleChunks)
	for i := range addrs {
		addrs[i] = (lowRAM + span*uint64(i)/(sampleChunks-1)) &^ (pageSize - 1)
	}
	return addrs, nil
}

// readGuestRAM reads the chunks from the QEMU process's memory, given the host address of guest
// address lowRAM. Low RAM is one RAM block, one host mapping: the mapping that holds lowHVA must
// hold every chunk, else nothing is read.
func readGuestRAM(procDir string, lowHVA uint64, addrs []uint64) ([][]byte, error) {
	maps, err := os.ReadFile(filepath.Join(procDir, "maps"))
	if err != nil {
		return nil, fmt.Errorf("driver: read guest RAM: %w", err)
	}
	last := lowHVA + (addrs[len(addrs)-1] - lowRAM) + sampleChunkSize
	if !oneMapping(string(maps), lowHVA, last) {
		return nil, fmt.Errorf("driver: read guest RAM: low RAM is not one mapping at %#x", lowHVA)
	}
	f, err := os.Open(filepath.Join(procDir, "mem"))
	if err != nil {
		return nil, fmt.Errorf("driver: read guest RAM: %w", err)
	}
	defer f.Close()
	out := make([][]byte, len(addrs))
	for i, a := range addrs {
		out[i] = make([]byte, sampleChunkSize)
		if _, err := f.ReadAt(out[i], int64(lowHVA+(a-lowRAM))); err != nil {
			return nil, fmt.Errorf("driver: read guest RAM: %w", err)
		}
	}
	return out, nil
}

// oneMapping reports whether one line of a /proc/PID/maps table covers [from, to).
func oneMapping(maps string, from, to uint64) bool {
	for _, line := range strings.Split(maps, "\n") {
		rng, _, _ := strings.Cut(line, " ")
		lo, hi, ok := strings.Cut(rng, "-")
		if !ok {
			continue
		}
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && l <= from && to <= h {
			return true
		}
	}
	return false
}

// gpa2hva asks QEMU (HMP gpa2hva) where guest physical address gpa lives in its own memory.
// QEMU answers "Host virtual address for 0x100000 (pc.ram) is 0x7f2a1c100000".
func gpa2hva(ctx context.Context, ex qmp.Executor, gpa uint64) (uint64, error) {
	var out string
	cmd := fmt.Sprintf("gpa2hva 0x%x", gpa)
	if err := ex.Execute(ctx, "human-monitor-command", map[string]any{"command-line": cmd}, &out); err != nil {
		return 0, fmt.Errorf("driver: %s: %w", cmd, err)
	}
	return parseGPA2HVA(out)
}

func parseGPA2HVA(out string) (uint64, error) {
	f := strings.Fields(out)
	if len(f) < 2 || f[len(f)-2] != "is" {
		return 0, fmt.Errorf("driver: gpa2hva: unexpected answer %q", strings.TrimSpace(out))
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(f[len(f)-1], "0x"), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("driver: gpa2hva: unexpected answer %q", strings.TrimSpace(out))
	}
	return v, nil
}

// pmemsaveChunks has QEMU write each chunk to a file of its own, requests in flight together.
func pmemsaveChunks(ctx context.Context, ex qmp.Executor, addrs []uint64) ([][]byte, error) {
	dir, err := os.MkdirTemp("", "mig2-sample-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := make([][]byte, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(dir, strconv.Itoa(i))
			args := map[string]any{"val": a, "size": sampleChunkSize, "filename": path}
			if err := ex.Execute(ctx, "pmemsave", args, nil); err != nil {
				errs[i] = fmt.Errorf("driver: pmemsave: %w", err)
				return
			}
			out[i], errs[i] = os.ReadFile(path)
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// compressiblePercent is the share of non-zero pages that deflate to half their size or less.
// Zero pages are left out: QEMU sends them as a flag whatever the compression.
func compressiblePercent(pages [][]byte) uint8 {
	var nonZero, good int
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	zero := make([]byte, pageSize)
	for _, p := range pages {
		if bytes.Equal(p, zero[:len(p)]) {
			continue
		}
		nonZero++
		buf.Reset()
		w.Reset(&buf)
		w.Write(p)
		w.Close()
		if buf.Len()*2 <= len(p) {
			good++
		}
	}
	if nonZero == 0 {
		return 0
	}
	return uint8(good * 100 / nonZero)
}
