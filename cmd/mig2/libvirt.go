//go:build !nolibvirt

package main

// The libvirt half of mig2: everything that needs libvirt's C library. A binary built with the
// nolibvirt tag (bin/mig2: pure Go, it starts in ~10 ms where loading libvirt costs ~35 ms of
// CPU before main) has libvirt_exec.go instead, which hands these commands to mig2-libvirt,
// this same program built with libvirt.

import (
	"context"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/mig2/mig2/driver"
	lvdriver "github.com/mig2/mig2/driver/libvirt"
	"github.com/mig2/mig2/hooks"
)

func migrateLibvirt(ctx context.Context, connect string, m virshMigrate, rep *reporter) error {
	if m.Timeout > 0 || m.TimeoutPostcopy {
		return usageErrorf("--timeout is not supported on mig2's libvirt path yet; use --progress-timeout to cancel a stalled migration")
	}
	agent, err := agentOf(m)
	if err != nil {
		return err
	}
	opts := lvdriver.MigrateOptions{
		DestURI: m.DestURI, Agent: agent, Wants: wantsOf(m), TLSDir: tlsDirOf(m), Insecure: m.Insecure,
		ServerName: m.TLSDestination, Flags: libvirtFlags(m), MigrateURI: m.MigrateURI,
		ListenAddress: m.ListenAddress, DestName: m.DName, SkipDeviceCheck: m.SkipDeviceCheck,
		Deep: m.Deep, ProgressTimeout: m.ProgressTimeout, OnProgress: rep.progress, Log: logrus.StandardLogger(),
	}
	src, err := openLibvirtSource(ctx, connect, m, &opts)
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

// migrateLibvirtV1 is the legacy v1 path for a libvirt domain: libvirt's own flow, no handshake.
func migrateLibvirtV1(ctx context.Context, connect string, m virshMigrate, rep *reporter) error {
	opts := lvdriver.MigrateOptions{DestURI: m.DestURI, Flags: libvirtV1Flags(m), MigrateURI: m.MigrateURI, ListenAddress: m.ListenAddress,
		DestName: m.DName, Wants: driver.Wants{MaxBandwidth: int64(m.Bandwidth) << 20}, ProgressTimeout: m.ProgressTimeout,
		OnProgress: rep.progress, Log: logrus.StandardLogger()}
	src, err := openLibvirtSource(ctx, connect, m, &opts)
	if err != nil {
		return err
	}
	defer src.Close()
	rep.message("start", fmt.Sprintf("Migrating %q to %s through libvirt on the legacy v1 path (TLS %s)", m.Domain, m.DestURI, onOff(m.TLS)))
	sum, err := src.MigrateV1(ctx, opts, m.CompMethods)
	if err != nil {
		return err
	}
	rep.summary(sum)
	return nil
}

// checkLibvirt is mig2 check for a libvirt domain: the same handshake as mig2 migrate, then an
// Abort instead of the migration.
func checkLibvirt(cmd *cobra.Command, connect string, m virshMigrate) error {
	agent, err := agentOf(m)
	if err != nil {
		return err
	}
	opts := lvdriver.MigrateOptions{DestURI: m.DestURI, Agent: agent, Wants: wantsOf(m), TLSDir: tlsDirOf(m), Insecure: m.Insecure,
		ServerName: m.TLSDestination, SkipDeviceCheck: m.SkipDeviceCheck, Deep: m.Deep, Log: logrus.StandardLogger()}
	src, err := openLibvirtSource(cmd.Context(), connect, m, &opts)
	if err != nil {
		return err
	}
	defer src.Close()
	rep, err := src.Check(cmd.Context(), opts)
	if rep != nil {
		printCheck(cmd.OutOrStdout(), rep, m.JSON)
	}
	return err
}

// libvirtV1Flags are the v1 path's flags: on top of libvirtFlags, the user's own choice of
// peer-to-peer, tunnelling, TLS, compression and postcopy (on v2 those come from the agreement).
func libvirtV1Flags(m virshMigrate) golibvirt.DomainMigrateFlags {
	return libvirtFlags(m) | flagsIf(map[golibvirt.DomainMigrateFlags]bool{
		golibvirt.MIGRATE_PEER2PEER: m.P2P, golibvirt.MIGRATE_TUNNELLED: m.Tunnelled, golibvirt.MIGRATE_TLS: m.TLS,
		golibvirt.MIGRATE_COMPRESSED: m.Compressed, golibvirt.MIGRATE_POSTCOPY: m.Postcopy,
	})
}

func flagsIf(set map[golibvirt.DomainMigrateFlags]bool) golibvirt.DomainMigrateFlags {
	var f golibvirt.DomainMigrateFlags
	for flag, on := range set {
		if on {
			f |= flag
		}
	}
	return f
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

// hookHandler answers the libvirt qemu hook: migrate-begin is checked against what this agent
// negotiated; everything else passes.
func hookHandler(lv *lvdriver.Incoming, policy lvdriver.Policy) hooks.Handler {
	return func(ctx context.Context, req hooks.Request) hooks.Response {
		if req.Op != hooks.ReqMigrateBegin {
			return hooks.Response{Allow: true}
		}
		allow, reason := lv.Decide(req.Domain, []byte(req.XML), policy)
		log := logrus.WithFields(logrus.Fields{"domain": req.Domain, "stage": "hook migrate-begin"})
		switch {
		case !allow:
			log.Warn("refused an incoming migration: " + reason)
		case reason != "":
			log.Warn("let an un-negotiated migration through (--hook-policy warn): " + reason)
		}
		return hooks.Response{Allow: allow, Reason: reason}
	}
}

// serveAgentWithLibvirt runs the agent for its --guest QEMUs and for the domains of a local
// libvirt, and answers the qemu hook on its socket, until ctx ends.
func serveAgentWithLibvirt(ctx context.Context, cfg driver.AgentConfig, o libvirtAgent) error {
	policy, err := lvdriver.ParsePolicy(o.HookPolicy)
	if err != nil {
		return usageErrorf("--hook-policy: %v", err)
	}
	lv, err := lvdriver.NewIncoming(lvdriver.IncomingConfig{URI: o.URI, MaxChannels: cfg.MaxChannels, DenyPostcopy: cfg.DenyPostcopy})
	if err != nil {
		return err
	}
	defer lv.Close()
	cfg.Incoming = lv
	a, err := driver.NewAgent(cfg)
	if err != nil {
		return err
	}
	ln, err := hooks.ListenUnix(o.HookSocket)
	if err != nil {
		return err
	}
	hookCtx, stopHook := context.WithCancel(ctx) // the hook's socket closes when the agent stops
	defer stopHook()
	srv := &hooks.Server{Handler: hookHandler(lv, policy), Log: logrus.StandardLogger()}
	hookDone := make(chan error, 1)
	go func() { hookDone <- srv.Serve(hookCtx, ln) }()
	logrus.Infof("mig2 agent: libvirt guests through %s; hook socket %s (policy %s)", o.URI, o.HookSocket, policy)
	logListening(a, cfg)
	err = a.Serve(ctx)
	stopHook()
	if herr := <-hookDone; herr != nil && !errors.Is(herr, context.Canceled) && err == nil {
		err = herr // the hook's socket failed on its own
	}
	return err
}

// agentOf is the destination agent's address: --agent, else the destination URI's host at
// port 16520.
func agentOf(m virshMigrate) (string, error) {
	if m.Agent != "" {
		return m.Agent, nil
	}
	agent, err := lvdriver.AgentAddress(m.DestURI)
	if err != nil {
		return "", usageErrorf("%v", err)
	}
	return agent, nil
}

// openLibvirtSource reads --xml into opts and opens the domain to migrate; the caller closes it.
func openLibvirtSource(ctx context.Context, connect string, m virshMigrate, opts *lvdriver.MigrateOptions) (*lvdriver.Source, error) {
	var err error
	if opts.DestXML, err = readDestXML(m); err != nil {
		return nil, err
	}
	return lvdriver.Open(ctx, connect, m.Domain, opts.Log)
}
