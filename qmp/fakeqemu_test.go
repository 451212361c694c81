package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRequest is a command as the fake QEMU received it.
type fakeRequest struct {
	Execute   string          `json:"execute"`
	ExecOOB   string          `json:"exec-oob"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

func (r fakeRequest) name() string {
	if r.ExecOOB != "" {
		return r.ExecOOB
	}
	return r.Execute
}

// fakeQEMU is a scripted QMP server on one end of a net.Pipe (or any
// net.Conn). It sends the greeting, answers qmp_capabilities, and hands
// every later command to handler, sequentially. It stops when the
// connection closes; the test waits for it in Cleanup.
type fakeQEMU struct {
	t        testing.TB
	nc       net.Conn
	greeting []byte
	handler  func(f *fakeQEMU, req fakeRequest)
	wmu      sync.Mutex
	caps     chan fakeRequest // the qmp_capabilities request, for inspection
	done     chan struct{}
}

const fakeGreeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

func newFakeQEMU(t testing.TB, nc net.Conn, handler func(f *fakeQEMU, req fakeRequest)) *fakeQEMU {
	f := &fakeQEMU{t: t, nc: nc, greeting: []byte(fakeGreeting), handler: handler,
		caps: make(chan fakeRequest, 1), done: make(chan struct{})}
	return f
}

func (f *fakeQEMU) start() {
	go f.serve()
	f.t.Cleanup(func() {
		f.nc.Close()
		<-f.done
	})
}

func (f *fakeQEMU) serve() {
	defer close(f.done)
	if f.greeting != nil {
		if !f.sendRaw(f.greeting) {
			return
		}
	}
	dec := json.NewDecoder(bufio.NewReader(f.nc))
	for {
		var req fakeRequest
		if err := dec.Decode(&req); err != nil {
			return
		}
		if req.name() == "qmp_capabilities" {
			select {
			case f.caps <- req:
			default:
			}
			f.reply(req, struct{}{})
			continue
		}
		if f.handler != nil {
			f.handler(f, req)
		}
	}
}

// sendRaw writes one message; false when the connection is gone.
func (f *fakeQEMU) sendRaw(b []byte) bool {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	_, err := f.nc.Write(append(append([]byte(nil), b...), '\r', '\n'))
	return err == nil
}

func (f *fakeQEMU) reply(req fakeRequest, ret any) bool {
	r, err := json.Marshal(ret)
	if err != nil {
		f.t.Errorf("fake: marshal reply: %v", err)
		return false
	}
	b, err := EncodeReply(req.ID, r, nil)
	if err != nil {
		f.t.Errorf("fake: encode reply: %v", err)
		return false
	}
	return f.sendRaw(b)
}

func (f *fakeQEMU) replyError(req fakeRequest, class, desc string) bool {
	b, err := EncodeReply(req.ID, nil, &Error{Class: class, Desc: desc})
	if err != nil {
		f.t.Errorf("fake: encode error: %v", err)
		return false
	}
	return f.sendRaw(b)
}

func (f *fakeQEMU) event(name string, data any) bool {
	e := Event{Name: name, Timestamp: time.Unix(1700000000, 123456000)}
	if data != nil {
		d, err := json.Marshal(data)
		if err != nil {
			f.t.Errorf("fake: marshal event: %v", err)
			return false
		}
		e.Data = d
	}
	b, err := EncodeEvent(e)
	if err != nil {
		f.t.Errorf("fake: encode event: %v", err)
		return false
	}
	return f.sendRaw(b)
}

// startFake connects a Conn to a fake QEMU over net.Pipe.
func startFake(t testing.TB, handler func(f *fakeQEMU, req fakeRequest), opts ...Option) (*Conn, *fakeQEMU) {
	t.Helper()
	cli, srv := net.Pipe()
	f := newFakeQEMU(t, srv, handler)
	f.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := NewConn(ctx, cli, opts...)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, f
}

// transcript is a recorded QMP conversation. File format (testdata/*.qmp):
// one message per line, "-> " + JSON for what the client sent, "<- " + JSON
// for what QEMU sent; "#" starts a comment. The recording's ids are
// replaced by the live request's id on replay.
type transcript struct {
	prelude   []json.RawMessage // greeting and anything before the first command
	exchanges []exchange
}

type exchange struct {
	key  string          // command name + canonical arguments
	cmd  json.RawMessage // what was sent
	recv []json.RawMessage
}

func requestKey(name string, args json.RawMessage) string {
	if len(args) == 0 || string(args) == "null" {
		args = json.RawMessage("{}")
	}
	c, err := canonicalJSON(args)
	if err != nil {
		c = args
	}
	return name + " " + string(c)
}

func parseTranscript(data []byte) (*transcript, error) {
	tr := &transcript{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		dir, msg, ok := strings.Cut(line, " ")
		if !ok || !json.Valid([]byte(msg)) {
			return nil, fmt.Errorf("transcript line %d: want '-> JSON' or '<- JSON'", n)
		}
		switch dir {
		case "->":
			var req fakeRequest
			if err := json.Unmarshal([]byte(msg), &req); err != nil {
				return nil, fmt.Errorf("transcript line %d: %v", n, err)
			}
			tr.exchanges = append(tr.exchanges, exchange{key: requestKey(req.name(), req.Arguments), cmd: json.RawMessage(msg)})
		case "<-":
			if len(tr.exchanges) == 0 {
				tr.prelude = append(tr.prelude, json.RawMessage(msg))
			} else {
				x := &tr.exchanges[len(tr.exchanges)-1]
				x.recv = append(x.recv, json.RawMessage(msg))
			}
		default:
			return nil, fmt.Errorf("transcript line %d: unknown direction %q", n, dir)
		}
	}
	return tr, sc.Err()
}

func loadTranscript(t testing.TB, name string) *transcript {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatalf("transcript %s: %v (record it with: go test -tags integration -run TestIntegration -update ./qmp/)", name, err)
	}
	tr, err := parseTranscript(data)
	if err != nil {
		t.Fatalf("transcript %s: %v", name, err)
	}
	return tr
}

// reply returns the recorded reply of the command with this key (the
// first exchange that matches; a command asked more often than recorded
// gets the last recording again).
func (tr *transcript) find(key string, used map[int]bool) (*exchange, bool) {
	last := -1
	for i := range tr.exchanges {
		if tr.exchanges[i].key != key {
			continue
		}
		last = i
		if !used[i] {
			used[i] = true
			return &tr.exchanges[i], true
		}
	}
	if last >= 0 {
		return &tr.exchanges[last], true
	}
	return nil, false
}

// replayHandler answers commands from a transcript: recorded events are
// sent before the reply, in recorded order, and the reply gets the live id.
// Unknown commands get CommandNotFound-like GenericError and fail the test.
func replayHandler(t testing.TB, tr *transcript) func(f *fakeQEMU, req fakeRequest) {
	var mu sync.Mutex
	used := make(map[int]bool)
	return func(f *fakeQEMU, req fakeRequest) {
		mu.Lock()
		x, ok := tr.find(requestKey(req.name(), req.Arguments), used)
		mu.Unlock()
		if !ok {
			t.Errorf("replay: command not in transcript: %s", requestKey(req.name(), req.Arguments))
			f.replyError(req, ClassGenericError, "not recorded")
			return
		}
		for _, m := range x.recv {
			msg, err := DecodeMessage(m)
			if err != nil {
				t.Errorf("replay: recorded message does not decode: %v", err)
				return
			}
			if msg.Kind == KindReply {
				var b []byte
				if msg.Error != nil {
					b, err = EncodeReply(req.ID, nil, msg.Error)
				} else {
					b, err = EncodeReply(req.ID, msg.Return, nil)
				}
				if err != nil {
					t.Errorf("replay: %v", err)
					return
				}
				f.sendRaw(b)
				continue
			}
			f.sendRaw(m)
		}
	}
}

// startReplay connects a Conn to a fake QEMU replaying a transcript.
func startReplay(t testing.TB, name string) *Conn {
	t.Helper()
	tr := loadTranscript(t, name)
	cli, srv := net.Pipe()
	f := newFakeQEMU(t, srv, replayHandler(t, tr))
	for _, m := range tr.prelude {
		if msg, err := DecodeMessage(m); err == nil && msg.Kind == KindGreeting {
			f.greeting = m
		}
	}
	f.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := NewConn(ctx, cli)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// transcriptReply returns the "return" member of the first recorded reply
// to the command with key, straight from the file.
func transcriptReply(t testing.TB, name, cmd string, args any) json.RawMessage {
	t.Helper()
	tr := loadTranscript(t, name)
	var a json.RawMessage
	if args != nil {
		a, _ = json.Marshal(args)
	}
	x, ok := tr.find(requestKey(cmd, a), map[int]bool{})
	if !ok {
		t.Fatalf("transcript %s has no %s", name, requestKey(cmd, a))
	}
	for _, m := range x.recv {
		msg, err := DecodeMessage(m)
		if err != nil {
			t.Fatalf("transcript %s: %v", name, err)
		}
		if msg.Kind == KindReply {
			if msg.Error != nil {
				t.Fatalf("transcript %s: %s failed: %v", name, cmd, msg.Error)
			}
			return msg.Return
		}
	}
	t.Fatalf("transcript %s: no reply to %s", name, cmd)
	return nil
}
