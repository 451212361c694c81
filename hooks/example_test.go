package hooks_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/mig2/mig2/hooks"
)

// agentSays is an Asker that answers every question the same way.
type agentSays hooks.Response

func (a agentSays) Ask(ctx context.Context, req hooks.Request) (hooks.Response, error) {
	return hooks.Response(a), nil
}

// A refusal from the agent becomes exit status 1 and one line on stderr, which libvirt shows
// the user on the source.
func ExampleRun() {
	cfg := hooks.Config{Asker: agentSays{Allow: false, Reason: "g1 was not negotiated: use `mig2 migrate`"}}
	argv := []string{"/etc/libvirt/hooks/qemu", "g1", "migrate", "begin", "-"}
	xml := strings.NewReader("<domain type='kvm'><name>g1</name></domain>")
	var stdout, stderr bytes.Buffer
	code := hooks.Run(context.Background(), cfg, argv, xml, &stdout, &stderr)
	fmt.Printf("exit %d, stdout %q, stderr %q\n", code, stdout.String(), stderr.String())
	// Output: exit 1, stdout "", stderr "mig2: g1 was not negotiated: use `mig2 migrate`\n"
}

// With no agent answering, the default policy lets the migration in with a warning.
func ExampleDecide() {
	inv, _ := hooks.ParseArgs([]string{"qemu", "g1", "migrate", "begin", "-"})
	cfg := hooks.Config{Asker: &hooks.Client{Socket: "/nonexistent/hook.sock"}}
	out := hooks.Decide(context.Background(), cfg, inv, []byte("<domain><name>g1</name></domain>"))
	fmt.Println(out.ExitCode, out.Stderr)
	// Output: 0 mig2 hook: warning: allowing the incoming migration of g1 unchecked: the mig2 agent at /nonexistent/hook.sock is not answering (connect: dial unix /nonexistent/hook.sock: connect: no such file or directory) (hook policy: allow when the agent is down)
}
