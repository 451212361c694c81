package v2proto

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
)

// Frame size limits, SPEC §3.3.
const (
	// MaxFrameSizeV1 is the largest frame protocol version 1 allows; senders never exceed it.
	MaxFrameSizeV1 = 1 << 20
	// MinFrameSizeLimit is the smallest receive limit an implementation may configure.
	MinFrameSizeLimit = 64 << 10
	// MaxFrameSizeLimit is the largest receive limit this package accepts in a Config.
	MaxFrameSizeLimit = 16 << 20
)

// DefaultPort is the recommended agent port (SPEC §2.1).
const DefaultPort = 16520

// Config configures both ends of a connection. Make one with DefaultConfig and change what you
// need; Validate (called by Dial, Listen, Client and Server) says what is wrong.
type Config struct {
	// TLS holds the x509 credentials (LoadTLSDir). Required unless Insecure.
	TLS *TLSCredentials
	// Insecure selects plaintext (SPEC §2.4). Both ends must set it; it is never negotiated.
	// It cannot be combined with TLS.
	Insecure bool
	// AllowedDNs is the listener's client-certificate DN allow-list (SPEC §2.3); empty admits
	// every certificate signed by the CA.
	AllowedDNs []string
	// ServerName overrides the name the dialer checks the server certificate against (default:
	// the host part of the address dialled), like QEMU's tls-hostname.
	ServerName string

	// Versions is the protocol version range this side speaks (default [1,1]). Other values are
	// for testing version skew; the encoding is that of version 1.
	Versions VersionRange
	// Features announced when a Hello or Offer does not set its own (default DefaultFeatures()).
	Features []Feature
	// MaxFrameSize is the largest frame accepted (default MaxFrameSizeV1).
	MaxFrameSize uint32

	// Deadlines, SPEC §9.2.
	HandshakeTimeout time.Duration // TCP connect, TLS, preambles (10 s)
	HelloTimeout     time.Duration // destination waits for Hello (10 s)
	OfferTimeout     time.Duration // source waits for Offer (30 s)
	AgreeTimeout     time.Duration // destination waits for Agree (30 s)
	ReadyTimeout     time.Duration // source waits for Ready (120 s)
	StartTimeout     time.Duration // destination waits for Start (120 s)
	RunIdleTimeout   time.Duration // running: silence allowed between messages (60 s)
	WriteTimeout     time.Duration // any single write (10 s)

	// Listener caps (SPEC §10): connections in their handshake at once, and per peer IP.
	// A connection over a cap is answered "MIG2-ERR busy" and closed at once.
	MaxConcurrentHandshakes int // default 16
	MaxHandshakesPerHost    int // default 4; 0 disables the per-host cap

	// Logger receives debug records with the fields migration_id, stage, peer, domain.
	// nil discards them.
	Logger logrus.FieldLogger
	// Rand is the source of nonces (default crypto/rand).
	Rand io.Reader
}

// DefaultConfig returns a Config with the defaults of SPEC §9.2 and §10, without credentials:
// set TLS (or Insecure) before use.
func DefaultConfig() *Config {
	return &Config{
		Versions:                VersionRange{Min: ProtocolVersion, Max: ProtocolVersion},
		MaxFrameSize:            MaxFrameSizeV1,
		HandshakeTimeout:        10 * time.Second,
		HelloTimeout:            10 * time.Second,
		OfferTimeout:            30 * time.Second,
		AgreeTimeout:            30 * time.Second,
		ReadyTimeout:            120 * time.Second,
		StartTimeout:            120 * time.Second,
		RunIdleTimeout:          60 * time.Second,
		WriteTimeout:            10 * time.Second,
		MaxConcurrentHandshakes: 16,
		MaxHandshakesPerHost:    4,
	}
}

// Clone returns a shallow copy with its own slices.
func (c *Config) Clone() *Config {
	n := *c
	n.AllowedDNs = slices.Clone(c.AllowedDNs)
	n.Features = slices.Clone(c.Features) // keeps nil (defaults) apart from empty (none)
	return &n
}

// Validate reports every problem with the configuration, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Insecure && c.TLS != nil:
		bad("Insecure and TLS are both set: choose one")
	case !c.Insecure && c.TLS == nil:
		bad("no TLS credentials (use LoadTLSDir) and Insecure is not set")
	}
	if err := c.Versions.Validate(); err != nil {
		bad("Versions: %v", err)
	}
	for _, f := range c.Features {
		if !validFeatureName(f.Name) {
			bad("Features: invalid name %q", f.Name)
		}
	}
	if c.MaxFrameSize < MinFrameSizeLimit || c.MaxFrameSize > MaxFrameSizeLimit {
		bad("MaxFrameSize %d is outside [%d, %d]", c.MaxFrameSize, MinFrameSizeLimit, MaxFrameSizeLimit)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HandshakeTimeout", c.HandshakeTimeout}, {"HelloTimeout", c.HelloTimeout},
		{"OfferTimeout", c.OfferTimeout}, {"AgreeTimeout", c.AgreeTimeout},
		{"ReadyTimeout", c.ReadyTimeout}, {"StartTimeout", c.StartTimeout},
		{"RunIdleTimeout", c.RunIdleTimeout}, {"WriteTimeout", c.WriteTimeout},
	} {
		if d.v <= 0 {
			bad("%s must be positive, got %v", d.name, d.v)
		}
	}
	if c.MaxConcurrentHandshakes < 1 {
		bad("MaxConcurrentHandshakes must be at least 1, got %d", c.MaxConcurrentHandshakes)
	}
	if c.MaxHandshakesPerHost < 0 {
		bad("MaxHandshakesPerHost must not be negative, got %d", c.MaxHandshakesPerHost)
	}
	for _, p := range c.AllowedDNs {
		if p == "" {
			bad("AllowedDNs: empty entry")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("v2proto: invalid config: %w", errors.Join(errs...))
}

var discardLogger = func() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return l
}()

func (c *Config) logger() logrus.FieldLogger {
	if c.Logger != nil {
		return c.Logger
	}
	return discardLogger
}

func (c *Config) features() []Feature {
	if c.Features != nil {
		return c.Features
	}
	return DefaultFeatures()
}
