package hooks

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		argv []string
		want Invocation
		bad  string
	}{
		{argv: []string{"/etc/libvirt/hooks/qemu", "g1", "migrate", "begin", "-"},
			want: Invocation{Object: "qemu", Domain: "g1", Operation: OpMigrate, SubOp: "begin", Extra: "-"}},
		{argv: []string{"/etc/libvirt/hooks/qemu.d/mig2", "g1", "release", "end", "-"},
			want: Invocation{Object: "qemu", Domain: "g1", Operation: OpRelease, SubOp: "end", Extra: "-"}},
		{argv: []string{"qemu", "my guest", "started", "begin", "-"},
			want: Invocation{Object: "qemu", Domain: "my guest", Operation: OpStarted, SubOp: "begin", Extra: "-"}},
		{argv: []string{"qemu", "g1", "future-op", "middle", "x"}, // a newer libvirt: passed through
			want: Invocation{Object: "qemu", Domain: "g1", Operation: "future-op", SubOp: "middle", Extra: "x"}},
		{argv: []string{"qemu", "g1", "migrate", "begin"}, bad: "want 4 arguments"},
		{argv: []string{"qemu", "g1", "migrate", "begin", "-", "-"}, bad: "got 5"},
		{argv: nil, bad: "got 0"},
		{argv: []string{"/etc/libvirt/hooks/network", "default", "start", "begin", "-"}, bad: `run as the "network" hook`},
		{argv: []string{"/etc/libvirt/hooks/lxc.d/x", "c1", "start", "begin", "-"}, bad: `run as the "lxc" hook`},
		{argv: []string{"/usr/bin/mig2", "g1", "migrate", "begin", "-"}, bad: `run as the "mig2" hook`},
		{argv: []string{"qemu", "", "migrate", "begin", "-"}, bad: "empty domain"},
		{argv: []string{"qemu", "g1", "", "begin", "-"}, bad: "empty operation"},
		{argv: []string{"qemu", "g1", "migrate", "", "-"}, bad: "empty sub-operation"},
		{argv: []string{"qemu", "g1", "migrate", "begin", ""}, bad: "empty extra argument"},
	}
	for _, tc := range tests {
		got, err := ParseArgs(tc.argv)
		if tc.bad != "" {
			var ae *ArgsError
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.bad) || !strings.HasPrefix(err.Error(), "hooks: ") {
				t.Errorf("ParseArgs(%q) = %+v, %v; want an *ArgsError with %q", tc.argv, got, err, tc.bad)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v", tc.argv, got, err, tc.want)
		}
	}
}

func TestInvocationPredicates(t *testing.T) {
	for _, tc := range []struct {
		op             Operation
		sub            string
		begin, replace bool
		known          bool
	}{
		{OpMigrate, "begin", true, true, true},
		{OpMigrate, "end", false, true, true},
		{OpRestore, "begin", false, true, true},
		{OpPrepare, "begin", false, false, true},
		{OpStart, "begin", false, false, true},
		{OpStarted, "begin", false, false, true},
		{OpStopped, "end", false, false, true},
		{OpRelease, "end", false, false, true},
		{OpReconnect, "begin", false, false, true},
		{OpAttach, "begin", false, false, true},
		{"bogus", "begin", false, false, false},
	} {
		inv := Invocation{Object: "qemu", Domain: "g", Operation: tc.op, SubOp: tc.sub, Extra: "-"}
		if inv.IsMigrateBegin() != tc.begin || inv.ReplacesXML() != tc.replace || tc.op.Known() != tc.known {
			t.Errorf("%s %s: IsMigrateBegin %v ReplacesXML %v Known %v", tc.op, tc.sub, inv.IsMigrateBegin(), inv.ReplacesXML(), tc.op.Known())
		}
	}
}

func TestIsHookPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/etc/libvirt/hooks/qemu": true, "/etc/libvirt/hooks/qemu.d/50-mig2": true, "qemu": true,
		"/usr/local/bin/mig2": false, "/etc/libvirt/hooks/network": false, "/etc/libvirt/hooks/daemon.d/x": false,
		"/x/.d/qemu": true, "mig2": false,
	} {
		if IsHookPath(p) != want {
			t.Errorf("IsHookPath(%q) = %v, want %v", p, !want, want)
		}
	}
}

// TestParseArgsRoundTrip: Argv renders what ParseArgs reads back.
func TestParseArgsRoundTrip(t *testing.T) {
	for _, argv := range recordedArgvs(t) {
		inv, err := ParseArgs(argv)
		if err != nil {
			continue
		}
		again, err := ParseArgs(inv.Argv(argv[0]))
		if err != nil || again != inv {
			t.Errorf("ParseArgs(%q) = %+v; its Argv %q parses to %+v, %v", argv, inv, inv.Argv(argv[0]), again, err)
		}
	}
}

// TestParseArgsTruncation: no proper prefix of a libvirt argv parses.
func TestParseArgsTruncation(t *testing.T) {
	full := []string{"/etc/libvirt/hooks/qemu", "g1", "migrate", "begin", "-"}
	if _, err := ParseArgs(full); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(full); n++ {
		if inv, err := ParseArgs(full[:n]); err == nil {
			t.Errorf("ParseArgs(%q) = %+v; want an error", full[:n], inv)
		}
	}
}

// recordedArgvs reads testdata/argv/*.txt: one argument per line, argv[0] first.
func recordedArgvs(t testing.TB) [][]string {
	t.Helper()
	files, err := filepath.Glob("testdata/argv/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/argv/*.txt: %v", err)
	}
	var out [][]string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"))
	}
	return out
}

// FuzzParseArgs: arguments separated by NUL. No panic; a success round-trips and is a qemu call
// with five non-empty words; a failure is an *ArgsError.
func FuzzParseArgs(f *testing.F) {
	for _, argv := range recordedArgvs(f) {
		f.Add(strings.Join(argv, "\x00"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		argv := strings.Split(s, "\x00")
		inv, err := ParseArgs(argv)
		if err != nil {
			var ae *ArgsError
			if !errors.As(err, &ae) {
				t.Fatalf("ParseArgs(%q): unclassified error %v", argv, err)
			}
			return
		}
		if inv.Object != "qemu" || inv.Domain == "" || inv.Operation == "" || inv.SubOp == "" || inv.Extra == "" {
			t.Fatalf("ParseArgs(%q) = %+v", argv, inv)
		}
		if again, err := ParseArgs(inv.Argv(argv[0])); err != nil || !reflect.DeepEqual(again, inv) {
			t.Fatalf("ParseArgs(%q) = %+v does not round-trip: %+v, %v", argv, inv, again, err)
		}
	})
}
