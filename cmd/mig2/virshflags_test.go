package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	updateVirsh = flag.Bool("update-virsh", false, "rewrite testdata/virsh/conformance.jsonl from the real virsh (implies -virsh-live)")
	virshLive   = flag.Bool("virsh-live", false, "also run every conformance case through the real virsh and compare")
)

const virshConformanceFile = "testdata/virsh/conformance.jsonl"

// virshConformanceCase is one line of testdata/virsh/conformance.jsonl: an argv for `virsh migrate`
// and what virsh 9.0 did with it. Accepted means virsh got past every check of the command line
// (it then failed on the test driver, which cannot migrate: that is not the parser's business).
type virshConformanceCase struct {
	Args     []string `json:"args"`
	Accepted bool     `json:"accepted"`
	Stderr   []string `json:"stderr,omitempty"` // virsh's error lines without "error: "
	Blank    bool     `json:"blank,omitempty"`  // virsh printed an empty line on stdout
}

func loadVirshConformance(t testing.TB) []virshConformanceCase {
	t.Helper()
	f, err := os.Open(virshConformanceFile)
	if err != nil {
		t.Fatalf("open %s: %v", virshConformanceFile, err)
	}
	defer f.Close()
	var out []virshConformanceCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c virshConformanceCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %v", virshConformanceFile, err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", virshConformanceFile, err)
	}
	return out
}

// TestVirshConformance checks parseVirshMigrate against what the real virsh 9.0 did with each
// recorded argv: the same accept/refuse, the same error lines, the same empty line on stdout.
func TestVirshConformance(t *testing.T) {
	cases := loadVirshConformance(t)
	if len(cases) < 100 {
		t.Fatalf("%s has %d cases; expected the full recorded set", virshConformanceFile, len(cases))
	}
	if *updateVirsh || *virshLive {
		cases = runRealVirsh(t, cases)
	}
	for _, c := range cases {
		m, err := parseVirshMigrate(c.Args)
		if c.Accepted {
			if err != nil {
				t.Errorf("parseVirshMigrate(%q): %v; virsh accepted it", c.Args, err)
			} else if !m.Help && (m.Domain == "" || m.DestURI == "") {
				t.Errorf("parseVirshMigrate(%q) accepted without a domain or destination: %+v", c.Args, m)
			}
			continue
		}
		var ve *virshArgError
		if !errors.As(err, &ve) {
			t.Errorf("parseVirshMigrate(%q) = %+v, %v; virsh refused it with %q", c.Args, m, err, c.Stderr)
			continue
		}
		if !reflect.DeepEqual(ve.Lines, c.Stderr) || ve.Syntax == c.Blank {
			t.Errorf("parseVirshMigrate(%q):\n got  %q (empty stdout line: %v)\n virsh %q (empty stdout line: %v)", c.Args, ve.Lines, !ve.Syntax, c.Stderr, c.Blank)
		}
	}
	if *updateVirsh {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		for _, c := range cases {
			if err := enc.Encode(c); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(virshConformanceFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// virshRuntimeErrors are errors virsh reports after its command-line checks, from the test driver
// (which cannot migrate) or from the missing destination "x": they mean the argv was accepted.
var virshRuntimeErrors = []string{
	"no connection driver available for URI",
	"migration is not supported by the source host",
	"failed to get domain",
	"cannot read file",
	"this function is not supported",
}

// runRealVirsh runs each case as `virsh -c test:///default migrate ARGS` and records the outcome.
// virsh against the test driver sometimes hangs after it printed its error (a race in its job
// watcher), so each run has a deadline and a run that hung is retried. Without --p2p, virsh
// connects to the destination before it checks the migration parameters, so cases about those
// checks use --p2p (the test driver refuses p2p only after every check).
func runRealVirsh(t *testing.T, cases []virshConformanceCase) []virshConformanceCase {
	t.Helper()
	virsh, err := exec.LookPath("virsh")
	if err != nil {
		if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
			t.Skip("virsh is not installed (libvirt-clients)")
		}
		t.Fatal("-virsh-live needs virsh (apt-get install libvirt-clients)")
	}
	out := make([]virshConformanceCase, len(cases))
	for i, c := range cases {
		var stdout, stderr string
		var code int
		for attempt := 0; attempt < 10; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			cmd := exec.CommandContext(ctx, virsh, append([]string{"-c", "test:///default", "migrate"}, c.Args...)...)
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr, cmd.Stdin = &o, &e, nil
			cmd.Env = append(os.Environ(), "LC_ALL=C")
			_ = cmd.Run() // the outcome is in the exit code and the output
			hung := ctx.Err() != nil
			cancel()
			stdout, stderr, code = o.String(), e.String(), cmd.ProcessState.ExitCode()
			if !hung { // a run that hung is retried: its stdout is cut short
				break
			}
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
			if l != "" {
				lines = append(lines, strings.TrimPrefix(l, "error: "))
			}
		}
		nc := virshConformanceCase{Args: c.Args}
		switch {
		case code == 0 && len(lines) == 0:
			nc.Accepted = true
		case len(lines) > 0 && virshContainsAny(lines[0], virshRuntimeErrors):
			nc.Accepted = true
		case len(lines) == 0:
			t.Fatalf("virsh migrate %q: exit %d and no error text", c.Args, code)
		default:
			nc.Stderr, nc.Blank = lines, strings.HasPrefix(stdout, "\n")
		}
		if !*updateVirsh && !reflect.DeepEqual(nc, c) {
			t.Errorf("virsh migrate %q now gives %+v; %s records %+v (refresh with -update-virsh)", c.Args, nc, virshConformanceFile, c)
		}
		out[i] = nc
	}
	return out
}

func virshContainsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func TestParseVirshMigrate(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want func(m virshMigrate) bool
	}{
		{"positional", []string{"dom", "qemu+tls://b/system"}, func(m virshMigrate) bool {
			return m.Domain == "dom" && m.DestURI == "qemu+tls://b/system" && !m.Live && m.Given("domain") && m.Given("desturi")
		}},
		{"named, any order", []string{"--desturi", "u", "--domain=d"}, func(m virshMigrate) bool { return m.Domain == "d" && m.DestURI == "u" }},
		{"desturi named, domain positional", []string{"--desturi", "u", "d"}, func(m virshMigrate) bool { return m.Domain == "d" && m.DestURI == "u" }},
		{"third positional is --migrateuri", []string{"d", "u", "tcp://10.0.0.2:49152"}, func(m virshMigrate) bool {
			return m.MigrateURI == "tcp://10.0.0.2:49152" && m.Given("migrateuri")
		}},
		{"value taken verbatim", []string{"--dname", "--live", "d", "u"}, func(m virshMigrate) bool { return m.DName == "--live" && !m.Live }},
		{"value with =", []string{"--migrateuri=tcp://h:1?a=b", "d", "u"}, func(m virshMigrate) bool { return m.MigrateURI == "tcp://h:1?a=b" }},
		{"after --", []string{"--live", "--", "--p2p", "u"}, func(m virshMigrate) bool { return m.Live && !m.P2P && m.Domain == "--p2p" }},
		{"single dash is data", []string{"-live", "u"}, func(m virshMigrate) bool { return m.Domain == "-live" && !m.Live }},
		{"every flag", []string{"--live", "--p2p", "--direct", "--tunnelled", "--persistent", "--undefinesource", "--suspend",
			"--copy-storage-all", "--copy-storage-inc", "--copy-storage-synchronous-writes", "--change-protection", "--unsafe",
			"--verbose", "--compressed", "--auto-converge", "--rdma-pin-all", "--abort-on-error", "--postcopy",
			"--postcopy-after-precopy", "--postcopy-resume", "--zerocopy", "--timeout-postcopy", "--timeout", "9", "--tls",
			"--parallel", "--virsh-exact", "d", "u"}, func(m virshMigrate) bool {
			return m.Live && m.P2P && m.Direct && m.Tunnelled && m.Persistent && m.UndefineSource && m.Suspend &&
				m.CopyStorageAll && m.CopyStorageInc && m.CopyStorageSynchronousWrites && m.ChangeProtection && m.Unsafe &&
				m.Verbose && m.Compressed && m.AutoConverge && m.RDMAPinAll && m.AbortOnError && m.Postcopy &&
				m.PostcopyAfterPrecopy && m.PostcopyResume && m.ZeroCopy && m.TimeoutPostcopy && !m.TimeoutSuspend &&
				m.Timeout == 9*time.Second && m.TLS && m.Parallel && m.VirshExact && !m.Offline && !m.Insecure
		}},
		{"every value", []string{"--migrateuri", "tcp://m", "--graphicsuri", "spice://g", "--listen-address", "::",
			"--dname", "n", "--xml", "a.xml", "--persistent", "--persistent-xml", "p.xml", "--migrate-disks", "vda,vdb",
			"--disks-port", "49300", "--disks-uri", "tcp://disk", "--comp-methods", "mt,xbzrle", "--comp-mt-level", "-1",
			"--comp-mt-threads", "4", "--comp-mt-dthreads", "2", "--comp-xbzrle-cache", "1073741824",
			"--auto-converge-initial", "20", "--auto-converge-increment", "10", "--postcopy", "--postcopy-bandwidth", "50",
			"--parallel-connections", "8", "--bandwidth", "18446744073709551615", "--tls", "--tls-destination", "hb",
			"--protocol", "v1", "--fallback", "none", "--qmp", "/run/q.sock", "--insecure", "d", "u"}, func(m virshMigrate) bool {
			return m.MigrateURI == "tcp://m" && m.GraphicsURI == "spice://g" && m.ListenAddress == "::" && m.DName == "n" &&
				m.XML == "a.xml" && m.PersistentXML == "p.xml" && reflect.DeepEqual(m.MigrateDisks, []string{"vda", "vdb"}) &&
				m.DisksPort == 49300 && m.DisksURI == "tcp://disk" && reflect.DeepEqual(m.CompMethods, []string{"mt", "xbzrle"}) &&
				m.CompMTLevel == -1 && m.CompMTThreads == 4 && m.CompMTDThreads == 2 && m.CompXBZRLECache == 1<<30 &&
				m.AutoConvergeInitial == 20 && m.AutoConvergeIncrement == 10 && m.PostcopyBandwidth == 50 &&
				m.ParallelConnections == 8 && m.Bandwidth == 1<<64-1 && m.TLSDestination == "hb" && m.Protocol == "v1" &&
				m.Fallback == "none" && m.QMP == "/run/q.sock" && m.Insecure && m.Given("bandwidth") && !m.Given("timeout")
		}},
		{"zero is given", []string{"--bandwidth", "0", "--parallel-connections=0", "d", "u"}, func(m virshMigrate) bool {
			return m.Given("bandwidth") && m.Bandwidth == 0 && m.Given("parallel-connections") && !m.Given("postcopy-bandwidth")
		}},
		{"help wins after a clean parse", []string{"--live", "--help"}, func(m virshMigrate) bool { return m.Help && !m.Live }},
		{"help needs no domain", []string{"--help"}, func(m virshMigrate) bool { return m.Help }},
		{"protocol auto", []string{"--protocol=auto", "d", "u"}, func(m virshMigrate) bool { return m.Protocol == "auto" }},
	}
	for _, tc := range tests {
		m, err := parseVirshMigrate(tc.args)
		if err != nil {
			t.Errorf("%s: parseVirshMigrate(%q): %v", tc.name, tc.args, err)
			continue
		}
		if !tc.want(m) {
			t.Errorf("%s: parseVirshMigrate(%q) = %+v", tc.name, tc.args, m)
		}
	}
}

// TestParseVirshMigrateMig2Options: mig2's own options follow virsh's syntax and are never
// positional; their values are checked after virsh's.
func TestParseVirshMigrateMig2Options(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--protocol", "v3", "d", "u"}, "--protocol must be v1, v2 or auto, not 'v3'"},
		{[]string{"--fallback=v2", "d", "u"}, "--fallback must be v1 or none, not 'v2'"},
		{[]string{"--qmp=", "d", "u"}, "Failed to get option 'qmp': Option argument is empty"},
		{[]string{"--protocol"}, "expected syntax: --protocol <string>"},
		{[]string{"--insecure=1", "d", "u"}, "invalid '=' after option --insecure"},
		{[]string{"--virsh-exact", "--virsh-exact", "d", "u"}, "option --virsh-exact already seen"},
		// 23 positionals fill domain, desturi and the 21 valued virsh options, never --protocol.
		{append([]string{"d", "u"}, strings.Fields("m g l n 1 x md 2 du cm 3 4 5 6 7 8 px 9 10 11 td extra")...), "unexpected data 'extra'"},
		// virsh's checks come first.
		{[]string{"--protocol", "v3", "--live", "--offline", "d", "u"}, "Options --live and --offline are mutually exclusive"},
	}
	for _, tc := range tests {
		_, err := parseVirshMigrate(tc.args)
		var ve *virshArgError
		if !errors.As(err, &ve) || ve.Error() != tc.want {
			t.Errorf("parseVirshMigrate(%q) error = %v; want %q", tc.args, err, tc.want)
		}
	}
}

func TestParseVirshNumber(t *testing.T) {
	tests := []struct {
		in   string
		kind virshOptKind
		u    uint64
		i    int64
		ok   bool
	}{
		{"0", virshInt, 0, 0, true},
		{"+7", virshInt, 7, 7, true},
		{" \t\n-7", virshInt, 1<<64 - 7, -7, true},
		{"2147483647", virshInt, 2147483647, 2147483647, true},
		{"2147483648", virshInt, 0, 0, false},
		{"-2147483648", virshInt, 1<<64 - 2147483648, -2147483648, true},
		{"-2147483649", virshInt, 0, 0, false},
		{"010", virshInt, 10, 10, true},
		{"0x10", virshInt, 0, 0, false},
		{"5 ", virshInt, 0, 0, false},
		{"", virshInt, 0, 0, false},
		{" ", virshInt, 0, 0, false},
		{"-", virshInt, 0, 0, false},
		{"+-1", virshInt, 0, 0, false},
		{"4294967295", virshUInt, 4294967295, 4294967295, true},
		{"4294967296", virshUInt, 0, 0, false},
		{"-0", virshUInt, 0, 0, false},
		{"+0", virshUInt, 0, 0, true},
		{"18446744073709551615", virshULL, 1<<64 - 1, 0, true},
		{"18446744073709551616", virshULL, 0, 0, false},
		{"99999999999999999999999", virshULL, 0, 0, false},
		{" -1", virshULL, 0, 0, false},
		{" +5", virshULL, 5, 0, true},
	}
	for _, tc := range tests {
		u, i, ok := parseVirshNumber(tc.in, tc.kind)
		if ok != tc.ok || ok && (u != tc.u || i != tc.i) {
			t.Errorf("parseVirshNumber(%q, %d) = %d, %d, %v; want %d, %d, %v", tc.in, tc.kind, u, i, ok, tc.u, tc.i, tc.ok)
		}
	}
}

// TestVirshMigrateRoundTrip: every accepted argv renders (args) to an argv that parses to the same
// command.
func TestVirshMigrateRoundTrip(t *testing.T) {
	n := 0
	for _, c := range loadVirshConformance(t) {
		if !c.Accepted {
			continue
		}
		checkVirshRoundTrip(t, c.Args)
		n++
	}
	if n < 20 {
		t.Fatalf("only %d accepted cases in %s", n, virshConformanceFile)
	}
	checkVirshRoundTrip(t, []string{"--protocol", "v2", "--fallback", "v1", "--qmp", "/q", "--insecure", "--virsh-exact",
		"--parallel-connections", "-4", "--comp-methods", "zstd,,x", "--", "--d", "u"})
}

func checkVirshRoundTrip(t *testing.T, args []string) {
	t.Helper()
	m, err := parseVirshMigrate(args)
	if err != nil {
		t.Errorf("parseVirshMigrate(%q): %v", args, err)
		return
	}
	again, err := parseVirshMigrate(m.args())
	if err != nil {
		t.Errorf("parseVirshMigrate(%q) = %+v; its args %q do not parse: %v", args, m, m.args(), err)
		return
	}
	if !reflect.DeepEqual(again, m) {
		t.Errorf("round trip of %q through %q:\n got  %+v\n want %+v", args, m.args(), again, m)
	}
}

// TestVirshMigrateTruncation: no prefix of a valid argv is silently taken as something else; a
// prefix that cuts an option from its value says so in virsh's words.
func TestVirshMigrateTruncation(t *testing.T) {
	full := []string{"--live", "--p2p", "--parallel", "--parallel-connections", "4", "--bandwidth", "100", "--tls", "dom", "qemu+tls://b/system"}
	want := map[int]string{
		0: "command 'migrate' requires <domain> option\ncommand 'migrate' requires <desturi> option",
		4: "expected syntax: --parallel-connections <number>",
		6: "expected syntax: --bandwidth <number>",
		9: "command 'migrate' requires <desturi> option",
	}
	for n := 0; n < len(full); n++ {
		_, err := parseVirshMigrate(full[:n])
		var ve *virshArgError
		if !errors.As(err, &ve) || !ve.Syntax {
			t.Errorf("parseVirshMigrate(%q) = %v; want a virsh syntax error", full[:n], err)
			continue
		}
		if w, ok := want[n]; ok && ve.Error() != w {
			t.Errorf("parseVirshMigrate(%q) = %q; want %q", full[:n], ve.Error(), w)
		}
	}
	if _, err := parseVirshMigrate(full); err != nil {
		t.Fatalf("parseVirshMigrate(%q): %v", full, err)
	}
}

func TestVirshArgErrorWrite(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		stdout, stderr string
	}{
		{nil, "", "error: command 'migrate' requires <domain> option\nerror: command 'migrate' requires <desturi> option\n"},
		{[]string{"--foo"}, "", "error: command 'migrate' doesn't support option --foo\n"},
		{[]string{"--live", "--offline", "d", "u"}, "\n", "error: Options --live and --offline are mutually exclusive\n"},
	} {
		_, err := parseVirshMigrate(tc.args)
		var ve *virshArgError
		if !errors.As(err, &ve) {
			t.Fatalf("parseVirshMigrate(%q) = %v", tc.args, err)
		}
		var o, e bytes.Buffer
		ve.write(&o, &e)
		if o.String() != tc.stdout || e.String() != tc.stderr {
			t.Errorf("parseVirshMigrate(%q) writes stdout %q stderr %q; want %q %q", tc.args, o.String(), e.String(), tc.stdout, tc.stderr)
		}
	}
}

// TestChooseProtocol documents every selection rule, one row each.
func TestChooseProtocol(t *testing.T) {
	tests := []struct {
		rule  string
		args  []string
		proto string // "" = an error
		has   string // in the reason (or the error)
	}{
		{"default is v2 (multifd), TLS on", []string{"--live", "--p2p", "d", "u"}, "v2", "multifd (mig2's default); TLS on (mig2's default)"},
		{"--parallel is v2", []string{"--live", "--parallel", "d", "u"}, "v2", "multifd: --parallel"},
		{"--parallel-connections alone is v2", []string{"--parallel-connections", "8", "d", "u"}, "v2", "--parallel-connections 8"},
		{"--zerocopy is v2", []string{"--zerocopy", "--parallel", "d", "u"}, "v2", "--zerocopy"},
		{"zstd is multifd compression: v2", []string{"--compressed", "--comp-methods", "zstd", "d", "u"}, "v2", "--comp-methods zstd (multifd compression)"},
		{"--protocol v2 is v2", []string{"--protocol", "v2", "d", "u"}, "v2", "--protocol v2"},
		{"--protocol auto is the default", []string{"--protocol", "auto", "d", "u"}, "v2", "mig2's default"},
		{"--tls on v2", []string{"--tls", "d", "u"}, "v2", "TLS on (--tls)"},
		{"--insecure on v2 is plaintext", []string{"--insecure", "d", "u"}, "v2", "TLS OFF (--insecure)"},
		{"--fallback v1 does not change the choice", []string{"--fallback", "v1", "d", "u"}, "v2", "mig2's default"},
		{"--postcopy stays v2 (multifd+postcopy is negotiated)", []string{"--postcopy", "d", "u"}, "v2", "multifd"},

		{"--protocol v1 is v1", []string{"--protocol", "v1", "d", "u"}, "v1", "--protocol v1"},
		{"v1 keeps virsh's TLS: off", []string{"--protocol", "v1", "d", "u"}, "v1", "no TLS on the migration stream (as virsh without --tls)"},
		{"v1 keeps virsh's TLS: on", []string{"--protocol", "v1", "--tls", "d", "u"}, "v1", "TLS on the migration stream (--tls)"},
		{"--tunnelled is v1", []string{"--p2p", "--tunnelled", "d", "u"}, "v1", "--tunnelled"},
		{"--comp-methods xbzrle is v1", []string{"--compressed", "--comp-methods", "xbzrle", "d", "u"}, "v1", "--comp-methods xbzrle"},
		{"--comp-methods mt is v1", []string{"--comp-methods", "mt", "d", "u"}, "v1", "--comp-methods mt"},
		{"--compressed alone means xbzrle: v1", []string{"--compressed", "d", "u"}, "v1", "--compressed (xbzrle"},
		{"--offline is v1", []string{"--offline", "--persistent", "d", "u"}, "v1", "--offline"},
		{"--postcopy-resume is v1", []string{"--postcopy", "--postcopy-resume", "d", "u"}, "v1", "--postcopy-resume"},
		{"--rdma-pin-all is v1", []string{"--rdma-pin-all", "d", "u"}, "v1", "--rdma-pin-all"},
		{"rdma:// migrateuri is v1", []string{"--migrateuri", "rdma://10.0.0.2", "d", "u"}, "v1", "rdma://"},
		{"--virsh-exact without --parallel is v1", []string{"--virsh-exact", "--live", "d", "u"}, "v1", "--virsh-exact without --parallel"},
		{"--virsh-exact with --parallel is v2", []string{"--virsh-exact", "--parallel", "d", "u"}, "v2", "--parallel"},
		{"all v1 reasons are named", []string{"--tunnelled", "--comp-methods", "xbzrle", "d", "u"}, "v1", "--tunnelled (one stream through libvirtd), --comp-methods xbzrle"},

		{"--protocol v1 --parallel mixes", []string{"--protocol", "v1", "--parallel", "d", "u"}, "", "--parallel asks for multifd (v2), but --protocol v1 means"},
		{"--protocol v2 --tunnelled mixes", []string{"--protocol", "v2", "--tunnelled", "d", "u"}, "", "--protocol v2 asks for multifd (v2), but --tunnelled"},
		{"--parallel with xbzrle mixes", []string{"--parallel", "--comp-methods", "xbzrle", "d", "u"}, "", "v1 and v2 never mix"},
		{"xbzrle with zstd mixes", []string{"--comp-methods", "xbzrle,zstd", "d", "u"}, "", "--comp-methods zstd (multifd compression) asks for multifd"},
		{"--virsh-exact --parallel-connections without --parallel mixes", []string{"--virsh-exact", "--parallel-connections", "4", "d", "u"}, "", "--virsh-exact without --parallel"},
		{"--zerocopy with --tunnelled mixes", []string{"--zerocopy", "--tunnelled", "d", "u"}, "", "--zerocopy asks for multifd"},
		{"--insecure contradicts --tls", []string{"--insecure", "--tls", "d", "u"}, "", "--insecure (plaintext) contradicts --tls"},
		{"unknown compression method", []string{"--comp-methods", "lz4", "d", "u"}, "", `unknown compression method "lz4"`},
		{"an empty compression method", []string{"--comp-methods", "zstd,", "d", "u"}, "", `unknown compression method ""`},
		{"--parallel-connections 0 on v2", []string{"--parallel", "--parallel-connections", "0", "d", "u"}, "", "--parallel-connections must be at least 1, not 0"},
		{"--parallel-connections -1 on v2", []string{"--parallel-connections", "-1", "d", "u"}, "", "at least 1"},
	}
	for _, tc := range tests {
		m, err := parseVirshMigrate(tc.args)
		if err != nil {
			t.Fatalf("%s: parseVirshMigrate(%q): %v", tc.rule, tc.args, err)
		}
		proto, reason, err := chooseProtocol(m)
		if tc.proto == "" {
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.has) {
				t.Errorf("%s: chooseProtocol(%q) = %q, %q, %v; want a usage error containing %q", tc.rule, tc.args, proto, reason, err, tc.has)
			}
			continue
		}
		if err != nil || proto != tc.proto || !strings.Contains(reason, tc.has) {
			t.Errorf("%s: chooseProtocol(%q) = %q, %q, %v; want %s with %q in the reason", tc.rule, tc.args, proto, reason, err, tc.proto, tc.has)
		}
	}
}

// TestFallbackToV1: only with --fallback v1; the plan is v1 by chooseProtocol's own rule (it can
// never carry multifd), keeps TLS whenever v2 would have had it, and warns loudly.
func TestFallbackToV1(t *testing.T) {
	tests := []struct {
		args     []string
		tls      bool
		warnings []string
	}{
		{[]string{"--fallback", "v1", "--live", "d", "u"}, true, []string{"device trees were NOT compared", "TLS stays on"}},
		{[]string{"--fallback", "v1", "--tls", "d", "u"}, true, []string{"device trees were NOT compared"}},
		{[]string{"--fallback", "v1", "--insecure", "d", "u"}, false, []string{"device trees were NOT compared"}},
		{[]string{"--fallback", "v1", "--parallel", "--parallel-connections", "8", "--zerocopy", "d", "u"}, true,
			[]string{"dropped --parallel/--parallel-connections", "dropped --zerocopy", "TLS stays on"}},
		{[]string{"--fallback", "v1", "--compressed", "--comp-methods", "zstd", "d", "u"}, true, []string{"dropped compression zstd"}},
		{[]string{"--fallback", "v1", "--protocol", "v2", "--tls", "d", "u"}, true, []string{"NOT compared"}},
	}
	for _, tc := range tests {
		m, err := parseVirshMigrate(tc.args)
		if err != nil {
			t.Fatalf("parseVirshMigrate(%q): %v", tc.args, err)
		}
		if p, _, err := chooseProtocol(m); err != nil || p != virshProtoV2 {
			t.Fatalf("chooseProtocol(%q) = %q, %v; the fallback starts from v2", tc.args, p, err)
		}
		plan, warning, err := fallbackToV1(m)
		if err != nil {
			t.Fatalf("fallbackToV1(%q): %v", tc.args, err)
		}
		proto, reason, err := chooseProtocol(plan)
		if err != nil || proto != virshProtoV1 {
			t.Errorf("fallbackToV1(%q) plan %q chooses %q, %v; want v1", tc.args, plan.args(), proto, err)
		}
		if plan.TLS != tc.tls || plan.Parallel || plan.ParallelConnections != 0 || plan.ZeroCopy {
			t.Errorf("fallbackToV1(%q) = %+v; want TLS %v and no multifd", tc.args, plan, tc.tls)
		}
		if tc.tls && !strings.Contains(reason, "TLS on") {
			t.Errorf("fallbackToV1(%q): v1 reason %q does not keep TLS", tc.args, reason)
		}
		for _, w := range tc.warnings {
			if !strings.Contains(warning, w) {
				t.Errorf("fallbackToV1(%q) warning %q lacks %q", tc.args, warning, w)
			}
		}
		if again, err := parseVirshMigrate(plan.args()); err != nil || !reflect.DeepEqual(again, plan) {
			t.Errorf("fallbackToV1(%q) plan does not round-trip: %q: %v", tc.args, plan.args(), err)
		}
		if m.Parallel && !m.Given("parallel") {
			t.Errorf("fallbackToV1 changed its input's given set")
		}
	}
	for _, args := range [][]string{{"d", "u"}, {"--fallback", "none", "d", "u"}} {
		m, _ := parseVirshMigrate(args)
		if _, _, err := fallbackToV1(m); !errors.Is(err, errNoAgentNoFallback) {
			t.Errorf("fallbackToV1(%q) = %v; want errNoAgentNoFallback", args, err)
		}
	}
}

// FuzzParseVirshMigrate feeds argvs (arguments separated by NUL) into the parser and the protocol
// rule: no panics, every refusal is a virsh error, every accepted argv round-trips, and no choice
// ever mixes v1 and v2.
func FuzzParseVirshMigrate(f *testing.F) {
	for _, c := range loadVirshConformance(f) {
		f.Add(strings.Join(c.Args, "\x00"))
	}
	seeds, err := filepath.Glob("testdata/virsh/*.argv")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(strings.ReplaceAll(strings.TrimSuffix(string(b), "\n"), "\n", "\x00"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\x00")
		}
		m, err := parseVirshMigrate(args)
		if err != nil {
			var ve *virshArgError
			if !errors.As(err, &ve) || len(ve.Lines) == 0 {
				t.Fatalf("parseVirshMigrate(%q): unclassified error %v", args, err)
			}
			return
		}
		again, err := parseVirshMigrate(m.args())
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("parseVirshMigrate(%q) = %+v does not round-trip through %q: %+v, %v", args, m, m.args(), again, err)
		}
		if m.Help {
			return
		}
		proto, _, err := chooseProtocol(m)
		switch {
		case err != nil:
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("chooseProtocol(%q): unclassified error %v", args, err)
			}
		case proto == virshProtoV1 && (m.Parallel || m.ZeroCopy || m.Given("parallel-connections")):
			t.Fatalf("chooseProtocol(%q) = v1 with multifd options", args)
		case proto == virshProtoV2 && (m.Tunnelled || m.Offline || m.Protocol == virshProtoV1):
			t.Fatalf("chooseProtocol(%q) = v2 with single-stream options", args)
		case proto == virshProtoV2:
			if plan, _, err := fallbackToV1(m); err == nil {
				if p, _, err := chooseProtocol(plan); err != nil || p != virshProtoV1 {
					t.Fatalf("fallbackToV1(%q) plan chooses %q, %v", args, p, err)
				}
				if !m.Insecure && !plan.TLS {
					t.Fatalf("fallbackToV1(%q) dropped TLS", args)
				}
			}
		}
	})
}
