package driver

import (
	"context"
	"time"

	"github.com/mig2/mig2/v2proto"
)

// sourceProbe is what the source reads from its QEMU for Hello, with how long each part took.
// The three readings run at once: they share the QMP connection, which pipelines them.
type sourceProbe struct {
	facts           v2proto.HostFacts
	tree            v2proto.DeviceTree
	comp            v2proto.Compressibility
	compErr         error           // the hint is optional: a failed sample only leaves it unmeasured
	state           *migrationState // the migration settings, nil if not read
	tFacts, tTree   time.Duration
	tSample, tTotal time.Duration
}

// With sample false the guest's memory is not measured (measureMemory).
func (q *QEMU) probeSource(ctx context.Context, sample bool) (*sourceProbe, error) {
	p := &sourceProbe{}
	t0 := time.Now()
	err := concurrently(
		func() (err error) {
			p.facts, p.state, err = readFactsState(ctx, q.mon)
			p.tFacts = time.Since(t0)
			return err
		},
		func() (err error) { p.tree, err = q.DeviceTree(ctx); p.tTree = time.Since(t0); return err },
		func() error {
			if sample {
				p.comp, p.compErr = sampleCompressibility(ctx, q.mon, q.mon.PeerPID())
				p.tSample = time.Since(t0)
			}
			return nil // optional: a failed sample leaves the hint unmeasured
		},
	)
	p.tTotal = time.Since(t0)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// measureMemory reports whether the source's compressibility sample can change the agreed
// compression (SPEC §6.3): only auto compression on a plaintext stream to another host
// depends on it. Elsewhere the sample (a read of guest RAM and a deflate, on the cores the
// handshake needs) is skipped.
func measureMemory(w Wants, tls bool, dest string) bool {
	auto := w.Compression == "" || w.Compression == v2proto.CompressionAuto
	return auto && !tls && !sameHost(dest)
}
