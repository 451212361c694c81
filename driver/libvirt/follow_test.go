package libvirt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mig2/mig2/driver"
	"github.com/mig2/mig2/qmp"
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
	// The source QEMU still holds an earlier migration that never finished (QEMU 7.2's multifd
	// cancel deadlock): libvirt passes on QEMU's words, and mig2 says what they mean.
	stuck := errors.New("internal error: unable to execute QEMU command 'migrate': duplicate yank instance")
	got = jobError(context.Background(), nil, stuck)
	if !strings.Contains(got.Error(), "duplicate yank instance") || !strings.Contains(got.Error(), "cannot migrate again until the guest is restarted") {
		t.Errorf("stuck QEMU: %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got = jobError(ctx, stalled, libvirtErr)
	if !errors.Is(got, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled first", got)
	}
}

// TestYankDecisions: a stall yanks a migration QEMU can still cancel; after an abort only a
// cancel stuck in "cancelling" is yanked, one not yet begun is asked about again, and one that
// is over or past cancelling is left alone.
func TestYankDecisions(t *testing.T) {
	cases := []struct {
		st            qmp.MigrationStatus
		stall, cancel yankAction
	}{
		{qmp.MigrationSetup, yankNow, yankLater},
		{qmp.MigrationActive, yankNow, yankLater},
		{qmp.MigrationCancelling, yankNow, yankNow},
		{qmp.MigrationPreSwitchover, yankNothing, yankLater},
		{qmp.MigrationDevice, yankNothing, yankNothing},
		{qmp.MigrationCancelled, yankNothing, yankNothing},
		{qmp.MigrationFailed, yankNothing, yankNothing},
		{qmp.MigrationCompleted, yankNothing, yankNothing},
	}
	for _, c := range cases {
		if got := onStall(c.st); got != c.stall {
			t.Errorf("onStall(%s) = %d, want %d", c.st, got, c.stall)
		}
		if got := onStuckCancel(c.st); got != c.cancel {
			t.Errorf("onStuckCancel(%s) = %d, want %d", c.st, got, c.cancel)
		}
	}
}
