package driver

import (
	"context"
	"errors"
	"testing"

	v1 "github.com/mig2/mig2/fallback/v1"
	"github.com/mig2/mig2/qmp"
)

// recorder is a QMP executor that records commands and must not be reached by a refused plan.
type recorder struct{ cmds []string }

func (r *recorder) Execute(ctx context.Context, cmd string, args, result any) error {
	r.cmds = append(r.cmds, cmd)
	return nil
}

var known = []string{"multifd", "return-path", "pause-before-switchover", "events", "postcopy-ram", "zero-copy-send"}

// TestV2InvariantCannotBeBroken: the v2 path never sets multifd false, checked where
// capabilities are applied: a forged plan does not reach QEMU.
func TestV2InvariantCannotBeBroken(t *testing.T) {
	if _, err := planV2(RoleSource, Settings{Channels: 0}, TLSSetup{}, known, "x"); !errors.Is(err, ErrInvariant) {
		t.Fatalf("0 channels: %v, want ErrInvariant", err)
	}
	for _, caps := range [][]qmp.MigrationCapabilityStatus{
		{{Capability: "multifd", State: false}},
		{{Capability: "return-path", State: true}},
	} {
		r := &recorder{}
		if _, err := applyPlan(context.Background(), r, qemuPlan{Caps: caps}, nil); !errors.Is(err, ErrInvariant) {
			t.Fatalf("forged v2 plan %v: err %v, want ErrInvariant", caps, err)
		}
		if len(r.cmds) != 0 {
			t.Fatalf("a refused plan reached QEMU: %v", r.cmds)
		}
	}
	p, err := planV2(RoleSource, Settings{Channels: 2}, TLSSetup{}, known, "x")
	if err != nil {
		t.Fatal(err)
	}
	if checkV2Plan(p) != nil {
		t.Fatal("a good v2 plan was refused")
	}
}

// TestV1InvariantCannotBeBroken: the v1 path never sets multifd true.
func TestV1InvariantCannotBeBroken(t *testing.T) {
	r := &recorder{}
	forged := v1.Plan{Caps: []qmp.MigrationCapabilityStatus{{Capability: "multifd", State: true}}}
	if _, err := applyV1(context.Background(), r, forged); !errors.Is(err, v1.ErrInvariant) {
		t.Fatalf("forged v1 plan: err %v, want v1.ErrInvariant", err)
	}
	if len(r.cmds) != 0 {
		t.Fatalf("a refused plan reached QEMU: %v", r.cmds)
	}
}
