package driver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// QEMU 7.2 exits when a migration fails to load and tells why only on its stderr; a plain-QEMU
// user rarely points mig2 at that file. So the destination finds it on its own: the process that
// listens on the guest's QMP socket is the QEMU, and its fd 2 names where its stderr goes.

// socketOwnerPID returns the pid of the process holding the listening unix socket bound at path.
func socketOwnerPID(procRoot, path string) (int, error) {
	inodes, err := unixSocketInodes(procRoot, path)
	if err != nil {
		return 0, err
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("driver: no process listens on unix socket %s", path)
	}
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, fmt.Errorf("driver: find the owner of %s: %w", path, err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join(procRoot, p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(procRoot, p.Name(), "fd", fd.Name()))
			if err != nil {
				continue
			}
			if inode, ok := strings.CutPrefix(target, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("driver: no process found holding unix socket %s", path)
}

// unixSocketInodes reads /proc/net/unix for the inodes of sockets bound to path.
func unixSocketInodes(procRoot, path string) (map[string]bool, error) {
	f, err := os.Open(filepath.Join(procRoot, "net", "unix"))
	if err != nil {
		return nil, fmt.Errorf("driver: read unix socket table: %w", err)
	}
	defer f.Close()
	return parseProcNetUnix(f, path)
}

// parseProcNetUnix returns the inodes of the entries of a /proc/net/unix table bound to path.
func parseProcNetUnix(r io.Reader, path string) (map[string]bool, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[0] == "Num" {
			continue
		}
		if f[7] == path || f[7] == abs {
			out[f[6]] = true
		}
	}
	return out, sc.Err()
}

// stderrFile returns the regular file that pid's stderr is written to, or an error if its stderr
// is not a file (a pipe or a terminal cannot be read back).
func stderrFile(procRoot string, pid int) (string, error) {
	target, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "fd", "2"))
	if err != nil {
		return "", fmt.Errorf("driver: stderr of pid %d: %w", pid, err)
	}
	st, err := os.Stat(target)
	if err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("driver: stderr of pid %d goes to %s, not a file mig2 can read back", pid, target)
	}
	return target, nil
}

// readTail returns at most max bytes from the end of the file at path, starting at offset
// (the file's size when mig2 started watching, so only this migration's lines are shown).
func readTail(path string, offset int64, max int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.Size() < offset { // truncated or rotated
		offset = 0
	}
	if st.Size()-offset > max {
		offset = st.Size() - max
	}
	b, err := io.ReadAll(io.NewSectionReader(f, offset, st.Size()-offset))
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return string(b), nil
}

// qemuErrorText picks the lines of a QEMU stderr excerpt that explain a failure: QEMU prefixes
// its errors with the program name ("qemu-system-x86_64: ..."). Without such lines the whole
// excerpt, trimmed, is returned.
func qemuErrorText(stderr string) string {
	var picked []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if strings.HasPrefix(l, "qemu-system-") || strings.HasPrefix(l, "qemu-kvm:") || strings.HasPrefix(l, "qemu:") {
			// Drop the program name, keep QEMU's words.
			if _, rest, ok := strings.Cut(l, ": "); ok {
				l = rest
			}
			picked = append(picked, l)
		}
	}
	if len(picked) == 0 {
		return strings.TrimSpace(stderr)
	}
	return strings.Join(picked, "\n")
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

var osHostname = os.Hostname
