package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mig2/mig2/driver"
)

// sourceFlags are shared by migrate and check.
type sourceFlags struct {
	qmp             string
	channels        int
	compression     string
	compLevel       int
	postcopy        bool
	zeroCopy        bool
	bandwidthMiB    int64
	downtime        time.Duration
	tlsDir          string
	insecure        bool
	serverName      string
	skipDeviceCheck bool
	jsonOut         bool
}

func (f *sourceFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.qmp, "qmp", "", "QMP socket of the source guest's QEMU (required)")
	fl.IntVar(&f.channels, "parallel-connections", 0, "multifd channels to ask for (default: chosen from both hosts' cores)")
	fl.StringVar(&f.compression, "compression", "auto", "multifd compression: auto, none, zlib or zstd (auto measures the guest's memory)")
	fl.IntVar(&f.compLevel, "compression-level", 0, "compression level (default: QEMU's)")
	fl.BoolVar(&f.postcopy, "postcopy", false, "allow postcopy when both QEMUs can run it together with multifd")
	fl.BoolVar(&f.zeroCopy, "zero-copy", false, "ask for zero-copy send (only without TLS and compression)")
	fl.Int64Var(&f.bandwidthMiB, "bandwidth", 0, "bandwidth limit in MiB/s (default: unlimited)")
	fl.DurationVar(&f.downtime, "downtime-limit", 0, "maximum tolerated downtime (default 300ms)")
	fl.StringVar(&f.tlsDir, "tls-dir", "/etc/pki/qemu", "x509 directory in QEMU's layout (ca-cert.pem, client-cert.pem, client-key.pem)")
	fl.BoolVar(&f.insecure, "insecure", false, "plaintext control channel and migration stream (labs only; the agent must run with --insecure too)")
	fl.StringVar(&f.serverName, "tls-hostname", "", "name the agent's certificate must carry (default: the destination's host)")
	fl.BoolVar(&f.skipDeviceCheck, "skip-device-check", false, "EXPERTS ONLY: do not compare device trees before migrating (the agent must run with --allow-skip-device-check)")
	fl.BoolVar(&f.jsonOut, "json", false, "report as one JSON object per line (the default when stdout is not a terminal)")
}

func (f *sourceFlags) options(dest string) (driver.MigrateOptions, error) {
	if f.qmp == "" {
		return driver.MigrateOptions{}, usageErrorf("--qmp SOCKET is required (the source guest's QMP socket)")
	}
	switch f.compression {
	case "auto", "none", "zlib", "zstd":
	default:
		return driver.MigrateOptions{}, usageErrorf("--compression must be auto, none, zlib or zstd, not %q", f.compression)
	}
	if f.channels < 0 || f.channels > 255 {
		return driver.MigrateOptions{}, usageErrorf("--parallel-connections must be between 1 and 255")
	}
	if f.bandwidthMiB < 0 {
		return driver.MigrateOptions{}, usageErrorf("--bandwidth must not be negative")
	}
	addr, err := parseDestURI(dest)
	if err != nil {
		return driver.MigrateOptions{}, err
	}
	return driver.MigrateOptions{
		Dest: addr,
		Wants: driver.Wants{
			Channels: f.channels, Compression: f.compression, CompressionLevel: f.compLevel,
			Postcopy: f.postcopy, ZeroCopySend: f.zeroCopy, MaxBandwidth: f.bandwidthMiB << 20,
			DowntimeLimit: f.downtime,
		},
		TLSDir: f.tlsDir, Insecure: f.insecure, ServerName: f.serverName,
		SkipDeviceCheck: f.skipDeviceCheck,
		Log:             logrus.StandardLogger(),
	}, nil
}

func newMigrateCmd(g *globalFlags) *cobra.Command {
	f := &sourceFlags{}
	var timeout, progressTimeout time.Duration
	var keepSource bool
	cmd := &cobra.Command{
		Use:   "migrate --qmp SOCKET [flags] NAME mig2://HOST[:PORT]",
		Short: "Live-migrate a guest with the v2 handshake",
		Long: `Live-migrate the guest whose QEMU listens on --qmp to the mig2 agent at HOST:PORT
(default port 16520). NAME is the guest's name as the agent knows it.

mig2 and the agent negotiate every setting both QEMUs must share (multifd channels,
compression, postcopy, TLS on the migration stream) and compare the two device trees before a
single byte of RAM moves. With no tuning flags mig2 chooses: channels from both hosts' cores,
zstd only when the guest's memory compresses, no bandwidth cap. The destination needs nothing
but its agent.

Success means the destination confirmed its guest runs; the stale source is then shut down
(--keep-source leaves it paused). Whatever fails before that, the source guest keeps running.
Ctrl-C and --timeout cancel safely.

` + exitCodeTable,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(args[1])
			if err != nil {
				return err
			}
			opts.KeepSource = keepSource
			opts.ProgressTimeout = progressTimeout
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			out := cmd.OutOrStdout()
			rep := newReporter(out, f.jsonOut || !isTerminal(out))
			opts.OnProgress = rep.progress
			logrus.SetOutput(rep.logWriter(os.Stderr))
			q, err := driver.OpenQEMU(ctx, args[0], f.qmp, opts.Log)
			if err != nil {
				return err
			}
			defer q.Close()
			rep.message("start", fmt.Sprintf("Migrating %q to %s (v2: negotiated, device trees compared, TLS %s)", args[0], opts.Dest, onOff(!opts.Insecure)))
			sum, err := q.Migrate(ctx, opts)
			if err != nil {
				rep.mu.Lock()
				rep.endLine()
				rep.mu.Unlock()
				return err
			}
			rep.summary(sum)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "cancel the migration (safely) if it has not finished after this long")
	cmd.Flags().DurationVar(&progressTimeout, "progress-timeout", 60*time.Second, "cancel if the migration makes no progress for this long")
	cmd.Flags().BoolVar(&keepSource, "keep-source", false, "after success, leave the stale source QEMU paused instead of shutting it down")
	return cmd
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
