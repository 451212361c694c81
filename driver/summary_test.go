package driver

import (
	"testing"
	"time"

	"github.com/mig2/mig2/qmp"
)

func TestParseSchedstat(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7335276 727922 12\n":  8063198,
		"":                     0,
		"x y z":                0,
		"-5 3 1":               0,
		"99999999999 0 1":      0, // over 10 s: not believed
		"1000000 2000000 3\n ": 3 * time.Millisecond,
	} {
		if got := parseSchedstat(in); got != want {
			t.Errorf("parseSchedstat(%q) = %v, want %v", in, got, want)
		}
	}
	if d := sinceThreadStart("/proc/thread-self/schedstat"); d <= 0 {
		t.Errorf("this thread's schedstat: %v", d)
	}
}

func TestFiguresPending(t *testing.T) {
	ms := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		info qmp.MigrationInfo
		want bool
	}{
		{qmp.MigrationInfo{Status: qmp.MigrationCompleted}, true},
		{qmp.MigrationInfo{Status: qmp.MigrationCompleted, TotalTime: ms(0)}, true},
		{qmp.MigrationInfo{Status: qmp.MigrationCompleted, TotalTime: ms(812)}, false},
		{qmp.MigrationInfo{Status: qmp.MigrationActive}, false},
		{qmp.MigrationInfo{Status: qmp.MigrationFailed}, false},
	} {
		if got := figuresPending(tc.info); got != tc.want {
			t.Errorf("figuresPending(%+v) = %v, want %v", tc.info, got, tc.want)
		}
	}
}
