package main

import (
	"bufio"
	"context"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/mig2/mig2/driver"
	"github.com/mig2/mig2/hooks"
)

// statsOnSignal logs one line "agent: stats goroutines=N rss_kib=M go_heap_kib=H" each time
// the agent receives SIGUSR1 (the soak test samples it after every migration), until stop is
// called. H is the Go heap in use; RSS growing while H stays flat points at C memory (libvirt).
func statsOnSignal(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				logrus.Infof("agent: stats goroutines=%d rss_kib=%d go_heap_kib=%d", runtime.NumGoroutine(), rssKiB(), m.HeapInuse/1024)
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		cancel()
		<-done
	}
}

// rssKiB is the process's resident set size (VmRSS in /proc/self/status), -1 if unreadable.
func rssKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

func newAgentCmd(g *globalFlags) *cobra.Command {
	var (
		listen, tlsDir, migHost string
		authz, guests           []string
		insecure, denyPostcopy  bool
		allowSkip               bool
		maxChannels             int
		grace                   time.Duration
		libvirtURI, hookSocket  string
		hookPolicy              string
	)
	cmd := &cobra.Command{
		Use:   "agent --listen HOST:PORT --tls-dir DIR --guest NAME=QMP_SOCKET[,log=PATH]...",
		Short: "Serve v2 migrations on the destination host",
		Long: `Run the destination agent. Each --guest names a QEMU started with -incoming defer; the agent
answers v2 handshakes for it, configures that QEMU from the agreed set, starts its incoming
migration on a port it picks and reports the outcome, with QEMU's own error text, to the source.

No flag here concerns a migration's parameters: they are negotiated. The only configuration is
where to listen and the TLS identity (server-cert.pem, server-key.pem, ca-cert.pem in --tls-dir;
the same directory QEMU's tls-creds-x509 uses). --authz restricts which client certificates
(by subject DN, '*' as a wildcard) may migrate here.

After a failed incoming migration the waiting QEMU can never receive that guest (QEMU accepts
one incoming migration per process), so the agent shuts it down, as libvirt does; start a new
one to retry. SIGTERM or Ctrl-C stop accepting, let migrations in flight finish for up to
--shutdown-grace and cancel the rest cleanly. SIGUSR1 logs the agent's goroutine count and
resident memory ("agent: stats goroutines=N rss_kib=M").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			specs, err := parseGuestSpecs(guests)
			if err != nil {
				return err
			}
			if len(specs) == 0 && libvirtURI == "" {
				return usageErrorf("give at least one --guest NAME=QMP_SOCKET, or --libvirt URI")
			}
			if libvirtURI == "" && (cmd.Flags().Changed("hook-policy") || cmd.Flags().Changed("hook-socket")) {
				return usageErrorf("--hook-policy and --hook-socket concern libvirt guests: give --libvirt URI too")
			}
			cfg := driver.AgentConfig{
				Listen: listen, TLSDir: tlsDir, Insecure: insecure, AllowedDNs: authz,
				MigrationHost: migHost, MaxChannels: maxChannels, DenyPostcopy: denyPostcopy,
				AllowSkipDeviceCheck: allowSkip, ShutdownGrace: grace, Log: logrus.StandardLogger(),
			}
			for _, s := range specs {
				cfg.Guests = append(cfg.Guests, driver.AgentGuest{Name: s.Name, QMP: s.QMP, LogPath: s.LogPath})
			}
			ctx := cmd.Context()
			stopStats := statsOnSignal(ctx)
			defer stopStats()
			if libvirtURI != "" {
				return serveAgentWithLibvirt(ctx, cfg, libvirtAgent{URI: libvirtURI, HookSocket: hookSocket, HookPolicy: hookPolicy})
			}
			a, err := driver.NewAgent(cfg)
			if err != nil {
				return err
			}
			logListening(a, cfg)
			return a.Serve(ctx)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&listen, "listen", "0.0.0.0:16520", "address to listen on")
	fl.StringVar(&tlsDir, "tls-dir", "/etc/pki/qemu", "x509 directory in QEMU's layout")
	fl.StringArrayVar(&authz, "authz", nil, "client certificate DN allowed to migrate here, e.g. \"CN=src,O=Example\" (repeat the flag for several; default: any the CA signed)")
	fl.StringArrayVar(&guests, "guest", nil, "NAME=QMP_SOCKET[,log=PATH] of a QEMU waiting with -incoming defer (repeatable)")
	fl.BoolVar(&insecure, "insecure", false, "plaintext (labs only; sources must use --insecure too)")
	fl.StringVar(&migHost, "migration-address", "", "address the destination QEMU listens on for the migration stream (default: the --listen host)")
	fl.IntVar(&maxChannels, "max-channels", 0, "local limit on multifd channels (default: none)")
	fl.BoolVar(&denyPostcopy, "deny-postcopy", false, "never agree to postcopy")
	fl.BoolVar(&allowSkip, "allow-skip-device-check", false, "accept sources that skip the device-tree comparison (experts only)")
	fl.StringVar(&libvirtURI, "libvirt", "", "also receive libvirt domains through this local libvirt (e.g. qemu:///system)")
	fl.StringVar(&hookSocket, "hook-socket", hooks.DefaultSocket, "unix socket where the libvirt qemu hook asks the agent (with --libvirt)")
	fl.StringVar(&hookPolicy, "hook-policy", "require-v2", "what the hook does with a libvirt migration that skipped the handshake: require-v2 (refuse) or warn")
	fl.DurationVar(&grace, "shutdown-grace", 2*time.Minute, "on shutdown, how long migrations in flight may take to finish before they are cancelled")
	return cmd
}

// libvirtAgent is the agent's libvirt side (--libvirt and the hook's options), served by
// serveAgentWithLibvirt (libvirt.go; libvirt_exec.go in a build without libvirt).
type libvirtAgent struct {
	URI, HookSocket, HookPolicy string
}

// logListening says where the agent listens and how.
func logListening(a *driver.Agent, cfg driver.AgentConfig) {
	tlsNote := "TLS (mutual x509) from " + cfg.TLSDir
	if cfg.Insecure {
		tlsNote = "PLAINTEXT (--insecure): labs only"
	}
	logrus.Infof("mig2 agent listening on %s, %s, serving %d guest(s)", a.Addr(), tlsNote, len(cfg.Guests))
}
