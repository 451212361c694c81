package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for every parser of the package, seeded from the recorded
// transcripts in testdata/ (and testdata/fuzz/<Target>/, which go test
// reads by itself). Run one with e.g.
//
//	go test -run '^$' -fuzz FuzzDecodeMessage -fuzztime 30s ./qmp/

// transcriptMessages returns the messages QEMU sent in all transcripts,
// those longer than max left out.
func transcriptMessages(f *testing.F, max int) [][]byte {
	files, _ := filepath.Glob("testdata/qemu-*/*.qmp")
	var out [][]byte
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if msg, ok := strings.CutPrefix(line, "<- "); ok && len(msg) <= max {
				out = append(out, []byte(msg))
			}
		}
	}
	return out
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range transcriptMessages(f, 8192) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			return
		}
		var re []byte
		switch m.Kind {
		case KindReply:
			re, err = EncodeReply(m.ID, m.Return, m.Error)
		case KindEvent:
			re, err = EncodeEvent(*m.Event)
		case KindGreeting:
			re, err = json.Marshal(map[string]any{"QMP": m.Greeting})
		default:
			t.Fatalf("decoded kind %v", m.Kind)
		}
		if err != nil {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
		m2, err := DecodeMessage(re)
		if err != nil || m2.Kind != m.Kind {
			t.Fatalf("re-encoded message does not decode: %v\n%s", err, re)
		}
		if m.Kind == KindEvent && (m2.Event.Name != m.Event.Name || !m2.Event.Timestamp.Equal(m.Event.Timestamp)) {
			t.Fatalf("event changed: %+v -> %+v", m.Event, m2.Event)
		}
		if m.Kind == KindReply {
			if _, err := DecodeReply("x", data); (err == nil) != (m.Error == nil) {
				t.Fatalf("DecodeReply disagrees: %v", err)
			}
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	for _, m := range transcriptMessages(f, 8192) {
		if msg, err := DecodeMessage(m); err == nil && msg.Kind == KindEvent {
			f.Add(msg.Event.Name, []byte(msg.Event.Data))
		}
	}
	f.Add(EventShutdown, []byte(`{"guest":true,"reason":"guest-shutdown"}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		e := Event{Name: name, Data: data}
		DecodeMigrationEvent(e)
		DecodeMigrationPassEvent(e)
		DecodeShutdownEvent(e)
		ToGoQEMUEvent(e)
	})
}

// FuzzReplyTypes decodes arbitrary replies into every typed reply and
// checks that what decodes re-encodes to something that decodes the same.
func FuzzReplyTypes(f *testing.F) {
	for _, m := range transcriptMessages(f, 8192) {
		if msg, err := DecodeMessage(m); err == nil && msg.Kind == KindReply && msg.Error == nil {
			f.Add([]byte(msg.Return))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range []func() any{
			func() any { return new(MigrationInfo) },
			func() any { return new(MigrationParameters) },
			func() any { return new(StatusInfo) },
			func() any { return new([]MigrationCapabilityStatus) },
			func() any { return new([]ObjectProperty) },
			func() any { return new(VersionInfo) },
		} {
			v := mk()
			if json.Unmarshal(data, v) != nil {
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%T decoded but does not encode: %v", v, err)
			}
			v2 := mk()
			if err := json.Unmarshal(b, v2); err != nil {
				t.Fatalf("%T: re-encoded form does not decode: %v", v, err)
			}
			if b2, _ := json.Marshal(v2); !bytes.Equal(b, b2) {
				t.Fatalf("%T not stable:\n%s\n%s", v, b, b2)
			}
		}
	})
}

func FuzzParseSchema(f *testing.F) {
	f.Add([]byte(`[{"name":"c","meta-type":"command","arg-type":"1","ret-type":"0"},{"name":"1","meta-type":"object","members":[{"name":"a","type":"1"}],"variants":[{"case":"x","type":"1"}]}]`))
	f.Add([]byte(transcriptReplyF(f, "query-migrate-capabilities.qmp")))
	f.Add([]byte(`[{"name":"migrate-set-capabilities","meta-type":"command","arg-type":"a"},{"name":"a","meta-type":"object","members":[{"name":"capabilities","type":"[b]"}]},{"name":"[b]","meta-type":"array","element-type":"b"},{"name":"b","meta-type":"object","members":[{"name":"capability","type":"e"}]},{"name":"e","meta-type":"enum","values":["multifd"]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSchema(data)
		if err != nil {
			return
		}
		s.Commands()
		s.Events()
		s.MigrationCapabilities()
		s.MigrationParameters()
		s.CompressionMethods()
		for _, e := range s.Entries {
			s.ObjectMembers(e.Name)
			s.EnumValues(e.Name)
			s.CommandArgs(e.Name)
		}
	})
}

func transcriptReplyF(f *testing.F, name string) []byte {
	data, err := os.ReadFile("testdata/" + rec72 + name)
	if err != nil {
		f.Fatal(err)
	}
	tr, err := parseTranscript(data)
	if err != nil {
		f.Fatal(err)
	}
	for _, x := range tr.exchanges {
		for _, m := range x.recv {
			if msg, err := DecodeMessage(m); err == nil && msg.Kind == KindReply && msg.Error == nil {
				return msg.Return
			}
		}
	}
	f.Fatalf("%s: no reply", name)
	return nil
}

func FuzzDecodeDeviceTree(f *testing.F) {
	if golden, err := os.ReadFile("testdata/" + rec72 + "devtree-q35.json"); err == nil {
		f.Add(golden)
	}
	f.Add(sampleTree().Canonical())
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := DecodeDeviceTree(data)
		if err != nil {
			return
		}
		c := tr.Canonical()
		tr2, err := DecodeDeviceTree(c)
		if err != nil {
			t.Fatalf("canonical form does not decode: %v\n%s", err, c)
		}
		if !bytes.Equal(tr2.Canonical(), c) {
			t.Fatalf("canonical form not stable:\n%s\n%s", c, tr2.Canonical())
		}
	})
}

// FuzzConnStream feeds arbitrary bytes from "QEMU" to a Conn after a valid
// greeting: the Conn must never panic or hang, and Close must return.
func FuzzConnStream(f *testing.F) {
	for _, m := range transcriptMessages(f, 2048) {
		f.Add(append(m, '\n'))
	}
	f.Add([]byte(`{"return": {}, "id": "mig2-2"}` + "\n" + `{"event":"STOP"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		go func() {
			defer srv.Close()
			srv.Write([]byte(fakeGreeting + "\n"))
			buf := make([]byte, 4096)
			srv.Read(buf) // qmp_capabilities
			srv.Write([]byte(`{"return": {}, "id": "mig2-1"}` + "\n"))
			srv.Read(buf) // the command
			srv.Write(data)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // generous: a fuzz worker may be starved of CPU
		defer cancel()
		c, err := NewConn(ctx, cli)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		sub := c.Subscribe(2)
		xctx, xcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		c.Execute(xctx, "x", nil, nil)
		xcancel()
		c.Close()
		for range sub.Events() {
		}
	})
}
