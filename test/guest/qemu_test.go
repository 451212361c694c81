package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var testImage = Image{Kernel: "/img/vmlinux", Initrd: "/img/initrd.cpio.gz"}

func TestArgs(t *testing.T) {
	got, err := Options{Name: "src", Dir: "/tmp/qb1", Image: testImage, DirtyMiBps: 50}.Args()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-name", "src", "-accel", "tcg", "-machine", "q35", "-m", "512", "-smp", "1",
		"-nodefaults", "-nographic", "-display", "none", "-no-user-config",
		"-kernel", "/img/vmlinux", "-initrd", "/img/initrd.cpio.gz",
		"-append", "console=ttyS0 pti=on quiet panic=-1 qb_mem=256 qb_rate=50 qb_fill=rand",
		"-qmp", "unix:/tmp/qb1/src.qmp,server=on,wait=off",
		"-chardev", "socket,id=ser0,path=/tmp/qb1/src.serial,server=on,wait=off",
		"-serial", "chardev:ser0", "-no-reboot",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Args:\n got %q\nwant %q", got, want)
	}

	got, err = Options{Name: "dst", Dir: "/tmp/a,b", Image: testImage, MemMiB: 2048, TouchMiB: 1024, Fill: "text",
		CorruptAfter: 1500 * time.Millisecond, Heartbeat: 250 * time.Millisecond, VerifyEvery: 4, Incoming: true,
		Machine: "pc", ExtraArgs: []string{"-device", "virtio-rng-pci,id=rng0"}, KernelArgs: []string{"loglevel=4"}}.Args()
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Join(got, " ")
	for _, frag := range []string{
		"-machine pc ", "-m 2048 ",
		"-append console=ttyS0 pti=on quiet panic=-1 qb_mem=1024 qb_rate=0 qb_fill=text qb_hb=250 qb_corrupt=2 qb_verify=4 loglevel=4 ",
		"unix:/tmp/a,,b/dst.qmp,server=on", "path=/tmp/a,,b/dst.serial,", "-no-reboot -incoming defer -device virtio-rng-pci,id=rng0",
	} {
		if !strings.Contains(s+" ", frag) {
			t.Errorf("Args %q lacks %q", s, frag)
		}
	}

	got, err = Options{Dir: "/d", Image: testImage, TouchMiB: -1}.Args()
	if err != nil || !slices.Contains(got, "console=ttyS0 pti=on quiet panic=-1 qb_mem=0 qb_rate=0 qb_fill=rand") || !slices.Contains(got, "guest") {
		t.Errorf("idle guest Args = %q, %v", got, err)
	}
}

func TestArgsInvalid(t *testing.T) {
	for name, o := range map[string]Options{
		"no dir":       {Image: testImage},
		"no image":     {Dir: "/d"},
		"bad name":     {Dir: "/d", Image: testImage, Name: "a,b"},
		"bad fill":     {Dir: "/d", Image: testImage, Fill: "zero"},
		"too much":     {Dir: "/d", Image: testImage, MemMiB: 512, TouchMiB: 500},
		"neg rate":     {Dir: "/d", Image: testImage, DirtyMiBps: -1},
		"long path":    {Dir: "/" + strings.Repeat("x", 100), Image: testImage},
		"neg interval": {Dir: "/d", Image: testImage, Heartbeat: -time.Second},
	} {
		if args, err := o.Args(); err == nil {
			t.Errorf("%s: Args = %q, want an error", name, args)
		}
	}
}

func TestFindImage(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MIG2_GUEST_DIR", dir)
	if _, err := FindImage(); !errors.Is(err, ErrNoImage) || !strings.Contains(err.Error(), "make guest") {
		t.Fatalf("FindImage in an empty dir: %v", err)
	}
	for _, f := range []string{KernelFile, InitrdFile} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	img, err := FindImage()
	if err != nil || img.Kernel != filepath.Join(dir, KernelFile) || img.Initrd != filepath.Join(dir, InitrdFile) {
		t.Fatalf("FindImage = %+v, %v", img, err)
	}
}

func TestStartMissingQEMU(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{KernelFile, InitrdFile} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	_, err := Start(context.Background(), Options{Dir: dir, QEMUBinary: "no-such-qemu-binary",
		Image: Image{Kernel: filepath.Join(dir, KernelFile), Initrd: filepath.Join(dir, InitrdFile)}})
	if !errors.Is(err, ErrNoQEMU) {
		t.Fatalf("Start = %v, want ErrNoQEMU", err)
	}
}

// fakeGuest serves a unix socket that behaves like the guest's serial port:
// it prints the given lines, then answers "verify K" requests with the given
// bad page count.
func fakeGuest(t *testing.T, intro []string, bad int) (path string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "qbt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path = filepath.Join(dir, "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		for _, l := range intro {
			fmt.Fprintf(conn, "%s\r\n", l)
		}
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var k int
			if _, err := fmt.Sscanf(sc.Text(), "verify %d", &k); err != nil {
				fmt.Fprintf(conn, "QB error bad request %q\r\n", sc.Text())
				continue
			}
			first := -1
			if bad > 0 {
				first = 7
			}
			fmt.Fprintf(conn, "noise\r\nQB verify seq=1 bad=%d pages=100 first_bad=%d req=%d\r\n", bad, first, k+1000)
			fmt.Fprintf(conn, "QB verify seq=1 bad=%d pages=100 first_bad=%d req=%d\r\n", bad, first, k)
		}
	}()
	return path
}

func TestConsoleFake(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := fakeGuest(t, []string{
		"SeaBIOS noise",
		"Booting from ROM..QB start mem_mib=4 rate=0 fill=rand",
		"QB ready touched_mib=4 t=0.5",
		"QB hb seq=1 t=1.5 dirtied_mib=0 rate=0",
		"QB hb seq=2 t=2.5 dirtied_mib=0 rate=0",
		"QB corrupted page=7",
		strings.Repeat("y", 3*maxLine),
	}, 1)
	c, err := DialConsole(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.WaitReady(ctx); err != nil || r.TouchedMiB != 4 {
		t.Fatalf("WaitReady = %+v, %v", r, err)
	}
	if s, err := c.WaitStart(ctx); err != nil || s.MemMiB != 4 {
		t.Fatalf("WaitStart = %+v, %v", s, err)
	}
	if hb, err := c.WaitHeartbeat(ctx, 1); err != nil || hb.Seq != 2 {
		t.Fatalf("WaitHeartbeat(1) = %+v, %v", hb, err)
	}
	if p, err := c.WaitCorrupted(ctx); err != nil || p.Page != 7 {
		t.Fatalf("WaitCorrupted = %+v, %v", p, err)
	}
	for range 2 {
		v, err := c.Verify(ctx)
		if err != nil || v.Bad != 1 || v.FirstBad != 7 || v.OK() {
			t.Fatalf("Verify = %+v, %v", v, err)
		}
	}
	if lines := c.Lines(); lines[0] != "SeaBIOS noise" || len(lines) < 10 || len(lines[6]) != maxLine {
		t.Errorf("Lines = %d lines, first %q, long line split to %d bytes", len(lines), lines[0], len(lines[6]))
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := c.WaitHeartbeat(short, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitHeartbeat past the end = %v, want DeadlineExceeded", err)
	}
	if err := c.Send(ctx, "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitHeartbeat(ctx, 5); err == nil || !strings.Contains(err.Error(), "bad request") {
		t.Errorf("WaitHeartbeat after a guest error = %v", err)
	}
	c.Close()
	c.Close()
	if _, err := c.WaitHeartbeat(context.Background(), 5); err == nil {
		t.Errorf("WaitHeartbeat on a closed console succeeded")
	}
}

func TestConsoleClosedByPeer(t *testing.T) {
	dir, _ := os.MkdirTemp("", "qbt")
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			conn.Write([]byte("QB start mem_mib=1 rate=0 fill=rand\n"))
			conn.Close()
		}
	}()
	c, err := DialConsole(context.Background(), filepath.Join(dir, "s"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WaitReady(context.Background()); !errors.Is(err, ErrConsoleClosed) {
		t.Fatalf("WaitReady = %v, want ErrConsoleClosed", err)
	}
}
