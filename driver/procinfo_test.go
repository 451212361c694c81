package driver

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProcNetUnix(t *testing.T) {
	table := `Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/a.qmp
0000000000000000: 00000003 00000000 00000000 0001 03 4243 /run/a.qmp
0000000000000000: 00000002 00000000 00010000 0001 01 9999 /run/b.qmp
0000000000000000: 00000002 00000000 00010000 0001 01 1
`
	got, err := parseProcNetUnix(strings.NewReader(table), "/run/a.qmp")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got["4242"] || !got["4243"] {
		t.Fatalf("got %v, want inodes 4242 and 4243", got)
	}
}

// TestSocketOwnerAndStderr finds this very test process through a socket it listens on, and its
// stderr when redirected to a file.
func TestSocketOwnerAndStderr(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pid, err := socketOwnerPID("/proc", path)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Fatalf("owner pid %d, want %d", pid, os.Getpid())
	}
	if _, err := socketOwnerPID("/proc", filepath.Join(dir, "none.sock")); err == nil {
		t.Fatal("a socket nobody listens on has an owner")
	}
}

func TestReadTailAndErrorText(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qemu.log")
	old := "qemu-system-x86_64: old noise from an earlier run\n"
	now := "some info line\nqemu-system-x86_64: Unknown savevm section or instance '0000:00:02.0/virtio-blk' 0. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices\nqemu-system-x86_64: load of migration failed: Invalid argument\n"
	if err := os.WriteFile(path, []byte(old+now), 0o644); err != nil {
		t.Fatal(err)
	}
	tail, err := readTail(path, int64(len(old)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if tail != now {
		t.Fatalf("tail = %q, want only this migration's lines", tail)
	}
	got := qemuErrorText(tail)
	want := "Unknown savevm section or instance '0000:00:02.0/virtio-blk' 0. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices\nload of migration failed: Invalid argument"
	if got != want {
		t.Fatalf("qemuErrorText = %q\nwant %q", got, want)
	}
	if got := qemuErrorText("  plain words \n"); got != "plain words" {
		t.Fatalf("fallback = %q", got)
	}
	short, _ := readTail(path, 0, 10)
	if len(short) != 10 {
		t.Fatalf("max not honoured: %q", short)
	}
}
