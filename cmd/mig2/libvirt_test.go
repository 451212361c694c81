//go:build !nolibvirt

package main

import (
	"testing"

	golibvirt "libvirt.org/go/libvirt"
)

func TestLibvirtFlags(t *testing.T) {
	m, err := parseVirshMigrate([]string{"--live", "--p2p", "--tls", "--persistent", "--tunnelled", "dom", "qemu+tls://h/system"})
	if err != nil {
		t.Fatal(err)
	}
	v2 := libvirtFlags(m)
	if v2&golibvirt.MIGRATE_LIVE == 0 || v2&golibvirt.MIGRATE_PERSIST_DEST == 0 {
		t.Fatalf("v2 flags %b lack --live/--persistent", v2)
	}
	if v2&(golibvirt.MIGRATE_PEER2PEER|golibvirt.MIGRATE_TLS|golibvirt.MIGRATE_TUNNELLED|golibvirt.MIGRATE_PARALLEL) != 0 {
		t.Fatalf("v2 flags %b carry what the agreement decides", v2)
	}
	v1 := libvirtV1Flags(m)
	for _, f := range []golibvirt.DomainMigrateFlags{golibvirt.MIGRATE_PEER2PEER, golibvirt.MIGRATE_TLS, golibvirt.MIGRATE_TUNNELLED, golibvirt.MIGRATE_LIVE} {
		if v1&f == 0 {
			t.Errorf("v1 flags %b lack %b", v1, f)
		}
	}
	if v1&golibvirt.MIGRATE_PARALLEL != 0 {
		t.Error("the v1 path set PARALLEL")
	}
}
