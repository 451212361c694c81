// Command testhook is package hooks run as a real libvirt qemu hook, the way `mig2 hook` will
// run it: the integration test installs it behind a wrapper script as /etc/libvirt/hooks/qemu
// in a lab host and answers it from its own agent socket.
//
//	testhook [--socket PATH] [--when-agent-down allow|refuse] ARGV0 DOMAIN OPERATION SUB-OPERATION EXTRA
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/mig2/mig2/hooks"
)

func main() {
	sock := flag.String("socket", hooks.DefaultSocket, "the agent's hook socket")
	down := flag.String("when-agent-down", "allow", "allow or refuse migrations the hook cannot check")
	flag.Parse()
	p, err := hooks.ParseAgentDownPolicy(*down)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg := hooks.Config{Asker: &hooks.Client{Socket: *sock}, WhenAgentDown: p}
	os.Exit(hooks.Run(context.Background(), cfg, flag.Args(), os.Stdin, os.Stdout, os.Stderr))
}
