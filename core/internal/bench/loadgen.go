package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load configures one generator run. The generator is a pool of
// Concurrency HTTP clients over loopback with keep-alive. With Rate > 0 it
// is open-loop: event i is due at start + i/Rate whether or not earlier
// answers came back, and its latency counts from when it was due (so a
// stalled server is not hidden by a stalled generator). With Rate 0 it is
// closed-loop, flat out: each client posts its next event as soon as the
// previous one is answered.
type Load struct {
	URL         string
	App         App
	Concurrency int
	Rate        float64
	// Events stops the run after this many events (0: Duration decides).
	Events int
	// Duration stops the run after this long (0: Events decides).
	Duration time.Duration
	// Retries re-posts an event that got no 200 up to this many times,
	// 20 ms apart (Lark's retry, compressed); 0 posts once.
	Retries int
	// Ledger, if set, records every event posted and accepted.
	Ledger *Ledger
	// Timeout bounds one request (default 10 s).
	Timeout time.Duration
	// Latencies, if set, also receives every ack latency.
	Latencies *Latencies
}

// LoadResult is what a generator run measured.
type LoadResult struct {
	// Posted events, Accepted with a 200, Failed after every retry.
	Posted   int `json:"posted"`
	Accepted int `json:"accepted"`
	Failed   int `json:"failed"`
	// Requests counts every POST, retries included; Statuses them by
	// status (0: transport error).
	Requests int         `json:"requests"`
	Statuses map[int]int `json:"statuses"`
	// Elapsed is from the first post to the last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	// PerSecond is Accepted / Elapsed.
	PerSecond float64 `json:"per_second"`
	// Ack is the latency from due (or sent, closed-loop) to the 200.
	Ack Percentiles `json:"ack"`
	// Target is the offered rate (0: flat out).
	Target float64 `json:"target_per_second"`
}

// merge adds another slice's counts to r (Ack is left to the caller).
func (r *LoadResult) merge(o LoadResult) {
	r.Posted += o.Posted
	r.Accepted += o.Accepted
	r.Failed += o.Failed
	r.Requests += o.Requests
	if r.Statuses == nil {
		r.Statuses = map[int]int{}
	}
	for k, v := range o.Statuses {
		r.Statuses[k] += v
	}
	r.Elapsed += o.Elapsed
	r.Target = o.Target
	if r.Elapsed > 0 {
		r.PerSecond = float64(r.Accepted) / r.Elapsed.Seconds()
	}
}

// NewClient returns the generator's HTTP client: keep-alive connections to
// one host, as many as concurrency.
func NewClient(concurrency int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		MaxConnsPerHost:     concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// Drive runs the generator against cfg.URL with events from src until
// cfg.Events are done or cfg.Duration has passed (or ctx ends).
func Drive(ctx context.Context, src *Source, cfg Load) (LoadResult, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Events <= 0 && cfg.Duration <= 0 {
		return LoadResult{}, errors.New("bench: a load needs an event count or a duration")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	client := NewClient(cfg.Concurrency, cfg.Timeout)
	defer client.CloseIdleConnections()

	var (
		lat      Latencies
		mu       sync.Mutex
		statuses = map[int]int{}
		posted   atomic.Int64
		accepted atomic.Int64
		failed   atomic.Int64
		requests atomic.Int64
		lastDone atomic.Int64 // unix nanos of the last answer
	)
	start := time.Now()
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	// claim reserves the next event index, or reports the run is over.
	var next atomic.Int64
	claim := func() (int64, bool) {
		i := next.Add(1) - 1
		if cfg.Events > 0 && i >= int64(cfg.Events) {
			return 0, false
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return 0, false
		}
		return i, ctx.Err() == nil
	}
	post := func(ev Event, due time.Time) {
		posted.Add(1)
		if cfg.Ledger != nil {
			cfg.Ledger.Posted(ev.Key, time.Now())
		}
		for attempt := 0; ; attempt++ {
			code := postOnce(ctx, client, cfg.URL, cfg.App, ev.Plain)
			requests.Add(1)
			lastDone.Store(time.Now().UnixNano())
			mu.Lock()
			statuses[code]++
			mu.Unlock()
			if code == http.StatusOK {
				d := time.Since(due)
				lat.Add(d)
				if cfg.Latencies != nil {
					cfg.Latencies.Add(d)
				}
				accepted.Add(1)
				if cfg.Ledger != nil {
					cfg.Ledger.Accepted(ev.Key)
				}
				return
			}
			if attempt >= cfg.Retries || ctx.Err() != nil {
				failed.Add(1)
				return
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}

	var wg sync.WaitGroup
	if cfg.Rate <= 0 {
		for range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if _, ok := claim(); !ok {
						return
					}
					post(src.Next(), time.Now())
				}
			}()
		}
	} else {
		// Open loop: the pacer hands due times to the clients; a backlog of
		// due events waits in the channel, its wait counted in the latency.
		due := make(chan time.Time, 1<<16)
		for range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for d := range due {
					post(src.Next(), d)
				}
			}()
		}
		interval := time.Duration(float64(time.Second) / cfg.Rate)
		tick := time.NewTicker(min(max(interval, time.Millisecond), 5*time.Millisecond))
	pace:
		for {
			// Everything due by now goes out, then wait for the next tick.
			for {
				i, ok := claim()
				if !ok {
					break pace
				}
				at := start.Add(time.Duration(i) * interval)
				if at.After(time.Now()) {
					next.Add(-1) // not yet: unclaim
					break
				}
				select {
				case due <- at:
				case <-ctx.Done():
					break pace
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
	}
	wg.Wait()
	end := time.Unix(0, lastDone.Load())
	if lastDone.Load() == 0 {
		end = time.Now()
	}
	res := LoadResult{
		Posted: int(posted.Load()), Accepted: int(accepted.Load()), Failed: int(failed.Load()),
		Requests: int(requests.Load()), Statuses: statuses, Elapsed: end.Sub(start), Ack: lat.Summary(), Target: cfg.Rate,
	}
	if res.Elapsed > 0 {
		res.PerSecond = float64(res.Accepted) / res.Elapsed.Seconds()
	}
	return res, ctx.Err()
}

// postOnce seals and posts one event and returns the HTTP status (0 for a
// transport error). The body is read to the end so the connection is kept.
func postOnce(ctx context.Context, client *http.Client, url string, app App, plain []byte) int {
	body, h, err := Seal(app, plain)
	if err != nil {
		return 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header = h
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}
