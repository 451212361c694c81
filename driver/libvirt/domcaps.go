package libvirt

import (
	"slices"
	"strings"

	"github.com/mig2/mig2/v2proto"
)

// filterByCaps marks the devices of a tree that this host's domain capabilities cannot provide:
// they are dropped, so the diff reports them missing on the destination.
func filterByCaps(t *v2proto.DeviceTree, capsXML string) {
	root, err := parseXML([]byte(capsXML))
	if err != nil {
		return
	}
	if m := root.child("machine"); m != nil && strings.TrimSpace(m.Text) != "" {
		// libvirt resolves aliases ("q35") to the versioned name.
		if t.MachineType != strings.TrimSpace(m.Text) && !strings.HasPrefix(strings.TrimSpace(m.Text), t.MachineType) {
			t.MachineType = strings.TrimSpace(m.Text)
		}
	}
	devs := root.child("devices")
	if devs == nil {
		return
	}
	// kind → (enum name, the position of the value in the device's type "kind/value").
	checks := map[string]string{"rng": "model", "video": "modelType", "tpm": "model"}
	kept := t.Devices[:0]
	for _, d := range t.Devices {
		kind, value, _ := strings.Cut(d.Type, "/")
		enum, ok := checks[kind]
		if ok && value != "" {
			if c := devs.child(kind); c != nil && (c.attr("supported") == "no" || !enumHas(c, enum, value)) {
				continue
			}
		}
		if kind == "disk" {
			if c := devs.child("disk"); c != nil && d.Props["bus"] != "" && !enumHas(c, "bus", d.Props["bus"]) {
				continue
			}
		}
		kept = append(kept, d)
	}
	t.Devices = kept
}

func enumHas(n *node, name, value string) bool {
	for _, e := range n.Children {
		if e.Name == "enum" && e.attr("name") == name {
			var vals []string
			for _, v := range e.Children {
				vals = append(vals, strings.TrimSpace(v.Text))
			}
			return slices.Contains(vals, value)
		}
	}
	return true // not described: assume supported
}
