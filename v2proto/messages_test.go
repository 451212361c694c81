package v2proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/messages/*.bin from the sample messages")

func sortedHost(name string) HostFacts {
	h := host72(name, 4)
	h.Capabilities = set(h.Capabilities)
	h.Parameters = set(h.Parameters)
	h.Compression = set(h.Compression)
	h.Traits = []string{TraitMultifdPostcopy}
	return h
}

// sampleMessages has one message of every type with every field set (lists already canonical,
// so a round trip must give back an identical value), plus zero-valued variants.
func sampleMessages() map[string]Message {
	n1, n2 := [32]byte{}, [32]byte{}
	for i := range n1 {
		n1[i], n2[i] = byte(i), byte(255-i)
	}
	tr := DeviceTree{MachineType: "pc-q35-7.2", CPUModel: "qemu64", RAMBytes: 2 << 30, Devices: []Device{
		{ID: "disk0", Type: "virtio-blk-pci", Props: map[string]string{"drive": "drive0", "serial": "abc"}},
		{ID: "net0", Type: "virtio-net-pci", Props: map[string]string{"mac": "52:54:00:00:00:01", "romfile": "efi-virtio.rom"}},
		{ID: "rng0", Type: "virtio-rng-pci"},
	}}
	agreement := Agreement{Version: 1, Features: []string{"device-tree"}, Channels: 4, Compression: "zstd", CompressionLevel: 3,
		Postcopy: true, PostcopyPreempt: true, ZeroCopySend: false, MaxBandwidth: 1 << 30, DowntimeLimitMs: 300,
		TLS: true, ReturnPath: true, PauseBeforeSwitchover: true,
		Adjustments: []Adjustment{{Param: ParamChannels, Asked: "16", Agreed: "4", Reason: ReasonSourceCores, Detail: "source host has 4 cores"}}}
	return map[string]Message{
		"hello": &Hello{Versions: VersionRange{1, 2}, Nonce: n1,
			Features:    []Feature{{Name: "device-tree", Required: true}, {Name: "x.extra"}},
			MigrationID: "mig-42", Guest: "guest1",
			Wants: Wants{Channels: 16, Compression: "auto", CompressionLevel: 1, Postcopy: true, PostcopyPreempt: true,
				ZeroCopySend: true, MaxBandwidth: 100 << 20, DowntimeLimitMs: 500},
			Host: sortedHost("src"), TLS: true, DeviceTree: tr, Compressibility: Compressibility{Measured: true, Percent: 77},
			GuestConfig: "<domain type='qemu'><name>guest1</name></domain>"},
		"offer": &Offer{Versions: VersionRange{1, 1}, Nonce: n2, Features: []Feature{{Name: "device-tree", Required: true}},
			Guest: "guest1", Host: sortedHost("dst"), Limits: Limits{MaxChannels: 8, DenyPostcopy: true}, TLS: true, DeviceTree: tr},
		"agree":         &Agree{Agreement: agreement},
		"ready":         &Ready{MigrationURI: "tcp:192.0.2.7:49152", TranscriptHash: n1},
		"ready-prepare": &Ready{MigrationURI: "tcp:192.0.2.7:49152", TranscriptHash: n1, Prepare: 1500 * time.Microsecond},
		"start":         &Start{TranscriptHash: n2},
		"progress":      &Progress{Status: "active", Transferred: 1 << 30, Remaining: 1 << 20, Total: 2 << 30, Message: "dirty rate 50 MiB/s"},
		"switchover":    &Switchover{Status: "pre-switchover"},
		"result": &Result{Outcome: OutcomeFailed, Status: "failed",
			DestError: "qemu-system-x86_64: Unknown savevm section or instance '0000:00:02.0/virtio-blk' 0", Details: "rc 1"},
		"abort": &Abort{Code: AbortDeviceMismatch, Stage: StageAgree, Message: "device trees differ"},

		"hello-zero":    &Hello{Versions: VersionRange{1, 1}},
		"offer-zero":    &Offer{Versions: VersionRange{1, 1}},
		"agree-zero":    &Agree{Agreement: Agreement{Channels: 1}},
		"result-zero":   &Result{Outcome: OutcomeRunning},
		"abort-unknown": &Abort{Code: 999},
	}
}

// TestMessageRoundTrip: every message survives encode → decode unchanged, and re-encodes to the
// same bytes.
func TestMessageRoundTrip(t *testing.T) {
	for name, m := range sampleMessages() {
		enc := Marshal(m)
		back, err := Unmarshal(enc)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(normalize(back), normalize(m)) {
			t.Errorf("%s: round trip changed the message:\n got %#v\nwant %#v", name, back, m)
		}
		if !bytes.Equal(Marshal(back), enc) {
			t.Errorf("%s: re-encoding differs", name)
		}
	}
}

// normalize maps empty slices and maps to nil, as the decoder does.
func normalize(m Message) Message {
	v := reflect.ValueOf(m).Elem()
	out := reflect.New(v.Type())
	out.Elem().Set(v)
	normValue(out.Elem())
	return out.Interface().(Message)
}

func normValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Slice:
		if v.Len() == 0 {
			if v.CanSet() {
				v.Set(reflect.Zero(v.Type()))
			}
			return
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(c, v)
		for i := range c.Len() {
			normValue(c.Index(i))
		}
		v.Set(c)
	case reflect.Map:
		if v.Len() == 0 && v.CanSet() {
			v.Set(reflect.Zero(v.Type()))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() {
				normValue(v.Field(i))
			}
		}
	}
}

// TestMessageTruncation: no proper prefix of any encoded message decodes (crypto/tls's
// handshake_messages_test habit).
func TestMessageTruncation(t *testing.T) {
	for name, m := range sampleMessages() {
		enc := Marshal(m)
		for i := range len(enc) {
			if _, err := Unmarshal(enc[:i]); err == nil {
				t.Errorf("%s: prefix of %d/%d bytes decodes", name, i, len(enc))
				break
			} else if !errors.Is(err, ErrProtocol) {
				t.Errorf("%s: decode error does not match ErrProtocol: %v", name, err)
			}
		}
	}
}

// TestMessageTrailingBytes: bytes after the last field are a field header that is too short, or
// an unknown field; either way a frame cannot smuggle extra bytes past a strict decoder.
func TestMessageTrailingBytes(t *testing.T) {
	for name, m := range sampleMessages() {
		enc := Marshal(m)
		for _, tail := range [][]byte{{0}, {0, 0, 0, 0, 0}, {0xff, 0xff, 0, 0, 0, 1}} {
			if _, err := Unmarshal(append(bytes.Clone(enc), tail...)); err == nil {
				t.Errorf("%s: trailing %x accepted", name, tail)
			}
		}
	}
}

// fieldAt appends one raw field.
func fieldAt(b []byte, tag uint16, val []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, tag)
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	return append(b, val...)
}

func TestDecoderStrictness(t *testing.T) {
	valid := Marshal(&Switchover{Status: "x"})
	// An unknown, non-critical field after the known ones is skipped.
	if m, err := Unmarshal(fieldAt(bytes.Clone(valid), 99, []byte("future"))); err != nil || m.(*Switchover).Status != "x" {
		t.Errorf("unknown optional field: %v %v", m, err)
	}
	// An unknown critical field is rejected.
	if _, err := Unmarshal(fieldAt(bytes.Clone(valid), 0x8063, nil)); err == nil || !strings.Contains(err.Error(), "critical") {
		t.Errorf("unknown critical field: %v", err)
	}
	// A duplicate field is rejected.
	dup := fieldAt(fieldAt([]byte{byte(MsgSwitchover)}, 1, []byte("a")), 1, []byte("b"))
	if _, err := Unmarshal(dup); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate: %v", err)
	}
	// Fields out of order are rejected.
	ooo := fieldAt(fieldAt([]byte{byte(MsgReady)}, 2, make([]byte, 32)), 1, []byte("tcp:x:1"))
	if _, err := Unmarshal(ooo); err == nil || !strings.Contains(err.Error(), "ascend") {
		t.Errorf("out of order: %v", err)
	}
	// A missing field is rejected.
	if _, err := Unmarshal(fieldAt([]byte{byte(MsgReady)}, 1, []byte("tcp:x:1"))); err == nil || !strings.Contains(err.Error(), "missing field 2") {
		t.Errorf("missing: %v", err)
	}
	for name, payload := range map[string][]byte{
		"bad bool":          fieldAt([]byte{byte(MsgAbort)}, 1, []byte{0, 1}),
		"short u16":         fieldAt([]byte{byte(MsgAbort)}, 1, []byte{1}),
		"invalid UTF-8":     fieldAt([]byte{byte(MsgSwitchover)}, 1, []byte{0xff, 0xfe}),
		"short nonce":       fieldAt([]byte{byte(MsgStart)}, 1, make([]byte, 31)),
		"unknown type":      {42},
		"empty":             {},
		"bad outcome":       fieldAt([]byte{byte(MsgResult)}, 1, []byte{9}),
		"inverted versions": fieldAt([]byte{byte(MsgHello)}, 1, []byte{0, 2, 0, 1}),
		"zero version":      fieldAt([]byte{byte(MsgHello)}, 1, []byte{0, 0, 0, 1}),
		"field overruns":    {byte(MsgSwitchover), 0, 1, 0, 0, 0, 9, 'x'},
	} {
		if _, err := Unmarshal(payload); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v does not match ErrProtocol", name, err)
		}
	}
}

func TestValueDecoders(t *testing.T) {
	for _, v := range [][]byte{{}, {2}, {0, 0}} {
		if _, err := decBool("b", v); err == nil {
			t.Errorf("bool %x accepted", v)
		}
	}
	if b, err := decBool("b", []byte{1}); err != nil || !b {
		t.Error("bool 1")
	}
	if _, err := decU64("u", make([]byte, 7)); err == nil {
		t.Error("short u64 accepted")
	}
	if _, err := decStrings("l", []byte{0, 0, 0, 1, 'b', 0, 0, 0, 1, 'a'}, true); err == nil {
		t.Error("unsorted list accepted")
	}
	if _, err := decStrings("l", []byte{0, 0, 0, 5, 'b'}, false); err == nil {
		t.Error("overrunning list item accepted")
	}
}

func TestDecoderListRules(t *testing.T) {
	h := sampleMessages()["hello"].(*Hello)
	h.Features = []Feature{{Name: "a"}, {Name: "a", Required: true}}
	if _, err := Unmarshal(Marshal(h)); err == nil {
		t.Error("duplicate feature accepted")
	}
	h.Features = []Feature{{Name: "Bad Name"}}
	if _, err := Unmarshal(Marshal(h)); err == nil {
		t.Error("invalid feature name accepted")
	}
	// Host fact lists are sets: the encoder sorts and de-duplicates them.
	h = sampleMessages()["hello"].(*Hello)
	h.Host.Capabilities = []string{"b", "a", "b"}
	back, err := Unmarshal(Marshal(h))
	if err != nil || !reflect.DeepEqual(back.(*Hello).Host.Capabilities, []string{"a", "b"}) {
		t.Errorf("capabilities: %v %v", back, err)
	}
	// An Agreement with zero channels is invalid.
	if _, err := Unmarshal(Marshal(&Agree{})); err == nil || !strings.Contains(err.Error(), "zero channels") {
		t.Errorf("zero channels: %v", err)
	}
}

// TestGoldenMessages pins the wire format: the encodings in testdata/messages must not change
// (they also seed the fuzzers). Run with -update after a deliberate format change.
func TestGoldenMessages(t *testing.T) {
	dir := filepath.Join("testdata", "messages")
	for name, m := range sampleMessages() {
		path := filepath.Join(dir, name+".bin")
		enc := Marshal(m)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, enc, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGoldenMessages -update ./v2proto/ to create it)", err)
		}
		if !bytes.Equal(enc, want) {
			t.Errorf("%s: encoding changed; if deliberate, run with -update and update SPEC.md", name)
		}
		if _, err := Unmarshal(want); err != nil {
			t.Errorf("%s: golden does not decode: %v", name, err)
		}
	}
}

// TestGoldenDeviceTree pins the canonical device-tree encoding (SPEC §8.1) and its digest.
func TestGoldenDeviceTree(t *testing.T) {
	tr := sampleTree(5)
	enc, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "devicetree", "tree5.bin")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, enc, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(enc, want) {
		t.Error("canonical device-tree encoding changed; if deliberate, run with -update and update SPEC.md")
	}
}

// TestWireExample checks one encoding byte by byte against SPEC §3.3/§3.4, so that the spec's
// description and the code cannot drift apart.
func TestWireExample(t *testing.T) {
	got := appendFrame(nil, Marshal(&Switchover{Status: "ok"}))
	want := []byte{
		0, 0, 0, 9, // frame length: type + field
		7,    // type Switchover
		0, 1, // tag 1
		0, 0, 0, 2, // length 2
		'o', 'k',
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
}

// TestHostFactsLink: link_mbps (field 10) round-trips, is left out when unknown (so encodings
// without it are unchanged), and a decoder that predates it skips it.
func TestHostFactsLink(t *testing.T) {
	for _, link := range []uint32{0, 1000, LinkSameHost} {
		h := host72("src", 2)
		h.LinkMbps = link
		var b builder
		h.marshal(&b)
		var back HostFacts
		if err := back.unmarshal("host", b.b); err != nil {
			t.Fatalf("link %d: %v", link, err)
		}
		if back.LinkMbps != link {
			t.Errorf("link %d: decoded %d", link, back.LinkMbps)
		}
		h0 := host72("src", 2)
		var b0 builder
		h0.marshal(&b0)
		if (link == 0) != bytes.Equal(b.b, b0.b) {
			t.Errorf("link %d: encoding with the field %x, without %x", link, b.b, b0.b)
		}
	}
}
