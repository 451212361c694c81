package driver

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestCompressiblePercent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	random := func() []byte {
		p := make([]byte, pageSize)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		return p
	}
	text := func() []byte {
		return []byte(strings.Repeat("the quick brown fox jumps over the lazy dog ", pageSize/44+1)[:pageSize])
	}
	zero := func() []byte { return make([]byte, pageSize) }
	tests := []struct {
		name  string
		pages [][]byte
		want  uint8
	}{
		{"all random", [][]byte{random(), random(), random(), random()}, 0},
		{"all text", [][]byte{text(), text()}, 100},
		{"half and half, zeros ignored", [][]byte{text(), random(), zero(), zero()}, 50},
		{"only zeros", [][]byte{zero(), zero()}, 0},
		{"nothing", nil, 0},
	}
	for _, tc := range tests {
		if got := compressiblePercent(tc.pages); got != tc.want {
			t.Errorf("%s: got %d%%, want %d%%", tc.name, got, tc.want)
		}
	}
}
