package driver

// The link between the hosts, as a host fact (SPEC §4.0 link_mbps): auto compression only pays
// when the network is slower than zstd on the cores (SPEC §6.3).

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mig2/mig2/v2proto"
)

// sysClassNet is where Linux reports each interface's speed (tests point it elsewhere).
var sysClassNet = "/sys/class/net"

// LinkMbps is this host's side of the link a control connection runs over (linkMbps).
func LinkMbps(c *v2proto.Conn) uint32 { return linkMbps(c.LocalAddr(), c.RemoteAddr()) }

// linkMbps is this host's side of the link the control connection runs over: LinkSameHost when
// the peer's address is one of this host's (or loopback), else the speed of the interface that
// holds the local address in Mbit/s, 0 when unknown (a virtual interface, an error).
func linkMbps(local, remote net.Addr) uint32 {
	lip, rip := tcpIP(local), tcpIP(remote)
	if lip == nil || rip == nil {
		return 0
	}
	if lip.Equal(rip) || isLocalIP(rip) {
		return v2proto.LinkSameHost
	}
	if name := interfaceWith(lip); name != "" {
		return interfaceMbps(name)
	}
	return 0
}

// sameHost reports whether a destination address (HOST:PORT) is this host: a loopback or local
// IP address, or "localhost". A name is not resolved (that would cost the pre-flight a lookup):
// it counts as another host.
func sameHost(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && isLocalIP(ip)
}

// isLocalIP reports whether ip is loopback or one of this host's interface addresses.
func isLocalIP(ip net.IP) bool {
	return ip.IsLoopback() || interfaceWith(ip) != ""
}

// interfaceWith names the interface that holds address ip, "" if none does.
func interfaceWith(ip net.IP) string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(ip) {
				return ifc.Name
			}
		}
	}
	return ""
}

// interfaceMbps reads /sys/class/net/NAME/speed: a positive number of Mbit/s, else 0.
func interfaceMbps(name string) uint32 {
	b, err := os.ReadFile(filepath.Join(sysClassNet, name, "speed"))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= v2proto.LinkSameHost {
		return 0
	}
	return uint32(n)
}

func tcpIP(a net.Addr) net.IP {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP
	}
	return nil
}
