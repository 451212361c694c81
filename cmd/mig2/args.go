package main

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/mig2/mig2/driver"
)

// defaultAgentPort is where `mig2 agent` listens unless told otherwise, next to libvirtd's
// 16509 (tcp) and 16514 (tls).
const defaultAgentPort = 16520

// parseDestURI turns mig2://HOST[:PORT] (or a bare HOST[:PORT]) into a dialable address.
func parseDestURI(s string) (string, error) {
	if s == "" {
		return "", usageErrorf("destination is empty: want mig2://HOST[:PORT]")
	}
	hostport := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", usageErrorf("destination %q: %v", s, err)
		}
		if u.Scheme != "mig2" {
			return "", usageErrorf("destination %q: scheme %q is not mig2:// (libvirt URIs such as qemu+tls:// belong to the libvirt path)", s, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
			return "", usageErrorf("destination %q: want mig2://HOST[:PORT] with nothing after the port", s)
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port given.
		host, port = strings.Trim(hostport, "[]"), strconv.Itoa(defaultAgentPort)
	}
	if host == "" {
		return "", usageErrorf("destination %q has no host", s)
	}
	if strings.ContainsAny(host, "[]/ \t") {
		return "", usageErrorf("destination %q: %q is not a host name or address", s, host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", usageErrorf("destination %q: port %q is not a number in 1-65535", s, port)
	}
	return net.JoinHostPort(host, port), nil
}

// guestSpec is one --guest flag of `mig2 agent`: NAME=QMP_SOCKET[,log=PATH].
type guestSpec struct {
	Name    string
	QMP     string
	LogPath string // optional: where that QEMU writes its stderr
}

func parseGuestSpec(s string) (guestSpec, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" || rest == "" {
		return guestSpec{}, usageErrorf("--guest %q: want NAME=QMP_SOCKET[,log=PATH]", s)
	}
	parts := strings.Split(rest, ",")
	g := guestSpec{Name: name, QMP: parts[0]}
	if g.QMP == "" {
		return guestSpec{}, usageErrorf("--guest %q: empty QMP socket path", s)
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "log":
			if v == "" {
				return guestSpec{}, usageErrorf("--guest %q: empty log path", s)
			}
			g.LogPath = v
		default:
			return guestSpec{}, usageErrorf("--guest %q: unknown option %q (known: log=PATH)", s, k)
		}
	}
	return g, nil
}

func parseGuestSpecs(in []string) ([]guestSpec, error) {
	seen := map[string]bool{}
	var out []guestSpec
	for _, s := range in {
		g, err := parseGuestSpec(s)
		if err != nil {
			return nil, err
		}
		if seen[g.Name] {
			return nil, usageErrorf("--guest %q: guest %q is named twice", s, g.Name)
		}
		seen[g.Name] = true
		out = append(out, g)
	}
	return out, nil
}

func humanBytes(n uint64) string { return driver.FormatBytes(n) }
