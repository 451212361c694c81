package v2proto

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every error this package returns matches one or more of them with errors.Is,
// through any number of %w wraps; the IsXxx helpers below are shorthands.
var (
	// ErrClosed: the session or listener was closed, or ended after Result or Abort.
	ErrClosed = errors.New("v2proto: closed")
	// ErrState: a stage method was called out of order (a bug in the caller).
	ErrState = errors.New("v2proto: stage method called out of order")
	// ErrProtocol: the peer sent something malformed or unexpected (Abort code protocol).
	ErrProtocol = errors.New("v2proto: protocol error")
	// ErrFrameTooLarge: a frame longer than the maximum (SPEC §3.3).
	ErrFrameTooLarge = errors.New("v2proto: frame too large")
	// ErrTimeout: a stage deadline expired (SPEC §9.2), locally or at the peer.
	ErrTimeout = errors.New("v2proto: timeout")
	// ErrAborted: the session was aborted, by either side (see *AbortError).
	ErrAborted = errors.New("v2proto: aborted")
	// ErrRefused: negotiation refused the migration (see *RefusalError, *DeviceMismatchError).
	ErrRefused = errors.New("v2proto: migration refused")
	// ErrDeviceMismatch: the device trees differ fatally (SPEC §8).
	ErrDeviceMismatch = errors.New("v2proto: device trees differ")
	// ErrBusy: the peer is at capacity or already migrating this guest.
	ErrBusy = errors.New("v2proto: peer busy")
	// ErrTranscript: the transcript hashes differ (SPEC §7).
	ErrTranscript = errors.New("v2proto: transcript hash mismatch")

	// ErrTLSRequired: the peer requires TLS and this side is configured for plaintext.
	ErrTLSRequired = errors.New("the peer requires TLS but this side is configured for plaintext (insecure)")
	// ErrPlaintextPeer: this side requires TLS and the peer is configured for plaintext.
	ErrPlaintextPeer = errors.New("the peer is configured for plaintext (insecure) but this side requires TLS")
	// ErrUnknownAuthority: a certificate is not signed by a trusted CA (ca-cert.pem).
	ErrUnknownAuthority = errors.New("certificate signed by an unknown authority")
	// ErrCertificateExpired: a certificate has expired or is not yet valid.
	ErrCertificateExpired = errors.New("certificate expired or not yet valid")
	// ErrHostnameMismatch: the server certificate does not name the address dialled.
	ErrHostnameMismatch = errors.New("server certificate does not match the address dialled")
	// ErrNotAuthorized: the client certificate's DN is not in the server's allow-list.
	ErrNotAuthorized = errors.New("client certificate not authorized")
	// ErrBadCertificate: the peer rejected this side's certificate (no more detail available).
	ErrBadCertificate = errors.New("certificate rejected")
	// ErrNotMig2: the peer does not speak this protocol (wrong magic or garbage).
	ErrNotMig2 = errors.New("peer is not a mig2 v2 endpoint")
)

// IsAborted reports whether err is (or wraps) an Abort, sent or received.
func IsAborted(err error) bool { return errors.Is(err, ErrAborted) }

// IsRefused reports whether negotiation refused the migration (version, feature, capability,
// device trees, parameters), computed locally or reported by the peer.
func IsRefused(err error) bool { return errors.Is(err, ErrRefused) }

// IsDeviceMismatch reports whether the device trees differ fatally.
func IsDeviceMismatch(err error) bool { return errors.Is(err, ErrDeviceMismatch) }

// IsTimeout reports whether a deadline expired, here or at the peer.
func IsTimeout(err error) bool { return errors.Is(err, ErrTimeout) }

// IsBusy reports whether the peer refused because it is busy.
func IsBusy(err error) bool { return errors.Is(err, ErrBusy) }

// IsProtocol reports whether the peer violated the protocol (or we did, per the peer).
func IsProtocol(err error) bool { return errors.Is(err, ErrProtocol) }

// IsTLSMismatch reports whether one side is TLS and the other plaintext (SPEC §2.4).
func IsTLSMismatch(err error) bool {
	return errors.Is(err, ErrTLSRequired) || errors.Is(err, ErrPlaintextPeer)
}

// IsAuthFailure reports whether the connection failed on a certificate or authorization check.
func IsAuthFailure(err error) bool {
	for _, s := range []error{ErrUnknownAuthority, ErrCertificateExpired, ErrHostnameMismatch, ErrNotAuthorized, ErrBadCertificate} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// AbortCode is the reason carried by an Abort message (SPEC §4.9).
type AbortCode uint16

// Abort codes, SPEC §4.9.
const (
	AbortProtocol          AbortCode = 1
	AbortFrameTooLarge     AbortCode = 2
	AbortVersion           AbortCode = 3
	AbortFeature           AbortCode = 4
	AbortCapability        AbortCode = 5
	AbortDeviceMismatch    AbortCode = 6
	AbortAgreementMismatch AbortCode = 7
	AbortTranscript        AbortCode = 8
	AbortUnknownGuest      AbortCode = 9
	AbortBusy              AbortCode = 10
	AbortPolicy            AbortCode = 11
	AbortApplyFailed       AbortCode = 12
	AbortSourceFailed      AbortCode = 13
	AbortDestinationFailed AbortCode = 14
	AbortTimeout           AbortCode = 15
	AbortCancelled         AbortCode = 16
	AbortInternal          AbortCode = 17
	AbortRole              AbortCode = 18
	AbortParameter         AbortCode = 19
)

var abortNames = map[AbortCode]string{
	AbortProtocol:          "protocol",
	AbortFrameTooLarge:     "frame-too-large",
	AbortVersion:           "version",
	AbortFeature:           "feature",
	AbortCapability:        "capability",
	AbortDeviceMismatch:    "device-mismatch",
	AbortAgreementMismatch: "agreement-mismatch",
	AbortTranscript:        "transcript-mismatch",
	AbortUnknownGuest:      "unknown-guest",
	AbortBusy:              "busy",
	AbortPolicy:            "policy",
	AbortApplyFailed:       "apply-failed",
	AbortSourceFailed:      "source-failed",
	AbortDestinationFailed: "destination-failed",
	AbortTimeout:           "timeout",
	AbortCancelled:         "cancelled",
	AbortInternal:          "internal",
	AbortRole:              "role",
	AbortParameter:         "parameter",
}

// String returns the code's name from SPEC §4.9, or "code(N)" for an unknown code.
func (c AbortCode) String() string {
	if n, ok := abortNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Known reports whether the code is defined by this protocol version.
func (c AbortCode) Known() bool { _, ok := abortNames[c]; return ok }

// refusal reports whether the code is one of negotiation's refusals (SPEC §5).
func (c AbortCode) refusal() bool {
	switch c {
	case AbortVersion, AbortFeature, AbortCapability, AbortDeviceMismatch, AbortParameter, AbortUnknownGuest, AbortPolicy:
		return true
	}
	return false
}

// sentinel maps a code to the sentinel that errors.Is should also match, if any.
func (c AbortCode) sentinel() error {
	switch c {
	case AbortProtocol, AbortRole, AbortAgreementMismatch:
		return ErrProtocol
	case AbortFrameTooLarge:
		return ErrFrameTooLarge
	case AbortTimeout:
		return ErrTimeout
	case AbortBusy:
		return ErrBusy
	case AbortTranscript:
		return ErrTranscript
	case AbortDeviceMismatch:
		return ErrDeviceMismatch
	}
	return nil
}

// AbortError is an Abort, sent by this side (FromPeer false: Err holds the local cause) or
// received from the peer (FromPeer true).
type AbortError struct {
	Code     AbortCode
	Stage    Stage // the stage of the side that aborted
	Message  string
	FromPeer bool
	Err      error // local cause, if any (context.Canceled, a timeout, a decode error...)
}

func (e *AbortError) Error() string {
	var b strings.Builder
	b.WriteString("v2proto: ")
	if e.FromPeer {
		b.WriteString("peer aborted")
	} else {
		b.WriteString("aborted")
	}
	if e.Stage != "" {
		fmt.Fprintf(&b, " at stage %s", e.Stage)
	}
	fmt.Fprintf(&b, " (%s)", e.Code)
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil && (e.Message == "" || !strings.Contains(e.Message, e.Err.Error())) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *AbortError) Unwrap() error { return e.Err }

// Is matches ErrAborted, ErrRefused for refusal codes, and the code's own sentinel.
func (e *AbortError) Is(target error) bool {
	switch target {
	case ErrAborted:
		return true
	case ErrRefused:
		return e.Code.refusal()
	}
	s := e.Code.sentinel()
	return s != nil && s == target
}

// RefusalError is a failed negotiation (SPEC §5, §6): what could not be agreed, with what each
// side offered. Both sides compute the same RefusalError from the same Hello and Offer.
type RefusalError struct {
	Code        AbortCode
	What        string // e.g. "protocol version", `feature "device-tree"`, `capability "return-path"`
	Source      string // the source's offer, rendered
	Destination string // the destination's offer, rendered
	Detail      string
}

func (e *RefusalError) Error() string {
	s := fmt.Sprintf("v2proto: refused (%s): %s: source offers %s, destination offers %s", e.Code, e.What, e.Source, e.Destination)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is matches ErrRefused and the code's own sentinel.
func (e *RefusalError) Is(target error) bool {
	if target == ErrRefused {
		return true
	}
	s := e.Code.sentinel()
	return s != nil && s == target
}

// DeviceMismatchError is a refusal because the device trees differ fatally (SPEC §8). Diff holds
// every difference, fatal or not.
type DeviceMismatchError struct {
	Diff *Diff
}

func (e *DeviceMismatchError) Error() string {
	return "v2proto: refused (device-mismatch): " + e.Diff.String()
}

// Is matches ErrRefused and ErrDeviceMismatch.
func (e *DeviceMismatchError) Is(target error) bool {
	return target == ErrRefused || target == ErrDeviceMismatch
}

// UnexpectedMessageError is a message that the state machine does not accept in a stage
// (SPEC §9.1).
type UnexpectedMessageError struct {
	Stage Stage
	Want  []MsgType
	Got   MsgType
}

func (e *UnexpectedMessageError) Error() string {
	want := make([]string, len(e.Want))
	for i, w := range e.Want {
		want[i] = w.String()
	}
	return fmt.Sprintf("v2proto: unexpected %s at stage %s (want %s)", e.Got, e.Stage, strings.Join(want, " or "))
}

func (e *UnexpectedMessageError) Is(target error) bool { return target == ErrProtocol }

// ConnError is a failure to establish the transport (TCP, TLS, preambles): Reason is one of the
// sentinels above (ErrTLSRequired, ErrUnknownAuthority, ErrNotAuthorized, ErrBusy, ...), Remote
// says the peer reported it, Err is the underlying error.
type ConnError struct {
	Op     string // "dial" or "accept"
	Peer   string // the peer's address
	Reason error  // a sentinel
	Remote bool   // the peer detected the problem and told us
	Detail string // human explanation, e.g. "the agent's certificate is valid for a.example, not b.example"
	Err    error
}

func (e *ConnError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "v2proto: %s %s", e.Op, e.Peer)
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	} else if e.Reason != nil {
		b.WriteString(": " + e.Reason.Error())
	}
	if e.Err != nil && !strings.Contains(b.String(), e.Err.Error()) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *ConnError) Unwrap() []error {
	var errs []error
	if e.Reason != nil {
		errs = append(errs, e.Reason)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// CodeOf returns the Abort code that describes err: the code of an *AbortError or refusal,
// or a best guess from the sentinels; AbortInternal when nothing fits.
func CodeOf(err error) AbortCode {
	var ae *AbortError
	if errors.As(err, &ae) {
		return ae.Code
	}
	var re *RefusalError
	if errors.As(err, &re) {
		return re.Code
	}
	var de *DeviceMismatchError
	if errors.As(err, &de) {
		return AbortDeviceMismatch
	}
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		return AbortFrameTooLarge
	case errors.Is(err, ErrProtocol):
		return AbortProtocol
	case errors.Is(err, ErrTimeout):
		return AbortTimeout
	case errors.Is(err, ErrBusy):
		return AbortBusy
	case errors.Is(err, ErrTranscript):
		return AbortTranscript
	}
	return AbortInternal
}
