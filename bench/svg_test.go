package main

import (
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

// wellFormedXML parses every token of an XML document.
func wellFormedXML(t *testing.T, doc string) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(doc))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
	}
}

// wellFormed checks that doc is well-formed XML with one svg root in the SVG namespace.
func wellFormed(t *testing.T, doc string) {
	t.Helper()
	wellFormedXML(t, doc)
	dec := xml.NewDecoder(strings.NewReader(doc))
	depth, roots := 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
				if el.Name.Local != "svg" || el.Name.Space != "http://www.w3.org/2000/svg" {
					t.Fatalf("root element %v, want svg in the SVG namespace", el.Name)
				}
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if roots != 1 || depth != 0 {
		t.Fatalf("%d root elements, depth %d at the end", roots, depth)
	}
}

func TestRenderSVGWellFormed(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	p := panel{Title: `time <median> & "min"`, Unit: "s", Groups: []string{"0 MiB/s", "50 MiB/s", "200 MiB/s"},
		Series: []string{"a&b", "<c>", "d"},
		Values: [][]barValue{{{1, 0.5}, {2, 2}, {nan, nan}}, {{inf, inf}, {3, 1}, {0, 0}}, {{0.001, 0.001}, {1e4, 9e3}}}}
	doc := renderSVG("title with <markup> & ampersand", []panel{p, p})
	wellFormed(t, doc)
	for _, want := range []string{"not converged", "&lt;c&gt;", "a&amp;b", `fill="url(#nc)"`} {
		if !strings.Contains(doc, want) {
			t.Errorf("the SVG has no %q", want)
		}
	}
	wellFormed(t, renderSVG("empty", nil))
	wellFormed(t, renderSVG("no groups", []panel{{Title: "x", Series: []string{"a"}}}))
}

func TestFillPlot(t *testing.T) {
	cases := []Case{{"rand", 0}, {"rand", 200}, {"text", 0}}
	cr := []CaseResult{
		{Case: cases[0], Runs: []Run{run("rand:0", cMig2TLS, 2, 50), run("rand:0", cQEMUDefaults, 9, 300)}},
		{Case: cases[1], Runs: []Run{run("rand:200", cMig2TLS, 3, 80), notConverged("rand:200", cQEMUDefaults)}},
	}
	doc := fillPlot("rand", cases, summarize(cr, Ceilings{}), []string{cQEMUDefaults, cMig2TLS})
	wellFormed(t, doc)
	if !strings.Contains(doc, "200 MiB/s dirtied") || strings.Contains(doc, "text-like") || !strings.Contains(doc, "not converged") {
		t.Errorf("fillPlot: groups or bars missing:\n%s", doc)
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ max, want float64 }{{10, 2}, {43, 10}, {0.9, 0.2}, {7, 2}, {0, 1}, {math.Inf(1), 1}} {
		if got := niceStep(tc.max, 5); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", tc.max, got, tc.want)
		}
	}
}
