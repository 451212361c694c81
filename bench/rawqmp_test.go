package main

import (
	"testing"

	"github.com/mig2/mig2/qmp"
)

func TestPlanRaw(t *testing.T) {
	if p := planRaw(nil, "/pki"); p.DstCaps != nil || p.SrcCaps != nil || p.DstParams != nil || p.SrcParams != nil || p.DstObjects != nil || p.SrcObjects != nil {
		t.Errorf("QEMU defaults send nothing, got %+v", p)
	}
	p := planRaw(&Setting{Channels: 4, Compression: "zstd", AutoConverge: true}, "/pki")
	if len(p.SrcObjects)+len(p.DstObjects) != 0 || p.SrcParams.TLSCreds != nil || p.DstParams.TLSCreds != nil {
		t.Errorf("plaintext plan has TLS: %+v", p)
	}
	if *p.SrcParams.MultifdChannels != 4 || *p.DstParams.MultifdChannels != 4 || *p.DstParams.MultifdCompression != "zstd" || *p.SrcParams.MaxBandwidth != unlimitedBandwidth || p.DstParams.MaxBandwidth != nil {
		t.Errorf("parameters: src %+v dst %+v", p.SrcParams, p.DstParams)
	}
	caps := map[string]bool{}
	for _, c := range p.SrcCaps {
		caps[c.Capability] = c.State
	}
	if !caps[qmp.CapMultifd] || !caps[qmp.CapAutoConverge] || len(p.DstCaps) != 1 || !p.DstCaps[0].State {
		t.Errorf("capabilities: src %v dst %v", p.SrcCaps, p.DstCaps)
	}
	p = planRaw(&Setting{Channels: 8, Compression: "none", TLS: true}, "/pki")
	src, ok1 := p.SrcObjects[0].(qmp.TLSCredsX509)
	dst, ok2 := p.DstObjects[0].(qmp.TLSCredsX509)
	if !ok1 || !ok2 || src.Endpoint != "client" || dst.Endpoint != "server" || src.Dir != "/pki" || *p.SrcParams.TLSCreds != src.ID || *p.DstParams.TLSCreds != dst.ID || *p.SrcParams.TLSHostname != "127.0.0.1" {
		t.Errorf("TLS plan: %+v", p)
	}
}
