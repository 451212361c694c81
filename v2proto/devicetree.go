package v2proto

// Device-tree canonical form and diff rules, SPEC §8.

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Digest returns the SHA-256 of the tree's canonical encoding (SPEC §8.1).
func (t *DeviceTree) Digest() ([32]byte, error) {
	enc, err := t.MarshalBinary()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(enc), nil
}

// Device returns the device with the given id.
func (t *DeviceTree) Device(id string) (Device, bool) {
	for _, d := range t.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return Device{}, false
}

// DiffKind names a kind of device-tree difference (SPEC §8.2).
type DiffKind string

// Diff kinds, SPEC §8.2.
const (
	DiffMachineType DiffKind = "machine-type"
	DiffCPUModel    DiffKind = "cpu-model"
	DiffRAMSize     DiffKind = "ram-size"
	DiffMissing     DiffKind = "missing"  // on the source, not on the destination
	DiffExtra       DiffKind = "extra"    // on the destination, not on the source
	DiffType        DiffKind = "type"     // same id, different QOM types
	DiffProperty    DiffKind = "property" // same id and type, a property differs
)

// informationalProps are host-side resources that legitimately differ (SPEC §8.2).
var informationalProps = map[string]bool{
	"netdev": true, "drive": true, "chardev": true, "iothread": true, "memdev": true,
	"bootindex": true, "fd": true, "vhostfd": true, "ifname": true,
}

// IsInformational reports whether a property difference never refuses a migration (SPEC §8.2).
func IsInformational(prop string) bool {
	return informationalProps[prop] || strings.HasPrefix(prop, "info.")
}

// DiffEntry is one difference between the source tree and the destination tree.
type DiffEntry struct {
	Kind        DiffKind `json:"kind"`
	Device      string   `json:"device,omitempty"`      // device id
	DeviceType  string   `json:"device_type,omitempty"` // its type (the source's, if it has one)
	Property    string   `json:"property,omitempty"`
	Source      string   `json:"source"`      // the source's value ("" when absent)
	Destination string   `json:"destination"` // the destination's value ("" when absent)
	Fatal       bool     `json:"fatal"`
}

// Diff is the comparison of a source and a destination device tree (SPEC §8.2).
type Diff struct {
	SourceHost      string      `json:"source_host,omitempty"`
	DestinationHost string      `json:"destination_host,omitempty"`
	Entries         []DiffEntry `json:"entries"`
}

// DiffTrees compares the source tree with the destination tree by the rules of SPEC §8.2. It is
// a pure function; entries come in the order the spec gives.
func DiffTrees(source, destination *DeviceTree) *Diff {
	d := &Diff{Entries: []DiffEntry{}}
	add := func(e DiffEntry) { d.Entries = append(d.Entries, e) }
	if source.MachineType != destination.MachineType {
		add(DiffEntry{Kind: DiffMachineType, Source: source.MachineType, Destination: destination.MachineType, Fatal: true})
	}
	if source.CPUModel != destination.CPUModel {
		add(DiffEntry{Kind: DiffCPUModel, Source: source.CPUModel, Destination: destination.CPUModel, Fatal: true})
	}
	if source.RAMBytes != destination.RAMBytes {
		add(DiffEntry{Kind: DiffRAMSize, Source: fmt.Sprint(source.RAMBytes), Destination: fmt.Sprint(destination.RAMBytes), Fatal: true})
	}
	src := byID(source.Devices)
	dst := byID(destination.Devices)
	ids := slices.Sorted(maps.Keys(src))
	for id := range dst {
		if _, ok := src[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		s, inS := src[id]
		t, inD := dst[id]
		switch {
		case !inD:
			add(DiffEntry{Kind: DiffMissing, Device: id, DeviceType: s.Type, Source: s.Type, Fatal: true})
		case !inS:
			add(DiffEntry{Kind: DiffExtra, Device: id, DeviceType: t.Type, Destination: t.Type, Fatal: true})
		case s.Type != t.Type:
			add(DiffEntry{Kind: DiffType, Device: id, DeviceType: s.Type, Source: s.Type, Destination: t.Type, Fatal: true})
		default:
			names := slices.Sorted(maps.Keys(s.Props))
			for n := range t.Props {
				if _, ok := s.Props[n]; !ok {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			for _, n := range names {
				sv, dv := s.Props[n], t.Props[n] // absent compares as "" (SPEC §8.2)
				if sv == dv {
					continue
				}
				add(DiffEntry{Kind: DiffProperty, Device: id, DeviceType: s.Type, Property: n, Source: sv, Destination: dv, Fatal: !IsInformational(n)})
			}
		}
	}
	return d
}

func byID(devs []Device) map[string]Device {
	m := make(map[string]Device, len(devs))
	for _, d := range devs {
		m[d.ID] = d
	}
	return m
}

// Fatal reports whether any entry refuses the migration.
func (d *Diff) Fatal() bool {
	for _, e := range d.Entries {
		if e.Fatal {
			return true
		}
	}
	return false
}

// Empty reports whether the trees are identical.
func (d *Diff) Empty() bool { return len(d.Entries) == 0 }

// FatalEntries returns the fatal entries.
func (d *Diff) FatalEntries() []DiffEntry {
	var out []DiffEntry
	for _, e := range d.Entries {
		if e.Fatal {
			out = append(out, e)
		}
	}
	return out
}

// MarshalJSON renders the diff for machines (SPEC §8.2).
func (d *Diff) MarshalJSON() ([]byte, error) {
	type plain Diff
	entries := d.Entries
	if entries == nil {
		entries = []DiffEntry{}
	}
	return json.Marshal(struct {
		Fatal bool `json:"fatal"`
		plain
	}{d.Fatal(), plain{SourceHost: d.SourceHost, DestinationHost: d.DestinationHost, Entries: entries}})
}

func side(host, role string) string {
	if host == "" {
		return role
	}
	return fmt.Sprintf("%s (%s)", role, host)
}

// String renders the diff for people: a summary line, then one line per entry naming the
// device, its type and both values.
func (d *Diff) String() string {
	if d.Empty() {
		return "device trees are identical"
	}
	nf := len(d.FatalEntries())
	var b strings.Builder
	fmt.Fprintf(&b, "device trees differ between %s and %s: %d fatal, %d informational",
		side(d.SourceHost, "source"), side(d.DestinationHost, "destination"), nf, len(d.Entries)-nf)
	// When the machine types differ, every device the machine builds by itself differs too:
	// those lines are counted, not listed (the JSON report has them all).
	machineDiffers, builtin := false, 0
	for _, e := range d.Entries {
		machineDiffers = machineDiffers || e.Kind == DiffMachineType
	}
	for _, e := range d.Entries {
		if machineDiffers && strings.HasPrefix(e.Device, builtinDevicePrefix) {
			builtin++
			continue
		}
		b.WriteString("\n  ")
		if e.Fatal {
			b.WriteString("FATAL ")
		} else {
			b.WriteString("info  ")
		}
		b.WriteString(e.describe())
	}
	if builtin > 0 {
		fmt.Fprintf(&b, "\n  … and %d differences in devices the machine creates itself (%s…), which follow from the different machine types", builtin, builtinDevicePrefix)
	}
	return b.String()
}

// builtinDevicePrefix is where QEMU puts the devices a machine type creates by itself.
const builtinDevicePrefix = "/machine/unattached/"

func (e DiffEntry) device() string {
	if e.DeviceType != "" {
		return fmt.Sprintf("device %q (%s)", e.Device, e.DeviceType)
	}
	return fmt.Sprintf("device %q", e.Device)
}

func quoteOrAbsent(v string) string {
	if v == "" {
		return "absent"
	}
	return fmt.Sprintf("%q", v)
}

func (e DiffEntry) describe() string {
	switch e.Kind {
	case DiffMachineType:
		return fmt.Sprintf("machine type: source %q, destination %q", e.Source, e.Destination)
	case DiffCPUModel:
		return fmt.Sprintf("CPU model: source %q, destination %q", e.Source, e.Destination)
	case DiffRAMSize:
		return fmt.Sprintf("RAM size: source %s bytes, destination %s bytes", e.Source, e.Destination)
	case DiffMissing:
		return e.device() + ": missing on the destination"
	case DiffExtra:
		return e.device() + ": extra on the destination (not on the source)"
	case DiffType:
		return fmt.Sprintf("device %q: type differs: source %s, destination %s", e.Device, e.Source, e.Destination)
	case DiffProperty:
		// An empty value means the property is absent (or empty: the same, SPEC §8.2).
		return fmt.Sprintf("%s: property %q: source %s, destination %s", e.device(), e.Property,
			quoteOrAbsent(e.Source), quoteOrAbsent(e.Destination))
	}
	return fmt.Sprintf("%s %s: source %q, destination %q", e.Kind, e.Device, e.Source, e.Destination)
}
