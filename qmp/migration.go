package qmp

import (
	"context"
	"encoding/json"
	"errors"
)

// MigrationStatus is QEMU's MigrationStatus enum.
type MigrationStatus string

// Every migration status QEMU 7.2 reports. Newer QEMUs may add more; such
// values decode as they are and Known reports false.
const (
	MigrationNone            MigrationStatus = "none"
	MigrationSetup           MigrationStatus = "setup"
	MigrationCancelling      MigrationStatus = "cancelling"
	MigrationCancelled       MigrationStatus = "cancelled"
	MigrationActive          MigrationStatus = "active"
	MigrationPostcopyActive  MigrationStatus = "postcopy-active"
	MigrationPostcopyPaused  MigrationStatus = "postcopy-paused"
	MigrationPostcopyRecover MigrationStatus = "postcopy-recover"
	MigrationCompleted       MigrationStatus = "completed"
	MigrationFailed          MigrationStatus = "failed"
	MigrationColo            MigrationStatus = "colo"
	MigrationPreSwitchover   MigrationStatus = "pre-switchover"
	MigrationDevice          MigrationStatus = "device"
	MigrationWaitUnplug      MigrationStatus = "wait-unplug"
)

// MigrationStatuses lists every status this package knows, in QEMU's order.
var MigrationStatuses = []MigrationStatus{
	MigrationNone, MigrationSetup, MigrationCancelling, MigrationCancelled,
	MigrationActive, MigrationPostcopyActive, MigrationPostcopyPaused,
	MigrationPostcopyRecover, MigrationCompleted, MigrationFailed,
	MigrationColo, MigrationPreSwitchover, MigrationDevice, MigrationWaitUnplug,
}

// Known reports whether s is one of MigrationStatuses.
func (s MigrationStatus) Known() bool {
	for _, k := range MigrationStatuses {
		if s == k {
			return true
		}
	}
	return false
}

// Terminal reports whether the migration has ended (completed, failed or
// cancelled). Note that plain QEMU 7.2 reports "completed" on the source even
// when the destination failed to load the state (FACTS.md): completion must
// be confirmed by the destination.
func (s MigrationStatus) Terminal() bool {
	return s == MigrationCompleted || s == MigrationFailed || s == MigrationCancelled
}

// MigrationCapabilityStatus is one capability and its state.
type MigrationCapabilityStatus struct {
	Capability string `json:"capability"`
	State      bool   `json:"state"`
}

// Migration capability names mig2 uses. The set a QEMU supports is
// discovered at run time (QueryMigrateCapabilities, Schema), never assumed.
const (
	CapEvents                = "events"
	CapMultifd               = "multifd"
	CapPostcopyRAM           = "postcopy-ram"
	CapPostcopyPreempt       = "postcopy-preempt"
	CapReturnPath            = "return-path"
	CapPauseBeforeSwitchover = "pause-before-switchover"
	CapZeroCopySend          = "zero-copy-send"
	CapAutoConverge          = "auto-converge"
	CapXBZRLE                = "xbzrle"
	CapXIgnoreShared         = "x-ignore-shared"
)

// QueryMigrateCapabilities runs query-migrate-capabilities.
func QueryMigrateCapabilities(ctx context.Context, ex Executor) ([]MigrationCapabilityStatus, error) {
	var caps []MigrationCapabilityStatus
	err := ex.Execute(ctx, "query-migrate-capabilities", nil, &caps)
	return caps, err
}

// MigrateSetCapabilities runs migrate-set-capabilities.
func MigrateSetCapabilities(ctx context.Context, ex Executor, caps []MigrationCapabilityStatus) error {
	return Run(ctx, ex, SetCapabilitiesCommand(caps))
}

// SetCapabilitiesCommand is migrate-set-capabilities as a Command (for InOrder).
func SetCapabilitiesCommand(caps []MigrationCapabilityStatus) Command {
	if caps == nil {
		caps = []MigrationCapabilityStatus{}
	}
	return Command{Name: "migrate-set-capabilities", Args: map[string]any{"capabilities": caps}}
}

// MigrationParameters are the migration parameters (query-migrate-parameters,
// migrate-set-parameters). Fields are pointers: nil means "not reported" in a
// query and "leave unchanged" in a set, so MigrateSetParameters sends only
// the fields that are set. Parameters this struct does not name (older ones
// like announce-*, newer ones from later QEMUs) are kept in Extra, and Extra
// members are sent by MigrateSetParameters too.
type MigrationParameters struct {
	MultifdChannels    *int64  `json:"multifd-channels,omitempty"`
	MultifdCompression *string `json:"multifd-compression,omitempty"` // "none", "zlib", "zstd"; see Schema.CompressionMethods
	MultifdZlibLevel   *int64  `json:"multifd-zlib-level,omitempty"`
	MultifdZstdLevel   *int64  `json:"multifd-zstd-level,omitempty"`

	MaxBandwidth         *int64 `json:"max-bandwidth,omitempty"`          // bytes/s
	MaxPostcopyBandwidth *int64 `json:"max-postcopy-bandwidth,omitempty"` // bytes/s, 0 = unlimited
	DowntimeLimit        *int64 `json:"downtime-limit,omitempty"`         // ms

	// TLS: an empty string disables TLS (tls-creds) or the check (others).
	TLSCreds    *string `json:"tls-creds,omitempty"`
	TLSHostname *string `json:"tls-hostname,omitempty"`
	TLSAuthz    *string `json:"tls-authz,omitempty"`

	XBZRLECacheSize          *int64 `json:"xbzrle-cache-size,omitempty"` // bytes
	ThrottleTriggerThreshold *int64 `json:"throttle-trigger-threshold,omitempty"`
	CPUThrottleInitial       *int64 `json:"cpu-throttle-initial,omitempty"`
	CPUThrottleIncrement     *int64 `json:"cpu-throttle-increment,omitempty"`
	CPUThrottleTailslow      *bool  `json:"cpu-throttle-tailslow,omitempty"`
	MaxCPUThrottle           *int64 `json:"max-cpu-throttle,omitempty"`

	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps unknown parameters in Extra.
func (p *MigrationParameters) UnmarshalJSON(b []byte) error {
	type plain MigrationParameters
	var v plain
	extra, err := unmarshalKeepUnknown(b, &v)
	if err != nil {
		return err
	}
	*p = MigrationParameters(v)
	p.Extra = extra
	return nil
}

// MarshalJSON writes set fields and Extra.
func (p MigrationParameters) MarshalJSON() ([]byte, error) {
	type plain MigrationParameters
	return marshalWithExtra(plain(p), p.Extra)
}

// QueryMigrateParameters runs query-migrate-parameters.
func QueryMigrateParameters(ctx context.Context, ex Executor) (MigrationParameters, error) {
	var p MigrationParameters
	err := ex.Execute(ctx, "query-migrate-parameters", nil, &p)
	return p, err
}

// MigrateSetParameters runs migrate-set-parameters with the fields of p that
// are set (and p.Extra).
func MigrateSetParameters(ctx context.Context, ex Executor, p MigrationParameters) error {
	return Run(ctx, ex, SetParametersCommand(p))
}

// SetParametersCommand is migrate-set-parameters as a Command (for InOrder).
func SetParametersCommand(p MigrationParameters) Command {
	return Command{Name: "migrate-set-parameters", Args: p}
}

// MigrateIncoming runs migrate-incoming on a QEMU started with
// "-incoming defer", e.g. uri "tcp:[::]:49152" or "unix:/run/mig.sock".
func MigrateIncoming(ctx context.Context, ex Executor, uri string) error {
	return Run(ctx, ex, incomingCommand(uri))
}

func incomingCommand(uri string) Command {
	return Command{Name: "migrate-incoming", Args: map[string]string{"uri": uri}}
}

// Migrate runs migrate to uri. QEMU answers at once; follow the migration
// with QueryMigrate or MIGRATION events.
func Migrate(ctx context.Context, ex Executor, uri string) error {
	return ex.Execute(ctx, "migrate", map[string]string{"uri": uri}, nil)
}

// MigrateCancel runs migrate_cancel.
func MigrateCancel(ctx context.Context, ex Executor) error {
	return ex.Execute(ctx, "migrate_cancel", nil, nil)
}

// YankMigration runs yank on the migration instance: QEMU shuts the migration's connections
// down, so that threads blocked on a dead network return and a cancel can finish.
func YankMigration(ctx context.Context, ex Executor) error {
	return ex.Execute(ctx, "yank", map[string]any{"instances": []map[string]string{{"type": "migration"}}}, nil)
}

// MigrateContinue runs migrate-continue: a migration paused in state (with
// pause-before-switchover: MigrationPreSwitchover) goes on.
func MigrateContinue(ctx context.Context, ex Executor, state MigrationStatus) error {
	return ex.Execute(ctx, "migrate-continue", map[string]string{"state": string(state)}, nil)
}

// MigrateStartPostcopy runs migrate-start-postcopy (needs postcopy-ram on both
// sides and a migration in progress).
func MigrateStartPostcopy(ctx context.Context, ex Executor) error {
	return ex.Execute(ctx, "migrate-start-postcopy", nil, nil)
}

// MigrationInfo is the reply of query-migrate. Members this package does
// not name (disk, xbzrle-cache, compression, socket-address, vfio, newer
// ones) are kept in Extra.
type MigrationInfo struct {
	// Status is MigrationNone when QEMU reports no migration (it replies {}).
	Status                MigrationStatus `json:"status,omitempty"`
	RAM                   *MigrationStats `json:"ram,omitempty"`
	TotalTime             *int64          `json:"total-time,omitempty"`        // ms since the start (or total, when done)
	Downtime              *int64          `json:"downtime,omitempty"`          // ms, once completed
	ExpectedDowntime      *int64          `json:"expected-downtime,omitempty"` // ms, while active
	SetupTime             *int64          `json:"setup-time,omitempty"`        // ms
	CPUThrottlePercentage *int64          `json:"cpu-throttle-percentage,omitempty"`
	ErrorDesc             string          `json:"error-desc,omitempty"`
	BlockedReasons        []string        `json:"blocked-reasons,omitzero"`
	PostcopyBlocktime     *int64          `json:"postcopy-blocktime,omitempty"`

	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps unknown members in Extra and maps {} to MigrationNone.
func (m *MigrationInfo) UnmarshalJSON(b []byte) error {
	type plain MigrationInfo
	var v plain
	extra, err := unmarshalKeepUnknown(b, &v)
	if err != nil {
		return err
	}
	*m = MigrationInfo(v)
	m.Extra = extra
	if m.Status == "" {
		m.Status = MigrationNone
	}
	return nil
}

// MarshalJSON writes Extra back.
func (m MigrationInfo) MarshalJSON() ([]byte, error) {
	type plain MigrationInfo
	return marshalWithExtra(plain(m), m.Extra)
}

// MigrationStats are the RAM statistics of query-migrate ("ram").
type MigrationStats struct {
	Transferred      int64   `json:"transferred"` // bytes
	Remaining        int64   `json:"remaining"`   // bytes
	Total            int64   `json:"total"`       // bytes
	Duplicate        int64   `json:"duplicate"`   // zero pages
	Skipped          int64   `json:"skipped"`
	Normal           int64   `json:"normal"` // pages
	NormalBytes      int64   `json:"normal-bytes"`
	DirtyPagesRate   int64   `json:"dirty-pages-rate"` // pages/s
	MBps             float64 `json:"mbps"`             // megabits/s
	DirtySyncCount   int64   `json:"dirty-sync-count"`
	PostcopyRequests int64   `json:"postcopy-requests"`
	PageSize         int64   `json:"page-size"`
	MultifdBytes     int64   `json:"multifd-bytes"`
	PagesPerSecond   int64   `json:"pages-per-second"`
	PrecopyBytes     int64   `json:"precopy-bytes"`
	DowntimeBytes    int64   `json:"downtime-bytes"`
	PostcopyBytes    int64   `json:"postcopy-bytes"`

	Extra map[string]json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps unknown members in Extra.
func (s *MigrationStats) UnmarshalJSON(b []byte) error {
	type plain MigrationStats
	var v plain
	extra, err := unmarshalKeepUnknown(b, &v)
	if err != nil {
		return err
	}
	*s = MigrationStats(v)
	s.Extra = extra
	return nil
}

// MarshalJSON writes Extra back.
func (s MigrationStats) MarshalJSON() ([]byte, error) {
	type plain MigrationStats
	return marshalWithExtra(plain(s), s.Extra)
}

// QueryMigrate runs query-migrate.
func QueryMigrate(ctx context.Context, ex Executor) (MigrationInfo, error) {
	var m MigrationInfo
	if err := ex.Execute(ctx, "query-migrate", nil, &m); err != nil {
		return MigrationInfo{}, err
	}
	return m, nil
}

// StartIncoming runs migrate-incoming to uri and, right behind it, query-migrate, whose reply
// says where QEMU listens (a tcp: uri with port 0 lets QEMU pick). On a *Conn both go out
// together: one round trip instead of two.
func StartIncoming(ctx context.Context, ex Executor, uri string) (MigrationInfo, error) {
	var m MigrationInfo
	errs := InOrder(ctx, ex, incomingCommand(uri), Command{Name: "query-migrate", Result: &m})
	if err := errors.Join(errs...); err != nil {
		return MigrationInfo{}, err
	}
	return m, nil
}
