package packaging

import (
	_ "embed"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AgentUnit is packaging/mig2-agent.service as shipped.
//
//go:embed mig2-agent.service
var AgentUnit []byte

// Unit is a parsed systemd unit file: its sections in order, each with its entries in order
// (a key may repeat; systemd then appends or resets, per key).
type Unit struct {
	Sections []Section
}

// Section is one [Name] block.
type Section struct {
	Name    string
	Entries []Entry
}

// Entry is one Key=Value assignment; Line is where it starts (1-based).
type Entry struct {
	Key, Value string
	Line       int
}

// ErrSyntax classifies every error ParseUnit returns.
var ErrSyntax = errors.New("packaging: unit syntax")

// ErrInvalid classifies every error CheckUnit returns.
var ErrInvalid = errors.New("packaging: unit rejected")

var sectionRe = regexp.MustCompile(`^\[([A-Za-z0-9-]+)\]$`)
var keyRe = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// ParseUnit reads a unit file the way systemd's config parser does: blank lines and lines
// starting with # or ; are comments, a trailing backslash continues the line (joined with a
// space), [Section] starts a section, everything else is Key=Value with both sides trimmed.
func ParseUnit(b []byte) (*Unit, error) {
	u := &Unit{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		for strings.HasSuffix(line, `\`) {
			line = strings.TrimSuffix(line, `\`)
			i++
			if i >= len(lines) {
				break
			}
			next := strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
			if next != "" && (next[0] == '#' || next[0] == ';') {
				continue // comments inside a continuation are dropped, as systemd does
			}
			line += " " + next
		}
		line = strings.TrimSpace(line)
		if line == "" { // a lone continuation ("\" at the end of the file) leaves nothing
			continue
		}
		if m := sectionRe.FindStringSubmatch(line); m != nil {
			u.Sections = append(u.Sections, Section{Name: m[1]})
			continue
		}
		if line[0] == '[' {
			return nil, fmt.Errorf("%w: line %d: bad section header %q", ErrSyntax, start, line)
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: %q is not Key=Value", ErrSyntax, start, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !keyRe.MatchString(k) {
			return nil, fmt.Errorf("%w: line %d: bad key %q", ErrSyntax, start, k)
		}
		if len(u.Sections) == 0 {
			return nil, fmt.Errorf("%w: line %d: %s= before any [Section]", ErrSyntax, start, k)
		}
		s := &u.Sections[len(u.Sections)-1]
		s.Entries = append(s.Entries, Entry{Key: k, Value: v, Line: start})
	}
	return u, nil
}

// Format writes the unit back as a unit file (no comments; one line per entry). ParseUnit of
// the result gives the same sections and entries (but for Line).
func (u *Unit) Format() []byte {
	var b strings.Builder
	for i, s := range u.Sections {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "[%s]\n", s.Name)
		for _, e := range s.Entries {
			line := e.Key + "=" + e.Value
			if strings.HasSuffix(e.Value, `\`) {
				// Its own backslash would continue the line onto the next entry: one more
				// continues it onto an empty line instead, joined and trimmed away by ParseUnit.
				line += "\\\n"
			}
			b.WriteString(line + "\n")
		}
	}
	return []byte(b.String())
}

// Values returns every value of section's key, in order.
func (u *Unit) Values(section, key string) []string {
	var vs []string
	for _, s := range u.Sections {
		if s.Name != section {
			continue
		}
		for _, e := range s.Entries {
			if e.Key == key {
				vs = append(vs, e.Value)
			}
		}
	}
	return vs
}

// Value is the last value of section's key ("" when absent): the one systemd uses for
// single-valued keys.
func (u *Unit) Value(section, key string) string {
	vs := u.Values(section, key)
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// A check validates one value; nil means "any text".
type check func(string) error

// serviceKeys are the [Unit], [Service] and [Install] keys of a .service unit this checker
// knows, as systemd 252 (systemd.unit(5), systemd.service(5), systemd.exec(5), systemd.kill(5))
// names them. A key systemd does not know is an error here (systemd ignores it with a warning,
// which is how a typo silently drops a hardening setting).
var serviceKeys = map[string]map[string]check{
	"Unit": {
		"Description": nonEmpty, "Documentation": docURLs,
		"Wants": unitNames, "Requires": unitNames, "Requisite": unitNames, "BindsTo": unitNames,
		"PartOf": unitNames, "Upholds": unitNames, "Conflicts": unitNames, "Before": unitNames,
		"After": unitNames, "OnFailure": unitNames, "OnSuccess": unitNames,
		"StartLimitIntervalSec": timeSpan, "StartLimitBurst": unsigned,
		"StartLimitAction":    oneOf("none", "reboot", "reboot-force", "reboot-immediate", "poweroff", "poweroff-force", "poweroff-immediate", "exit", "exit-force"),
		"DefaultDependencies": boolean, "ConditionPathExists": nil, "AssertPathExists": nil,
	},
	"Service": {
		"Type":      oneOf("simple", "exec", "forking", "oneshot", "dbus", "notify", "idle"),
		"ExecStart": command, "ExecStartPre": command, "ExecStartPost": command, "ExecStop": command,
		"ExecStopPost": command, "ExecReload": command,
		"Restart":    oneOf("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always"),
		"RestartSec": timeSpan, "TimeoutStartSec": timeSpan, "TimeoutStopSec": timeSpan, "TimeoutSec": timeSpan,
		"KillMode":   oneOf("control-group", "mixed", "process", "none"),
		"KillSignal": signal, "Environment": environment, "EnvironmentFile": envFile,
		"User": nonEmpty, "Group": nonEmpty, "SupplementaryGroups": nonEmpty, "DynamicUser": boolean,
		"WorkingDirectory": nil,
		"RuntimeDirectory": relPaths, "StateDirectory": relPaths, "LogsDirectory": relPaths,
		"CacheDirectory": relPaths, "ConfigurationDirectory": relPaths,
		"RuntimeDirectoryMode": octalMode, "StateDirectoryMode": octalMode, "RuntimeDirectoryPreserve": oneOf("yes", "no", "restart"),
		"UMask":                 octalMode,
		"CapabilityBoundingSet": capabilities, "AmbientCapabilities": capabilities,
		"NoNewPrivileges": boolean,
		"ProtectSystem":   oneOf("yes", "no", "true", "false", "full", "strict"),
		"ProtectHome":     oneOf("yes", "no", "true", "false", "read-only", "tmpfs"),
		"PrivateTmp":      boolean, "PrivateDevices": boolean, "PrivateNetwork": boolean, "PrivateUsers": boolean,
		"PrivateIPC": boolean, "PrivateMounts": boolean,
		"ProtectHostname": boolean, "ProtectClock": boolean, "ProtectKernelTunables": boolean,
		"ProtectKernelModules": boolean, "ProtectKernelLogs": boolean, "ProtectControlGroups": boolean,
		"ProtectProc":    oneOf("noaccess", "invisible", "ptraceable", "default"),
		"ProcSubset":     oneOf("all", "pid"),
		"ReadWritePaths": absPaths, "ReadOnlyPaths": absPaths, "InaccessiblePaths": absPaths,
		"RestrictAddressFamilies": addressFamilies, "RestrictNamespaces": namespaces,
		"RestrictRealtime": boolean, "RestrictSUIDSGID": boolean, "LockPersonality": boolean,
		"MemoryDenyWriteExecute": boolean, "RemoveIPC": boolean,
		"SystemCallArchitectures": oneOf("native", "x86", "x86-64", "x32", "arm", "arm64"),
		"SystemCallFilter":        syscallFilter, "SystemCallErrorNumber": errnoName,
		"LimitNOFILE": nil, "Nice": nil, "StandardOutput": nil, "StandardError": nil,
		"SyslogIdentifier": nonEmpty,
	},
	"Install": {
		"WantedBy": unitNames, "RequiredBy": unitNames, "Also": unitNames, "Alias": unitNames,
	},
}

// CheckUnit checks a .service unit: only [Unit], [Service] and [Install] sections, each at most
// once; every key one systemd knows there, with a value it accepts; exactly one ExecStart.
func CheckUnit(u *Unit) error {
	var errs []error
	seen := map[string]bool{}
	for _, s := range u.Sections {
		keys, ok := serviceKeys[s.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("%w: unknown section [%s]", ErrInvalid, s.Name))
			continue
		}
		if seen[s.Name] {
			errs = append(errs, fmt.Errorf("%w: section [%s] appears twice", ErrInvalid, s.Name))
		}
		seen[s.Name] = true
		for _, e := range s.Entries {
			c, ok := keys[e.Key]
			if !ok {
				errs = append(errs, fmt.Errorf("%w: line %d: unknown key %s= in [%s]", ErrInvalid, e.Line, e.Key, s.Name))
				continue
			}
			if c == nil {
				continue
			}
			if err := c(e.Value); err != nil {
				errs = append(errs, fmt.Errorf("%w: line %d: %s=%s: %v", ErrInvalid, e.Line, e.Key, e.Value, err))
			}
		}
	}
	if n := len(u.Values("Service", "ExecStart")); n != 1 {
		errs = append(errs, fmt.Errorf("%w: want exactly one ExecStart= in [Service], have %d", ErrInvalid, n))
	}
	return errors.Join(errs...)
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("empty")
	}
	return nil
}

func oneOf(allowed ...string) check {
	return func(v string) error {
		if slices.Contains(allowed, v) {
			return nil
		}
		return fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
	}
}

func boolean(v string) error {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on", "0", "no", "n", "false", "f", "off":
		return nil
	}
	return errors.New("not a boolean")
}

func unsigned(v string) error {
	_, err := strconv.ParseUint(v, 10, 32)
	return err
}

func octalMode(v string) error {
	if n, err := strconv.ParseUint(v, 8, 32); err != nil || n > 0o7777 {
		return errors.New("not an octal file mode")
	}
	return nil
}

var spanRe = regexp.MustCompile(`^(\d+(\.\d+)?\s*(us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|h|hr|hour|hours|d|day|days|w|week|weeks|M|month|months|y|year|years)?\s*)+$`)

func timeSpan(v string) error {
	if v == "infinity" || spanRe.MatchString(v) {
		return nil
	}
	if _, err := time.ParseDuration(v); err == nil {
		return nil
	}
	return errors.New("not a time span")
}

var unitNameRe = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|device|mount|automount|swap|path|timer|slice|scope)$`)

func unitNames(v string) error {
	f := strings.Fields(v)
	if len(f) == 0 {
		return errors.New("no unit named")
	}
	for _, n := range f {
		if !unitNameRe.MatchString(n) {
			return fmt.Errorf("%q is not a unit name", n)
		}
	}
	return nil
}

func docURLs(v string) error {
	for _, u := range strings.Fields(v) {
		scheme, _, ok := strings.Cut(u, ":")
		if !ok || (scheme != "http" && scheme != "https" && scheme != "file" && scheme != "info" && scheme != "man") {
			return fmt.Errorf("%q: systemd accepts http, https, file, info and man URIs", u)
		}
	}
	return nil
}

func command(v string) error {
	v = strings.TrimLeft(v, "-@:+!")
	f := strings.Fields(v)
	if len(f) == 0 || !path.IsAbs(f[0]) {
		return errors.New("the program must be an absolute path")
	}
	return nil
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

func environment(v string) error {
	for _, w := range splitQuoted(v) {
		if !envNameRe.MatchString(w) {
			return fmt.Errorf("%q is not NAME=VALUE", w)
		}
	}
	return nil
}

// splitQuoted splits on whitespace outside double or single quotes and drops the quotes.
func splitQuoted(v string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	in := false
	for _, r := range v {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote, in = r, true
		case quote == 0 && (r == ' ' || r == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

func envFile(v string) error {
	if !path.IsAbs(strings.TrimPrefix(v, "-")) {
		return errors.New("not an absolute path")
	}
	return nil
}

func relPaths(v string) error {
	for _, p := range strings.Fields(v) {
		if path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "..") {
			return fmt.Errorf("%q: want a relative path without ..", p)
		}
	}
	return nil
}

func absPaths(v string) error {
	for _, p := range strings.Fields(v) {
		if !path.IsAbs(strings.TrimLeft(p, "-+")) {
			return fmt.Errorf("%q is not absolute", p)
		}
	}
	return nil
}

var knownCaps = strings.Fields(`CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID
CAP_KILL CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST
CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT
CAP_SYS_PTRACE CAP_SYS_PACCT CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME
CAP_SYS_TTY_CONFIG CAP_MKNOD CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE
CAP_MAC_ADMIN CAP_SYSLOG CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF
CAP_CHECKPOINT_RESTORE`)

func capabilities(v string) error {
	for _, c := range strings.Fields(strings.TrimPrefix(v, "~")) {
		if !slices.Contains(knownCaps, c) {
			return fmt.Errorf("unknown capability %q", c)
		}
	}
	return nil
}

func addressFamilies(v string) error {
	v = strings.TrimPrefix(v, "~")
	if v == "none" {
		return nil
	}
	for _, f := range strings.Fields(v) {
		if !slices.Contains([]string{"AF_UNIX", "AF_LOCAL", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_VSOCK", "AF_BLUETOOTH", "AF_CAN", "AF_ALG", "AF_XDP"}, f) {
			return fmt.Errorf("unknown address family %q", f)
		}
	}
	return nil
}

func namespaces(v string) error {
	if boolean(v) == nil {
		return nil
	}
	for _, n := range strings.Fields(strings.TrimPrefix(v, "~")) {
		if !slices.Contains([]string{"cgroup", "ipc", "net", "mnt", "pid", "user", "uts"}, n) {
			return fmt.Errorf("unknown namespace type %q", n)
		}
	}
	return nil
}

var syscallGroups = strings.Fields(`@default @aio @basic-io @chown @clock @cpu-emulation @debug @file-system
@io-event @ipc @keyring @memlock @module @mount @network-io @obsolete @pkey @privileged @process
@raw-io @reboot @resources @sandbox @setuid @signal @swap @sync @system-service @timer @known`)
var syscallRe = regexp.MustCompile(`^[a-z0-9_]+(:[A-Z0-9]+)?$`)

func syscallFilter(v string) error {
	for _, s := range strings.Fields(strings.TrimPrefix(v, "~")) {
		if strings.HasPrefix(s, "@") {
			if !slices.Contains(syscallGroups, s) {
				return fmt.Errorf("unknown system call group %q", s)
			}
		} else if !syscallRe.MatchString(s) {
			return fmt.Errorf("%q is not a system call name", s)
		}
	}
	return nil
}

var errnoRe = regexp.MustCompile(`^(E[A-Z0-9]+|kill|log|\d+)$`)

func errnoName(v string) error {
	if !errnoRe.MatchString(v) {
		return errors.New("not an errno name")
	}
	return nil
}

func signal(v string) error {
	if !regexp.MustCompile(`^(SIG)?[A-Z0-9+]+$`).MatchString(v) {
		return errors.New("not a signal name")
	}
	return nil
}
