package v2proto

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps v2proto independent (DESIGN.md): neither it nor any package under it,
// tests included, may import QMP, a driver, the legacy v1 path, hooks, cmd, or libvirt.
func TestDependencies(t *testing.T) {
	const module = "github.com/mig2/mig2"
	forbidden := []string{module + "/qmp", module + "/driver", module + "/fallback", module + "/hooks", module + "/cmd", "libvirt.org/"}
	out, err := exec.Command("go", "list", "-deps", "-test", "-json=ImportPath,Imports", module+"/v2proto/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		for _, f := range forbidden {
			root := strings.TrimSuffix(f, "/")
			if p.ImportPath == root || strings.HasPrefix(p.ImportPath, root+"/") {
				t.Errorf("v2proto depends on %s (forbidden: %s)", p.ImportPath, f)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list reported only %d packages; the check would prove nothing", seen)
	}
}
