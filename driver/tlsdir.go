package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// QEMU's tls-creds-x509 with endpoint=server generates 2048-bit Diffie-Hellman parameters when
// its directory has no dh-params.pem (crypto/tlscreds.c): 0.3-0.6 s of the destination's
// pre-flight on this machine, measured with object-add, for parameters TLS 1.3 never uses (it
// negotiates named groups). A TLS directory laid out for libvirt or by certtool's usual recipe
// often has none. So when it lacks one, the destination points QEMU at a shadow directory that
// links the same certificate files and adds the standard RFC 7919 ffdhe2048 group; the user's
// directory is never written to.

// ffdhe2048 is RFC 7919's ffdhe2048 group as PKCS#3 (what `certtool --get-dh-params` prints).
const ffdhe2048 = `-----BEGIN DH PARAMETERS-----
MIIBDAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAgICAQA=
-----END DH PARAMETERS-----
`

// tlsFiles are the files of QEMU's x509 layout that a shadow directory links.
var tlsFiles = []string{"ca-cert.pem", "ca-crl.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem"}

// serverTLSDir is the directory to give QEMU's server-side credentials: dir itself when it has
// dh-params.pem (or cannot be shadowed), else its shadow with the standard group.
func serverTLSDir(dir string) string {
	if dir == "" {
		return dir
	}
	if _, err := os.Stat(filepath.Join(dir, "dh-params.pem")); err == nil {
		return dir
	}
	root := shadowRoot()
	shadow, err := shadowTLSDir(dir, root)
	if err != nil {
		return dir
	}
	pruneShadows(root)
	return shadow
}

// pruneShadows removes the shadows of directories that are gone (their links all dangle).
func pruneShadows(root string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		d := filepath.Join(root, e.Name())
		live := false
		for _, name := range tlsFiles {
			if _, err := os.Stat(filepath.Join(d, name)); err == nil {
				live = true
				break
			}
		}
		if !live {
			os.RemoveAll(d)
		}
	}
}

// shadowRoot holds the shadow directories: /run/mig2/tls for root, else a per-user directory
// under the system's temporary directory. QEMU may run as another user, so these directories
// are world-readable; they hold only symbolic links (the files keep their own permissions) and
// the public group.
func shadowRoot() string {
	if os.Geteuid() == 0 {
		return "/run/mig2/tls"
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("mig2-tls-%d", os.Geteuid()))
}

func shadowTLSDir(dir, root string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	shadow := filepath.Join(root, hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(shadow, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(shadow, 0o755); err != nil {
		return "", err
	}
	for _, name := range tlsFiles {
		link := filepath.Join(shadow, name)
		target := filepath.Join(abs, name)
		if _, err := os.Stat(target); err != nil {
			os.Remove(link)
			continue
		}
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		tmp := link + ".new"
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, link); err != nil {
			return "", err
		}
	}
	dh := filepath.Join(shadow, "dh-params.pem")
	if b, err := os.ReadFile(dh); err != nil || string(b) != ffdhe2048 {
		tmp := dh + ".new"
		if err := os.WriteFile(tmp, []byte(ffdhe2048), 0o644); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, dh); err != nil {
			return "", err
		}
	}
	return shadow, nil
}
