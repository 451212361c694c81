// Command reliability writes docs/RELIABILITY.md from test results, so the document says what
// the tests showed and nothing typed by hand: one table row per test (scenario, test name,
// result, the "outcome: " lines the test logged, duration) from `go test -json` output, and the
// soak's figures (migrations, integrity failures, the agent's RSS and goroutines) from the soak's
// JSON results. `make reliability` runs the tests and this tool.
//
//	reliability [-o docs/RELIABILITY.md] [-soak test/soak/results.json] [-run REGEXP] GO_TEST_JSON...
//
// -run keeps only the tests whose top-level name matches, so that the JSON of a whole
// `make test` run can be used.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

func main() {
	out := flag.String("o", "docs/RELIABILITY.md", "the document to write (- for stdout)")
	soak := flag.String("soak", "", "the soak's JSON results (SOAK_OUT); a missing file is reported in the document")
	run := flag.String("run", "", "keep only the tests whose top-level name matches this regular expression")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: reliability [-o FILE] [-soak RESULTS.json] GO_TEST_JSON...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	var keep *regexp.Regexp
	if *run != "" {
		var err error
		if keep, err = regexp.Compile(*run); err != nil {
			fail(fmt.Errorf("-run: %w", err))
		}
	}
	var rep Report
	for _, path := range flag.Args() {
		f, err := os.Open(path)
		if err != nil {
			fail(err)
		}
		tests, err := ParseTestJSON(f)
		f.Close()
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		for _, t := range tests {
			top, _, _ := strings.Cut(t.Name, "/")
			if keep == nil || keep.MatchString(top) {
				rep.Tests = append(rep.Tests, t)
			}
		}
		rep.Inputs = append(rep.Inputs, relative(path))
	}
	if *soak != "" {
		s, err := ReadSoak(*soak)
		switch {
		case os.IsNotExist(err):
			rep.SoakMissing = relative(*soak)
		case err != nil:
			fail(err)
		default:
			rep.Soak = s
			rep.Inputs = append(rep.Inputs, relative(*soak))
		}
	}
	var w io.Writer = os.Stdout
	var file *os.File
	if *out != "-" {
		var err error
		if file, err = os.Create(*out + ".tmp"); err != nil {
			fail(err)
		}
		w = file
	}
	if err := rep.Write(w); err != nil {
		fail(err)
	}
	if file != nil {
		if err := file.Close(); err != nil {
			fail(err)
		}
		if err := os.Rename(*out+".tmp", *out); err != nil {
			fail(err)
		}
	}
	pass, failed, other := rep.Counts()
	fmt.Fprintf(os.Stderr, "reliability: %d rows: %d passed, %d failed, %d skipped or incomplete; wrote %s\n", pass+failed+other, pass, failed, other, *out)
}

// relative is path as the document names it: relative to the working directory (the checkout)
// when it lies below it.
func relative(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "reliability:", err)
	os.Exit(1)
}
