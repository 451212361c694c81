package packaging

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestUnitSystemdAnalyze runs `systemd-analyze verify` on the shipped unit where systemd is
// installed. verify exits 0 on unknown keys and bad values (it only warns), so any line it
// prints about this unit fails the test. The unit's ExecStart names the installed binary,
// which need not exist here: the copy verified points ExecStart at this test binary instead.
func TestUnitSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; TestUnitCheck covers the unit with packaging's own check")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "mig2-agent.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(AgentUnit, []byte("/usr/local/bin/mig2"), []byte(self)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "--man=no", unit)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	var about []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "mig2-agent.service") {
			about = append(about, l)
		} else if strings.TrimSpace(l) != "" {
			t.Logf("systemd-analyze (about another unit): %s", l)
		}
	}
	if err != nil || len(about) > 0 {
		t.Fatalf("systemd-analyze verify rejects packaging/mig2-agent.service (%v):\n%s", err, strings.Join(about, "\n"))
	}
}

// TestUnitCheck is packaging's own check of the shipped unit: sections, keys, values.
func TestUnitCheck(t *testing.T) {
	u, err := ParseUnit(AgentUnit)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckUnit(u); err != nil {
		t.Fatal(err)
	}
}

// TestUnitHardening pins what the agent's unit promises: the hardening, the restart policy,
// and what the agent needs despite it (/run/mig2, the hook socket's home; no ProtectProc, which
// would hide the QEMU whose stderr the agent reads).
func TestUnitHardening(t *testing.T) {
	u, err := ParseUnit(AgentUnit)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "Restart": "on-failure", "RuntimeDirectory": "mig2",
		"MemoryDenyWriteExecute": "yes", "SystemCallFilter": "@system-service", "ProtectProc": "",
		"User": "", "DynamicUser": "",
	}
	for k, v := range want {
		if got := u.Value("Service", k); got != v {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	exec := u.Value("Service", "ExecStart")
	if f := strings.Fields(exec); len(f) < 2 || f[0] != "/usr/local/bin/mig2" || f[1] != "agent" {
		t.Errorf("ExecStart=%q: want /usr/local/bin/mig2 agent … (make install rewrites the prefix)", exec)
	}
	env := strings.Join(u.Values("Service", "Environment"), " ")
	for _, flag := range []string{"--listen", "--tls-dir /etc/pki/qemu", "--libvirt qemu:///system"} {
		if !strings.Contains(env, flag) {
			t.Errorf("default MIG2_AGENT_ARGS lacks %q: %s", flag, env)
		}
	}
	if u.Value("Install", "WantedBy") != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%q", u.Value("Install", "WantedBy"))
	}
}

// TestCheckUnitRejects: the check catches what systemd would silently ignore.
func TestCheckUnitRejects(t *testing.T) {
	for name, extra := range map[string]string{
		"typo in a key":       "[Service]\nProtectSytem=strict\n",
		"bad enum":            "[Service]\nProtectSystem=stricter\n",
		"bad boolean":         "[Service]\nNoNewPrivileges=maybe\n",
		"relative ExecStart":  "[Service]\nExecStart=mig2 agent\n",
		"unknown capability":  "[Service]\nCapabilityBoundingSet=CAP_FLY\n",
		"bad time span":       "[Service]\nRestartSec=soon\n",
		"unknown section":     "[Servce]\nType=exec\n",
		"bad unit name":       "[Unit]\nAfter=libvirtd\n",
		"bad syscall group":   "[Service]\nSystemCallFilter=@everything\n",
		"runtime dir escapes": "[Service]\nRuntimeDirectory=../etc\n",
	} {
		t.Run(name, func(t *testing.T) {
			// Appended to the real unit: a second [Service] also counts as an error, so test
			// the key on its own by splicing it into a minimal valid unit instead.
			base := "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
			sec, body, _ := strings.Cut(extra, "\n")
			var unit string
			if strings.Contains(base, sec) {
				unit = strings.Replace(base, sec+"\n", sec+"\n"+body, 1)
			} else {
				unit = base + extra
			}
			u, err := ParseUnit([]byte(unit))
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckUnit(u); !errors.Is(err, ErrInvalid) {
				t.Fatalf("CheckUnit accepted:\n%s", unit)
			}
		})
	}
}

func TestParseUnitSyntax(t *testing.T) {
	u, err := ParseUnit([]byte("# c\n; c\n[Service]\n  ExecStart = /bin/echo a \\\n  b\nEnvironment=\"A=1 2\" B=3\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Section{{Name: "Service", Entries: []Entry{{"ExecStart", "/bin/echo a  b", 4}, {"Environment", `"A=1 2" B=3`, 6}}}}
	if !reflect.DeepEqual(u.Sections, want) {
		t.Fatalf("got %+v\nwant %+v", u.Sections, want)
	}
	if got := splitQuoted(u.Value("Service", "Environment")); !reflect.DeepEqual(got, []string{"A=1 2", "B=3"}) {
		t.Fatalf("splitQuoted: %q", got)
	}
	for _, bad := range []string{"Key=before section\n", "[Service]\nno equals sign\n", "[Service\n", "[Service]\nbad key=1\n"} {
		if _, err := ParseUnit([]byte(bad)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseUnit(%q) = %v, want ErrSyntax", bad, err)
		}
	}
}

// stripLines drops Line, which Format does not keep.
func stripLines(u *Unit) *Unit {
	c := &Unit{}
	for _, s := range u.Sections {
		ns := Section{Name: s.Name, Entries: []Entry{}}
		for _, e := range s.Entries {
			ns.Entries = append(ns.Entries, Entry{Key: e.Key, Value: e.Value})
		}
		c.Sections = append(c.Sections, ns)
	}
	return c
}

func roundTrip(t testing.TB, b []byte) {
	u, err := ParseUnit(b)
	if err != nil {
		return
	}
	u2, err := ParseUnit(u.Format())
	if err != nil {
		t.Fatalf("Format output does not parse: %v\n%s", err, u.Format())
	}
	if !reflect.DeepEqual(stripLines(u), stripLines(u2)) {
		t.Fatalf("round trip changed the unit:\n%+v\n%+v", u, u2)
	}
}

func TestParseUnitRoundTrip(t *testing.T) { roundTrip(t, AgentUnit) }

// TestParseUnitTruncated: every prefix of the unit parses or fails cleanly and round-trips;
// a prefix that lost ExecStart or anything after it fails the check.
func TestParseUnitTruncated(t *testing.T) {
	execAt := bytes.Index(AgentUnit, []byte("\nExecStart="))
	for n := range len(AgentUnit) {
		b := AgentUnit[:n]
		roundTrip(t, b)
		if n <= execAt {
			if u, err := ParseUnit(b); err == nil && CheckUnit(u) == nil {
				t.Fatalf("CheckUnit accepted a unit cut at byte %d (before ExecStart)", n)
			}
		}
	}
}

func FuzzParseUnit(f *testing.F) {
	f.Add(AgentUnit)
	seeds, _ := filepath.Glob("testdata/*.service")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, b)
		if u, err := ParseUnit(b); err == nil {
			_ = CheckUnit(u)
		}
	})
}
