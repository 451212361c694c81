package main

import (
	"slices"
	"strings"
	"testing"
)

func TestMig2Args(t *testing.T) {
	for _, tc := range []struct {
		contender string
		want      []string
	}{
		{cMig2TLS, []string{"migrate", "--qmp", "/s/a.qmp", "--tls-dir", "/pki", "bench", "mig2://127.0.0.1:7000"}},
		{cMig2Insecure, []string{"migrate", "--qmp", "/s/a.qmp", "--insecure", "bench", "mig2://127.0.0.1:7000"}},
		{cMig2V1, []string{"migrate", "--protocol", "v1", "--qmp", "/s/a.qmp", "--dest-qmp", "/s/b.qmp", "bench", "tcp:127.0.0.1:7001"}},
	} {
		got := mig2Args(tc.contender, "/s/a.qmp", "127.0.0.1:7000", "/pki", "/s/b.qmp", "127.0.0.1:7001")
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.contender, got, tc.want)
		}
		// No tuning flag, ever: the issue measures mig2's own choices.
		for _, a := range got {
			for _, tuning := range []string{"--parallel", "--compression", "--bandwidth", "--downtime-limit", "--postcopy", "--timeout"} {
				if a == tuning {
					t.Errorf("%s: tuning flag %s", tc.contender, a)
				}
			}
		}
	}
	if mig2Args("virsh", "", "", "", "", "") != nil {
		t.Error("arguments for a contender that is not mig2")
	}
}

func TestParseMig2Output(t *testing.T) {
	out := strings.Join([]string{
		`{"event":"start","data":"Migrating"}`,
		`not json at all`,
		`{"event":"progress","data":{"transferred":1}}`,
		`{"event":"summary","data":{"protocol":"v2","agreed":{"channels":2},"preflight":{"facts_ns":5,"sample_ns":7,"new_field_ns":9},` +
			`"total_ns":3000000000,"migration_ns":2000000000,"downtime_ns":40000000,"setup_ns":5000000,"transferred":1073741824,"throughput_bps":5.3e8,"dest_status":"running"}}`,
	}, "\n")
	sum, err := parseMig2Output([]byte(out))
	if err != nil || sum == nil {
		t.Fatalf("parseMig2Output: %v %v", sum, err)
	}
	if sum.Protocol != "v2" || sum.Downtime != 40e6 || sum.Transferred != 1<<30 || sum.Preflight["new_field_ns"] != 9 || string(sum.Agreed) != `{"channels":2}` {
		t.Errorf("summary: %+v", sum)
	}
	if sum, err := parseMig2Output([]byte(`{"event":"error","data":"boom"}`)); sum != nil || err != nil {
		t.Errorf("no summary: %v %v", sum, err)
	}
	if _, err := parseMig2Output([]byte(`{"event":"summary","data":{"total_ns":"soon"}}`)); err == nil {
		t.Error("a malformed summary was accepted")
	}
}

func TestAgreedFromLog(t *testing.T) {
	log := `time="2026-11-26T02:20:40Z" level=info msg="driver: agreed protocol-version=1 channels=2 compression=zstd tls=false features=[device-tree]" domain=bench
mig2: driver: migration failed during migrate: driver: context canceled`
	if got := agreedFromLog(log); got != "protocol-version=1 channels=2 compression=zstd tls=false features=[device-tree]" {
		t.Errorf("agreedFromLog = %q", got)
	}
	if got := agreedFromLog("nothing agreed\n"); got != "" {
		t.Errorf("agreedFromLog without an agreement = %q", got)
	}
}
