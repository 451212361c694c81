package driver

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/mig2/mig2/v2proto"
)

func TestLinkMbps(t *testing.T) {
	tcp := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }
	if got := linkMbps(tcp("127.0.0.1"), tcp("127.0.0.1")); got != v2proto.LinkSameHost {
		t.Errorf("loopback: %d, want same host", got)
	}
	if got := linkMbps(tcp("192.0.2.7"), tcp("192.0.2.7")); got != v2proto.LinkSameHost {
		t.Errorf("own address: %d, want same host", got)
	}
	if got := linkMbps(&net.UnixAddr{Name: "x"}, tcp("192.0.2.7")); got != 0 {
		t.Errorf("not TCP: %d, want unknown", got)
	}
	// An address this host does not have: no interface, speed unknown.
	if got := linkMbps(tcp("192.0.2.7"), tcp("198.51.100.9")); got != 0 {
		t.Errorf("foreign local address: %d, want unknown", got)
	}
}

func TestInterfaceMbps(t *testing.T) {
	dir := t.TempDir()
	old := sysClassNet
	sysClassNet = dir
	t.Cleanup(func() { sysClassNet = old })
	for name, content := range map[string]string{"eth0": "10000\n", "veth1": "-1\n", "odd": "fast\n"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "speed"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]uint32{"eth0": 10000, "veth1": 0, "odd": 0, "missing": 0} {
		if got := interfaceMbps(name); got != want {
			t.Errorf("%s: %d, want %d", name, got, want)
		}
	}
}

func TestSameHost(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:16520": true, "[::1]:16520": true, "localhost:16520": true,
		"192.0.2.7:16520": false, "dst.example:16520": false, "no-port": false,
	} {
		if got := sameHost(addr); got != want {
			t.Errorf("sameHost(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestMeasureMemory(t *testing.T) {
	tests := []struct {
		name string
		w    Wants
		tls  bool
		dest string
		want bool
	}{
		{"auto, plaintext, another host", Wants{}, false, "192.0.2.7:16520", true},
		{"auto by name, plaintext, a named host", Wants{Compression: "auto"}, false, "dst.example:16520", true},
		{"TLS: zstd whatever the memory", Wants{}, true, "192.0.2.7:16520", false},
		{"one host: copying wins", Wants{}, false, "127.0.0.1:16520", false},
		{"explicit method", Wants{Compression: "none"}, false, "192.0.2.7:16520", false},
	}
	for _, tc := range tests {
		if got := measureMemory(tc.w, tc.tls, tc.dest); got != tc.want {
			t.Errorf("%s: measureMemory = %v, want %v", tc.name, got, tc.want)
		}
	}
}
