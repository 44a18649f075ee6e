package dispatch

import (
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/testenv"
)

func TestRetryDelay(t *testing.T) {
	const backoff, limit = time.Second, time.Minute
	tests := []struct {
		name       string
		retryAfter *durationpb.Duration
		backoff    time.Duration
		want       time.Duration
	}{
		{"no retry_after", nil, backoff, backoff},
		{"zero", durationpb.New(0), backoff, backoff},
		{"shorter than the backoff", durationpb.New(200 * time.Millisecond), backoff, backoff},
		{"as long as the backoff", durationpb.New(backoff), backoff, backoff},
		{"longer than the backoff", durationpb.New(5 * time.Second), backoff, 5 * time.Second},
		{"at the limit", durationpb.New(limit), backoff, limit},
		{"beyond the limit", durationpb.New(10 * time.Minute), backoff, limit},
		{"absurd: protobuf's longest duration", &durationpb.Duration{Seconds: 315_576_000_000, Nanos: 999_999_999}, backoff, limit},
		{"absurd: beyond time.Duration, within protobuf's range", &durationpb.Duration{Seconds: math.MaxInt64 / 1_000_000_000 * 2}, backoff, limit},
		{"negative", durationpb.New(-5 * time.Second), backoff, backoff},
		{"invalid: nanos out of range", &durationpb.Duration{Seconds: 5, Nanos: 2_000_000_000}, backoff, backoff},
		{"invalid: signs differ", &durationpb.Duration{Seconds: 5, Nanos: -1}, backoff, backoff},
		{"invalid: beyond protobuf's range", &durationpb.Duration{Seconds: math.MaxInt64}, backoff, backoff},
		{"a backoff beyond the limit is kept", durationpb.New(10 * time.Minute), 2 * time.Minute, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryDelay(tt.retryAfter, tt.backoff, limit); got != tt.want {
				t.Fatalf("retryDelay(%v, %s, %s) = %s, want %s", tt.retryAfter, tt.backoff, limit, got, tt.want)
			}
		})
	}
}

// fakeClock runs AfterFunc callbacks when Advance passes their time.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	at, d time.Duration
	f     func()
	done  bool // fired or stopped
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now + d, d: d, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		stopped := !t.done
		t.done = true
		return stopped
	}
}

// Advance moves the clock by d and runs the callbacks that came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	var due []func()
	for _, t := range c.timers {
		if !t.done && t.at <= c.now {
			t.done = true
			due = append(due, t.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// pending are the durations of the timers neither fired nor stopped.
func (c *fakeClock) pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, t := range c.timers {
		if !t.done {
			out = append(out, t.d)
		}
	}
	return out
}

func (h *harness) seen() []string {
	h.plugin.mu.Lock()
	defer h.plugin.mu.Unlock()
	return slices.Clone(h.plugin.seen)
}

// A RETRY with retry_after is not redelivered before retry_after: the
// delivery is held, unacknowledged, for retry_after less the bus's backoff
// (which follows the nack), and nacked only then. The chat's next event
// does not wait for it.
func TestRetryAfterDelaysRedelivery(t *testing.T) {
	clock := &fakeClock{}
	const backoff = 10 * time.Millisecond // the harness's
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) {
		c.AfterFunc = clock.AfterFunc
		c.MaxRetryAfter = time.Hour
	})
	dl := h.deadLetters(t)
	h.publish(t, "oc_1", "slowdown")
	h.publish(t, "oc_1", "next")
	testenv.Eventually(t, 10*time.Second, "the retry was not held", func() bool { return len(clock.pending()) == 1 })
	if got, want := clock.pending()[0], retryAfter-backoff; got != want {
		t.Fatalf("held for %s, want retry_after %s less the backoff %s", got, retryAfter, backoff)
	}
	testenv.Eventually(t, 10*time.Second, "the chat's next event waited for the held retry", func() bool { return len(h.exec.texts("oc_1")) == 1 })

	clock.Advance(retryAfter - backoff - time.Nanosecond)
	if n := h.spy.nacks.Load(); n != 0 {
		t.Fatalf("nacked %d times before retry_after", n)
	}
	if got := h.seen(); !slices.Equal(got, []string{"slowdown", "next"}) {
		t.Fatalf("plugin saw %v before retry_after", got)
	}

	clock.Advance(time.Nanosecond)
	if n := h.spy.nacks.Load(); n != 1 {
		t.Fatalf("nacked %d times once retry_after passed, want 1", n)
	}
	testenv.Eventually(t, 10*time.Second, "not redelivered after retry_after", func() bool { return len(h.seen()) == 3 })
	// Attempt 2 is held again; attempt 3, the last, is dead-lettered at once.
	testenv.Eventually(t, 10*time.Second, "the second retry was not held", func() bool { return len(clock.pending()) == 1 })
	clock.Advance(retryAfter)
	d := receive(t, dl)
	if r := d.Properties[dlq.PropReason]; !strings.Contains(r, "after 3 attempts") || !strings.Contains(r, "rate limited") {
		t.Fatalf("reason %q", r)
	}
	if p := clock.pending(); len(p) != 0 {
		t.Fatalf("the last attempt was held too (%v)", p)
	}
	if got := testenv.MetricValue(t, h.reg, "larkway_dispatch_results_total", "plugin", "fake", "outcome", OutcomeRetry.String()); got != 3 {
		t.Fatalf("%v retries counted, want 3", got)
	}
}

// A retry_after beyond Config.MaxRetryAfter is cut to it.
func TestRetryAfterIsCapped(t *testing.T) {
	clock := &fakeClock{}
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) {
		c.AfterFunc = clock.AfterFunc
		c.MaxRetryAfter = 2 * time.Second
		c.Backoff = func(int) time.Duration { return 500 * time.Millisecond }
	})
	h.publish(t, "oc_1", "slowdown")
	testenv.Eventually(t, 10*time.Second, "the retry was not held", func() bool { return len(clock.pending()) == 1 })
	if got, want := clock.pending()[0], 2*time.Second-500*time.Millisecond; got != want {
		t.Fatalf("held for %s, want MaxRetryAfter less the backoff, %s", got, want)
	}
}

// Stopping the route hands held retries back to the bus at once rather
// than keeping them (and the consumer's close) waiting.
func TestHeldRetriesAreNackedOnStop(t *testing.T) {
	clock := &fakeClock{}
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) { c.AfterFunc = clock.AfterFunc })
	h.publish(t, "oc_1", "slowdown")
	testenv.Eventually(t, 10*time.Second, "the retry was not held", func() bool { return h.route.holds.count() == 1 })
	if err := h.stop(t); err != nil {
		t.Fatal(err)
	}
	if n := h.spy.nacks.Load(); n != 1 {
		t.Fatalf("%d nacks after stop, want 1", n)
	}
	if h.route.holds.count() != 0 || len(clock.pending()) != 0 {
		t.Fatal("a retry is still held after stop")
	}
}

// A RETRY without retry_after is nacked at once: the bus's backoff is the
// whole delay, as before retry_after was honoured.
func TestRetryWithoutRetryAfterIsNotHeld(t *testing.T) {
	clock := &fakeClock{}
	h := startWith(t, manifest(), 5*time.Second, func(c *Config) { c.AfterFunc = clock.AfterFunc })
	dl := h.deadLetters(t)
	h.publish(t, "oc_1", "retry")
	receive(t, dl)
	if p := clock.pending(); len(p) != 0 {
		t.Fatalf("retries held: %v", p)
	}
	if n := h.spy.nacks.Load(); n != 2 {
		t.Fatalf("%d nacks, want 2 (attempts 1 and 2; 3 is dead-lettered)", n)
	}
}
