package main

import (
	"errors"
	"testing"
)

func TestParseDestURI(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "mig2://dst:7000", want: "dst:7000"},
		{in: "mig2://dst", want: "dst:16520"},
		{in: "mig2://[::1]:7000", want: "[::1]:7000"},
		{in: "mig2://[::1]", want: "[::1]:16520"},
		{in: "127.0.0.1:9", want: "127.0.0.1:9"},
		{in: "dst", want: "dst:16520"},
		{in: "qemu+tls://dst/system", bad: true},
		{in: "mig2://dst:0", bad: true},
		{in: "mig2://dst:99999", bad: true},
		{in: "mig2://dst:x", bad: true},
		{in: "mig2://dst:7/path", bad: true},
		{in: "mig2://:7000", bad: true},
		{in: "", bad: true},
	}
	for _, tc := range tests {
		got, err := parseDestURI(tc.in)
		if tc.bad {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Errorf("parseDestURI(%q) = %q, %v; want a usage error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseDestURI(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseGuestSpecs(t *testing.T) {
	got, err := parseGuestSpecs([]string{"web=/run/web.qmp", "db=/run/db.qmp,log=/var/log/db.log"})
	if err != nil {
		t.Fatal(err)
	}
	want := []guestSpec{{Name: "web", QMP: "/run/web.qmp"}, {Name: "db", QMP: "/run/db.qmp", LogPath: "/var/log/db.log"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range [][]string{
		{"web"}, {"=/x"}, {"web="}, {"web=/x,log="}, {"web=/x,foo=bar"}, {"a=/x", "a=/y"},
	} {
		if _, err := parseGuestSpecs(bad); exitCode(err) != exitUsage {
			t.Errorf("parseGuestSpecs(%q): err %v, want a usage error", bad, err)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
