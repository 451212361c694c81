package main

import (
	"errors"
	"fmt"
)

// Exit codes, one per error class. They are documented in `mig2 --help` and the README; scripts
// may rely on them.
const (
	exitOK           = 0
	exitInternal     = 1 // a bug or an unexpected error
	exitUsage        = 2 // bad flags or arguments
	exitIncompatible = 3 // refused before anything moved: device trees, versions, features, policy
	exitConnect      = 4 // the agent could not be reached, or TLS/authorization failed
	exitFailed       = 5 // the migration failed; the source guest is running
	exitCancelled    = 6 // cancelled (Ctrl-C, --timeout); the source guest is running
	exitGuestUnknown = 7 // the source guest's state could not be confirmed: look at it now
)

// exitCodeTable is printed in the help text; keep it in step with the constants.
const exitCodeTable = `Exit codes:
  0  success: the destination confirmed its guest runs
  1  internal error
  2  usage error (bad flag or argument)
  3  incompatible: refused before any RAM moved (device trees, versions, features)
  4  connection, TLS or authorization failure reaching the agent
  5  migration failed; the source guest is running
  6  cancelled or timed out; the source guest is running
  7  the source guest's state could not be confirmed: check it now`

// usageError marks errors the user can fix by changing the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// classifiers map an error to an exit code; the first that matches wins. Sub-command files add
// their own classes with registerExitClass.
var classifiers []func(error) (int, bool)

func registerExitClass(f func(error) (int, bool)) { classifiers = append(classifiers, f) }

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var es *exitStatus
	if errors.As(err, &es) {
		return es.code
	}
	for _, c := range classifiers {
		if code, ok := c(err); ok {
			return code
		}
	}
	return exitInternal
}
