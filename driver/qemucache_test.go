package driver

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mig2/mig2/qmp"
)

func TestStatStartTime(t *testing.T) {
	for _, tc := range []struct {
		line, want string
		ok         bool
	}{
		{"4242 (qemu-system-x86) S 1 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 4 0 123456 1 2", "123456", true},
		{"7 (a (weird) name) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 1 2", "99", true},
		{"7 (short) R 1", "", false},
		{"no parenthesis at all", "", false},
	} {
		got, err := statStartTime(tc.line)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("statStartTime(%q) = %q, %v; want %q ok=%v", tc.line, got, err, tc.want, tc.ok)
		}
	}
	// This process: start time is a number and stays the same.
	p, err := processIdentity("/proc", os.Getpid())
	if err != nil || p.Start == "" || p.Exe == "" {
		t.Fatalf("processIdentity(self) = %+v, %v", p, err)
	}
	if _, err := strconv.ParseUint(p.Start, 10, 64); err != nil {
		t.Fatalf("start time %q: %v", p.Start, err)
	}
	if q, _ := processIdentity("/proc", os.Getpid()); q != p {
		t.Fatalf("identity changed: %+v then %+v", p, q)
	}
}

func TestParseGPA2HVA(t *testing.T) {
	v, err := parseGPA2HVA("Host virtual address for 0x100000 (pc.ram) is 0x7f2a1c100000\r\n")
	if err != nil || v != 0x7f2a1c100000 {
		t.Fatalf("got %#x, %v", v, err)
	}
	for _, bad := range []string{"", "No memory is mapped at address 0x100000\r\n", "Host virtual address for 0x1 (pc.ram) is zz"} {
		if _, err := parseGPA2HVA(bad); err == nil {
			t.Errorf("parseGPA2HVA(%q): no error", bad)
		}
	}
}

func TestSampleAddrs(t *testing.T) {
	addrs, err := sampleAddrs(2 << 30)
	if err != nil || len(addrs) != sampleChunks {
		t.Fatalf("%v %v", addrs, err)
	}
	for i, a := range addrs {
		if a%pageSize != 0 || a < 1<<20 || a+sampleChunkSize > 2<<30 || (i > 0 && a <= addrs[i-1]) {
			t.Fatalf("bad sample address %#x at %d: %#x", a, i, addrs)
		}
	}
	if _, err := sampleAddrs(1 << 20); err == nil {
		t.Fatal("a 1 MiB guest was sampled")
	}
}

func TestCacheStoreLoadPrune(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(cacheDirEnv, dir)
	self, err := processIdentity("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	base := &qmp.TreeBase{Version: qmp.DeviceTreeVersion, MachineType: "pc-q35-7.2", Devices: []qmp.Device{{Path: "/machine/q35", Type: "q35-pcihost"}}}
	cacheStore(self.processKey(), base)
	gone := qemuProcess{PID: 1 << 22, Start: "1"} // no such pid
	cacheStore(gone.processKey(), base)
	var back qmp.TreeBase
	if !cacheLoad(self.processKey(), &back) || back.MachineType != "pc-q35-7.2" || len(back.Devices) != 1 {
		t.Fatalf("load: %+v", back)
	}
	pruneTreeCache("/proc")
	if _, err := os.Stat(filepath.Join(dir, gone.processKey())); !os.IsNotExist(err) {
		t.Fatalf("the entry of a process that is gone was kept: %v", err)
	}
	if !cacheLoad(self.processKey(), &back) {
		t.Fatal("the entry of a live process was pruned")
	}
	// Same binary and version: same key; another version: another key.
	if self.binaryKey("7.2.0") != self.binaryKey("7.2.0") || self.binaryKey("7.2.0") == self.binaryKey("8.0.0") {
		t.Fatal("binary keys")
	}
	if cacheLoad("missing.json", &back) {
		t.Fatal("loaded a missing entry")
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cacheLoad("bad.json", &back) {
		t.Fatal("loaded a corrupt entry")
	}
}

func TestOneMapping(t *testing.T) {
	maps := "55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64\n" +
		"7f2a1c000000-7f2a9c000000 rw-p 00000000 00:00 0 \n"
	for _, tc := range []struct {
		from, to uint64
		want     bool
	}{
		{0x7f2a1c100000, 0x7f2a9c000000, true},
		{0x7f2a1c100000, 0x7f2a9c000001, false}, // runs past the mapping
		{0x55d0c0000000, 0x55d0c0000100, true},
		{0x1000, 0x2000, false},
	} {
		if got := oneMapping(maps, tc.from, tc.to); got != tc.want {
			t.Errorf("oneMapping(%#x, %#x) = %v", tc.from, tc.to, got)
		}
	}
}
