package v2proto

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNegotiateVersion(t *testing.T) {
	for _, tc := range []struct {
		s, d VersionRange
		want uint16
		ok   bool
	}{
		{VersionRange{1, 1}, VersionRange{1, 1}, 1, true},
		{VersionRange{1, 1}, VersionRange{1, 2}, 1, true},
		{VersionRange{1, 2}, VersionRange{1, 1}, 1, true},
		{VersionRange{1, 3}, VersionRange{2, 5}, 3, true},
		{VersionRange{2, 5}, VersionRange{1, 3}, 3, true},
		{VersionRange{1, 1}, VersionRange{2, 3}, 0, false},
		{VersionRange{4, 9}, VersionRange{1, 3}, 0, false},
		{VersionRange{0, 0}, VersionRange{1, 1}, 0, false},
	} {
		v, err := NegotiateVersion(tc.s, tc.d)
		if tc.ok != (err == nil) || v != tc.want {
			t.Errorf("%v vs %v: %d, %v", tc.s, tc.d, v, err)
		}
		if err != nil {
			var re *RefusalError
			if !errors.As(err, &re) || re.Code != AbortVersion || re.Source != tc.s.String() || re.Destination != tc.d.String() {
				t.Errorf("%v vs %v: refusal must name both ranges: %#v", tc.s, tc.d, err)
			}
			if !strings.Contains(err.Error(), tc.s.String()) || !strings.Contains(err.Error(), tc.d.String()) || !IsRefused(err) {
				t.Errorf("error text: %v", err)
			}
		}
	}
}

func TestNegotiateFeatures(t *testing.T) {
	dt := Feature{Name: FeatureDeviceTree, Required: true}
	for _, tc := range []struct {
		name    string
		s, d    []Feature
		want    []string
		missing string // the feature the refusal must name
	}{
		{"same", []Feature{dt}, []Feature{dt}, []string{"device-tree"}, ""},
		{"unknown ignored", []Feature{dt, {Name: "x.new"}}, []Feature{dt, {Name: "y.other"}}, []string{"device-tree"}, ""},
		{"common optional", []Feature{dt, {Name: "b"}, {Name: "a"}}, []Feature{{Name: "a"}, {Name: "b"}, dt}, []string{"a", "b", "device-tree"}, ""},
		{"none", nil, nil, []string{}, ""},
		{"source requires", []Feature{dt, {Name: "x.need", Required: true}}, []Feature{dt}, nil, "x.need"},
		{"destination requires", []Feature{{Name: "device-tree"}}, []Feature{dt, {Name: "y.need", Required: true}}, nil, "y.need"},
		{"destination lacks device-tree", []Feature{dt}, nil, nil, "device-tree"},
	} {
		got, err := NegotiateFeatures(tc.s, tc.d)
		if tc.missing == "" {
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("%s: %v, %v", tc.name, got, err)
			}
			continue
		}
		var re *RefusalError
		if !errors.As(err, &re) || re.Code != AbortFeature || !strings.Contains(re.What, tc.missing) {
			t.Errorf("%s: want refusal naming %q, got %v", tc.name, tc.missing, err)
		}
	}
}

func without(list []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return slices.Contains(drop, s) })
}

func TestNegotiateCapabilityRefusals(t *testing.T) {
	for _, c := range RequiredCapabilities {
		for _, side := range []string{"source", "destination"} {
			h, o := sampleHello(1), sampleOffer(1)
			if side == "source" {
				h.Host.Capabilities = without(h.Host.Capabilities, c)
			} else {
				o.Host.Capabilities = without(o.Host.Capabilities, c)
			}
			_, err := Negotiate(h, o)
			var re *RefusalError
			if !errors.As(err, &re) || re.Code != AbortCapability || !strings.Contains(re.What, c) || !strings.Contains(re.What, side) {
				t.Errorf("%s lacks %s: %v", side, c, err)
			}
		}
	}
}

func TestNegotiateTLSDiffers(t *testing.T) {
	h, o := sampleHello(1), sampleOffer(1)
	h.TLS = true
	_, err := Negotiate(h, o)
	if CodeOf(err) != AbortProtocol {
		t.Fatalf("got %v", err)
	}
}

func TestNegotiateDeviceTrees(t *testing.T) {
	h, o := sampleHello(3), sampleOffer(3)
	o.DeviceTree.Devices[0].Props["netdev"] = "other" // informational
	a, err := Negotiate(h, o)
	if err != nil || a == nil {
		t.Fatalf("informational difference refused: %v", err)
	}
	o.DeviceTree.RAMBytes *= 2
	_, err = Negotiate(h, o)
	var de *DeviceMismatchError
	if !errors.As(err, &de) || CodeOf(err) != AbortDeviceMismatch || de.Diff.SourceHost != "src" || de.Diff.DestinationHost != "dst" {
		t.Fatalf("got %v", err)
	}
	// Without the device-tree feature on both sides, trees are not compared.
	h.Features = []Feature{}
	o.Features = []Feature{}
	if _, err := Negotiate(h, o); err != nil {
		t.Fatalf("trees compared without the feature: %v", err)
	}
}

// paramCase is one row of the parameter rules table (SPEC §6).
type paramCase struct {
	name   string
	edit   func(w *Wants, hint *Compressibility, tls *bool, src, dst *HostFacts, lim *Limits)
	check  func(a *Agreement) bool
	param  string // the adjustment expected ("" = none for the params in noAdj)
	reason Reason
	noAdj  []string // params that must have no adjustment
}

func TestNegotiateParams(t *testing.T) {
	base := func() (Wants, Compressibility, bool, HostFacts, HostFacts, Limits) {
		return Wants{Channels: 4, Compression: "none", DowntimeLimitMs: 500, MaxBandwidth: 1 << 30},
			Compressibility{}, false, host72("src", 8), host72("dst", 8), Limits{}
	}
	cases := []paramCase{
		// §6.2 channels
		{name: "channels as asked", check: func(a *Agreement) bool { return a.Channels == 4 }, noAdj: []string{ParamChannels}},
		{name: "channels clamped by destination limit",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, l *Limits) {
				w.Channels, l.MaxChannels = 6, 3
			},
			check: func(a *Agreement) bool { return a.Channels == 3 }, param: ParamChannels, reason: ReasonDestinationLimit},
		{name: "channels clamped by source cores",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, s, _ *HostFacts, _ *Limits) { w.Channels, s.Cores = 6, 2 },
			check: func(a *Agreement) bool { return a.Channels == 2 }, param: ParamChannels, reason: ReasonSourceCores},
		{name: "channels clamped by destination cores",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, d *HostFacts, _ *Limits) { w.Channels, d.Cores = 6, 5 },
			check: func(a *Agreement) bool { return a.Channels == 5 }, param: ParamChannels, reason: ReasonDestinationCores},
		{name: "channels: the last clamp names the reason",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, l *Limits) {
				w.Channels, l.MaxChannels, s.Cores, d.Cores = 16, 12, 10, 3
			},
			check: func(a *Agreement) bool { return a.Channels == 3 }, param: ParamChannels, reason: ReasonDestinationCores},
		{name: "channels: unknown cores do not clamp",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, s.Cores, d.Cores = 16, 0, 0
			},
			check: func(a *Agreement) bool { return a.Channels == 16 }, noAdj: []string{ParamChannels}},
		{name: "channels: QEMU limit",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, s.Cores, d.Cores = 1000, 0, 0
			},
			check: func(a *Agreement) bool { return a.Channels == 255 }, param: ParamChannels, reason: ReasonQEMULimit},
		{name: "channels auto, TLS: min cores",
			edit: func(w *Wants, _ *Compressibility, tls *bool, s, d *HostFacts, _ *Limits) {
				*tls = true
				w.Channels, s.Cores, d.Cores = 0, 6, 4
				s.Traits = []string{TraitMultifdTeardown}
			},
			check: func(a *Agreement) bool { return a.Channels == 4 }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, TLS: at least 2",
			edit: func(w *Wants, _ *Compressibility, tls *bool, s, d *HostFacts, _ *Limits) {
				*tls = true
				w.Channels, s.Cores, d.Cores = 0, 1, 1
			},
			check: func(a *Agreement) bool { return a.Channels == 2 }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, TLS: at most 8",
			edit: func(w *Wants, _ *Compressibility, tls *bool, s, d *HostFacts, _ *Limits) {
				*tls = true
				w.Channels, s.Cores, d.Cores = 0, 64, 32
				s.Traits = []string{TraitMultifdTeardown}
			},
			check: func(a *Agreement) bool { return a.Channels == 8 }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, TLS: one side's cores unknown",
			edit: func(w *Wants, _ *Compressibility, tls *bool, s, d *HostFacts, _ *Limits) {
				*tls = true
				w.Channels, s.Cores, d.Cores = 0, 0, 6
				s.Traits = []string{TraitMultifdTeardown}
			},
			check: func(a *Agreement) bool { return a.Channels == 6 }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, many cores, source QEMU without multifd-teardown (QEMU 7.2): 2",
			edit: func(w *Wants, _ *Compressibility, tls *bool, s, d *HostFacts, _ *Limits) {
				*tls = true
				w.Channels, s.Cores, d.Cores, s.Traits = 0, 16, 16, []string{TraitCancelYank}
			},
			check: func(a *Agreement) bool { return a.Channels == 2 }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels asked 8, many cores, source QEMU without multifd-teardown: 8 (the user's choice)",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, s.Cores, d.Cores = 8, 16, 16
			},
			check: func(a *Agreement) bool { return a.Channels == 8 }},
		{name: "compression auto, compressible, 10 Gbit/s link, 2 channels (QEMU 7.2): none, zstd on 2 channels is slower",
			edit: func(w *Wants, h *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, w.Compression, *h, s.Cores, d.Cores, s.LinkMbps, d.LinkMbps = 0, "auto", Compressibility{Measured: true, Percent: 90}, 16, 16, 10000, 10000
			},
			check: func(a *Agreement) bool { return a.Compression == "none" && a.Channels == 2 }, param: ParamCompression, reason: ReasonAuto},
		{name: "channels auto, TLS: no cores known",
			edit: func(w *Wants, _ *Compressibility, tls *bool, s, d *HostFacts, _ *Limits) {
				*tls = true
				w.Channels, s.Cores, d.Cores = 0, 0, 0
			},
			check: func(a *Agreement) bool { return a.Channels == 2 }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, plaintext without compression, even a source that yanks: min cores",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, s.Cores, d.Cores, s.Traits = 0, 2, 2, []string{TraitCancelYank}
			},
			check: func(a *Agreement) bool { return a.Channels == 2 && a.Compression == "none" }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, plaintext with zstd: min cores",
			edit: func(w *Wants, h *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, s.Cores, d.Cores, w.Compression = 0, 2, 3, "zstd"
			},
			check: func(a *Agreement) bool { return a.Channels == 2 && a.Compression == "zstd" }, param: ParamChannels, reason: ReasonAuto},
		{name: "channels auto, plaintext without compression: the destination's limit still holds",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, _ *HostFacts, l *Limits) {
				w.Channels, l.MaxChannels = 0, 4
				s.Traits = []string{TraitMultifdTeardown}
			},
			check: func(a *Agreement) bool { return a.Channels == 4 }, param: ParamChannels, reason: ReasonDestinationLimit},
		{name: "channels auto: destination limit below 2 still gives 1",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, l *Limits) {
				w.Channels, l.MaxChannels = 0, 1
			},
			check: func(a *Agreement) bool { return a.Channels == 1 }, param: ParamChannels, reason: ReasonDestinationLimit},

		// §6.3 compression
		{name: "compression none", check: func(a *Agreement) bool { return a.Compression == "none" }, noAdj: []string{ParamCompression}},
		{name: "compression zstd supported",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.Compression = "zstd" },
			check: func(a *Agreement) bool { return a.Compression == "zstd" }, noAdj: []string{ParamCompression}},
		{name: "compression unsupported on source falls back to none",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, _ *HostFacts, _ *Limits) {
				w.Compression, s.Compression = "zstd", []string{"none", "zlib"}
			},
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonUnsupportedSource},
		{name: "compression unsupported on destination falls back to none",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, d *HostFacts, _ *Limits) {
				w.Compression, d.Compression = "zlib", []string{"none", "zstd"}
			},
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonUnsupportedDestination},
		{name: "compression unknown method falls back to none",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.Compression = "qpl" },
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonUnsupportedSource},
		{name: "compression auto, compressible: zstd",
			edit: func(w *Wants, h *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, *h = "auto", Compressibility{Measured: true, Percent: 80}
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto (empty), at the threshold: zstd",
			edit: func(w *Wants, h *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, *h = "", Compressibility{Measured: true, Percent: CompressibleThreshold}
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, compressible, same host: none",
			edit: func(w *Wants, h *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, w.Compression, *h, s.LinkMbps, d.LinkMbps = 0, "auto", Compressibility{Measured: true, Percent: 90}, LinkSameHost, 0
				s.Traits = []string{TraitMultifdTeardown}
			},
			check: func(a *Agreement) bool { return a.Compression == "none" && a.Channels == 8 }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, compressible, link faster than zstd on the cores: none",
			edit: func(w *Wants, h *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Compression, *h, s.Cores, d.Cores, s.LinkMbps, d.LinkMbps = "auto", Compressibility{Measured: true, Percent: 90}, 2, 2, 10000, 25000
			},
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, compressible, slow link: zstd",
			edit: func(w *Wants, h *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, w.Compression, *h, s.Cores, d.Cores, s.LinkMbps, d.LinkMbps = 0, "auto", Compressibility{Measured: true, Percent: 90}, 2, 2, 10000, 1000
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" && a.Channels == 2 }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, compressible, many cores outrun the link: zstd",
			edit: func(w *Wants, h *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Channels, w.Compression, *h, s.Cores, d.Cores, s.LinkMbps, d.LinkMbps = 0, "auto", Compressibility{Measured: true, Percent: 90}, 16, 16, 10000, 10000
				s.Traits = []string{TraitMultifdTeardown}
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" && a.Channels == 8 }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, compressible, TLS on one host: zstd",
			edit: func(w *Wants, h *Compressibility, tls *bool, s, _ *HostFacts, _ *Limits) {
				w.Compression, *h, *tls, s.LinkMbps = "auto", Compressibility{Measured: true, Percent: 90}, true, LinkSameHost
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, not compressible: none",
			edit: func(w *Wants, h *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, *h = "auto", Compressibility{Measured: true, Percent: CompressibleThreshold - 1}
			},
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, no hint: none",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.Compression = "auto" },
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, destination lacks zstd: none",
			edit: func(w *Wants, h *Compressibility, _ *bool, _, d *HostFacts, _ *Limits) {
				w.Compression, *h, d.Compression = "auto", Compressibility{Measured: true, Percent: 90}, []string{"none", "zlib"}
			},
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto with zero-copy wanted on plaintext: none",
			edit: func(w *Wants, h *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, *h, w.ZeroCopySend = "auto", Compressibility{Measured: true, Percent: 90}, true
			},
			check: func(a *Agreement) bool { return a.Compression == "none" && a.ZeroCopySend }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, TLS, incompressible memory: zstd (QEMU's TLS record per page)",
			edit: func(w *Wants, h *Compressibility, tls *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, *h, *tls = "auto", Compressibility{Measured: true, Percent: 0}, true
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, TLS, memory not measured: zstd",
			edit: func(w *Wants, h *Compressibility, tls *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, *h, *tls = "auto", Compressibility{}, true
			},
			check: func(a *Agreement) bool { return a.Compression == "zstd" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression auto, TLS, destination lacks zstd: none",
			edit: func(w *Wants, _ *Compressibility, tls *bool, _, d *HostFacts, _ *Limits) {
				w.Compression, *tls, d.Compression = "auto", true, []string{"none"}
			},
			check: func(a *Agreement) bool { return a.Compression == "none" }, param: ParamCompression, reason: ReasonAuto},
		{name: "compression level kept",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, w.CompressionLevel = "zstd", 3
			},
			check: func(a *Agreement) bool { return a.CompressionLevel == 3 }, noAdj: []string{ParamCompressionLevel}},
		{name: "compression level clamped",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.Compression, w.CompressionLevel = "zlib", 15
			},
			check: func(a *Agreement) bool { return a.CompressionLevel == 9 }, param: ParamCompressionLevel, reason: ReasonLevelRange},
		{name: "compression level dropped without compression",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.CompressionLevel = 5 },
			check: func(a *Agreement) bool { return a.CompressionLevel == 0 }, param: ParamCompressionLevel, reason: ReasonCompressionNone},

		// §6.4 postcopy
		{name: "postcopy not asked", check: func(a *Agreement) bool { return !a.Postcopy }, noAdj: []string{ParamPostcopy}},
		{name: "postcopy dropped on QEMU 7.2 (no multifd+postcopy)",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.Postcopy = true },
			check: func(a *Agreement) bool { return !a.Postcopy }, param: ParamPostcopy, reason: ReasonMultifdPostcopy},
		{name: "postcopy on QEMUs that can combine it with multifd",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Postcopy, s.Traits, d.Traits = true, []string{TraitMultifdPostcopy}, []string{TraitMultifdPostcopy}
			},
			check: func(a *Agreement) bool { return a.Postcopy }, noAdj: []string{ParamPostcopy}},
		{name: "postcopy: one side cannot combine",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, _ *HostFacts, _ *Limits) {
				w.Postcopy, s.Traits = true, []string{TraitMultifdPostcopy}
			},
			check: func(a *Agreement) bool { return !a.Postcopy }, param: ParamPostcopy, reason: ReasonMultifdPostcopy},
		{name: "postcopy unsupported on source",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, _ *HostFacts, _ *Limits) {
				w.Postcopy, s.Capabilities = true, without(s.Capabilities, CapPostcopyRAM)
			},
			check: func(a *Agreement) bool { return !a.Postcopy }, param: ParamPostcopy, reason: ReasonUnsupportedSource},
		{name: "postcopy unsupported on destination",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, d *HostFacts, _ *Limits) {
				w.Postcopy, d.Capabilities = true, without(d.Capabilities, CapPostcopyRAM)
			},
			check: func(a *Agreement) bool { return !a.Postcopy }, param: ParamPostcopy, reason: ReasonUnsupportedDestination},
		{name: "postcopy denied by destination policy",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, l *Limits) {
				w.Postcopy, s.Traits, d.Traits, l.DenyPostcopy = true, []string{TraitMultifdPostcopy}, []string{TraitMultifdPostcopy}, true
			},
			check: func(a *Agreement) bool { return !a.Postcopy }, param: ParamPostcopy, reason: ReasonDestinationPolicy},
		{name: "postcopy preempt with postcopy",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Postcopy, w.PostcopyPreempt, s.Traits, d.Traits = true, true, []string{TraitMultifdPostcopy}, []string{TraitMultifdPostcopy}
			},
			check: func(a *Agreement) bool { return a.Postcopy && a.PostcopyPreempt }, noAdj: []string{ParamPostcopy, ParamPostcopyPreempt}},
		{name: "postcopy preempt without postcopy",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.PostcopyPreempt = true },
			check: func(a *Agreement) bool { return !a.PostcopyPreempt }, param: ParamPostcopyPreempt, reason: ReasonRequiresPostcopy},
		{name: "postcopy preempt unsupported on source",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Postcopy, w.PostcopyPreempt, s.Traits, d.Traits = true, true, []string{TraitMultifdPostcopy}, []string{TraitMultifdPostcopy}
				s.Capabilities = without(s.Capabilities, CapPostcopyPreempt)
			},
			check: func(a *Agreement) bool { return a.Postcopy && !a.PostcopyPreempt }, param: ParamPostcopyPreempt, reason: ReasonUnsupportedSource},
		{name: "postcopy preempt unsupported on destination",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, d *HostFacts, _ *Limits) {
				w.Postcopy, w.PostcopyPreempt, s.Traits, d.Traits = true, true, []string{TraitMultifdPostcopy}, []string{TraitMultifdPostcopy}
				d.Capabilities = without(d.Capabilities, CapPostcopyPreempt)
			},
			check: func(a *Agreement) bool { return a.Postcopy && !a.PostcopyPreempt }, param: ParamPostcopyPreempt, reason: ReasonUnsupportedDestination},

		// §6.5 zero-copy send
		{name: "zero-copy on plaintext without compression",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.ZeroCopySend = true },
			check: func(a *Agreement) bool { return a.ZeroCopySend }, noAdj: []string{ParamZeroCopySend}},
		{name: "zero-copy with TLS",
			edit: func(w *Wants, _ *Compressibility, tls *bool, _, _ *HostFacts, _ *Limits) {
				w.ZeroCopySend, *tls = true, true
			},
			check: func(a *Agreement) bool { return !a.ZeroCopySend && a.TLS }, param: ParamZeroCopySend, reason: ReasonTLSEnabled},
		{name: "zero-copy with compression",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) {
				w.ZeroCopySend, w.Compression = true, "zstd"
			},
			check: func(a *Agreement) bool { return !a.ZeroCopySend }, param: ParamZeroCopySend, reason: ReasonCompressionEnabled},
		{name: "zero-copy unsupported by the source QEMU",
			edit: func(w *Wants, _ *Compressibility, _ *bool, s, _ *HostFacts, _ *Limits) {
				w.ZeroCopySend, s.Capabilities = true, without(s.Capabilities, CapZeroCopySend)
			},
			check: func(a *Agreement) bool { return !a.ZeroCopySend }, param: ParamZeroCopySend, reason: ReasonUnsupportedSource},
		{name: "zero-copy is source-only: the destination need not support it",
			edit: func(w *Wants, _ *Compressibility, _ *bool, _, d *HostFacts, _ *Limits) {
				w.ZeroCopySend, d.Capabilities = true, without(d.Capabilities, CapZeroCopySend)
			},
			check: func(a *Agreement) bool { return a.ZeroCopySend }, noAdj: []string{ParamZeroCopySend}},

		// §6.6 bandwidth, downtime
		{name: "bandwidth and downtime as asked",
			check: func(a *Agreement) bool { return a.MaxBandwidth == 1<<30 && a.DowntimeLimitMs == 500 },
			noAdj: []string{ParamMaxBandwidth, ParamDowntimeLimit}},
		{name: "bandwidth auto is unlimited",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.MaxBandwidth = 0 },
			check: func(a *Agreement) bool { return a.MaxBandwidth == 0 }, param: ParamMaxBandwidth, reason: ReasonAuto},
		{name: "downtime auto is 300 ms",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.DowntimeLimitMs = 0 },
			check: func(a *Agreement) bool { return a.DowntimeLimitMs == 300 }, param: ParamDowntimeLimit, reason: ReasonAuto},
		{name: "downtime above QEMU's limit",
			edit:  func(w *Wants, _ *Compressibility, _ *bool, _, _ *HostFacts, _ *Limits) { w.DowntimeLimitMs = 1 << 40 },
			check: func(a *Agreement) bool { return a.DowntimeLimitMs == MaxDowntimeLimitMs }, param: ParamDowntimeLimit, reason: ReasonQEMULimit},

		// §6.7 TLS, §6.1 always-on
		{name: "TLS follows the control channel",
			edit:  func(_ *Wants, _ *Compressibility, tls *bool, _, _ *HostFacts, _ *Limits) { *tls = true },
			check: func(a *Agreement) bool { return a.TLS && a.ReturnPath && a.PauseBeforeSwitchover }},
		{name: "return-path and pause-before-switchover always on",
			check: func(a *Agreement) bool { return !a.TLS && a.ReturnPath && a.PauseBeforeSwitchover }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, hint, tls, src, dst, lim := base()
			if tc.edit != nil {
				tc.edit(&w, &hint, &tls, &src, &dst, &lim)
			}
			a := NegotiateParams(w, hint, tls, &src, &dst, lim)
			again := NegotiateParams(w, hint, tls, &src, &dst, lim)
			if ok, diff := EqualAgreements(a, again); !ok {
				t.Fatalf("not deterministic: %s", diff)
			}
			if tc.check != nil && !tc.check(a) {
				t.Errorf("check failed: %v; adjustments %v", a, a.Adjustments)
			}
			if tc.param != "" {
				adj, ok := a.Adjustment(tc.param)
				if !ok || adj.Reason != tc.reason {
					t.Errorf("want %s adjusted with reason %s, got %+v (all: %v)", tc.param, tc.reason, adj, a.Adjustments)
				}
				if ok && (adj.Detail == "" || adj.Asked == adj.Agreed && adj.Asked != "auto") {
					t.Errorf("adjustment lacks detail or changes nothing: %+v", adj)
				}
			}
			for _, p := range tc.noAdj {
				if adj, ok := a.Adjustment(p); ok {
					t.Errorf("unexpected adjustment %v", adj)
				}
			}
			if a.Channels < 1 {
				t.Errorf("channels %d: v2 is always multifd", a.Channels)
			}
		})
	}
}

// TestEveryDifferenceHasAReason: whatever the source asks, every agreed value that differs from
// the ask carries an adjustment (SPEC §6: "every value that differs ... carries a reason").
func TestEveryDifferenceHasAReason(t *testing.T) {
	for _, w := range []Wants{
		{},
		{Channels: 64, Compression: "zlib", CompressionLevel: 12, Postcopy: true, PostcopyPreempt: true, ZeroCopySend: true},
		{Channels: 2, Compression: "zstd", ZeroCopySend: true, MaxBandwidth: 1, DowntimeLimitMs: 1},
	} {
		for _, tls := range []bool{false, true} {
			src, dst := host72("s", 4), host72("d", 2)
			a := NegotiateParams(w, Compressibility{Measured: true, Percent: 50}, tls, &src, &dst, Limits{MaxChannels: 3})
			check := func(param string, differs bool) {
				if _, ok := a.Adjustment(param); differs && !ok {
					t.Errorf("%+v tls=%v: %s differs without a reason: %v", w, tls, param, a)
				}
			}
			check(ParamChannels, a.Channels != w.Channels)
			check(ParamCompression, a.Compression != w.Compression)
			check(ParamCompressionLevel, a.CompressionLevel != w.CompressionLevel)
			check(ParamPostcopy, a.Postcopy != w.Postcopy)
			check(ParamPostcopyPreempt, a.PostcopyPreempt != w.PostcopyPreempt)
			check(ParamZeroCopySend, a.ZeroCopySend != w.ZeroCopySend)
			check(ParamMaxBandwidth, w.MaxBandwidth == 0)
			check(ParamDowntimeLimit, a.DowntimeLimitMs != w.DowntimeLimitMs)
		}
	}
}

// TestAdjustmentOrder: adjustments come in the order of SPEC §6.8.
func TestAdjustmentOrder(t *testing.T) {
	src, dst := host72("s", 4), host72("d", 4)
	dst.Compression = []string{"none", "zlib"} // no zstd: compression none, so the level is dropped too
	a := NegotiateParams(Wants{CompressionLevel: 3, Postcopy: true, PostcopyPreempt: true, ZeroCopySend: true}, Compressibility{}, true, &src, &dst, Limits{})
	var got []string
	for _, adj := range a.Adjustments {
		got = append(got, adj.Param)
	}
	want := []string{ParamChannels, ParamCompression, ParamCompressionLevel, ParamPostcopy, ParamPostcopyPreempt, ParamZeroCopySend, ParamMaxBandwidth, ParamDowntimeLimit}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v", got)
	}
}

// TestEqualAgreementsIgnoresDetail: the free-text detail does not enter the comparison
// (SPEC §4.3), everything else does.
func TestEqualAgreementsIgnoresDetail(t *testing.T) {
	src, dst := host72("s", 4), host72("d", 4)
	a := NegotiateParams(Wants{}, Compressibility{}, false, &src, &dst, Limits{})
	b := NegotiateParams(Wants{}, Compressibility{}, false, &src, &dst, Limits{})
	b.Adjustments[0].Detail = "worded differently by another implementation"
	if ok, diff := EqualAgreements(a, b); !ok {
		t.Fatalf("detail compared: %s", diff)
	}
	b.Adjustments[0].Reason = ReasonDestinationLimit
	if ok, _ := EqualAgreements(a, b); ok {
		t.Fatal("reason not compared")
	}
	c := NegotiateParams(Wants{}, Compressibility{}, false, &src, &dst, Limits{})
	c.Channels++
	if ok, diff := EqualAgreements(a, c); ok || !strings.Contains(diff, "channels=") {
		t.Fatalf("channels not compared: %s", diff)
	}
	if a.Adjustments[0].Detail == "worded differently by another implementation" {
		t.Fatal("EqualAgreements modified its argument")
	}
}
