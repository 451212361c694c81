//go:build nolibvirt

package main

// This mig2 is built without libvirt (the nolibvirt tag: bin/mig2, pure Go). Loading libvirt's
// C library costs ~35 ms of CPU before main on every start, which the plain-QEMU path (--qmp,
// mig2://, the hook, the guard) must not pay in its pre-flight. Commands that need libvirt run
// mig2-libvirt instead: this same program built with libvirt (libvirt.go), installed next to
// this one. It replaces this process (exec), so the pid, signals and exit status are its.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mig2/mig2/driver"
)

// libvirtBinary is mig2 built with libvirt, installed next to this binary.
const libvirtBinary = "mig2-libvirt"

// execLibvirt runs the same command line in mig2-libvirt. It returns only if that fails.
func execLibvirt() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("this mig2 is built without libvirt and cannot find itself to run %s: %w", libvirtBinary, err)
	}
	path := filepath.Join(filepath.Dir(self), libvirtBinary)
	err = syscall.Exec(path, append([]string{path}, os.Args[1:]...), os.Environ())
	return fmt.Errorf("this mig2 is built without libvirt, and running %s for a libvirt domain failed (install it next to %s: make install): %w", path, self, err)
}

func migrateLibvirt(context.Context, string, virshMigrate, *reporter) error   { return execLibvirt() }
func migrateLibvirtV1(context.Context, string, virshMigrate, *reporter) error { return execLibvirt() }
func checkLibvirt(*cobra.Command, string, virshMigrate) error                 { return execLibvirt() }

func serveAgentWithLibvirt(context.Context, driver.AgentConfig, libvirtAgent) error {
	return execLibvirt()
}
