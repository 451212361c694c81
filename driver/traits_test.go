package driver

import (
	"slices"
	"testing"

	"github.com/mig2/mig2/v2proto"
)

func TestSourceTraits(t *testing.T) {
	tests := []struct {
		version string
		yanks   bool
		want    []string
	}{
		{"7.2.0", true, []string{v2proto.TraitCancelYank}},
		{"7.2.0", false, nil},
		{"5.2.0", true, nil},
		// No QEMU measured so far is safe with more than two multifd channels (docs/FAULTS.md).
		{"9.0.0", true, []string{v2proto.TraitCancelYank}},
		{"10.0.2", false, nil},
		{"", true, nil},
	}
	for _, tc := range tests {
		if got := SourceTraits(tc.version, tc.yanks); !slices.Equal(got, tc.want) {
			t.Errorf("SourceTraits(%q, %v) = %v, want %v", tc.version, tc.yanks, got, tc.want)
		}
	}
}
