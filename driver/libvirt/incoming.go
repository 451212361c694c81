package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	golibvirt "libvirt.org/go/libvirt"

	"github.com/mig2/mig2/driver"
	"github.com/mig2/mig2/v2proto"
)

// IncomingConfig configures the destination side for libvirt domains.
type IncomingConfig struct {
	URI          string // the local libvirt, e.g. qemu:///system
	MaxChannels  int
	DenyPostcopy bool
	LogDir       string        // where libvirt writes each domain's QEMU log; default /var/log/libvirt/qemu
	Window       time.Duration // how long a negotiation stays valid for the hook; default 10 min
}

// Incoming serves v2 handshakes for libvirt domains on the destination (driver.IncomingHandler)
// and remembers what was negotiated, for the qemu hook.
type Incoming struct {
	cfg  IncomingConfig
	conn *golibvirt.Connect

	mu         sync.Mutex
	negotiated map[string]Negotiated
}

// Negotiated is one handshake the hook can check an incoming domain against.
type Negotiated struct {
	MigrationID string
	Tree        v2proto.DeviceTree // the destination device tree the agreement was made on
	Expires     time.Time
}

// NewIncoming connects to the local libvirt.
func NewIncoming(cfg IncomingConfig) (*Incoming, error) {
	if cfg.LogDir == "" {
		cfg.LogDir = "/var/log/libvirt/qemu"
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Minute
	}
	conn, err := golibvirt.NewConnect(cfg.URI)
	if err != nil {
		return nil, fmt.Errorf("libvirt: connect %s: %w", uriOrDefault(cfg.URI), err)
	}
	return &Incoming{cfg: cfg, conn: conn, negotiated: map[string]Negotiated{}}, nil
}

// Close releases the libvirt connection.
func (in *Incoming) Close() error {
	_, err := in.conn.Close()
	return err
}

// HandleIncoming implements driver.IncomingHandler: Offer (the device tree this host would
// create from the source's domain XML), Agree, Ready, then it watches the domain arrive.
func (in *Incoming) HandleIncoming(ctx context.Context, d *v2proto.Destination, hello *v2proto.Hello, log logrus.FieldLogger) error {
	name := hello.Guest
	if hello.GuestConfig == "" {
		msg := "the source sent no domain XML: this agent receives libvirt domains (is the source a plain QEMU? name it with --guest on the agent)"
		_ = d.Abort(ctx, v2proto.AbortUnknownGuest, msg)
		return errors.New("libvirt: " + msg)
	}
	if dom, err := in.conn.LookupDomainByName(name); err == nil {
		active, _ := dom.IsActive()
		dom.Free()
		if active {
			_ = d.Abort(ctx, v2proto.AbortBusy, fmt.Sprintf("domain %q already runs on this host", name))
			return fmt.Errorf("libvirt: domain %q already runs here", name)
		}
	}
	facts, err := hostFacts(in.conn)
	if err != nil {
		_ = d.Abort(ctx, v2proto.AbortInternal, err.Error())
		return err
	}
	tree, err := in.LocalTree([]byte(hello.GuestConfig))
	if err != nil {
		_ = d.Abort(ctx, v2proto.AbortProtocol, "the source's domain XML: "+err.Error())
		return err
	}
	facts.LinkMbps = driver.LinkMbps(d.Conn())
	offer := &v2proto.Offer{Guest: name, Host: facts, DeviceTree: tree,
		Limits: v2proto.Limits{MaxChannels: uint32(max(in.cfg.MaxChannels, 0)), DenyPostcopy: in.cfg.DenyPostcopy}}
	if err := d.SendOffer(ctx, offer); err != nil {
		return err
	}
	agreed, err := d.ReadAgree(ctx)
	if err != nil {
		return err
	}
	log.WithField("stage", "agreed").Infof("libvirt: agreed %s", agreed)
	in.remember(name, Negotiated{MigrationID: hello.MigrationID, Tree: tree, Expires: time.Now().Add(in.cfg.Window)})
	defer in.forget(name, hello.MigrationID)
	logOffset := fileSize(in.logPath(name))
	host, _ := in.conn.GetHostname()
	if err := d.SendReady(ctx, "libvirt:"+host); err != nil {
		return err
	}
	if err := d.ReadStart(ctx); err != nil {
		return err
	}
	return in.supervise(ctx, d, name, logOffset)
}

// supervise waits for libvirt to bring the domain up here, and for the source's Switchover
// (sent when its MigrateToURI3 returned), then sends the verdict.
func (in *Incoming) supervise(ctx context.Context, d *v2proto.Destination, name string, logOffset int64) error {
	fromSource := make(chan error, 1)
	sourceFailed := make(chan string, 1)
	readerDone := make(chan struct{})
	readCtx, stopRead := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(readerDone)
		for {
			m, err := d.Recv(readCtx)
			if err != nil {
				fromSource <- err
				return
			}
			if p, ok := m.(*v2proto.Progress); ok && p.Status == "failed" {
				sourceFailed <- p.Message
				return // the session ends with the Result below
			}
		}
	}()
	defer func() { stopRead(); d.Close(); <-readerDone }()
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	lastSent := time.Now()
	for {
		select {
		case <-ctx.Done():
			_ = d.Abort(context.WithoutCancel(ctx), v2proto.AbortCancelled, "the destination agent is shutting down")
			return ctx.Err()
		case err := <-fromSource:
			return fmt.Errorf("libvirt: the source ended the migration: %w%s", err, in.logText(name, logOffset, "; the destination QEMU said: "))
		case why := <-sourceFailed:
			// libvirt's job failed; give the destination QEMU a moment to finish its log.
			time.Sleep(200 * time.Millisecond)
			text := in.logText(name, logOffset, "")
			_ = d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeFailed, Status: "failed", DestError: text,
				Details: "the source's libvirt reported: " + why})
			return fmt.Errorf("libvirt: the migration failed: %s; the destination QEMU said: %s", why, text)
		case <-tick.C:
		}
		if time.Since(lastSent) >= progressEvery {
			// SPEC §4.6. It also ends the session soon after a cut link returns: the source that
			// gave up meanwhile has closed its end, and its host answers with a reset.
			lastSent = time.Now()
			_ = d.SendProgress(ctx, &v2proto.Progress{Status: "active"})
		}
		if !d.SwitchoverReceived() {
			continue
		}
		state := in.domainState(name)
		if state == golibvirt.DOMAIN_RUNNING {
			return d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeRunning, Status: "running"})
		}
		text := in.logText(name, logOffset, "")
		_ = d.SendResult(context.WithoutCancel(ctx), &v2proto.Result{Outcome: v2proto.OutcomeFailed, Status: fmt.Sprintf("domain state %d", state), DestError: text,
			Details: "libvirt finished the migration but the domain does not run on the destination"})
		return errors.New("libvirt: the domain does not run here after the migration")
	}
}

// progressEvery is how often the destination tells the source it is there (SPEC §4.6: at
// least every 10 s).
const progressEvery = 5 * time.Second

func (in *Incoming) domainState(name string) golibvirt.DomainState {
	dom, err := in.conn.LookupDomainByName(name)
	if err != nil {
		return golibvirt.DOMAIN_NOSTATE
	}
	defer dom.Free()
	st, _, err := dom.GetState()
	if err != nil {
		return golibvirt.DOMAIN_NOSTATE
	}
	return st
}

func (in *Incoming) logPath(name string) string { return filepath.Join(in.cfg.LogDir, name+".log") }

// logText is what the domain's QEMU wrote to its libvirt log during this migration.
func (in *Incoming) logText(name string, offset int64, prefix string) string {
	b, err := os.ReadFile(in.logPath(name))
	if err != nil || int64(len(b)) <= offset {
		return ""
	}
	var picked []string
	for _, l := range strings.Split(string(b[offset:]), "\n") {
		if i := strings.Index(l, "qemu-system-"); i >= 0 {
			if _, rest, ok := strings.Cut(l[i:], ": "); ok {
				picked = append(picked, rest)
			}
		}
	}
	if len(picked) == 0 {
		return ""
	}
	return prefix + strings.Join(picked, "\n")
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// LocalTree is the device tree this host would create from a domain XML: the XML's tree, with
// what this host cannot provide marked so the diff names it (SPEC §8): a machine type its
// emulator lacks, a CPU it cannot run, device models its domain capabilities do not list.
func (in *Incoming) LocalTree(xml []byte) (v2proto.DeviceTree, error) {
	tree, info, err := TreeFromXML(xml)
	if err != nil {
		return v2proto.DeviceTree{}, err
	}
	caps, err := in.conn.GetDomainCapabilities(info.Emulator, info.Arch, info.Machine, info.Type, 0)
	if err != nil {
		// The emulator may live elsewhere here; ask for the default one before giving up.
		caps, err = in.conn.GetDomainCapabilities("", info.Arch, info.Machine, info.Type, 0)
	}
	if err != nil {
		tree.MachineType = fmt.Sprintf("%s (not supported here: %v)", info.Machine, err)
		return tree, nil
	}
	filterByCaps(&tree, caps)
	if info.CPUXML != "" {
		res, err := in.conn.CompareHypervisorCPU(info.Emulator, info.Arch, info.Machine, info.Type, info.CPUXML, 0)
		if err == nil && res == golibvirt.CPU_COMPARE_INCOMPATIBLE {
			tree.CPUModel += " (incompatible with this host)"
		}
	}
	return tree, nil
}

func (in *Incoming) remember(name string, n Negotiated) {
	in.mu.Lock()
	in.negotiated[name] = n
	in.mu.Unlock()
}

func (in *Incoming) forget(name, id string) {
	in.mu.Lock()
	if n, ok := in.negotiated[name]; ok && n.MigrationID == id {
		delete(in.negotiated, name)
	}
	in.mu.Unlock()
}

// Check answers the qemu hook's question for an incoming domain: was it negotiated, and is the
// XML libvirt is about to start the one the agreement was made on? It never calls libvirt
// beyond reading domain capabilities (the hook must not call back into libvirt; the agent may).
func (in *Incoming) Check(name string, xml []byte) (bool, string) {
	in.mu.Lock()
	n, ok := in.negotiated[name]
	in.mu.Unlock()
	if !ok || time.Now().After(n.Expires) {
		return false, fmt.Sprintf("domain %q was not negotiated with this host's mig2 agent; migrate it with `mig2 migrate --live --parallel %s DESTURI` (policy require-v2)", name, name)
	}
	tree, err := in.LocalTree(xml)
	if err != nil {
		return false, "cannot read the incoming domain XML: " + err.Error()
	}
	if d := v2proto.DiffTrees(&n.Tree, &tree); d.Fatal() {
		return false, fmt.Sprintf("the incoming XML of %q is not the one negotiated (migration %s): %s", name, n.MigrationID, oneLine(d.String()))
	}
	return true, ""
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
