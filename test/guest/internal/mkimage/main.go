// Command mkimage is the part of test/guest/build.sh that needs more than
// the shell: it writes the guest's initramfs and cuts the kernel image.
//
//	mkimage cpio OUT.cpio.gz INIT    gzip'd newc cpio: /dev, /dev/console (5:1), /proc, /init
//	mkimage lz4payload VMLINUZ OUT   copy VMLINUZ from the LZ4 legacy magic (02 21 4c 18) on
//	mkimage checkelf FILE            fail unless FILE is an x86-64 ELF executable
//
// It uses only the standard library so that a fresh machine with Go can
// build the guest without python or file(1).
package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("mkimage: usage: mkimage cpio|lz4payload|checkelf ARGS")
	}
	switch cmd, a := args[0], args[1:]; {
	case cmd == "cpio" && len(a) == 2:
		init, err := os.ReadFile(a[1])
		if err != nil {
			return fmt.Errorf("mkimage: %w", err)
		}
		return writeFileAtomic(a[0], func(w io.Writer) error { return writeInitramfs(w, init) })
	case cmd == "lz4payload" && len(a) == 2:
		img, err := os.ReadFile(a[0])
		if err != nil {
			return fmt.Errorf("mkimage: %w", err)
		}
		payload, err := lz4Payload(img)
		if err != nil {
			return err
		}
		return writeFileAtomic(a[1], func(w io.Writer) error { _, err := w.Write(payload); return err })
	case cmd == "checkelf" && len(a) == 1:
		return checkELF(a[0])
	default:
		return fmt.Errorf("mkimage: bad arguments %q", args)
	}
}

func writeFileAtomic(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("mkimage: %w", err)
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("mkimage: write %s: %w", path, err)
	}
	return nil
}

// lz4Magic starts an LZ4 legacy frame, the format of Debian's compressed kernels.
var lz4Magic = []byte{0x02, 0x21, 0x4c, 0x18}

// lz4Payload returns img from the first LZ4 legacy frame magic on.
func lz4Payload(img []byte) ([]byte, error) {
	i := bytes.Index(img, lz4Magic)
	if i <= 0 {
		return nil, errors.New("mkimage: no LZ4 payload in kernel image (is it LZ4-compressed?)")
	}
	return img[i:], nil
}

func checkELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("mkimage: %s is not an ELF file: %w", path, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return fmt.Errorf("mkimage: %s is %v %v %v, want a 64-bit x86-64 executable", path, f.Class, f.Machine, f.Type)
	}
	return nil
}

// cpioEntry is one newc archive member.
type cpioEntry struct {
	name         string
	mode         uint32
	data         []byte
	nlink        uint32
	rmajor, rmin uint32
}

const (
	sIFDIR = 0o040000
	sIFCHR = 0o020000
	sIFREG = 0o100000
)

// initramfsEntries lists the initramfs: /dev with a console node (so the
// kernel can open it before /init mounts devtmpfs), /proc and /init.
func initramfsEntries(init []byte) []cpioEntry {
	return []cpioEntry{
		{name: "dev", mode: sIFDIR | 0o755, nlink: 2},
		{name: "dev/console", mode: sIFCHR | 0o600, nlink: 1, rmajor: 5, rmin: 1},
		{name: "proc", mode: sIFDIR | 0o755, nlink: 2},
		{name: "init", mode: sIFREG | 0o755, nlink: 1, data: init},
	}
}

func writeInitramfs(w io.Writer, init []byte) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := writeCpio(zw, initramfsEntries(init)); err != nil {
		return err
	}
	return zw.Close()
}

// writeCpio writes entries as a newc ("070701") archive with its trailer.
// Ownership is root, mtime 0, so the output is reproducible.
func writeCpio(w io.Writer, entries []cpioEntry) error {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	ino := uint32(1000)
	put := func(e cpioEntry) {
		ino++
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.mode, 0, 0, e.nlink, 0, len(e.data), 0, 0, e.rmajor, e.rmin, len(e.name)+1, 0)
		b.WriteString(e.name)
		b.WriteByte(0)
		pad()
		b.Write(e.data)
		pad()
	}
	for _, e := range entries {
		put(e)
	}
	put(cpioEntry{name: "TRAILER!!!", nlink: 1})
	_, err := w.Write(b.Bytes())
	return err
}
