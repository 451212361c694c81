package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// passthroughTarget decides whether argv belongs to virsh rather than mig2: it returns the first
// non-option word when that word is not one of mig2's sub-commands (or cobra's help/completion).
// Global options before the sub-command are skipped the way virsh would (an option taking a value
// consumes the next word unless written as --opt=value).
func passthroughTarget(root *cobra.Command, args []string) (string, bool) {
	known := map[string]bool{"help": true, "completion": true, "__complete": true, "__completeNoDesc": true}
	for _, c := range root.Commands() {
		known[c.Name()] = true
		for _, a := range c.Aliases {
			known[a] = true
		}
	}
	// virsh's global options that take a value.
	valued := map[string]bool{"-c": true, "--connect": true, "-d": true, "--debug": true, "-e": true,
		"--escape": true, "-k": true, "--keepalive-interval": true, "-K": true, "--keepalive-count": true,
		"-l": true, "--log": true, "--log-level": true, "--log-format": true}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return "", false
		}
		if strings.HasPrefix(a, "-") {
			if valued[a] {
				i++
			}
			continue
		}
		if known[a] {
			return "", false
		}
		return a, true
	}
	return "", false
}
