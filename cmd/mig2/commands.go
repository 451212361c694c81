package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/mig2/mig2/driver"
)

// subcommands lists mig2's own sub-commands; anything else goes to virsh.
func subcommands(g *globalFlags) []*cobra.Command {
	return []*cobra.Command{newMigrateCmd(g), newCheckCmd(g), newAgentCmd(g), newHookCmd(g), newGuardCmd()}
}

func init() {
	registerExitClass(func(err error) (int, bool) {
		switch driver.Classify(err) {
		case driver.ClassIncompatible:
			return exitIncompatible, true
		case driver.ClassConnect:
			return exitConnect, true
		case driver.ClassFailed:
			return exitFailed, true
		case driver.ClassCancelled:
			return exitCancelled, true
		case driver.ClassGuestUnknown:
			var me *driver.MigrationError
			if errors.As(err, &me) {
				return exitGuestUnknown, true
			}
		}
		return 0, false
	})
}
