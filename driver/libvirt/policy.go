package libvirt

import "fmt"

// The qemu hook must never call back into libvirt, so it asks the agent over a unix socket
// (package hooks has the wire protocol; cmd connects the two). This is the agent's decision.

// Policy says what happens to an incoming migration that did not go through the handshake.
type Policy string

const (
	PolicyRequireV2 Policy = "require-v2" // refuse it, and say how to migrate with mig2
	PolicyWarn      Policy = "warn"       // let it through and log a warning
)

// ParsePolicy checks a policy name.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case PolicyRequireV2, PolicyWarn:
		return Policy(s), nil
	}
	return "", fmt.Errorf("libvirt: hook policy %q: want require-v2 or warn", s)
}

// Decide answers the hook's migrate-begin question for one incoming domain under a policy:
// allow, and the reason when it was not negotiated (reported as a warning under PolicyWarn).
func (in *Incoming) Decide(domain string, xml []byte, policy Policy) (allow bool, reason string) {
	ok, reason := in.Check(domain, xml)
	return ok || policy == PolicyWarn, reason
}
