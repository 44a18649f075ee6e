package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Phase is one stretch of a sustained load: Rate events/s offered open
// loop for Duration, or, with Rate 0, every connection posting its next
// event as soon as the last is answered (closed loop, flat out).
type Phase struct {
	Rate     float64
	Duration time.Duration
}

// ParsePhases reads "30s@0" or "10s@5000,10s@15000,10s@5000": durations
// at offered rates (0: closed loop).
func ParsePhases(s string) ([]Phase, error) {
	var out []Phase
	for _, p := range strings.Split(s, ",") {
		d, r, ok := strings.Cut(strings.TrimSpace(p), "@")
		if !ok {
			return nil, fmt.Errorf("phase %q: want <duration>@<events/s>", p)
		}
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return nil, fmt.Errorf("phase %q: bad duration", p)
		}
		rate, err := strconv.ParseFloat(r, 64)
		if err != nil || rate < 0 {
			return nil, fmt.Errorf("phase %q: bad rate", p)
		}
		out = append(out, Phase{Rate: rate, Duration: dur})
	}
	if len(out) == 0 {
		return nil, errors.New("no phase")
	}
	return out, nil
}

// Second is what one second of a sustained load saw at the generator.
type Second struct {
	T int `json:"t"`
	// Offered counts events due (open loop) or requests sent (closed
	// loop); Unsent those due when every connection was busy (the
	// generator's limit, not the server's answer).
	Offered  int `json:"offered"`
	Unsent   int `json:"unsent"`
	Accepted int `json:"accepted"` // answered 200
	Rejected int `json:"rejected"` // answered 503
	Failed   int `json:"failed"`   // any other answer, or none
	// AckP99 is the 99th percentile of the second's 200s, in ms.
	AckP99 float64 `json:"ack_p99_ms"`
	// Partial marks the last report, of less than a second.
	Partial bool `json:"partial,omitempty"`
}

// Sustain drives url with events from src through phases over conns
// keep-alive connections, calling every once a second with that second's
// counts, and accepted (if not nil) with the event_id of each event
// answered 200. Each request is sealed anew (its own nonce and signature)
// and posted once: a refusal is counted, not retried.
func Sustain(ctx context.Context, src *Source, url string, app App, conns int, phases []Phase, every func(Second), accepted func(eventID string)) error {
	client := NewClient(conns, 10*time.Second)
	defer client.CloseIdleConnections()
	var (
		offered, unsent, okays, rejected, failed atomic.Int64
		latMu                                    sync.Mutex
		lat                                      = &Latencies{}
	)
	post := func(due time.Time) {
		ev := src.Next()
		code := postOnce(ctx, client, url, app, ev.Plain)
		switch code {
		case http.StatusOK:
			if accepted != nil {
				accepted(ev.EventID)
			}
			okays.Add(1)
			latMu.Lock()
			l := lat
			latMu.Unlock()
			l.Add(time.Since(due))
		case http.StatusServiceUnavailable:
			rejected.Add(1)
		default:
			if ctx.Err() == nil {
				failed.Add(1)
			}
		}
	}
	// The reporter: every second, the counts since the last.
	stopReport := make(chan struct{})
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for t := 1; ; t++ {
			final := false
			select {
			case <-stopReport:
				final = true // the last, partial second: its answers count too
			case <-tick.C:
			}
			latMu.Lock()
			l := lat
			lat = &Latencies{}
			latMu.Unlock()
			p99 := l.Summary().P99
			every(Second{T: t, Offered: int(offered.Swap(0)), Unsent: int(unsent.Swap(0)),
				Accepted: int(okays.Swap(0)), Rejected: int(rejected.Swap(0)), Failed: int(failed.Swap(0)), AckP99: p99, Partial: final})
			if final {
				return
			}
		}
	}()
	defer func() { close(stopReport); <-reported }()

	for _, ph := range phases {
		end := time.Now().Add(ph.Duration)
		var wg sync.WaitGroup
		if ph.Rate <= 0 {
			for range conns {
				wg.Go(func() {
					for time.Now().Before(end) && ctx.Err() == nil {
						offered.Add(1)
						post(time.Now())
					}
				})
			}
			wg.Wait()
			continue
		}
		// Open loop: a due event goes to a free connection, or counts as
		// unsent; the generator never queues more than conns events.
		due := make(chan time.Time, conns)
		for range conns {
			wg.Go(func() {
				for d := range due {
					post(d)
				}
			})
		}
		start := time.Now()
		interval := time.Duration(float64(time.Second) / ph.Rate)
		tick := time.NewTicker(time.Millisecond)
		var i int64
	pace:
		for {
			now := time.Now()
			if !now.Before(end) || ctx.Err() != nil {
				break
			}
			for at := start.Add(time.Duration(i) * interval); !at.After(now); at = start.Add(time.Duration(i) * interval) {
				i++
				offered.Add(1)
				select {
				case due <- at:
				default:
					unsent.Add(1)
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				break pace
			}
		}
		tick.Stop()
		close(due)
		wg.Wait()
	}
	return ctx.Err()
}
