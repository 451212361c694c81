// Package lab builds two libvirt "hosts" on one machine for mig2's integration tests: each is a
// set of Linux namespaces (mount, UTS, network, PID, IPC) with its own /etc (an overlay), /run,
// /var/{lib,log,cache}/libvirt, host name, host UUID, x509 identity and libvirtd listening on
// tcp and tls; a veth pair joins the two and nothing else, so the machine's own network and
// libvirt are untouched and several labs can run side by side.
//
//	l, err := lab.Up(ctx, t.TempDir())   // ~3-5 s
//	defer l.Down()
//	a, b := l.Hosts[0], l.Hosts[1]
//	out, err := a.Exec(ctx, "virsh", "-c", b.URI, "version")            // qemu+tcp://10.77.0.2/system
//	out, err = a.Exec(ctx, "virsh", "migrate", "--live", "g", b.TLSURI) // qemu+tls://hostb.lab/system
//
// The per-host provisioning is vagrant/provision.sh, the Vagrant lab's own provisioning so that the lab and the
// Vagrant boxes are configured by the same code. Down signals only the lab's own processes, by
// PID; if the test process dies first, the namespaces collapse by themselves (Pdeathsig and
// unshare --kill-child). Needs root, util-linux, iproute2, gnutls-bin and libvirt-daemon-system.
// MIG2_LAB_KEEP=1 keeps the lab's directory (configuration, libvirtd.log, QEMU logs) after Down.
package lab
