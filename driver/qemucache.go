package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/v2proto"
)

// Pre-flight must stay under 100 ms (issue 8), and two readings dominate it: the QMP schema
// (~250 KB, 50-100 ms with the guest busy) and the QOM walk of the device tree (~150 requests).
// Neither needs repeating:
//   - the schema is a property of the QEMU binary. mig2 keeps what it derives from it (parameter
//     names, compression methods) keyed by the binary's identity and version, as libvirt keeps
//     its QEMU capabilities cache keyed by the binary (/var/cache/libvirt/qemu/capabilities);
//   - the built-in part of the device tree cannot change while a QEMU process runs
//     (qmp.TreeBase); it is kept per process (pid and start time). The hot-pluggable devices,
//     memory backends and vCPUs are read every time.
// Both are found through the QMP socket's peer (SO_PEERCRED) and /proc, so they apply to QEMUs
// on this host reached through their own socket; anything else is read in full. Entries are
// written atomically (rename), so concurrent mig2 processes share the cache safely; a missing,
// stale or unreadable entry only means a full read.

// cacheDirEnv overrides where the cache lives.
const cacheDirEnv = "MIG2_CACHE_DIR"

// cacheDir is $MIG2_CACHE_DIR, /var/cache/mig2 for root (shared by the agent and the CLI, like
// libvirt's own cache), else the user's cache directory.
func cacheDir() string {
	if d := os.Getenv(cacheDirEnv); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/mig2"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mig2")
	}
	return ""
}

// qemuProcess identifies one QEMU process and its binary.
type qemuProcess struct {
	PID   int
	Start string // start time in clock ticks since boot (/proc/PID/stat field 22)
	Exe   string // the binary: device, inode, size and modification time
}

// identifyQEMU reads the identity of the process at the other end of a QMP socket.
func identifyQEMU(ex qmp.Executor) (qemuProcess, bool) {
	c, ok := ex.(*qmp.Conn)
	if !ok {
		return qemuProcess{}, false
	}
	pid := c.PeerPID()
	if pid <= 0 {
		return qemuProcess{}, false
	}
	p, err := processIdentity("/proc", pid)
	return p, err == nil
}

func processIdentity(procRoot string, pid int) (qemuProcess, error) {
	stat, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return qemuProcess{}, err
	}
	start, err := statStartTime(string(stat))
	if err != nil {
		return qemuProcess{}, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(procRoot, strconv.Itoa(pid), "exe"), &st); err != nil {
		return qemuProcess{}, err
	}
	exe := fmt.Sprintf("%d:%d:%d:%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
	return qemuProcess{PID: pid, Start: start, Exe: exe}, nil
}

// statStartTime is field 22 of /proc/PID/stat; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func statStartTime(stat string) (string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", fmt.Errorf("driver: malformed /proc stat line")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 { // fields 3.. follow the ')'; starttime is field 22
		return "", fmt.Errorf("driver: short /proc stat line")
	}
	return f[19], nil
}

func (p qemuProcess) binaryKey(version string) string {
	h := sha256.Sum256([]byte(p.Exe + "\x00" + version))
	return "binary-v1-" + hex.EncodeToString(h[:12]) + ".json"
}

func (p qemuProcess) processKey() string {
	return fmt.Sprintf("tree-v1-%d-%s.json", p.PID, p.Start)
}

// binaryFacts is what mig2 derives from a QEMU binary's QMP schema.
type binaryFacts struct {
	Parameters  []string `json:"parameters"`
	Compression []string `json:"compression"`
}

func cacheLoad(name string, v any) bool {
	dir := cacheDir()
	if dir == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	return err == nil && json.Unmarshal(b, v) == nil
}

// cacheStore writes an entry atomically; failure is silent (the cache is an optimisation).
func cacheStore(name string, v any) {
	dir := cacheDir()
	if dir == "" || os.MkdirAll(dir, 0o700) != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), filepath.Join(dir, name)) != nil {
		os.Remove(f.Name())
	}
}

// pruneTreeCache removes the tree entries of processes that no longer exist.
func pruneTreeCache(procRoot string) {
	dir := cacheDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "tree-v1-")
		if !ok {
			continue
		}
		pid, start, _ := strings.Cut(strings.TrimSuffix(rest, ".json"), "-")
		n, err := strconv.Atoi(pid)
		if err != nil {
			continue
		}
		if p, err := processIdentity(procRoot, n); err != nil || p.Start != start {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// readDeviceTree reads a QEMU's device tree, from the cached TreeBase of its process when there
// is one, and caches the base after a full read.
func readDeviceTree(ctx context.Context, ex qmp.Executor) (*qmp.DeviceTree, error) {
	p, ok := identifyQEMU(ex)
	if !ok {
		return qmp.ReadDeviceTree(ctx, ex)
	}
	var base qmp.TreeBase
	if cacheLoad(p.processKey(), &base) && base.Version == qmp.DeviceTreeVersion {
		return qmp.ReadDeviceTreeFrom(ctx, ex, &base)
	}
	t, b, err := qmp.ReadDeviceTreeBase(ctx, ex)
	if err != nil {
		return nil, err
	}
	pruneTreeCache("/proc")
	cacheStore(p.processKey(), b)
	return t, nil
}

// probeQEMU reads a QEMU's facts and device tree, concurrently (QMP pipelines them).
func probeQEMU(ctx context.Context, mon *qmp.Conn) (facts v2proto.HostFacts, tree *qmp.DeviceTree, err error) {
	err = concurrently(
		func() (err error) { facts, err = QEMUFacts(ctx, mon); return err },
		func() (err error) { tree, err = readDeviceTree(ctx, mon); return err },
	)
	return facts, tree, err
}

// probeQEMUState is probeQEMU that also reads the QEMU's migration settings (readFactsState).
func probeQEMUState(ctx context.Context, mon *qmp.Conn) (facts v2proto.HostFacts, tree *qmp.DeviceTree, st *migrationState, err error) {
	err = concurrently(
		func() (err error) { facts, st, err = readFactsState(ctx, mon); return err },
		func() (err error) { tree, err = readDeviceTree(ctx, mon); return err },
	)
	return facts, tree, st, err
}
