package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDecodeMessage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind MessageKind
		err  string
	}{
		{`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`, KindGreeting, ""},
		{`{"return": {}, "id": "a"}`, KindReply, ""},
		{`{"return": 5}`, KindReply, ""},
		{`{"return": [], "id": 3, "unknown": true}`, KindReply, ""},
		{`{"error": {"class": "GenericError", "desc": ""}, "id": "a"}`, KindReply, ""},
		{`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}`, KindEvent, ""},
		{`{"event": "MIGRATION", "data": {"status": "active"}, "timestamp": {"seconds": -1, "microseconds": -1}}`, KindEvent, ""},
		{`{"event": "X", "data": null}`, KindEvent, ""},
		{` {"return": {}}  `, KindReply, ""},
		{`{}`, 0, "exactly one"},
		{`{"return": {}, "error": {"class": "a", "desc": "b"}}`, 0, "exactly one"},
		{`{"return": {}, "event": "STOP"}`, 0, "exactly one"},
		{`{"return": 1, "return": 2}`, 0, "duplicate"},
		{`{"return": {}} {}`, 0, "trailing"},
		{`{"return": {}}x`, 0, "malformed"},
		{`[]`, 0, "not a JSON object"},
		{`"x"`, 0, "not a JSON object"},
		{``, 0, "malformed"},
		{`{"error": {"class": "GenericError"}}`, 0, "class or desc"},
		{`{"error": {"desc": "x"}}`, 0, "class or desc"},
		{`{"error": null}`, 0, "bad error"},
		{`{"error": "x"}`, 0, "bad error"},
		{`{"event": ""}`, 0, "event name"},
		{`{"event": 5}`, 0, "event name"},
		{`{"event": "X", "data": [1]}`, 0, "not an object"},
		{`{"event": "X", "timestamp": "now"}`, 0, "timestamp"},
		{`{"QMP": null}`, 0, "greeting"},
		{`{"QMP": {"version": 7}}`, 0, "greeting"},
	} {
		m, err := DecodeMessage([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "qmp: ") {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if m.Kind != tc.kind {
			t.Errorf("%s: kind %v, want %v", tc.in, m.Kind, tc.kind)
		}
	}
	m, _ := DecodeMessage([]byte(`{"event": "X", "timestamp": {"seconds": -1, "microseconds": -1}}`))
	if !m.Event.Timestamp.IsZero() {
		t.Fatal("timestamp -1 should be zero time")
	}
}

// Every message of every recorded transcript decodes, re-encodes to the
// same JSON, and no strict prefix of it decodes.
func TestMessagesRoundTripAndTruncation(t *testing.T) {
	files, _ := filepath.Glob("testdata/qemu-*/*.qmp")
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata/")
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			msg, ok := strings.CutPrefix(line, "<- ")
			if !ok {
				continue
			}
			n++
			m, err := DecodeMessage([]byte(msg))
			if err != nil {
				t.Fatalf("%s: %v\n%.200s", f, err, msg)
			}
			var re []byte
			switch m.Kind {
			case KindReply:
				re, err = EncodeReply(m.ID, m.Return, m.Error)
			case KindEvent:
				re, err = EncodeEvent(*m.Event)
			case KindGreeting:
				re, err = json.Marshal(map[string]any{"QMP": m.Greeting})
			}
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, []byte(msg), re) {
				t.Fatalf("%s: does not round-trip:\n%.300s\n%.300s", f, msg, re)
			}
			if len(msg) > 4096 {
				continue // prefixes of the 200 KB schema: checked on a sample below
			}
			for i := 0; i < len(strings.TrimSpace(msg)); i++ {
				if _, err := DecodeMessage([]byte(msg[:i])); err == nil {
					t.Fatalf("%s: truncated message decodes: %q", f, msg[:i])
				}
			}
		}
	}
	if n < 50 {
		t.Fatalf("only %d messages in transcripts", n)
	}
	schema := transcriptReply(t, rec72+"query-qmp-schema.qmp", "query-qmp-schema", nil)
	full, _ := EncodeReply(json.RawMessage(`"x"`), schema, nil)
	for i := 0; i < len(full); i += 997 {
		if _, err := DecodeMessage(full[:i]); err == nil {
			t.Fatalf("truncated schema reply decodes at %d", i)
		}
	}
}

func TestEncodeCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		args any
		id   string
		oob  bool
		want string
		err  string
	}{
		{"query-status", nil, "mig2-1", false, `{"execute":"query-status","id":"mig2-1"}`, ""},
		{"qom-list", map[string]string{"path": "/machine"}, "", false, `{"execute":"qom-list","arguments":{"path":"/machine"}}`, ""},
		{"migrate-pause", nil, "x", true, `{"exec-oob":"migrate-pause","id":"x"}`, ""},
		{"stop", struct{}{}, "", false, `{"execute":"stop"}`, ""},
		{"stop", json.RawMessage(`null`), "", false, `{"execute":"stop"}`, ""},
		{"x", json.RawMessage(`{"a":1}`), "", false, `{"execute":"x","arguments":{"a":1}}`, ""},
		{"x", MigrationParameters{MultifdChannels: new(int64(4))}, "", false, `{"execute":"x","arguments":{"multifd-channels":4}}`, ""},
		{"x", []int{1}, "", false, "", "must be a JSON object"},
		{"x", 5, "", false, "", "must be a JSON object"},
		{"x", make(chan int), "", false, "", "encode arguments"},
		{"", nil, "", false, "", "empty command"},
	} {
		b, err := EncodeCommand(tc.cmd, tc.args, tc.id, tc.oob)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.cmd, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.cmd, err)
			continue
		}
		if string(b) != tc.want+"\n" {
			t.Errorf("%s: %s, want %s", tc.cmd, b, tc.want)
		}
	}
}

func TestDecodeReply(t *testing.T) {
	ret, err := DecodeReply("query-status", []byte(`{"return": {"status": "running"}, "id": "libvirt-12"}`))
	if err != nil || string(ret) != `{"status": "running"}` {
		t.Fatalf("%s %v", ret, err)
	}
	_, err = DecodeReply("qom-get", []byte(`{"id": "libvirt-13", "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`))
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != ClassDeviceNotFound || qe.Command != "qom-get" || qe.Desc != "Device 'x' not found" {
		t.Fatalf("%v", err)
	}
	if _, err := DecodeReply("x", []byte(`{"event": "STOP"}`)); err == nil || !strings.Contains(err.Error(), "want a reply") {
		t.Fatalf("%v", err)
	}
	if _, err := DecodeReply("x", []byte(`nonsense`)); err == nil || !strings.HasPrefix(err.Error(), "qmp: x: ") {
		t.Fatalf("%v", err)
	}
}

func TestEventRoundTrip(t *testing.T) {
	for _, e := range []Event{
		{Name: "STOP", Timestamp: time.Unix(1700000000, 5000).UTC()},
		{Name: "MIGRATION", Data: json.RawMessage(`{"status":"active"}`), Timestamp: time.Unix(1, 0).UTC()},
		{Name: "X"},
	} {
		b, err := EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeMessage(b)
		if err != nil || m.Kind != KindEvent {
			t.Fatalf("%s: %v", b, err)
		}
		if m.Event.Name != e.Name || !bytes.Equal(m.Event.Data, e.Data) || !m.Event.Timestamp.Equal(e.Timestamp) {
			t.Fatalf("%+v != %+v", m.Event, e)
		}
	}
}

func TestTypedEvents(t *testing.T) {
	ev := func(name, data string) Event {
		e := Event{Name: name}
		if data != "" {
			e.Data = json.RawMessage(data)
		}
		return e
	}
	if m, err := DecodeMigrationEvent(ev("MIGRATION", `{"status":"postcopy-active"}`)); err != nil || m.Status != MigrationPostcopyActive {
		t.Fatalf("%v %v", m, err)
	}
	if m, err := DecodeMigrationEvent(ev("MIGRATION", `{"status":"brand-new"}`)); err != nil || m.Status.Known() {
		t.Fatalf("an unknown status must decode and be reported unknown: %v %v", m, err)
	}
	var ee *EventError
	if _, err := DecodeMigrationEvent(ev("STOP", "")); !errors.As(err, &ee) || ee.Got != "STOP" {
		t.Fatalf("%v", err)
	}
	for _, bad := range []string{"", `{}`, `{"status":5}`} {
		if _, err := DecodeMigrationEvent(ev("MIGRATION", bad)); err == nil {
			t.Errorf("MIGRATION %q decoded", bad)
		}
	}
	if p, err := DecodeMigrationPassEvent(ev("MIGRATION_PASS", `{"pass":3}`)); err != nil || p.Pass != 3 {
		t.Fatalf("%v %v", p, err)
	}
	if s, err := DecodeShutdownEvent(ev("SHUTDOWN", `{"guest":true,"reason":"guest-shutdown"}`)); err != nil || !s.Guest || s.Reason != "guest-shutdown" {
		t.Fatalf("%v %v", s, err)
	}
	if _, err := DecodeShutdownEvent(ev("SHUTDOWN", `{"guest":"yes"}`)); err == nil || !strings.HasPrefix(err.Error(), "qmp: event SHUTDOWN") {
		t.Fatalf("%v", err)
	}
	if !IsStop(ev("STOP", "")) || IsStop(ev("RESUME", "")) || !IsResume(ev("RESUME", "")) {
		t.Fatal("IsStop/IsResume")
	}
}

func TestMigrationStatuses(t *testing.T) {
	want := "none setup cancelling cancelled active postcopy-active postcopy-paused postcopy-recover completed failed colo pre-switchover device wait-unplug"
	var got []string
	for _, s := range MigrationStatuses {
		got = append(got, string(s))
		if !s.Known() {
			t.Fatal(s)
		}
	}
	if strings.Join(got, " ") != want {
		t.Fatalf("statuses = %v", got)
	}
	for s, term := range map[MigrationStatus]bool{MigrationCompleted: true, MigrationFailed: true, MigrationCancelled: true, MigrationActive: false, MigrationCancelling: false, MigrationPreSwitchover: false} {
		if s.Terminal() != term {
			t.Errorf("%s.Terminal() = %v", s, !term)
		}
	}
	var m MigrationInfo
	if err := json.Unmarshal([]byte(`{}`), &m); err != nil || m.Status != MigrationNone {
		t.Fatalf("{} -> %+v %v", m, err)
	}
}

func TestMigrationParametersOnlySetFields(t *testing.T) {
	for _, tc := range []struct {
		p    MigrationParameters
		want string
	}{
		{MigrationParameters{}, `{}`},
		{MigrationParameters{TLSCreds: new("")}, `{"tls-creds":""}`},
		{MigrationParameters{MultifdChannels: new(int64(0)), CPUThrottleTailslow: new(false)}, `{"cpu-throttle-tailslow":false,"multifd-channels":0}`},
		{MigrationParameters{MaxBandwidth: new(int64(1)), Extra: map[string]json.RawMessage{"announce-step": json.RawMessage("9"), "max-bandwidth": json.RawMessage("2")}}, `{"announce-step":9,"max-bandwidth":1}`},
	} {
		b, err := json.Marshal(tc.p)
		if err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(t, b, []byte(tc.want)) {
			t.Errorf("%s, want %s", b, tc.want)
		}
		var back MigrationParameters
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if b2, _ := json.Marshal(back); !jsonEqual(t, b, b2) {
			t.Errorf("round trip %s -> %s", b, b2)
		}
	}
	var p MigrationParameters
	if err := json.Unmarshal([]byte(`{"multifd-channels":"four"}`), &p); err == nil {
		t.Fatal("wrong type accepted")
	}
	var nilp *MigrationParameters
	if err := json.Unmarshal([]byte(`{"multifd-channels":4}`), &nilp); err != nil || *nilp.MultifdChannels != 4 {
		t.Fatal(err)
	}
}

func TestObjectArgs(t *testing.T) {
	for _, tc := range []struct {
		o    Object
		want string
	}{
		{TLSCredsX509{ID: "t", Dir: "/etc/pki/qemu", Endpoint: "client"}, `{"qom-type":"tls-creds-x509","id":"t","dir":"/etc/pki/qemu","endpoint":"client"}`},
		{TLSCredsX509{ID: "t", Dir: "/d", Endpoint: "server", VerifyPeer: new(true)}, `{"qom-type":"tls-creds-x509","id":"t","dir":"/d","endpoint":"server","verify-peer":true}`},
		{AuthzList{ID: "a", Identities: []string{"CN=x"}}, `{"qom-type":"authz-list","id":"a","policy":"deny","rules":[{"match":"CN=x","policy":"allow","format":"exact"}]}`},
		{AuthzList{ID: "a", Policy: "allow"}, `{"qom-type":"authz-list","id":"a","policy":"allow","rules":[]}`},
		{RawObject{QOMType: "memory-backend-ram", ID: "m", Props: map[string]any{"size": 1024, "id": "ignored"}}, `{"qom-type":"memory-backend-ram","id":"m","size":1024}`},
	} {
		if b := mustMarshal(t, tc.o.ObjectArgs()); !jsonEqual(t, b, []byte(tc.want)) {
			t.Errorf("%s, want %s", b, tc.want)
		}
	}
}

func TestVersionAtLeast(t *testing.T) {
	v := func(maj, min int) VersionInfo {
		var x VersionInfo
		x.QEMU.Major, x.QEMU.Minor = maj, min
		return x
	}
	for _, tc := range []struct {
		v        VersionInfo
		maj, min int
		want     bool
	}{
		{v(7, 2), 7, 2, true}, {v(7, 2), 7, 3, false}, {v(8, 0), 7, 2, true}, {v(6, 9), 7, 2, false}, {v(10, 1), 10, 1, true},
	} {
		if got := tc.v.AtLeast(tc.maj, tc.min); got != tc.want {
			t.Errorf("%v.AtLeast(%d,%d) = %v", tc.v, tc.maj, tc.min, got)
		}
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&Error{Class: "GenericError", Desc: "boom", Command: "migrate"}, "qmp: migrate: GenericError: boom"},
		{&Error{Class: "GenericError"}, "qmp: GenericError"},
		{&Error{Desc: "x"}, "qmp: error: x"},
		{&closedError{cmd: "stop", cause: &qemuClosed{err: errors.New("read: connection reset by peer")}}, "qmp: stop: connection closed: QEMU closed the monitor (read: connection reset by peer)"},
		{&closedError{}, "qmp: connection closed"},
	} {
		if tc.err.Error() != tc.want {
			t.Errorf("%q, want %q", tc.err.Error(), tc.want)
		}
	}
	if errors.Is(&Error{Class: "GenericError", Desc: "a"}, &Error{Class: "GenericError", Desc: "b"}) {
		t.Fatal("a non-sentinel *Error must not match by class")
	}
}

// qmp stays pure Go: only qmp/libvirtqmp may import libvirt or use cgo.
func TestNoCgoNoLibvirt(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == "C" || strings.HasPrefix(p, "libvirt.org/") {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}
