package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/mig2/mig2/driver"
	lvdriver "github.com/mig2/mig2/driver/libvirt"
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
which does no handshake and compares nothing. mig2 does not run v1 migrations yet: it says so
and changes nothing (use virsh for them). A destination without an agent is an error unless
--fallback v1 is given, which warns that the device trees were not compared.

mig2's own options: --qmp SOCKET (a plain-QEMU guest), --agent HOST:PORT (default: the
destination URI's host, port 16520), --tls-dir DIR (default /etc/pki/qemu), --compression
auto|none|zlib|zstd, --insecure (plaintext, labs only), --json, --keep-source,
--progress-timeout D, --downtime-limit D, --skip-device-check (experts), --protocol v1|v2|auto,
--fallback v1|none, --virsh-exact, and for libvirt --deep: ask the domain's QEMU for its
migration capabilities through QMP pass-through (QemuMonitorCommand) instead of inferring them
from libvirt's version; libvirt then marks the domain tainted "custom-monitor". With --qmp, --timeout N cancels after N seconds; with libvirt
it keeps virsh's meaning (suspend the guest after N seconds).

` + exitCodeTable

func newMigrateCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:                "migrate [virsh migrate options] DOMAIN DESTURI",
		Short:              "Live-migrate a guest with the v2 handshake (virsh migrate's options)",
		Long:               migrateLong,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseVirshMigrate(args)
			if err != nil {
				var ve *virshArgError
				if errors.As(err, &ve) {
					ve.write(cmd.OutOrStdout(), cmd.ErrOrStderr())
					return &exitStatus{code: virshExitFailure}
				}
				return err
			}
			if m.Help {
				return cmd.Help()
			}
			proto, reason, err := chooseProtocol(m)
			if err != nil {
				return err
			}
			if proto == virshProtoV1 {
				return usageErrorf("this migration belongs to the legacy v1 path (%s); mig2 does not run v1 migrations yet: use virsh migrate for it", reason)
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
			if m.QMP != "" {
				return migrateQEMU(ctx, m, rep)
			}
			if strings.HasPrefix(m.DestURI, "mig2://") {
				return usageErrorf("a mig2:// destination is a plain-QEMU agent: name the source guest's QMP socket with --qmp SOCKET")
			}
			return migrateLibvirt(ctx, g.connect, m, rep)
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
	opts := driver.MigrateOptions{
		Dest: dest, Wants: wantsOf(m), TLSDir: tlsDirOf(m), Insecure: m.Insecure, ServerName: m.TLSDestination,
		ProgressTimeout: m.ProgressTimeout, KeepSource: m.KeepSource, SkipDeviceCheck: m.SkipDeviceCheck,
		OnProgress: rep.progress, Log: logrus.StandardLogger(),
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

func migrateLibvirt(ctx context.Context, connect string, m virshMigrate, rep *reporter) error {
	if m.Timeout > 0 || m.TimeoutPostcopy {
		return usageErrorf("--timeout is not supported on mig2's libvirt path yet; use --progress-timeout to cancel a stalled migration")
	}
	agent := m.Agent
	if agent == "" {
		var err error
		if agent, err = lvdriver.AgentAddress(m.DestURI); err != nil {
			return usageErrorf("%v", err)
		}
	}
	opts := lvdriver.MigrateOptions{
		DestURI: m.DestURI, Agent: agent, Wants: wantsOf(m), TLSDir: tlsDirOf(m), Insecure: m.Insecure,
		ServerName: m.TLSDestination, Flags: libvirtFlags(m), MigrateURI: m.MigrateURI,
		ListenAddress: m.ListenAddress, DestName: m.DName, SkipDeviceCheck: m.SkipDeviceCheck,
		Deep: m.Deep, OnProgress: rep.progress, Log: logrus.StandardLogger(),
	}
	if m.XML != "" {
		b, err := os.ReadFile(m.XML)
		if err != nil {
			return usageErrorf("cannot read file '%s': %v", m.XML, err)
		}
		opts.DestXML = string(b)
	}
	src, err := lvdriver.Open(ctx, connect, m.Domain, opts.Log)
	if err != nil {
		return err
	}
	defer src.Close()
	rep.message("start", fmt.Sprintf("Migrating %q to %s through libvirt (v2: negotiated with the agent at %s, device trees compared)", m.Domain, m.DestURI, agent))
	sum, err := src.Migrate(ctx, opts)
	if err != nil {
		return err
	}
	rep.summary(sum)
	return nil
}

// libvirtFlags maps the virsh options that keep their libvirt meaning onto migration flags;
// peer-to-peer, parallel, TLS and postcopy come from the agreement.
func libvirtFlags(m virshMigrate) golibvirt.DomainMigrateFlags {
	var f golibvirt.DomainMigrateFlags
	set := func(on bool, flag golibvirt.DomainMigrateFlags) {
		if on {
			f |= flag
		}
	}
	set(m.Live, golibvirt.MIGRATE_LIVE)
	set(m.Persistent, golibvirt.MIGRATE_PERSIST_DEST)
	set(m.UndefineSource, golibvirt.MIGRATE_UNDEFINE_SOURCE)
	set(m.Suspend, golibvirt.MIGRATE_PAUSED)
	set(m.CopyStorageAll, golibvirt.MIGRATE_NON_SHARED_DISK)
	set(m.CopyStorageInc, golibvirt.MIGRATE_NON_SHARED_INC)
	set(m.AbortOnError, golibvirt.MIGRATE_ABORT_ON_ERROR)
	set(m.AutoConverge, golibvirt.MIGRATE_AUTO_CONVERGE)
	set(m.ChangeProtection, golibvirt.MIGRATE_CHANGE_PROTECTION)
	set(m.Unsafe, golibvirt.MIGRATE_UNSAFE)
	return f
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
