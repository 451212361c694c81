package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	"github.com/mig2/mig2/driver"
)

func newCheckCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "check [migrate options] DOMAIN DESTURI",
		Short: "Run the v2 handshake and report compatibility, without migrating",
		Long: `Run the v2 handshake with the destination's agent up to the agreement and print what would
be agreed and how the two device trees compare. Nothing is changed on either side. It takes
the options of mig2 migrate: a libvirt domain and its destination URI, or --qmp SOCKET NAME
mig2://HOST[:PORT] for a plain QEMU. Exits 0 when the migration would be accepted, 3 with the diff when
it would be refused.

` + exitCodeTable,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseMigrateArgs(cmd, args)
			if err != nil {
				return err
			}
			if m.Help {
				return cmd.Help()
			}
			if m.QMP == "" {
				return checkLibvirt(cmd, g.connect, m)
			}
			dest, err := parseDestURI(m.DestURI)
			if err != nil {
				return err
			}
			opts := driver.MigrateOptions{Dest: dest, Wants: wantsOf(m), TLSDir: tlsDirOf(m), Insecure: m.Insecure,
				ServerName: m.TLSDestination, SkipDeviceCheck: m.SkipDeviceCheck, Log: logrus.StandardLogger()}
			q, err := driver.OpenQEMU(cmd.Context(), m.Domain, m.QMP, opts.Log)
			if err != nil {
				return err
			}
			defer q.Close()
			rep, err := q.Check(cmd.Context(), opts)
			if rep != nil {
				printCheck(cmd.OutOrStdout(), rep, m.JSON)
			}
			return err
		},
	}
}

func printCheck(w io.Writer, rep *driver.CheckReport, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(w, string(b))
		return
	}
	verdict := "compatible"
	if !rep.Compatible {
		verdict = "NOT compatible"
	}
	fmt.Fprintf(w, "Guest %q → %s: %s (source QEMU %s, destination QEMU %s)\n", rep.Guest, rep.Peer, verdict, rep.SourceQEMU, rep.DestQEMU)
	if a := rep.Agreed; a != nil {
		fmt.Fprintf(w, "  would agree: multifd channels %d, compression %s, postcopy %v, TLS %v, bandwidth %s, downtime limit %s\n",
			a.Channels, a.Compression, a.Postcopy, a.TLS, bandwidthText(a.MaxBandwidth), a.DowntimeLimit)
		for _, adj := range rep.Adjustments {
			fmt.Fprintf(w, "  adjusted %s: asked %s, agreed %s (%s)\n", adj.Param, adj.Asked, adj.Agreed, adj.Reason)
		}
	}
	if rep.Diff != nil && !rep.Diff.Empty() {
		fmt.Fprintln(w, "  device trees:")
		for _, l := range strings.Split(strings.TrimRight(rep.Diff.String(), "\n"), "\n") {
			fmt.Fprintln(w, "    "+l)
		}
	} else {
		fmt.Fprintln(w, "  device trees: identical")
	}
}
