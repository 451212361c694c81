package v2proto

// Aggregation of refused connections (SPEC §10). A peer that opens connections by the thousand,
// or trickles garbage at the listener, must not turn into thousands of log lines: the listener
// reports the first refusal from a peer host in each window at once, counts the others, and
// reports them in one RefusalSummary when the window ends.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// refusalWindow is how long the listener waits, after it reported a refused connection from a
// peer host, before it reports another one from the same host one by one. The refusals in
// between are counted and reported together in a RefusalSummary.
const refusalWindow = 10 * time.Second

// An attacker with many addresses must not grow the table or the log without bound either: at
// most maxReportedHosts hosts are tracked (and reported) one by one at once; refusals from
// further hosts share one entry, otherHosts, which is only ever summarised. A host leaves the
// table when a window passes without refusals from it. So a window adds at most
// 2*maxReportedHosts+1 lines to the log, however many addresses the refusals come from.
const (
	maxReportedHosts = 8
	otherHosts       = "other hosts"
)

// RefusalSummary reports the refused connections from one peer host that were not reported one
// by one: after the first refusal from a host, the listener collects the others for 10 seconds
// and then reports them in one RefusalSummary (Host "other hosts" collects those from hosts
// beyond the first eight at once). It unwraps to a *ConnError (Op "accept", Peer the host,
// Reason that of the last refusal), so callers that handle each *ConnError from
// Listener.Accept handle it too.
type RefusalSummary struct {
	Host    string         // the peer's IP address, or "other hosts"
	Count   int            // refusals not reported one by one
	Reasons map[string]int // their count by reason ("busy", "timeout", "bad certificate"...)
	Window  time.Duration  // how long they were collected
	conn    *ConnError
}

func (s *RefusalSummary) Error() string {
	plural := "s"
	if s.Count == 1 {
		plural = ""
	}
	return fmt.Sprintf("v2proto: accept %s: %d more connection%s refused in the last %s (%s), not reported one by one",
		s.Host, s.Count, plural, s.Window.Round(time.Second), reasonsText(s.Reasons))
}

// Unwrap returns the *ConnError that stands for the summary.
func (s *RefusalSummary) Unwrap() error { return s.conn }

func reasonsText(r map[string]int) string {
	keys := slices.Sorted(maps.Keys(r))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, r[k]))
	}
	return strings.Join(parts, ", ")
}

// refusalReason is a short label for a refusal, for RefusalSummary.Reasons.
func refusalReason(err error) string {
	var ce *ConnError
	switch {
	case IsBusy(err):
		return "busy"
	case IsTimeout(err):
		return "timeout"
	case errors.As(err, &ce) && ce.Reason != nil:
		return ce.Reason.Error()
	}
	return "other"
}

// refusalLog decides which refusals are reported at once and collects the rest per host.
type refusalLog struct {
	window time.Duration
	mu     sync.Mutex
	hosts  map[string]*hostRefusals // at most maxReportedHosts, and otherHosts
}

type hostRefusals struct {
	since      time.Time // start of the current window
	suppressed int
	reasons    map[string]int
	last       error
}

func newRefusalLog(window time.Duration) *refusalLog {
	return &refusalLog{window: window, hosts: map[string]*hostRefusals{}}
}

// note records a refusal from host at now and reports whether it is to be reported at once (the
// first in its host's window). A refusal that is not is counted for the summary.
func (r *refusalLog) note(host string, err error, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[host]
	if !ok {
		tracked := len(r.hosts)
		if _, others := r.hosts[otherHosts]; others {
			tracked--
		}
		if tracked < maxReportedHosts {
			r.hosts[host] = &hostRefusals{since: now, reasons: map[string]int{}}
			return true
		}
		if h, ok = r.hosts[otherHosts]; !ok {
			h = &hostRefusals{since: now, reasons: map[string]int{}}
			r.hosts[otherHosts] = h
		}
	}
	h.suppressed++
	h.reasons[refusalReason(err)]++
	h.last = err
	return false
}

// undeliverable counts a refusal that was to be reported at once but could not be delivered,
// so that the summary accounts for it.
func (r *refusalLog) undeliverable(host string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hosts[host]
	if !ok {
		h, ok = r.hosts[otherHosts]
	}
	if !ok {
		return
	}
	h.suppressed++
	h.reasons[refusalReason(err)]++
	h.last = err
}

// due returns the summaries of the windows that ended by now (all of them when all is set). A
// host whose window ended quietly is forgotten: its next refusal is reported at once again. A
// host that had refusals to summarise starts a new window, so that a peer that keeps at it
// produces one summary per window and nothing else.
func (r *refusalLog) due(now time.Time, all bool) []*RefusalSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*RefusalSummary
	for host, h := range r.hosts {
		if !all && now.Sub(h.since) < r.window {
			continue
		}
		if h.suppressed == 0 || all {
			delete(r.hosts, host)
		} else {
			r.hosts[host] = &hostRefusals{since: now, reasons: map[string]int{}}
		}
		if h.suppressed == 0 {
			continue
		}
		ce := &ConnError{Op: "accept", Peer: host}
		var last *ConnError
		if errors.As(h.last, &last) {
			ce.Reason = last.Reason
		}
		s := &RefusalSummary{Host: host, Count: h.suppressed, Reasons: h.reasons, Window: now.Sub(h.since), conn: ce}
		ce.Detail = strings.TrimPrefix(s.Error(), "v2proto: accept "+host+": ")
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *RefusalSummary) int { return strings.Compare(a.Host, b.Host) })
	return out
}
