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
			if _, err := applyPlan(context.Background(), ex(q), testPlan()); err != nil {
				t.Fatal(err)
			}
			if want := 1; pipelined && q.rounds != want {
				t.Errorf("%d rounds, want %d", q.rounds, want)
			}
			if !q.objects["mig2-tls-x"] || !slices.Contains(q.ran, "migrate-set-parameters") {
				t.Errorf("plan not applied: %v", q.ran)
			}

			q = &scriptedQEMU{objects: map[string]bool{"mig2-tls-x": true}} // a leftover
			a, err := applyPlan(context.Background(), ex(q), testPlan())
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
			_, err = applyPlan(context.Background(), ex(q), testPlan())
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
