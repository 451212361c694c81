package main

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mig2/mig2/test/guest"
)

// testdata/domjobinfo-rawstats.txt is `virsh domjobinfo --completed --rawstats` from libvirt 9.0
// after a migration in the lab.
func TestJobStats(t *testing.T) {
	text, err := os.ReadFile("testdata/domjobinfo-rawstats.txt")
	if err != nil {
		t.Fatal(err)
	}
	var r Run
	fillJobStats(&r, parseJobStats(string(text)))
	if r.Migration != 15124*time.Millisecond || r.Downtime != 253*time.Millisecond || r.Setup != 7*time.Millisecond || r.Transferred != 690933073 {
		t.Fatalf("job stats: %+v", r)
	}
	if want := 690933073 / 15.124; r.Throughput < want*0.999 || r.Throughput > want*1.001 {
		t.Errorf("throughput %v, want %v", r.Throughput, want)
	}
	// Older virsh prints "name=value"; units after the number are dropped; junk is skipped.
	var old Run
	fillJobStats(&old, parseJobStats("time_elapsed=2000\ndowntime=30 ms\nnonsense\nmemory_processed=x\ndata_processed=1048576\n"))
	if old.Migration != 2*time.Second || old.Downtime != 30*time.Millisecond || old.Transferred != 1<<20 {
		t.Errorf("name=value form: %+v", old)
	}
	var none Run
	fillJobStats(&none, parseJobStats(""))
	if none.Migration != 0 || none.Throughput != 0 {
		t.Errorf("no statistics: %+v", none)
	}
}

func TestVirshArgs(t *testing.T) {
	if got, want := virshArgs(cVirsh, "/x.xml", "bench", "qemu+tcp://10.77.0.2/system"),
		[]string{"virsh", "migrate", "--live", "--xml", "/x.xml", "bench", "qemu+tcp://10.77.0.2/system"}; !slices.Equal(got, want) {
		t.Errorf("virsh: %q, want %q", got, want)
	}
	got := virshArgs(cVirshPar8, "/x.xml", "bench", "qemu+tcp://10.77.0.2/system")
	if i := slices.Index(got, "--parallel-connections"); i < 0 || got[i+1] != "8" || !slices.Contains(got, "--parallel") {
		t.Errorf("virsh-parallel8: %q", got)
	}
}

func TestDomainXML(t *testing.T) {
	e := &labEnv{img: guest.Image{Kernel: "/vm/vmlinux", Initrd: "/vm/initrd.cpio.gz"}}
	x := e.domainXML("bench", "/vm/serial-hosta.sock", guest.Options{MemMiB: 2048, TouchMiB: 1024, DirtyMiBps: 50, Fill: "text"})
	for _, want := range []string{"<domain type='qemu'>", "<memory unit='MiB'>2048</memory>", "qb_mem=1024", "qb_rate=50", "qb_fill=text", "/vm/serial-hosta.sock", "/vm/vmlinux"} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %q:\n%s", want, x)
		}
	}
	wellFormedXML(t, x)
}
