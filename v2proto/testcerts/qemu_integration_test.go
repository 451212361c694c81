//go:build integration

package testcerts_test

// Real-tool checks of the credentials testcerts writes: QEMU 7.2's own TLS migration (gnutls,
// verify-peer) between two QEMUs, and gnutls-cli against a v2proto listener.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig2/mig2/v2proto"
	"github.com/mig2/mig2/v2proto/testcerts"
)

func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
			t.Skipf("%s not installed (MIG2_ALLOW_SKIP=1)", tool)
		}
		t.Fatalf("%s not installed: %v (install it, or set MIG2_ALLOW_SKIP=1 to skip)", tool, err)
	}
	return p
}

// qmpConn is the smallest QMP client that can run a few commands (v2proto must not import qmp).
type qmpConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialQMP(t *testing.T, path string) *qmpConn {
	t.Helper()
	var c net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err = net.Dial("unix", path); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("QMP %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	q := &qmpConn{c: c, r: bufio.NewReader(c)}
	q.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := q.r.ReadBytes('\n'); err != nil {
		t.Fatalf("QMP greeting: %v", err)
	}
	q.run(t, "qmp_capabilities", nil)
	return q
}

func (q *qmpConn) run(t *testing.T, cmd string, args map[string]any) map[string]any {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
	if args == nil {
		req, _ = json.Marshal(map[string]any{"execute": cmd})
	}
	if _, err := q.c.Write(append(req, '\n')); err != nil {
		t.Fatalf("QMP %s: %v", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("QMP %s: %v", cmd, err)
		}
		if e, ok := m["error"]; ok {
			t.Fatalf("QMP %s: %v", cmd, e)
		}
		if r, ok := m["return"]; ok {
			out, _ := r.(map[string]any)
			return out
		}
	}
}

func startQEMU(t *testing.T, qemu, dir, name, endpoint string, extra ...string) *qmpConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), name+".qmp")
	args := append([]string{"-machine", "none", "-nodefaults", "-display", "none",
		"-object", fmt.Sprintf("tls-creds-x509,id=tls0,dir=%s,endpoint=%s,verify-peer=on", dir, endpoint),
		"-qmp", "unix:" + sock + ",server=on,wait=off"}, extra...)
	var stderr bytes.Buffer
	cmd := exec.Command(qemu, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr: %s", name, stderr.String())
		}
	})
	return dialQMP(t, sock)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// migrate runs a TLS migration between two fresh QEMUs and returns the source's final status
// and error text.
func migrate(t *testing.T, qemu, srcDir, dstDir, tlsHostname string) (string, string) {
	dst := startQEMU(t, qemu, dstDir, "dst", "server", "-incoming", "defer")
	src := startQEMU(t, qemu, srcDir, "src", "client")
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
	dst.run(t, "migrate-set-parameters", map[string]any{"tls-creds": "tls0"})
	dst.run(t, "migrate-incoming", map[string]any{"uri": uri})
	src.run(t, "migrate-set-parameters", map[string]any{"tls-creds": "tls0", "tls-hostname": tlsHostname})
	src.run(t, "migrate", map[string]any{"uri": uri})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r := src.run(t, "query-migrate", nil)
		if s, _ := r["status"].(string); s == "completed" || s == "failed" {
			e, _ := r["error-desc"].(string)
			return s, e
		}
	}
	t.Fatal("migration did not finish in 20 s")
	return "", ""
}

// TestQEMUAcceptsCredentials: QEMU 7.2 migrates over TLS (mutual, verify-peer) with the
// credentials Write produces, and really checks them (a wrong tls-hostname fails).
func TestQEMUAcceptsCredentials(t *testing.T) {
	qemu := need(t, "qemu-system-x86_64")
	dir := t.TempDir()
	if err := testcerts.Write(dir, []string{"dst.example"}, "CN=src.example,O=mig2 test"); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "dst.example"} {
		if status, e := migrate(t, qemu, dir, dir, host); status != "completed" {
			t.Fatalf("tls-hostname %s: migration %s: %s", host, status, e)
		}
	}
	status, e := migrate(t, qemu, dir, dir, "wrong.example")
	if status != "failed" || !strings.Contains(e, "hostname") {
		t.Fatalf("wrong hostname: migration %s (%s): the credentials are not being checked", status, e)
	}
}

// TestGnuTLSClientAgainstListener: a gnutls client (as a second implementation would use)
// completes TLS 1.3 with mutual authentication against a v2proto listener and gets the
// server's preamble.
func TestGnuTLSClientAgainstListener(t *testing.T) {
	cli := need(t, "gnutls-cli")
	dir := t.TempDir()
	if err := testcerts.Write(dir, nil, "CN=src.example,O=mig2 test"); err != nil {
		t.Fatal(err)
	}
	creds, err := v2proto.LoadTLSDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := v2proto.DefaultConfig()
	cfg.TLS = creds
	cfg.AllowedDNs = []string{"O=mig2 test,CN=src.example"} // gnutls/libvirt order
	l, err := v2proto.Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err == nil {
			if c.PeerDN() != "CN=src.example,O=mig2 test" || c.Role() != v2proto.RoleDestination {
				err = fmt.Errorf("peer DN %q, role %v", c.PeerDN(), c.Role())
			}
			c.Close()
		}
		accepted <- err
	}()
	cmd := exec.CommandContext(ctx, cli, "--x509cafile", filepath.Join(dir, "ca-cert.pem"),
		"--x509certfile", filepath.Join(dir, "client-cert.pem"), "--x509keyfile", filepath.Join(dir, "client-key.pem"),
		"--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3", "-p", fmt.Sprint(port), "127.0.0.1")
	cmd.Stdin = strings.NewReader(v2proto.Magic + "S")
	out, _ := cmd.CombinedOutput() // gnutls-cli exits non-zero when the server closes
	if err := <-accepted; err != nil {
		t.Fatalf("listener: %v\ngnutls-cli:\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("Handshake was completed")) || !bytes.Contains(out, []byte(v2proto.Magic+"D")) {
		t.Fatalf("gnutls-cli did not complete the handshake or did not get the preamble:\n%s", out)
	}
}
