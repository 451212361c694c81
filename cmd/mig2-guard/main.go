// Command mig2-guard guards a migration's source QEMU while mig2 migrate runs (driver/guard.go).
// mig2 starts it; it is a separate, pure-Go binary so that starting it costs a few
// milliseconds, not the ~35 ms of loading libvirt that the mig2 binary pays at exec, while the
// handshake runs on the same cores.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/mig2/mig2/driver"
)

func main() {
	var cfg driver.GuardConfig
	fs := flag.NewFlagSet("mig2-guard", flag.ContinueOnError)
	fs.StringVar(&cfg.QMP, "qmp", "", "the source QEMU's QMP socket")
	fs.StringVar(&cfg.Guest, "guest", "", "the guest's name")
	fs.StringVar(&cfg.MigrationID, "migration-id", "", "the migration's id")
	fs.IntVar(&cfg.ParentPID, "parent-pid", 0, "mig2 migrate's pid")
	fs.BoolVar(&cfg.Resume, "resume", false, "the guest ran before the migration")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if cfg.QMP == "" {
		fmt.Fprintln(os.Stderr, "mig2-guard: --qmp is required (mig2 migrate starts this program; it is not for people)")
		os.Exit(2)
	}
	// The guard must outlive whatever ends mig2: a terminal's signals, a closed stderr.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	cfg.Log = logrus.StandardLogger()
	if err := driver.GuardMain(cfg, os.Stdin, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "mig2: %v\n", err)
		os.Exit(1)
	}
}
