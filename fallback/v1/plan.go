package v1

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mig2/mig2/qmp"
)

// Settings is what the user asked for on the v1 path: today's single-stream QEMU migration. No
// value is negotiated; each is applied as given, to the source, and to the destination only when
// the user names its QMP socket.
type Settings struct {
	Capabilities  []string // extra capabilities to turn on (e.g. xbzrle, auto-converge, compress)
	MaxBandwidth  int64    // bytes/s; 0 = unlimited
	DowntimeLimit int64    // ms; 0 = QEMU's default
	TLS           bool     // TLS on the migration stream: client on the source, server on the destination
	TLSDir        string
	TLSHostname   string   // the destination's name in its certificate
	TLSPeers      []string // destination: the source certificate DNs allowed (tls-authz)
	BothEnds      bool     // the destination QEMU is configured too (return-path is then safe)
}

// Plan is what the v1 path sets on one QEMU.
type Plan struct {
	Caps    []qmp.MigrationCapabilityStatus
	Params  qmp.MigrationParameters
	Objects []qmp.Object
}

// ErrInvariant is returned when a plan would turn multifd on: the v1 path is single-stream, and
// a multifd migration is always v2 (they never mix).
var ErrInvariant = errors.New("v1: invariant violated: the legacy path never enables multifd")

// v1Forbidden are the capabilities only v2 may turn on.
var v1Forbidden = []string{qmp.CapMultifd}

// Role is which end of the migration a QEMU is.
type Role int

const (
	Source Role = iota
	Destination
)

// PlanFor turns the user's settings into one QEMU's capabilities, parameters and objects. known
// is the capability list the QEMU reports; id names mig2's objects.
func PlanFor(role Role, s Settings, known []string, id string) (Plan, error) {
	var p Plan
	want := map[string]bool{qmp.CapMultifd: false, qmp.CapEvents: true}
	if s.BothEnds {
		want[qmp.CapReturnPath] = true // needs both ends; lets a destination load failure reach the source
	}
	for _, c := range s.Capabilities {
		if slices.Contains(v1Forbidden, c) {
			return Plan{}, fmt.Errorf("%w: capability %q was asked for", ErrInvariant, c)
		}
		if role == Source || sharedCapability(c) {
			want[c] = true
		}
	}
	names := make([]string, 0, len(want))
	for c := range want {
		names = append(names, c)
	}
	slices.Sort(names)
	for _, c := range names {
		if !slices.Contains(known, c) {
			if want[c] {
				return Plan{}, fmt.Errorf("v1: this QEMU has no migration capability %q", c)
			}
			continue
		}
		p.Caps = append(p.Caps, qmp.MigrationCapabilityStatus{Capability: c, State: want[c]})
	}
	if role == Source {
		bw := s.MaxBandwidth
		if bw <= 0 {
			bw = (1<<63 - 1) / (1 << 20) * (1 << 20)
		}
		p.Params.MaxBandwidth = &bw
		if s.DowntimeLimit > 0 {
			dl := s.DowntimeLimit
			p.Params.DowntimeLimit = &dl
		}
	}
	empty, creds, authz := "", "mig2-v1-tls-"+id, "mig2-v1-authz-"+id
	switch {
	case !s.TLS:
		p.Params.TLSCreds = &empty
	case role == Source:
		host := s.TLSHostname
		p.Params.TLSCreds, p.Params.TLSHostname = &creds, &host
		p.Objects = append(p.Objects, qmp.TLSCredsX509{ID: creds, Dir: s.TLSDir, Endpoint: "client"})
	default:
		verify := true
		p.Params.TLSCreds = &creds
		p.Objects = append(p.Objects, qmp.TLSCredsX509{ID: creds, Dir: s.TLSDir, Endpoint: "server", VerifyPeer: &verify})
		if len(s.TLSPeers) > 0 {
			p.Params.TLSAuthz = &authz
			p.Objects = append(p.Objects, qmp.AuthzList{ID: authz, Identities: s.TLSPeers})
		}
	}
	return p, Check(p)
}

// sharedCapability reports whether a capability must be set on both ends (FACTS.md).
func sharedCapability(c string) bool {
	switch c {
	case qmp.CapPostcopyRAM, qmp.CapPostcopyPreempt, qmp.CapXIgnoreShared, qmp.CapReturnPath:
		return true
	}
	return false
}

// Check is the guard at the point where capabilities are applied: a v1 plan never turns
// multifd on (driver has the mirror-image guard for v2).
func Check(p Plan) error {
	for _, c := range p.Caps {
		if c.State && slices.Contains(v1Forbidden, c.Capability) {
			return fmt.Errorf("%w: %s set true", ErrInvariant, c.Capability)
		}
	}
	return nil
}

// ParseCapabilities reads a comma-separated capability list (mig2's --capabilities).
func ParseCapabilities(s string) []string {
	var out []string
	for _, c := range strings.Split(s, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}
