package qmp

import (
	"errors"
	"io"
)

// QMP error classes (QEMU's ErrorClass enum). QEMU reports almost every
// failure as GenericError; the others are kept for compatibility and carry
// meaning callers can branch on.
const (
	ClassGenericError    = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassKVMMissingCap   = "KVMMissingCap"
)

// Error is a QMP error reply: QEMU answered the command with
// {"error": {"class": ..., "desc": ...}}. Unlike go-qemu's SocketMonitor, the
// class is kept and an empty description is still an error.
type Error struct {
	Class   string // QMP error class, e.g. ClassCommandNotFound
	Desc    string // QEMU's human-readable description
	Command string // the command that failed, when known
}

func (e *Error) Error() string {
	msg := "qmp: "
	if e.Command != "" {
		msg += e.Command + ": "
	}
	class := e.Class
	if class == "" {
		class = "error"
	}
	msg += class
	if e.Desc != "" {
		msg += ": " + e.Desc
	}
	return msg
}

// Is reports whether target is a class sentinel (an *Error with only Class
// set, such as ErrCommandNotFound) of the same class as e, so that
// errors.Is(err, qmp.ErrCommandNotFound) works through any wrapping.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t.Desc != "" || t.Command != "" {
		return false
	}
	return t.Class == e.Class
}

// Class sentinels for errors.Is.
var (
	ErrGenericError    error = &Error{Class: ClassGenericError}
	ErrCommandNotFound error = &Error{Class: ClassCommandNotFound}
	ErrDeviceNotActive error = &Error{Class: ClassDeviceNotActive}
	ErrDeviceNotFound  error = &Error{Class: ClassDeviceNotFound}
	ErrKVMMissingCap   error = &Error{Class: ClassKVMMissingCap}
)

// IsCommandNotFound reports whether err is a QMP CommandNotFound error, the
// answer of a QEMU that does not know a command (feature probing).
func IsCommandNotFound(err error) bool { return errors.Is(err, ErrCommandNotFound) }

// ErrorClass returns the QMP error class carried by err, or "" when err is
// not (and does not wrap) a *Error.
func ErrorClass(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ""
}

// ErrClosed is returned (wrapped, with the cause) by every call on a monitor
// connection that is gone. errors.Is(err, ErrClosed) is true, and so is
// errors.Is(err, io.EOF) when QEMU closed the monitor itself.
var ErrClosed = errors.New("qmp: connection closed")

// ErrQEMUClosed is the cause recorded when QEMU closed the monitor socket
// (QEMU exited, was killed, or dropped the client): errors.Is(err,
// ErrQEMUClosed) is then true, and so is errors.Is(err, io.EOF) when the
// socket ended with EOF rather than a reset.
var ErrQEMUClosed = errors.New("QEMU closed the monitor")

// qemuClosed is the cause for a socket QEMU closed, with the read error.
type qemuClosed struct{ err error }

func (e *qemuClosed) Error() string {
	if errors.Is(e.err, io.EOF) {
		return ErrQEMUClosed.Error()
	}
	return ErrQEMUClosed.Error() + " (" + e.err.Error() + ")"
}

func (e *qemuClosed) Unwrap() []error { return []error{ErrQEMUClosed, e.err} }

// errClosedByClient is the cause recorded when the caller closed the Conn.
var errClosedByClient = errors.New("closed by the client")

// ErrOOBDisabled is returned by ExecuteOOB when out-of-band execution was not
// negotiated (see WithOOB).
var ErrOOBDisabled = errors.New("qmp: out-of-band execution not enabled on this connection")

// closedError is what calls on a dead connection return.
type closedError struct {
	cmd   string
	cause error
}

func (e *closedError) Error() string {
	msg := "qmp: "
	if e.cmd != "" {
		msg += e.cmd + ": "
	}
	msg += "connection closed"
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *closedError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrClosed}
	}
	return []error{ErrClosed, e.cause}
}
