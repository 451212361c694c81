package qmp

// All QMP wire messages live in this file: the command QEMU receives and the
// three kinds of message it sends (greeting, reply, event), with one decoder,
// DecodeMessage. See QEMU's docs/interop/qmp-spec.rst.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// MessageKind tells what QEMU sent.
type MessageKind int

// Message kinds.
const (
	KindGreeting MessageKind = iota + 1 // {"QMP": {...}}, once, on connect
	KindReply                           // {"return": ...} or {"error": ...}, answering a command
	KindEvent                           // {"event": ..., "data": ..., "timestamp": ...}
)

func (k MessageKind) String() string {
	switch k {
	case KindGreeting:
		return "greeting"
	case KindReply:
		return "reply"
	case KindEvent:
		return "event"
	}
	return fmt.Sprintf("MessageKind(%d)", int(k))
}

// Greeting is QEMU's first message on a monitor socket.
type Greeting struct {
	Version      VersionInfo `json:"version"`
	Capabilities []string    `json:"capabilities"`
}

// HasCapability reports whether QEMU offered the QMP capability (e.g. "oob").
func (g Greeting) HasCapability(name string) bool {
	for _, c := range g.Capabilities {
		if c == name {
			return true
		}
	}
	return false
}

// Event is an asynchronous QMP event.
type Event struct {
	Name      string          // e.g. "MIGRATION", "STOP"
	Data      json.RawMessage // the "data" member, nil when QEMU sent none
	Timestamp time.Time       // QEMU's timestamp; zero when QEMU had no clock (-1)
}

// Message is one decoded message from QEMU. Exactly one of Greeting, the
// reply fields (Return or Error) and Event is set, according to Kind.
type Message struct {
	Kind     MessageKind
	Greeting *Greeting
	// ID is the raw "id" member of a reply, as QEMU echoed it (nil if absent).
	ID     json.RawMessage
	Return json.RawMessage // reply "return" member (success)
	Error  *Error          // reply "error" member (failure); Command is not set
	Event  *Event
}

// wireTimestamp is QEMU's event timestamp.
type wireTimestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

func (ts wireTimestamp) time() time.Time {
	if ts.Seconds < 0 || ts.Microseconds < 0 {
		return time.Time{}
	}
	return time.Unix(ts.Seconds, ts.Microseconds*1000).UTC()
}

func timestampOf(t time.Time) wireTimestamp {
	if t.IsZero() {
		return wireTimestamp{Seconds: -1, Microseconds: -1}
	}
	return wireTimestamp{Seconds: t.Unix(), Microseconds: int64(t.Nanosecond() / 1000)}
}

type wireError struct {
	Class *string `json:"class"`
	Desc  *string `json:"desc"`
}

// DecodeMessage decodes one JSON message sent by QEMU. It is strict about
// what QMP defines (exactly one of "QMP", "return", "error", "event"; their
// shapes; no duplicate members; no trailing data) and tolerant of members it
// does not know, which it ignores.
func DecodeMessage(data []byte) (*Message, error) {
	members, err := decodeObject(data)
	if err != nil {
		return nil, err
	}
	var kinds []string
	for _, k := range []string{"QMP", "return", "error", "event"} {
		if _, ok := members[k]; ok {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) != 1 {
		return nil, fmt.Errorf("qmp: message has %d of the members QMP/return/error/event, want exactly one", len(kinds))
	}
	m := &Message{}
	switch kinds[0] {
	case "QMP":
		var g Greeting
		if err := strictUnmarshal(members["QMP"], &g); err != nil {
			return nil, fmt.Errorf("qmp: bad greeting: %w", err)
		}
		m.Kind, m.Greeting = KindGreeting, &g
	case "return":
		m.Kind, m.Return = KindReply, members["return"]
		m.ID = members["id"]
	case "error":
		var we wireError
		if err := strictUnmarshal(members["error"], &we); err != nil {
			return nil, fmt.Errorf("qmp: bad error reply: %w", err)
		}
		if we.Class == nil || we.Desc == nil {
			return nil, errors.New("qmp: bad error reply: class or desc missing")
		}
		m.Kind, m.Error = KindReply, &Error{Class: *we.Class, Desc: *we.Desc}
		m.ID = members["id"]
	case "event":
		var name string
		if err := strictUnmarshal(members["event"], &name); err != nil || name == "" {
			return nil, errors.New("qmp: bad event: event name is not a non-empty string")
		}
		ev := &Event{Name: name}
		if d, ok := members["data"]; ok && !bytes.Equal(d, []byte("null")) {
			if len(d) == 0 || d[0] != '{' {
				return nil, fmt.Errorf("qmp: bad event %s: data is not an object", name)
			}
			ev.Data = d
		}
		if ts, ok := members["timestamp"]; ok {
			var wt wireTimestamp
			if err := strictUnmarshal(ts, &wt); err != nil {
				return nil, fmt.Errorf("qmp: bad event %s: timestamp: %w", name, err)
			}
			ev.Timestamp = wt.time()
		}
		m.Kind, m.Event = KindEvent, ev
	}
	return m, nil
}

// decodeObject splits a JSON object into its members, rejecting duplicates,
// non-objects and trailing data. Member values are copies of the raw JSON.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("qmp: malformed message: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("qmp: malformed message: not a JSON object")
	}
	members := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("qmp: malformed message: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("qmp: malformed message: member name is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("qmp: malformed message: member %q: %w", key, err)
		}
		if _, dup := members[key]; dup {
			return nil, fmt.Errorf("qmp: malformed message: duplicate member %q", key)
		}
		members[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("qmp: malformed message: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("qmp: malformed message: trailing data after the object")
	}
	return members, nil
}

// strictUnmarshal is json.Unmarshal that also rejects a JSON null where a
// value is required.
func strictUnmarshal(data []byte, v any) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return errors.New("unexpected null")
	}
	return json.Unmarshal(data, v)
}

// wireCommand is what QEMU receives.
type wireCommand struct {
	Execute   string          `json:"execute,omitempty"`
	ExecOOB   string          `json:"exec-oob,omitempty"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	ID        json.RawMessage `json:"id,omitempty"`
}

// EncodeCommand encodes a QMP command line (JSON followed by "\n"). args may
// be nil, any value that marshals to a JSON object, or a json.RawMessage
// holding one; QMP arguments are always an object. id is omitted when empty.
// With oob set the command is sent as "exec-oob".
func EncodeCommand(cmd string, args any, id string, oob bool) ([]byte, error) {
	if cmd == "" {
		return nil, errors.New("qmp: empty command name")
	}
	w := wireCommand{}
	if oob {
		w.ExecOOB = cmd
	} else {
		w.Execute = cmd
	}
	if args != nil {
		a, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("qmp: %s: encode arguments: %w", cmd, err)
		}
		a = bytes.TrimSpace(a)
		switch {
		case bytes.Equal(a, []byte("null")):
		case len(a) > 0 && a[0] == '{':
			if !bytes.Equal(a, []byte("{}")) {
				w.Arguments = a
			}
		default:
			return nil, fmt.Errorf("qmp: %s: arguments must be a JSON object, got %.40s", cmd, a)
		}
	}
	if id != "" {
		w.ID, _ = json.Marshal(id)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: encode: %w", cmd, err)
	}
	return append(b, '\n'), nil
}

// EncodeEvent encodes an event the way QEMU sends it (used by fakes and
// tests; round-trips through DecodeMessage).
func EncodeEvent(e Event) ([]byte, error) {
	w := struct {
		Event     string          `json:"event"`
		Data      json.RawMessage `json:"data,omitempty"`
		Timestamp wireTimestamp   `json:"timestamp"`
	}{e.Name, e.Data, timestampOf(e.Timestamp)}
	return json.Marshal(w)
}

// EncodeReply encodes a reply the way QEMU sends it: {"return": ret} when
// qerr is nil, {"error": {...}} otherwise; id is included when not nil.
func EncodeReply(id json.RawMessage, ret json.RawMessage, qerr *Error) ([]byte, error) {
	w := struct {
		Return json.RawMessage `json:"return,omitempty"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error,omitempty"`
		ID json.RawMessage `json:"id,omitempty"`
	}{ID: id}
	if qerr != nil {
		w.Error = &struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		}{qerr.Class, qerr.Desc}
	} else {
		if len(ret) == 0 {
			ret = json.RawMessage("{}")
		}
		w.Return = ret
	}
	return json.Marshal(w)
}

// DecodeReply decodes a reply to cmd: the "return" member on success, a
// *Error (with Command set) when QEMU answered with an error. It is what
// libvirtqmp uses on the string virDomainQemuMonitorCommand returns, where a
// QMP error arrives inside the output with no libvirt error.
func DecodeReply(cmd string, data []byte) (json.RawMessage, error) {
	m, err := DecodeMessage(data)
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	if m.Kind != KindReply {
		return nil, fmt.Errorf("qmp: %s: got a %s, want a reply", cmd, m.Kind)
	}
	if m.Error != nil {
		e := *m.Error
		e.Command = cmd
		return nil, &e
	}
	return m.Return, nil
}
