package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/mig2/mig2/qmp"
)

// applied remembers what a plan changed on one QEMU so it can be put back.
type applied struct {
	prevCaps   []qmp.MigrationCapabilityStatus
	prevParams qmp.MigrationParameters
	objects    []string
}

// applyPlan sets a plan on a QEMU: objects first (the parameters name them), then capabilities,
// then parameters. On error everything already set is undone before returning.
func applyPlan(ctx context.Context, ex qmp.Executor, p qemuPlan) (*applied, error) {
	if err := checkV2Plan(p); err != nil {
		return nil, err
	}
	return applyCaps(ctx, ex, p)
}

// applyCaps sets a plan that its path's guard has checked (applyPlan for v2, applyV1 for v1).
func applyCaps(ctx context.Context, ex qmp.Executor, p qemuPlan) (*applied, error) {
	a := &applied{}
	var err error
	if a.prevCaps, err = qmp.QueryMigrateCapabilities(ctx, ex); err != nil {
		return nil, fmt.Errorf("driver: read migration capabilities: %w", err)
	}
	if a.prevParams, err = qmp.QueryMigrateParameters(ctx, ex); err != nil {
		return nil, fmt.Errorf("driver: read migration parameters: %w", err)
	}
	fail := func(err error) (*applied, error) {
		return nil, errors.Join(err, a.restore(context.WithoutCancel(ctx), ex))
	}
	for _, o := range p.Objects {
		id, _ := o.ObjectArgs()["id"].(string)
		// A leftover from a migration that was killed half-way would make object-add fail.
		_ = qmp.ObjectDel(ctx, ex, id)
		if err := qmp.ObjectAdd(ctx, ex, o); err != nil {
			return fail(fmt.Errorf("driver: object-add %s: %w", id, err))
		}
		a.objects = append(a.objects, id)
	}
	if err := qmp.MigrateSetCapabilities(ctx, ex, p.Caps); err != nil {
		return fail(fmt.Errorf("driver: set migration capabilities: %w", err))
	}
	if err := qmp.MigrateSetParameters(ctx, ex, p.Params); err != nil {
		return fail(fmt.Errorf("driver: set migration parameters: %w", err))
	}
	return a, nil
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
