package libvirt

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// The qemu hook must never call back into libvirt, so it asks the agent over a unix socket:
// one JSON request per connection, one JSON answer.
//
//	→ {"op":"migrate-begin","domain":"web","xml":"<domain>…"}
//	← {"allow":true} or {"allow":false,"reason":"…"}

// HookRequest is the hook's question.
type HookRequest struct {
	Op     string `json:"op"`
	Domain string `json:"domain"`
	XML    string `json:"xml,omitempty"`
}

// HookAnswer is the agent's answer.
type HookAnswer struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason,omitempty"`
}

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

// Answer decides one hook request.
func (in *Incoming) Answer(req HookRequest, policy Policy) HookAnswer {
	switch req.Op {
	case "migrate-begin":
	default:
		return HookAnswer{Allow: true} // nothing to decide for other operations
	}
	ok, reason := in.Check(req.Domain, []byte(req.XML))
	if ok || policy == PolicyWarn {
		return HookAnswer{Allow: true, Reason: reason}
	}
	return HookAnswer{Allow: false, Reason: reason}
}

// ServeHookSocket answers hook requests on a unix socket at path until ctx ends; it removes
// the socket when it returns.
func (in *Incoming) ServeHookSocket(ctx context.Context, path string, policy Policy, log logrus.FieldLogger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("libvirt: hook socket: %w", err)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("libvirt: hook socket: %w", err)
	}
	defer os.Remove(path)
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("libvirt: hook socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			var req HookRequest
			r := bufio.NewReader(c)
			if err := json.NewDecoder(r).Decode(&req); err != nil {
				_ = json.NewEncoder(c).Encode(HookAnswer{Allow: false, Reason: "mig2: malformed hook request: " + err.Error()})
				return
			}
			ans := in.Answer(req, policy)
			fields := logrus.Fields{"domain": req.Domain, "stage": "hook " + req.Op}
			switch {
			case !ans.Allow:
				log.WithFields(fields).Warn("libvirt: hook refused: " + ans.Reason)
			case ans.Reason != "":
				log.WithFields(fields).Warn("libvirt: hook allowed by policy warn: " + ans.Reason)
			}
			_ = json.NewEncoder(c).Encode(ans)
		}()
	}
}
