package main

import "github.com/spf13/cobra"

// subcommands lists mig2's own sub-commands; anything else goes to virsh.
func subcommands(g *globalFlags) []*cobra.Command {
	return nil
}
