package v2proto

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	creds, _ := testCreds(t)
	ok := DefaultConfig()
	ok.TLS = creds
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config with TLS: %v", err)
	}
	plain := DefaultConfig()
	plain.Insecure = true
	if err := plain.Validate(); err != nil {
		t.Fatalf("insecure default: %v", err)
	}
	for name, tc := range map[string]struct {
		edit func(c *Config)
		want string
	}{
		"no credentials":    {func(c *Config) { c.TLS = nil }, "no TLS credentials"},
		"both":              {func(c *Config) { c.Insecure = true }, "Insecure and TLS are both set"},
		"versions":          {func(c *Config) { c.Versions = VersionRange{2, 1} }, "Versions"},
		"feature name":      {func(c *Config) { c.Features = []Feature{{Name: "Bad"}} }, "invalid name"},
		"frame size small":  {func(c *Config) { c.MaxFrameSize = 100 }, "MaxFrameSize"},
		"frame size large":  {func(c *Config) { c.MaxFrameSize = 1 << 30 }, "MaxFrameSize"},
		"timeout":           {func(c *Config) { c.ReadyTimeout = 0 }, "ReadyTimeout must be positive"},
		"handshake cap":     {func(c *Config) { c.MaxConcurrentHandshakes = 0 }, "MaxConcurrentHandshakes"},
		"per-host cap":      {func(c *Config) { c.MaxHandshakesPerHost = -1 }, "MaxHandshakesPerHost"},
		"empty allow entry": {func(c *Config) { c.AllowedDNs = []string{""} }, "AllowedDNs"},
	} {
		c := ok.Clone()
		tc.edit(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "v2proto: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Every problem is reported at once.
	c := DefaultConfig()
	c.MaxFrameSize, c.StartTimeout = 0, 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "MaxFrameSize") || !strings.Contains(err.Error(), "StartTimeout") || !strings.Contains(err.Error(), "no TLS") {
		t.Errorf("joined: %v", err)
	}
	// Listen and Dial refuse invalid configs and credentials without the needed pair.
	if _, err := Listen("127.0.0.1:0", DefaultConfig()); err == nil {
		t.Error("Listen accepted a config without credentials")
	}
	clientOnly := *creds
	clientOnly.Server = nil
	c = DefaultConfig()
	c.TLS = &clientOnly
	if _, err := Listen("127.0.0.1:0", c); err == nil || !strings.Contains(err.Error(), ServerCertFile) {
		t.Errorf("Listen without a server certificate: %v", err)
	}
}

func TestServerNameFor(t *testing.T) {
	c := DefaultConfig()
	for addr, want := range map[string]string{"192.0.2.7:16520": "192.0.2.7", "[::1]:1": "::1", "dst.example:16520": "dst.example", "noport": "noport"} {
		if got := c.serverNameFor(addr); got != want {
			t.Errorf("%s: %s", addr, got)
		}
	}
	c.ServerName = "override"
	if got := c.serverNameFor("192.0.2.7:1"); got != "override" {
		t.Errorf("override: %s", got)
	}
}

// TestVersionRefusedBothSides: disjoint version ranges are refused on both sides, naming both.
func TestVersionRefusedBothSides(t *testing.T) {
	scfg, dcfg := testConfig(nil), testConfig(nil)
	scfg.Versions, dcfg.Versions = VersionRange{1, 1}, VersionRange{2, 3}
	c, s := listenerPair(t, RoleSource, scfg, dcfg)
	h, o := sampleHello(1), sampleOffer(1)
	h.Versions, o.Versions = VersionRange{}, VersionRange{}
	ex := runExchange(t, c, s, h, o)
	for side, err := range map[string]error{"source": ex.srcErr, "destination": ex.dstErr} {
		var re *RefusalError
		if !errors.As(err, &re) || re.Code != AbortVersion || re.Source != "[1,1]" || re.Destination != "[2,3]" {
			t.Errorf("%s: %v", side, err)
		}
	}
}

// TestCancelledStage: cancelling a stage method's context aborts the session with code
// cancelled, and errors.Is(err, context.Canceled) holds.
func TestCancelledStage(t *testing.T) {
	c, s := listenerPair(t, RoleSource, testConfig(nil), testConfig(nil))
	peer := make(chan error, 1)
	go func() {
		d, _ := s.Destination()
		if _, err := d.ReadHello(context.Background()); err != nil {
			peer <- err
			return
		}
		// Never answer; wait for what the source sends next.
		m, _, err := d.c.readMsg(context.Background(), time.Now().Add(5*time.Second))
		if err == nil {
			err = fmt.Errorf("got %v", m.Type())
			if a, ok := m.(*Abort); ok && a.Code == AbortCancelled && a.Stage == StageOffer {
				err = nil
			}
		}
		peer <- err
	}()
	src, _ := c.Source()
	if err := src.SendHello(context.Background(), sampleHello(1)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := src.ReadOffer(ctx)
	if !errors.Is(err, context.Canceled) || CodeOf(err) != AbortCancelled {
		t.Fatalf("got %v", err)
	}
	if err := <-peer; err != nil {
		t.Fatalf("peer: %v", err)
	}
}
