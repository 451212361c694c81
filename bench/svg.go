package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strings"
)

// barValue is one bar: the median (the bar) and the minimum (a tick). A median of +Inf is a
// contender that did not converge; NaN is no data.
type barValue struct {
	Median, Min float64
}

// panel is one grouped-bar chart: one group per x label, one bar per series in each.
type panel struct {
	Title, Unit string
	Groups      []string
	Series      []string
	Values      [][]barValue // [group][series]
}

// palette colours the series (colour-blind-friendly, Okabe-Ito plus grey); seriesColor keeps a
// contender's colour the same in every plot.
var palette = []string{"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"}

var contenderColors = map[string]string{
	cQEMUDefaults: "#999999", cVirsh: "#E69F00", cVirshPar8: "#CC79A7", cTunedTLS: "#56B4E9",
	cTunedPlain: "#009E73", cMig2TLS: "#0072B2", cMig2Insecure: "#D55E00", cMig2V1: "#F0E442",
}

func seriesColor(name string, i int) string {
	if c, ok := contenderColors[name]; ok {
		return c
	}
	return palette[i%len(palette)]
}

const (
	svgWidth    = 960
	panelHeight = 300
	marginLeft  = 70
	marginRight = 20
	legendRows  = 2
)

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// niceStep is a 1-2-5 step that divides max into about n intervals.
func niceStep(max float64, n int) float64 {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return 1
	}
	raw := max / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// renderSVG draws the panels one under the other with a shared legend.
func renderSVG(title string, panels []panel) string {
	var series []string
	if len(panels) > 0 {
		series = panels[0].Series
	}
	perRow := (len(series) + legendRows - 1) / legendRows
	legendH := 20 * legendRows
	top := 50 + legendH
	height := top + len(panels)*(panelHeight+40) + 10
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	b.WriteString(`<defs><pattern id="nc" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">` +
		`<rect width="6" height="6" fill="#f4f4f4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#bbb" stroke-width="3"/></pattern></defs>` + "\n")
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>`+"\n", marginLeft, esc(title))
	for i, s := range series {
		x := marginLeft + (i%max(perRow, 1))*((svgWidth-marginLeft-marginRight)/max(perRow, 1))
		y := 40 + (i/max(perRow, 1))*20
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, y, seriesColor(s, i), x+16, y+10, esc(s))
	}
	for i, p := range panels {
		drawPanel(&b, p, top+i*(panelHeight+40))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func drawPanel(b *strings.Builder, p panel, y0 int) {
	plotW := float64(svgWidth - marginLeft - marginRight)
	plotH := float64(panelHeight - 50)
	yTop := float64(y0 + 20)
	yBase := yTop + plotH
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", marginLeft, y0+10, esc(p.Title))
	maxV := 0.0
	for _, g := range p.Values {
		for _, v := range g {
			if !math.IsNaN(v.Median) && !math.IsInf(v.Median, 0) {
				maxV = math.Max(maxV, v.Median)
			}
		}
	}
	step := niceStep(maxV, 5)
	top := math.Max(step, math.Ceil(maxV/step)*step)
	scale := plotH / top
	for t := 0.0; t <= top+step/2; t += step {
		y := yBase - t*scale
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, marginLeft, y, svgWidth-marginRight, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginLeft-6, y+4, esc(trimFloat(t)))
	}
	fmt.Fprintf(b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">%s</text>`+"\n",
		yTop+plotH/2, yTop+plotH/2, esc(p.Unit))
	if len(p.Groups) == 0 {
		return
	}
	groupW := plotW / float64(len(p.Groups))
	barW := groupW * 0.8 / float64(max(len(p.Series), 1))
	for gi, g := range p.Groups {
		gx := float64(marginLeft) + float64(gi)*groupW + groupW*0.1
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", gx+groupW*0.4, yBase+18, esc(g))
		for si := range p.Series {
			if gi >= len(p.Values) || si >= len(p.Values[gi]) {
				continue
			}
			v := p.Values[gi][si]
			x := gx + float64(si)*barW
			switch {
			case math.IsNaN(v.Median):
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" fill="#888">–</text>`+"\n", x+barW/2, yBase-3)
			case math.IsInf(v.Median, 1):
				fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="url(#nc)" stroke="%s"><title>%s: not converged</title></rect>`,
					x, yTop, barW-1, plotH, seriesColor(p.Series[si], si), esc(p.Series[si]))
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" transform="rotate(-90 %.1f %.1f)">not converged</text>`+"\n",
					x+barW/2+3, yTop+plotH/2, x+barW/2+3, yTop+plotH/2)
			default:
				h := v.Median * scale
				fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: median %s %s</title></rect>`,
					x, yBase-h, barW-1, h, seriesColor(p.Series[si], si), esc(p.Series[si]), esc(trimFloat(v.Median)), esc(p.Unit))
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`, x+barW/2, yBase-h-3, esc(shortNum(v.Median)))
				if !math.IsNaN(v.Min) && !math.IsInf(v.Min, 0) {
					my := yBase - v.Min*scale
					fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="1.5"/>`, x, my, x+barW-1, my)
				}
				b.WriteString("\n")
			}
		}
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="black"/>`+"\n", marginLeft, yBase, svgWidth-marginRight, yBase)
}

// shortNum is a bar's label: two significant digits at most below 10, whole numbers above.
func shortNum(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "" || s == "-0" {
		return "0"
	}
	return s
}

// fillPlot is the SVG of one fill: median total time and median downtime per dirty rate and
// contender (bars), with the minimum as a tick.
func fillPlot(fill string, cases []Case, stats []Stat, ids []string) string {
	var rates []Case
	for _, c := range cases {
		if c.Fill == fill {
			rates = append(rates, c)
		}
	}
	timeP := panel{Title: "Total time (command start to the destination running): median bar, minimum tick", Unit: "seconds", Series: ids}
	downP := panel{Title: "Downtime (guest paused), converged runs: median bar, minimum tick", Unit: "milliseconds", Series: ids}
	for _, c := range rates {
		label := fmt.Sprintf("%d MiB/s dirtied", c.Dirty)
		timeP.Groups, downP.Groups = append(timeP.Groups, label), append(downP.Groups, label)
		var tv, dv []barValue
		for _, id := range ids {
			s := findCaseStat(stats, c.String(), id)
			if s == nil {
				tv, dv = append(tv, barValue{math.NaN(), math.NaN()}), append(dv, barValue{math.NaN(), math.NaN()})
				continue
			}
			tv = append(tv, barValue{float64(s.MedTotal), float64(s.MinTotal)})
			dv = append(dv, barValue{float64(s.MedDown) * 1000, float64(s.MinDown) * 1000})
		}
		timeP.Values, downP.Values = append(timeP.Values, tv), append(downP.Values, dv)
	}
	title := "mig2 bench: " + fillName(fill) + " memory"
	return renderSVG(title, []panel{timeP, downP})
}

func findCaseStat(stats []Stat, caseName, contender string) *Stat {
	for i := range stats {
		if stats[i].Case == caseName && stats[i].Contender == contender {
			return &stats[i]
		}
	}
	return nil
}

func fillName(fill string) string {
	if fill == "text" {
		return "text-like (compressible)"
	}
	return "random (incompressible)"
}
