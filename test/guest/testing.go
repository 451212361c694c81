package guest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// StartTimeout bounds QEMU's start-up in StartTest (not the guest's boot).
const StartTimeout = 30 * time.Second

// Require checks that the test guest and QEMU are available. When they are
// not, the test fails with the reason, or is skipped when the environment
// variable MIG2_ALLOW_SKIP=1 is set. It returns the image to use.
func Require(t testing.TB, opts Options) Image {
	t.Helper()
	img := opts.Image
	if img == (Image{}) {
		var err error
		if img, err = FindImage(); err != nil {
			skipOrFatal(t, err)
		}
	} else if err := img.check(); err != nil {
		skipOrFatal(t, err)
	}
	bin := opts.QEMUBinary
	if bin == "" {
		bin = QEMUBinary()
	}
	if _, err := exec.LookPath(bin); err != nil {
		skipOrFatal(t, errors.Join(ErrNoQEMU, err))
	}
	return img
}

func skipOrFatal(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
		t.Skipf("MIG2_ALLOW_SKIP=1: %v", err)
	}
	t.Fatalf("%v (set MIG2_ALLOW_SKIP=1 to skip instead)", err)
}

// StartTest starts the test guest for a test: see Require for a missing
// image or QEMU. When opts.Dir is empty it uses a new short directory under
// os.TempDir (t.TempDir paths can exceed the unix socket path limit). QEMU is
// killed in t.Cleanup; if the test failed, the last console lines and QEMU's
// stderr are logged first.
func StartTest(t testing.TB, opts Options) *QEMU {
	t.Helper()
	opts.Image = Require(t, opts)
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "qb")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) }) // registered first: runs after Kill
		opts.Dir = dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	q, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start guest %s: %v", opts.Name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guest %s console (last 40 lines):\n%s", q.Name, lastLines(strings.Join(q.Console().Lines(), "\n"), 40))
			t.Logf("QEMU %s stderr:\n%s", q.Name, lastLines(q.Stderr(), 40))
		}
		if err := q.Kill(); err != nil {
			t.Errorf("kill guest %s: %v", q.Name, err)
		}
	})
	return q
}
