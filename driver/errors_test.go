package driver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/mig2/mig2/v2proto"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"agent timed out", &ConnectError{What: "reach the mig2 agent at x", Err: context.DeadlineExceeded}, ClassConnect},
		{"agent refused", &ConnectError{What: "reach the mig2 agent at x", Err: errors.New("connection refused")}, ClassConnect},
		{"user cancelled", fmt.Errorf("driver: %w", context.Canceled), ClassCancelled},
		{"refused by negotiation", &v2proto.DeviceMismatchError{}, ClassIncompatible},
		{"stale source", ErrStaleSource, ClassIncompatible},
		{"failed, source running", &MigrationError{Stage: "migrate", SourceRunning: true, Err: errors.New("x")}, ClassFailed},
		{"cancelled, source running", &MigrationError{Stage: "migrate", SourceRunning: true, Err: context.Canceled}, ClassCancelled},
		{"source state unknown", &MigrationError{Stage: "migrate", Err: errors.New("x")}, ClassGuestUnknown},
		{"anything else", errors.New("boom"), ClassInternal},
	}
	for _, tc := range tests {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify = %d, want %d", tc.name, got, tc.want)
		}
	}
}
