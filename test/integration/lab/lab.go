package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Net is the lab's /24. Its addresses exist only inside the lab's network namespaces, so labs
// running side by side may all use it.
const Net = "10.77.0"

// hostNames are the two hosts' short names; the first is the usual migration source.
var hostNames = [2]string{"hosta", "hostb"}

// Host is one libvirt "host": its own mount, UTS, network, PID and IPC namespaces.
type Host struct {
	Name   string // short name: hosta, hostb
	FQDN   string // hosta.lab: what libvirt advertises and the certificates name
	IP     string // its address on the lab link
	URI    string // qemu+tcp://IP/system (no auth)
	TLSURI string // qemu+tls://FQDN/system (x509, the lab CA)
	Dir    string // its state on the real filesystem: etc.upper, lib, log, cache, ns.log

	initPID   int    // PID 1 of its namespaces, as the root PID namespace sees it
	initStart string // that process's start time, against PID reuse
	pidNS     string // its PID namespace, "pid:[inode]"
	unshare   *exec.Cmd
	exited    chan struct{} // closed once unshare has been reaped
}

// Lab is two hosts joined by one veth pair, and nothing else: no route out, no link to the
// machine's own network.
type Lab struct {
	Dir   string
	CADir string // the lab CA (ca-cert.pem, ca-key.pem)
	Hosts [2]*Host
	// Keep leaves Dir (logs, configuration) in place after Down; Up sets it from
	// MIG2_LAB_KEEP=1.
	Keep bool
}

// Up builds the lab under dir (which must not exist or be empty; keep it short and off /etc):
// for each host, namespaces whose PID 1 reaps orphans, an overlay on /etc, a tmpfs /run, private
// /var/{lib,log,cache}/libvirt and /sys; a veth pair between the two network namespaces; then
// vagrant/provision.sh in each host (certificates, libvirtd.conf, virtlogd, libvirtd --listen). It
// returns once each libvirtd answers the other over qemu+tcp. On failure it tears down what it
// built. Needs root.
func Up(ctx context.Context, dir string) (l *Lab, err error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("lab: %s is not empty (a lab left behind? Down it, or remove the directory)", dir)
	}
	l = &Lab{Dir: dir, CADir: filepath.Join(dir, "ca"), Keep: os.Getenv("MIG2_LAB_KEEP") == "1"}
	defer func() {
		if err != nil {
			if derr := l.Down(); derr != nil {
				err = fmt.Errorf("%w (and tearing down: %v)", err, derr)
			}
		}
	}()
	if err := os.MkdirAll(l.CADir, 0o700); err != nil {
		return l, fmt.Errorf("lab: %w", err)
	}
	// The lab provisions its hosts with the vagrant lab's own script, vagrant/provision.sh, so
	// every test run exercises the provisioning the Vagrant VMs get.
	script, err := vagrantProvisionScript()
	if err != nil {
		return l, err
	}
	for i, name := range hostNames {
		h := &Host{Name: name, FQDN: name + ".lab", IP: fmt.Sprintf("%s.%d", Net, i+1), Dir: filepath.Join(dir, name)}
		h.URI = "qemu+tcp://" + h.IP + "/system"
		h.TLSURI = "qemu+tls://" + h.FQDN + "/system"
		l.Hosts[i] = h
		if err := h.prepare(); err != nil {
			return l, err
		}
		if err := h.start(ctx); err != nil {
			return l, err
		}
	}
	if err := l.link(ctx); err != nil {
		return l, err
	}
	var hosts []string
	for _, h := range l.Hosts {
		hosts = append(hosts, h.IP, h.Name)
	}
	errs := make(chan error, len(l.Hosts))
	for _, h := range l.Hosts {
		go func() { // both hosts at once; provision.sh locks the shared CA itself
			out, err := h.Command(ctx, "env", "LAB_HOSTS="+strings.Join(hosts, " "), "LAB_CA_DIR="+l.CADir,
				"LAB_START=manual", "bash", script, h.Name, h.IP).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("lab: provision %s: %w: %s", h.Name, err, bytes.TrimSpace(out))
			}
			errs <- err
		}()
	}
	for range l.Hosts {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return l, err
	}
	for i, h := range l.Hosts {
		peer := l.Hosts[1-i]
		if out, err := h.Exec(ctx, "virsh", "-q", "-c", peer.URI, "version"); err != nil {
			return l, fmt.Errorf("lab: %s cannot reach %s's libvirtd: %w: %s", h.Name, peer.Name, err, out)
		}
	}
	return l, nil
}

// vagrantProvisionScript finds vagrant/provision.sh in this checkout: the directory holding
// go.mod, walking up from the working directory (go test runs in the package's directory).
// (Embedding cannot reach outside the package directory, and the script lives in vagrant/.)
func vagrantProvisionScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			script := filepath.Join(dir, "vagrant", "provision.sh")
			if _, err := os.Stat(script); err != nil {
				return "", fmt.Errorf("lab: the hosts' provisioning script: %w", err)
			}
			return script, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("lab: no go.mod in %s or above: run the lab from inside the mig2 checkout (it provisions with vagrant/provision.sh)", wd)
		}
	}
}

func preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("lab: needs root (namespaces, mounts, veth)")
	}
	for _, p := range []string{"unshare", "nsenter", "ip", "certtool", "virsh", "/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "flock"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("lab: %s is missing (apt-get install libvirt-daemon-system libvirt-clients gnutls-bin iproute2 util-linux): %w", p, err)
		}
	}
	return nil
}

// prepare lays out the host's directories. The overlay's upper layer starts with opaque
// /etc/libvirt/{qemu,hooks,secrets,storage,nwfilter}: the machine's own domains, networks, hooks,
// secrets and pools stay invisible inside the lab.
func (h *Host) prepare() error {
	upper := filepath.Join(h.Dir, "etc.upper")
	for _, d := range []string{"etc.work", "lib", "log", "cache", "etc.upper/libvirt"} {
		if err := os.MkdirAll(filepath.Join(h.Dir, d), 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	for _, d := range []string{"qemu", "hooks", "secrets", "storage", "nwfilter"} {
		p := filepath.Join(upper, "libvirt", d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		if err := syscall.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return fmt.Errorf("lab: mark %s opaque: %w", p, err)
		}
	}
	return nil
}

// start creates the namespaces. unshare stays our child (we reap it in Down); --kill-child and
// Pdeathsig collapse the host if this process dies first: unshare dies with us, and its child,
// PID 1 of the namespace, with unshare, which kills everything inside.
func (h *Host) start(ctx context.Context) error {
	setup := strings.Join([]string{
		"set -e",
		"hostname " + h.FQDN,
		fmt.Sprintf("mount -t overlay lab-etc-%s -o lowerdir=/etc,upperdir=%s/etc.upper,workdir=%s/etc.work /etc", h.Name, h.Dir, h.Dir),
		"mount -t tmpfs lab-run-" + h.Name + " /run",
		"mkdir -p /run/libvirt /run/lock && ln -s /dev/shm /run/shm",
		"mount --bind " + h.Dir + "/lib /var/lib/libvirt",
		"mount --bind " + h.Dir + "/log /var/log/libvirt",
		"mount --bind " + h.Dir + "/cache /var/cache/libvirt",
		// A fresh sysfs: the netns's view, and no cgroup mounts, so libvirt skips cgroups (two
		// libvirtds would otherwise both name their first guest's cgroup qemu-1-NAME).
		"umount -R -l /sys && mount -t sysfs lab-sys-" + h.Name + " /sys",
		"ip link set lo up",
		// PID 1 must reap orphans: libvirt daemonizes QEMU, and with a PID 1 that does not reap
		// it waits 40 s for every QEMU it kills (FACTS.md). bash reaps any child in its loop.
		"exec -a " + initName(h.Name) + ` bash -c 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'`,
	}, "\n")
	logf, err := os.Create(filepath.Join(h.Dir, "ns.log"))
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--mount", "--uts", "--net", "--pid", "--ipc", "--fork", "--kill-child",
		"--mount-proc", "--propagation", "private", "bash", "-c", setup)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start %s's namespaces: %w", h.Name, err)
	}
	h.unshare = cmd
	exited := make(chan struct{})
	go func() { // reaps unshare if it dies early; Down waits on exited otherwise
		_ = cmd.Wait()
		close(exited)
	}()
	h.exited = exited
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(h.Dir, "ns.log"))
			return fmt.Errorf("lab: %s's namespaces did not come up: %s", h.Name, bytes.TrimSpace(log))
		case <-ctx.Done():
			return fmt.Errorf("lab: start %s: %w", h.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if pid := childOf(cmd.Process.Pid); pid > 0 && isInit(pid, h.Name) {
			h.initPID = pid
			h.initStart = startTime(pid)
			h.pidNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s's PID 1 did not start within 10 s", h.Name)
		}
	}
}

func initName(host string) string { return "mig2-lab-init-" + host }

// childOf returns the first child of pid, or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

func isInit(pid int, host string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.HasPrefix(string(b), initName(host)+"\x00")
}

// startTime is field 22 of /proc/PID/stat (clock ticks since boot), "" if the process is gone.
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// link creates the veth pair from inside hosta's network namespace straight into hostb's, so it
// never appears in the machine's own network namespace, and addresses both ends.
func (l *Lab) link(ctx context.Context) error {
	a, b := l.Hosts[0], l.Hosts[1]
	steps := [][]string{
		{"nsenter", "-t", strconv.Itoa(a.initPID), "-n", "--", "ip", "link", "add", "lab0", "type", "veth",
			"peer", "name", "lab0", "netns", "/proc/" + strconv.Itoa(b.initPID) + "/ns/net"},
	}
	for _, h := range l.Hosts {
		steps = append(steps,
			[]string{"nsenter", "-t", strconv.Itoa(h.initPID), "-n", "--", "ip", "addr", "add", h.IP + "/24", "dev", "lab0"},
			[]string{"nsenter", "-t", strconv.Itoa(h.initPID), "-n", "--", "ip", "link", "set", "lab0", "up"})
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: %q: %w: %s", s, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// Command is argv run inside the host's namespaces (nsenter), with a small clean environment,
// in its own process group, killed as a group when ctx ends.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	args := append([]string{"-t", strconv.Itoa(h.initPID), "-m", "-u", "-n", "-p", "-i", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C", "LIBVIRT_DEFAULT_URI=qemu:///system"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Exec runs argv inside the host and returns its combined output; a failure's error carries it.
func (h *Host) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	out, err := h.Command(ctx, argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: %s: %q: %w: %s", h.Name, argv, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// PIDNamespace is the host's PID namespace as /proc/PID/ns/pid names it ("pid:[4026532301]").
func (h *Host) PIDNamespace() string { return h.pidNS }

// RestartLibvirtd restarts the host's libvirtd (a hook installed after libvirtd started is
// ignored until it restarts) and waits until it answers.
func (h *Host) RestartLibvirtd(ctx context.Context) error {
	_, err := h.Exec(ctx, "bash", "-c", `set -e
pid=$(cat /run/libvirtd.pid 2>/dev/null || true)
if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done; fi
/usr/sbin/libvirtd -d --listen </dev/null >/dev/null 2>&1
for _ in $(seq 200); do virsh -q version >/dev/null 2>&1 && exit 0; sleep 0.05; done
echo "libvirtd did not come back within 10 s" >&2; exit 1`)
	return err
}

// Down stops the lab: it destroys the guests and stops the daemons gracefully (bounded), then
// kills each host's PID 1 (the kernel then kills everything left in that PID namespace; the
// veth pair, mounts and tmpfs go with the namespaces), reaps unshare, and removes Dir. Only
// processes of this lab are signalled, by PID, after checking they are still the lab's. Safe to
// call on a half-built lab and more than once.
func (l *Lab) Down() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, h := range l.Hosts {
		if h == nil || !h.alive() {
			continue
		}
		_, _ = h.Exec(ctx, "bash", "-c", `for d in $(virsh -q list --name 2>/dev/null); do timeout 5 virsh -q destroy "$d" >/dev/null 2>&1 || true; done
for p in /run/libvirtd.pid /run/virtlogd.pid; do
  pid=$(cat $p 2>/dev/null || true); [ -n "$pid" ] || continue
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
done`)
	}
	for _, h := range l.Hosts {
		if h == nil || h.unshare == nil {
			continue
		}
		if h.alive() {
			if err := syscall.Kill(h.initPID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("lab: kill %s's PID 1 (%d): %w", h.Name, h.initPID, err))
			}
		} else if h.initPID == 0 && h.unshare.Process != nil {
			// PID 1 never came up: unshare is ours, signal it directly (--kill-child does the rest).
			_ = h.unshare.Process.Kill()
		}
		select {
		case <-h.exited:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("lab: %s's unshare (%d) did not exit within 10 s", h.Name, h.unshare.Process.Pid))
		}
		h.unshare = nil
	}
	if len(errs) == 0 && l.Dir != "" && !l.Keep {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, fmt.Errorf("lab: remove %s: %w", l.Dir, err))
		}
	}
	return errors.Join(errs...)
}

// alive reports whether the host's PID 1 is still the process Up started.
func (h *Host) alive() bool {
	return h.initPID > 0 && isInit(h.initPID, h.Name) && startTime(h.initPID) == h.initStart
}

// SetLink takes the link between the two hosts down (up=false) or brings it back up, on both
// ends, as a cable pulled and plugged back would: connections in flight are not reset, their
// packets just stop. The addresses stay; bringing the link up restores the route.
func (l *Lab) SetLink(ctx context.Context, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	for _, h := range l.Hosts {
		s := []string{"nsenter", "-t", strconv.Itoa(h.initPID), "-n", "--", "ip", "link", "set", "lab0", state}
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: link %s on %s: %w: %s", state, h.Name, err, bytes.TrimSpace(out))
		}
	}
	return nil
}
