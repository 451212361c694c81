package main

import "unsafe"

const (
	pageSize  = 4096
	pageWords = pageSize / 8

	// text mode: every page is textChunks chunks, each a copy of
	// chunkWords words taken from the pseudo-text dictionary at an offset
	// chosen by the page's PRNG.
	textChunks = 8
	chunkWords = pageWords / textChunks
	dictBytes  = 64 << 10
	dictWords  = dictBytes / 8
)

// pageFiller computes page contents. The content of page p at generation g is
// a pure function of (p, g, mode) (plus the dictionary, itself a fixed
// function of nothing), so verify can recompute every byte.
type pageFiller struct {
	mode fillMode
	dict []uint64 // text mode only
}

func newPageFiller(mode fillMode) *pageFiller {
	f := &pageFiller{mode: mode}
	if mode == fillText {
		f.dict = textDictionary()
	}
	return f
}

// seed derives the page's PRNG state from its index and generation.
func seed(p uint64, g uint32, mode fillMode) uint64 {
	z := p<<32 ^ uint64(g) ^ uint64(mode)<<62
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	if z == 0 {
		z = 0x2545f4914f6cdd1d
	}
	return z
}

// fill writes page p at generation g into w (pageWords words).
func (f *pageFiller) fill(w []uint64, p uint64, g uint32) {
	w = w[:pageWords:pageWords]
	x := seed(p, g, f.mode)
	if f.mode == fillText {
		d := f.dict[:dictWords:dictWords]
		for c := 0; c < textChunks; c++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			off := int(x % (dictWords - chunkWords))
			copy(w[c*chunkWords:(c+1)*chunkWords], d[off:off+chunkWords])
		}
		return
	}
	for i := range w {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		w[i] = x
	}
}

// check reports whether w (pageWords words) holds exactly page p at generation g.
func (f *pageFiller) check(w []uint64, p uint64, g uint32) bool {
	w = w[:pageWords:pageWords]
	x := seed(p, g, f.mode)
	var diff uint64
	if f.mode == fillText {
		d := f.dict[:dictWords:dictWords]
		for c := 0; c < textChunks; c++ {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			off := int(x % (dictWords - chunkWords))
			src := d[off : off+chunkWords : off+chunkWords]
			dst := w[c*chunkWords : (c+1)*chunkWords : (c+1)*chunkWords]
			for i := range dst {
				diff |= dst[i] ^ src[i]
			}
		}
		return diff == 0
	}
	for i := range w {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		diff |= w[i] ^ x
	}
	return diff == 0
}

var vocabulary = []string{
	"the", "guest", "memory", "page", "is", "copied", "while", "it", "runs",
	"and", "a", "dirty", "bitmap", "tracks", "every", "write", "so", "that",
	"source", "destination", "agree", "on", "what", "was", "sent", "before",
	"switchover", "multifd", "channels", "carry", "compressed", "pages", "over",
	"tls", "connections", "between", "two", "hosts", "of", "qemu", "with",
	"libvirt", "migration", "handshake", "checks", "devices", "machine", "type",
	"ram", "blocks", "then", "stream", "starts", "quickly", "no", "byte", "lost",
	"when", "verify", "reads", "all", "kernel", "process", "we", "expect",
}

// textDictionary returns dictBytes of pseudo-English text, built from a fixed
// seed: words, spaces, commas, full stops and line breaks.
func textDictionary() []uint64 {
	b := make([]byte, 0, dictBytes+32)
	x := uint64(0x5eed5eed12345678)
	next := func() uint64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return x
	}
	words := 0
	for len(b) < dictBytes {
		r := next()
		w := vocabulary[r%uint64(len(vocabulary))]
		if words == 0 {
			b = append(b, w[0]-'a'+'A')
			b = append(b, w[1:]...)
		} else {
			b = append(b, w...)
		}
		words++
		switch {
		case r>>32%13 == 0 && words > 4:
			b = append(b, ".\n"...)
			words = 0
		case r>>40%11 == 0:
			b = append(b, ", "...)
		default:
			b = append(b, ' ')
		}
	}
	d := make([]uint64, dictWords)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), dictBytes), b)
	return d
}
