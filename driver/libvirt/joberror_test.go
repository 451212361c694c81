package libvirt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mig2/mig2/driver"
)

// TestJobError: the error of an aborted job says first why mig2 aborted it.
func TestJobError(t *testing.T) {
	libvirtErr := errors.New("internal error: client socket is closed")
	stalled := &driver.StallError{Status: "active", Transferred: 5 << 20, For: 10 * time.Second}

	if got := jobError(context.Background(), nil, libvirtErr); got.Error() != libvirtErr.Error() {
		t.Errorf("plain failure: %v", got)
	}
	got := jobError(context.Background(), stalled, libvirtErr)
	if !errors.As(got, new(*driver.StallError)) || !strings.Contains(got.Error(), "no progress for 10s") || !strings.Contains(got.Error(), "client socket is closed") {
		t.Errorf("stalled: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got = jobError(ctx, stalled, libvirtErr)
	if !errors.Is(got, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled first", got)
	}
}
