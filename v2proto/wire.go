package v2proto

// The field encoding of SPEC §3.4: a body is a sequence of (tag u16, length u32, value) with
// tags strictly ascending, every defined field present, unknown non-critical tags skipped.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

const criticalTag = 0x8000 // SPEC §3.4 rule 3

// errDecode is wrapped by every decoding error; it matches ErrProtocol.
type decodeError struct{ msg string }

func (e *decodeError) Error() string        { return "v2proto: decode: " + e.msg }
func (e *decodeError) Is(target error) bool { return target == ErrProtocol }

func decodeErrorf(format string, args ...any) error {
	return &decodeError{msg: fmt.Sprintf(format, args...)}
}

// builder appends fields in the order the caller gives; callers give ascending tags.
type builder struct {
	b []byte
}

func (b *builder) bytes() []byte { return b.b }

// field writes tag and a length placeholder, lets f write the value, then patches the length.
func (b *builder) field(tag uint16, f func(*builder)) {
	b.b = binary.BigEndian.AppendUint16(b.b, tag)
	at := len(b.b)
	b.b = append(b.b, 0, 0, 0, 0)
	f(b)
	binary.BigEndian.PutUint32(b.b[at:], uint32(len(b.b)-at-4))
}

func (b *builder) raw(p []byte) { b.b = append(b.b, p...) }

func (b *builder) putBool(tag uint16, v bool) {
	b.field(tag, func(b *builder) {
		if v {
			b.b = append(b.b, 1)
		} else {
			b.b = append(b.b, 0)
		}
	})
}

func (b *builder) putU8(tag uint16, v uint8) { b.field(tag, func(b *builder) { b.b = append(b.b, v) }) }
func (b *builder) putU16(tag uint16, v uint16) {
	b.field(tag, func(b *builder) { b.b = binary.BigEndian.AppendUint16(b.b, v) })
}
func (b *builder) putU32(tag uint16, v uint32) {
	b.field(tag, func(b *builder) { b.b = binary.BigEndian.AppendUint32(b.b, v) })
}
func (b *builder) putU64(tag uint16, v uint64) {
	b.field(tag, func(b *builder) { b.b = binary.BigEndian.AppendUint64(b.b, v) })
}
func (b *builder) putString(tag uint16, s string) {
	b.field(tag, func(b *builder) { b.b = append(b.b, s...) })
}
func (b *builder) putBytes(tag uint16, p []byte) { b.field(tag, func(b *builder) { b.raw(p) }) }

func (b *builder) putRange(tag uint16, r VersionRange) {
	b.field(tag, func(b *builder) {
		b.b = binary.BigEndian.AppendUint16(b.b, r.Min)
		b.b = binary.BigEndian.AppendUint16(b.b, r.Max)
	})
}

// item writes one list element: a u32 length, then what f writes.
func (b *builder) item(f func(*builder)) {
	at := len(b.b)
	b.b = append(b.b, 0, 0, 0, 0)
	f(b)
	binary.BigEndian.PutUint32(b.b[at:], uint32(len(b.b)-at-4))
}

func (b *builder) putStrings(tag uint16, list []string) {
	b.field(tag, func(b *builder) {
		for _, s := range list {
			b.item(func(b *builder) { b.b = append(b.b, s...) })
		}
	})
}

// fields iterates over a field sequence, enforcing SPEC §3.4 rules 1 and 3; the caller
// enforces rule 2 (with required) and rule 4 (with the value decoders).
type fields struct {
	data []byte
	last int // last tag seen, -1 before the first
	what string
}

func newFields(what string, data []byte) *fields { return &fields{data: data, last: -1, what: what} }

// next returns the next field. ok is false at the end of the sequence.
func (f *fields) next() (tag uint16, val []byte, ok bool, err error) {
	if len(f.data) == 0 {
		return 0, nil, false, nil
	}
	if len(f.data) < 6 {
		return 0, nil, false, decodeErrorf("%s: truncated field header", f.what)
	}
	tag = binary.BigEndian.Uint16(f.data)
	n := binary.BigEndian.Uint32(f.data[2:])
	if uint64(n) > uint64(len(f.data)-6) {
		return 0, nil, false, decodeErrorf("%s: field %d: length %d exceeds the %d bytes left", f.what, tag, n, len(f.data)-6)
	}
	if int(tag) <= f.last {
		if int(tag) == f.last {
			return 0, nil, false, decodeErrorf("%s: duplicate field %d", f.what, tag)
		}
		return 0, nil, false, decodeErrorf("%s: field %d after field %d (fields must ascend)", f.what, tag, f.last)
	}
	f.last = int(tag)
	val = f.data[6 : 6+n]
	f.data = f.data[6+n:]
	return tag, val, true, nil
}

// unknown handles a tag the decoder does not know: skip it unless it is critical.
func (f *fields) unknown(tag uint16) error {
	if tag&criticalTag != 0 {
		return decodeErrorf("%s: unknown critical field %#x", f.what, tag)
	}
	return nil
}

// seen tracks which required fields were present (tags 1..63).
type seen uint64

func (s *seen) mark(tag uint16) { *s |= 1 << tag }

// require checks that tags 1..n are all present (SPEC §3.4 rule 2).
func (s seen) require(what string, n uint16) error {
	for t := uint16(1); t <= n; t++ {
		if s&(1<<t) == 0 {
			return decodeErrorf("%s: missing field %d", what, t)
		}
	}
	return nil
}

func decBool(what string, v []byte) (bool, error) {
	if len(v) != 1 || v[0] > 1 {
		return false, decodeErrorf("%s: bad bool (%d bytes)", what, len(v))
	}
	return v[0] == 1, nil
}

func decU8(what string, v []byte) (uint8, error) {
	if len(v) != 1 {
		return 0, decodeErrorf("%s: want 1 byte, got %d", what, len(v))
	}
	return v[0], nil
}

func decU16(what string, v []byte) (uint16, error) {
	if len(v) != 2 {
		return 0, decodeErrorf("%s: want 2 bytes, got %d", what, len(v))
	}
	return binary.BigEndian.Uint16(v), nil
}

func decU32(what string, v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, decodeErrorf("%s: want 4 bytes, got %d", what, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

func decU64(what string, v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, decodeErrorf("%s: want 8 bytes, got %d", what, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func decString(what string, v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", decodeErrorf("%s: invalid UTF-8", what)
	}
	return string(v), nil
}

func decBytes32(what string, v []byte) ([32]byte, error) {
	var out [32]byte
	if len(v) != 32 {
		return out, decodeErrorf("%s: want 32 bytes, got %d", what, len(v))
	}
	copy(out[:], v)
	return out, nil
}

func decRange(what string, v []byte) (VersionRange, error) {
	if len(v) != 4 {
		return VersionRange{}, decodeErrorf("%s: want 4 bytes, got %d", what, len(v))
	}
	r := VersionRange{Min: binary.BigEndian.Uint16(v), Max: binary.BigEndian.Uint16(v[2:])}
	if err := r.Validate(); err != nil {
		return VersionRange{}, decodeErrorf("%s: %v", what, err)
	}
	return r, nil
}

// decItems splits a list value into its items (SPEC §3.4 list encodings).
func decItems(what string, v []byte, each func(item []byte) error) error {
	for len(v) > 0 {
		if len(v) < 4 {
			return decodeErrorf("%s: truncated list item length", what)
		}
		n := binary.BigEndian.Uint32(v)
		if uint64(n) > uint64(len(v)-4) {
			return decodeErrorf("%s: list item length %d exceeds the %d bytes left", what, n, len(v)-4)
		}
		if err := each(v[4 : 4+n]); err != nil {
			return err
		}
		v = v[4+n:]
	}
	return nil
}

// decStrings decodes a list<string>; sorted demands strictly ascending items (SPEC §3.4).
func decStrings(what string, v []byte, sorted bool) ([]string, error) {
	var out []string
	err := decItems(what, v, func(item []byte) error {
		s, err := decString(what, item)
		if err != nil {
			return err
		}
		if sorted && len(out) > 0 && s <= out[len(out)-1] {
			return decodeErrorf("%s: list not sorted or has duplicates at %q", what, s)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// errUnknownField is what a decodeFields callback returns for a tag it does not know.
var errUnknownField = errors.New("v2proto: unknown field")

// decodeFields walks one field sequence (SPEC §3.4): it enforces ascending, unique tags, hands
// each field to field, skips the unknown ones that are not critical, and finally checks that
// tags 1..required were all present.
func decodeFields(what string, data []byte, required uint16, field func(tag uint16, val []byte) error) error {
	fs := newFields(what, data)
	var s seen
	for {
		tag, val, ok, err := fs.next()
		if err != nil {
			return err
		}
		if !ok {
			return s.require(what, required)
		}
		s.mark(tag)
		if err := field(tag, val); errors.Is(err, errUnknownField) {
			err = fs.unknown(tag)
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
}
