package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// Unit tests on transcripts recorded from a real QEMU 7.2
// (testdata/qemu-7.2, refreshed by the integration test with -update),
// replayed by a fake QEMU through a real Conn.

const rec72 = "qemu-7.2/"

// checkSchema72 checks what mig2 needs from a QEMU 7.2 schema.
func checkSchema72(t *testing.T, s *Schema) {
	t.Helper()
	caps := strings.Join(s.MigrationCapabilities(), ",")
	for _, c := range []string{"multifd", "zero-copy-send", "postcopy-preempt", "return-path", "pause-before-switchover", "events"} {
		if !strings.Contains(","+caps+",", ","+c+",") {
			t.Errorf("schema capabilities lack %s: %s", c, caps)
		}
	}
	params := strings.Join(s.MigrationParameters(), ",")
	for _, p := range []string{"multifd-channels", "multifd-compression", "multifd-zstd-level", "max-bandwidth", "downtime-limit", "tls-creds", "tls-authz", "tls-hostname"} {
		if !strings.Contains(","+params+",", ","+p+",") {
			t.Errorf("schema parameters lack %s: %s", p, params)
		}
	}
	if got := strings.Join(s.CompressionMethods(), ","); got != "none,zlib,zstd" {
		t.Errorf("compression methods = %s", got)
	}
	for _, c := range []string{"migrate", "migrate-incoming", "migrate-set-parameters", "query-migrate", "qom-list", "migrate-continue", "migrate-start-postcopy"} {
		if !s.HasCommand(c) {
			t.Errorf("schema lacks command %s", c)
		}
	}
	for _, e := range []string{"MIGRATION", "MIGRATION_PASS", "STOP", "RESUME", "SHUTDOWN"} {
		if !s.HasEvent(e) {
			t.Errorf("schema lacks event %s", e)
		}
	}
	if s.HasCommand("MIGRATION") || s.HasEvent("migrate") {
		t.Error("commands and events mixed up")
	}
}

func TestTranscriptSchema(t *testing.T) {
	c := startReplay(t, rec72+"query-qmp-schema.qmp")
	s, err := QuerySchema(ctxTimeout(t, 5*time.Second), c)
	if err != nil {
		t.Fatal(err)
	}
	checkSchema72(t, s)
	caps := s.MigrationCapabilities()
	if len(caps) != 21 || caps[0] != "xbzrle" || caps[20] != "postcopy-preempt" {
		t.Fatalf("capabilities = %v", caps)
	}
	if len(s.Commands()) < 100 || len(s.Events()) < 20 {
		t.Fatalf("%d commands, %d events", len(s.Commands()), len(s.Events()))
	}
	// Numbered type names resolve: the capability enum is not called
	// "MigrationCapability" in the schema.
	if s.Lookup("MigrationCapability") != nil {
		t.Fatal("schema exposes real type names; the resolution test is moot")
	}
	if e := s.Lookup("migrate-set-capabilities"); e == nil || e.ArgType == "" || s.Lookup(e.ArgType) == nil {
		t.Fatal("migrate-set-capabilities arg-type does not resolve")
	}
	if args := s.CommandArgs("migrate-incoming"); len(args) == 0 || args[0].Name != "uri" {
		t.Fatalf("migrate-incoming args = %+v", args)
	}
	if e := s.Lookup("migrate-recover"); e == nil || !e.AllowOOB || s.Lookup("migrate-incoming").AllowOOB {
		t.Fatal("allow-oob: migrate-recover has it, migrate-incoming not")
	}
	// Round trip: every entry re-encodes and decodes to the same thing.
	raw := transcriptReply(t, rec72+"query-qmp-schema.qmp", "query-qmp-schema", nil)
	b, err := json.Marshal(s.Entries)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ParseSchema(b)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, b, mustMarshal(t, s2.Entries)) || !jsonEqual(t, raw, b) {
		t.Fatal("schema does not round-trip")
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonEqual compares two JSON texts semantically.
func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	ca, err1 := canonicalJSON(a)
	cb, err2 := canonicalJSON(b)
	if err1 != nil || err2 != nil {
		t.Fatalf("not JSON: %v %v", err1, err2)
	}
	return bytes.Equal(ca, cb)
}

func TestTranscriptCapabilities(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	c := startReplay(t, rec72+"query-migrate-capabilities.qmp")
	caps, err := QueryMigrateCapabilities(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(caps) != 21 {
		t.Fatalf("%d capabilities", len(caps))
	}
	for _, cp := range caps {
		if cp.State {
			t.Fatalf("%s on by default", cp.Capability)
		}
	}
	c = startReplay(t, rec72+"migrate-set-capabilities.qmp")
	set := []MigrationCapabilityStatus{{CapMultifd, true}, {CapEvents, true}, {CapPauseBeforeSwitchover, true}}
	if err := MigrateSetCapabilities(ctx, c, set); err != nil { // the replay checks the exact arguments
		t.Fatal(err)
	}
	caps, err = QueryMigrateCapabilities(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]bool{}
	for _, cp := range caps {
		if cp.State {
			on[cp.Capability] = true
		}
	}
	if len(on) != 3 || !on[CapMultifd] || !on[CapEvents] || !on[CapPauseBeforeSwitchover] {
		t.Fatalf("on = %v", on)
	}
}

func TestTranscriptParameters(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	c := startReplay(t, rec72+"query-migrate-parameters.qmp")
	p, err := QueryMigrateParameters(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if *p.MultifdChannels != 2 || *p.MultifdCompression != "none" || *p.MaxBandwidth != 128<<20 || *p.DowntimeLimit != 300 ||
		*p.TLSCreds != "" || *p.TLSAuthz != "" || *p.TLSHostname != "" || *p.MultifdZstdLevel != 1 || *p.CPUThrottleTailslow {
		t.Fatalf("defaults: %s", mustMarshal(t, p))
	}
	for _, k := range []string{"announce-initial", "announce-rounds", "compress-level", "x-checkpoint-delay"} {
		if _, ok := p.Extra[k]; !ok {
			t.Errorf("untyped parameter %s not kept", k)
		}
	}
	if _, ok := p.Extra["multifd-channels"]; ok {
		t.Error("typed parameter duplicated in Extra")
	}
	raw := transcriptReply(t, rec72+"query-migrate-parameters.qmp", "query-migrate-parameters", nil)
	if !jsonEqual(t, raw, mustMarshal(t, p)) {
		t.Fatalf("parameters do not round-trip:\n%s\n%s", raw, mustMarshal(t, p))
	}

	c = startReplay(t, rec72+"migrate-set-parameters.qmp")
	set := MigrationParameters{
		MultifdChannels: new(int64(4)), MultifdCompression: new("zstd"), MultifdZstdLevel: new(int64(3)),
		MultifdZlibLevel: new(int64(2)), MaxBandwidth: new(int64(1 << 30)), DowntimeLimit: new(int64(500)),
		TLSHostname: new("dst.example"), Extra: map[string]json.RawMessage{"announce-rounds": json.RawMessage("7")},
	}
	if err := MigrateSetParameters(ctx, c, set); err != nil { // only set fields: the replay matches the exact arguments
		t.Fatal(err)
	}
	got, err := QueryMigrateParameters(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if *got.MultifdChannels != 4 || *got.MultifdCompression != "zstd" || string(got.Extra["announce-rounds"]) != "7" {
		t.Fatalf("after set: %s", mustMarshal(t, got))
	}
}

func TestTranscriptQueryMigrate(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	for _, tc := range []struct {
		file  string
		want  []MigrationStatus // successive query-migrate answers
		check func(t *testing.T, m MigrationInfo)
	}{
		{"query-migrate-none.qmp", []MigrationStatus{MigrationNone}, func(t *testing.T, m MigrationInfo) {
			if m.RAM != nil || m.TotalTime != nil || len(m.Extra) != 0 {
				t.Fatalf("none: %+v", m)
			}
		}},
		{"query-migrate-active.qmp", []MigrationStatus{MigrationSetup, MigrationActive}, func(t *testing.T, m MigrationInfo) {
			if m.RAM == nil || m.RAM.Total != 268967936 || m.RAM.Remaining == 0 || m.RAM.PageSize != 4096 || m.ExpectedDowntime == nil || m.SetupTime == nil || m.TotalTime == nil {
				t.Fatalf("active: %s", mustMarshal(t, m))
			}
			if m.RAM.Extra == nil {
				t.Fatal("dirty-sync-missed-zero-copy not kept in RAM.Extra")
			}
		}},
		{"query-migrate-pre-switchover.qmp", []MigrationStatus{MigrationPreSwitchover}, func(t *testing.T, m MigrationInfo) {
			if m.RAM == nil || m.RAM.Transferred == 0 {
				t.Fatalf("pre-switchover: %s", mustMarshal(t, m))
			}
		}},
		{"query-migrate-completed.qmp", []MigrationStatus{MigrationCompleted}, func(t *testing.T, m MigrationInfo) {
			if m.RAM == nil || m.RAM.Remaining != 0 || m.RAM.Transferred == 0 || m.RAM.MBps == 0 || m.Downtime == nil || m.TotalTime == nil || m.ExpectedDowntime != nil {
				t.Fatalf("completed: %s", mustMarshal(t, m))
			}
		}},
		{"query-migrate-cancelled.qmp", []MigrationStatus{MigrationCancelled}, nil},
		{"query-migrate-failed.qmp", []MigrationStatus{MigrationFailed}, func(t *testing.T, m MigrationInfo) {
			if !strings.Contains(m.ErrorDesc, "nobody-listens.sock") {
				t.Fatalf("failed: error-desc %q", m.ErrorDesc)
			}
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c := startReplay(t, rec72+tc.file)
			var m MigrationInfo
			for _, want := range tc.want {
				var err error
				if m, err = QueryMigrate(ctx, c); err != nil {
					t.Fatal(err)
				}
				if m.Status != want || !m.Status.Known() {
					t.Fatalf("status %q, want %q", m.Status, want)
				}
			}
			if tc.check != nil {
				tc.check(t, m)
			}
			if tc.want[len(tc.want)-1] != MigrationNone {
				raw := transcriptReply(t, rec72+tc.file, "query-migrate", nil)
				b := mustMarshal(t, m)
				if tc.want[0] == tc.want[len(tc.want)-1] && !jsonEqual(t, raw, b) {
					t.Fatalf("does not round-trip:\n%s\n%s", raw, b)
				}
			}
		})
	}
}

// The recorded migration: MIGRATION events interleaved with replies, in
// the order QEMU sent them, then migrate-continue and completion.
func TestTranscriptMigration(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	tr := loadTranscript(t, rec72+"migrate-precopy.qmp")
	var uri string
	for _, x := range tr.exchanges {
		var r fakeRequest
		json.Unmarshal(x.cmd, &r)
		if r.Execute == "migrate" {
			var a struct{ URI string }
			json.Unmarshal(r.Arguments, &a)
			uri = a.URI
		}
	}
	c := startReplay(t, rec72+"migrate-precopy.qmp")
	sub := c.Subscribe(64)
	if err := MigrateSetCapabilities(ctx, c, []MigrationCapabilityStatus{{CapEvents, true}, {CapPauseBeforeSwitchover, true}}); err != nil {
		t.Fatal(err)
	}
	if err := MigrateSetParameters(ctx, c, MigrationParameters{MaxBandwidth: new(int64(1 << 30))}); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, c, uri); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 5 {
		select {
		case e := <-sub.Events():
			switch e.Name {
			case EventMigration:
				m, err := DecodeMigrationEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(m.Status))
			case EventMigrationPass:
				p, err := DecodeMigrationPassEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, "pass"+string(rune('0'+p.Pass)))
			}
			if e.Timestamp.Year() < 2020 {
				t.Fatalf("timestamp %v", e.Timestamp)
			}
		case <-ctx.Done():
			t.Fatalf("events so far: %v", got)
		}
	}
	if strings.Join(got, ",") != "setup,pass1,active,pass2,pre-switchover" {
		t.Fatalf("events = %v", got)
	}

	c = startReplay(t, rec72+"migrate-continue.qmp")
	sub = c.Subscribe(64)
	if err := MigrateContinue(ctx, c, MigrationPreSwitchover); err != nil {
		t.Fatal(err)
	}
	for {
		e := <-sub.Events()
		if m, err := DecodeMigrationEvent(e); err == nil && m.Status == MigrationCompleted {
			break
		}
	}

	c = startReplay(t, rec72+"migrate-cancel.qmp")
	sub = c.Subscribe(64)
	if err := MigrateCancel(ctx, c); err != nil {
		t.Fatal(err)
	}
	e1, e2 := <-sub.Events(), <-sub.Events()
	m1, _ := DecodeMigrationEvent(e1)
	m2, _ := DecodeMigrationEvent(e2)
	if m1.Status != MigrationCancelling || m2.Status != MigrationCancelled {
		t.Fatalf("cancel events %v %v", m1, m2)
	}
}

func TestTranscriptErrors(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	c := startReplay(t, rec72+"errors.qmp")
	err := c.Execute(ctx, "no-such-command", nil, nil)
	if !IsCommandNotFound(err) || err.Error() != "qmp: no-such-command: CommandNotFound: The command no-such-command has not been found" {
		t.Fatalf("%v", err)
	}
	if err := c.Execute(ctx, "device_del", map[string]string{"id": "nope"}, nil); !errors.Is(err, ErrDeviceNotFound) {
		t.Fatalf("%v", err)
	}
	if err := MigrateStartPostcopy(ctx, c); !errors.Is(err, ErrGenericError) || !strings.Contains(err.Error(), "postcopy") {
		t.Fatalf("%v", err)
	}
	if err := MigrateContinue(ctx, c, MigrationPreSwitchover); ErrorClass(err) != ClassGenericError {
		t.Fatalf("%v", err)
	}
	if err := MigrateCancel(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := MigrateIncoming(ctx, c, "unix:/nonexistent"); !strings.Contains(err.Error(), "-incoming") {
		t.Fatalf("%v", err)
	}
}

func TestTranscriptStopCont(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	c := startReplay(t, rec72+"stop-cont.qmp")
	sub := c.Subscribe(8)
	if err := Cont(ctx, c); err != nil {
		t.Fatal(err)
	}
	if e := <-sub.Events(); !IsResume(e) {
		t.Fatalf("got %s", e.Name)
	}
	if st, err := QueryStatus(ctx, c); err != nil || st.Status != RunStateRunning || !st.Running {
		t.Fatalf("%+v %v", st, err)
	}
	if err := Stop(ctx, c); err != nil {
		t.Fatal(err)
	}
	if e := <-sub.Events(); !IsStop(e) {
		t.Fatalf("got %s", e.Name)
	}

	c = startReplay(t, rec72+"quit.qmp")
	sub = c.Subscribe(8)
	if err := Quit(ctx, c); err != nil {
		t.Fatal(err)
	}
	sd, err := DecodeShutdownEvent(<-sub.Events())
	if err != nil || sd.Guest || sd.Reason != "host-qmp-quit" {
		t.Fatalf("%+v %v", sd, err)
	}
}

func TestTranscriptVersionStatusQOM(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	c := startReplay(t, rec72+"query-version.qmp")
	v, err := QueryVersion(ctx, c)
	if err != nil || !v.AtLeast(7, 2) || v.AtLeast(7, 3) || v.AtLeast(8, 0) || !v.AtLeast(6, 9) || v.QEMU.Major != 7 {
		t.Fatalf("%v %v", v, err)
	}
	c = startReplay(t, rec72+"query-status.qmp")
	if st, err := QueryStatus(ctx, c); err != nil || st.Status != RunStatePrelaunch {
		t.Fatalf("%+v %v", st, err)
	}
	c = startReplay(t, rec72+"qom-list-machine.qmp")
	props, err := QOMList(ctx, c, "/machine")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, p := range props {
		if _, ok := p.ChildType(); ok {
			kinds["child"]++
		} else if _, ok := p.LinkType(); ok {
			kinds["link"]++
		}
	}
	if kinds["child"] < 5 || kinds["link"] < 3 {
		t.Fatalf("kinds %v", kinds)
	}
	mt, err := QOMGet(ctx, c, "/machine", "type")
	if err != nil || string(mt) != `"pc-q35-7.2-machine"` {
		t.Fatalf("%s %v", mt, err)
	}
}

func TestTranscriptObjects(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	tr := loadTranscript(t, rec72+"object-add.qmp")
	var dir string
	for _, x := range tr.exchanges {
		var r fakeRequest
		json.Unmarshal(x.cmd, &r)
		var a struct{ Dir string }
		json.Unmarshal(r.Arguments, &a)
		if a.Dir != "" {
			dir = a.Dir
			break
		}
	}
	c := startReplay(t, rec72+"object-add.qmp")
	// The replay matches the exact arguments recorded from real QEMU.
	if err := ObjectAdd(ctx, c, TLSCredsX509{ID: "tls0", Dir: dir, Endpoint: "server"}); err != nil {
		t.Fatal(err)
	}
	if err := ObjectAdd(ctx, c, TLSCredsX509{ID: "tls1", Dir: dir, Endpoint: "server", VerifyPeer: new(false)}); err != nil {
		t.Fatal(err)
	}
	if err := ObjectAdd(ctx, c, AuthzList{ID: "authz0", Identities: []string{"O=mig2,CN=src.example", "O=mig2,CN=other"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"tls0", "tls1", "authz0"} {
		if err := ObjectDel(ctx, c, id); err != nil {
			t.Fatal(err)
		}
	}
}

// The device tree read through a replay of the real walk equals the
// recorded canonical tree, byte for byte.
func TestTranscriptDeviceTree(t *testing.T) {
	c := startReplay(t, rec72+"devtree-q35.qmp")
	tree, err := ReadDeviceTree(ctxTimeout(t, 10*time.Second), c)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("testdata/" + rec72 + "devtree-q35.json")
	if err != nil {
		t.Fatal(err)
	}
	want, err := DecodeDeviceTree(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tree.Canonical(), want.Canonical()) {
		t.Fatalf("tree differs from golden:\n%s\n%s", tree.Canonical(), want.Canonical())
	}
	if tree.MachineType != "pc-q35-7.2" || tree.CPUModel != "qemu64" || tree.RAMSize != 256<<20 || tree.RAMBackend != "pc.ram" {
		t.Fatalf("tree: %s", tree.Canonical())
	}
	var sawPCI, sawBus bool
	for _, d := range tree.Devices {
		if d.Path == "/machine/unattached/device[15]" && d.Addr == "1f.2" && d.Bus == "/machine/q35/pcie.0" {
			sawPCI = true
		}
		if strings.Contains(d.Path, "[") && strings.Contains(d.Type, "memory-region") {
			t.Fatalf("memory region in tree: %+v", d)
		}
	}
	for _, b := range tree.Buses {
		sawBus = sawBus || (b.Path == "/machine/q35/pcie.0" && b.Type == "PCIE")
	}
	if !sawPCI || !sawBus {
		t.Fatalf("expected ich9-ahci at 1f.2 on pcie.0: %s", tree.Canonical())
	}
	// The walk never follows link<> properties nor lists skipped types.
	tr := loadTranscript(t, rec72+"devtree-q35.qmp")
	for _, x := range tr.exchanges {
		if strings.Contains(x.key, "memory-region") || strings.Contains(x.key, "non-qdev-gpio") || strings.Contains(x.key, "/objects/pc.ram/") {
			t.Errorf("walk entered %s", x.key)
		}
	}
}
