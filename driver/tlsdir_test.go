package driver

import (
	"os"
	"path/filepath"
	"testing"
)

func TestShadowTLSDir(t *testing.T) {
	dir, root := t.TempDir(), t.TempDir()
	for _, f := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	shadow, err := shadowTLSDir(dir, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
		if b, err := os.ReadFile(filepath.Join(shadow, f)); err != nil || string(b) != f {
			t.Fatalf("%s through the shadow: %q %v", f, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(shadow, "client-key.pem")); !os.IsNotExist(err) {
		t.Fatalf("a missing file was linked: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(shadow, "dh-params.pem")); err != nil || string(b) != ffdhe2048 {
		t.Fatalf("dh-params.pem: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dh-params.pem")); !os.IsNotExist(err) {
		t.Fatal("the user's directory was written to")
	}
	// Idempotent, and follows the directory's changes.
	os.Remove(filepath.Join(dir, "server-key.pem"))
	again, err := shadowTLSDir(dir, root)
	if err != nil || again != shadow {
		t.Fatalf("second call: %q %v", again, err)
	}
	if _, err := os.Lstat(filepath.Join(shadow, "server-key.pem")); !os.IsNotExist(err) {
		t.Fatal("a link to a removed file was kept")
	}
	// A directory with its own parameters is used as it is.
	if err := os.WriteFile(filepath.Join(dir, "dh-params.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := serverTLSDir(dir); got != dir {
		t.Fatalf("serverTLSDir with dh-params.pem = %q", got)
	}
	// A shadow whose directory is gone is pruned.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	pruneShadows(root)
	if _, err := os.Stat(shadow); !os.IsNotExist(err) {
		t.Fatalf("the shadow of a removed directory was kept: %v", err)
	}
}
