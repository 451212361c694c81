package driver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A reading made ahead of Hello serves only the guest it read, and only while fresh.
func TestReadAheadUsableFor(t *testing.T) {
	now := time.Now()
	r := &guestReading{guest: "web", at: now}
	if r.usableFor("web", now.Add(time.Second)) != r {
		t.Error("a fresh reading of the same guest was not used")
	}
	if r.usableFor("db", now) != nil {
		t.Error("a reading of another guest was used")
	}
	if r.usableFor("web", now.Add(readAheadFresh+time.Millisecond)) != nil {
		t.Error("a stale reading was used")
	}
	var none *guestReading
	if none.usableFor("web", now) != nil {
		t.Error("no reading, yet one was used")
	}
	none.discard() // must not panic
}

// A reading whose QMP socket does not answer ends with the dial's error, and discard returns.
func TestReadAheadUnreachable(t *testing.T) {
	r := readGuest(context.Background(), AgentGuest{Name: "web", QMP: filepath.Join(t.TempDir(), "none.qmp")}, logrus.New())
	r.wait()
	if r.dialErr == nil || r.claim() {
		t.Fatalf("dialErr %v: want an error and no connection", r.dialErr)
	}
	r.discard()
}

// A session that lets go of its guest early (after a check's Abort, before putting the QEMU's
// settings back) cannot release the claim of the session that took the guest after it.
func TestAgentClaimRelease(t *testing.T) {
	a := &Agent{busy: map[string]string{}}
	if _, ok := a.claim("demo", "m1"); !ok {
		t.Fatal("first claim refused")
	}
	if other, ok := a.claim("demo", "m2"); ok || other != "m1" {
		t.Fatalf("second claim while held: ok %v, other %q", ok, other)
	}
	if _, ok := a.claim("other", "m3"); !ok {
		t.Fatal("a claim on another guest refused")
	}
	a.release("demo")
	if _, ok := a.claim("demo", "m4"); !ok {
		t.Fatal("claim after release refused")
	}
	a.release("demo")
	a.release("other")
	if a.inFlight() != 0 {
		t.Errorf("%d in flight after all released", a.inFlight())
	}
}
