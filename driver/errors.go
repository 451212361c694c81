package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/mig2/mig2/v2proto"
)

// Class is an error's kind as the user sees it; cmd maps each to an exit code.
type Class int

const (
	ClassInternal     Class = iota // a bug or an unexpected error
	ClassIncompatible              // refused before anything moved: device trees, versions, features, policy
	ClassConnect                   // the agent or a QMP socket could not be reached, or TLS/authorization failed
	ClassFailed                    // the migration failed; the source guest is running
	ClassCancelled                 // cancelled or timed out; the source guest is running
	ClassGuestUnknown              // the source guest's state could not be confirmed
)

// ConnectError says mig2 could not reach, or authenticate with, something it needs. What
// completes "cannot …", e.g. "reach the mig2 agent at dst:16520".
type ConnectError struct {
	What string
	Err  error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("driver: cannot %s: %v", e.What, e.Err)
}
func (e *ConnectError) Unwrap() error { return e.Err }

// MigrationError is a migration that did not succeed. SourceRunning says whether the source guest
// was seen running afterwards; DestError is the destination QEMU's own words, when it had any.
type MigrationError struct {
	Stage         string // where it failed: preflight, handshake, apply, migrate, switchover, confirm
	SourceRunning bool
	SourceNote    string // e.g. "resumed by mig2"
	DestError     string
	Err           error
}

func (e *MigrationError) Error() string {
	msg := fmt.Sprintf("driver: migration failed during %s: %v", e.Stage, e.Err)
	if e.DestError != "" {
		msg += "\n  the destination QEMU said: " + indentLines(e.DestError, "    ")
	}
	if e.SourceRunning {
		msg += "\n  the source guest is running"
		if e.SourceNote != "" {
			msg += " (" + e.SourceNote + ")"
		}
	} else {
		msg += "\n  WARNING: the source guest could not be confirmed running: check it now"
		if e.SourceNote != "" {
			msg += " (" + e.SourceNote + ")"
		}
	}
	return msg
}

func (e *MigrationError) Unwrap() error { return e.Err }

func indentLines(s, indent string) string {
	out := ""
	for i, l := range splitLines(s) {
		if i > 0 {
			out += "\n" + indent
		}
		out += l
	}
	return out
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// ErrStaleSource marks a source whose guest already migrated away.
var ErrStaleSource = errors.New("driver: this guest has already migrated away (its QEMU is in postmigrate); it must not be resumed or migrated again")

// Classify tells which class err belongs to.
func Classify(err error) Class {
	var me *MigrationError
	if errors.As(err, &me) && !me.SourceRunning {
		return ClassGuestUnknown
	}
	// A connection that timed out is a connection failure, not a cancel: check it first (the
	// caller returns ctx.Err() itself when the user cancelled).
	var ce *ConnectError
	var vc *v2proto.ConnError
	if errors.As(err, &ce) || errors.As(err, &vc) {
		return ClassConnect
	}
	switch {
	case err == nil:
		return ClassInternal
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ClassCancelled
	case errors.Is(err, v2proto.ErrRefused), errors.Is(err, v2proto.ErrDeviceMismatch), errors.Is(err, ErrStaleSource):
		return ClassIncompatible
	}
	var ae *v2proto.AbortError
	if errors.As(err, &ae) && ae.Code == v2proto.AbortCancelled {
		return ClassCancelled
	}
	if me != nil {
		return ClassFailed
	}
	return ClassInternal
}
