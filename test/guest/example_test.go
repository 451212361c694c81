package guest_test

import (
	"fmt"

	"github.com/mig2/mig2/test/guest"
)

func ExampleParseLine() {
	l, err := guest.ParseLine("QB verify seq=12 bad=1 pages=65536 first_bad=4242 req=3")
	if err != nil {
		panic(err)
	}
	v := l.(*guest.VerifyResult)
	fmt.Println(v.Bad, v.FirstBad, v.Req, v.OK())
	fmt.Println(l)
	// Output:
	// 1 4242 3 false
	// QB verify seq=12 bad=1 pages=65536 first_bad=4242 req=3
}
