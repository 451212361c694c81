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
	switch g.logFormat {
	case "text":
		logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	fmt.Fprintf(os.Stderr, "mig2: %v\n", err)
	return code
}

// execVirsh runs virsh with the user's arguments unchanged and returns its exit status.
func execVirsh(sub string, args []string) int {
	path, err := exec.LookPath("virsh")
	if err != nil {
		fmt.Fprintf(os.Stderr, "mig2: %q is not a mig2 command and virsh is not installed to run it\n", sub)
		return exitUsage
	}
	cmd := exec.Command(path, args...)
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
