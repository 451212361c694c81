package hooks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// pieceReader hands out data a few bytes at a time, as a pipe would, then err (io.EOF if nil).
type pieceReader struct {
	data  []byte
	piece int
	err   error
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.piece)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// runSeeds pairs each recorded argv with the recorded domain XML of the same call.
func runSeeds(f *testing.F) (argvs []string, xmls [][]byte) {
	files, err := filepath.Glob("testdata/argv/*.txt")
	if err != nil || len(files) == 0 {
		f.Fatalf("no testdata/argv/*.txt: %v", err)
	}
	recorded := recordedXML(f)
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		base := strings.TrimSuffix(filepath.Base(p), ".txt")
		x, ok := recorded[strings.Replace(base, "libvirtd9-", "libvirtd9-hook-", 1)+".xml"]
		if !ok {
			x = recorded["test-driver-migratable.xml"]
		}
		argvs = append(argvs, strings.ReplaceAll(strings.TrimSuffix(string(b), "\n"), "\n", "\x00"))
		xmls = append(xmls, x)
	}
	return argvs, xmls
}

// FuzzRun: the whole hook, argv (NUL-separated) and stdin as libvirt gives them, against an
// agent chosen by mode (bit 0: refuse when the agent is down; bits 1-2: no agent, allowing,
// refusing, down; bit 3: stdin fails after its data; bits 4-7: stdin piece size). The hook never
// writes stdout, says at most one line, exits 2 exactly for an argv ParseArgs refuses, refuses
// (exit 1) only `migrate begin`, asks the agent only about `migrate begin` (with the XML read
// from stdin, byte for byte) and `release end`, and follows its answer and the policy.
func FuzzRun(f *testing.F) {
	argvs, xmls := runSeeds(f)
	for i := range argvs {
		f.Add(argvs[i], xmls[i], uint8(1<<1))        // allowing agent
		f.Add(argvs[i], xmls[i], uint8(3<<1|1|3<<4)) // agent down, refuse policy, 4-byte pieces
	}
	for mode := range uint8(16) {
		f.Add(argvs[0], xmls[0], mode)
	}
	f.Add("/etc/libvirt/hooks/qemu\x00g1\x00migrate\x00begin\x00-", []byte("<domain"), uint8(1<<1|1))
	f.Add("/etc/libvirt/hooks/qemu\x00g1\x00migrate\x00begin\x00-", []byte{}, uint8(2<<1))
	f.Add("", []byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, s string, stdin []byte, mode uint8) {
		argv := strings.Split(s, "\x00")
		const reason = "g1 was not negotiated:\n  run `mig2 migrate`"
		var asked []Request
		cfg := Config{}
		if mode&1 != 0 {
			cfg.WhenAgentDown = RefuseWhenAgentDown
		}
		agent := mode >> 1 & 3
		if agent != 0 {
			cfg.Asker = askerFunc(func(ctx context.Context, req Request) (Response, error) {
				asked = append(asked, req)
				switch agent {
				case 1:
					return Response{Allow: true}, nil
				case 2:
					return Response{Reason: reason}, nil
				}
				return Response{}, agentDown
			})
		}
		readErr := mode&8 != 0
		in := &pieceReader{data: stdin, piece: 1 + int(mode>>4)}
		if readErr {
			in.err = errors.New("stdin: broken pipe")
		}
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), cfg, argv, in, &stdout, &stderr)

		if stdout.Len() != 0 {
			t.Fatalf("Run(%q) wrote stdout %q", argv, stdout.Bytes())
		}
		if e := stderr.String(); e != "" && (strings.Count(e, "\n") != 1 || !strings.HasSuffix(e, "\n")) {
			t.Fatalf("Run(%q): stderr is not one line: %q", argv, e)
		}
		inv, err := ParseArgs(argv)
		if err != nil {
			if code != 2 || len(asked) != 0 || !strings.HasPrefix(stderr.String(), "mig2 hook: ") {
				t.Fatalf("Run(%q) with a bad argv = %d, asked %d, stderr %q", argv, code, len(asked), stderr.String())
			}
			return
		}
		if code != 0 && code != 1 || code == 1 && !inv.IsMigrateBegin() {
			t.Fatalf("Run(%q) = exit %d", argv, code)
		}
		e := stderr.String()
		if e != "" && !utf8.ValidString(e) {
			t.Fatalf("Run(%q): stderr not UTF-8: %q", argv, e)
		}
		switch {
		case inv.Operation == OpRelease && inv.SubOp == "end":
			if code != 0 || e != "" || len(asked) > 1 || len(asked) == 1 && (asked[0].Op != ReqRelease || asked[0].Domain != inv.Domain) {
				t.Fatalf("release end: exit %d, stderr %q, asked %+v", code, e, asked)
			}
		case !inv.IsMigrateBegin():
			if code != 0 || e != "" || len(asked) != 0 {
				t.Fatalf("Run(%q) = exit %d, stderr %q, asked %d; want a silent pass", argv, code, e, len(asked))
			}
		default: // migrate begin
			_, xmlErr := ParseDomainXML(stdin)
			checkable := agent != 0 && !readErr && xmlErr == nil && len(stdin) <= MaxXMLSize
			if !checkable {
				wantCode := 0
				if cfg.WhenAgentDown == RefuseWhenAgentDown {
					wantCode = 1
				}
				if len(asked) != 0 || code != wantCode || e == "" {
					t.Fatalf("unchecked migrate begin (agent %d, read error %v, xml %v): exit %d, stderr %q, asked %d", agent, readErr, xmlErr, code, e, len(asked))
				}
				return
			}
			if len(asked) != 1 {
				t.Fatalf("migrate begin asked the agent %d times", len(asked))
			}
			q := asked[0]
			if q.Version != ProtocolVersion || q.Op != ReqMigrateBegin || q.Domain != inv.Domain || q.XML != string(stdin) {
				t.Fatalf("migrate begin asked %+v (stdin %q)", q, stdin)
			}
			switch {
			case agent == 1 && (code != 0 || e != ""):
				t.Fatalf("allowed: exit %d, stderr %q", code, e)
			case agent == 2 && (code != 1 || e != "mig2: g1 was not negotiated: run `mig2 migrate`\n"):
				t.Fatalf("refused: exit %d, stderr %q", code, e)
			case agent == 3 && (code == 1) != (cfg.WhenAgentDown == RefuseWhenAgentDown):
				t.Fatalf("agent down, policy %v: exit %d", cfg.WhenAgentDown, code)
			}
		}
	})
}
