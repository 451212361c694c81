package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mig2/mig2/driver"
	v1 "github.com/mig2/mig2/fallback/v1"
)

const migrateLong = `Live-migrate a guest with the v2 handshake. mig2 migrate accepts virsh migrate's options with
virsh's meanings, so ` + "`alias virsh=mig2`" + ` is safe:

  mig2 migrate --live --parallel DOMAIN qemu+tls://dst/system       a libvirt domain
  mig2 migrate --qmp /run/web.qmp web mig2://dst:16520              a plain QEMU (mig2's --qmp)

Before anything moves, mig2 and the mig2 agent on the destination negotiate every setting both
QEMUs must share (multifd channels, compression, postcopy, TLS on the migration stream) and
compare the two device trees; a mismatch is refused with a readable diff and the source guest
is untouched. With no tuning options mig2 chooses: channels from both hosts' cores, zstd only
when the guest's memory compresses, no bandwidth cap. Success means the destination confirmed
its guest runs. Whatever fails before that, the source guest keeps running. Ctrl-C cancels
safely.

When v1 is used: v2 is always multifd. A migration that cannot be multifd — --tunnelled,
--comp-methods xbzrle or mt, --compressed alone, --offline, --postcopy-resume, RDMA, or
--virsh-exact without --parallel — or an explicit --protocol v1 belongs to the legacy v1 path,
which does no handshake and compares nothing: libvirt's own flow without --parallel, or, with
--qmp, QEMU's single stream to DESTURI tcp:HOST:PORT (--dest-qmp SOCKET also configures the
destination QEMU). A destination without an agent is an error unless --fallback v1 is given,
which warns that the device trees were not compared. TLS is never dropped by a fallback.

mig2's own options: --qmp SOCKET (a plain-QEMU guest), --agent HOST:PORT (default: the
destination URI's host, port 16520), --tls-dir DIR (default /etc/pki/qemu), --compression
auto|none|zlib|zstd, --insecure (plaintext, labs only), --json, --keep-source,
--progress-timeout D, --downtime-limit D, --skip-device-check (experts), --protocol v1|v2|auto,
--fallback v1|none, --virsh-exact, and for libvirt --deep: ask the domain's QEMU for its
migration capabilities through QMP pass-through (QemuMonitorCommand) instead of inferring them
from libvirt's version; libvirt then marks the domain tainted "custom-monitor". With --qmp,
--timeout N cancels after N seconds; the libvirt path does not take --timeout yet
(--progress-timeout, default 60s, cancels a migration that has stopped moving).

` + exitCodeTable

func newMigrateCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:                "migrate [virsh migrate options] DOMAIN DESTURI",
		Short:              "Live-migrate a guest with the v2 handshake (virsh migrate's options)",
		Long:               migrateLong,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseMigrateArgs(cmd, args)
			if err != nil {
				return err
			}
			if m.Help {
				return cmd.Help()
			}
			proto, reason, err := chooseProtocol(m)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			rep := newReporter(out, m.JSON || !isTerminal(out))
			logrus.SetOutput(rep.logWriter(os.Stderr))
			defer func() {
				rep.mu.Lock()
				rep.endLine()
				rep.mu.Unlock()
			}()
			if proto == virshProtoV1 {
				logrus.Warnf("mig2: the legacy v1 path (%s): no handshake, the device trees are NOT compared", reason)
				return migrateV1(ctx, g.connect, m, rep)
			}
			if m.QMP == "" && strings.HasPrefix(m.DestURI, "mig2://") {
				return usageErrorf("a mig2:// destination is a plain-QEMU agent: name the source guest's QMP socket with --qmp SOCKET")
			}
			if m.QMP != "" {
				err = migrateQEMU(ctx, m, rep)
			} else {
				err = migrateLibvirt(ctx, g.connect, m, rep)
			}
			if !noAgent(err) || m.Fallback != virshProtoV1 {
				return err
			}
			plan, warning, ferr := fallbackToV1(m)
			if ferr != nil {
				return errors.Join(err, ferr)
			}
			logrus.Warn("mig2: " + warning)
			rep.message("warning", warning)
			return migrateV1(ctx, g.connect, plan, rep)
		},
	}
}

func wantsOf(m virshMigrate) driver.Wants {
	w := driver.Wants{
		Compression: m.Compression, Postcopy: m.Postcopy, ZeroCopySend: m.ZeroCopy,
		MaxBandwidth: int64(m.Bandwidth) << 20, DowntimeLimit: m.DowntimeLimit,
	}
	if m.Given("parallel-connections") {
		w.Channels = m.ParallelConnections
	}
	if w.Compression == "" {
		for _, c := range m.CompMethods { // zlib and zstd are multifd methods
			if c == "zlib" || c == "zstd" {
				w.Compression = c
			}
		}
	}
	return w
}

func tlsDirOf(m virshMigrate) string {
	if m.TLSDir != "" {
		return m.TLSDir
	}
	return "/etc/pki/qemu"
}

func migrateQEMU(ctx context.Context, m virshMigrate, rep *reporter) error {
	dest, err := parseDestURI(m.DestURI)
	if err != nil {
		return err
	}
	ctx, stopSignals := cancelOnSignals(ctx)
	defer stopSignals()
	opts := driver.MigrateOptions{
		Dest: dest, Wants: wantsOf(m), TLSDir: tlsDirOf(m), Insecure: m.Insecure, ServerName: m.TLSDestination,
		ProgressTimeout: m.ProgressTimeout, KeepSource: m.KeepSource, SkipDeviceCheck: m.SkipDeviceCheck,
		OnProgress: rep.progress, Log: logrus.StandardLogger(),
		Guard: &driver.GuardCommand{Argv: guardArgv(), Output: os.Stderr},
	}
	if m.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.Timeout)
		defer cancel()
	}
	q, err := driver.OpenQEMU(ctx, m.Domain, m.QMP, opts.Log)
	if err != nil {
		return err
	}
	defer q.Close()
	rep.message("start", fmt.Sprintf("Migrating %q to %s (v2: negotiated, device trees compared, TLS %s)", m.Domain, dest, onOff(!m.Insecure)))
	sum, err := q.Migrate(ctx, opts)
	if err != nil {
		return err
	}
	rep.summary(sum)
	return nil
}

// readDestXML reads --xml, the domain XML the destination should create ("" when not given).
func readDestXML(m virshMigrate) (string, error) {
	if m.XML == "" {
		return "", nil
	}
	b, err := os.ReadFile(m.XML)
	if err != nil {
		return "", usageErrorf("cannot read file '%s': %v", m.XML, err)
	}
	return string(b), nil
}

// parseMigrateArgs parses migrate's (and check's) arguments the way virsh does; a command line
// virsh would refuse is printed in virsh's words and ends with virsh's status.
func parseMigrateArgs(cmd *cobra.Command, args []string) (virshMigrate, error) {
	m, err := parseVirshMigrate(args)
	var ve *virshArgError
	if errors.As(err, &ve) {
		ve.write(cmd.OutOrStdout(), cmd.ErrOrStderr())
		return m, &exitStatus{code: virshExitFailure}
	}
	return m, err
}

// noAgent reports whether a v2 migration failed because no agent answered at the destination
// (the case --fallback v1 is for); nothing had been changed then.
func noAgent(err error) bool {
	var ce *driver.ConnectError
	return errors.As(err, &ce) && strings.HasPrefix(ce.What, "reach the mig2 agent")
}

// migrateV1 runs the legacy single-stream path: no handshake, no agent.
func migrateV1(ctx context.Context, connect string, m virshMigrate, rep *reporter) error {
	if m.QMP != "" {
		uri := m.MigrateURI
		if uri == "" && !strings.HasPrefix(m.DestURI, "mig2://") {
			uri = m.DestURI
		}
		if !strings.HasPrefix(uri, "tcp:") && !strings.HasPrefix(uri, "unix:") {
			return usageErrorf("v1 with --qmp needs QEMU's migration URI (tcp:HOST:PORT or unix:PATH) as DESTURI or --migrateuri, not %q", uri)
		}
		set := v1.Settings{Capabilities: m.Capabilities, MaxBandwidth: int64(m.Bandwidth) << 20, TLS: m.TLS, TLSDir: tlsDirOf(m), TLSHostname: m.TLSDestination}
		if m.AutoConverge {
			set.Capabilities = append(set.Capabilities, "auto-converge")
		}
		if slices.Contains(m.CompMethods, "xbzrle") || (m.Compressed && len(m.CompMethods) == 0) {
			set.Capabilities = append(set.Capabilities, "xbzrle")
		}
		if m.Postcopy {
			set.Capabilities = append(set.Capabilities, "postcopy-ram")
		}
		if set.TLS && set.TLSHostname == "" {
			set.TLSHostname = uriHostOf(uri)
		}
		if m.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, m.Timeout)
			defer cancel()
		}
		q, err := driver.OpenQEMU(ctx, m.Domain, m.QMP, logrus.StandardLogger())
		if err != nil {
			return err
		}
		defer q.Close()
		rep.message("start", fmt.Sprintf("Migrating %q to %s on the legacy v1 path (TLS %s)", m.Domain, uri, onOff(m.TLS)))
		sum, err := q.MigrateV1(ctx, driver.V1Options{URI: uri, DestQMP: m.DestQMP, Settings: set,
			ProgressTimeout: m.ProgressTimeout, KeepSource: m.KeepSource, OnProgress: rep.progress, Log: logrus.StandardLogger()})
		if err != nil {
			return err
		}
		rep.summary(sum)
		return nil
	}
	return migrateLibvirtV1(ctx, connect, m, rep)
}

func uriHostOf(uri string) string {
	rest, ok := strings.CutPrefix(uri, "tcp:")
	if !ok {
		return ""
	}
	if h, _, err := net.SplitHostPort(rest); err == nil {
		return h
	}
	return ""
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "OFF"
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// signalCancel is the cause of a migration cancelled by a signal; it is a context.Canceled, so
// the cancel is classified (exit 6) and reported like Ctrl-C.
type signalCancel struct{ sig os.Signal }

func (e *signalCancel) Error() string {
	return fmt.Sprintf("cancelled by %s (signal %s)", signalName(e.sig), e.sig)
}
func (e *signalCancel) Unwrap() error { return context.Canceled }

func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP (the terminal went away)"
	}
	return sig.String()
}

// cancelOnSignals cancels a migration cleanly on SIGINT, SIGTERM and SIGHUP, with the signal as
// the cause: the source QEMU's migration is cancelled, its guest resumed and the agent told, so
// nothing is left half-way (docs/FAULTS.md). Signals after the first change nothing: the
// rollback must not be interrupted. SIGPIPE is taken too, so that a closed stdout or stderr
// (mig2 migrate ... | head) makes writes fail instead of killing mig2 mid-migration. Uncatchable
// deaths (SIGKILL, a crash) are the guard's (driver/guard.go).
func cancelOnSignals(parent context.Context) (context.Context, func()) {
	// Not derived from parent's cancel: main's handler would race this one and lose the signal's
	// name. A cancel that already happened is kept.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	if parent.Err() != nil {
		cancel(context.Cause(parent))
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() { // owned here: stopped and waited for by the returned func
		defer close(finished)
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGPIPE {
					continue
				}
				if ctx.Err() == nil {
					logrus.Warnf("mig2: %s: cancelling the migration; the source guest is kept running (a second signal changes nothing)", signalName(sig))
				}
				cancel(&signalCancel{sig: sig})
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		close(done)
		<-finished
		cancel(nil)
	}
}

// guardArgv is how mig2 migrate starts its source guard: mig2-guard from this binary's
// directory when it is there (pure Go: it starts in ~10 ms, where this binary spends ~35 ms
// loading libvirt, on the cores the handshake needs), else this binary's hidden sub-command
// (/proc/self/exe survives an upgrade of the file on disk).
func guardArgv() []string {
	if self, err := os.Executable(); err == nil {
		g := filepath.Join(filepath.Dir(self), guardBinary)
		if st, err := os.Stat(g); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return []string{g}
		}
	}
	return []string{"/proc/self/exe", guardCmdName}
}

// guardBinary is the guard's own program, installed next to mig2 (cmd/mig2-guard).
const guardBinary = "mig2-guard"

// guardCmdName is the hidden sub-command that runs the source guard (driver/guard.go).
const guardCmdName = "__migrate-guard"

// newGuardCmd runs the source guard. mig2 migrate starts it; it is not for people.
func newGuardCmd() *cobra.Command {
	var cfg driver.GuardConfig
	cmd := &cobra.Command{
		Use:    guardCmdName,
		Short:  "internal: guard a migration's source QEMU while mig2 migrate runs",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The guard must outlive whatever ends mig2: a terminal's signals, a closed stderr.
			signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
			cfg.Log = logrus.StandardLogger()
			return driver.GuardMain(cfg, os.Stdin, os.Stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.QMP, "qmp", "", "the source QEMU's QMP socket")
	f.StringVar(&cfg.Guest, "guest", "", "the guest's name")
	f.StringVar(&cfg.MigrationID, "migration-id", "", "the migration's id")
	f.IntVar(&cfg.ParentPID, "parent-pid", 0, "mig2 migrate's pid")
	f.BoolVar(&cfg.Resume, "resume", false, "the guest ran before the migration")
	_ = cmd.MarkFlagRequired("qmp")
	return cmd
}
