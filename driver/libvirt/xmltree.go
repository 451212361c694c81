package libvirt

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/mig2/mig2/v2proto"
)

// A libvirt guest's device tree comes from its domain XML (SPEC §8.1): the XML is what libvirt
// builds the QEMU command line from, on the source and on the destination, so comparing the
// source's live XML with the XML the destination will create compares the two QEMUs without a
// QMP query (which would mark the domain tainted). Devices libvirt does not model, added with
// <qemu:commandline>, are parsed from their -device arguments: they are exactly the ones plain
// libvirt lets diverge (FACTS.md).
//
// A device is identified by its kind and its position among devices of that kind ("disk[0]",
// "interface[1]"): libvirt requires the order to stay the same across a migration, and aliases
// exist only in a running domain's XML. Aliases and addresses are kept as informational
// properties ("info.alias", "info.address"); libvirt's own ABI check enforces addresses of the
// devices it models.

// node is a generic XML element.
type node struct {
	Name     string
	Attrs    map[string]string
	Children []*node
	Text     string
}

func (n *node) child(name string) *node {
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (n *node) attr(name string) string { return n.Attrs[name] }

// parseXML reads an XML document into generic nodes. Namespaced elements keep their prefix
// ("qemu:commandline") when the namespace is QEMU's.
func parseXML(data []byte) (*node, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	var stack []*node
	var root *node
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("libvirt: domain XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &node{Name: elemName(t.Name), Attrs: map[string]string{}}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
					continue
				}
				n.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			} else if root == nil {
				root = n
			} else {
				return nil, fmt.Errorf("libvirt: domain XML has more than one root element")
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += string(t)
			}
		}
	}
	if root == nil {
		return nil, fmt.Errorf("libvirt: domain XML is empty")
	}
	return root, nil
}

const qemuNS = "http://libvirt.org/schemas/domain/qemu/1.0"

func elemName(n xml.Name) string {
	if n.Space == qemuNS {
		return "qemu:" + n.Local
	}
	return n.Local
}

// DomainInfo is what mig2 reads from a domain XML besides the device tree.
type DomainInfo struct {
	Name     string
	Type     string // "kvm" or "qemu"
	Arch     string
	Machine  string
	Emulator string
	CPUXML   string // the <cpu> element, for CompareHypervisorCPU
}

// TreeFromXML builds the device tree of a domain XML.
func TreeFromXML(data []byte) (v2proto.DeviceTree, DomainInfo, error) {
	root, err := parseXML(data)
	if err != nil {
		return v2proto.DeviceTree{}, DomainInfo{}, err
	}
	if root.Name != "domain" {
		return v2proto.DeviceTree{}, DomainInfo{}, fmt.Errorf("libvirt: XML root is <%s>, not <domain>", root.Name)
	}
	info := DomainInfo{Type: root.attr("type")}
	if n := root.child("name"); n != nil {
		info.Name = strings.TrimSpace(n.Text)
	}
	var t v2proto.DeviceTree
	if os := root.child("os"); os != nil {
		if ty := os.child("type"); ty != nil {
			info.Machine, info.Arch = ty.attr("machine"), ty.attr("arch")
		}
	}
	t.MachineType = info.Machine
	t.CPUModel = cpuModel(root.child("cpu"))
	if c := root.child("cpu"); c != nil {
		info.CPUXML = renderXML(c)
	}
	if m := root.child("memory"); m != nil {
		t.RAMBytes = toBytes(strings.TrimSpace(m.Text), m.attr("unit"))
	}
	if v := root.child("vcpu"); v != nil {
		t.Devices = append(t.Devices, v2proto.Device{ID: "vcpus", Type: "vcpus", Props: map[string]string{"count": strings.TrimSpace(v.Text)}})
	}
	if devs := root.child("devices"); devs != nil {
		seen := map[string]int{}
		for _, d := range devs.Children {
			if d.Name == "emulator" {
				info.Emulator = strings.TrimSpace(d.Text)
				continue
			}
			i := seen[d.Name]
			seen[d.Name]++
			t.Devices = append(t.Devices, deviceOf(d, fmt.Sprintf("%s[%d]", d.Name, i)))
		}
	}
	if cl := root.child("qemu:commandline"); cl != nil {
		t.Devices = append(t.Devices, commandlineDevices(cl)...)
	}
	sort.SliceStable(t.Devices, func(i, j int) bool { return t.Devices[i].ID < t.Devices[j].ID })
	// Ids must be unique (SPEC §4.0): a repeated commandline id gets a suffix.
	for i := 1; i < len(t.Devices); i++ {
		if t.Devices[i].ID == t.Devices[i-1].ID {
			t.Devices[i].ID += fmt.Sprintf("#%d", i)
		}
	}
	sort.SliceStable(t.Devices, func(i, j int) bool { return t.Devices[i].ID < t.Devices[j].ID })
	return t, info, nil
}

// deviceOf describes one libvirt device element: its type is the element and its model
// ("rng/virtio", "controller/pci/pcie-root-port"), its properties the attributes that shape
// the guest's hardware.
func deviceOf(d *node, id string) v2proto.Device {
	dev := v2proto.Device{ID: id, Props: map[string]string{}}
	typ := []string{d.Name}
	switch d.Name {
	case "controller":
		typ = append(typ, d.attr("type"))
		if m := d.attr("model"); m != "" {
			typ = append(typ, m)
		}
		if ix := d.attr("index"); ix != "" {
			dev.Props["index"] = ix
		}
	case "disk":
		typ = append(typ, d.attr("device"))
		if tg := d.child("target"); tg != nil {
			dev.Props["bus"], dev.Props["info.dev"] = tg.attr("bus"), tg.attr("dev")
		}
	case "interface":
		if m := d.child("model"); m != nil {
			typ = append(typ, m.attr("type"))
		}
		if mac := d.child("mac"); mac != nil {
			dev.Props["mac"] = mac.attr("address")
		}
	case "video":
		if m := d.child("model"); m != nil {
			typ = append(typ, m.attr("type"))
			if v := m.attr("vram"); v != "" {
				dev.Props["vram"] = v
			}
		}
	case "serial", "console", "parallel", "channel":
		// type= is the host-side backend (pty, unix, file…): informational.
		if tg := d.child("target"); tg != nil {
			if ty := tg.attr("type"); ty != "" {
				typ = append(typ, ty)
			}
			if n := tg.attr("name"); n != "" {
				dev.Props["name"] = n
			}
		}
		dev.Props["info.backend"] = d.attr("type")
	case "graphics":
		dev.Props["info.backend"] = d.attr("type") // host-side: no guest hardware
	case "input":
		typ = append(typ, d.attr("type"))
		dev.Props["bus"] = d.attr("bus")
	case "rng":
		typ = append(typ, d.attr("model"))
		if b := d.child("backend"); b != nil {
			dev.Props["info.backend"] = b.attr("model")
		}
	default:
		if m := d.attr("model"); m != "" {
			typ = append(typ, m)
		} else if ty := d.attr("type"); ty != "" {
			typ = append(typ, ty)
		}
	}
	dev.Type = strings.Join(typ, "/")
	if a := d.child("alias"); a != nil {
		dev.Props["info.alias"] = a.attr("name")
	}
	if a := d.child("address"); a != nil {
		dev.Props["info.address"] = addressString(a)
	}
	return dev
}

func addressString(a *node) string {
	keys := make([]string, 0, len(a.Attrs))
	for k := range a.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+a.Attrs[k])
	}
	return strings.Join(parts, ",")
}

// commandlineDevices parses the -device arguments of <qemu:commandline>.
func commandlineDevices(cl *node) []v2proto.Device {
	var args []string
	for _, a := range cl.Children {
		if a.Name == "qemu:arg" {
			args = append(args, a.attr("value"))
		}
	}
	var out []v2proto.Device
	n := 0
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-device" {
			continue
		}
		opts := strings.Split(args[i+1], ",")
		dev := v2proto.Device{Type: opts[0], Props: map[string]string{"info.source": "qemu:commandline"}}
		for _, o := range opts[1:] {
			k, v, _ := strings.Cut(o, "=")
			if k == "" {
				continue
			}
			if k == "id" {
				dev.ID = "qemu:commandline/" + v
				continue
			}
			if k == "driver" && dev.Type == "" {
				dev.Type = v
				continue
			}
			dev.Props[k] = v
		}
		if dev.ID == "" {
			dev.ID = fmt.Sprintf("qemu:commandline/device[%d]", n)
		}
		n++
		out = append(out, dev)
	}
	return out
}

func cpuModel(c *node) string {
	if c == nil {
		return ""
	}
	if m := c.child("model"); m != nil && strings.TrimSpace(m.Text) != "" {
		return strings.TrimSpace(m.Text)
	}
	if mode := c.attr("mode"); mode != "" {
		return mode
	}
	return ""
}

func toBytes(v, unit string) uint64 {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0
	}
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return n
	case "k", "kib", "":
		return n << 10
	case "kb":
		return n * 1000
	case "m", "mib":
		return n << 20
	case "mb":
		return n * 1000 * 1000
	case "g", "gib":
		return n << 30
	case "gb":
		return n * 1000 * 1000 * 1000
	case "t", "tib":
		return n << 40
	}
	return 0
}

// renderXML writes a node back as XML (for the <cpu> element).
func renderXML(n *node) string {
	var b strings.Builder
	var walk func(*node)
	walk = func(n *node) {
		b.WriteString("<" + n.Name)
		keys := make([]string, 0, len(n.Attrs))
		for k := range n.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(" " + k + "=\"")
			xml.EscapeText(&b, []byte(n.Attrs[k]))
			b.WriteString("\"")
		}
		b.WriteString(">")
		xml.EscapeText(&b, []byte(strings.TrimSpace(n.Text)))
		for _, c := range n.Children {
			walk(c)
		}
		b.WriteString("</" + n.Name + ">")
	}
	walk(n)
	return b.String()
}
