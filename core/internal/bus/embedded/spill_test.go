package embedded

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/testenv"
)

// held is how many of sub's pending messages the bus holds in memory, and
// whether it spills.
func held(b *Bus, topic, sub string) (int, bool) {
	b.tmu.Lock()
	t := b.topics[topic]
	b.tmu.Unlock()
	t.mu.Lock()
	s := t.subs[sub]
	t.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ks.Pending()) + len(s.out), s.spilling
}

// publishKeyed publishes n messages with key key, payload key/i, in order.
func publishKeyed(ctx context.Context, b *Bus, topic, key string, n int) error {
	for i := range n {
		if err := b.Publish(ctx, topic, bus.Message{Key: key, Payload: fmt.Appendf(nil, "%s/%d", key, i)}); err != nil {
			return fmt.Errorf("publish %s/%d: %w", key, i, err)
		}
	}
	return nil
}

// orderChecker records deliveries of "key/i" payloads: each exactly once,
// and per key in publish order.
type orderChecker struct {
	mu   sync.Mutex
	last map[string]int
	seen map[string]bool
}

func newOrderChecker() *orderChecker {
	return &orderChecker{last: map[string]int{}, seen: map[string]bool{}}
}

func (o *orderChecker) add(payload []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := string(payload)
	if o.seen[p] {
		return fmt.Errorf("%s delivered twice", p)
	}
	o.seen[p] = true
	key, is, _ := strings.Cut(p, "/")
	i, _ := strconv.Atoi(is)
	if last, ok := o.last[key]; ok && i < last {
		return fmt.Errorf("%s delivered after %s/%d", p, key, last)
	}
	o.last[key] = i
	return nil
}

// A backlog deeper than the memory window waits on disk: the bus holds a
// window in memory, counts the rest in the backlog, retention never
// deletes it, and every message comes back once, in order per key.
func TestDeepBacklogSpillsToDisk(t *testing.T) {
	const window, n = 100, 2000
	b := openTest(t, Config{MemoryWindow: window, RetentionBytes: 1})
	defer closeBus(t, b)
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	for k := range 20 {
		if err := publishKeyed(t.Context(), b, "events", "k"+strconv.Itoa(k), n/20); err != nil {
			t.Fatal(err)
		}
	}
	if mem, spilling := held(b, "events", "s"); mem > window || !spilling {
		t.Fatalf("in memory %d of %d pending (spilling %v), want at most the window %d", mem, n, spilling, window)
	}
	if got := backlog(t, b, "events", "s"); got != n {
		t.Fatalf("backlog = %d, want %d (spilled messages count)", got, n)
	}
	// Retention by size (1 byte of history) must not touch what is pending.
	if err := b.enforceRetention(); err != nil {
		t.Fatal(err)
	}
	o := newOrderChecker()
	for i := range n {
		d := receiveT(t, c)
		if err := o.add(d.Payload); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		// A consumer that finds the window empty asks for more while a
		// refill runs: up to twice the window.
		if mem, _ := held(b, "events", "s"); mem > 2*window {
			t.Fatalf("in memory %d after %d deliveries, want at most %d", mem, i+1, 2*window)
		}
	}
	if got := backlog(t, b, "events", "s"); got != 0 {
		t.Fatalf("backlog after draining = %d, want 0", got)
	}
	if _, spilling := held(b, "events", "s"); spilling {
		t.Fatal("still spilling with an empty backlog")
	}
	// Back in memory: a new message is delivered at once.
	publishN(t, b, "events", 0, 1)
	d := receiveT(t, c)
	if d.Properties["i"] != "0" {
		t.Fatalf("after the spill, received %v, want message 0", d.Properties)
	}
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
}

// Publishers and a consumer at once, with a window far smaller than the
// load: spills start and end while publishes complete out of order, and
// every message is delivered once, in order per key, with memory bounded.
func TestSpillUnderConcurrentLoad(t *testing.T) {
	const window, publishers, each = 50, 8, 400
	b := openTest(t, Config{MemoryWindow: window})
	defer closeBus(t, b)
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	ctx := t.Context()
	errs := make(chan error, publishers)
	for w := range publishers {
		go func() { errs <- publishKeyed(ctx, b, "events", "p"+strconv.Itoa(w), each) }()
	}
	// Let a backlog build past the window before consuming, so the
	// consumer drains a spill while the publishers go on.
	testenv.Eventually(t, waitFor, "no backlog of 4 windows built up", func() bool {
		return backlog(t, b, "events", "s") >= 4*window
	})
	if _, spilling := held(b, "events", "s"); !spilling {
		t.Fatal("a backlog of 4 windows does not spill")
	}
	o := newOrderChecker()
	maxHeld := 0
	for i := range publishers * each {
		d := receiveT(t, c)
		if err := o.add(d.Payload); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
		mem, _ := held(b, "events", "s")
		maxHeld = max(maxHeld, mem)
	}
	for range publishers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Refills bring in up to twice the window for a starved consumer, and
	// a publish completing below the cursor goes to memory: at most one per
	// publisher beyond that.
	if maxHeld > 2*window+publishers {
		t.Fatalf("held %d in memory at most, want ≤ %d", maxHeld, 2*window+publishers)
	}
	if got := backlog(t, b, "events", "s"); got != 0 {
		t.Fatalf("backlog = %d, want 0", got)
	}
	t.Logf("held at most %d in memory", maxHeld)
}

// A restart reads back a window, not the whole backlog.
func TestRestartReadsBackAWindow(t *testing.T) {
	const window, n = 100, 1000
	dir := t.TempDir()
	b := openTest(t, Config{Dir: dir, MemoryWindow: window})
	subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	if err := publishKeyed(t.Context(), b, "events", "k", n); err != nil {
		t.Fatal(err)
	}
	closeBus(t, b)

	b = openTest(t, Config{Dir: dir, MemoryWindow: window})
	defer closeBus(t, b)
	if mem, spilling := held(b, "events", "s"); mem > window || !spilling {
		t.Fatalf("after the restart %d in memory (spilling %v), want at most %d", mem, spilling, window)
	}
	if got := backlog(t, b, "events", "s"); got != n {
		t.Fatalf("backlog after the restart = %d, want %d", got, n)
	}
	c := subscribeT(t, b, bus.SubscribeOptions{Topic: "events", Subscription: "s"})
	o := newOrderChecker()
	for i := range n {
		d := receiveT(t, c)
		if err := o.add(d.Payload); err != nil {
			t.Fatalf("delivery %d: %v", i, err)
		}
		if d.Attempt != 1 {
			t.Fatalf("delivery %d: attempt %d after a clean restart, want 1", i, d.Attempt)
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}
