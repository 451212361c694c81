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
		{"9.0.0", true, []string{v2proto.TraitCancelYank, v2proto.TraitMultifdTeardown}},
		{"10.1.2", false, []string{v2proto.TraitMultifdTeardown}},
		{"", true, nil},
	}
	for _, tc := range tests {
		if got := SourceTraits(tc.version, tc.yanks); !slices.Equal(got, tc.want) {
			t.Errorf("SourceTraits(%q, %v) = %v, want %v", tc.version, tc.yanks, got, tc.want)
		}
	}
}
