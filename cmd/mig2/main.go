// Command mig2 migrates QEMU/KVM guests with a v2 handshake: the destination needs only an
// address and its TLS identity, device trees are compared before any RAM moves, and the source
// guest survives every failure.
//
// Sub-commands mig2 does not implement are handed to virsh unchanged, so `alias virsh=mig2` is safe.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/mig2/mig2/driver"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

type globalFlags struct {
	logLevel  string
	logFormat string
	connect   string // virsh's -c/--connect: the libvirt URI of the source
}

func newRootCmd(g *globalFlags) *cobra.Command {
	root := &cobra.Command{
		Use:   "mig2",
		Short: "Safe live migration of QEMU/KVM guests with a negotiated v2 handshake",
		Long: `mig2 migrates QEMU/KVM guests with a v2 handshake: the destination needs only an address
and its TLS identity; everything else (multifd channels, compression, postcopy, TLS on the
migration stream) is negotiated; device trees are compared before a single byte of RAM moves;
and whatever fails, the source guest keeps running.

Any sub-command mig2 does not implement is handed to virsh unchanged.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return setupLogging(g)
		},
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text (for people) or json")
	root.PersistentFlags().StringVarP(&g.connect, "connect", "c", "", "libvirt URI of the source (as virsh -c; default: libvirt's default)")
	for _, c := range subcommands(g) {
		root.AddCommand(c)
	}
	return root
}

func setupLogging(g *globalFlags) error {
	lvl, err := logrus.ParseLevel(g.logLevel)
	if err != nil {
		return usageErrorf("--log-level: %v", err)
	}
	logrus.SetLevel(lvl)
	logrus.SetOutput(os.Stderr)
	// Milliseconds, as libvirt's and QEMU's logs: a migration's stages are milliseconds apart.
	const stamp = "2006-01-02T15:04:05.000Z07:00"
	switch g.logFormat {
	case "text":
		logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: stamp})
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: stamp})
	default:
		return usageErrorf("--log-format must be text or json, not %q", g.logFormat)
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	driver.Version = version
	g := &globalFlags{}
	root := newRootCmd(g)
	if name, ok := passthroughTarget(root, args); ok {
		return execVirsh(name, args)
	}
	// Global options before the sub-command are taken here: sub-commands that parse virsh's
	// syntax themselves (migrate, check) would otherwise see them.
	args, err := takeGlobalFlags(g, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mig2: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	var es *exitStatus
	if !errors.As(err, &es) { // a sub-command that set its own status has already said why
		fmt.Fprintf(os.Stderr, "mig2: %v\n", err)
	}
	return code
}

// execVirsh runs virsh with the user's arguments unchanged and returns its exit status.
func execVirsh(sub string, args []string) int {
	path, err := exec.LookPath("virsh")
	if err != nil {
		fmt.Fprintf(os.Stderr, "mig2: %q is not a mig2 command and virsh is not installed to run it\n", sub)
		return exitUsage
	}
	cmd := exec.Command(path, withoutMig2Flags(args)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "mig2: running virsh: %v\n", err)
		return exitInternal
	}
	return 0
}

// takeGlobalFlags consumes mig2's global options that precede the sub-command (virsh style:
// `mig2 -c URI migrate ...`) and returns the rest.
func takeGlobalFlags(g *globalFlags, args []string) ([]string, error) {
	targets := map[string]*string{"-c": &g.connect, "--connect": &g.connect, "--log-level": &g.logLevel, "--log-format": &g.logFormat}
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		name, val, hasVal := strings.Cut(args[0], "=")
		dst, ok := targets[name]
		if !ok {
			break
		}
		if !hasVal {
			if len(args) < 2 {
				return nil, usageErrorf("option %s needs a value", name)
			}
			val, args = args[1], args[1:]
		}
		*dst = val
		args = args[1:]
	}
	return args, nil
}

// withoutMig2Flags drops mig2's own global options (virsh has no --log-level or --log-format).
func withoutMig2Flags(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		name, _, hasVal := strings.Cut(args[i], "=")
		if name == "--log-level" || name == "--log-format" {
			if !hasVal {
				i++
			}
			continue
		}
		out = append(out, args[i])
	}
	return out
}
