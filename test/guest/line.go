package guest

import "github.com/mig2/mig2/test/guest/qbline"

// The guest's console lines, as parsed by ParseLine (see package qbline).
type (
	Line         = qbline.Line
	StartLine    = qbline.Start
	Ready        = qbline.Ready
	Heartbeat    = qbline.Heartbeat
	VerifyResult = qbline.Verify
	Corrupted    = qbline.Corrupted
	GuestError   = qbline.GuestError
)

// ParseLine parses one console line into a *StartLine, *Ready, *Heartbeat,
// *VerifyResult, *Corrupted or *GuestError. Lines that are not QB lines
// (kernel messages, firmware output) yield qbline.ErrNotProtocol; malformed QB
// lines yield a *qbline.ParseError.
func ParseLine(s string) (Line, error) { return qbline.Parse(s) }
