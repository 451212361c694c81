package main

// virsh-compatible parsing of `mig2 migrate`'s arguments, and the pure rule that chooses v1 or v2.
//
// The parser follows virsh 9.0's own (tools/vsh.c, vshCommandParse) exactly, because `alias
// virsh=mig2` must be safe: every argv virsh accepts is accepted with the same meaning, and every
// argv virsh rejects is rejected with virsh's words and virsh's exit status (1). What was checked
// against the real virsh 9.0 here (testdata/virsh/conformance.txt, refreshed with
// `go test -run TestVirshConformance -update-virsh`):
//
//   - An option is an argument that starts with "--" followed by an ASCII letter or digit; its
//     name ends at the first '='. "--" alone ends the options: every later argument is data.
//     Anything else ("-live", "---x", "--=x") is data.
//   - Options are matched by their exact, case-sensitive name; there are no abbreviations and no
//     aliases for migrate. An unknown one: `command 'migrate' doesn't support option --NAME`.
//   - A value is taken from "--opt=value" or else from the next argument, whatever it is
//     ("--dname --live" names the domain "--live"). None left: `expected syntax: --opt <string>`
//     (or <number>). A boolean given "=...": `invalid '=' after option --live`.
//   - Giving an option twice: `option --live already seen`.
//   - Data fills, in definition order, every non-boolean option not yet given: DOMAIN, DESTURI,
//     then --migrateuri, --graphicsuri, --listen-address, --dname, --timeout, --xml, ... up to
//     --tls-destination (so `virsh migrate dom uri tcp://x` sets --migrateuri). Past the last:
//     `unexpected data 'X'`.
//   - After the whole argv: `command 'migrate' requires <domain> option` (and <desturi>), one
//     line each. `--help` anywhere (after a clean parse) replaces the command with its help.
//   - Then cmdMigrate's own checks, in virsh's order (see checkVirshMigrate), and the values of
//     numbers are parsed the way libvirt's virStrToLong_* do (base 10, leading blanks and a sign
//     allowed, nothing after the digits; unsigned options refuse any '-').
//
// virsh prints each error as "error: TEXT" on stderr and exits 1; errors found after parsing are
// followed by an empty line on stdout. virshArgError carries exactly that (see its write method).
// What this parser does not do, because it needs I/O: read the --xml / --persistent-xml files
// (virsh: "cannot read file ...") and look up the domain; the driver does those, in that order,
// after the checks here.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"
)

// virshExitFailure is virsh's exit status for every failed command.
const virshExitFailure = 1

// Protocols chooseProtocol returns.
const (
	virshProtoV1 = "v1"
	virshProtoV2 = "v2"
)

// virshMigrate is one `migrate` command line, typed, with virsh's meanings. Numbers that virsh
// passes to libvirt only when given (every valued option) are recorded in given; use Given.
type virshMigrate struct {
	Domain  string // name, id or uuid (positional 1, or --domain)
	DestURI string // destination libvirt URI, or mig2://HOST[:PORT] with --qmp (positional 2, or --desturi)

	Live, Offline, P2P, Direct, Tunnelled  bool
	Persistent, UndefineSource, Suspend    bool
	CopyStorageAll, CopyStorageInc         bool
	CopyStorageSynchronousWrites           bool
	ChangeProtection, Unsafe, Verbose      bool
	Compressed, AutoConverge, RDMAPinAll   bool
	AbortOnError                           bool
	Postcopy, PostcopyAfterPrecopy         bool
	PostcopyResume, ZeroCopy               bool
	TimeoutSuspend, TimeoutPostcopy, TLS   bool
	Parallel                               bool
	MigrateURI, GraphicsURI, ListenAddress string
	DName                                  string
	Timeout                                time.Duration // --timeout, whole seconds; 0 = none
	XML, PersistentXML                     string        // file names, read by the driver
	MigrateDisks                           []string      // --migrate-disks, split at ','
	DisksPort                              int
	DisksURI                               string
	CompMethods                            []string // --comp-methods, split at ','
	CompMTLevel, CompMTThreads             int
	CompMTDThreads                         int
	CompXBZRLECache                        uint64 // bytes
	AutoConvergeInitial                    int
	AutoConvergeIncrement                  int
	PostcopyBandwidth                      uint64 // MiB/s
	ParallelConnections                    int
	Bandwidth                              uint64 // MiB/s
	TLSDestination                         string

	// mig2's own options (never positional).
	Protocol        string        // --protocol v1|v2|auto ("" = auto)
	Fallback        string        // --fallback v1|none ("" = none)
	QMP             string        // --qmp SOCKET: a plain-QEMU guest instead of a libvirt domain
	VirshExact      bool          // --virsh-exact: no --parallel means single-stream, as with virsh
	Insecure        bool          // --insecure: plaintext v2 control channel and stream (labs only)
	TLSDir          string        // --tls-dir: x509 files in QEMU's layout (default /etc/pki/qemu)
	Compression     string        // --compression auto|none|zlib|zstd (v2's multifd compression)
	JSON            bool          // --json: one JSON object per line
	KeepSource      bool          // --keep-source: leave a migrated plain-QEMU source paused
	ProgressTimeout time.Duration // --progress-timeout: cancel when nothing moves for this long
	SkipDeviceCheck bool          // --skip-device-check (experts)
	Agent           string        // --agent HOST:PORT: the destination's mig2 agent (libvirt path)
	DowntimeLimit   time.Duration // --downtime-limit
	Deep            bool          // --deep: QMP pass-through for capabilities (taints the domain)
	DestQMP         string        // --dest-qmp SOCKET: v1 with --qmp: configure the destination QEMU too
	Capabilities    []string      // --capabilities a,b: v1 with --qmp: extra capabilities to turn on

	Help bool // --help: show the help and do nothing else

	given map[string]bool // every option given, by name (positional ones included)
}

// Given reports whether option name (without "--") was on the command line, by name or by
// position.
func (m virshMigrate) Given(name string) bool { return m.given[name] }

type virshOptKind int

const (
	virshBool   virshOptKind = iota
	virshString              // empty values are refused after parsing, as vshCommandOptStringReq does
	virshInt                 // virStrToLong_i: int32
	virshUInt                // virStrToLong_uip: uint32, no '-'
	virshULL                 // virStrToLong_ullp: uint64, no '-'
)

type virshOptDef struct {
	name string
	kind virshOptKind
	mig2 bool // mig2's own: not positional, not in virsh's help
}

// virshMigrateOpts is virsh 9.0's opts_migrate in its definition order (that order decides which
// option positional data fills), then mig2's own options.
var virshMigrateOpts = []virshOptDef{
	{name: "domain", kind: virshString},
	{name: "desturi", kind: virshString},
	{name: "live"}, {name: "offline"}, {name: "p2p"}, {name: "direct"}, {name: "tunnelled"},
	{name: "persistent"}, {name: "undefinesource"}, {name: "suspend"},
	{name: "copy-storage-all"}, {name: "copy-storage-inc"}, {name: "copy-storage-synchronous-writes"},
	{name: "change-protection"}, {name: "unsafe"}, {name: "verbose"}, {name: "compressed"},
	{name: "auto-converge"}, {name: "rdma-pin-all"}, {name: "abort-on-error"}, {name: "postcopy"},
	{name: "postcopy-after-precopy"}, {name: "postcopy-resume"}, {name: "zerocopy"},
	{name: "migrateuri", kind: virshString},
	{name: "graphicsuri", kind: virshString},
	{name: "listen-address", kind: virshString},
	{name: "dname", kind: virshString},
	{name: "timeout", kind: virshUInt},
	{name: "timeout-suspend"}, {name: "timeout-postcopy"},
	{name: "xml", kind: virshString},
	{name: "migrate-disks", kind: virshString},
	{name: "disks-port", kind: virshInt},
	{name: "disks-uri", kind: virshString},
	{name: "comp-methods", kind: virshString},
	{name: "comp-mt-level", kind: virshInt},
	{name: "comp-mt-threads", kind: virshInt},
	{name: "comp-mt-dthreads", kind: virshInt},
	{name: "comp-xbzrle-cache", kind: virshULL},
	{name: "auto-converge-initial", kind: virshInt},
	{name: "auto-converge-increment", kind: virshInt},
	{name: "persistent-xml", kind: virshString},
	{name: "tls"},
	{name: "postcopy-bandwidth", kind: virshULL},
	{name: "parallel"},
	{name: "parallel-connections", kind: virshInt},
	{name: "bandwidth", kind: virshULL},
	{name: "tls-destination", kind: virshString},

	{name: "protocol", kind: virshString, mig2: true},
	{name: "fallback", kind: virshString, mig2: true},
	{name: "qmp", kind: virshString, mig2: true},
	{name: "virsh-exact", mig2: true},
	{name: "insecure", mig2: true},
	{name: "tls-dir", kind: virshString, mig2: true},
	{name: "compression", kind: virshString, mig2: true},
	{name: "json", mig2: true},
	{name: "keep-source", mig2: true},
	{name: "progress-timeout", kind: virshString, mig2: true},
	{name: "skip-device-check", mig2: true},
	{name: "agent", kind: virshString, mig2: true},
	{name: "downtime-limit", kind: virshString, mig2: true},
	{name: "deep", mig2: true},
	{name: "dest-qmp", kind: virshString, mig2: true},
	{name: "capabilities", kind: virshString, mig2: true},
}

// virshArgError is a command line virsh (and so mig2) refuses, in virsh's words.
type virshArgError struct {
	Lines  []string // each printed as "error: LINE" on stderr
	Syntax bool     // found while parsing: virsh prints no empty line on stdout then
}

func (e *virshArgError) Error() string { return strings.Join(e.Lines, "\n") }

// write prints the error exactly as virsh does; the caller then exits with virshExitFailure.
func (e *virshArgError) write(stdout, stderr io.Writer) {
	for _, l := range e.Lines {
		fmt.Fprintf(stderr, "error: %s\n", l)
	}
	if !e.Syntax {
		fmt.Fprintln(stdout)
	}
}

func virshSyntaxErrorf(format string, args ...any) error {
	return &virshArgError{Lines: []string{fmt.Sprintf(format, args...)}, Syntax: true}
}

func virshCheckErrorf(format string, args ...any) error {
	return &virshArgError{Lines: []string{fmt.Sprintf(format, args...)}}
}

// parseVirshMigrate parses the arguments after "migrate" as virsh 9.0 does (see the comment at
// the top of this file), then applies cmdMigrate's checks. The error, if any, is a
// *virshArgError.
func parseVirshMigrate(args []string) (virshMigrate, error) {
	raw := map[string]string{} // value options as given
	seen := map[string]bool{}
	var help, dataOnly bool
	need := make([]bool, len(virshMigrateOpts)) // positional slots still open
	for i, o := range virshMigrateOpts {
		need[i] = o.kind != virshBool && !o.mig2
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case !dataOnly && len(a) > 2 && a[0] == '-' && a[1] == '-' && virshIsOptionStart(a[2]):
			name, val, hasVal := strings.Cut(a[2:], "=")
			if name == "help" {
				if hasVal {
					return virshMigrate{}, virshSyntaxErrorf("invalid '=' after option --%s", name)
				}
				help = true
				continue
			}
			idx := slices.IndexFunc(virshMigrateOpts, func(o virshOptDef) bool { return o.name == name })
			if idx < 0 {
				return virshMigrate{}, virshSyntaxErrorf("command 'migrate' doesn't support option --%s", name)
			}
			def := virshMigrateOpts[idx]
			if seen[name] {
				return virshMigrate{}, virshSyntaxErrorf("option --%s already seen", name)
			}
			seen[name] = true
			if def.kind == virshBool {
				if hasVal {
					return virshMigrate{}, virshSyntaxErrorf("invalid '=' after option --%s", name)
				}
				continue
			}
			if !hasVal {
				if i+1 >= len(args) {
					what := "string"
					if def.kind != virshString {
						what = "number"
					}
					return virshMigrate{}, virshSyntaxErrorf("expected syntax: --%s <%s>", name, what)
				}
				i++
				val = args[i]
			}
			raw[name] = val
			need[idx] = false
		case !dataOnly && a == "--":
			dataOnly = true
		default:
			idx := slices.Index(need, true)
			if idx < 0 {
				return virshMigrate{}, virshSyntaxErrorf("unexpected data '%s'", a)
			}
			need[idx] = false
			name := virshMigrateOpts[idx].name
			seen[name] = true
			raw[name] = a
		}
	}
	if help {
		return virshMigrate{Help: true}, nil
	}
	var missing []string
	for _, req := range []string{"domain", "desturi"} {
		if !seen[req] {
			missing = append(missing, fmt.Sprintf("command 'migrate' requires <%s> option", req))
		}
	}
	if len(missing) > 0 {
		return virshMigrate{}, &virshArgError{Lines: missing, Syntax: true}
	}
	return checkVirshMigrate(raw, seen)
}

func virshIsOptionStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// checkVirshMigrate applies cmdMigrate's and doMigrate's checks in virsh 9.0's order (measured:
// each pair of checks was tried both ways round against the real virsh) and builds the typed
// command.
func checkVirshMigrate(raw map[string]string, seen map[string]bool) (virshMigrate, error) {
	m := virshMigrate{given: seen}
	b := func(name string) bool { return seen[name] }
	m.Live, m.Offline, m.P2P, m.Direct, m.Tunnelled = b("live"), b("offline"), b("p2p"), b("direct"), b("tunnelled")
	m.Persistent, m.UndefineSource, m.Suspend = b("persistent"), b("undefinesource"), b("suspend")
	m.CopyStorageAll, m.CopyStorageInc = b("copy-storage-all"), b("copy-storage-inc")
	m.CopyStorageSynchronousWrites = b("copy-storage-synchronous-writes")
	m.ChangeProtection, m.Unsafe, m.Verbose = b("change-protection"), b("unsafe"), b("verbose")
	m.Compressed, m.AutoConverge, m.RDMAPinAll = b("compressed"), b("auto-converge"), b("rdma-pin-all")
	m.AbortOnError, m.Postcopy, m.PostcopyAfterPrecopy = b("abort-on-error"), b("postcopy"), b("postcopy-after-precopy")
	m.PostcopyResume, m.ZeroCopy = b("postcopy-resume"), b("zerocopy")
	m.TimeoutSuspend, m.TimeoutPostcopy, m.TLS, m.Parallel = b("timeout-suspend"), b("timeout-postcopy"), b("tls"), b("parallel")
	m.VirshExact, m.Insecure = b("virsh-exact"), b("insecure")
	m.JSON, m.KeepSource, m.SkipDeviceCheck, m.Deep = b("json"), b("keep-source"), b("skip-device-check"), b("deep")

	// VSH_EXCLUSIVE_OPTIONS / VSH_REQUIRE_OPTION at the top of cmdMigrate.
	for _, p := range [][2]string{{"live", "offline"}, {"timeout-suspend", "timeout-postcopy"}} {
		if b(p[0]) && b(p[1]) {
			return virshMigrate{}, virshCheckErrorf("Options --%s and --%s are mutually exclusive", p[0], p[1])
		}
	}
	for _, p := range [][2]string{
		{"postcopy-after-precopy", "postcopy"}, {"postcopy-resume", "postcopy"},
		{"timeout-postcopy", "postcopy"}, {"persistent-xml", "persistent"}, {"tls-destination", "tls"},
	} {
		if b(p[0]) && !b(p[1]) {
			return virshMigrate{}, virshCheckErrorf("Option --%s is required by option --%s", p[1], p[0])
		}
	}

	str := func(name string, dst *string) error {
		v, ok := raw[name]
		if !ok {
			return nil
		}
		if v == "" {
			return virshCheckErrorf("Failed to get option '%s': Option argument is empty", name)
		}
		*dst = v
		return nil
	}
	duration := func(name string, dst *time.Duration) error {
		var v string
		if err := str(name, &v); err != nil || v == "" {
			return err
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return virshCheckErrorf("--%s must be a duration such as 30s or 2m, not '%s'", name, v)
		}
		*dst = d
		return nil
	}
	list := func(name string, dst *[]string) error {
		var s string
		if err := str(name, &s); err != nil || s == "" {
			return err
		}
		*dst = strings.Split(s, ",")
		return nil
	}
	num := func(name string, kind virshOptKind) (uint64, int64, error) {
		v, ok := raw[name]
		if !ok {
			return 0, 0, nil
		}
		u, i, ok := parseVirshNumber(v, kind)
		if !ok {
			return 0, 0, virshCheckErrorf("Numeric value '%s' for <%s> option is malformed or out of range", v, name)
		}
		return u, i, nil
	}
	integer := func(name string, dst *int) error {
		_, i, err := num(name, virshInt)
		*dst = int(i)
		return err
	}
	unsigned := func(name string, dst *uint64) error {
		u, _, err := num(name, virshULL)
		*dst = u
		return err
	}

	// cmdMigrate: the domain, then --timeout and its companions.
	if err := str("domain", &m.Domain); err != nil {
		return virshMigrate{}, err
	}
	secs, _, err := num("timeout", virshUInt)
	if err != nil {
		return virshMigrate{}, err
	}
	m.Timeout = time.Duration(secs) * time.Second
	if secs > 0 && !m.Live {
		return virshMigrate{}, virshCheckErrorf("migrate: Unexpected timeout for offline migration")
	}
	if secs == 0 && (m.TimeoutSuspend || m.TimeoutPostcopy) {
		return virshMigrate{}, virshCheckErrorf("migrate: Unexpected --timeout-* option without --timeout")
	}

	// doMigrate: the destination, then the parameters in the order it reads them.
	steps := []func() error{
		func() error { return str("desturi", &m.DestURI) },
		func() error { return str("migrateuri", &m.MigrateURI) },
		func() error { return str("graphicsuri", &m.GraphicsURI) },
		func() error { return str("listen-address", &m.ListenAddress) },
		func() error { return integer("disks-port", &m.DisksPort) },
		func() error { return str("disks-uri", &m.DisksURI) },
		func() error { return str("dname", &m.DName) },
		func() error { return list("migrate-disks", &m.MigrateDisks) },
		func() error { return list("comp-methods", &m.CompMethods) },
		func() error { return integer("comp-mt-level", &m.CompMTLevel) },
		func() error { return integer("comp-mt-threads", &m.CompMTThreads) },
		func() error { return integer("comp-mt-dthreads", &m.CompMTDThreads) },
		func() error { return unsigned("comp-xbzrle-cache", &m.CompXBZRLECache) },
		func() error { return str("xml", &m.XML) },
		func() error { return str("persistent-xml", &m.PersistentXML) },
		func() error { return integer("auto-converge-initial", &m.AutoConvergeInitial) },
		func() error { return integer("auto-converge-increment", &m.AutoConvergeIncrement) },
		func() error { return unsigned("postcopy-bandwidth", &m.PostcopyBandwidth) },
		func() error { return integer("parallel-connections", &m.ParallelConnections) },
		func() error { return unsigned("bandwidth", &m.Bandwidth) },
		func() error { return str("tls-destination", &m.TLSDestination) },
		func() error {
			if m.CopyStorageSynchronousWrites && !m.CopyStorageAll && !m.CopyStorageInc {
				// sic: libvirt's own text has no "--" before copy-storage-inc.
				return virshCheckErrorf("'--copy-storage-synchronous-writes' requires one of '--copy-storage-all', 'copy-storage-inc'")
			}
			return nil
		},
		// mig2's own options, after everything virsh checks.
		func() error { return str("qmp", &m.QMP) },
		func() error { return str("tls-dir", &m.TLSDir) },
		func() error { return str("agent", &m.Agent) },
		func() error { return str("dest-qmp", &m.DestQMP) },
		func() error { return list("capabilities", &m.Capabilities) },
		func() error {
			if err := str("compression", &m.Compression); err != nil {
				return err
			}
			switch m.Compression {
			case "", "auto", "none", "zlib", "zstd":
				return nil
			}
			return virshCheckErrorf("--compression must be auto, none, zlib or zstd, not '%s'", m.Compression)
		},
		func() error { return duration("progress-timeout", &m.ProgressTimeout) },
		func() error { return duration("downtime-limit", &m.DowntimeLimit) },
		func() error {
			if err := str("protocol", &m.Protocol); err != nil {
				return err
			}
			switch m.Protocol {
			case "", "auto", virshProtoV1, virshProtoV2:
				return nil
			}
			return virshCheckErrorf("--protocol must be v1, v2 or auto, not '%s'", m.Protocol)
		},
		func() error {
			if err := str("fallback", &m.Fallback); err != nil {
				return err
			}
			switch m.Fallback {
			case "", "none", virshProtoV1:
				return nil
			}
			return virshCheckErrorf("--fallback must be v1 or none, not '%s'", m.Fallback)
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return virshMigrate{}, err
		}
	}
	return m, nil
}

// parseVirshNumber parses s as libvirt's virStrToLong_i (virshInt), virStrToLong_uip (virshUInt)
// or virStrToLong_ullp (virshULL) with base 10 and no end pointer: C's strtol/strtoul skip
// leading white space and take one optional sign; at least one digit; nothing may follow; the
// "p" variants refuse any '-' (even "-0"); values out of the type's range are refused.
func parseVirshNumber(s string, kind virshOptKind) (u uint64, i int64, ok bool) {
	p := strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if p != "" && (p[0] == '+' || p[0] == '-') {
		neg = p[0] == '-'
		p = p[1:]
	}
	if p == "" {
		return 0, 0, false
	}
	var mag uint64
	overflow := false
	for j := 0; j < len(p); j++ {
		c := p[j]
		if c < '0' || c > '9' {
			return 0, 0, false
		}
		d := uint64(c - '0')
		if mag > (math.MaxUint64-d)/10 {
			overflow = true
		}
		mag = mag*10 + d
	}
	if overflow {
		return 0, 0, false
	}
	switch kind {
	case virshInt:
		if !neg && mag > math.MaxInt32 || neg && mag > -math.MinInt32 {
			return 0, 0, false
		}
		i = int64(mag)
		if neg {
			i = -i
		}
		return uint64(i), i, true
	case virshUInt:
		if neg || mag > math.MaxUint32 {
			return 0, 0, false
		}
		return mag, int64(mag), true
	case virshULL:
		if neg {
			return 0, 0, false
		}
		return mag, 0, true
	}
	return 0, 0, false
}

// args renders m back into an argv parseVirshMigrate turns into m again: every given option as
// "--name value" (a value is taken verbatim, whatever it starts with), in definition order.
func (m virshMigrate) args() []string {
	if m.Help {
		return []string{"--help"}
	}
	dec := func(v int) string { return fmt.Sprint(v) }
	values := map[string]string{
		"domain": m.Domain, "desturi": m.DestURI, "migrateuri": m.MigrateURI,
		"graphicsuri": m.GraphicsURI, "listen-address": m.ListenAddress, "dname": m.DName,
		"timeout": fmt.Sprint(uint64(m.Timeout / time.Second)), "xml": m.XML,
		"migrate-disks": strings.Join(m.MigrateDisks, ","), "disks-port": dec(m.DisksPort),
		"disks-uri": m.DisksURI, "comp-methods": strings.Join(m.CompMethods, ","),
		"comp-mt-level": dec(m.CompMTLevel), "comp-mt-threads": dec(m.CompMTThreads),
		"comp-mt-dthreads": dec(m.CompMTDThreads), "comp-xbzrle-cache": fmt.Sprint(m.CompXBZRLECache),
		"auto-converge-initial": dec(m.AutoConvergeInitial), "auto-converge-increment": dec(m.AutoConvergeIncrement),
		"persistent-xml": m.PersistentXML, "postcopy-bandwidth": fmt.Sprint(m.PostcopyBandwidth),
		"parallel-connections": dec(m.ParallelConnections), "bandwidth": fmt.Sprint(m.Bandwidth),
		"tls-destination": m.TLSDestination, "protocol": m.Protocol, "fallback": m.Fallback, "qmp": m.QMP,
	}
	var out []string
	for _, o := range virshMigrateOpts {
		if !m.given[o.name] {
			continue
		}
		if o.kind == virshBool {
			out = append(out, "--"+o.name)
			continue
		}
		out = append(out, "--"+o.name, values[o.name])
	}
	return out
}

// Compression methods libvirt knows for --comp-methods: xbzrle and mt work on the single
// migration stream; zlib and zstd are multifd compression (libvirt 9.4 and newer; mig2's v2
// negotiates them itself).
var (
	virshSingleStreamCompression = []string{"xbzrle", "mt"}
	virshMultifdCompression      = []string{"zlib", "zstd"}
)

// chooseProtocol is the one rule that decides between v2 (the handshake; multifd, always) and v1
// (the legacy single-stream path, no handshake, no agent). v1 and v2 never mix: an argv that asks
// for both is an error, never a silent choice. TLS is never dropped: v2 always runs TLS unless
// --insecure (labs, both sides); v1 keeps virsh's meaning (--tls or not). The reason names every
// option that decided, and the TLS state. Rules, in order (TestChooseProtocol has a row for each):
//
//  1. Contradictions are errors: --insecure with --tls; an unknown --comp-methods entry;
//     --parallel-connections below 1 (with --parallel or v2).
//  2. Options that imply a single stream: --protocol v1, --offline (no stream at all),
//     --tunnelled (the stream goes through libvirtd's connection), --comp-methods xbzrle|mt,
//     --compressed without --comp-methods (libvirt's default is xbzrle), --postcopy-resume
//     (resumes libvirt's own job), --rdma-pin-all or an rdma:// --migrateuri (RDMA is
//     single-stream), and, with --virsh-exact, the absence of --parallel (virsh's default).
//  3. Options that ask for multifd: --protocol v2, --parallel, --parallel-connections,
//     --zerocopy, --comp-methods zlib|zstd.
//  4. Both 2 and 3: error, naming the options on each side.
//  5. Only 2: v1. Otherwise: v2 (mig2's default, even without --parallel).
//
// --fallback v1 does not change the choice; it only allows fallbackToV1 when the destination has
// no agent.
func chooseProtocol(m virshMigrate) (protocol, reason string, err error) {
	if m.Insecure && m.TLS {
		return "", "", usageErrorf("--insecure (plaintext) contradicts --tls")
	}
	for _, c := range m.CompMethods {
		if !slices.Contains(virshSingleStreamCompression, c) && !slices.Contains(virshMultifdCompression, c) {
			return "", "", usageErrorf("--comp-methods: unknown compression method %q (known: xbzrle, mt, zlib, zstd)", c)
		}
	}

	var single, multi []string
	if m.Protocol == virshProtoV1 {
		single = append(single, "--protocol v1")
	}
	if m.Offline {
		single = append(single, "--offline (no migration stream)")
	}
	if m.Tunnelled {
		single = append(single, "--tunnelled (one stream through libvirtd)")
	}
	for _, c := range m.CompMethods {
		if slices.Contains(virshSingleStreamCompression, c) {
			single = append(single, "--comp-methods "+c+" (single-stream compression)")
		}
	}
	if m.Compressed && len(m.CompMethods) == 0 {
		single = append(single, "--compressed (xbzrle, libvirt's default method)")
	}
	if m.PostcopyResume {
		single = append(single, "--postcopy-resume (resumes libvirt's own migration)")
	}
	if m.RDMAPinAll {
		single = append(single, "--rdma-pin-all (RDMA is single-stream)")
	}
	if u, err := url.Parse(m.MigrateURI); m.MigrateURI != "" && err == nil && u.Scheme == "rdma" {
		single = append(single, "--migrateuri rdma:// (RDMA is single-stream)")
	}
	if m.VirshExact && !m.Parallel {
		single = append(single, "--virsh-exact without --parallel (single stream, as virsh)")
	}

	if m.Protocol == virshProtoV2 {
		multi = append(multi, "--protocol v2")
	}
	if m.Parallel {
		multi = append(multi, "--parallel")
	}
	if m.Given("parallel-connections") {
		multi = append(multi, fmt.Sprintf("--parallel-connections %d", m.ParallelConnections))
	}
	if m.ZeroCopy {
		multi = append(multi, "--zerocopy")
	}
	for _, c := range m.CompMethods {
		if slices.Contains(virshMultifdCompression, c) {
			multi = append(multi, "--comp-methods "+c+" (multifd compression)")
		}
	}

	if len(single) > 0 && len(multi) > 0 {
		return "", "", usageErrorf("%s asks for multifd (v2), but %s means a single-stream migration (v1); v1 and v2 never mix: drop one side",
			strings.Join(multi, ", "), strings.Join(single, ", "))
	}
	if len(single) > 0 {
		tls := "no TLS on the migration stream (as virsh without --tls)"
		if m.TLS {
			tls = "TLS on the migration stream (--tls)"
		}
		return virshProtoV1, "v1, single stream, no handshake: " + strings.Join(single, ", ") + "; " + tls, nil
	}
	if m.Given("parallel-connections") && m.ParallelConnections < 1 {
		return "", "", usageErrorf("--parallel-connections must be at least 1, not %d", m.ParallelConnections)
	}
	why := "multifd (mig2's default)"
	if len(multi) > 0 {
		why = "multifd: " + strings.Join(multi, ", ")
	}
	tls := "TLS on (mig2's default)"
	switch {
	case m.Insecure:
		tls = "TLS OFF (--insecure)"
	case m.TLS:
		tls = "TLS on (--tls)"
	}
	return virshProtoV2, "v2, handshake and device-tree check: " + why + "; " + tls, nil
}

// errNoAgentNoFallback: v2 was chosen but the destination has no agent, and --fallback v1 was
// not given. The caller wraps it with the address it tried.
var errNoAgentNoFallback = errors.New("the destination has no mig2 agent, which v2 needs (run `mig2 agent` there); " +
	"--fallback v1 migrates without the v2 checks, --protocol v1 asks for v1 from the start")

// fallbackToV1 turns a v2 command into the v1 command to run when the destination has no agent.
// Only with --fallback v1; otherwise errNoAgentNoFallback. The v1 plan drops what only multifd
// can do (--parallel, --parallel-connections, --zerocopy, zlib/zstd compression) and keeps TLS:
// the v2 migration would have been TLS (unless --insecure), so the v1 one is too, or it fails.
// The warning is for the user, loudly: the device trees were not compared.
func fallbackToV1(m virshMigrate) (plan virshMigrate, warning string, err error) {
	if m.Fallback != virshProtoV1 {
		return virshMigrate{}, "", errNoAgentNoFallback
	}
	plan = m
	plan.given = map[string]bool{}
	for k, v := range m.given {
		plan.given[k] = v
	}
	notes := []string{"WARNING: the destination has no mig2 agent: falling back to v1 (--fallback v1)." +
		" The device trees were NOT compared: a mismatch shows only when device state loads, after all RAM is copied."}
	plan.Protocol = virshProtoV1
	plan.given["protocol"] = true
	if m.Parallel || m.Given("parallel-connections") {
		notes = append(notes, "dropped --parallel/--parallel-connections: multifd is v2 only")
		plan.Parallel, plan.ParallelConnections = false, 0
		delete(plan.given, "parallel")
		delete(plan.given, "parallel-connections")
	}
	if m.ZeroCopy {
		notes = append(notes, "dropped --zerocopy: it needs multifd")
		plan.ZeroCopy = false
		delete(plan.given, "zerocopy")
	}
	var kept []string
	for _, c := range m.CompMethods {
		if slices.Contains(virshMultifdCompression, c) {
			notes = append(notes, "dropped compression "+c+": multifd only")
			continue
		}
		kept = append(kept, c)
	}
	if len(kept) != len(m.CompMethods) {
		plan.CompMethods = kept
		if len(kept) == 0 {
			// --compressed with no method would mean xbzrle: the user asked for none of it.
			plan.Compressed = false
			delete(plan.given, "compressed")
			delete(plan.given, "comp-methods")
		}
	}
	if !m.Insecure && !m.TLS {
		plan.TLS = true
		plan.given["tls"] = true
		notes = append(notes, "TLS stays on (--tls added): v2 would have used it")
	}
	return plan, strings.Join(notes, "; "), nil
}
