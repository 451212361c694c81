// Package v1 is the legacy, non-multifd migration path: classic single-stream QEMU migration with
// today's semantics, no handshake and no agent. v2 is always multifd; a non-multifd migration is
// always v1, and the two never mix. It must never import v2proto.
package v1
