package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// formatGuestSpec is the inverse of parseGuestSpec.
func formatGuestSpec(g guestSpec) string {
	s := g.Name + "=" + g.QMP
	if g.LogPath != "" {
		s += ",log=" + g.LogPath
	}
	return s
}

// FuzzParseGuestSpecs: the `mig2 agent --guest NAME=QMP_SOCKET[,log=PATH]` flags (one per
// NUL-separated field). A refusal is a usage error; an acceptance names every guest once, with a
// name and a socket, and each spec round-trips through formatGuestSpec.
func FuzzParseGuestSpecs(f *testing.F) {
	for _, s := range []string{
		"web=/run/web.qmp",
		"web=/run/web.qmp\x00db=/run/db.qmp,log=/var/log/db.log",
		"g1=/var/lib/mig2/g1.qmp,log=/var/log/mig2/g1.log",
		"web", "=/x", "web=", "web=/x,log=", "web=/x,foo=bar", "a=/x\x00a=/y",
		"a=b=c,log=d=e", "a=/x,log=1,log=2", "a=/x,", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		in := strings.Split(s, "\x00")
		gs, err := parseGuestSpecs(in)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) || exitCode(err) != exitUsage || !strings.HasPrefix(err.Error(), "--guest ") {
				t.Fatalf("parseGuestSpecs(%q): not a usage error: %v", in, err)
			}
			return
		}
		if len(gs) != len(in) {
			t.Fatalf("parseGuestSpecs(%q) = %d guests", in, len(gs))
		}
		seen := map[string]bool{}
		for i, g := range gs {
			switch {
			case g.Name == "" || strings.Contains(g.Name, "="):
				t.Fatalf("parseGuestSpecs(%q): guest %d name %q", in, i, g.Name)
			case g.QMP == "" || strings.Contains(g.QMP, ","):
				t.Fatalf("parseGuestSpecs(%q): guest %d socket %q", in, i, g.QMP)
			case strings.Contains(g.LogPath, ","):
				t.Fatalf("parseGuestSpecs(%q): guest %d log %q", in, i, g.LogPath)
			case seen[g.Name]:
				t.Fatalf("parseGuestSpecs(%q): guest %q twice", in, g.Name)
			}
			seen[g.Name] = true
			if again, err := parseGuestSpec(formatGuestSpec(g)); err != nil || again != g {
				t.Fatalf("%q → %+v → %q → %+v, %v", in[i], g, formatGuestSpec(g), again, err)
			}
		}
	})
}

// destURISeeds returns the destinations of the recorded virsh command lines (every argument with
// a scheme), which the mig2:// parser must refuse cleanly or accept.
func destURISeeds(f *testing.F) []string {
	var out []string
	for _, c := range loadVirshConformance(f) {
		for _, a := range c.Args {
			if strings.Contains(a, "://") {
				out = append(out, a)
			}
		}
	}
	files, _ := filepath.Glob("testdata/virsh/*.argv")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, a := range strings.Split(string(b), "\n") {
			if strings.Contains(a, "://") {
				out = append(out, a)
			}
		}
	}
	return out
}

// FuzzParseDestURI: `mig2 migrate DOMAIN mig2://HOST[:PORT]`. A refusal is a usage error; an
// acceptance is a HOST:PORT that net.SplitHostPort splits into a host and a port in 1-65535, and
// parsing it again gives it back.
func FuzzParseDestURI(f *testing.F) {
	for _, s := range destURISeeds(f) {
		f.Add(s)
	}
	for _, s := range []string{
		"mig2://dst:7000", "mig2://dst", "mig2://[::1]:7000", "mig2://[::1]", "127.0.0.1:9", "dst",
		"mig2://dst.example:16520", "qemu+tls://dst/system", "mig2://dst:0", "mig2://dst:99999",
		"mig2://dst:x", "mig2://dst:7/path", "mig2://:7000", "mig2://user@dst", "mig2://dst?x=1", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, err := parseDestURI(s)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) || exitCode(err) != exitUsage {
				t.Fatalf("parseDestURI(%q): not a usage error: %v", s, err)
			}
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("parseDestURI(%q) = %q, which does not split: %v", s, addr, err)
		}
		if p, err := strconv.Atoi(port); host == "" || err != nil || p < 1 || p > 65535 {
			t.Fatalf("parseDestURI(%q) = %q: host %q, port %q", s, addr, host, port)
		}
		if again, err := parseDestURI(addr); err != nil || again != addr {
			t.Fatalf("parseDestURI(%q) = %q, but parseDestURI(%q) = %q, %v", s, addr, addr, again, err)
		}
	})
}
