package hooks

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Operation is the second word libvirt passes to the qemu hook.
type Operation string

// The qemu hook's operations in libvirt 9.0 (docs: https://libvirt.org/hooks.html). On the
// destination of a migration libvirt calls, in this order: migrate begin, prepare begin,
// start begin, started begin (before RAM moves); then release end when the guest goes away.
const (
	OpPrepare   Operation = "prepare"
	OpStart     Operation = "start"
	OpStarted   Operation = "started"
	OpStopped   Operation = "stopped"
	OpRelease   Operation = "release"
	OpMigrate   Operation = "migrate"
	OpRestore   Operation = "restore"
	OpReconnect Operation = "reconnect"
	OpAttach    Operation = "attach"
)

var knownOperations = []Operation{OpPrepare, OpStart, OpStarted, OpStopped, OpRelease, OpMigrate, OpRestore, OpReconnect, OpAttach}

// Known reports whether o is one of the operations libvirt 9.0 documents. A newer libvirt may
// add more: the hook passes those untouched.
func (o Operation) Known() bool { return slices.Contains(knownOperations, o) }

// Invocation is one call of the hook: `OBJECT DOMAIN OPERATION SUB-OPERATION EXTRA`, where
// OBJECT comes from the program's own path (…/hooks/qemu, …/hooks/qemu.d/NAME, or the word
// "qemu"), and libvirt passes "-" for an empty sub-operation or extra argument.
type Invocation struct {
	Object    string // "qemu" for mig2's hook
	Domain    string
	Operation Operation
	SubOp     string // "begin", "end" or "-"
	Extra     string // "-" for every qemu operation in libvirt 9.0
}

// IsMigrateBegin reports whether this is the destination's first call for an incoming
// migration, the one call where the hook may refuse.
func (inv Invocation) IsMigrateBegin() bool {
	return inv.Operation == OpMigrate && inv.SubOp == "begin"
}

// ReplacesXML reports whether libvirt takes the hook's stdout, if any, as a replacement for the
// domain XML (migrate and restore). mig2 never replaces it: it writes nothing to stdout.
func (inv Invocation) ReplacesXML() bool {
	return inv.Operation == OpMigrate || inv.Operation == OpRestore
}

// Argv renders the invocation as libvirt would call a hook installed at argv0.
func (inv Invocation) Argv(argv0 string) []string {
	return []string{argv0, inv.Domain, string(inv.Operation), inv.SubOp, inv.Extra}
}

// ArgsError is an argv libvirt would never pass to a qemu hook.
type ArgsError struct {
	Argv   []string
	Reason string
}

func (e *ArgsError) Error() string {
	return fmt.Sprintf("hooks: not a libvirt qemu hook call %q: %s", e.Argv, e.Reason)
}

// hookObject derives the hook's object (driver) from the path it was run as: libvirt runs
// /etc/libvirt/hooks/OBJECT and every executable in /etc/libvirt/hooks/OBJECT.d/.
func hookObject(argv0 string) string {
	if dir := filepath.Base(filepath.Dir(argv0)); strings.HasSuffix(dir, ".d") && len(dir) > 2 {
		return strings.TrimSuffix(dir, ".d")
	}
	return filepath.Base(argv0)
}

// IsHookPath reports whether a program run as argv0 was run by libvirt as its qemu hook
// (…/qemu or …/qemu.d/NAME), so that a mig2 binary linked there can tell.
func IsHookPath(argv0 string) bool { return hookObject(argv0) == "qemu" }

// ParseArgs parses the hook's whole argv (argv[0] included): exactly five words, OBJECT "qemu",
// and no empty word (libvirt writes "-" for an empty one). Unknown operations and
// sub-operations are accepted (Operation.Known tells); the error is an *ArgsError.
func ParseArgs(argv []string) (Invocation, error) {
	if len(argv) != 5 {
		return Invocation{}, &ArgsError{Argv: argv, Reason: fmt.Sprintf("want 4 arguments (DOMAIN OPERATION SUB-OPERATION EXTRA) after the program, got %d", max(len(argv)-1, 0))}
	}
	inv := Invocation{Object: hookObject(argv[0]), Domain: argv[1], Operation: Operation(argv[2]), SubOp: argv[3], Extra: argv[4]}
	if inv.Object != "qemu" {
		return Invocation{}, &ArgsError{Argv: argv, Reason: fmt.Sprintf("run as the %q hook; mig2 is a qemu hook (install it as /etc/libvirt/hooks/qemu or under qemu.d/)", inv.Object)}
	}
	for i, what := range []string{"", "domain", "operation", "sub-operation", "extra argument"} {
		if i > 0 && argv[i] == "" {
			return Invocation{}, &ArgsError{Argv: argv, Reason: "empty " + what + " (libvirt passes \"-\" for none)"}
		}
	}
	return inv, nil
}
