// Package libvirtqmp speaks QMP to the QEMU of a libvirt domain through
// libvirt itself (libvirt.org/go/libvirt): commands with
// virDomainQemuMonitorCommand, events with
// virConnectDomainQemuMonitorEventRegister. It is the only mig2 package that
// imports the libvirt binding, so package qmp and everything that only needs
// QMP stay pure Go; building it needs cgo, gcc, pkg-config and libvirt-dev
// (or -tags libvirt_dlopen, which loads libvirt.so.0 at run time).
//
//	mon := libvirtqmp.New(dom, libvirtqmp.WithConnect(conn))
//	defer mon.Close()
//	if err := mon.Connect(); err != nil { ... } // events
//	tree, err := qmp.ReadDeviceTree(ctx, mon)
//
// What libvirt does differently from a QMP socket, and how this package
// copes (FACTS.md):
//
//   - A QMP error comes back inside the output string with no libvirt
//     error. Execute parses the output with qmp.DecodeReply and returns a
//     *qmp.Error with the class, like *qmp.Conn does.
//   - libvirt calls take no context and cannot be interrupted. Execute
//     returns when ctx ends and leaves the call to finish in a goroutine the
//     Monitor owns; Close waits for it. libvirt's own monitor timeout bounds
//     it.
//   - Events: libvirt delivers them on its event-loop goroutine, which must
//     not block. The callback only hands the event to a qmp.EventHub, whose
//     subscriptions have bounded buffers and count what they drop. The
//     caller owns the event loop: libvirt.EventRegisterDefaultImpl before
//     opening the connection, libvirt.EventRunDefaultImpl in a loop.
//     Registration uses event ".*" with the regex flag (an empty name
//     matches nothing). Unlike go-libvirt's LibvirtRPCMonitor, events without
//     data (STOP, RESUME) are delivered.
//   - The Go binding has no virDomainGetConnect, so the connection needed
//     for events is passed with WithConnect.
//   - Every command marks the domain tainted "custom-monitor". mig2 uses
//     this path only for read-only queries on libvirt guests (device tree,
//     capability discovery): libvirt resets migration capabilities itself
//     during its migration job, so setting them behind its back is futile.
//   - There is no out-of-band execution through libvirt.
package libvirtqmp
