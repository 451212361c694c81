// Package integration holds mig2's end-to-end tests: real QEMU 7.2 (TCG) running the
// self-checking test guest, the real mig2 binary as agent and as source, real TLS certificates.
// No mocks. Run with `make test-integration` (build tag "integration").
package integration
