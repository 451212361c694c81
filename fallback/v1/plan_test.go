package v1

import (
	"errors"
	"testing"

	"github.com/mig2/mig2/qmp"
)

var known72 = []string{"xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events", "postcopy-ram",
	"x-colo", "release-ram", "block", "return-path", "pause-before-switchover", "multifd", "dirty-bitmaps",
	"postcopy-blocktime", "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
	"zero-copy-send", "postcopy-preempt"}

func capState(p Plan, name string) (bool, bool) {
	for _, c := range p.Caps {
		if c.Capability == name {
			return c.State, true
		}
	}
	return false, false
}

func TestPlanNeverMultifd(t *testing.T) {
	for _, role := range []Role{Source, Destination} {
		p, err := PlanFor(role, Settings{Capabilities: []string{"auto-converge", "xbzrle"}}, known72, "x")
		if err != nil {
			t.Fatal(err)
		}
		if on, set := capState(p, qmp.CapMultifd); !set || on {
			t.Fatalf("role %d: multifd must be set explicitly false, got set=%v on=%v", role, set, on)
		}
	}
}

// TestInvariantCannotBeBroken tries to turn multifd on through every door the v1 path has.
func TestInvariantCannotBeBroken(t *testing.T) {
	if _, err := PlanFor(Source, Settings{Capabilities: []string{"multifd"}}, known72, "x"); !errors.Is(err, ErrInvariant) {
		t.Fatalf("asking for multifd on v1: err %v, want ErrInvariant", err)
	}
	forged := Plan{Caps: []qmp.MigrationCapabilityStatus{{Capability: "multifd", State: true}}}
	if err := Check(forged); !errors.Is(err, ErrInvariant) {
		t.Fatalf("Check accepted a forged plan with multifd on: %v", err)
	}
}

func TestPlanRoles(t *testing.T) {
	s := Settings{Capabilities: []string{"auto-converge", "postcopy-ram"}, TLS: true, TLSDir: "/pki", TLSHostname: "dst", BothEnds: true, MaxBandwidth: 1 << 20}
	src, err := PlanFor(Source, s, known72, "id1")
	if err != nil {
		t.Fatal(err)
	}
	dst, err := PlanFor(Destination, s, known72, "id1")
	if err != nil {
		t.Fatal(err)
	}
	if on, _ := capState(src, "auto-converge"); !on {
		t.Error("auto-converge (source-only) not on the source")
	}
	if _, set := capState(dst, "auto-converge"); set {
		t.Error("auto-converge (source-only) set on the destination")
	}
	for _, p := range []Plan{src, dst} {
		if on, _ := capState(p, "postcopy-ram"); !on {
			t.Error("postcopy-ram must be on at both ends")
		}
		if on, _ := capState(p, "return-path"); !on {
			t.Error("return-path must be on at both ends when both are configured")
		}
	}
	if src.Params.MaxBandwidth == nil || *src.Params.MaxBandwidth != 1<<20 || dst.Params.MaxBandwidth != nil {
		t.Error("bandwidth is a source-side setting")
	}
	if *src.Params.TLSCreds == "" || *dst.Params.TLSCreds == "" || len(src.Objects) != 1 || len(dst.Objects) != 1 {
		t.Errorf("TLS: src %v %v, dst %v %v", *src.Params.TLSCreds, src.Objects, *dst.Params.TLSCreds, dst.Objects)
	}
	if _, err := PlanFor(Source, Settings{Capabilities: []string{"no-such-cap"}}, known72, "x"); err == nil {
		t.Error("an unknown capability was accepted")
	}
	plain, _ := PlanFor(Source, Settings{}, known72, "x")
	if plain.Params.TLSCreds == nil || *plain.Params.TLSCreds != "" {
		t.Error("without TLS the plan must clear tls-creds")
	}
	if _, set := capState(plain, "return-path"); set {
		t.Error("return-path set although the destination is not configured")
	}
}

func TestParseCapabilities(t *testing.T) {
	got := ParseCapabilities(" xbzrle, ,auto-converge")
	if len(got) != 2 || got[0] != "xbzrle" || got[1] != "auto-converge" {
		t.Fatalf("got %q", got)
	}
}
