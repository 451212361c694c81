package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// askerFunc is an Asker in one function.
type askerFunc func(ctx context.Context, req Request) (Response, error)

func (f askerFunc) Ask(ctx context.Context, req Request) (Response, error) { return f(ctx, req) }

const guestXML = `<domain type='qemu'><name>g1</name><uuid>5a6b0c1d-1111-4a2b-9c3d-0000000000a1</uuid><memory unit='KiB'>262144</memory><devices><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices></domain>`

var agentDown = &AgentError{Socket: "/run/mig2/hook.sock", Step: "connect", Err: errors.New("connect: no such file or directory")}

// TestDecide: one row per rule of Decide's table.
func TestDecide(t *testing.T) {
	mb := Invocation{Object: "qemu", Domain: "g1", Operation: OpMigrate, SubOp: "begin", Extra: "-"}
	allow := askerFunc(func(ctx context.Context, req Request) (Response, error) { return Response{Allow: true}, nil })
	refuse := func(reason string) Asker {
		return askerFunc(func(ctx context.Context, req Request) (Response, error) { return Response{Reason: reason}, nil })
	}
	down := askerFunc(func(ctx context.Context, req Request) (Response, error) { return Response{}, agentDown })
	broken := askerFunc(func(ctx context.Context, req Request) (Response, error) { return Response{}, errors.New("weird") })
	tests := []struct {
		rule   string
		cfg    Config
		inv    Invocation
		xml    string
		exit   int
		stderr string // substring; "" means empty
	}{
		{"agent allows: pass silently", Config{Asker: allow}, mb, guestXML, 0, ""},
		{"agent refuses: exit 1 with its reason", Config{Asker: refuse("g1 was not negotiated; run `mig2 migrate`")}, mb, guestXML, 1, "mig2: g1 was not negotiated; run `mig2 migrate`"},
		{"a refusal without reason still says who refused", Config{Asker: refuse("  ")}, mb, guestXML, 1, "mig2: the mig2 agent refused this migration (it gave no reason)"},
		{"a multi-line reason becomes one line", Config{Asker: refuse("devices differ:\n  - rng0\n  + serial1")}, mb, guestXML, 1, "mig2: devices differ: - rng0 + serial1"},
		{"agent down, default policy: allow with a warning", Config{Asker: down}, mb, guestXML, 0, "mig2 hook: warning: allowing the incoming migration of g1 unchecked: the mig2 agent at /run/mig2/hook.sock is not answering (connect: connect: no such file or directory) (hook policy: allow when the agent is down)"},
		{"agent down, refuse policy: exit 1", Config{Asker: down, WhenAgentDown: RefuseWhenAgentDown}, mb, guestXML, 1, "mig2: refusing the incoming migration of g1: the mig2 agent at /run/mig2/hook.sock is not answering (connect: connect: no such file or directory); this host refuses migrations it cannot check (hook policy: refuse when the agent is down)"},
		{"agent error of another kind counts as down", Config{Asker: broken, WhenAgentDown: RefuseWhenAgentDown}, mb, guestXML, 1, "g1: weird; this host refuses"},
		{"no agent configured: unchecked", Config{}, mb, guestXML, 0, "no mig2 agent is configured"},
		{"no agent configured, refuse policy", Config{WhenAgentDown: RefuseWhenAgentDown}, mb, guestXML, 1, "no mig2 agent is configured"},
		{"bad XML: unchecked, by policy (allow)", Config{Asker: allow}, mb, "<domain", 0, "hooks: parse the domain XML"},
		{"bad XML: unchecked, by policy (refuse)", Config{Asker: allow, WhenAgentDown: RefuseWhenAgentDown}, mb, "", 1, "parse the domain XML"},
		{"migrate end passes", Config{Asker: refuse("no")}, Invocation{Object: "qemu", Domain: "g1", Operation: OpMigrate, SubOp: "end", Extra: "-"}, guestXML, 0, ""},
		{"prepare passes even with a refusing agent", Config{Asker: refuse("no")}, Invocation{Object: "qemu", Domain: "g1", Operation: OpPrepare, SubOp: "begin", Extra: "-"}, guestXML, 0, ""},
		{"start passes with the agent down and refuse policy", Config{Asker: down, WhenAgentDown: RefuseWhenAgentDown}, Invocation{Object: "qemu", Domain: "g1", Operation: OpStart, SubOp: "begin", Extra: "-"}, "", 0, ""},
		{"restore passes", Config{Asker: refuse("no")}, Invocation{Object: "qemu", Domain: "g1", Operation: OpRestore, SubOp: "begin", Extra: "-"}, guestXML, 0, ""},
		{"an unknown operation passes", Config{Asker: refuse("no")}, Invocation{Object: "qemu", Domain: "g1", Operation: "teleport", SubOp: "begin", Extra: "-"}, guestXML, 0, ""},
		{"release end passes even if the agent refuses or is down", Config{Asker: down, WhenAgentDown: RefuseWhenAgentDown}, Invocation{Object: "qemu", Domain: "g1", Operation: OpRelease, SubOp: "end", Extra: "-"}, guestXML, 0, ""},
	}
	for _, tc := range tests {
		out := Decide(context.Background(), tc.cfg, tc.inv, []byte(tc.xml))
		if out.ExitCode != tc.exit || len(out.Stdout) != 0 ||
			(tc.stderr == "") != (out.Stderr == "") || !strings.Contains(out.Stderr, tc.stderr) || strings.Contains(out.Stderr, "\n") {
			t.Errorf("%s: Decide = exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", tc.rule, out.ExitCode, out.Stdout, out.Stderr, tc.exit, tc.stderr)
		}
	}
}

// TestDecideAsks: what the agent is asked, for migrate begin and for release.
func TestDecideAsks(t *testing.T) {
	var got []Request
	rec := askerFunc(func(ctx context.Context, req Request) (Response, error) {
		got = append(got, req)
		return Response{Allow: true}, nil
	})
	Decide(context.Background(), Config{Asker: rec}, Invocation{Object: "qemu", Domain: "g1", Operation: OpMigrate, SubOp: "begin", Extra: "-"}, []byte(guestXML))
	Decide(context.Background(), Config{Asker: rec}, Invocation{Object: "qemu", Domain: "g1", Operation: OpRelease, SubOp: "end", Extra: "-"}, []byte(guestXML))
	Decide(context.Background(), Config{Asker: rec}, Invocation{Object: "qemu", Domain: "g1", Operation: OpStarted, SubOp: "begin", Extra: "-"}, []byte(guestXML))
	want := []Request{
		{Version: 1, Op: ReqMigrateBegin, Domain: "g1", UUID: "5a6b0c1d-1111-4a2b-9c3d-0000000000a1", XML: guestXML},
		{Version: 1, Op: ReqRelease, Domain: "g1", UUID: "5a6b0c1d-1111-4a2b-9c3d-0000000000a1"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the agent was asked %+v; want %+v", got, want)
	}
}

func TestOneLine(t *testing.T) {
	long := strings.Repeat("é", 800) // 1600 bytes
	got := oneLine(long)
	if !strings.HasSuffix(got, "…") || len(got) > maxReasonLen+len("…") || !strings.HasPrefix(got, "éé") {
		t.Errorf("oneLine(long) = %d bytes %q…", len(got), got[:10])
	}
	if got := oneLine("a\r\n\tb  c\x00\xff"); got != "a b c\x00?" {
		t.Errorf("oneLine = %q", got)
	}
}

// TestRun: the whole hook against a real agent socket, as libvirt runs it.
func TestRun(t *testing.T) {
	sock := startServer(t, func(ctx context.Context, req Request) Response {
		if strings.Contains(req.XML, "<name>g1</name>") {
			return Response{Allow: true}
		}
		return Response{Reason: req.Domain + ": not negotiated"}
	})
	cfg := Config{Asker: &Client{Socket: sock}}
	for _, tc := range []struct {
		argv   []string
		stdin  string
		exit   int
		stderr string
	}{
		{[]string{"/etc/libvirt/hooks/qemu", "g1", "migrate", "begin", "-"}, guestXML, 0, ""},
		{[]string{"/etc/libvirt/hooks/qemu.d/mig2", "g2", "migrate", "begin", "-"}, strings.ReplaceAll(guestXML, "g1", "g2"), 1, "mig2: g2: not negotiated\n"},
		{[]string{"/etc/libvirt/hooks/qemu", "g2", "start", "begin", "-"}, guestXML, 0, ""},
		{[]string{"/etc/libvirt/hooks/qemu", "g2", "migrate"}, "", 2, "mig2 hook: not a libvirt qemu hook call"},
	} {
		var o, e bytes.Buffer
		code := Run(context.Background(), cfg, tc.argv, strings.NewReader(tc.stdin), &o, &e)
		if code != tc.exit || o.Len() != 0 || !strings.HasPrefix(e.String(), tc.stderr) || (tc.stderr == "") != (e.Len() == 0) {
			t.Errorf("Run(%q) = %d, stdout %q, stderr %q; want %d, %q", tc.argv, code, o.String(), e.String(), tc.exit, tc.stderr)
		}
	}
	// Too much on stdin for migrate begin: unchecked, by policy.
	var o, e bytes.Buffer
	big := strings.NewReader(strings.Repeat(" ", MaxXMLSize+1))
	code := Run(context.Background(), Config{Asker: cfg.Asker, WhenAgentDown: RefuseWhenAgentDown},
		[]string{"qemu", "g1", "migrate", "begin", "-"}, big, &o, &e)
	if code != 1 || !strings.Contains(e.String(), "larger than 16 MiB") {
		t.Errorf("Run(huge stdin) = %d, %q", code, e.String())
	}
}

// TestRunAnswersWithinOneSecond: with an agent that accepts and never answers, the hook still
// answers libvirt within 1 s, under both policies (the promise).
func TestRunAnswersWithinOneSecond(t *testing.T) {
	hung := rawAgent(t, func(c net.Conn, testDone <-chan struct{}) { <-testDone })
	var wg sync.WaitGroup
	for _, p := range []AgentDownPolicy{AllowWhenAgentDown, RefuseWhenAgentDown} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o, e bytes.Buffer
			start := time.Now()
			code := Run(context.Background(), Config{Asker: &Client{Socket: hung}, WhenAgentDown: p},
				[]string{"/etc/libvirt/hooks/qemu", "g1", "migrate", "begin", "-"}, strings.NewReader(guestXML), &o, &e)
			took := time.Since(start)
			want := map[AgentDownPolicy]int{AllowWhenAgentDown: 0, RefuseWhenAgentDown: 1}[p]
			if took >= time.Second || code != want || !strings.Contains(e.String(), "is not answering (receive: no answer within 800ms)") {
				t.Errorf("policy %s: Run = %d after %v, stderr %q; want %d within 1 s", p, code, took, e.String(), want)
			}
		}()
	}
	wg.Wait()
}

func TestParseAgentDownPolicy(t *testing.T) {
	for s, want := range map[string]AgentDownPolicy{"allow": AllowWhenAgentDown, "refuse": RefuseWhenAgentDown} {
		if p, err := ParseAgentDownPolicy(s); err != nil || p != want || p.String() != s {
			t.Errorf("ParseAgentDownPolicy(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseAgentDownPolicy("open"); err == nil {
		t.Error("ParseAgentDownPolicy(open) accepted")
	}
	if (AgentDownPolicy(0)) != AllowWhenAgentDown {
		t.Error("the zero policy must be allow (the documented default)")
	}
}
