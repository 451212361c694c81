package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/mig2/mig2/driver"
)

// reporter shows a migration's progress and its end: a redrawn bar on a terminal, one JSON
// object per line otherwise (or with --json).
type reporter struct {
	mu      sync.Mutex
	w       io.Writer
	json    bool
	drawn   bool
	last    time.Time
	status  string
	minStep time.Duration
}

func newReporter(w io.Writer, asJSON bool) *reporter {
	step := 100 * time.Millisecond
	if asJSON {
		step = time.Second
	}
	return &reporter{w: w, json: asJSON, minStep: step}
}

func (r *reporter) progress(p driver.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.last) < r.minStep && string(p.Status) == r.status {
		return
	}
	r.last, r.status = now, string(p.Status)
	if r.json {
		r.emit("progress", p)
		return
	}
	fmt.Fprintf(r.w, "\r%s\x1b[K", progressLine(p, 30))
	r.drawn = true
}

// message prints a line for people (and a JSON event in JSON mode).
func (r *reporter) message(event, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.json {
		r.emit(event, map[string]string{"message": text})
		return
	}
	r.endLine()
	fmt.Fprintln(r.w, text)
}

func (r *reporter) summary(s *driver.Summary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.json {
		r.emit("summary", s)
		return
	}
	r.endLine()
	fmt.Fprint(r.w, summaryText(s))
}

// logWriter returns a writer for log records that first ends an open progress-bar line, so a
// log line never runs into the bar.
func (r *reporter) logWriter(w io.Writer) io.Writer { return &barBreaker{r: r, w: w} }

type barBreaker struct {
	r *reporter
	w io.Writer
}

func (b *barBreaker) Write(p []byte) (int, error) {
	b.r.mu.Lock()
	defer b.r.mu.Unlock()
	b.r.endLine()
	return b.w.Write(p)
}

func (r *reporter) endLine() {
	if r.drawn {
		fmt.Fprintln(r.w)
		r.drawn = false
	}
}

func (r *reporter) emit(event string, v any) {
	b, err := json.Marshal(map[string]any{"event": event, "time": time.Now().UTC().Format(time.RFC3339Nano), "data": v})
	if err != nil {
		return
	}
	r.w.Write(append(b, '\n'))
}

// progressLine renders one progress sample as a bar of the given width and the figures people
// watch: transferred of total, remaining, throughput, dirty rate, expected downtime.
func progressLine(p driver.Progress, width int) string {
	frac := 0.0
	if p.Total > 0 {
		frac = float64(p.Total-min(p.Remaining, p.Total)) / float64(p.Total)
	}
	filled := int(frac * float64(width))
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	s := fmt.Sprintf("[%s] %3.0f%% %s sent, %s left, %s/s", bar, frac*100,
		humanBytes(p.Transferred), humanBytes(p.Remaining), humanBytes(uint64(p.Throughput)))
	if p.DirtyRate > 0 {
		s += fmt.Sprintf(", dirty %s/s", humanBytes(p.DirtyRate))
	}
	if p.ExpectedDowntime > 0 {
		s += fmt.Sprintf(", downtime ~%s", p.ExpectedDowntime.Round(time.Millisecond))
	}
	return s + " " + string(p.Status)
}

func summaryText(s *driver.Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Migration %s of %q to %s: the destination confirms its guest is %s (%s).\n",
		s.MigrationID, s.Guest, s.Peer, s.DestStatus, s.Protocol)
	a := s.Agreed
	fmt.Fprintf(&b, "  agreed:     multifd channels %d, compression %s, postcopy %v, TLS %v, bandwidth %s, downtime limit %s\n",
		a.Channels, a.Compression, a.Postcopy, a.TLS, bandwidthText(a.MaxBandwidth), a.DowntimeLimit)
	for _, adj := range s.Adjustments {
		line := fmt.Sprintf("  %-11s %s: asked %s, agreed %s (%s)", "adjusted:", adj.Param, adj.Asked, adj.Agreed, adj.Reason)
		if adj.Detail != "" {
			line += ": " + adj.Detail
		}
		fmt.Fprintln(&b, line)
	}
	p := s.Preflight
	ms := func(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }
	fmt.Fprintf(&b, "  time:       %s in all; migration %s, downtime %s\n",
		s.Total.Round(time.Millisecond), s.Migration.Round(time.Millisecond), s.Downtime.Round(time.Millisecond))
	fmt.Fprintf(&b, "  pre-flight: %s to the first RAM byte: source QEMU %s (facts %s, device tree %s, RAM sample %s), handshake %s (protocol %s, destination %s), source setup %s\n",
		ms(p.Total), ms(p.Source), ms(p.Facts), ms(p.DeviceTree), ms(p.Sample), ms(p.Handshake), ms(p.Protocol), ms(p.Destination), ms(p.ApplySource))
	fmt.Fprintf(&b, "  data:       %s transferred, %s/s\n", humanBytes(s.Transferred), humanBytes(uint64(s.Throughput)))
	fmt.Fprintf(&b, "  source:     %s\n", s.SourceAfter)
	return b.String()
}

func bandwidthText(bps int64) string {
	if bps <= 0 {
		return "unlimited"
	}
	return humanBytes(uint64(bps)) + "/s"
}
