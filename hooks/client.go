package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// DefaultSocket is where `mig2 agent` answers the hook. libvirt runs hooks with an almost empty
// environment, so the path is fixed (or given to `mig2 hook` as a flag by its installer).
const DefaultSocket = "/run/mig2/hook.sock"

// DefaultTimeout bounds one question to the agent, connect to answer. The hook must answer
// libvirt within 1 s even when the agent hangs: this leaves room for the process to start and
// read its stdin.
const DefaultTimeout = 800 * time.Millisecond

// Asker is whoever answers the hook's questions: the local agent (Client), or a fake in tests.
type Asker interface {
	Ask(ctx context.Context, req Request) (Response, error)
}

// ErrAgentUnavailable classifies every failure to get an answer from the agent: no socket,
// nobody listening, no answer in time, an answer that does not decode.
var ErrAgentUnavailable = errors.New("hooks: the mig2 agent did not answer")

// AgentError says which step failed and why; errors.Is(err, ErrAgentUnavailable) is true.
type AgentError struct {
	Socket string
	Step   string // "connect", "send", "receive" or "decode"
	Err    error
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("hooks: the mig2 agent at %s did not answer (%s: %v)", e.Socket, e.Step, e.Err)
}

func (e *AgentError) Unwrap() []error { return []error{ErrAgentUnavailable, e.Err} }

// Client asks the agent over its unix socket. The zero value uses DefaultSocket and
// DefaultTimeout.
type Client struct {
	Socket  string
	Timeout time.Duration
}

// Ask sends req and waits for the answer, at most Timeout (and never past ctx's deadline).
func (c *Client) Ask(ctx context.Context, req Request) (Response, error) {
	sock, timeout := c.Socket, c.Timeout
	if sock == "" {
		sock = DefaultSocket
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(step string, err error) (Response, error) {
		return Response{}, &AgentError{Socket: sock, Step: step, Err: err}
	}
	if req.Version == 0 {
		req.Version = ProtocolVersion
	}
	body, err := EncodeRequest(req)
	if err != nil {
		return fail("send", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fail("connect", ctxErr(ctx, timeout, err))
	}
	defer conn.Close()
	// The deadline ends a hung agent; closing on ctx's end covers a cancel before it.
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return fail("connect", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := conn.Write(body); err != nil {
		return fail("send", ctxErr(ctx, timeout, err))
	}
	if uc, ok := conn.(*net.UnixConn); ok {
		if err := uc.CloseWrite(); err != nil {
			return fail("send", ctxErr(ctx, timeout, err))
		}
	}
	reply, err := io.ReadAll(io.LimitReader(conn, MaxResponseSize+1))
	if err != nil {
		return fail("receive", ctxErr(ctx, timeout, err))
	}
	resp, err := DecodeResponse(reply)
	if err != nil {
		if len(reply) == 0 {
			return fail("receive", errors.New("the agent closed the connection without an answer"))
		}
		return fail("decode", err)
	}
	return resp, nil
}

// timeoutError is "no answer within T"; errors.Is(err, context.DeadlineExceeded) holds.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("no answer within %v", e.d) }
func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// ctxErr names the reason when the context (deadline, cancel) caused the socket error: the
// socket error itself is then only its echo ("i/o timeout", "use of closed network connection").
func ctxErr(ctx context.Context, timeout time.Duration, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return &timeoutError{d: timeout}
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}
