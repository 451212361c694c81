package driver

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/mig2/mig2/qmp"
)

// Role is which end of a migration a QEMU is.
type Role int

const (
	RoleSource Role = iota
	RoleDestination
)

func (r Role) String() string {
	if r == RoleSource {
		return "source"
	}
	return "destination"
}

// Settings is an agreed v2 set as it applies to one QEMU (v2proto.SPEC §6 decides it; driver
// only carries it out).
type Settings struct {
	Channels         int           `json:"channels"`          // multifd channels, ≥ 1: v2 is always multifd
	Compression      string        `json:"compression"`       // multifd-compression: none, zlib, zstd
	CompressionLevel int           `json:"compression_level"` // 0 = QEMU's default level
	Postcopy         bool          `json:"postcopy"`
	PostcopyPreempt  bool          `json:"postcopy_preempt"`
	ZeroCopySend     bool          `json:"zero_copy_send"`    // source only
	MaxBandwidth     int64         `json:"max_bandwidth"`     // bytes/s on the source; 0 = unlimited
	DowntimeLimit    time.Duration `json:"downtime_limit_ns"` // source only; 0 = QEMU's default
	TLS              bool          `json:"tls"`               // TLS on QEMU's migration stream
}

// TLSSetup says where QEMU finds its x509 files and whom it talks to.
type TLSSetup struct {
	Dir      string   // QEMU's layout: ca-cert.pem, client-*.pem / server-*.pem
	Hostname string   // source: the name the destination's certificate must carry
	Peers    []string // destination: the source certificate DNs allowed (tls-authz)
}

// qemuPlan is everything mig2 sets on one QEMU for one migration.
type qemuPlan struct {
	Caps    []qmp.MigrationCapabilityStatus
	Params  qmp.MigrationParameters
	Objects []qmp.Object
}

// unlimitedBandwidth is what libvirt sets for "no limit" (QEMU_DOMAIN_MIG_BANDWIDTH_MAX MiB/s).
const unlimitedBandwidth = (math.MaxInt64 / (1 << 20)) * (1 << 20)

// managedCaps are the capabilities mig2 sets explicitly on every v2 migration, true or false, so
// that nothing left over from an earlier hand-made migration changes what was agreed. Only those
// the QEMU reports are sent.
var managedCaps = []string{
	qmp.CapMultifd, qmp.CapReturnPath, qmp.CapPauseBeforeSwitchover, qmp.CapEvents,
	qmp.CapPostcopyRAM, qmp.CapPostcopyPreempt, qmp.CapZeroCopySend, qmp.CapXIgnoreShared,
	qmp.CapXBZRLE, qmp.CapAutoConverge, "compress", "rdma-pin-all", "release-ram", "block",
	"x-colo", "background-snapshot", "postcopy-blocktime", "dirty-bitmaps", "late-block-activate",
}

// ErrInvariant is returned when a plan would break the rule that keeps v1 and v2 apart.
var ErrInvariant = errors.New("driver: v2 invariant violated")

// planV2 turns agreed settings into one QEMU's capabilities, parameters and objects. known is the
// capability list this QEMU reports; a capability v2 needs and QEMU lacks is an error.
// migrationID names the objects so two migrations on one host never collide.
func planV2(role Role, s Settings, tls TLSSetup, known []string, migrationID string) (qemuPlan, error) {
	if s.Channels < 1 {
		return qemuPlan{}, fmt.Errorf("%w: %d multifd channels (v2 is always multifd, at least 1)", ErrInvariant, s.Channels)
	}
	want := map[string]bool{
		qmp.CapMultifd:               true,
		qmp.CapReturnPath:            true,
		qmp.CapPauseBeforeSwitchover: role == RoleSource,
		qmp.CapEvents:                true,
		qmp.CapPostcopyRAM:           s.Postcopy,
		qmp.CapPostcopyPreempt:       s.Postcopy && s.PostcopyPreempt,
		qmp.CapZeroCopySend:          role == RoleSource && s.ZeroCopySend,
	}
	for name, on := range want {
		if on && !slices.Contains(known, name) {
			return qemuPlan{}, fmt.Errorf("driver: the %s QEMU lacks migration capability %q that the agreed set needs", role, name)
		}
	}
	var p qemuPlan
	for _, name := range managedCaps {
		if slices.Contains(known, name) {
			p.Caps = append(p.Caps, qmp.MigrationCapabilityStatus{Capability: name, State: want[name]})
		}
	}
	channels := int64(s.Channels)
	compression := s.Compression
	if compression == "" {
		compression = "none"
	}
	p.Params.MultifdChannels = &channels
	p.Params.MultifdCompression = &compression
	if s.CompressionLevel > 0 {
		lvl := int64(s.CompressionLevel)
		switch compression {
		case "zstd":
			p.Params.MultifdZstdLevel = &lvl
		case "zlib":
			p.Params.MultifdZlibLevel = &lvl
		}
	}
	if role == RoleSource {
		bw := s.MaxBandwidth
		if bw <= 0 {
			bw = unlimitedBandwidth
		}
		p.Params.MaxBandwidth = &bw
		if s.Postcopy {
			zero := int64(0) // postcopy is never capped by the precopy bandwidth
			p.Params.MaxPostcopyBandwidth = &zero
		}
		if s.DowntimeLimit > 0 {
			ms := s.DowntimeLimit.Milliseconds()
			p.Params.DowntimeLimit = &ms
		}
	}
	empty := ""
	credsID, authzID := "mig2-tls-"+migrationID, "mig2-authz-"+migrationID
	switch {
	case !s.TLS:
		p.Params.TLSCreds = &empty // QEMU's way to say "no TLS"
	case role == RoleSource:
		host := tls.Hostname
		p.Params.TLSCreds, p.Params.TLSHostname = &credsID, &host
		p.Objects = append(p.Objects, qmp.TLSCredsX509{ID: credsID, Dir: tls.Dir, Endpoint: "client"})
	default:
		if len(tls.Peers) == 0 {
			return qemuPlan{}, fmt.Errorf("driver: TLS on the migration stream needs the source's certificate name for tls-authz")
		}
		verify := true
		p.Params.TLSCreds, p.Params.TLSAuthz = &credsID, &authzID
		p.Objects = append(p.Objects,
			qmp.TLSCredsX509{ID: credsID, Dir: tls.Dir, Endpoint: "server", VerifyPeer: &verify},
			qmp.AuthzList{ID: authzID, Identities: tls.Peers})
	}
	return p, checkV2Plan(p)
}

// checkV2Plan is the guard at the point where capabilities are applied: a v2 plan always turns
// multifd on (fallback/v1 has the mirror-image guard).
func checkV2Plan(p qemuPlan) error {
	for _, c := range p.Caps {
		if c.Capability == qmp.CapMultifd {
			if !c.State {
				return fmt.Errorf("%w: multifd set false on the v2 path", ErrInvariant)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: multifd not set on the v2 path", ErrInvariant)
}
