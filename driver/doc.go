// Package driver owns a guest on one host and runs mig2's migrations for it.
//
// A driver gathers a guest's facts (QEMU version, the migration capabilities, parameters and
// compression methods its QEMU supports, host cores and memory) and its device tree, applies an
// agreed v2 set to its QEMU, starts or accepts the migration and follows it to a verified end.
// The plain-QEMU backend speaks QMP (package qmp); the libvirt backend lives in driver/libvirt.
//
// driver converts between QMP's view of a guest and v2proto's own types; v2proto knows nothing
// of QMP or libvirt. Dependencies point one way: cmd → driver → v2proto, fallback/v1, qmp.
package driver
