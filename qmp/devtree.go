package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
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
//
// The walk pipelines its requests: QMP answers in order and QEMU queues up
// to 8 requests per monitor, so keeping treeInFlight requests outstanding
// turns about 150 sequential round trips into a few dozen batches (a q35
// guest's tree: 160 ms sequentially, about a fifth of that pipelined, with
// the guest busy under TCG). The result does not depend on the order of the
// replies: the tree is sorted at the end.
func ReadDeviceTree(ctx context.Context, ex Executor) (*DeviceTree, error) {
	t, _, err := ReadDeviceTreeBase(ctx, ex)
	return t, err
}

// TreeBase is the part of a QEMU's device tree that cannot change while that QEMU process
// runs: the machine type, CPU model and RAM backend, the built-in devices and buses (everything
// outside /machine/peripheral and /machine/peripheral-anon, where device_add puts every
// hot-plugged device), and the binary's QOM type sets. ReadDeviceTreeFrom re-reads only the rest.
type TreeBase struct {
	Version     int      `json:"version"`
	MachineType string   `json:"machine-type"`
	CPUModel    string   `json:"cpu-model"`
	RAMBackend  string   `json:"ram-backend,omitempty"`
	DeviceTypes []string `json:"device-types"`
	BusTypes    []string `json:"bus-types"`
	Buses       []Bus    `json:"buses"`
	Devices     []Device `json:"devices"`
}

// userRoots hold the devices that can come and go while QEMU runs: -device and device_add put
// a device with an id under /machine/peripheral, one without under /machine/peripheral-anon.
var userRoots = []string{"/machine/peripheral", "/machine/peripheral-anon"}

func underUserRoot(path string) bool {
	for _, r := range userRoots {
		if path == r || strings.HasPrefix(path, r+"/") {
			return true
		}
	}
	return false
}

// ReadDeviceTreeBase reads the whole tree, and its TreeBase for later ReadDeviceTreeFrom calls
// on the same QEMU process.
func ReadDeviceTreeBase(ctx context.Context, ex Executor) (*DeviceTree, *TreeBase, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &treeReader{ctx: ctx, cancel: cancel, ex: ex, sem: make(chan struct{}, treeInFlight)}
	t, err := r.read(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("qmp: reading device tree: %w", err)
	}
	b := &TreeBase{
		Version: DeviceTreeVersion, MachineType: t.MachineType, CPUModel: t.CPUModel, RAMBackend: t.RAMBackend,
		DeviceTypes: setList(r.devTypes), BusTypes: setList(r.busTypes), Buses: []Bus{}, Devices: []Device{},
	}
	for _, bus := range t.Buses {
		if !underUserRoot(bus.Path) {
			b.Buses = append(b.Buses, bus)
		}
	}
	for _, d := range t.Devices {
		if !underUserRoot(d.Path) {
			b.Devices = append(b.Devices, d)
		}
	}
	return t, b, nil
}

// ReadDeviceTreeFrom reads the tree of the QEMU process base was read from, re-reading only
// what can change while it runs: the hot-pluggable devices, memory backends, vCPU count and
// memory sizes. The result equals ReadDeviceTree's.
func ReadDeviceTreeFrom(ctx context.Context, ex Executor, base *TreeBase) (*DeviceTree, error) {
	if base == nil || base.Version != DeviceTreeVersion {
		return ReadDeviceTree(ctx, ex)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &treeReader{ctx: ctx, cancel: cancel, ex: ex, sem: make(chan struct{}, treeInFlight)}
	t, err := r.read(base)
	if err != nil {
		return nil, fmt.Errorf("qmp: reading device tree: %w", err)
	}
	return t, nil
}

func setList(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func listSet(list []string) map[string]bool {
	set := make(map[string]bool, len(list))
	for _, k := range list {
		set[k] = true
	}
	return set
}

// treeInFlight is how many QMP requests the tree walk keeps outstanding: QEMU's
// per-monitor request queue (QMP_REQ_QUEUE_LEN_MAX) holds 8.
const treeInFlight = 8

type treeReader struct {
	ctx                context.Context
	cancel             context.CancelFunc
	ex                 Executor
	sem                chan struct{}
	devTypes, busTypes map[string]bool

	wg      sync.WaitGroup // every goroutine of the walk
	errOnce sync.Once
	err     error
	mu      sync.Mutex // guards tree
	tree    DeviceTree
}

// Execute runs one request with at most treeInFlight outstanding.
func (r *treeReader) Execute(ctx context.Context, cmd string, args, result any) error {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.sem }()
	return r.ex.Execute(ctx, cmd, args, result)
}

// spawn runs fn in the walk's background; the first error ends the walk.
func (r *treeReader) spawn(fn func() error) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := fn(); err != nil {
			r.fail(err)
		}
	}()
}

func (r *treeReader) fail(err error) {
	r.errOnce.Do(func() {
		r.err = err
		r.cancel()
	})
}

// all runs fns concurrently and returns the first error.
func all(fns ...func() error) error {
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
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *treeReader) typeSet(implements string) (map[string]bool, error) {
	types, err := QOMListTypes(r.ctx, r, implements, false)
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
	raw, err := QOMGet(r.ctx, r, path, prop)
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("qom-get %s %s: %w", path, prop, err)
	}
	return s, nil
}

func (r *treeReader) read(base *TreeBase) (*DeviceTree, error) {
	t := &r.tree
	t.Version = DeviceTreeVersion
	var mem struct {
		Base    int64 `json:"base-memory"`
		Plugged int64 `json:"plugged-memory"`
	}
	var machine []ObjectProperty
	var cpuPath, cpuTarget string
	common := []func() error{
		func() error { return r.Execute(r.ctx, "query-memory-size-summary", nil, &mem) },
		func() error {
			var cpus []struct {
				QOMPath string `json:"qom-path"`
				Target  string `json:"target"`
			}
			if err := r.Execute(r.ctx, "query-cpus-fast", nil, &cpus); err != nil {
				return err
			}
			t.CPUs = len(cpus)
			if len(cpus) > 0 {
				cpuPath, cpuTarget = cpus[0].QOMPath, cpus[0].Target
			}
			return nil
		},
		r.readBackends,
	}
	if base != nil {
		r.devTypes, r.busTypes = listSet(base.DeviceTypes), listSet(base.BusTypes)
		t.MachineType, t.CPUModel, t.RAMBackend = base.MachineType, base.CPUModel, base.RAMBackend
		t.Buses = append(t.Buses, base.Buses...)
		t.Devices = append(t.Devices, base.Devices...)
		for _, root := range userRoots {
			r.spawn(func() error {
				err := r.walk(root)
				if ErrorClass(err) == ClassDeviceNotFound {
					return nil // created with the first such device
				}
				return err
			})
		}
	} else {
		common = append(common,
			func() (err error) { r.devTypes, err = r.typeSet("device"); return err },
			func() (err error) { r.busTypes, err = r.typeSet("bus"); return err },
			func() error {
				mtype, err := r.getString("/machine", "type")
				t.MachineType = strings.TrimSuffix(mtype, "-machine")
				return err
			},
			func() (err error) { machine, err = QOMList(r.ctx, r, "/machine"); return err },
		)
	}
	err := all(common...)
	if err == nil && base == nil && cpuPath != "" {
		var ctype string
		ctype, err = r.getString(cpuPath, "type")
		t.CPUModel = cpuModel(ctype, cpuTarget)
	}
	if err != nil {
		r.fail(err)
		r.wg.Wait()
		return nil, err
	}
	t.RAMSize, t.PluggedMemory = mem.Base, mem.Plugged
	if base == nil {
		for _, p := range machine {
			if p.Name == "memory-backend" {
				if be, err := r.getString("/machine", p.Name); err == nil && be != "" {
					t.RAMBackend = strings.TrimPrefix(be, "/objects/")
				}
			}
		}
		r.children("/machine", machine)
	}
	r.wg.Wait()
	if r.err != nil {
		return nil, r.err
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

// walk lists a container and enters its children.
func (r *treeReader) walk(path string) error {
	props, err := QOMList(r.ctx, r, path)
	if err != nil {
		return err
	}
	r.children(path, props)
	return nil
}

// children enters the child<> properties of path that hold containers, devices and buses;
// each is read in the background.
func (r *treeReader) children(path string, props []ObjectProperty) {
	for _, p := range props {
		ct, ok := p.ChildType()
		if !ok {
			continue
		}
		child := path + "/" + p.Name
		switch {
		case ct == "container":
			r.spawn(func() error { return r.walk(child) })
		case r.devTypes[ct]:
			r.spawn(func() error { return r.device(child, ct) })
		case r.busTypes[ct]:
			r.addBus(child, ct)
		}
	}
}

// addBus records a bus. Buses are not listed: a bus's devices are QOM
// children of their parent device or container, and the bus only holds
// link<> properties to them.
func (r *treeReader) addBus(path, qomType string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tree.Buses = append(r.tree.Buses, Bus{Path: path, Type: qomType})
}

func (r *treeReader) device(path, qomType string) error {
	props, err := QOMList(r.ctx, r, path)
	if err != nil {
		return err
	}
	// Children of a device: sub-devices (virtio-backend), buses, and
	// clutter (memory regions, IRQs) that children skips by type.
	r.children(path, props)

	d := Device{Path: path, Type: qomType}
	if id, ok := strings.CutPrefix(path, "/machine/peripheral/"); ok && !strings.Contains(id, "/") {
		d.ID = id
	}
	have := make(map[string]ObjectProperty, len(props))
	for _, p := range props {
		have[p.Name] = p
	}
	var mu sync.Mutex // guards d.Props
	prop := func(name string) func() error {
		return func() error {
			raw, err := QOMGet(r.ctx, r, path, name)
			if err != nil {
				if ErrorClass(err) == ClassGenericError {
					return nil // a property that cannot be read is not part of the tree
				}
				return err
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, raw); err != nil {
				return fmt.Errorf("qom-get %s %s: %w", path, name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if d.Props == nil {
				d.Props = make(map[string]json.RawMessage)
			}
			d.Props[name] = buf.Bytes()
			return nil
		}
	}
	var fetch []func() error
	// The parent bus of a built-in device is fixed by the machine type;
	// read it only where it can vary: devices the user (or libvirt) added,
	// and PCI devices. That saves a request per built-in device.
	_, pci := have["addr"]
	userDevice := strings.HasPrefix(path, "/machine/peripheral/") || strings.HasPrefix(path, "/machine/peripheral-anon/")
	if _, ok := have["parent_bus"]; ok && (pci || userDevice) {
		fetch = append(fetch, func() (err error) { d.Bus, err = r.getString(path, "parent_bus"); return err })
	}
	if pci {
		fetch = append(fetch, func() error {
			raw, err := QOMGet(r.ctx, r, path, "addr")
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
			return nil
		})
	}
	if p, ok := have["romfile"]; ok && p.Type == "str" {
		fetch = append(fetch, func() error {
			f, err := r.getString(path, "romfile")
			d.ROMFile, d.ROM = baseName(f), f != ""
			return err
		})
	}
	var romProps []func() error
	for _, name := range deviceProps {
		if _, ok := have[name]; !ok {
			continue
		}
		if name == "rombar" || name == "romsize" {
			romProps = append(romProps, prop(name)) // only with a ROM file: see below
			continue
		}
		fetch = append(fetch, prop(name))
	}
	if err := all(fetch...); err != nil {
		return err
	}
	if d.ROM { // without a ROM file there is no ROM to place or size
		if err := all(romProps...); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tree.Devices = append(r.tree.Devices, d)
	return nil
}

func (r *treeReader) readBackends() error {
	props, err := QOMList(r.ctx, r, "/objects")
	if err != nil {
		return err
	}
	var fetch []func() error
	var mu sync.Mutex
	for _, p := range props {
		ct, ok := p.ChildType()
		if !ok || !strings.HasPrefix(ct, "memory-backend-") {
			continue
		}
		fetch = append(fetch, func() error {
			raw, err := QOMGet(r.ctx, r, "/objects/"+p.Name, "size")
			if err != nil {
				return err
			}
			var size int64
			if err := json.Unmarshal(raw, &size); err != nil {
				return fmt.Errorf("qom-get /objects/%s size: %w", p.Name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			r.tree.MemoryBackends = append(r.tree.MemoryBackends, MemoryBackend{ID: p.Name, Type: ct, Size: size})
			return nil
		})
	}
	return all(fetch...)
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
