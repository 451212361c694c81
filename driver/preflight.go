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
	compErr         error // the hint is optional: a failed sample only leaves it unmeasured
	tFacts, tTree   time.Duration
	tSample, tTotal time.Duration
}

func (q *QEMU) probeSource(ctx context.Context) (*sourceProbe, error) {
	p := &sourceProbe{}
	t0 := time.Now()
	err := concurrently(
		func() (err error) { p.facts, err = q.Facts(ctx); p.tFacts = time.Since(t0); return err },
		func() (err error) { p.tree, err = q.DeviceTree(ctx); p.tTree = time.Since(t0); return err },
		func() error {
			p.comp, p.compErr = sampleCompressibility(ctx, q.mon, q.mon.PeerPID())
			p.tSample = time.Since(t0)
			return nil // optional: a failed sample leaves the hint unmeasured
		},
	)
	p.tTotal = time.Since(t0)
	if err != nil {
		return nil, err
	}
	return p, nil
}
