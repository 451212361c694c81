package v2proto

// Every wire message and shared structure of SPEC §4, each under its type constant, with its
// encoder and its strict decoder (SPEC §3.4). Unmarshal is the one decode switch.

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// MsgType is a message type byte (SPEC §4).
type MsgType uint8

func (t MsgType) String() string {
	switch t {
	case MsgHello:
		return "Hello"
	case MsgOffer:
		return "Offer"
	case MsgAgree:
		return "Agree"
	case MsgReady:
		return "Ready"
	case MsgStart:
		return "Start"
	case MsgProgress:
		return "Progress"
	case MsgSwitchover:
		return "Switchover"
	case MsgResult:
		return "Result"
	case MsgAbort:
		return "Abort"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Message is one of *Hello, *Offer, *Agree, *Ready, *Start, *Progress, *Switchover, *Result,
// *Abort.
type Message interface {
	Type() MsgType
	marshal(b *builder)
	unmarshal(body []byte) error
}

// Marshal encodes m as a frame payload: the type byte, then the body (SPEC §3.3).
func Marshal(m Message) []byte {
	b := &builder{b: []byte{byte(m.Type())}}
	m.marshal(b)
	return b.bytes()
}

// Unmarshal decodes a frame payload (type byte and body) strictly: unknown types, missing or
// duplicate fields, bad values and trailing bytes are errors matching ErrProtocol.
func Unmarshal(payload []byte) (Message, error) {
	if len(payload) == 0 {
		return nil, decodeErrorf("empty payload")
	}
	var m Message
	switch MsgType(payload[0]) {
	case MsgHello:
		m = new(Hello)
	case MsgOffer:
		m = new(Offer)
	case MsgAgree:
		m = new(Agree)
	case MsgReady:
		m = new(Ready)
	case MsgStart:
		m = new(Start)
	case MsgProgress:
		m = new(Progress)
	case MsgSwitchover:
		m = new(Switchover)
	case MsgResult:
		m = new(Result)
	case MsgAbort:
		m = new(Abort)
	default:
		return nil, decodeErrorf("unknown message type %d", payload[0])
	}
	if err := m.unmarshal(payload[1:]); err != nil {
		return nil, err
	}
	return m, nil
}

// ---------------------------------------------------------------------------------------------
// Shared structures (SPEC §4.0)

// VersionRange is an inclusive range of protocol versions (SPEC §5.1).
type VersionRange struct {
	Min, Max uint16
}

// Validate checks 1 ≤ Min ≤ Max.
func (r VersionRange) Validate() error {
	if r.Min < 1 || r.Min > r.Max {
		return fmt.Errorf("invalid version range %s", r)
	}
	return nil
}

func (r VersionRange) String() string { return fmt.Sprintf("[%d,%d]", r.Min, r.Max) }

// Feature is a named protocol feature; Required ones must be supported by the peer (SPEC §5.2).
type Feature struct {
	Name     string
	Required bool
}

// Features defined by protocol version 1 (SPEC §5.2).
const (
	FeatureDeviceTree = "device-tree"
)

// DefaultFeatures are the features this implementation announces.
func DefaultFeatures() []Feature {
	return []Feature{{Name: FeatureDeviceTree, Required: true}}
}

func validFeatureName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func putFeatures(b *builder, tag uint16, fs []Feature) {
	sorted := slices.Clone(fs)
	slices.SortStableFunc(sorted, func(a, b Feature) int { return strings.Compare(a.Name, b.Name) })
	b.field(tag, func(b *builder) {
		for _, f := range sorted {
			b.item(func(b *builder) {
				b.putString(1, f.Name)
				b.putBool(2, f.Required)
			})
		}
	})
}

func decFeatures(what string, v []byte) ([]Feature, error) {
	var out []Feature
	err := decItems(what, v, func(item []byte) error {
		var f Feature
		decErr := decodeFields(what, item, 2, func(tag uint16, val []byte) (err error) {
			switch tag {
			case 1:
				if f.Name, err = decString(what+".name", val); err == nil && !validFeatureName(f.Name) {
					err = decodeErrorf("%s: invalid feature name %q", what, f.Name)
				}
			case 2:
				f.Required, err = decBool(what+".required", val)
			default:
				return errUnknownField
			}
			return err
		})
		if decErr != nil {
			return decErr
		}
		if len(out) > 0 && f.Name <= out[len(out)-1].Name {
			return decodeErrorf("%s: not sorted or duplicate at %q", what, f.Name)
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

// HostFacts describes a host and its QEMU (SPEC §4.0). The lists are sets: the encoder sorts
// them and drops duplicates.
type HostFacts struct {
	Mig2Version  string
	QEMUVersion  string
	Capabilities []string // migration capabilities (query-migrate-capabilities)
	Parameters   []string // migration parameters (query-migrate-parameters)
	Compression  []string // multifd compression methods
	Traits       []string // e.g. TraitMultifdPostcopy (SPEC §4.0.1)
	Cores        uint32   // 0 = unknown
	MemoryBytes  uint64   // 0 = unknown
	Hostname     string
	// LinkMbps is the speed of the network interface this host uses for the control
	// connection, in Mbit/s: 0 = unknown, LinkSameHost = the peer is on this host.
	LinkMbps uint32
}

// LinkSameHost is HostFacts.LinkMbps for a peer on the same host (loopback): no network at all.
const LinkSameHost = 0xFFFFFFFF

// Traits defined by protocol version 1 (SPEC §4.0.1).
const (
	TraitMultifdPostcopy = "multifd-postcopy"
	// TraitCancelYank: this source's mig2 ends a cancel stuck on a dead network with QMP yank
	// (SPEC §4.0.1: announced, not used by version 1's rules).
	TraitCancelYank = "cancel-yank"
	// TraitMultifdTeardown: this source's QEMU is trusted to cancel a migration with more than
	// two multifd channels cleanly. Neither QEMU 7.2 nor 10.0.2 is: they aborted, or wedged,
	// in the fault tests (SPEC §4.0.1, §6.2). Without it the auto channel count is at most 2.
	TraitMultifdTeardown = "multifd-teardown"
)

// HasCapability reports whether the host's QEMU has migration capability name.
func (h *HostFacts) HasCapability(name string) bool { return slices.Contains(h.Capabilities, name) }

// HasTrait reports whether the host has the trait.
func (h *HostFacts) HasTrait(name string) bool { return slices.Contains(h.Traits, name) }

func set(list []string) []string {
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}

func (h *HostFacts) marshal(b *builder) {
	b.putString(1, h.Mig2Version)
	b.putString(2, h.QEMUVersion)
	b.putStrings(3, set(h.Capabilities))
	b.putStrings(4, set(h.Parameters))
	b.putStrings(5, set(h.Compression))
	b.putStrings(6, set(h.Traits))
	b.putU32(7, h.Cores)
	b.putU64(8, h.MemoryBytes)
	b.putString(9, h.Hostname)
	if h.LinkMbps != 0 {
		b.putU32(10, h.LinkMbps)
	}
}

func (h *HostFacts) unmarshal(what string, v []byte) error {
	return decodeFields(what, v, 9, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			h.Mig2Version, err = decString(what+".mig2_version", val)
		case 2:
			h.QEMUVersion, err = decString(what+".qemu_version", val)
		case 3:
			h.Capabilities, err = decStrings(what+".capabilities", val, true)
		case 4:
			h.Parameters, err = decStrings(what+".parameters", val, true)
		case 5:
			h.Compression, err = decStrings(what+".compression", val, true)
		case 6:
			h.Traits, err = decStrings(what+".traits", val, true)
		case 7:
			h.Cores, err = decU32(what+".cores", val)
		case 8:
			h.MemoryBytes, err = decU64(what+".memory", val)
		case 9:
			h.Hostname, err = decString(what+".hostname", val)
		case 10:
			h.LinkMbps, err = decU32(what+".link_mbps", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// DeviceTree is a guest's migration-relevant configuration (SPEC §4.0, §8). Its canonical
// encoding (devices sorted by ID, properties by name) is what MarshalBinary returns and what
// Digest hashes.
type DeviceTree struct {
	MachineType string
	CPUModel    string
	RAMBytes    uint64
	Devices     []Device
}

// Device is one device of a DeviceTree.
type Device struct {
	ID    string            // stable identity across hosts: device id / libvirt alias / QOM path
	Type  string            // QOM type, e.g. "virtio-net-pci"
	Props map[string]string // migration-relevant properties, in QEMU's spelling
}

func (t *DeviceTree) marshal(b *builder) {
	devs := slices.Clone(t.Devices)
	slices.SortStableFunc(devs, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	b.putString(1, t.MachineType)
	b.putString(2, t.CPUModel)
	b.putU64(3, t.RAMBytes)
	b.field(4, func(b *builder) {
		for _, d := range devs {
			b.item(func(b *builder) {
				b.putString(1, d.ID)
				b.putString(2, d.Type)
				b.field(3, func(b *builder) {
					for _, k := range slices.Sorted(maps.Keys(d.Props)) {
						b.item(func(b *builder) {
							b.putString(1, k)
							b.putString(2, d.Props[k])
						})
					}
				})
			})
		}
	})
}

func (t *DeviceTree) unmarshal(what string, v []byte) error {
	return decodeFields(what, v, 4, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			t.MachineType, err = decString(what+".machine_type", val)
		case 2:
			t.CPUModel, err = decString(what+".cpu_model", val)
		case 3:
			t.RAMBytes, err = decU64(what+".ram", val)
		case 4:
			t.Devices, err = decDevices(what+".devices", val)
		default:
			return errUnknownField
		}
		return err
	})
}

func decDevices(what string, v []byte) ([]Device, error) {
	var out []Device
	err := decItems(what, v, func(item []byte) error {
		var d Device
		decErr := decodeFields(what, item, 3, func(tag uint16, val []byte) (err error) {
			switch tag {
			case 1:
				if d.ID, err = decString(what+".id", val); err == nil && d.ID == "" {
					err = decodeErrorf("%s: empty device id", what)
				}
			case 2:
				d.Type, err = decString(what+".type", val)
			case 3:
				d.Props, err = decProps(what+".props", val)
			default:
				return errUnknownField
			}
			return err
		})
		if decErr != nil {
			return decErr
		}
		if len(out) > 0 && d.ID <= out[len(out)-1].ID {
			return decodeErrorf("%s: not sorted or duplicate at %q", what, d.ID)
		}
		out = append(out, d)
		return nil
	})
	return out, err
}

func decProps(what string, v []byte) (map[string]string, error) {
	var out map[string]string
	last := ""
	err := decItems(what, v, func(item []byte) error {
		var name, value string
		decErr := decodeFields(what, item, 2, func(tag uint16, val []byte) (err error) {
			switch tag {
			case 1:
				if name, err = decString(what+".name", val); err == nil && name == "" {
					err = decodeErrorf("%s: empty property name", what)
				}
			case 2:
				value, err = decString(what+".value", val)
			default:
				return errUnknownField
			}
			return err
		})
		if decErr != nil {
			return decErr
		}
		if len(out) > 0 && name <= last {
			return decodeErrorf("%s: not sorted or duplicate at %q", what, name)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name], last = value, name
		return nil
	})
	return out, err
}

// Wants is what the source asks for (SPEC §4.0); zero values and "auto" mean "choose for me".
type Wants struct {
	Channels         uint32 // multifd channels, 0 = auto
	Compression      string // "auto" or "", "none", "zlib", "zstd", ...
	CompressionLevel uint32 // 0 = QEMU default
	Postcopy         bool   // the source allows postcopy
	PostcopyPreempt  bool
	ZeroCopySend     bool
	MaxBandwidth     uint64 // bytes/s, 0 = auto (unlimited)
	DowntimeLimitMs  uint64 // 0 = auto
}

func (w *Wants) marshal(b *builder) {
	b.putU32(1, w.Channels)
	b.putString(2, w.Compression)
	b.putU32(3, w.CompressionLevel)
	b.putBool(4, w.Postcopy)
	b.putBool(5, w.PostcopyPreempt)
	b.putBool(6, w.ZeroCopySend)
	b.putU64(7, w.MaxBandwidth)
	b.putU64(8, w.DowntimeLimitMs)
}

func (w *Wants) unmarshal(what string, v []byte) error {
	return decodeFields(what, v, 8, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			w.Channels, err = decU32(what+".channels", val)
		case 2:
			w.Compression, err = decString(what+".compression", val)
		case 3:
			w.CompressionLevel, err = decU32(what+".compression_level", val)
		case 4:
			w.Postcopy, err = decBool(what+".postcopy", val)
		case 5:
			w.PostcopyPreempt, err = decBool(what+".postcopy_preempt", val)
		case 6:
			w.ZeroCopySend, err = decBool(what+".zero_copy_send", val)
		case 7:
			w.MaxBandwidth, err = decU64(what+".max_bandwidth", val)
		case 8:
			w.DowntimeLimitMs, err = decU64(what+".downtime_limit", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// Limits are the destination's limits (SPEC §4.0).
type Limits struct {
	MaxChannels  uint32 // 0 = no limit
	DenyPostcopy bool   // local policy forbids postcopy
}

func (l *Limits) marshal(b *builder) {
	b.putU32(1, l.MaxChannels)
	b.putBool(2, l.DenyPostcopy)
}

func (l *Limits) unmarshal(what string, v []byte) error {
	return decodeFields(what, v, 2, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			l.MaxChannels, err = decU32(what+".max_channels", val)
		case 2:
			l.DenyPostcopy, err = decBool(what+".deny_postcopy", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// Compressibility is the source's measured compressibility hint (SPEC §4.1 field 10).
type Compressibility struct {
	Measured bool
	Percent  uint8 // 0..100: share of guest memory that compresses well
}

const compressibilityUnknown = 0xFFFF

// Adjustment records one agreed value that differs from what the source asked (SPEC §6.8).
type Adjustment struct {
	Param  string // QEMU's parameter/capability name, e.g. "multifd-channels"
	Asked  string
	Agreed string
	Reason Reason
	Detail string
}

func (a Adjustment) String() string {
	s := fmt.Sprintf("%s: asked %s, agreed %s (%s)", a.Param, a.Asked, a.Agreed, a.Reason)
	if a.Detail != "" {
		s += ": " + a.Detail
	}
	return s
}

// Agreement is the agreed migration set (SPEC §4.0, §5, §6), the output of Negotiate.
type Agreement struct {
	Version               uint16
	Features              []string
	Channels              uint32
	Compression           string
	CompressionLevel      uint32
	Postcopy              bool
	PostcopyPreempt       bool
	ZeroCopySend          bool
	MaxBandwidth          uint64 // bytes/s, 0 = unlimited
	DowntimeLimitMs       uint64
	TLS                   bool
	ReturnPath            bool
	PauseBeforeSwitchover bool
	Adjustments           []Adjustment
}

// Adjustment returns the adjustment for param, if any.
func (a *Agreement) Adjustment(param string) (Adjustment, bool) {
	for _, adj := range a.Adjustments {
		if adj.Param == param {
			return adj, true
		}
	}
	return Adjustment{}, false
}

// String renders the agreement on one line for logs.
func (a *Agreement) String() string {
	bw := "unlimited"
	if a.MaxBandwidth != 0 {
		bw = fmt.Sprintf("%d B/s", a.MaxBandwidth)
	}
	return fmt.Sprintf("protocol-version=%d channels=%d compression=%s level=%d postcopy=%t preempt=%t zero-copy=%t bandwidth=%s downtime=%dms tls=%t features=%v",
		a.Version, a.Channels, a.Compression, a.CompressionLevel, a.Postcopy, a.PostcopyPreempt, a.ZeroCopySend, bw, a.DowntimeLimitMs, a.TLS, a.Features)
}

func (a *Agreement) marshal(b *builder) {
	b.putU16(1, a.Version)
	b.putStrings(2, set(a.Features))
	b.putU32(3, a.Channels)
	b.putString(4, a.Compression)
	b.putU32(5, a.CompressionLevel)
	b.putBool(6, a.Postcopy)
	b.putBool(7, a.PostcopyPreempt)
	b.putBool(8, a.ZeroCopySend)
	b.putU64(9, a.MaxBandwidth)
	b.putU64(10, a.DowntimeLimitMs)
	b.putBool(11, a.TLS)
	b.putBool(12, a.ReturnPath)
	b.putBool(13, a.PauseBeforeSwitchover)
	b.field(14, func(b *builder) {
		for _, adj := range a.Adjustments {
			b.item(func(b *builder) {
				b.putString(1, adj.Param)
				b.putString(2, adj.Asked)
				b.putString(3, adj.Agreed)
				b.putString(4, string(adj.Reason))
				b.putString(5, adj.Detail)
			})
		}
	})
}

func (a *Agreement) unmarshal(what string, v []byte) error {
	return decodeFields(what, v, 14, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			a.Version, err = decU16(what+".version", val)
		case 2:
			a.Features, err = decStrings(what+".features", val, true)
		case 3:
			if a.Channels, err = decU32(what+".channels", val); err == nil && a.Channels == 0 {
				err = decodeErrorf("%s: zero channels (v2 is always multifd)", what)
			}
		case 4:
			a.Compression, err = decString(what+".compression", val)
		case 5:
			a.CompressionLevel, err = decU32(what+".compression_level", val)
		case 6:
			a.Postcopy, err = decBool(what+".postcopy", val)
		case 7:
			a.PostcopyPreempt, err = decBool(what+".postcopy_preempt", val)
		case 8:
			a.ZeroCopySend, err = decBool(what+".zero_copy_send", val)
		case 9:
			a.MaxBandwidth, err = decU64(what+".max_bandwidth", val)
		case 10:
			a.DowntimeLimitMs, err = decU64(what+".downtime_limit", val)
		case 11:
			a.TLS, err = decBool(what+".tls", val)
		case 12:
			a.ReturnPath, err = decBool(what+".return_path", val)
		case 13:
			a.PauseBeforeSwitchover, err = decBool(what+".pause_before_switchover", val)
		case 14:
			a.Adjustments, err = decAdjustments(what+".adjustments", val)
		default:
			return errUnknownField
		}
		return err
	})
}

func decAdjustments(what string, v []byte) ([]Adjustment, error) {
	var out []Adjustment
	err := decItems(what, v, func(item []byte) error {
		var a Adjustment
		decErr := decodeFields(what, item, 5, func(tag uint16, val []byte) (err error) {
			var str string
			switch tag {
			case 1:
				a.Param, err = decString(what+".param", val)
			case 2:
				a.Asked, err = decString(what+".asked", val)
			case 3:
				a.Agreed, err = decString(what+".agreed", val)
			case 4:
				str, err = decString(what+".reason", val)
				a.Reason = Reason(str)
			case 5:
				a.Detail, err = decString(what+".detail", val)
			default:
				return errUnknownField
			}
			return err
		})
		if decErr != nil {
			return decErr
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// ---------------------------------------------------------------------------------------------
// Messages (SPEC §4.1–§4.9)

// MsgHello is the source's opening message.
const MsgHello MsgType = 1

// Hello is the source's opening message (SPEC §4.1).
type Hello struct {
	Versions        VersionRange
	Nonce           [32]byte
	Features        []Feature
	MigrationID     string
	Guest           string
	Wants           Wants
	Host            HostFacts
	TLS             bool
	DeviceTree      DeviceTree
	Compressibility Compressibility
	// GuestConfig is the guest's configuration as the destination should create it: the
	// libvirt domain XML for libvirt guests, empty for plain QEMU (SPEC §4.1 field 11).
	GuestConfig string
}

func (*Hello) Type() MsgType { return MsgHello }

func (m *Hello) marshal(b *builder) {
	b.putRange(1, m.Versions)
	b.putBytes(2, m.Nonce[:])
	putFeatures(b, 3, m.Features)
	b.putString(4, m.MigrationID)
	b.putString(5, m.Guest)
	b.field(6, m.Wants.marshal)
	b.field(7, m.Host.marshal)
	b.putBool(8, m.TLS)
	b.field(9, m.DeviceTree.marshal)
	c := uint16(compressibilityUnknown)
	if m.Compressibility.Measured {
		c = uint16(m.Compressibility.Percent)
	}
	b.putU16(10, c)
	b.putString(11, m.GuestConfig)
}

func (m *Hello) unmarshal(body []byte) error {
	return decodeFields("Hello", body, 11, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			m.Versions, err = decRange("Hello.versions", val)
		case 2:
			m.Nonce, err = decBytes32("Hello.nonce", val)
		case 3:
			m.Features, err = decFeatures("Hello.features", val)
		case 4:
			m.MigrationID, err = decString("Hello.migration_id", val)
		case 5:
			m.Guest, err = decString("Hello.guest", val)
		case 6:
			err = m.Wants.unmarshal("Hello.wants", val)
		case 7:
			err = m.Host.unmarshal("Hello.host", val)
		case 8:
			m.TLS, err = decBool("Hello.tls", val)
		case 9:
			err = m.DeviceTree.unmarshal("Hello.device_tree", val)
		case 10:
			var c uint16
			if c, err = decU16("Hello.compressibility", val); err == nil {
				switch {
				case c == compressibilityUnknown:
					m.Compressibility = Compressibility{}
				case c <= 100:
					m.Compressibility = Compressibility{Measured: true, Percent: uint8(c)}
				default:
					err = decodeErrorf("Hello.compressibility: %d is not a percentage", c)
				}
			}
		case 11:
			m.GuestConfig, err = decString("Hello.guest_config", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgOffer is the destination's answer to Hello.
const MsgOffer MsgType = 2

// Offer is the destination's answer to Hello (SPEC §4.2).
type Offer struct {
	Versions   VersionRange
	Nonce      [32]byte
	Features   []Feature
	Guest      string
	Host       HostFacts
	Limits     Limits
	TLS        bool
	DeviceTree DeviceTree
}

func (*Offer) Type() MsgType { return MsgOffer }

func (m *Offer) marshal(b *builder) {
	b.putRange(1, m.Versions)
	b.putBytes(2, m.Nonce[:])
	putFeatures(b, 3, m.Features)
	b.putString(4, m.Guest)
	b.field(5, m.Host.marshal)
	b.field(6, m.Limits.marshal)
	b.putBool(7, m.TLS)
	b.field(8, m.DeviceTree.marshal)
}

func (m *Offer) unmarshal(body []byte) error {
	return decodeFields("Offer", body, 8, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			m.Versions, err = decRange("Offer.versions", val)
		case 2:
			m.Nonce, err = decBytes32("Offer.nonce", val)
		case 3:
			m.Features, err = decFeatures("Offer.features", val)
		case 4:
			m.Guest, err = decString("Offer.guest", val)
		case 5:
			err = m.Host.unmarshal("Offer.host", val)
		case 6:
			err = m.Limits.unmarshal("Offer.limits", val)
		case 7:
			m.TLS, err = decBool("Offer.tls", val)
		case 8:
			err = m.DeviceTree.unmarshal("Offer.device_tree", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgAgree carries the source's computed agreement.
const MsgAgree MsgType = 3

// Agree carries the source's computed agreement (SPEC §4.3), bound to this session by the
// transcript hash through Offer: a replayed Agree cannot match a fresh Offer's nonce.
type Agree struct {
	Agreement      Agreement
	TranscriptHash [32]byte // through Offer (SPEC §7)
}

func (*Agree) Type() MsgType { return MsgAgree }

func (m *Agree) marshal(b *builder) {
	b.field(1, m.Agreement.marshal)
	b.putBytes(2, m.TranscriptHash[:])
}

func (m *Agree) unmarshal(body []byte) error {
	return decodeFields("Agree", body, 2, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			err = m.Agreement.unmarshal("Agree.agreement", val)
		case 2:
			m.TranscriptHash, err = decBytes32("Agree.transcript_hash", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgReady: the destination has applied the agreement and listens.
const MsgReady MsgType = 4

// Ready says the destination applied the agreement and listens on MigrationURI (SPEC §4.4).
type Ready struct {
	MigrationURI   string
	TranscriptHash [32]byte // through Agree (SPEC §7)
	// Prepare is informative (SPEC §4.4): how long the destination spent preparing, Hello to
	// Offer plus Agree to Ready; microseconds on the wire.
	Prepare time.Duration
}

func (*Ready) Type() MsgType { return MsgReady }

func (m *Ready) marshal(b *builder) {
	b.putString(1, m.MigrationURI)
	b.putBytes(2, m.TranscriptHash[:])
	b.putU64(3, uint64(max(m.Prepare, 0)/time.Microsecond))
}

func (m *Ready) unmarshal(body []byte) error {
	return decodeFields("Ready", body, 3, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			m.MigrationURI, err = decString("Ready.migration_uri", val)
		case 2:
			m.TranscriptHash, err = decBytes32("Ready.transcript_hash", val)
		case 3:
			var us uint64
			us, err = decU64("Ready.prepare_us", val)
			m.Prepare = time.Duration(min(us, math.MaxInt64/uint64(time.Microsecond))) * time.Microsecond
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgStart: the source is starting its QEMU migration.
const MsgStart MsgType = 5

// Start says the source is starting its QEMU migration (SPEC §4.5).
type Start struct {
	TranscriptHash [32]byte // through Ready (SPEC §7)
}

func (*Start) Type() MsgType { return MsgStart }

func (m *Start) marshal(b *builder) { b.putBytes(1, m.TranscriptHash[:]) }

func (m *Start) unmarshal(body []byte) error {
	return decodeFields("Start", body, 1, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			m.TranscriptHash, err = decBytes32("Start.transcript_hash", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgProgress: the sender's QEMU migration status.
const MsgProgress MsgType = 6

// Progress is the sender's QEMU migration status, and a keep-alive (SPEC §4.6).
type Progress struct {
	Status      string // QEMU's migration status, e.g. "active"
	Transferred uint64
	Remaining   uint64
	Total       uint64
	Message     string
}

func (*Progress) Type() MsgType { return MsgProgress }

func (m *Progress) marshal(b *builder) {
	b.putString(1, m.Status)
	b.putU64(2, m.Transferred)
	b.putU64(3, m.Remaining)
	b.putU64(4, m.Total)
	b.putString(5, m.Message)
}

func (m *Progress) unmarshal(body []byte) error {
	return decodeFields("Progress", body, 5, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			m.Status, err = decString("Progress.status", val)
		case 2:
			m.Transferred, err = decU64("Progress.transferred", val)
		case 3:
			m.Remaining, err = decU64("Progress.remaining", val)
		case 4:
			m.Total, err = decU64("Progress.total", val)
		case 5:
			m.Message, err = decString("Progress.message", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgSwitchover: the source QEMU reached pre-switchover.
const MsgSwitchover MsgType = 7

// Switchover says the source QEMU reached pre-switchover and is about to continue (SPEC §4.7).
type Switchover struct {
	Status string
}

func (*Switchover) Type() MsgType { return MsgSwitchover }

func (m *Switchover) marshal(b *builder) { b.putString(1, m.Status) }

func (m *Switchover) unmarshal(body []byte) error {
	return decodeFields("Switchover", body, 1, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			m.Status, err = decString("Switchover.status", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgResult: the destination's verdict.
const MsgResult MsgType = 8

// Outcome is the destination's verdict in Result (SPEC §4.8).
type Outcome uint8

const (
	OutcomeRunning   Outcome = 1 // the guest runs on the destination: the migration succeeded
	OutcomeFailed    Outcome = 2
	OutcomeCancelled Outcome = 3
)

func (o Outcome) String() string {
	switch o {
	case OutcomeRunning:
		return "running"
	case OutcomeFailed:
		return "failed"
	case OutcomeCancelled:
		return "cancelled"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Result is the destination's verdict; it ends the session (SPEC §4.8).
type Result struct {
	Outcome   Outcome
	Status    string // the destination QEMU's last migration status
	DestError string // the destination QEMU's own error text
	Details   string
}

func (*Result) Type() MsgType { return MsgResult }

func (m *Result) marshal(b *builder) {
	b.putU8(1, uint8(m.Outcome))
	b.putString(2, m.Status)
	b.putString(3, m.DestError)
	b.putString(4, m.Details)
}

func (m *Result) unmarshal(body []byte) error {
	return decodeFields("Result", body, 4, func(tag uint16, val []byte) (err error) {
		switch tag {
		case 1:
			var o uint8
			if o, err = decU8("Result.outcome", val); err == nil {
				m.Outcome = Outcome(o)
				if m.Outcome < OutcomeRunning || m.Outcome > OutcomeCancelled {
					err = decodeErrorf("Result.outcome: unknown value %d", o)
				}
			}
		case 2:
			m.Status, err = decString("Result.status", val)
		case 3:
			m.DestError, err = decString("Result.dest_error", val)
		case 4:
			m.Details, err = decString("Result.details", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MsgAbort ends the session with a reason.
const MsgAbort MsgType = 9

// Abort ends the session with a reason code (SPEC §4.9).
type Abort struct {
	Code    AbortCode
	Stage   Stage
	Message string
}

func (*Abort) Type() MsgType { return MsgAbort }

func (m *Abort) marshal(b *builder) {
	b.putU16(1, uint16(m.Code))
	b.putString(2, string(m.Stage))
	b.putString(3, m.Message)
}

func (m *Abort) unmarshal(body []byte) error {
	return decodeFields("Abort", body, 3, func(tag uint16, val []byte) (err error) {
		var str string
		switch tag {
		case 1:
			var c uint16
			c, err = decU16("Abort.code", val)
			m.Code = AbortCode(c)
		case 2:
			str, err = decString("Abort.stage", val)
			m.Stage = Stage(str)
		case 3:
			m.Message, err = decString("Abort.message", val)
		default:
			return errUnknownField
		}
		return err
	})
}

// MarshalBinary returns the tree's canonical encoding (SPEC §8.1): the field sequence of §4.0
// with devices sorted by ID and properties by name. It fails on duplicate or empty device IDs.
func (t *DeviceTree) MarshalBinary() ([]byte, error) {
	b := &builder{}
	t.marshal(b)
	var check DeviceTree
	if err := check.unmarshal("DeviceTree", b.bytes()); err != nil {
		return nil, err
	}
	return b.bytes(), nil
}

// UnmarshalBinary decodes a canonical encoding strictly.
func (t *DeviceTree) UnmarshalBinary(data []byte) error {
	var out DeviceTree
	if err := out.unmarshal("DeviceTree", data); err != nil {
		return err
	}
	*t = out
	return nil
}
