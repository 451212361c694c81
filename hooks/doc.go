// Package hooks is mig2's libvirt qemu hook entry: it parses the hook's argv and the domain XML on
// stdin, asks the local mig2 agent over a unix socket whether an incoming migration was
// negotiated and is compatible, and answers libvirt. It never calls back into libvirt (libvirt
// deadlocks) and never links the libvirt client library.
package hooks
