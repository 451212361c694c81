package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// AgentDownPolicy says what the hook answers when it cannot check an incoming migration: the
// agent does not answer in time (or at all), or the XML does not parse.
type AgentDownPolicy int

const (
	// AllowWhenAgentDown (the default) lets the migration in, unchecked, with a warning on stderr
	// (libvirtd logs it). Rationale: the hook runs for every incoming migration on the host; an
	// agent that is down must not stop plain virsh migrations the admin never asked mig2 to
	// police, and a v2 migration cannot run without the agent anyway (its handshake fails first).
	AllowWhenAgentDown AgentDownPolicy = iota
	// RefuseWhenAgentDown refuses every incoming migration the hook cannot check: the setting
	// for hosts that run the agent with --policy require-v2, so that require-v2 holds even while
	// the agent is down.
	RefuseWhenAgentDown
)

func (p AgentDownPolicy) String() string {
	if p == RefuseWhenAgentDown {
		return "refuse"
	}
	return "allow"
}

// ParseAgentDownPolicy parses "allow" or "refuse" (the `mig2 hook --when-agent-down` values).
func ParseAgentDownPolicy(s string) (AgentDownPolicy, error) {
	switch s {
	case "allow":
		return AllowWhenAgentDown, nil
	case "refuse":
		return RefuseWhenAgentDown, nil
	}
	return 0, fmt.Errorf("hooks: when the agent is down: want allow or refuse, not %q", s)
}

// Config is what the hook knows besides its argv and stdin.
type Config struct {
	Asker         Asker // the local agent; nil means "no agent configured": every check is unchecked
	WhenAgentDown AgentDownPolicy
	// Timeout bounds the whole decision (default DefaultTimeout); the hook answers libvirt
	// within it whatever the agent does.
	Timeout time.Duration
	Log     logrus.FieldLogger // nil: discard
}

// Outcome is the hook's answer to libvirt.
type Outcome struct {
	// Stdout replaces the domain XML for migrate and restore calls when not empty. mig2 never
	// replaces it, so it is always empty; it is here so that the contract is explicit.
	Stdout []byte
	// Stderr is one line. On a non-zero exit libvirt aborts the operation and the user on the
	// source sees "error: Hook script execution failed: ... unexpected exit status 1: <Stderr>".
	// On exit 0 it is a warning libvirtd may log.
	Stderr   string
	ExitCode int
}

// maxReasonLen bounds the agent's reason as it reaches the user's terminal.
const maxReasonLen = 1000

// Decide answers one hook call. Only `migrate begin` can refuse: it asks the agent whether the
// incoming migration was negotiated and matches what was agreed (Request ReqMigrateBegin with
// the XML libvirt passed), and maps the answer:
//
//	agent allows                     exit 0, nothing on stdout or stderr (the XML is unchanged)
//	agent refuses                    exit 1, stderr "mig2: <agent's reason>" (one line)
//	agent unreachable / bad XML      WhenAgentDown: allow → exit 0 + warning; refuse → exit 1
//
// `release end` tells the agent the guest went away (best effort, answer ignored). Every other
// call, known or not, passes at once: the hook never stands between libvirt and starting or
// stopping a guest.
func Decide(ctx context.Context, cfg Config, inv Invocation, xmlText []byte) Outcome {
	log := discardLogger(cfg.Log).WithFields(logrus.Fields{"domain": inv.Domain, "stage": "hook"})
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	switch {
	case inv.Operation == OpRelease && inv.SubOp == "end":
		if cfg.Asker != nil {
			req := Request{Version: ProtocolVersion, Op: ReqRelease, Domain: inv.Domain}
			if d, err := ParseDomainXML(xmlText); err == nil {
				req.UUID = d.UUID
			}
			if _, err := cfg.Asker.Ask(ctx, req); err != nil {
				log.WithError(err).Debug("release not delivered to the agent")
			}
		}
		return Outcome{}
	case !inv.IsMigrateBegin():
		return Outcome{}
	}

	unchecked := func(why string) Outcome { return uncheckedOutcome(cfg.WhenAgentDown, log, inv, why) }
	if cfg.Asker == nil {
		return unchecked("no mig2 agent is configured")
	}
	d, err := ParseDomainXML(xmlText)
	if err != nil {
		return unchecked(err.Error())
	}
	resp, err := cfg.Asker.Ask(ctx, Request{Version: ProtocolVersion, Op: ReqMigrateBegin, Domain: inv.Domain, UUID: d.UUID, XML: string(xmlText)})
	if err != nil {
		why := strings.TrimPrefix(err.Error(), "hooks: ")
		if ae := (*AgentError)(nil); errors.As(err, &ae) {
			why = fmt.Sprintf("the mig2 agent at %s is not answering (%s: %v)", ae.Socket, ae.Step, ae.Err)
		}
		return unchecked(why)
	}
	if resp.Allow {
		log.Info("incoming migration allowed by the agent")
		return Outcome{}
	}
	reason := resp.Reason
	if strings.TrimSpace(reason) == "" {
		reason = "the mig2 agent refused this migration (it gave no reason)"
	}
	log.WithField("reason", reason).Warn("incoming migration refused by the agent")
	return Outcome{ExitCode: 1, Stderr: oneLine("mig2: " + reason)}
}

// uncheckedOutcome answers a migration the hook cannot check, by policy.
func uncheckedOutcome(p AgentDownPolicy, log logrus.FieldLogger, inv Invocation, why string) Outcome {
	if p == RefuseWhenAgentDown {
		log.WithField("why", why).Warn("incoming migration refused: it cannot be checked")
		return Outcome{ExitCode: 1, Stderr: oneLine(fmt.Sprintf(
			"mig2: refusing the incoming migration of %s: %s; this host refuses migrations it cannot check (hook policy: refuse when the agent is down)",
			inv.Domain, why))}
	}
	log.WithField("why", why).Warn("incoming migration allowed unchecked")
	return Outcome{Stderr: oneLine(fmt.Sprintf(
		"mig2 hook: warning: allowing the incoming migration of %s unchecked: %s (hook policy: allow when the agent is down)",
		inv.Domain, why))}
}

// discardLogger is the logger of a Config without one.
func discardLogger(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	d := logrus.New()
	d.SetOutput(io.Discard)
	return d
}

// oneLine folds s into one line of at most maxReasonLen bytes (plus an ellipsis), so that
// libvirt's message stays one readable line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "?")), " ")
	if len(s) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// Run is the whole hook: parse argv, read stdin, Decide, write the outcome. It returns the exit
// status. A malformed argv (never from libvirt) exits 2.
func Run(ctx context.Context, cfg Config, argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	inv, err := ParseArgs(argv)
	if err != nil {
		fmt.Fprintf(stderr, "mig2 hook: %s\n", strings.TrimPrefix(err.Error(), "hooks: "))
		return 2
	}
	var out Outcome
	xmlText, err := ReadInput(stdin)
	switch {
	case err != nil && inv.IsMigrateBegin():
		log := discardLogger(cfg.Log).WithFields(logrus.Fields{"domain": inv.Domain, "stage": "hook"})
		out = uncheckedOutcome(cfg.WhenAgentDown, log, inv, strings.TrimPrefix(err.Error(), "hooks: "))
	default: // a call that is not migrate begin needs no XML to pass
		out = Decide(ctx, cfg, inv, xmlText)
	}
	if len(out.Stdout) > 0 {
		_, _ = stdout.Write(out.Stdout)
	}
	if out.Stderr != "" {
		fmt.Fprintln(stderr, out.Stderr)
	}
	return out.ExitCode
}
