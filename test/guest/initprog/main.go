package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/mig2/mig2/test/guest/qbline"
)

func main() {
	t0 := time.Now()
	syscall.Mkdir("/proc", 0o755)
	syscall.Mkdir("/dev", 0o755)
	mountErr := syscall.Mount("proc", "/proc", "proc", 0, "")
	if err := syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil && err != syscall.EBUSY && mountErr == nil {
		mountErr = err
	}
	con := openConsole()
	g := &guest{t0: t0, con: con}
	if mountErr != nil {
		g.fatal("mount: %v", mountErr)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		g.fatal("read /proc/cmdline: %v", err)
	}
	cfg, err := parseCmdline(string(cmdline))
	if err != nil {
		g.fatal("%v", err)
	}
	g.cfg = cfg
	// The firmware leaves its last line unterminated ("Booting from ROM.."):
	// start our output on a fresh line.
	g.print("")
	g.emit(&qbline.Start{MemMiB: cfg.memMiB, Rate: cfg.rateMiBps, Fill: cfg.fill.String()})
	if err := g.allocate(); err != nil {
		g.fatal("%v", err)
	}
	g.fillAll()
	g.emit(&qbline.Ready{TouchedMiB: cfg.memMiB, T: round(time.Since(t0).Seconds(), 100)})

	reqs := make(chan int, 64)
	go readRequests(con, reqs)
	g.run(reqs)
}

// openConsole opens the serial port for reading and writing (falling back to
// /dev/console), makes it stdout and stderr (so a Go panic reaches the
// console) and turns echo off so requests are not copied into the output.
func openConsole() *os.File {
	for _, name := range []string{"/dev/ttyS0", "/dev/console"} {
		f, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		fd := int(f.Fd())
		syscall.Dup3(fd, 1, 0)
		syscall.Dup3(fd, 2, 0)
		var t syscall.Termios
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TCGETS, uintptr(unsafe.Pointer(&t))); e == 0 {
			t.Lflag &^= syscall.ECHO | syscall.ECHONL
			t.Lflag |= syscall.ICANON
			syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TCSETS, uintptr(unsafe.Pointer(&t)))
		}
		return f
	}
	return os.Stdout
}

// readRequests turns "verify K" lines from the console into requests.
// Anything else is ignored. It runs for the life of PID 1.
func readRequests(con *os.File, reqs chan<- int) {
	sc := bufio.NewScanner(con)
	for {
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 || f[0] != "verify" {
				continue
			}
			k, err := strconv.Atoi(f[1])
			if err != nil || k <= 0 {
				continue
			}
			reqs <- k
		}
		// A read error (e.g. EIO on a hung-up tty): keep trying, slowly.
		time.Sleep(100 * time.Millisecond)
		sc = bufio.NewScanner(con)
	}
}

type guest struct {
	t0  time.Time
	cfg config
	con *os.File
	mu  sync.Mutex // serializes console writes

	mem    []byte   // the touched region (mmap, MAP_POPULATE)
	words  []uint64 // mem as words
	gens   []uint32 // generation of every page
	pages  int
	filler *pageFiller
	seq    int // last heartbeat sequence number
}

func (g *guest) emit(l qbline.Line) { g.print(l.String()) }

func (g *guest) print(s string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.con.Write([]byte(s + "\n"))
}

// fatal reports an error and parks PID 1 forever (exiting would panic the kernel).
func (g *guest) fatal(format string, a ...any) {
	g.emit(&qbline.GuestError{Msg: fmt.Sprintf(format, a...)})
	for {
		time.Sleep(time.Hour)
	}
}

func (g *guest) allocate() error {
	g.filler = newPageFiller(g.cfg.fill)
	n := g.cfg.memMiB << 20
	if n == 0 {
		return nil
	}
	flags := syscall.MAP_PRIVATE | syscall.MAP_ANONYMOUS | syscall.MAP_POPULATE
	mem, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, flags)
	if err != nil {
		return fmt.Errorf("mmap %d MiB: %w", g.cfg.memMiB, err)
	}
	g.pages = n / pageSize
	gm, err := syscall.Mmap(-1, 0, g.pages*4, syscall.PROT_READ|syscall.PROT_WRITE, flags)
	if err != nil {
		return fmt.Errorf("mmap generation table: %w", err)
	}
	g.mem = mem
	g.words = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), n/8)
	g.gens = unsafe.Slice((*uint32)(unsafe.Pointer(&gm[0])), g.pages)
	return nil
}

func (g *guest) page(p int) []uint64 { return g.words[p*pageWords : (p+1)*pageWords] }

func (g *guest) fillAll() {
	for p := 0; p < g.pages; p++ {
		g.filler.fill(g.page(p), uint64(p), g.gens[p])
	}
}

// dirty moves page p to its next generation and rewrites all of it.
func (g *guest) dirty(p int) {
	g.gens[p]++
	g.filler.fill(g.page(p), uint64(p), g.gens[p])
}

// verify checks every byte of every touched page against its generation.
func (g *guest) verify(req int) {
	bad, first := 0, -1
	for p := 0; p < g.pages; p++ {
		if !g.filler.check(g.page(p), uint64(p), g.gens[p]) {
			if bad == 0 {
				first = p
			}
			bad++
		}
	}
	g.emit(&qbline.Verify{Seq: g.seq, Bad: bad, Pages: g.pages, FirstBad: first, Req: req})
}

// corrupt flips one byte in the middle of a page chosen from the clock,
// leaving the generation table alone, so that the next verify must see it.
func (g *guest) corrupt() {
	if g.pages == 0 {
		g.print("QB error qb_corrupt with qb_mem=0: nothing to corrupt")
		return
	}
	p := int(uint64(time.Now().UnixNano()) % uint64(g.pages))
	g.mem[p*pageSize+pageSize/2] ^= 0xff
	g.emit(&qbline.Corrupted{Page: p})
}

// run is the main loop: dirty at the configured rate in ~1 ms slices, print
// heartbeats, serve verify requests (dirtying is paused meanwhile, since
// both run on this goroutine), and corrupt a page once if asked.
func (g *guest) run(reqs <-chan int) {
	const slice = time.Millisecond
	start := time.Now()
	pps := float64(g.cfg.rateMiBps) * (1 << 20) / pageSize // pages per second
	if g.pages == 0 {
		pps = 0
	}
	maxLag := uint64(pps/10) + 1 // catch up at most 100 ms after a pause
	var sched, dirtied uint64
	pos := 0
	nextHB := start.Add(g.cfg.heartbeat)
	lastHB, lastDirtied := start, uint64(0)
	corruptAt := time.Time{}
	if g.cfg.corrupt > 0 {
		corruptAt = start.Add(g.cfg.corrupt)
	}
	timer := time.NewTimer(time.Hour)
	for {
		now := time.Now()
		if pps > 0 {
			due := uint64(now.Sub(start).Seconds() * pps)
			if due > sched+maxLag {
				sched = due - maxLag
			}
			for ; sched < due; sched++ {
				g.dirty(pos)
				if pos++; pos == g.pages {
					pos = 0
				}
				dirtied++
			}
		}
		if !corruptAt.IsZero() && !now.Before(corruptAt) {
			corruptAt = time.Time{}
			g.corrupt()
		}
		if !now.Before(nextHB) {
			g.seq++
			mib := float64(dirtied) * pageSize / (1 << 20)
			dt := now.Sub(lastHB).Seconds()
			rate := float64(dirtied-lastDirtied) * pageSize / (1 << 20) / dt
			g.emit(&qbline.Heartbeat{Seq: g.seq, T: round(now.Sub(g.t0).Seconds(), 100),
				DirtiedMiB: round(mib, 10), Rate: round(rate, 10)})
			lastHB, lastDirtied = now, dirtied
			nextHB = nextHB.Add(g.cfg.heartbeat)
			if nextHB.Before(now) {
				nextHB = now.Add(g.cfg.heartbeat)
			}
			if g.cfg.verify > 0 && g.seq%g.cfg.verify == 0 {
				g.verify(0)
			}
		}
		wait := time.Until(nextHB)
		if pps > 0 && wait > slice {
			wait = slice
		}
		if !corruptAt.IsZero() {
			wait = min(wait, time.Until(corruptAt))
		}
		timer.Reset(max(wait, 0))
		select {
		case k := <-reqs:
			g.verify(k)
		case <-timer.C:
		}
	}
}

func round(v, scale float64) float64 { return math.Round(v*scale) / scale }
