// Package v2proto implements the mig2 v2 migration handshake: a source and a destination agree
// every migration setting that must match on both QEMUs, compare device trees, and then run and
// supervise the migration together, over one mutually authenticated TLS 1.3 connection.
//
// SPEC.md beside this file is the normative description (framing, messages, negotiation rules,
// device-tree diff, state machine, deadlines, security); comments cite it as "SPEC §N".
//
// The package knows nothing of QMP, libvirt or the legacy v1 path: it owns its types (Hello,
// Offer, Agreement, DeviceTree, ...) and the caller converts.
//
// Source side (the migrating host dials the destination's agent):
//
//	src, err := v2proto.Dial(ctx, "dst.example:16520", cfg)
//	agreement, err := src.Handshake(ctx, &v2proto.Hello{...})  // Hello, Offer, Agree
//	ready, err := src.ReadReady(ctx)                            // destination applied the set
//	// configure the source QEMU from agreement, then:
//	err = src.SendStart(ctx)                                    // and run `migrate ready.MigrationURI`
//	for { m, err := src.Recv(ctx) ... }                         // *Progress, *Result
//
// Destination side (the agent):
//
//	l, err := v2proto.Listen(":16520", cfg)
//	dst, err := l.AcceptDestination(ctx, logError)
//	hello, err := dst.ReadHello(ctx)
//	err = dst.SendOffer(ctx, &v2proto.Offer{...})               // or dst.Abort(ctx, AbortUnknownGuest, ...)
//	agreement, err := dst.ReadAgree(ctx)                        // checked against our own Negotiate
//	// apply agreement to the destination QEMU, migrate-incoming, then:
//	err = dst.SendReady(ctx, "tcp:192.0.2.7:49152")
//	err = dst.ReadStart(ctx)
//	for { m, err := dst.Recv(ctx) ... }                         // *Progress, *Switchover
//	err = dst.SendResult(ctx, &v2proto.Result{Outcome: v2proto.OutcomeRunning})
//
// Negotiation (Negotiate, NegotiateParams, NegotiateVersion, NegotiateFeatures) and the device
// tree diff (DiffTrees) are pure functions. Errors are typed (*AbortError, *RefusalError,
// *DeviceMismatchError, *ConnError) and match the package's sentinels with errors.Is; the IsXxx
// helpers are shorthands. Library code does not print: pass a logrus.FieldLogger in Config.
//
// The subpackage testcerts writes test credentials in the ca-cert.pem/server-cert.pem/...
// layout that QEMU's tls-creds-x509 and libvirt use.
package v2proto
