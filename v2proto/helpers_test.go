package v2proto

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mig2/mig2/v2proto/testcerts"
)

// qemu72Caps are the migration capabilities of QEMU 7.2 (FACTS.md).
var qemu72Caps = []string{"xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
	"postcopy-ram", "x-colo", "release-ram", "block", "return-path", "pause-before-switchover", "multifd",
	"dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared", "validate-uuid",
	"background-snapshot", "zero-copy-send", "postcopy-preempt"}

func host72(name string, cores uint32) HostFacts {
	return HostFacts{
		Mig2Version: "test", QEMUVersion: "7.2.0", Capabilities: qemu72Caps,
		Parameters:  []string{"multifd-channels", "multifd-compression", "multifd-zlib-level", "multifd-zstd-level", "max-bandwidth", "downtime-limit"},
		Compression: []string{"none", "zlib", "zstd"}, Cores: cores, MemoryBytes: 8 << 30, Hostname: name,
	}
}

// sampleTree returns a tree with n devices, each with a few properties.
func sampleTree(n int) DeviceTree {
	t := DeviceTree{MachineType: "pc-q35-7.2", CPUModel: "qemu64", RAMBytes: 2 << 30}
	for i := range n {
		t.Devices = append(t.Devices, Device{
			ID:   fmt.Sprintf("dev%03d", i),
			Type: "virtio-net-pci",
			Props: map[string]string{
				"addr": fmt.Sprintf("0x%x", i+2), "bus": "pcie.0", "mac": fmt.Sprintf("52:54:00:00:00:%02x", i%256),
				"netdev": fmt.Sprintf("hostnet%d", i), "romfile": "efi-virtio.rom",
			},
		})
	}
	return t
}

func sampleHello(devices int) *Hello {
	return &Hello{
		Versions: VersionRange{1, 1}, Features: DefaultFeatures(),
		MigrationID: "mig-1", Guest: "guest1",
		Wants: Wants{Channels: 4, Compression: "auto", MaxBandwidth: 0},
		Host:  host72("src", 4), DeviceTree: sampleTree(devices),
		Compressibility: Compressibility{Measured: true, Percent: 80},
	}
}

func sampleOffer(devices int) *Offer {
	return &Offer{Versions: VersionRange{1, 1}, Features: DefaultFeatures(), Guest: "guest1", Host: host72("dst", 8), Limits: Limits{MaxChannels: 16}, DeviceTree: sampleTree(devices)}
}

// testCreds writes a fresh credential set and loads it.
func testCreds(t testing.TB) (*TLSCredentials, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := testcerts.Write(dir, []string{"127.0.0.1"}, "CN=src.example,O=mig2 test"); err != nil {
		t.Fatal(err)
	}
	creds, err := LoadTLSDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return creds, dir
}

// testConfig returns a config with short deadlines: TLS with creds, or plaintext if creds is nil.
func testConfig(creds *TLSCredentials) *Config {
	cfg := DefaultConfig()
	if creds == nil {
		cfg.Insecure = true
	} else {
		cfg.TLS = creds
	}
	cfg.HandshakeTimeout = 5 * time.Second
	cfg.HelloTimeout = 5 * time.Second
	cfg.OfferTimeout = 5 * time.Second
	cfg.AgreeTimeout = 5 * time.Second
	cfg.ReadyTimeout = 5 * time.Second
	cfg.StartTimeout = 5 * time.Second
	cfg.RunIdleTimeout = 5 * time.Second
	cfg.WriteTimeout = 5 * time.Second
	return cfg
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pipePair returns a connected (client, server) pair of Conns over net.Pipe.
func pipePair(t testing.TB, clientRole Role, ccfg, scfg *Config) (*Conn, *Conn) {
	t.Helper()
	a, b := net.Pipe()
	ctx := testCtx(t)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Server(ctx, b, scfg)
		ch <- res{c, err}
	}()
	cc, err := Client(ctx, a, clientRole, "127.0.0.1", ccfg)
	sr := <-ch
	if err != nil || sr.err != nil {
		t.Fatalf("pipe handshake: client %v, server %v", err, sr.err)
	}
	// Close the pipe itself: a TLS close_notify on a synchronous pipe would wait for a reader.
	t.Cleanup(func() { a.Close(); b.Close() })
	return cc, sr.c
}

// listenerPair dials a listener and returns (dialer conn, accepted conn).
func listenerPair(t testing.TB, dialRole Role, ccfg, scfg *Config) (*Conn, *Conn) {
	t.Helper()
	l, err := Listen("127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx := testCtx(t)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept(ctx)
		ch <- res{c, err}
	}()
	cc, err := DialConn(ctx, l.Addr().String(), dialRole, ccfg)
	sr := <-ch
	if err != nil || sr.err != nil {
		t.Fatalf("dial: client %v, server %v", err, sr.err)
	}
	t.Cleanup(func() { cc.Close(); sr.c.Close() })
	return cc, sr.c
}

// outcome of one full exchange.
type exchange struct {
	srcAgreement, dstAgreement *Agreement
	ready                      *Ready
	result                     *Result
	dstSaw                     []MsgType
	srcErr, dstErr             error
}

// prepareDelay stands for the destination's work between Agree and Ready.
const prepareDelay = 2 * time.Millisecond

// runExchange runs the whole protocol: the source role on src, the destination on dst.
func runExchange(t testing.TB, srcConn, dstConn *Conn, h *Hello, o *Offer) exchange {
	t.Helper()
	ctx := testCtx(t)
	var ex exchange
	done := make(chan struct{})
	go func() {
		defer close(done)
		ex.dstErr = func() error {
			d, err := dstConn.Destination()
			if err != nil {
				return err
			}
			defer d.Close()
			if _, err := d.ReadHello(ctx); err != nil {
				return err
			}
			if err := d.SendOffer(ctx, o); err != nil {
				return err
			}
			if ex.dstAgreement, err = d.ReadAgree(ctx); err != nil {
				return err
			}
			time.Sleep(prepareDelay) // the destination's work, reported in Ready.Prepare
			if err := d.SendReady(ctx, "tcp:127.0.0.1:49152"); err != nil {
				return err
			}
			if err := d.ReadStart(ctx); err != nil {
				return err
			}
			// Alternate sends and receives, so that synchronous transports (net.Pipe) never
			// have both sides writing at once.
			m, err := d.Recv(ctx)
			if err != nil {
				return err
			}
			ex.dstSaw = append(ex.dstSaw, m.Type())
			if err := d.SendProgress(ctx, &Progress{Status: "active", Transferred: 1, Total: 2}); err != nil {
				return err
			}
			for !d.SwitchoverReceived() {
				m, err := d.Recv(ctx)
				if err != nil {
					return err
				}
				ex.dstSaw = append(ex.dstSaw, m.Type())
			}
			return d.SendResult(ctx, &Result{Outcome: OutcomeRunning, Status: "completed"})
		}()
	}()
	ex.srcErr = func() error {
		s, err := srcConn.Source()
		if err != nil {
			return err
		}
		defer s.Close()
		if ex.srcAgreement, err = s.Handshake(ctx, h); err != nil {
			return err
		}
		if ex.ready, err = s.ReadReady(ctx); err != nil {
			return err
		}
		if err := s.SendStart(ctx); err != nil {
			return err
		}
		if err := s.SendProgress(ctx, &Progress{Status: "active"}); err != nil {
			return err
		}
		if m, err := s.Recv(ctx); err != nil || m.Type() != MsgProgress {
			return fmt.Errorf("want Progress, got %v, %w", m, err)
		}
		if err := s.SendSwitchover(ctx, "pre-switchover"); err != nil {
			return err
		}
		for {
			m, err := s.Recv(ctx)
			if err != nil {
				return err
			}
			if r, ok := m.(*Result); ok {
				ex.result = r
				return nil
			}
		}
	}()
	<-done
	return ex
}
