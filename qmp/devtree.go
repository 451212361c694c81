package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// DeviceTreeVersion is the version of the canonical DeviceTree encoding.
const DeviceTreeVersion = 1

// DeviceTree is the migration-relevant shape of a running QEMU: machine type,
// CPU model, RAM, memory backends, buses and devices, read from the QOM
// composition tree. Two identically started QEMUs give byte-identical
// Canonical encodings; see the package documentation for what is included,
// what is left out and why.
type DeviceTree struct {
	Version     int    `json:"version"`
	MachineType string `json:"machine-type"` // resolved, e.g. "pc-q35-7.2" (never an alias like "q35")
	CPUModel    string `json:"cpu-model"`    // e.g. "qemu64", "host", "Skylake-Server"
	CPUs        int    `json:"cpus"`         // vCPUs present
	RAMSize     int64  `json:"ram-size"`     // bytes of base memory
	// PluggedMemory is hot-pluggable memory (pc-dimm, virtio-mem), bytes.
	PluggedMemory int64 `json:"plugged-memory,omitempty"`
	// RAMBackend is the id of the memory backend holding the machine's RAM
	// (e.g. "pc.ram"), when the machine has one.
	RAMBackend     string          `json:"ram-backend,omitempty"`
	MemoryBackends []MemoryBackend `json:"memory-backends"`
	Buses          []Bus           `json:"buses"`
	Devices        []Device        `json:"devices"`
}

// MemoryBackend is a memory-backend-* object under /objects.
type MemoryBackend struct {
	ID   string `json:"id"`
	Type string `json:"type"` // memory-backend-ram, -file, -memfd
	Size int64  `json:"size"` // bytes
}

// Bus is a qdev bus (a QOM child of a device, e.g. /machine/q35/pcie.0).
type Bus struct {
	Path string `json:"path"`
	Type string `json:"type"` // e.g. "PCIE", "ISA", "virtio-pci-bus"
}

// Device is one qdev device of the composition tree.
type Device struct {
	Path string `json:"path"` // QOM path, e.g. /machine/peripheral/rng0
	Type string `json:"type"` // QOM type, e.g. virtio-rng-pci
	// ID is the user's (or libvirt's) device id: the name under
	// /machine/peripheral. Empty for anonymous and built-in devices.
	ID  string `json:"id,omitempty"`
	Bus string `json:"bus,omitempty"` // QOM path of the parent bus
	// Addr is the PCI address on Bus as slot.function in hex ("02.0").
	Addr string `json:"addr,omitempty"`
	// ROM is true when the device has an option ROM (its RAM block must
	// exist on both sides); ROMFile is the ROM's file name without any host
	// directory.
	ROM     bool   `json:"rom,omitempty"`
	ROMFile string `json:"romfile,omitempty"`
	// Props holds the other migration-relevant properties the device has
	// (see deviceProps), as compact JSON.
	Props map[string]json.RawMessage `json:"props,omitempty"`
}

// deviceProps are the properties read from every device that has them,
// besides addr, romfile and parent_bus. Each changes the migration stream or
// the guest-visible ABI when it differs: multifunction and the PCIe port
// numbering change config space; romsize/rombar the ROM RAM block (read
// only when the device has a ROM file);
// vectors and num-queues the MSI-X and virtqueue state; disable-legacy and
// disable-modern the virtio transport; size (pc-dimm) and memdev memory.
var deviceProps = []string{
	"bus-nr", "chassis", "disable-legacy", "disable-modern", "memdev",
	"multifunction", "num-queues", "port", "rombar", "romsize", "size",
	"slot", "vectors",
}

// ReadDeviceTree walks the QOM composition tree under /machine (child<...>
// properties only, never link<...>) and the memory backends under /objects,
// and returns the canonical DeviceTree. Only containers, devices and buses
// are entered: the QOM types of memory regions, IRQs and other objects that
// carry no device are recognised from their child<T> type and skipped
// without a round trip.
func ReadDeviceTree(ctx context.Context, ex Executor) (*DeviceTree, error) {
	r := &treeReader{ctx: ctx, ex: ex}
	t, err := r.read()
	if err != nil {
		return nil, fmt.Errorf("qmp: reading device tree: %w", err)
	}
	return t, nil
}

type treeReader struct {
	ctx                context.Context
	ex                 Executor
	devTypes, busTypes map[string]bool
	tree               DeviceTree
}

func (r *treeReader) typeSet(implements string) (map[string]bool, error) {
	types, err := QOMListTypes(r.ctx, r.ex, implements, false)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(types))
	for _, t := range types {
		set[t.Name] = true
	}
	return set, nil
}

func (r *treeReader) getString(path, prop string) (string, error) {
	raw, err := QOMGet(r.ctx, r.ex, path, prop)
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("qom-get %s %s: %w", path, prop, err)
	}
	return s, nil
}

func (r *treeReader) read() (*DeviceTree, error) {
	var err error
	if r.devTypes, err = r.typeSet("device"); err != nil {
		return nil, err
	}
	if r.busTypes, err = r.typeSet("bus"); err != nil {
		return nil, err
	}
	t := &r.tree
	t.Version = DeviceTreeVersion

	mtype, err := r.getString("/machine", "type")
	if err != nil {
		return nil, err
	}
	t.MachineType = strings.TrimSuffix(mtype, "-machine")

	var mem struct {
		Base    int64 `json:"base-memory"`
		Plugged int64 `json:"plugged-memory"`
	}
	if err := r.ex.Execute(r.ctx, "query-memory-size-summary", nil, &mem); err != nil {
		return nil, err
	}
	t.RAMSize, t.PluggedMemory = mem.Base, mem.Plugged

	var cpus []struct {
		QOMPath string `json:"qom-path"`
		Target  string `json:"target"`
	}
	if err := r.ex.Execute(r.ctx, "query-cpus-fast", nil, &cpus); err != nil {
		return nil, err
	}
	t.CPUs = len(cpus)
	if len(cpus) > 0 {
		ctype, err := r.getString(cpus[0].QOMPath, "type")
		if err != nil {
			return nil, err
		}
		t.CPUModel = cpuModel(ctype, cpus[0].Target)
	}

	if err := r.walk("/machine", true); err != nil {
		return nil, err
	}
	if err := r.readBackends(); err != nil {
		return nil, err
	}
	t.sort()
	return t, nil
}

// cpuModel turns a CPU QOM type into the -cpu model name:
// "qemu64-x86_64-cpu" -> "qemu64".
func cpuModel(qomType, target string) string {
	if target != "" {
		if m, ok := strings.CutSuffix(qomType, "-"+target+"-cpu"); ok {
			return m
		}
	}
	return strings.TrimSuffix(qomType, "-cpu")
}

// walk lists path and enters its children. isMachine marks /machine itself
// (whose properties are read separately).
func (r *treeReader) walk(path string, isMachine bool) error {
	props, err := QOMList(r.ctx, r.ex, path)
	if err != nil {
		return err
	}
	sort.Slice(props, func(i, j int) bool { return props[i].Name < props[j].Name })
	if isMachine {
		for _, p := range props {
			if p.Name == "memory-backend" {
				if be, err := r.getString(path, p.Name); err == nil && be != "" {
					r.tree.RAMBackend = strings.TrimPrefix(be, "/objects/")
				}
			}
		}
	}
	for _, p := range props {
		ct, ok := p.ChildType()
		if !ok {
			continue
		}
		child := path + "/" + p.Name
		switch {
		case ct == "container":
			err = r.walk(child, false)
		case r.devTypes[ct]:
			err = r.device(child, ct)
		case r.busTypes[ct]:
			r.addBus(child, ct)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// addBus records a bus. Buses are not listed: a bus's devices are QOM
// children of their parent device or container, and the bus only holds
// link<> properties to them.
func (r *treeReader) addBus(path, qomType string) {
	r.tree.Buses = append(r.tree.Buses, Bus{Path: path, Type: qomType})
}

func (r *treeReader) device(path, qomType string) error {
	props, err := QOMList(r.ctx, r.ex, path)
	if err != nil {
		return err
	}
	sort.Slice(props, func(i, j int) bool { return props[i].Name < props[j].Name })
	d := Device{Path: path, Type: qomType}
	if id, ok := strings.CutPrefix(path, "/machine/peripheral/"); ok && !strings.Contains(id, "/") {
		d.ID = id
	}
	have := make(map[string]ObjectProperty, len(props))
	for _, p := range props {
		have[p.Name] = p
	}
	// The parent bus of a built-in device is fixed by the machine type;
	// read it only where it can vary: devices the user (or libvirt) added,
	// and PCI devices. That saves a round trip per built-in device.
	_, pci := have["addr"]
	userDevice := strings.HasPrefix(path, "/machine/peripheral/") || strings.HasPrefix(path, "/machine/peripheral-anon/")
	if _, ok := have["parent_bus"]; ok && (pci || userDevice) {
		if d.Bus, err = r.getString(path, "parent_bus"); err != nil {
			return err
		}
	}
	if _, ok := have["addr"]; ok {
		raw, err := QOMGet(r.ctx, r.ex, path, "addr")
		if err != nil {
			return err
		}
		var devfn int64
		if err := json.Unmarshal(raw, &devfn); err != nil {
			return fmt.Errorf("qom-get %s addr: %w", path, err)
		}
		if devfn >= 0 {
			d.Addr = fmt.Sprintf("%02x.%x", devfn>>3, devfn&7)
		}
	}
	if p, ok := have["romfile"]; ok && p.Type == "str" {
		f, err := r.getString(path, "romfile")
		if err != nil {
			return err
		}
		d.ROMFile, d.ROM = baseName(f), f != ""
	}
	for _, name := range deviceProps {
		if _, ok := have[name]; !ok {
			continue
		}
		if (name == "rombar" || name == "romsize") && !d.ROM {
			continue // without a ROM file there is no ROM to place or size
		}
		raw, err := QOMGet(r.ctx, r.ex, path, name)
		if err != nil {
			if ErrorClass(err) == ClassGenericError {
				continue // a property that cannot be read is not part of the tree
			}
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return fmt.Errorf("qom-get %s %s: %w", path, name, err)
		}
		if d.Props == nil {
			d.Props = make(map[string]json.RawMessage)
		}
		d.Props[name] = buf.Bytes()
	}
	r.tree.Devices = append(r.tree.Devices, d)

	// Children of a device: sub-devices (virtio-backend), buses, and
	// clutter (memory regions, IRQs) that walk skips by type.
	for _, p := range props {
		ct, ok := p.ChildType()
		if !ok {
			continue
		}
		child := path + "/" + p.Name
		switch {
		case r.devTypes[ct]:
			err = r.device(child, ct)
		case r.busTypes[ct]:
			r.addBus(child, ct)
		case ct == "container":
			err = r.walk(child, false)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *treeReader) readBackends() error {
	props, err := QOMList(r.ctx, r.ex, "/objects")
	if err != nil {
		return err
	}
	for _, p := range props {
		ct, ok := p.ChildType()
		if !ok || !strings.HasPrefix(ct, "memory-backend-") {
			continue
		}
		raw, err := QOMGet(r.ctx, r.ex, "/objects/"+p.Name, "size")
		if err != nil {
			return err
		}
		var size int64
		if err := json.Unmarshal(raw, &size); err != nil {
			return fmt.Errorf("qom-get /objects/%s size: %w", p.Name, err)
		}
		r.tree.MemoryBackends = append(r.tree.MemoryBackends, MemoryBackend{ID: p.Name, Type: ct, Size: size})
	}
	return nil
}

func (t *DeviceTree) sort() {
	sort.Slice(t.MemoryBackends, func(i, j int) bool { return t.MemoryBackends[i].ID < t.MemoryBackends[j].ID })
	sort.Slice(t.Buses, func(i, j int) bool { return t.Buses[i].Path < t.Buses[j].Path })
	sort.Slice(t.Devices, func(i, j int) bool { return t.Devices[i].Path < t.Devices[j].Path })
	if t.MemoryBackends == nil {
		t.MemoryBackends = []MemoryBackend{}
	}
	if t.Buses == nil {
		t.Buses = []Bus{}
	}
	if t.Devices == nil {
		t.Devices = []Device{}
	}
}

// Canonical returns the canonical encoding: JSON with every object's keys
// sorted, lists sorted by path (devices, buses) or id (backends), no
// insignificant whitespace. Equal trees give equal bytes.
func (t *DeviceTree) Canonical() []byte {
	c := t.clone()
	c.sort()
	b, err := json.Marshal(c)
	if err != nil {
		panic("qmp: DeviceTree is not encodable: " + err.Error()) // only plain types inside
	}
	out, err := canonicalJSON(b)
	if err != nil {
		panic("qmp: DeviceTree canonicalisation: " + err.Error())
	}
	return out
}

func (t *DeviceTree) clone() *DeviceTree {
	c := *t
	c.MemoryBackends = append([]MemoryBackend(nil), t.MemoryBackends...)
	c.Buses = append([]Bus(nil), t.Buses...)
	c.Devices = append([]Device(nil), t.Devices...)
	return &c
}

// canonicalJSON re-encodes JSON with sorted object keys, numbers kept
// exactly as written.
func canonicalJSON(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v) // maps marshal with sorted keys
}

// DecodeDeviceTree decodes a DeviceTree encoding (canonical or not). It
// rejects unknown versions, missing machine types, duplicate paths or ids
// and trailing data; unknown members are ignored.
func DecodeDeviceTree(data []byte) (*DeviceTree, error) {
	var t DeviceTree
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("qmp: device tree: %w", err)
	}
	if dec.More() {
		return nil, errors.New("qmp: device tree: trailing data")
	}
	if t.Version != DeviceTreeVersion {
		return nil, fmt.Errorf("qmp: device tree: version %d, want %d", t.Version, DeviceTreeVersion)
	}
	if t.MachineType == "" {
		return nil, errors.New("qmp: device tree: no machine type")
	}
	seen := make(map[string]bool)
	for _, d := range t.Devices {
		if d.Path == "" || d.Type == "" {
			return nil, errors.New("qmp: device tree: device without path or type")
		}
		if seen[d.Path] {
			return nil, fmt.Errorf("qmp: device tree: duplicate path %s", d.Path)
		}
		seen[d.Path] = true
	}
	for _, b := range t.Buses {
		if b.Path == "" || b.Type == "" {
			return nil, errors.New("qmp: device tree: bus without path or type")
		}
		if seen[b.Path] {
			return nil, fmt.Errorf("qmp: device tree: duplicate path %s", b.Path)
		}
		seen[b.Path] = true
	}
	ids := make(map[string]bool)
	for _, m := range t.MemoryBackends {
		if m.ID == "" || ids[m.ID] {
			return nil, fmt.Errorf("qmp: device tree: memory backend with empty or duplicate id %q", m.ID)
		}
		ids[m.ID] = true
	}
	t.sort()
	return &t, nil
}
