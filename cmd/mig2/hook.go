package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/mig2/mig2/hooks"
)

func newHookCmd(g *globalFlags) *cobra.Command {
	var socket, whenDown string
	cmd := &cobra.Command{
		Use:   "hook [--socket PATH] [--when-agent-down allow|refuse] HOOKPATH DOMAIN OPERATION SUB-OPERATION EXTRA",
		Short: "Run as libvirt's qemu hook (installed by `mig2 hook install`)",
		Long: `Run as libvirt's qemu hook. libvirt calls it with the domain XML on stdin. On the
destination's "migrate begin" it asks the local mig2 agent whether this incoming migration was
negotiated with the v2 handshake and whether the XML is the one agreed; a refusal aborts the
migration and the source user sees the one-line reason. Every other call passes at once.

The hook never calls libvirt (libvirt would deadlock) and answers within 1 s. When the agent
cannot be asked, --when-agent-down decides: allow (the default: a stopped agent must not block
plain virsh migrations) or refuse (recommended with the agent's --hook-policy require-v2).`,
		DisableFlagsInUseLine: true,
		Args:                  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := hooks.ParseAgentDownPolicy(whenDown)
			if err != nil {
				return usageErrorf("--when-agent-down: %v", err)
			}
			cfg := hooks.Config{Asker: &hooks.Client{Socket: socket}, WhenAgentDown: p, Log: logrus.StandardLogger()}
			code := hooks.Run(cmd.Context(), cfg, args, os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if code != 0 {
				return &exitStatus{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", hooks.DefaultSocket, "the agent's hook socket")
	cmd.Flags().StringVar(&whenDown, "when-agent-down", "allow", "allow or refuse migrations the hook cannot check")
	cmd.AddCommand(newHookInstallCmd())
	return cmd
}

func newHookInstallCmd() *cobra.Command {
	var dir, socket, whenDown, bin string
	var dropIn bool
	cmd := &cobra.Command{
		Use:   "install [--dir /etc/libvirt/hooks] [--drop-in]",
		Short: "Install mig2 as libvirt's qemu hook",
		Long: `Write the libvirt qemu hook that runs ` + "`mig2 hook`" + `: /etc/libvirt/hooks/qemu, or with --drop-in
/etc/libvirt/hooks/qemu.d/mig2 (libvirt runs every executable there). An existing qemu hook
that mig2 did not write is not overwritten. libvirtd reads its hooks at start: restart it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := hooks.ParseAgentDownPolicy(whenDown); err != nil {
				return usageErrorf("--when-agent-down: %v", err)
			}
			if bin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				bin = exe
			}
			path := filepath.Join(dir, "qemu")
			if dropIn {
				path = filepath.Join(dir, "qemu.d", "mig2")
			}
			if err := installHook(path, bin, socket, whenDown); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s (runs %s hook); restart libvirtd for it to take effect\n", path, bin)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "/etc/libvirt/hooks", "libvirt's hook directory")
	cmd.Flags().BoolVar(&dropIn, "drop-in", false, "install as qemu.d/mig2 next to other qemu hooks")
	cmd.Flags().StringVar(&socket, "socket", hooks.DefaultSocket, "the agent's hook socket")
	cmd.Flags().StringVar(&whenDown, "when-agent-down", "allow", "allow or refuse migrations the hook cannot check")
	cmd.Flags().StringVar(&bin, "mig2", "", "path of the mig2 binary the hook runs (default: this one)")
	return cmd
}

const hookMarker = "# written by mig2 hook install"

// hookScript is the hook file: libvirt runs it with a minimal environment, so every path is
// absolute.
func hookScript(bin, socket, whenDown string) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	return "#!/bin/sh\n" + hookMarker + "\nexec " + q(bin) + " hook --socket " + q(socket) +
		" --when-agent-down " + q(whenDown) + ` -- "$0" "$@"` + "\n"
}

func installHook(path, bin, socket, whenDown string) error {
	if old, err := os.ReadFile(path); err == nil && !strings.Contains(string(old), hookMarker) {
		return fmt.Errorf("%s exists and was not written by mig2: install with --drop-in, or merge it by hand", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".mig2-new"
	if err := os.WriteFile(tmp, []byte(hookScript(bin, socket, whenDown)), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// exitStatus carries a sub-command's own exit status (the hook's, virsh's).
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }
