package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCeilings(t *testing.T) {
	ctx := context.Background()
	for _, streams := range []int{1, 3} {
		bps, err := loopbackTCP(ctx, streams, 200*time.Millisecond)
		if err != nil || bps <= 0 {
			t.Errorf("loopbackTCP(%d): %v %v", streams, bps, err)
		}
	}
	if bps, err := memcpyBandwidth(ctx, 100*time.Millisecond, 4<<20); err != nil || bps <= 0 {
		t.Errorf("memcpyBandwidth: %v %v", bps, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := loopbackTCP(cancelled, 2, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("loopbackTCP after cancel: %v", err)
	}
	if _, err := memcpyBandwidth(cancelled, time.Second, 4<<20); !errors.Is(err, context.Canceled) {
		t.Errorf("memcpyBandwidth after cancel: %v", err)
	}
}
