package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Handler answers one hook request. It runs while the hook — and so libvirt — waits: it must
// answer well within DefaultTimeout and must not call into libvirt for the domain in question
// (libvirt holds its locks while the hook runs).
type Handler func(ctx context.Context, req Request) Response

// Server is the agent's side of the hook socket.
type Server struct {
	Handler Handler
	Log     logrus.FieldLogger // nil: discard
	// ConnTimeout bounds one connection, read to write (default 2 s: past the hook's own
	// DefaultTimeout, the hook has given up anyway).
	ConnTimeout time.Duration
}

// ListenUnix listens on path for the hook: it creates the directory (0755), replaces a stale
// socket nobody answers on, refuses to take over one that answers, and leaves the socket 0600
// (the hook runs as root, like libvirtd).
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("hooks: listen on %s: %w", path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("hooks: listen on %s: another agent is answering there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("hooks: remove the stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("hooks: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("hooks: chmod %s: %w", path, err)
	}
	return ln, nil
}

// Serve answers connections on ln until ctx ends, then closes ln, waits for the connections in
// flight and returns ctx.Err(). A failing Accept ends it too, with that error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := discardLogger(s.Log)
	timeout := s.ConnTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ln.Close()
			return fmt.Errorf("hooks: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, conn, timeout, log)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, conn net.Conn, timeout time.Duration, log logrus.FieldLogger) {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline) // a failure shows as a read error below
	body, err := io.ReadAll(io.LimitReader(conn, MaxRequestSize+1))
	if err != nil {
		log.WithError(err).Warn("hook socket: read the request")
		return
	}
	var resp Response
	req, err := DecodeRequest(body)
	switch {
	case err != nil:
		log.WithError(err).Warn("hook socket: bad request")
		resp = Response{Allow: false, Reason: err.Error()}
	case req.Version > ProtocolVersion:
		resp = Response{Allow: req.Op != ReqMigrateBegin, Reason: fmt.Sprintf("the mig2 agent speaks hook protocol %d, the hook %d: update the agent", ProtocolVersion, req.Version)}
	default:
		resp = s.Handler(ctx, req)
		log.WithFields(logrus.Fields{"domain": req.Domain, "stage": "hook", "op": req.Op, "allow": resp.Allow}).Info("hook request answered")
	}
	out, err := EncodeResponse(resp)
	if err == nil {
		_, err = conn.Write(out)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		log.WithError(err).Warn("hook socket: write the answer")
	}
}
