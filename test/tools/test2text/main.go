// Command test2text turns `go test -json` output on stdin back into the text `go test -v` prints,
// so that one run gives both: the JSON for tools (test/tools/reliability) and the text for
// people and scripts/testsummary.sh. Lines that are not test2json events (build errors) pass
// through unchanged.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for sc.Scan() {
		var ev struct {
			Action string
			Output string
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Action == "" {
			fmt.Fprintln(w, sc.Text())
		} else if ev.Action == "output" || ev.Action == "build-output" {
			fmt.Fprint(w, ev.Output)
		}
		w.Flush()
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "test2text:", err)
		os.Exit(1)
	}
}
