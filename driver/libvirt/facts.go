package libvirt

import (
	"fmt"
	"runtime"

	golibvirt "libvirt.org/go/libvirt"

	"github.com/mig2/mig2/driver"
	"github.com/mig2/mig2/v2proto"
)

// versionString renders libvirt's packed version number (major*1e6 + minor*1e3 + micro).
func versionString(v uint32) string {
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
}

// libvirtCapabilities is what a libvirt of this version drives on QEMU for a parallel (multifd)
// migration: libvirt itself enables return-path and pause-before-switchover (FACTS.md), so they
// are capabilities of the libvirt path; multifd compression through libvirt's parameters needs
// libvirt 9.4.
func libvirtCapabilities(libVersion uint32) (caps, compression []string) {
	caps = []string{"multifd", "pause-before-switchover", "return-path", "postcopy-ram"}
	compression = []string{"none"}
	if libVersion >= 9004000 {
		compression = append(compression, "zlib", "zstd")
	}
	return caps, compression
}

// hostFacts describes a libvirt host for the handshake.
func hostFacts(conn *golibvirt.Connect) (v2proto.HostFacts, error) {
	lib, err := conn.GetLibVersion()
	if err != nil {
		return v2proto.HostFacts{}, fmt.Errorf("libvirt: version: %w", err)
	}
	hv, err := conn.GetVersion()
	if err != nil {
		return v2proto.HostFacts{}, fmt.Errorf("libvirt: hypervisor version: %w", err)
	}
	caps, comp := libvirtCapabilities(lib)
	f := v2proto.HostFacts{
		Mig2Version:  driver.Version + " (libvirt " + versionString(lib) + ")",
		QEMUVersion:  versionString(hv),
		Capabilities: caps,
		Compression:  comp,
		Cores:        uint32(runtime.NumCPU()),
	}
	if ni, err := conn.GetNodeInfo(); err == nil {
		f.MemoryBytes = ni.Memory << 10
		if ni.Cpus > 0 {
			f.Cores = uint32(ni.Cpus)
		}
	}
	if h, err := conn.GetHostname(); err == nil {
		f.Hostname = h
	}
	return f, nil
}
