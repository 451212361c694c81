package driver

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// Whether multifd compression pays depends on the guest's memory: on random data zstd gains
// nothing, on text-like data it cut a migration to 0.27x (FACTS.md). So the source samples its
// guest's RAM and sends the share of pages that compress well (SPEC §4.1 compressibility);
// negotiation picks zstd only when that share is high.

const (
	sampleChunks    = 32
	sampleChunkSize = 64 << 10
	pageSize        = 4096
)

// sampleCompressibility reads evenly spaced chunks of guest RAM with pmemsave (the file is
// written by QEMU on this host) and measures them. Failure is not an error: the hint is then
// "not measured" and negotiation chooses no compression.
func sampleCompressibility(ctx context.Context, ex qmp.Executor, ramBytes uint64) (v2proto.Compressibility, error) {
	// Guest RAM below 4 GiB starts at 0 and, on both pc and q35, is contiguous up to at least
	// 2 GiB or the RAM size; the first MiB holds firmware.
	top := min(ramBytes, 2<<30)
	if top <= 1<<20+sampleChunkSize {
		return v2proto.Compressibility{}, fmt.Errorf("driver: guest RAM too small to sample")
	}
	dir, err := os.MkdirTemp("", "mig2-sample-")
	if err != nil {
		return v2proto.Compressibility{}, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "chunk")
	var pages [][]byte
	span := top - 1<<20 - sampleChunkSize
	for i := uint64(0); i < sampleChunks; i++ {
		addr := 1<<20 + span*i/(sampleChunks-1)
		addr &^= pageSize - 1
		args := map[string]any{"val": addr, "size": sampleChunkSize, "filename": path}
		if err := ex.Execute(ctx, "pmemsave", args, nil); err != nil {
			return v2proto.Compressibility{}, fmt.Errorf("driver: pmemsave: %w", err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return v2proto.Compressibility{}, err
		}
		for off := 0; off+pageSize <= len(b); off += pageSize {
			pages = append(pages, b[off:off+pageSize])
		}
	}
	return v2proto.Compressibility{Measured: true, Percent: compressiblePercent(pages)}, nil
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
