package driver

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mig2/mig2/qmp"
)

// scriptedQEMU answers QMP commands from a script: an object-add of an id it already holds
// fails, as QEMU's does; a command named in fail fails. With pipelined it batches like a
// qmp.Conn (every command runs); without, qmp.InOrder runs commands one by one.
type scriptedQEMU struct {
	pipelined bool
	fail      map[string]bool
	objects   map[string]bool
	ran       []string
	rounds    int
}

func (q *scriptedQEMU) Execute(_ context.Context, cmd string, args, _ any) error {
	q.rounds++
	return q.run(cmd, args)
}

func (q *scriptedQEMU) run(cmd string, args any) error {
	q.ran = append(q.ran, cmd)
	if q.fail[cmd] {
		return &qmp.Error{Class: qmp.ClassGenericError, Desc: "scripted failure", Command: cmd}
	}
	switch cmd {
	case "object-add":
		id := args.(map[string]any)["id"].(string)
		if q.objects[id] {
			return &qmp.Error{Class: qmp.ClassGenericError, Desc: "attempt to add duplicate property '" + id + "'", Command: cmd}
		}
		q.objects[id] = true
	case "object-del":
		id := args.(map[string]string)["id"]
		if !q.objects[id] {
			return &qmp.Error{Class: qmp.ClassGenericError, Desc: "object not found", Command: cmd}
		}
		delete(q.objects, id)
	}
	return nil
}

type pipelinedQEMU struct{ *scriptedQEMU }

func (q pipelinedQEMU) ExecuteInOrder(_ context.Context, cmds ...qmp.Command) []error {
	q.rounds++
	errs := make([]error, len(cmds))
	for i, c := range cmds {
		errs[i] = q.run(c.Name, c.Args)
	}
	return errs
}

type testObject struct{ id string }

func (o testObject) ObjectArgs() map[string]any {
	return map[string]any{"qom-type": "tls-creds-x509", "id": o.id}
}

func testPlan() qemuPlan {
	ch := int64(2)
	return qemuPlan{
		Caps:    []qmp.MigrationCapabilityStatus{{Capability: qmp.CapMultifd, State: true}},
		Params:  qmp.MigrationParameters{MultifdChannels: &ch},
		Objects: []qmp.Object{testObject{"mig2-tls-x"}},
	}
}

// The plan goes out in one round on a monitor that pipelines; a leftover object holding the
// id (a migration killed half-way) is replaced; one that cannot be added undoes everything.
func TestApplyPlanOneRound(t *testing.T) {
	for _, pipelined := range []bool{true, false} {
		name := map[bool]string{true: "pipelined", false: "one by one"}[pipelined]
		t.Run(name, func(t *testing.T) {
			ex := func(q *scriptedQEMU) qmp.Executor {
				if pipelined {
					return pipelinedQEMU{q}
				}
				return q
			}
			q := &scriptedQEMU{objects: map[string]bool{}}
			if _, err := applyPlan(context.Background(), ex(q), testPlan(), nil); err != nil {
				t.Fatal(err)
			}
			if want := 1; pipelined && q.rounds != want {
				t.Errorf("%d rounds, want %d", q.rounds, want)
			}
			if !q.objects["mig2-tls-x"] || !slices.Contains(q.ran, "migrate-set-parameters") {
				t.Errorf("plan not applied: %v", q.ran)
			}

			q = &scriptedQEMU{objects: map[string]bool{"mig2-tls-x": true}} // a leftover
			a, err := applyPlan(context.Background(), ex(q), testPlan(), nil)
			if err != nil {
				t.Fatalf("leftover object: %v", err)
			}
			if !slices.Contains(q.ran, "object-del") || !q.objects["mig2-tls-x"] || !slices.Contains(a.objects, "mig2-tls-x") {
				t.Errorf("leftover not replaced: %v", q.ran)
			}
			if !slices.Contains(q.ran, "migrate-set-capabilities") || !slices.Contains(q.ran, "migrate-set-parameters") {
				t.Errorf("settings not applied after the replacement: %v", q.ran)
			}

			q = &scriptedQEMU{objects: map[string]bool{}, fail: map[string]bool{"migrate-set-parameters": true}}
			_, err = applyPlan(context.Background(), ex(q), testPlan(), nil)
			if err == nil || !strings.Contains(err.Error(), "set migration parameters") {
				t.Fatalf("err %v, want the parameters' failure", err)
			}
			if q.objects["mig2-tls-x"] {
				t.Errorf("a failed apply left its object: %v", q.ran)
			}
			var qe *qmp.Error
			if !errors.As(err, &qe) {
				t.Errorf("QEMU's error lost: %v", err)
			}
		})
	}
}

// pending leaves out what a QEMU already has: capabilities in the wanted state, parameters at
// the wanted value; objects always stay.
func TestPlanPending(t *testing.T) {
	two, eight, none, zstd, empty := int64(2), int64(8), "none", "zstd", ""
	plan := qemuPlan{
		Caps: []qmp.MigrationCapabilityStatus{
			{Capability: qmp.CapMultifd, State: true}, {Capability: qmp.CapReturnPath, State: true},
			{Capability: qmp.CapPostcopyRAM, State: false}, {Capability: qmp.CapXBZRLE, State: false},
		},
		Params:  qmp.MigrationParameters{MultifdChannels: &two, MultifdCompression: &none, TLSCreds: &empty},
		Objects: []qmp.Object{testObject{"mig2-tls-x"}},
	}
	fresh := migrationState{ // a QEMU as it starts: everything off, QEMU's defaults
		Caps: []qmp.MigrationCapabilityStatus{
			{Capability: qmp.CapMultifd}, {Capability: qmp.CapReturnPath, State: true},
			{Capability: qmp.CapPostcopyRAM}, {Capability: qmp.CapXBZRLE},
		},
		Params: qmp.MigrationParameters{MultifdChannels: &two, MultifdCompression: &none, TLSCreds: &empty},
	}
	got := plan.pending(fresh)
	if len(got.Caps) != 1 || got.Caps[0] != (qmp.MigrationCapabilityStatus{Capability: qmp.CapMultifd, State: true}) {
		t.Errorf("caps %v, want only multifd on", got.Caps)
	}
	if !paramsEmpty(got.Params) {
		t.Errorf("params %+v, want none (the QEMU has them all)", got.Params)
	}
	if len(got.Objects) != 1 {
		t.Errorf("objects %v, want the TLS object kept", got.Objects)
	}

	used := fresh // left by an earlier migration: 8 zstd channels, a capability QEMU lacks
	used.Params = qmp.MigrationParameters{MultifdChannels: &eight, MultifdCompression: &zstd}
	used.Caps = used.Caps[:2]
	got = plan.pending(used)
	if got.Params.MultifdChannels == nil || *got.Params.MultifdChannels != 2 || got.Params.MultifdCompression == nil || *got.Params.MultifdCompression != "none" || got.Params.TLSCreds == nil {
		t.Errorf("params %+v, want channels, method and tls-creds (unknown) sent", got.Params)
	}
	if len(got.Caps) != 3 {
		t.Errorf("caps %v, want multifd and the two the state does not list", got.Caps)
	}
	if plan.Params.MultifdChannels == nil || len(plan.Caps) != 4 {
		t.Error("pending changed the plan it was called on")
	}
}

// With the settings known, apply sends only what changes, in one round, and still knows what to
// put back.
func TestApplyPlanOnKnownState(t *testing.T) {
	two := int64(2)
	st := &migrationState{
		Caps:   []qmp.MigrationCapabilityStatus{{Capability: qmp.CapMultifd}},
		Params: qmp.MigrationParameters{MultifdChannels: &two},
	}
	q := &scriptedQEMU{objects: map[string]bool{}}
	a, err := applyPlan(context.Background(), pipelinedQEMU{q}, testPlan(), st)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"object-add", "migrate-set-capabilities"}; !slices.Equal(q.ran, want) || q.rounds != 1 {
		t.Errorf("ran %v in %d rounds, want %v in 1", q.ran, q.rounds, want)
	}
	if len(a.prevCaps) != 1 || a.prevParams.MultifdChannels == nil {
		t.Errorf("applied %+v: the previous state is lost", a)
	}
	q.ran = nil
	if err := a.restore(context.Background(), pipelinedQEMU{q}); err != nil || !slices.Contains(q.ran, "migrate-set-capabilities") || q.objects["mig2-tls-x"] {
		t.Errorf("restore: %v, ran %v, objects %v", err, q.ran, q.objects)
	}
}
