package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrNoQEMU means the QEMU binary was not found.
var ErrNoQEMU = errors.New("guest: QEMU binary not found")

// Defaults for Options.
const (
	DefaultName       = "guest"
	DefaultMemMiB     = 512
	DefaultTouchMiB   = 256
	DefaultMachine    = "q35"
	DefaultQEMUBinary = "qemu-system-x86_64"
	DefaultFill       = "rand"

	// kernelReserveMiB is RAM left to the kernel and /init beside the touched area.
	kernelReserveMiB = 96
	// maxSocketPath is the longest unix socket path (sun_path is 108 bytes with its NUL).
	maxSocketPath = 107
)

// QEMUBinary is the QEMU the tests and the bench run when Options name none: $MIG2_QEMU (for
// another QEMU than the system's, e.g. one unpacked by scripts/qemu-backports.sh), else
// DefaultQEMUBinary on PATH.
func QEMUBinary() string {
	if b := os.Getenv("MIG2_QEMU"); b != "" {
		return b
	}
	return DefaultQEMUBinary
}

// Options configures one QEMU running the test guest.
type Options struct {
	Name         string        // used in file names and -name (default "guest")
	Dir          string        // where sockets and logs go (required; keep it short: unix socket paths are limited to 107 bytes)
	Image        Image         // zero = FindImage()
	MemMiB       int           // guest RAM, default 512
	TouchMiB     int           // qb_mem: MiB the guest fills; 0 = default 256, negative = none (idle guest)
	DirtyMiBps   int           // qb_rate: MiB/s the guest rewrites after the fill
	Fill         string        // qb_fill: "rand" (default, incompressible) or "text" (compressible)
	CorruptAfter time.Duration // qb_corrupt: damage one page this long after ready (rounded up to seconds); with DirtyMiBps > 0 the dirtier repairs it on its next pass
	Heartbeat    time.Duration // qb_hb: heartbeat period, default 1s (millisecond resolution)
	VerifyEvery  int           // qb_verify: automatic full verify every N heartbeats (0 = on request only)
	Incoming     bool          // start with -incoming defer (destination); no boot output until migrated
	Machine      string        // -machine, default "q35"
	ExtraArgs    []string      // appended to the command line, e.g. "-device", "virtio-rng-pci,id=rng0"
	KernelArgs   []string      // appended to the kernel command line
	QEMUBinary   string        // default QEMUBinary(): $MIG2_QEMU, else qemu-system-x86_64
	Log          logrus.FieldLogger
}

// withDefaults fills in defaults and validates; it does not touch the file system
// except to resolve a zero Image.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if strings.ContainsAny(o.Name, "/, \t\n") {
		return o, fmt.Errorf("guest: invalid name %q", o.Name)
	}
	if o.Dir == "" {
		return o, errors.New("guest: Options.Dir is required")
	}
	if o.MemMiB == 0 {
		o.MemMiB = DefaultMemMiB
	}
	switch {
	case o.TouchMiB == 0:
		o.TouchMiB = DefaultTouchMiB
	case o.TouchMiB < 0:
		o.TouchMiB = 0
	}
	if o.TouchMiB+kernelReserveMiB > o.MemMiB {
		return o, fmt.Errorf("guest: TouchMiB %d too large for MemMiB %d (leave %d MiB for the kernel)", o.TouchMiB, o.MemMiB, kernelReserveMiB)
	}
	if o.DirtyMiBps < 0 {
		return o, fmt.Errorf("guest: negative DirtyMiBps %d", o.DirtyMiBps)
	}
	if o.Fill == "" {
		o.Fill = DefaultFill
	}
	if o.Fill != "rand" && o.Fill != "text" {
		return o, fmt.Errorf("guest: Fill %q: want rand or text", o.Fill)
	}
	if o.CorruptAfter < 0 || o.Heartbeat < 0 || o.VerifyEvery < 0 {
		return o, errors.New("guest: negative CorruptAfter, Heartbeat or VerifyEvery")
	}
	if o.Machine == "" {
		o.Machine = DefaultMachine
	}
	if o.QEMUBinary == "" {
		o.QEMUBinary = QEMUBinary()
	}
	if o.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		o.Log = l
	}
	for _, p := range []string{o.qmpPath(), o.serialPath()} {
		if len(p) > maxSocketPath {
			return o, fmt.Errorf("guest: socket path %s is %d bytes, the limit is %d: use a shorter Dir", p, len(p), maxSocketPath)
		}
	}
	return o, nil
}

func (o Options) qmpPath() string    { return filepath.Join(o.Dir, o.Name+".qmp") }
func (o Options) serialPath() string { return filepath.Join(o.Dir, o.Name+".serial") }
func (o Options) stderrPath() string { return filepath.Join(o.Dir, o.Name+".log") }

// KernelCmdline is the guest kernel command line for these options (useful
// to build a libvirt domain around the same guest). Call it on options with
// defaults applied by Start, or rely on the guest's own defaults for zero fields.
func (o Options) KernelCmdline() string {
	args := []string{"console=ttyS0", "pti=on", "quiet", "panic=-1",
		"qb_mem=" + strconv.Itoa(max(o.TouchMiB, 0)),
		"qb_rate=" + strconv.Itoa(o.DirtyMiBps)}
	if o.Fill != "" {
		args = append(args, "qb_fill="+o.Fill)
	}
	if o.Heartbeat > 0 {
		args = append(args, "qb_hb="+strconv.FormatInt(max(o.Heartbeat.Milliseconds(), 1), 10))
	}
	if o.CorruptAfter > 0 {
		args = append(args, "qb_corrupt="+strconv.Itoa(int(math.Ceil(o.CorruptAfter.Seconds()))))
	}
	if o.VerifyEvery > 0 {
		args = append(args, "qb_verify="+strconv.Itoa(o.VerifyEvery))
	}
	return strings.Join(append(args, o.KernelArgs...), " ")
}

// qemuPath escapes a path for a QEMU option value (commas are doubled).
func qemuPath(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// Args returns QEMU's command line (without the binary) for these options,
// after applying defaults. Image must be set (Start resolves a zero Image).
func (o Options) Args() ([]string, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if o.Image.Kernel == "" || o.Image.Initrd == "" {
		return nil, errors.New("guest: Options.Image is not set")
	}
	args := []string{
		"-name", o.Name,
		"-accel", "tcg",
		"-machine", o.Machine,
		"-m", strconv.Itoa(o.MemMiB),
		"-smp", "1",
		"-nodefaults", "-nographic", "-display", "none", "-no-user-config",
		"-kernel", qemuPath(o.Image.Kernel),
		"-initrd", qemuPath(o.Image.Initrd),
		"-append", o.KernelCmdline(),
		"-qmp", "unix:" + qemuPath(o.qmpPath()) + ",server=on,wait=off",
		"-chardev", "socket,id=ser0,path=" + qemuPath(o.serialPath()) + ",server=on,wait=off",
		"-serial", "chardev:ser0",
		"-no-reboot",
	}
	if o.Incoming {
		args = append(args, "-incoming", "defer")
	}
	return append(args, o.ExtraArgs...), nil
}

// QEMU is one running QEMU process with the test guest.
type QEMU struct {
	Name         string
	QMPSocket    string // unix socket, QMP server (not connected by this package)
	SerialSocket string // unix socket, the guest's ttyS0
	StderrPath   string // QEMU's stdout and stderr
	Cmd          *exec.Cmd
	Options      Options // with defaults applied

	console  *Console
	exited   chan struct{}
	waitErr  error // valid once exited is closed
	killOnce sync.Once
	killErr  error
}

// Start launches QEMU and returns once its QMP socket exists and the serial
// console is connected. ctx bounds the start-up only (QEMU is killed if it
// ends first); afterwards the process runs until Kill. QEMU runs in its own
// process group, which Kill kills, and gets SIGKILL if the calling process dies.
func Start(ctx context.Context, opts Options) (*QEMU, error) {
	if opts.Image == (Image{}) {
		img, err := FindImage()
		if err != nil {
			return nil, err
		}
		opts.Image = img
	} else if err := opts.Image.check(); err != nil {
		return nil, err
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	args, err := o.Args()
	if err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(o.QEMUBinary)
	if err != nil {
		return nil, fmt.Errorf("%w: %v (apt-get install qemu-system-x86)", ErrNoQEMU, err)
	}
	q := &QEMU{
		Name:         o.Name,
		QMPSocket:    o.qmpPath(),
		SerialSocket: o.serialPath(),
		StderrPath:   o.stderrPath(),
		Options:      o,
		exited:       make(chan struct{}),
	}
	// Stale sockets from an earlier run would make the readiness poll lie.
	os.Remove(q.QMPSocket)
	os.Remove(q.SerialSocket)
	logf, err := os.Create(q.StderrPath)
	if err != nil {
		return nil, fmt.Errorf("guest: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	q.Cmd = cmd
	log := o.Log.WithField("domain", o.Name)
	log.WithField("args", strings.Join(cmd.Args, " ")).Debug("guest: starting QEMU")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("guest: start %s: %w", bin, err)
	}
	go func() {
		q.waitErr = cmd.Wait()
		log.WithField("state", cmd.ProcessState.String()).Debug("guest: QEMU exited")
		close(q.exited)
	}()
	if err := q.connect(ctx, log); err != nil {
		q.Kill()
		return nil, err
	}
	return q, nil
}

// connect waits for the QMP socket and connects the console.
func (q *QEMU) connect(ctx context.Context, log logrus.FieldLogger) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if isSocket(q.QMPSocket) && isSocket(q.SerialSocket) {
			c, err := DialConsole(ctx, q.SerialSocket, log)
			if err == nil {
				c.mu.Lock()
				c.exitInfo = q.consoleExitInfo
				c.mu.Unlock()
				q.console = c
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest: waiting for QEMU %s to start: %w", q.Name, ctx.Err())
		case <-q.exited:
			return fmt.Errorf("guest: QEMU %s exited during start-up%s", q.Name, q.exitSummary())
		case <-tick.C:
		}
	}
}

func isSocket(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&os.ModeSocket != 0
}

// exitSummary describes how QEMU ended, with the tail of its stderr; "" while it runs.
func (q *QEMU) exitSummary() string {
	select {
	case <-q.exited:
	default:
		return ""
	}
	s := fmt.Sprintf(": QEMU %s: %v", q.Name, q.Cmd.ProcessState)
	if tail := lastLines(q.Stderr(), 10); tail != "" {
		s += ": " + tail
	}
	return s
}

// consoleExitInfo explains a closed console: the socket may report EOF a
// moment before the process is reaped, so give it a little time.
func (q *QEMU) consoleExitInfo() string {
	select {
	case <-q.exited:
	case <-time.After(2 * time.Second):
	}
	return q.exitSummary()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Console returns the guest's serial console.
func (q *QEMU) Console() *Console { return q.console }

// Exited is closed when the QEMU process has exited.
func (q *QEMU) Exited() <-chan struct{} { return q.exited }

// Wait waits for QEMU to exit and returns its exit error (nil for status 0).
func (q *QEMU) Wait(ctx context.Context) error {
	select {
	case <-q.exited:
		return q.waitErr
	case <-ctx.Done():
		return fmt.Errorf("guest: waiting for QEMU %s to exit: %w", q.Name, ctx.Err())
	}
}

// Stderr returns what QEMU wrote to stdout and stderr so far (also in StderrPath).
func (q *QEMU) Stderr() string {
	b, _ := os.ReadFile(q.StderrPath)
	return string(b)
}

// Kill sends SIGKILL to QEMU's process group, waits for the process, closes
// the console and removes the sockets. Idempotent; safe after QEMU exited.
func (q *QEMU) Kill() error {
	q.killOnce.Do(func() {
		select {
		case <-q.exited:
		default:
			if err := syscall.Kill(-q.Cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				q.killErr = fmt.Errorf("guest: kill QEMU %s: %w", q.Name, err)
				q.Cmd.Process.Kill()
			}
			<-q.exited
		}
		if q.console != nil {
			q.console.Close()
		}
		os.Remove(q.QMPSocket)
		os.Remove(q.SerialSocket)
	})
	return q.killErr
}
