package hooks

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func recordedWire(t testing.TB, prefix string) [][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/wire/" + prefix + "-*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/wire/%s-*.json: %v", prefix, err)
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestWireRoundTrip(t *testing.T) {
	reqs := []Request{
		{Version: 1, Op: ReqMigrateBegin, Domain: "g1", UUID: "6695eb01-f6a4-8304-79aa-97f2502e193f", XML: "<domain type='kvm'>\n<name>g1</name></domain>"},
		{Version: 1, Op: ReqRelease, Domain: "g \"quoted\" ünïcode"},
		{Version: 7, Op: "future", Domain: "g"},
	}
	for _, r := range reqs {
		b, err := EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRequest(b)
		if err != nil || got != r {
			t.Errorf("request %+v → %s → %+v, %v", r, b, got, err)
		}
	}
	for _, r := range []Response{{Allow: true}, {Allow: false, Reason: "no"}, {Allow: true, Reason: "unchecked"}, {}} {
		b, err := EncodeResponse(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeResponse(b)
		if err != nil || got != r {
			t.Errorf("response %+v → %s → %+v, %v", r, b, got, err)
		}
	}
	for _, b := range recordedWire(t, "request") {
		r, err := DecodeRequest(b)
		if err != nil {
			t.Errorf("%s: %v", b, err)
			continue
		}
		again, _ := EncodeRequest(r)
		if r2, err := DecodeRequest(again); err != nil || r2 != r {
			t.Errorf("%s: round trip %+v, %v", b, r2, err)
		}
	}
	for _, b := range recordedWire(t, "response") {
		if _, err := DecodeResponse(b); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
}

// TestWireTruncation: no proper prefix of a message decodes (trailing blanks aside).
func TestWireTruncation(t *testing.T) {
	for _, b := range recordedWire(t, "request") {
		b = bytes.TrimRight(b, "\n")
		for n := 0; n < len(b); n++ {
			if r, err := DecodeRequest(b[:n]); err == nil {
				t.Errorf("request prefix %q decoded to %+v", b[:n], r)
			}
		}
	}
	for _, b := range recordedWire(t, "response") {
		b = bytes.TrimRight(b, "\n")
		for n := 0; n < len(b); n++ {
			if r, err := DecodeResponse(b[:n]); err == nil {
				t.Errorf("response prefix %q decoded to %+v", b[:n], r)
			}
		}
	}
}

func TestWireRefuses(t *testing.T) {
	for what, s := range map[string]string{
		"no allow":        `{"reason":"x"}`,
		"allow as string": `{"allow":"yes"}`,
		"allow null":      `{"allow":null}`,
		"twice":           `{"allow":true,"allow":false}`,
		"trailing":        `{"allow":true} {"allow":false}`,
		"trailing junk":   `{"allow":true}x`,
		"array":           `[{"allow":true}]`,
		"empty":           ``,
		"too big":         `{"allow":true,"reason":"` + strings.Repeat("x", MaxResponseSize) + `"}`,
	} {
		if r, err := DecodeResponse([]byte(s)); err == nil {
			t.Errorf("%s: DecodeResponse = %+v", what, r)
		} else if !strings.HasPrefix(err.Error(), "hooks: bad response") {
			t.Errorf("%s: error %q", what, err)
		}
	}
	for what, s := range map[string]string{
		"no version":   `{"op":"release","domain":"g"}`,
		"version 0":    `{"version":0,"op":"release","domain":"g"}`,
		"no op":        `{"version":1,"domain":"g"}`,
		"empty domain": `{"version":1,"op":"release","domain":""}`,
		"dup domain":   `{"version":1,"op":"release","domain":"a","domain":"b"}`,
		"xml number":   `{"version":1,"op":"release","domain":"g","xml":5}`,
	} {
		var we *WireError
		if r, err := DecodeRequest([]byte(s)); !errors.As(err, &we) {
			t.Errorf("%s: DecodeRequest = %+v, %v", what, r, err)
		}
	}
	// Unknown fields are skipped: a newer peer may add optional ones.
	r, err := DecodeResponse([]byte(`{"allow":false,"reason":"r","diff":{"missing":["rng0"]}}`))
	if err != nil || r != (Response{Reason: "r"}) {
		t.Errorf("unknown field: %+v, %v", r, err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, b := range recordedWire(f, "request") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			var we *WireError
			if !errors.As(err, &we) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		again, err := EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		if r2, err := DecodeRequest(again); err != nil || r2 != r {
			t.Fatalf("%q → %+v does not round-trip: %+v, %v", b, r, r2, err)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for _, b := range recordedWire(f, "response") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResponse(b)
		if err != nil {
			var we *WireError
			if !errors.As(err, &we) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		again, _ := EncodeResponse(r)
		if r2, err := DecodeResponse(again); err != nil || r2 != r {
			t.Fatalf("%q → %+v does not round-trip: %+v, %v", b, r, r2, err)
		}
	})
}
