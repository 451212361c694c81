// Package layering holds the test that keeps mig2's package dependencies pointing one way:
//
//	cmd → driver, hooks;  driver → v2proto, fallback/v1, qmp
//
// v2proto knows nothing of QMP, drivers, the v1 path or libvirt; fallback/v1 and v2proto never
// import each other; qmp imports no mig2 package above it; the hook never links libvirt
// (libvirt forbids calling back into it from a hook).
package layering

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mig2/mig2"

type pkg struct {
	ImportPath string
	Deps       []string
}

// rule forbids packages under From (transitively) importing anything under one of Forbidden.
type rule struct {
	From      string
	Forbidden []string
}

var rules = []rule{
	{"v2proto", []string{"qmp", "driver", "fallback", "hooks", "cmd", "libvirt.org/"}},
	{"fallback", []string{"v2proto", "driver", "hooks", "cmd"}},
	{"qmp", []string{"driver", "v2proto", "fallback", "hooks", "cmd"}},
	{"driver", []string{"cmd", "hooks"}},
	{"hooks", []string{"cmd", "driver", "libvirt.org/go/libvirt"}},
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// under reports whether import path p is the package named by prefix (a mig2 folder, or an
// outside module path ending in "/") or inside it.
func under(p, prefix string) bool {
	if strings.Contains(prefix, ".") { // an outside module: whole path elements only
		prefix = strings.TrimSuffix(prefix, "/")
		return p == prefix || strings.HasPrefix(p, prefix+"/")
	}
	full := module + "/" + prefix
	return p == full || strings.HasPrefix(p, full+"/")
}

func violations(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		for _, r := range rules {
			if !under(p.ImportPath, r.From) {
				continue
			}
			for _, d := range p.Deps {
				for _, f := range r.Forbidden {
					if under(d, f) {
						bad = append(bad, p.ImportPath+" imports "+d+" (forbidden: "+r.From+" must not depend on "+f+")")
					}
				}
			}
		}
	}
	return bad
}

func TestLayering(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 3 {
		t.Fatalf("go list found only %d packages; is the module intact?", len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestRulesCatchViolations proves the checker is not vacuous: synthetic packages that break
// each rule are reported.
func TestRulesCatchViolations(t *testing.T) {
	for _, r := range rules {
		f := r.Forbidden[0]
		dep := module + "/" + f
		if strings.Contains(f, ".") {
			dep = strings.TrimSuffix(f, "/") + "/x"
		}
		got := violations([]pkg{{ImportPath: module + "/" + r.From + "/sub", Deps: []string{dep}}})
		if len(got) != 1 {
			t.Errorf("rule %s ↛ %s: a violating package gave %d reports, want 1", r.From, f, len(got))
		}
	}
	if got := violations([]pkg{{ImportPath: module + "/hooks", Deps: []string{"libvirt.org/go/libvirtxml"}}}); len(got) != 0 {
		t.Errorf("libvirtxml is not the libvirt binding: %v", got)
	}
	if got := violations([]pkg{{ImportPath: module + "/driver", Deps: []string{module + "/qmp", module + "/v2proto"}}}); len(got) != 0 {
		t.Errorf("allowed edges reported: %v", got)
	}
}
