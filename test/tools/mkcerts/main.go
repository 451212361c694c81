// Command mkcerts writes a throwaway CA and a server and client certificate in QEMU's and
// libvirt's x509 layout (ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
// client-key.pem), for labs, the demo and tests. Never for production.
//
//	mkcerts [-client-dn DN] DIR HOST...
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/mig2/mig2/v2proto/testcerts"
)

func main() {
	dn := flag.String("client-dn", "CN=mig2-source,O=mig2 lab", "subject DN of the client certificate")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: mkcerts [-client-dn DN] DIR HOST...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 2 {
		flag.Usage()
		os.Exit(2)
	}
	if err := testcerts.Write(flag.Arg(0), flag.Args()[1:], *dn); err != nil {
		fmt.Fprintln(os.Stderr, "mkcerts:", err)
		os.Exit(1)
	}
}
