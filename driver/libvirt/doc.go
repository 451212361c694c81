// Package libvirt runs mig2's v2 migrations for libvirt-managed guests.
//
// libvirt resets every migration capability itself during a migration job, so mig2 never sets
// capabilities behind its back: the agreed set becomes libvirt's own typed migration parameters
// (parallel connections, compression, TLS, postcopy, bandwidth) on a peer-to-peer MigrateToURI3.
// Device trees come from the domain XML (the source's, and the one the destination will
// create), filtered on the destination by its domain capabilities and checked against its CPU
// with CompareHypervisorCPU. QMP is used only with --deep, through QemuMonitorCommand, which
// marks the domain tainted "custom-monitor".
package libvirt
