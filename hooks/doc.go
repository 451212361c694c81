// Package hooks is mig2's libvirt qemu hook entry: it parses the hook's argv and the domain XML on
// stdin, asks the local mig2 agent over a unix socket whether an incoming migration was
// negotiated and is compatible, and answers libvirt. It never calls back into libvirt (libvirt
// deadlocks) and never links the libvirt client library.
//
// # How libvirt runs it
//
// libvirt runs /etc/libvirt/hooks/qemu and every executable in /etc/libvirt/hooks/qemu.d/ as
// `PROGRAM DOMAIN OPERATION SUB-OPERATION EXTRA` ("-" for an empty word), the domain XML on
// stdin, with an environment of LC_ALL=C, PATH and HOME only. On the destination of a migration
// it calls, in order: migrate begin (the incoming migratable XML; stdout, if any, would replace
// it), prepare begin, start begin, started begin (before RAM moves); release end when the guest
// goes away. A non-zero exit aborts the operation and the user on the source reads
//
//	error: Hook script execution failed: internal error: Child process (LC_ALL=C PATH=... \
//	  /etc/libvirt/hooks/qemu g1 migrate begin -) unexpected exit status 1: <the hook's stderr>
//
// (seen with libvirt 9.0 in the lab: lab_integration_test.go). A hook file created after
// libvirtd started is ignored until libvirtd restarts.
//
// # What it decides
//
// Only `migrate begin` can refuse (Decide has the table): the agent allows → exit 0 and nothing
// written; the agent refuses → exit 1 and one line "mig2: <reason>"; the agent cannot be asked
// (no socket, nobody listening, no answer within DefaultTimeout, an answer that does not decode)
// or the XML does not parse → the AgentDownPolicy decides. Every other call passes at once, so
// the hook never stands between libvirt and starting or stopping a guest; `release end` also
// tells the agent the guest went away. The hook answers within 1 s whatever the agent does.
//
// The default AgentDownPolicy is AllowWhenAgentDown: an agent that is down must not block the
// plain virsh migrations an admin never asked mig2 to police, and a v2 migration cannot run
// without the agent anyway. Hosts whose agent runs with policy require-v2 should install the
// hook with RefuseWhenAgentDown (`--when-agent-down refuse`), so that the policy holds while the
// agent is down too.
//
// # Wiring
//
// The hook: `mig2 hook install` writes a wrapper such as
//
//	#!/bin/sh
//	exec /usr/bin/mig2 hook --socket /run/mig2/hook.sock --when-agent-down refuse "$0" "$@"
//
// to /etc/libvirt/hooks/qemu.d/mig2 (or /etc/libvirt/hooks/qemu), and `mig2 hook` calls
//
//	os.Exit(hooks.Run(ctx, hooks.Config{Asker: &hooks.Client{Socket: sock}, WhenAgentDown: p},
//	        args, os.Stdin, os.Stdout, os.Stderr))
//
// with args = the wrapper's "$0" "$@" (IsHookPath tells a mig2 binary linked there directly).
// The agent: ListenUnix(DefaultSocket) and Server{Handler: ...}.Serve(ctx, ln); the handler
// gets a Request (ReqMigrateBegin with the XML, or ReqRelease) and must answer well within
// DefaultTimeout without calling libvirt for that domain. wire.go describes the protocol.
package hooks
