package driver

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/mig2/mig2/qmp"
)

// migrationState is a QEMU's migration settings as read before a plan is applied.
type migrationState struct {
	Caps   []qmp.MigrationCapabilityStatus
	Params qmp.MigrationParameters
}

// pending is the part of p that changes a QEMU in state st: capabilities already in the wanted
// state and parameters already at the wanted value are left out, and objects are always added.
// QEMU dispatches one QMP command per main-loop turn or two (about 1 ms idle, several under
// load), so a fresh destination QEMU that already has the agreed channels and method gets one
// command instead of two or three.
func (p qemuPlan) pending(st migrationState) qemuPlan {
	out := qemuPlan{Objects: p.Objects, Params: p.Params}
	for _, c := range p.Caps {
		if i := slices.IndexFunc(st.Caps, func(h qmp.MigrationCapabilityStatus) bool { return h.Capability == c.Capability }); i < 0 || st.Caps[i].State != c.State {
			out.Caps = append(out.Caps, c)
		}
	}
	want, have := reflect.ValueOf(&out.Params).Elem(), reflect.ValueOf(st.Params)
	for i := range want.NumField() {
		w, h := want.Field(i), have.Field(i)
		if w.Kind() == reflect.Pointer && !w.IsNil() && !h.IsNil() && w.Elem().Interface() == h.Elem().Interface() {
			w.SetZero()
		}
	}
	return out
}

// paramsEmpty reports whether p sets nothing.
func paramsEmpty(p qmp.MigrationParameters) bool {
	v := reflect.ValueOf(p)
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			return false
		}
	}
	return len(p.Extra) == 0
}

// applied remembers what a plan changed on one QEMU so it can be put back.
type applied struct {
	prevCaps   []qmp.MigrationCapabilityStatus
	prevParams qmp.MigrationParameters
	objects    []string
}

// applyPlan sets a plan on a QEMU: objects first (the parameters name them), then capabilities,
// then parameters. On error everything already set is undone before returning. With the QEMU's
// migration settings known (st; nil when not) it sends only what changes (qemuPlan.pending).
func applyPlan(ctx context.Context, ex qmp.Executor, p qemuPlan, st *migrationState) (*applied, error) {
	if err := checkV2Plan(p); err != nil {
		return nil, err
	}
	return applyCaps(ctx, ex, p, st)
}

// applyCaps sets a plan that its path's guard has checked (applyPlan for v2, applyV1 for v1).
// Everything goes out in one round, in order (qmp.InOrder): reading the previous state, adding
// the objects, then capabilities and parameters (the parameters name the objects; QEMU looks
// them up only when the migration starts). What failed is then handled one by one: an object
// whose id a migration killed half-way left behind is replaced, a command that failed or did
// not run is run again, and if anything still fails, everything is undone.
//
// With the QEMU's settings known (st), the reading is left out and only what changes is sent.
func applyCaps(ctx context.Context, ex qmp.Executor, p qemuPlan, st *migrationState) (*applied, error) {
	a := &applied{}
	var cmds []qmp.Command
	if st != nil {
		a.prevCaps, a.prevParams = st.Caps, st.Params
		p = p.pending(*st)
	} else {
		cmds = append(cmds,
			qmp.Command{Name: "query-migrate-capabilities", Result: &a.prevCaps},
			qmp.Command{Name: "query-migrate-parameters", Result: &a.prevParams})
	}
	nRead := len(cmds)
	for _, o := range p.Objects {
		cmds = append(cmds, qmp.ObjectAddCommand(o))
	}
	setCaps, setParams := len(p.Caps) > 0, !paramsEmpty(p.Params)
	if setCaps {
		cmds = append(cmds, qmp.SetCapabilitiesCommand(p.Caps))
	}
	if setParams {
		cmds = append(cmds, qmp.SetParametersCommand(p.Params))
	}
	errs := qmp.InOrder(ctx, ex, cmds...)
	objErrs, rest := errs[nRead:nRead+len(p.Objects)], errs[nRead+len(p.Objects):]
	var capsErr, paramsErr error
	if setCaps {
		capsErr, rest = rest[0], rest[1:]
	}
	if setParams {
		paramsErr = rest[0]
	}
	for i, o := range p.Objects {
		if objErrs[i] == nil {
			a.objects = append(a.objects, objectID(o))
		}
	}
	fail := func(err error) (*applied, error) {
		return nil, errors.Join(err, a.restore(context.WithoutCancel(ctx), ex))
	}
	if err := errors.Join(errs[:nRead]...); err != nil {
		// Without the previous state nothing can be put back but the objects.
		return nil, errors.Join(fmt.Errorf("driver: read the migration settings: %w", err), a.removeObjects(context.WithoutCancel(ctx), ex))
	}
	for i, o := range p.Objects {
		if objErrs[i] == nil {
			continue
		}
		id := objectID(o)
		err := objErrs[i]
		switch {
		case errors.Is(err, qmp.ErrNotRun):
			err = qmp.ObjectAdd(ctx, ex, o)
		case qmp.ObjectDel(ctx, ex, id) == nil:
			// A leftover from a migration that was killed half-way held the id.
			err = qmp.ObjectAdd(ctx, ex, o)
		}
		if err != nil {
			return fail(fmt.Errorf("driver: object-add %s: %w", id, err))
		}
		a.objects = append(a.objects, id)
	}
	if capsErr != nil {
		if err := qmp.MigrateSetCapabilities(ctx, ex, p.Caps); err != nil {
			return fail(fmt.Errorf("driver: set migration capabilities: %w", err))
		}
	}
	if paramsErr != nil {
		if err := qmp.MigrateSetParameters(ctx, ex, p.Params); err != nil {
			return fail(fmt.Errorf("driver: set migration parameters: %w", err))
		}
	}
	return a, nil
}

// objectID is the id an object is added under.
func objectID(o qmp.Object) string {
	id, _ := o.ObjectArgs()["id"].(string)
	return id
}

// removeObjects deletes the objects added so far.
func (a *applied) removeObjects(ctx context.Context, ex qmp.Executor) error {
	var errs []error
	for i := len(a.objects) - 1; i >= 0; i-- {
		if err := qmp.ObjectDel(ctx, ex, a.objects[i]); err != nil {
			errs = append(errs, fmt.Errorf("driver: object-del %s: %w", a.objects[i], err))
		}
	}
	a.objects = nil
	return errors.Join(errs...)
}

// concurrently runs fns at once and returns their errors joined.
func concurrently(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// restore puts the capabilities and the TLS parameters back and removes mig2's objects. It is
// best-effort: a QEMU that has gone away has nothing left to restore.
func (a *applied) restore(ctx context.Context, ex qmp.Executor) error {
	if a == nil {
		return nil
	}
	var errs []error
	params := qmp.MigrationParameters{
		TLSCreds:    orEmpty(a.prevParams.TLSCreds),
		TLSHostname: orEmpty(a.prevParams.TLSHostname),
		TLSAuthz:    orEmpty(a.prevParams.TLSAuthz),
	}
	if a.prevParams.MultifdChannels != nil {
		params.MultifdChannels = a.prevParams.MultifdChannels
	}
	if a.prevParams.MultifdCompression != nil {
		params.MultifdCompression = a.prevParams.MultifdCompression
	}
	if a.prevParams.MaxBandwidth != nil {
		params.MaxBandwidth = a.prevParams.MaxBandwidth
	}
	if a.prevParams.DowntimeLimit != nil {
		params.DowntimeLimit = a.prevParams.DowntimeLimit
	}
	if err := qmp.MigrateSetParameters(ctx, ex, params); err != nil {
		errs = append(errs, fmt.Errorf("driver: restore migration parameters: %w", err))
	}
	for i := len(a.objects) - 1; i >= 0; i-- {
		if err := qmp.ObjectDel(ctx, ex, a.objects[i]); err != nil {
			errs = append(errs, fmt.Errorf("driver: object-del %s: %w", a.objects[i], err))
		}
	}
	if len(a.prevCaps) > 0 {
		if err := qmp.MigrateSetCapabilities(ctx, ex, a.prevCaps); err != nil {
			errs = append(errs, fmt.Errorf("driver: restore migration capabilities: %w", err))
		}
	}
	return errors.Join(errs...)
}

func orEmpty(s *string) *string {
	if s == nil {
		e := ""
		return &e
	}
	return s
}
