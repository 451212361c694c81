package driver

import (
	"context"
	"sync"
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
	var wg sync.WaitGroup
	var factsErr, treeErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.facts, factsErr = q.Facts(ctx)
		p.tFacts = time.Since(t0)
	}()
	go func() {
		defer wg.Done()
		p.tree, treeErr = q.DeviceTree(ctx)
		p.tTree = time.Since(t0)
	}()
	p.comp, p.compErr = sampleCompressibility(ctx, q.mon, q.mon.PeerPID())
	p.tSample = time.Since(t0)
	wg.Wait()
	p.tTotal = time.Since(t0)
	if factsErr != nil {
		return nil, factsErr
	}
	if treeErr != nil {
		return nil, treeErr
	}
	return p, nil
}
