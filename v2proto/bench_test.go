package v2proto

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkHandshakeTLS measures one complete handshake on loopback: TCP connect, TLS 1.3 with
// mutual x509 authentication, preambles, Hello, Offer, Agree (with 50-device trees on each side,
// compared), Ready and Start, until the destination has checked Start. It reports the median as
// ms/median besides Go's mean ns/op.
func BenchmarkHandshakeTLS(b *testing.B) {
	creds, _ := testCreds(b)
	cfg := testConfig(creds)
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hello, offer := sampleHello(50), sampleOffer(50)

	serverDone := make(chan error, 1)
	started := make(chan struct{}) // one per handshake the destination completed
	go func() {
		serverDone <- func() error {
			for {
				d, err := l.AcceptDestination(ctx, nil)
				if err != nil {
					return nil // listener closed or ctx cancelled
				}
				if _, err := d.ReadHello(ctx); err != nil {
					return err
				}
				if err := d.SendOffer(ctx, offer); err != nil {
					return err
				}
				if _, err := d.ReadAgree(ctx); err != nil {
					return err
				}
				if err := d.SendReady(ctx, "tcp:127.0.0.1:49152"); err != nil {
					return err
				}
				if err := d.ReadStart(ctx); err != nil {
					return err
				}
				d.Conn().Close()
				started <- struct{}{}
			}
		}()
	}()

	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		src, err := Dial(ctx, addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := src.Handshake(ctx, hello); err != nil {
			b.Fatal(err)
		}
		if _, err := src.ReadReady(ctx); err != nil {
			b.Fatal(err)
		}
		if err := src.SendStart(ctx); err != nil {
			b.Fatal(err)
		}
		<-started // the destination has checked Start: the handshake is complete on both sides
		durations = append(durations, time.Since(start))
		src.Conn().Close()
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "ms/median")
	cancel()
	l.Close()
	if err := <-serverDone; err != nil {
		b.Fatal(err)
	}
}
