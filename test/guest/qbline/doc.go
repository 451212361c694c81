// Package qbline is the console protocol of the mig2 test guest: the
// "QB ..." lines its /init prints on the serial port, as typed values.
//
// The guest (test/guest/initprog) formats every line with these types and
// the harness (package guest) parses them with [Parse], so both ends share
// one definition of the wire text:
//
//	QB start mem_mib=M rate=R fill=F
//	QB ready touched_mib=M t=SECONDS
//	QB hb seq=N t=S dirtied_mib=X rate=Y
//	QB verify seq=N bad=B pages=P first_bad=I req=K
//	QB corrupted page=N
//	QB error free text
//
// A line is "QB", a kind word and space-separated key=value fields. Parsing is
// strict about what it knows (every field of the kind must be present exactly
// once and well formed) and tolerant of what it does not (unknown keys are
// skipped). Numbers are written in their shortest exact form (strconv 'f', -1),
// so String and Parse round-trip. The package depends on nothing beyond the
// standard library because it is linked into the guest's static /init.
package qbline
