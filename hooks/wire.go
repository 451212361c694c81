package hooks

// The hook ↔ agent protocol, over the agent's unix socket (DefaultSocket):
//
//   - One request per connection. The hook connects, writes one JSON object (Request), and
//     half-closes its side (shutdown SHUT_WR). The agent reads to EOF, writes one JSON object
//     (Response) and closes. Both ends bound what they read (MaxRequestSize, MaxResponseSize).
//   - Version 1. A request carries "version"; an agent answers a version it does not know with
//     {"allow": false, "reason": "..."} for migrate-begin, so an old agent never waves a newer
//     hook's question through unread.
//   - Decoders are strict about what they know (types, required fields, one object, nothing
//     after it) and skip unknown fields, so either side may add optional ones.
//
// Requests:
//
//	{"version":1,"op":"migrate-begin","domain":"guest1","uuid":"…","xml":"<domain …>…</domain>"}
//	{"version":1,"op":"release","domain":"guest1","uuid":"…"}
//
// Responses:
//
//	{"allow":true}
//	{"allow":false,"reason":"guest1: this migration was not negotiated with mig2; run `mig2 migrate` on the source"}
//
// migrate-begin asks whether the incoming migration was negotiated and whether its XML matches
// what was agreed; release tells the agent that a guest went away (the answer is ignored).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ProtocolVersion is the hook protocol's version.
const ProtocolVersion = 1

// Request ops.
const (
	ReqMigrateBegin = "migrate-begin"
	ReqRelease      = "release"
)

// Bounds on one message.
const (
	MaxRequestSize  = MaxXMLSize + 64<<10
	MaxResponseSize = 64 << 10
)

// Request is what the hook asks the agent.
type Request struct {
	Version int    `json:"version"`
	Op      string `json:"op"`
	Domain  string `json:"domain"`
	UUID    string `json:"uuid,omitempty"`
	XML     string `json:"xml,omitempty"`
}

// Response is the agent's answer.
type Response struct {
	Allow  bool   `json:"allow"`
	Reason string `json:"reason,omitempty"`
}

// WireError is a message that does not decode.
type WireError struct {
	What string // "request" or "response"
	Err  error
}

func (e *WireError) Error() string { return fmt.Sprintf("hooks: bad %s: %v", e.What, e.Err) }
func (e *WireError) Unwrap() error { return e.Err }

// EncodeRequest is the request's wire form.
func EncodeRequest(r Request) ([]byte, error) { return json.Marshal(r) }

// EncodeResponse is the response's wire form.
func EncodeResponse(r Response) ([]byte, error) { return json.Marshal(r) }

// DecodeRequest decodes one request: version ≥ 1, op and domain present.
func DecodeRequest(b []byte) (Request, error) {
	var w struct {
		Version *int    `json:"version"`
		Op      *string `json:"op"`
		Domain  *string `json:"domain"`
		UUID    string  `json:"uuid"`
		XML     string  `json:"xml"`
	}
	if err := decodeOne(b, &w, MaxRequestSize); err != nil {
		return Request{}, &WireError{What: "request", Err: err}
	}
	switch {
	case w.Version == nil || *w.Version < 1:
		return Request{}, &WireError{What: "request", Err: errors.New(`"version" missing or below 1`)}
	case w.Op == nil || *w.Op == "":
		return Request{}, &WireError{What: "request", Err: errors.New(`"op" missing`)}
	case w.Domain == nil || *w.Domain == "":
		return Request{}, &WireError{What: "request", Err: errors.New(`"domain" missing`)}
	}
	return Request{Version: *w.Version, Op: *w.Op, Domain: *w.Domain, UUID: w.UUID, XML: w.XML}, nil
}

// DecodeResponse decodes one response: "allow" must be present (an answer that forgot it is not
// a refusal, nor a permission).
func DecodeResponse(b []byte) (Response, error) {
	var w struct {
		Allow  *bool  `json:"allow"`
		Reason string `json:"reason"`
	}
	if err := decodeOne(b, &w, MaxResponseSize); err != nil {
		return Response{}, &WireError{What: "response", Err: err}
	}
	if w.Allow == nil {
		return Response{}, &WireError{What: "response", Err: errors.New(`"allow" missing`)}
	}
	return Response{Allow: *w.Allow, Reason: w.Reason}, nil
}

// decodeOne decodes exactly one JSON object from b into v; blanks may follow it, nothing else.
// Duplicate keys are refused (encoding/json would silently keep the last one).
func decodeOne(b []byte, v any, limit int) error {
	if len(b) > limit {
		return fmt.Errorf("%d bytes, more than %d", len(b), limit)
	}
	if err := checkNoDuplicateKeys(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// checkNoDuplicateKeys refuses a top-level object that names a key twice, and anything that is
// not an object.
func checkNoDuplicateKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("malformed object")
		}
		if seen[key] {
			return fmt.Errorf("key %q given twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}
