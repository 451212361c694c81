package v2proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Fuzz targets (run one at a time: go test -run=^$ -fuzz=^FuzzX$ -fuzztime=60s ./v2proto/).
// Seeds come from testdata/messages (the golden encodings) and testdata/fuzz.

// goldenSeeds returns the golden message payloads, by file name.
func goldenSeeds(f *testing.F) map[string][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "messages", "*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata/messages: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".bin")] = data
	}
	return out
}

// checkDecoded asserts what every successful decode must satisfy: the message re-encodes to a
// payload that decodes to the same encoding again (canonical and stable).
func checkDecoded(t *testing.T, m Message) {
	enc := Marshal(m)
	back, err := Unmarshal(enc)
	if err != nil {
		t.Fatalf("re-encoded %s does not decode: %v", m.Type(), err)
	}
	if !bytes.Equal(Marshal(back), enc) {
		t.Fatalf("%s: encoding not stable", m.Type())
	}
	for i := range enc {
		if _, err := Unmarshal(enc[:i]); err == nil {
			t.Fatalf("%s: prefix %d/%d decodes", m.Type(), i, len(enc))
		}
	}
}

// FuzzFrameReader feeds arbitrary bytes to the frame reader: no panic, no frame over the limit,
// and every frame it returns is consistent with its length prefix.
func FuzzFrameReader(f *testing.F) {
	for _, p := range goldenSeeds(f) {
		f.Add(appendFrame(appendFrame(nil, p), p))
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 2, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 4096
		fr := frameReader{r: &chunkedReader{data: data}, max: max}
		for range 64 {
			frame, err := fr.readFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			n := binary.BigEndian.Uint32(frame)
			if n == 0 || n > max || int(n)+4 != len(frame) {
				t.Fatalf("bad frame: length %d, %d bytes", n, len(frame))
			}
			if m, err := Unmarshal(frame[4:]); err == nil {
				checkDecoded(t, m)
			}
		}
	})
}

// chunkedReader returns data in small, varying pieces, as a network would.
type chunkedReader struct {
	data []byte
	n    int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.n++
	k := min(len(p), len(c.data), 1+c.n%7)
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

// FuzzUnmarshal: any payload, every message type through the one decode switch.
func FuzzUnmarshal(f *testing.F) {
	for _, p := range goldenSeeds(f) {
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{99})
	f.Fuzz(func(t *testing.T, payload []byte) {
		if m, err := Unmarshal(payload); err == nil {
			if m.Type() != MsgType(payload[0]) {
				t.Fatalf("type %v from byte %d", m.Type(), payload[0])
			}
			checkDecoded(t, m)
		} else if !errors.Is(err, ErrProtocol) {
			t.Fatalf("decode error does not match ErrProtocol: %v", err)
		}
	})
}

// fuzzMessage is a target for one message type: the fuzzer mutates the body only.
func fuzzMessage(f *testing.F, typ MsgType) {
	for _, p := range goldenSeeds(f) {
		if len(p) > 0 && MsgType(p[0]) == typ {
			f.Add(p[1:])
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Unmarshal(append([]byte{byte(typ)}, body...))
		if err != nil {
			return
		}
		checkDecoded(t, m)
	})
}

func FuzzHello(f *testing.F)      { fuzzMessage(f, MsgHello) }
func FuzzOffer(f *testing.F)      { fuzzMessage(f, MsgOffer) }
func FuzzAgree(f *testing.F)      { fuzzMessage(f, MsgAgree) }
func FuzzReady(f *testing.F)      { fuzzMessage(f, MsgReady) }
func FuzzStart(f *testing.F)      { fuzzMessage(f, MsgStart) }
func FuzzProgress(f *testing.F)   { fuzzMessage(f, MsgProgress) }
func FuzzSwitchover(f *testing.F) { fuzzMessage(f, MsgSwitchover) }
func FuzzResult(f *testing.F)     { fuzzMessage(f, MsgResult) }
func FuzzAbort(f *testing.F)      { fuzzMessage(f, MsgAbort) }

// FuzzDeviceTree: the canonical decoder; a decoded tree re-encodes canonically and equals itself.
func FuzzDeviceTree(f *testing.F) {
	if golden, err := os.ReadFile(filepath.Join("testdata", "devicetree", "tree5.bin")); err == nil {
		f.Add(golden)
	} else {
		f.Fatal(err)
	}
	for _, n := range []int{0, 1, 5} {
		tr := sampleTree(n)
		enc, err := tr.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var tr DeviceTree
		if err := tr.UnmarshalBinary(data); err != nil {
			return
		}
		enc, err := tr.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		var again DeviceTree
		if err := again.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		if d := DiffTrees(&tr, &again); !d.Empty() {
			t.Fatalf("round trip changed the tree:\n%v", d)
		}
		if d := DiffTrees(&tr, &tr); !d.Empty() {
			t.Fatalf("a tree differs from itself:\n%v", d)
		}
	})
}

// FuzzNegotiate: decoded Hello and Offer bodies into Negotiate. It must not panic, must be
// deterministic, and an agreement must be valid and encodable.
func FuzzNegotiate(f *testing.F) {
	seeds := goldenSeeds(f)
	f.Add(seeds["hello"][1:], seeds["offer"][1:])
	f.Add(seeds["hello-zero"][1:], seeds["offer-zero"][1:])
	h, o := sampleHello(3), sampleOffer(3)
	f.Add(Marshal(h)[1:], Marshal(o)[1:])
	f.Fuzz(func(t *testing.T, hb, ob []byte) {
		hm, err := Unmarshal(append([]byte{byte(MsgHello)}, hb...))
		if err != nil {
			return
		}
		om, err := Unmarshal(append([]byte{byte(MsgOffer)}, ob...))
		if err != nil {
			return
		}
		h, o := hm.(*Hello), om.(*Offer)
		a1, err1 := Negotiate(h, o)
		a2, err2 := Negotiate(h, o)
		if (err1 == nil) != (err2 == nil) {
			t.Fatal("not deterministic")
		}
		if err1 != nil {
			if !IsRefused(err1) && CodeOf(err1) != AbortProtocol {
				t.Fatalf("refusal of unexpected class: %v", err1)
			}
			if err1.Error() != err2.Error() {
				t.Fatal("refusal text not deterministic")
			}
			return
		}
		if ok, diff := EqualAgreements(a1, a2); !ok {
			t.Fatalf("not deterministic: %s", diff)
		}
		checkAgreement(t, a1, h.Wants, h.TLS)
		checkDecoded(t, &Agree{Agreement: *a1})
	})
}

// FuzzNegotiateParams: the parameter rules over arbitrary numbers and flags.
func FuzzNegotiateParams(f *testing.F) {
	f.Add(uint32(0), "auto", uint32(0), uint8(0), uint64(0), uint64(0), uint16(0xffff), uint32(4), uint32(8), uint32(0), uint16(0xffff), uint16(0xffff))
	f.Add(uint32(16), "zstd", uint32(25), uint8(0xff), uint64(1), uint64(1<<40), uint16(80), uint32(0), uint32(0), uint32(3), uint16(0), uint16(0x0f))
	f.Fuzz(func(t *testing.T, ch uint32, comp string, level uint32, flags uint8, bw, downtime uint64, hint uint16,
		srcCores, dstCores, maxCh uint32, srcCaps, dstCaps uint16) {
		w := Wants{Channels: ch, Compression: comp, CompressionLevel: level, Postcopy: flags&1 != 0, PostcopyPreempt: flags&2 != 0,
			ZeroCopySend: flags&4 != 0, MaxBandwidth: bw, DowntimeLimitMs: downtime}
		tls := flags&8 != 0
		var c Compressibility
		if hint <= 100 {
			c = Compressibility{Measured: true, Percent: uint8(hint)}
		}
		src, dst := capsFromBits(srcCaps, srcCores), capsFromBits(dstCaps, dstCores)
		a := NegotiateParams(w, c, tls, &src, &dst, Limits{MaxChannels: maxCh, DenyPostcopy: flags&16 != 0})
		checkAgreement(t, a, w, tls)
		if a.Postcopy && (!src.HasCapability(CapPostcopyRAM) || !dst.HasCapability(CapPostcopyRAM) || flags&16 != 0) {
			t.Fatal("postcopy agreed without support or against policy")
		}
		if a.ZeroCopySend && !src.HasCapability(CapZeroCopySend) {
			t.Fatal("zero-copy agreed without support")
		}
		if a.Compression != CompressionNone && (!contains(src.Compression, a.Compression) || !contains(dst.Compression, a.Compression)) {
			t.Fatalf("compression %q not supported by both", a.Compression)
		}
		if maxCh > 0 && a.Channels > maxCh && maxCh >= 1 {
			t.Fatalf("channels %d over the destination limit %d", a.Channels, maxCh)
		}
	})
}

func capsFromBits(bits uint16, cores uint32) HostFacts {
	names := []string{CapPostcopyRAM, CapPostcopyPreempt, CapZeroCopySend, "zstd", "zlib", TraitMultifdPostcopy}
	h := HostFacts{Capabilities: RequiredCapabilities, Cores: cores, Compression: []string{"none"}}
	for i, n := range names {
		if bits&(1<<i) == 0 {
			continue
		}
		switch n {
		case "zstd", "zlib":
			h.Compression = append(h.Compression, n)
		case TraitMultifdPostcopy:
			h.Traits = append(h.Traits, n)
		default:
			h.Capabilities = append(h.Capabilities, n)
		}
	}
	return h
}

// checkAgreement asserts the invariants of SPEC §6 on any agreement.
func checkAgreement(t *testing.T, a *Agreement, w Wants, tls bool) {
	t.Helper()
	switch {
	case a.Channels < 1 || a.Channels > MaxChannels:
		t.Fatalf("channels %d", a.Channels)
	case !a.ReturnPath || !a.PauseBeforeSwitchover:
		t.Fatal("return-path and pause-before-switchover must be on")
	case a.TLS != tls:
		t.Fatal("TLS does not follow the control channel")
	case a.ZeroCopySend && (a.TLS || a.Compression != CompressionNone):
		t.Fatal("zero-copy with TLS or compression")
	case a.PostcopyPreempt && !a.Postcopy:
		t.Fatal("preempt without postcopy")
	case a.Compression == CompressionNone && a.CompressionLevel != 0:
		t.Fatal("level without compression")
	case a.DowntimeLimitMs == 0 || a.DowntimeLimitMs > MaxDowntimeLimitMs:
		t.Fatalf("downtime %d", a.DowntimeLimitMs)
	case a.Postcopy && !w.Postcopy, a.PostcopyPreempt && !w.PostcopyPreempt, a.ZeroCopySend && !w.ZeroCopySend:
		t.Fatal("enabled something the source did not ask for")
	}
	has := func(p string) bool { _, ok := a.Adjustment(p); return ok }
	if a.Channels != w.Channels && !has(ParamChannels) ||
		a.Compression != w.Compression && !has(ParamCompression) ||
		a.CompressionLevel != w.CompressionLevel && !has(ParamCompressionLevel) ||
		a.Postcopy != w.Postcopy && !has(ParamPostcopy) ||
		a.PostcopyPreempt != w.PostcopyPreempt && !has(ParamPostcopyPreempt) ||
		a.ZeroCopySend != w.ZeroCopySend && !has(ParamZeroCopySend) ||
		a.DowntimeLimitMs != w.DowntimeLimitMs && !has(ParamDowntimeLimit) {
		t.Fatalf("a value differs without a reason: wants %+v, agreed %v, adjustments %v", w, a, a.Adjustments)
	}
}
