package libvirtqmp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qmp"
	"libvirt.org/go/libvirt"

	"github.com/mig2/mig2/qmp"
)

// Outputs as virDomainQemuMonitorCommand returns them (libvirt 9.0 with
// QEMU 7.2): QEMU's reply with libvirt's id, errors inside the string.
func TestDecodeOutput(t *testing.T) {
	var st qmp.StatusInfo
	if err := decodeOutput("query-status", `{"return":{"status":"running","singlestep":false,"running":true},"id":"libvirt-423"}`, &st); err != nil || st.Status != qmp.RunStateRunning {
		t.Fatalf("%+v %v", st, err)
	}
	for _, tc := range []struct {
		out, class, desc string
	}{
		{`{"id":"libvirt-424","error":{"class":"CommandNotFound","desc":"The command nope has not been found"}}`, qmp.ClassCommandNotFound, "The command nope has not been found"},
		{`{"id":"libvirt-425","error":{"class":"GenericError","desc":""}}`, qmp.ClassGenericError, ""},
		{`{"id":"libvirt-426","error":{"class":"DeviceNotFound","desc":"Device 'x' not found"}}`, qmp.ClassDeviceNotFound, "Device 'x' not found"},
		{`{"id":"libvirt-427","error":{"class":"DeviceNotActive","desc":"No balloon device has been activated"}}`, qmp.ClassDeviceNotActive, "No balloon device has been activated"},
		{`{"id":"libvirt-428","error":{"class":"KVMMissingCap","desc":"Using KVM without synchronous MMU"}}`, qmp.ClassKVMMissingCap, "Using KVM without synchronous MMU"},
	} {
		err := decodeOutput("cmd", tc.out, nil)
		var qe *qmp.Error
		if !errors.As(err, &qe) || qe.Class != tc.class || qe.Desc != tc.desc || qe.Command != "cmd" {
			t.Errorf("%s: %v", tc.out, err)
		}
	}
	for _, bad := range []string{"", "garbage", `{"event":"STOP"}`, `{"return":1} x`} {
		if err := decodeOutput("cmd", bad, nil); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
	var n int
	if err := decodeOutput("cmd", `{"return":"str"}`, &n); err == nil || !strings.HasPrefix(err.Error(), "libvirtqmp: cmd: decode reply") {
		t.Fatalf("%v", err)
	}
}

func TestEventFromLibvirt(t *testing.T) {
	e, err := eventFromLibvirt("STOP", 1700000000, 12, "")
	if err != nil || e.Name != "STOP" || e.Data != nil || !e.Timestamp.Equal(time.Unix(1700000000, 12000)) {
		t.Fatalf("%+v %v", e, err)
	}
	e, err = eventFromLibvirt("MIGRATION", 1, 0, `{"status":"active"}`)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := qmp.DecodeMigrationEvent(e); err != nil || m.Status != qmp.MigrationActive {
		t.Fatalf("%+v %v", m, err)
	}
	if e, _ := eventFromLibvirt("X", -1, 0, "null"); !e.Timestamp.IsZero() || e.Data != nil {
		t.Fatalf("%+v", e)
	}
	for _, bad := range [][2]string{{"", ""}, {"X", "[1]"}, {"X", "{"}, {"X", `"s"`}} {
		if _, err := eventFromLibvirt(bad[0], 1, 0, bad[1]); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExecuteThroughRun(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	m := newMonitor(func(cmd string) (string, error) {
		mu.Lock()
		sent = append(sent, cmd)
		mu.Unlock()
		switch {
		case strings.Contains(cmd, `"query-version"`):
			return `{"return":{"qemu":{"micro":22,"minor":2,"major":7},"package":"Debian"},"id":"libvirt-9"}`, nil
		case strings.Contains(cmd, `"qom-list"`):
			return `{"id":"libvirt-10","error":{"class":"DeviceNotFound","desc":"Device '/nope' not found"}}`, nil
		case strings.Contains(cmd, `"broken"`):
			return "", libvirt.Error{Code: libvirt.ERR_OPERATION_INVALID, Message: "domain is not running"}
		}
		return `{"return":{},"id":"libvirt-11"}`, nil
	})
	defer m.Close()
	ctx := context.Background()
	v, err := qmp.QueryVersion(ctx, m)
	if err != nil || v.String() != "7.2.22" {
		t.Fatalf("%v %v", v, err)
	}
	if _, err := qmp.QOMList(ctx, m, "/nope"); !errors.Is(err, qmp.ErrDeviceNotFound) {
		t.Fatalf("%v", err)
	}
	err = m.Execute(ctx, "broken", nil, nil)
	var le libvirt.Error
	if !errors.As(err, &le) || le.Code != libvirt.ERR_OPERATION_INVALID || !strings.HasPrefix(err.Error(), "libvirtqmp: broken: ") {
		t.Fatalf("%v", err)
	}
	if err := qmp.MigrateSetParameters(ctx, m, qmp.MigrationParameters{MultifdChannels: new(int64(4))}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	last := sent[len(sent)-1]
	mu.Unlock()
	if last != `{"execute":"migrate-set-parameters","arguments":{"multifd-channels":4}}` {
		t.Fatalf("sent %s", last)
	}

	// go-qemu's Run.
	var mon goqemu.Monitor = m
	out, err := mon.Run([]byte(`{"execute":"query-version","id":7}`))
	if err != nil || !strings.Contains(string(out), `"id":7`) || !strings.Contains(string(out), `"major":7`) {
		t.Fatalf("%s %v", out, err)
	}
	if _, err := mon.Run([]byte(`{"execute":"qom-list","arguments":{"path":"/nope"}}`)); !errors.Is(err, qmp.ErrDeviceNotFound) {
		t.Fatalf("%v", err)
	}
	if _, err := mon.Run([]byte(`{"exec-oob":"migrate-pause"}`)); !errors.Is(err, ErrOOB) {
		t.Fatalf("%v", err)
	}
	if err := mon.Connect(); err != nil { // no connection: commands only
		t.Fatal(err)
	}
	if _, err := mon.Events(ctx); !errors.Is(err, ErrNoConnect) {
		t.Fatalf("%v", err)
	}
}

// A libvirt call that hangs: Execute returns at the deadline, Close waits
// for the call to finish.
func TestExecuteDeadline(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan struct{})
	m := newMonitor(func(cmd string) (string, error) {
		<-release
		close(finished)
		return `{"return":{}}`, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := m.Execute(ctx, "stuck", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned with a libvirt call still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-finished
	<-closed
	if err := m.Execute(context.Background(), "x", nil, nil); !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// Events handed over by libvirt's callback reach subscriptions without
// blocking, even when nobody drains them.
func TestEventsDoNotBlock(t *testing.T) {
	m := newMonitor(func(string) (string, error) { return `{"return":{}}`, nil }, WithEventBuffer(2))
	defer m.Close()
	sub := m.Subscribe(0)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			m.onEvent("STOP", 1, 0, "")
		}
		m.onEvent("MIGRATION", 1, 0, "not json") // dropped, logged
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("event callback blocked")
	}
	if sub.Dropped() != 98 || len(sub.Events()) != 2 {
		t.Fatalf("dropped %d, buffered %d", sub.Dropped(), len(sub.Events()))
	}
	m.Close()
	n := 0
	for range sub.Events() {
		n++
	}
	if n != 2 {
		t.Fatalf("drained %d", n)
	}
}
