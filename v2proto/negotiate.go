package v2proto

// Negotiation (SPEC §5, §6): pure, deterministic functions of the decoded Hello and Offer. Both
// sides run them; the source's result goes into Agree and the destination checks it.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Reason says why an agreed value differs from what the source asked (SPEC §6.9).
type Reason string

// Reasons, SPEC §6.9.
const (
	ReasonAuto                   Reason = "auto"
	ReasonDestinationLimit       Reason = "destination-limit"
	ReasonSourceCores            Reason = "source-cores"
	ReasonDestinationCores       Reason = "destination-cores"
	ReasonQEMULimit              Reason = "qemu-limit"
	ReasonUnsupportedSource      Reason = "unsupported-source"
	ReasonUnsupportedDestination Reason = "unsupported-destination"
	ReasonDestinationPolicy      Reason = "destination-policy"
	ReasonMultifdPostcopy        Reason = "multifd-postcopy"
	ReasonRequiresPostcopy       Reason = "requires-postcopy"
	ReasonTLSEnabled             Reason = "tls-enabled"
	ReasonCompressionEnabled     Reason = "compression-enabled"
	ReasonCompressionNone        Reason = "compression-none"
	ReasonLevelRange             Reason = "level-range"
)

// Parameter names used in adjustments (QEMU's spelling, SPEC §6.8).
const (
	ParamChannels         = "multifd-channels"
	ParamCompression      = "multifd-compression"
	ParamCompressionLevel = "multifd-compression-level"
	ParamPostcopy         = "postcopy-ram"
	ParamPostcopyPreempt  = "postcopy-preempt"
	ParamZeroCopySend     = "zero-copy-send"
	ParamMaxBandwidth     = "max-bandwidth"
	ParamDowntimeLimit    = "downtime-limit"
)

// Protocol constants of SPEC §6.
const (
	AutoChannelsMin              = 2
	AutoChannelsMax              = 8
	MaxChannels                  = 255     // QEMU's multifd-channels limit
	CompressibleThreshold        = 30      // percent, SPEC §6.3
	AutoDowntimeLimitMs          = 300     // SPEC §6.6
	MaxDowntimeLimitMs           = 2000000 // QEMU's limit
	CompressionNone              = "none"
	CompressionAuto              = "auto"
	CompressionZstd              = "zstd"
	CompressionZlib              = "zlib"
	CapMultifd                   = "multifd"
	CapReturnPath                = "return-path"
	CapPauseBeforeSwitch         = "pause-before-switchover"
	CapPostcopyRAM               = "postcopy-ram"
	CapPostcopyPreempt           = "postcopy-preempt"
	CapZeroCopySend              = "zero-copy-send"
	ProtocolVersion       uint16 = 1 // the version this package implements
)

// RequiredCapabilities are the QEMU capabilities v2 needs on both sides (SPEC §6.1).
var RequiredCapabilities = []string{CapMultifd, CapReturnPath, CapPauseBeforeSwitch}

// NegotiateVersion returns the highest version in both ranges (SPEC §5.1).
func NegotiateVersion(source, destination VersionRange) (uint16, error) {
	v := min(source.Max, destination.Max)
	if v < max(source.Min, destination.Min) || source.Validate() != nil || destination.Validate() != nil {
		return 0, &RefusalError{Code: AbortVersion, What: "no common protocol version",
			Source: source.String(), Destination: destination.String()}
	}
	return v, nil
}

func renderFeatures(fs []Feature) string {
	if len(fs) == 0 {
		return "[]"
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Name
		if f.Required {
			parts[i] += "(required)"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func hasFeature(fs []Feature, name string) bool {
	return slices.ContainsFunc(fs, func(f Feature) bool { return f.Name == name })
}

// NegotiateFeatures returns the sorted common feature names; a feature required by one side and
// missing on the other is a refusal naming both lists (SPEC §5.2). Unknown names are ignored.
func NegotiateFeatures(source, destination []Feature) ([]string, error) {
	for _, f := range source {
		if f.Required && !hasFeature(destination, f.Name) {
			return nil, &RefusalError{Code: AbortFeature, What: fmt.Sprintf("feature %q required by the source is missing on the destination", f.Name),
				Source: renderFeatures(source), Destination: renderFeatures(destination)}
		}
	}
	for _, f := range destination {
		if f.Required && !hasFeature(source, f.Name) {
			return nil, &RefusalError{Code: AbortFeature, What: fmt.Sprintf("feature %q required by the destination is missing on the source", f.Name),
				Source: renderFeatures(source), Destination: renderFeatures(destination)}
		}
	}
	common := []string{}
	for _, f := range source {
		if hasFeature(destination, f.Name) {
			common = append(common, f.Name)
		}
	}
	slices.Sort(common)
	return slices.Compact(common), nil
}

func presence(ok bool) string {
	if ok {
		return "present"
	}
	return "missing"
}

// checkCapabilities enforces SPEC §6.1.
func checkCapabilities(src, dst *HostFacts) error {
	for _, c := range RequiredCapabilities {
		s, d := src.HasCapability(c), dst.HasCapability(c)
		if s && d {
			continue
		}
		lacking := "source"
		if s {
			lacking = "destination"
		} else if !d {
			lacking = "source and destination"
		}
		return &RefusalError{Code: AbortCapability, What: fmt.Sprintf("capability %q (required by v2) is missing on the %s QEMU", c, lacking),
			Source: presence(s), Destination: presence(d)}
	}
	return nil
}

// Negotiate computes the agreement from the decoded Hello and Offer (SPEC §5): versions,
// features, control-channel TLS, required capabilities, device trees, then parameters. The first
// failure is returned as a *RefusalError or *DeviceMismatchError.
func Negotiate(h *Hello, o *Offer) (*Agreement, error) {
	v, err := NegotiateVersion(h.Versions, o.Versions)
	if err != nil {
		return nil, err
	}
	features, err := NegotiateFeatures(h.Features, o.Features)
	if err != nil {
		return nil, err
	}
	if h.TLS != o.TLS {
		return nil, &RefusalError{Code: AbortProtocol, What: "control-channel TLS differs",
			Source: strconv.FormatBool(h.TLS), Destination: strconv.FormatBool(o.TLS)}
	}
	if err := checkCapabilities(&h.Host, &o.Host); err != nil {
		return nil, err
	}
	if slices.Contains(features, FeatureDeviceTree) {
		diff := DiffTrees(&h.DeviceTree, &o.DeviceTree)
		diff.SourceHost, diff.DestinationHost = h.Host.Hostname, o.Host.Hostname
		if diff.Fatal() {
			return nil, &DeviceMismatchError{Diff: diff}
		}
	}
	a := NegotiateParams(h.Wants, h.Compressibility, h.TLS, &h.Host, &o.Host, o.Limits)
	a.Version = v
	a.Features = features
	return a, nil
}

// ZstdMbpsPerCore is how much input zstd at QEMU's default level is assumed to compress per
// core, in Mbit/s (a conservative figure for level 1 on today's servers; SPEC §6.3).
const ZstdMbpsPerCore = 2000

// coreBase is the auto channel count when the channels do CPU work: min(source cores,
// destination cores) over the known counts, clamped to [AutoChannelsMin, AutoChannelsMax].
func coreBase(src, dst *HostFacts) uint32 {
	base := uint32(0)
	switch {
	case src.Cores > 0 && dst.Cores > 0:
		base = min(src.Cores, dst.Cores)
	case src.Cores > 0:
		base = src.Cores
	case dst.Cores > 0:
		base = dst.Cores
	}
	return min(max(base, AutoChannelsMin), AutoChannelsMax)
}

// linkMbps is the link between the two hosts as their facts describe it: LinkSameHost if either
// side says the peer is on its host, else the slower of the known speeds, 0 if neither is known.
func linkMbps(src, dst *HostFacts) uint32 {
	switch {
	case src.LinkMbps == LinkSameHost || dst.LinkMbps == LinkSameHost:
		return LinkSameHost
	case src.LinkMbps == 0:
		return dst.LinkMbps
	case dst.LinkMbps == 0:
		return src.LinkMbps
	}
	return min(src.LinkMbps, dst.LinkMbps)
}

// NegotiateParams applies the parameter rules of SPEC §6.2–§6.8. It never fails: what cannot be
// had is dropped or clamped, with an Adjustment saying why.
func NegotiateParams(w Wants, hint Compressibility, tls bool, src, dst *HostFacts, lim Limits) *Agreement {
	a := &Agreement{TLS: tls, ReturnPath: true, PauseBeforeSwitchover: true}
	adjust := func(param, asked, agreed string, r Reason, detail string) {
		a.Adjustments = append(a.Adjustments, Adjustment{Param: param, Asked: asked, Agreed: agreed, Reason: r, Detail: detail})
	}

	// §6.2 channels.
	var chReason Reason
	var chDetail []string
	ch := w.Channels
	asked := strconv.FormatUint(uint64(w.Channels), 10)
	if w.Channels == 0 {
		asked = "auto"
		chReason = ReasonAuto
		ch = coreBase(src, dst)
		chDetail = append(chDetail, fmt.Sprintf("min(source cores %s, destination cores %s) clamped to [%d,%d] = %d",
			cores(src.Cores), cores(dst.Cores), AutoChannelsMin, AutoChannelsMax, ch))
		if ch > AutoChannelsMin && !src.HasTrait(TraitMultifdTeardown) {
			ch = AutoChannelsMin
			chDetail = append(chDetail, fmt.Sprintf("at most %d: the source QEMU (%s) does not cancel a migration with more multifd channels cleanly", ch, orUnknown(src.QEMUVersion)))
		}
		if lim.MaxChannels > 0 && ch > lim.MaxChannels {
			ch, chReason = lim.MaxChannels, ReasonDestinationLimit
			chDetail = append(chDetail, fmt.Sprintf("destination allows at most %d", lim.MaxChannels))
		}
	} else {
		if lim.MaxChannels > 0 && ch > lim.MaxChannels {
			ch, chReason = lim.MaxChannels, ReasonDestinationLimit
			chDetail = append(chDetail, fmt.Sprintf("destination allows at most %d", lim.MaxChannels))
		}
		if src.Cores > 0 && ch > src.Cores {
			ch, chReason = src.Cores, ReasonSourceCores
			chDetail = append(chDetail, fmt.Sprintf("source host has %d cores", src.Cores))
		}
		if dst.Cores > 0 && ch > dst.Cores {
			ch, chReason = dst.Cores, ReasonDestinationCores
			chDetail = append(chDetail, fmt.Sprintf("destination host has %d cores", dst.Cores))
		}
	}
	if ch > MaxChannels {
		ch, chReason = MaxChannels, ReasonQEMULimit
		chDetail = append(chDetail, fmt.Sprintf("QEMU allows at most %d", MaxChannels))
	}
	if ch < 1 {
		ch = 1
	}
	a.Channels = ch
	if chReason != "" {
		adjust(ParamChannels, asked, strconv.FormatUint(uint64(ch), 10), chReason, strings.Join(chDetail, "; "))
	}

	// §6.3 compression.
	compression := negotiateCompression(w, hint, tls, src, dst, a.Channels)
	a.Compression = compression.Method
	if compression.Adjustment != nil {
		a.Adjustments = append(a.Adjustments, *compression.Adjustment)
	}

	lvl := w.CompressionLevel
	switch a.Compression {
	case CompressionNone:
		lvl = 0
		if w.CompressionLevel != 0 {
			adjust(ParamCompressionLevel, strconv.FormatUint(uint64(w.CompressionLevel), 10), "0", ReasonCompressionNone, "no compression, no level")
		}
	default:
		lo, hi := uint32(1), uint32(0)
		switch a.Compression {
		case CompressionZlib:
			hi = 9
		case CompressionZstd:
			hi = 20
		}
		if lvl != 0 && hi != 0 && (lvl < lo || lvl > hi) {
			lvl = min(max(lvl, lo), hi)
			adjust(ParamCompressionLevel, strconv.FormatUint(uint64(w.CompressionLevel), 10), strconv.FormatUint(uint64(lvl), 10),
				ReasonLevelRange, fmt.Sprintf("%s levels are %d-%d", a.Compression, lo, hi))
		}
	}
	a.CompressionLevel = lvl

	// §6.4 postcopy.
	if w.Postcopy {
		switch {
		case !src.HasCapability(CapPostcopyRAM):
			adjust(ParamPostcopy, "true", "false", ReasonUnsupportedSource, "the source QEMU has no postcopy-ram capability")
		case !dst.HasCapability(CapPostcopyRAM):
			adjust(ParamPostcopy, "true", "false", ReasonUnsupportedDestination, "the destination QEMU has no postcopy-ram capability")
		case lim.DenyPostcopy:
			adjust(ParamPostcopy, "true", "false", ReasonDestinationPolicy, "the destination's policy forbids postcopy")
		case !src.HasTrait(TraitMultifdPostcopy) || !dst.HasTrait(TraitMultifdPostcopy):
			adjust(ParamPostcopy, "true", "false", ReasonMultifdPostcopy,
				fmt.Sprintf("v2 always uses multifd and multifd cannot be combined with postcopy before QEMU 10.1 (source QEMU %s: %s, destination QEMU %s: %s)",
					orUnknown(src.QEMUVersion), canOrNot(src.HasTrait(TraitMultifdPostcopy)), orUnknown(dst.QEMUVersion), canOrNot(dst.HasTrait(TraitMultifdPostcopy))))
		default:
			a.Postcopy = true
		}
	}
	if w.PostcopyPreempt {
		switch {
		case !a.Postcopy:
			adjust(ParamPostcopyPreempt, "true", "false", ReasonRequiresPostcopy, "postcopy preemption needs postcopy, which was not agreed")
		case !src.HasCapability(CapPostcopyPreempt):
			adjust(ParamPostcopyPreempt, "true", "false", ReasonUnsupportedSource, "the source QEMU has no postcopy-preempt capability")
		case !dst.HasCapability(CapPostcopyPreempt):
			adjust(ParamPostcopyPreempt, "true", "false", ReasonUnsupportedDestination, "the destination QEMU has no postcopy-preempt capability")
		default:
			a.PostcopyPreempt = true
		}
	}

	// §6.5 zero-copy send.
	if w.ZeroCopySend {
		switch {
		case !src.HasCapability(CapZeroCopySend):
			adjust(ParamZeroCopySend, "true", "false", ReasonUnsupportedSource, "the source QEMU has no zero-copy-send capability")
		case tls:
			adjust(ParamZeroCopySend, "true", "false", ReasonTLSEnabled, "QEMU cannot combine zero-copy send with TLS")
		case a.Compression != CompressionNone:
			adjust(ParamZeroCopySend, "true", "false", ReasonCompressionEnabled, "QEMU cannot combine zero-copy send with multifd compression")
		default:
			a.ZeroCopySend = true
		}
	}

	// §6.6 bandwidth and downtime.
	a.MaxBandwidth = w.MaxBandwidth
	if w.MaxBandwidth == 0 {
		adjust(ParamMaxBandwidth, "auto", "unlimited", ReasonAuto, "v2 lifts QEMU's 128 MiB/s default")
	}
	a.DowntimeLimitMs = w.DowntimeLimitMs
	switch {
	case w.DowntimeLimitMs == 0:
		a.DowntimeLimitMs = AutoDowntimeLimitMs
		adjust(ParamDowntimeLimit, "auto", strconv.Itoa(AutoDowntimeLimitMs), ReasonAuto, "QEMU's default downtime limit (ms)")
	case w.DowntimeLimitMs > MaxDowntimeLimitMs:
		a.DowntimeLimitMs = MaxDowntimeLimitMs
		adjust(ParamDowntimeLimit, strconv.FormatUint(w.DowntimeLimitMs, 10), strconv.Itoa(MaxDowntimeLimitMs), ReasonQEMULimit, "QEMU's maximum downtime limit (ms)")
	}
	return a
}

func cores(n uint32) string {
	if n == 0 {
		return "unknown"
	}
	return strconv.FormatUint(uint64(n), 10)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown version"
	}
	return s
}

func canOrNot(ok bool) string {
	if ok {
		return "can"
	}
	return "cannot"
}

// EqualAgreements compares two agreements as SPEC §4.3 says: every field, and each adjustment's
// param, asked, agreed and reason, in order; an adjustment's detail is free text for people and
// is not compared (two implementations may word it differently). When they differ it says how.
func EqualAgreements(a, b *Agreement) (bool, string) {
	strip := func(x *Agreement) []byte {
		c := *x
		c.Adjustments = make([]Adjustment, len(x.Adjustments))
		for i, adj := range x.Adjustments {
			adj.Detail = ""
			c.Adjustments[i] = adj
		}
		bl := &builder{}
		c.marshal(bl)
		return bl.bytes()
	}
	if string(strip(a)) == string(strip(b)) {
		return true, ""
	}
	if a.String() != b.String() {
		return false, fmt.Sprintf("%s vs %s", a.String(), b.String())
	}
	return false, fmt.Sprintf("adjustments differ: %v vs %v", a.Adjustments, b.Adjustments)
}

// compressionChoice is §6.3's outcome: the method and, when it differs from what was asked or
// was chosen automatically, the adjustment that says why.
type compressionChoice struct {
	Method     string
	Adjustment *Adjustment
}

func (c *compressionChoice) adjust(asked, agreed string, r Reason, detail string) {
	c.Adjustment = &Adjustment{Param: ParamCompression, Asked: asked, Agreed: agreed, Reason: r, Detail: detail}
}

// negotiateCompression applies §6.3's method rules; each of the agreed channels compresses on
// its own thread.
func negotiateCompression(w Wants, hint Compressibility, tls bool, src, dst *HostFacts, channels uint32) compressionChoice {
	var c compressionChoice
	supports := func(h *HostFacts, m string) bool { return m == CompressionNone || slices.Contains(h.Compression, m) }
	zeroCopyPossible := w.ZeroCopySend && !tls && src.HasCapability(CapZeroCopySend)
	switch m := w.Compression; m {
	case CompressionNone:
		c.Method = CompressionNone
	case "", CompressionAuto:
		c.Method = CompressionNone
		var why string
		link, capacity := linkMbps(src, dst), ZstdMbpsPerCore*min(channels, coreBase(src, dst))
		switch {
		case zeroCopyPossible:
			why = "zero-copy send was requested and needs no compression"
		case !supports(src, CompressionZstd):
			why = "the source QEMU does not support zstd"
		case !supports(dst, CompressionZstd):
			why = "the destination QEMU does not support zstd"
		case tls:
			c.Method = CompressionZstd
			why = "TLS stream: without compression QEMU sends a TLS record per page, zstd packs whole multifd packets, so it is faster even on memory that does not compress"
		case link == LinkSameHost:
			why = "source and destination are on one host: copying is faster than compressing"
		case link != 0 && link >= capacity:
			why = fmt.Sprintf("the %d Mbit/s link is faster than zstd on %d channels (about %d Mbit/s)", link, capacity/ZstdMbpsPerCore, capacity)
		case !hint.Measured:
			why = "no compressibility measurement from the source"
		case hint.Percent < CompressibleThreshold:
			why = fmt.Sprintf("only %d%% of memory compresses well (threshold %d%%)", hint.Percent, CompressibleThreshold)
		default:
			c.Method = CompressionZstd
			why = fmt.Sprintf("%d%% of memory compresses well (threshold %d%%) and both QEMUs support zstd", hint.Percent, CompressibleThreshold)
			if link != 0 {
				why += fmt.Sprintf("; the %d Mbit/s link is slower than zstd on %d channels (about %d Mbit/s)", link, capacity/ZstdMbpsPerCore, capacity)
			}
		}
		c.adjust(CompressionAuto, c.Method, ReasonAuto, why)
	default:
		switch {
		case !supports(src, m):
			c.Method = CompressionNone
			c.adjust(m, CompressionNone, ReasonUnsupportedSource,
				fmt.Sprintf("source QEMU supports %v; falling back to none", src.Compression))
		case !supports(dst, m):
			c.Method = CompressionNone
			c.adjust(m, CompressionNone, ReasonUnsupportedDestination,
				fmt.Sprintf("destination QEMU supports %v; falling back to none", dst.Compression))
		default:
			c.Method = m
		}
	}
	return c
}
