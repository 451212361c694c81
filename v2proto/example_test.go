package v2proto_test

import (
	"fmt"

	"github.com/mig2/mig2/v2proto"
)

func ExampleNegotiateParams() {
	caps := []string{"multifd", "return-path", "pause-before-switchover", "postcopy-ram", "zero-copy-send"}
	src := v2proto.HostFacts{QEMUVersion: "7.2.0", Capabilities: caps, Compression: []string{"none", "zlib", "zstd"}, Cores: 16}
	dst := v2proto.HostFacts{QEMUVersion: "7.2.0", Capabilities: caps, Compression: []string{"none", "zlib", "zstd"}, Cores: 4}
	wants := v2proto.Wants{Channels: 16, Compression: "auto", Postcopy: true}
	hint := v2proto.Compressibility{Measured: true, Percent: 85}

	a := v2proto.NegotiateParams(wants, hint, true, &src, &dst, v2proto.Limits{MaxChannels: 8})
	fmt.Println(a)
	for _, adj := range a.Adjustments {
		fmt.Println(adj)
	}
	// Output:
	// protocol-version=0 channels=4 compression=zstd level=0 postcopy=false preempt=false zero-copy=false bandwidth=unlimited downtime=300ms tls=true features=[]
	// multifd-channels: asked 16, agreed 4 (destination-cores): destination allows at most 8; destination host has 4 cores
	// multifd-compression: asked auto, agreed zstd (auto): TLS stream: without compression QEMU sends a TLS record per page, zstd packs whole multifd packets, so it is faster even on memory that does not compress
	// postcopy-ram: asked true, agreed false (multifd-postcopy): v2 always uses multifd and multifd cannot be combined with postcopy before QEMU 10.1 (source QEMU 7.2.0: cannot, destination QEMU 7.2.0: cannot)
	// max-bandwidth: asked auto, agreed unlimited (auto): v2 lifts QEMU's 128 MiB/s default
	// downtime-limit: asked auto, agreed 300 (auto): QEMU's default downtime limit (ms)
}

func ExampleDiffTrees() {
	src := v2proto.DeviceTree{MachineType: "pc-q35-7.2", CPUModel: "qemu64", RAMBytes: 2 << 30, Devices: []v2proto.Device{
		{ID: "net0", Type: "virtio-net-pci", Props: map[string]string{"mac": "52:54:00:12:34:56", "netdev": "hostnet0"}},
		{ID: "console0", Type: "virtio-serial-pci"},
	}}
	dst := v2proto.DeviceTree{MachineType: "pc-q35-7.2", CPUModel: "qemu64", RAMBytes: 2 << 30, Devices: []v2proto.Device{
		{ID: "net0", Type: "virtio-net-pci", Props: map[string]string{"mac": "52:54:00:12:34:56", "netdev": "hostnet1"}},
	}}
	d := v2proto.DiffTrees(&src, &dst)
	fmt.Println(d)
	fmt.Println("fatal:", d.Fatal())
	// Output:
	// device trees differ between source and destination: 1 fatal, 1 informational
	//   FATAL device "console0" (virtio-serial-pci): missing on the destination
	//   info  device "net0" (virtio-net-pci): property "netdev": source "hostnet0", destination "hostnet1"
	// fatal: true
}
