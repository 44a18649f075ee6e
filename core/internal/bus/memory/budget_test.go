package memory

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"github.com/larkway/larkway/core/internal/bus"
)

func TestFootprint(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name  string
		u     Usage
		delta int64
		want  int64
	}{
		{"live heap only", Usage{Mapped: 100 * mb, Live: 100 * mb, Objects: 100 * mb}, 0, 100 * mb},
		{"spans half empty double it", Usage{Mapped: 200 * mb, Live: 50 * mb, Objects: 100 * mb, Unused: 100 * mb}, 0, 100 * mb},
		{"free pages are not footprint", Usage{Mapped: 150 * mb, Live: 100 * mb, Objects: 100 * mb, Free: 50 * mb}, 0, 100 * mb},
		{"stacks and the runtime's own are", Usage{Mapped: 120 * mb, Live: 100 * mb, Objects: 100 * mb}, 0, 120 * mb},
		{"messages retained since the collection count", Usage{Mapped: 100 * mb, Live: 100 * mb, Objects: 100 * mb}, 20 * mb, 120 * mb},
		{"and those released", Usage{Mapped: 100 * mb, Live: 100 * mb, Objects: 100 * mb}, -30 * mb, 70 * mb},
		{"never below nothing", Usage{Mapped: 100 * mb, Live: 10 * mb, Objects: 100 * mb}, -30 * mb, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.u.Footprint(tt.delta); got != tt.want {
				t.Fatalf("Footprint(%d) = %d MB, want %d MB", tt.delta, got/mb, tt.want/mb)
			}
		})
	}
}

// fakeUsage is a runtime whose memory the test sets.
type fakeUsage struct {
	mu sync.Mutex
	u  Usage
}

func (f *fakeUsage) set(u Usage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.u = u
}

func (f *fakeUsage) read() Usage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.u
}

// With a budget, the bus refuses while the process's footprint is past two
// thirds of its memory limit however few bytes its messages count, Room
// says so, and an acknowledgement wakes Room's waiters to look again.
func TestBudgetGateFollowsTheProcess(t *testing.T) {
	ctx := t.Context()
	const mb = 1 << 20
	fake := &fakeUsage{}
	b := New(nil, WithBudget(1<<40)) // the messages' own bound never binds here
	defer b.Close(context.Background())
	b.gate.read = fake.read
	resample := func(u Usage) {
		fake.set(u)
		b.gate.next.Store(0) // the next check samples, whatever the clock
	}
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "a"})
	if err != nil {
		t.Fatal(err)
	}
	msg := bus.Message{Key: "k", Payload: make([]byte, 100)}

	resample(Usage{Mapped: 60 * mb, Live: 60 * mb, Objects: 60 * mb, Limit: 100 * mb})
	if ch := b.Room(); ch != nil {
		t.Fatal("Room at 60 % of the limit = a channel, want nil")
	}
	if err := b.Publish(ctx, "t", msg); err != nil {
		t.Fatalf("publish at 60 %% of the limit: %v", err)
	}

	// 50 MB live in spans a third empty: 75 MB, past two thirds (67 MB).
	resample(Usage{Mapped: 95 * mb, Live: 50 * mb, Objects: 50 * mb, Unused: 25 * mb, Limit: 100 * mb})
	err = b.Publish(ctx, "t", msg)
	if !errors.Is(err, bus.ErrFull) || !errors.Is(err, bus.ErrUnavailable) || !strings.Contains(err.Error(), "memory limit") {
		t.Fatalf("publish past the footprint's share = %v, want ErrFull naming the memory limit", err)
	}
	room := b.Room()
	if room == nil {
		t.Fatal("Room past the footprint's share = nil, want a channel")
	}

	// The consumer acks the one message held: Room's waiters wake, and
	// find room once the process's memory is down.
	d, err := c.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resample(Usage{Mapped: 60 * mb, Live: 40 * mb, Objects: 40 * mb, Limit: 100 * mb, Cycles: 1})
	if err := d.Ack(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-room:
	default:
		t.Fatal("Room's channel still open after an ack")
	}
	if ch := b.Room(); ch != nil {
		t.Fatal("Room after the memory went down = a channel, want nil")
	}
	if err := b.Publish(ctx, "t", msg); err != nil {
		t.Fatalf("publish after the memory went down: %v", err)
	}

	// Without a memory limit the gate never closes.
	resample(Usage{Mapped: 500 * mb, Live: 500 * mb, Objects: 500 * mb, Limit: math.MaxInt64})
	if err := b.Publish(ctx, "t", msg); err != nil {
		t.Fatalf("publish without a memory limit: %v", err)
	}
}

// Messages published since the last collection count toward the footprint
// before the next one measures them: a flood between two collections
// cannot run past the limit unseen.
func TestBudgetGateCountsMessagesSinceTheCollection(t *testing.T) {
	ctx := t.Context()
	const mb = 1 << 20
	fake := &fakeUsage{}
	b := New(nil, WithBudget(1<<40))
	defer b.Close(context.Background())
	b.gate.read = fake.read
	if _, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "a"}); err != nil {
		t.Fatal(err)
	}
	// 50 MB live at the collection; the limit's share is two thirds.
	fake.set(Usage{Mapped: 50 * mb, Live: 50 * mb, Objects: 50 * mb, Limit: 100 * mb, Cycles: 3})
	msg := bus.Message{Key: "k", Payload: make([]byte, 64<<10)}
	per := MessageHeap(msg, 1)
	share := int64(100*mb) - int64(100*mb)/gcHeadroomDiv
	want := int((share - 50*mb + per - 1) / per) // publishes that bring it to the share
	for i := range want {
		b.gate.next.Store(0)
		if err := b.Publish(ctx, "t", msg); err != nil {
			t.Fatalf("publish %d of %d under the limit's share: %v", i, want, err)
		}
	}
	b.gate.next.Store(0)
	if err := b.Publish(ctx, "t", msg); !errors.Is(err, bus.ErrFull) {
		t.Fatalf("publish once the messages since the collection reach the share = %v, want ErrFull", err)
	}
}

// A memory bus with a budget, flooded by a publisher while its consumer
// lags far behind, keeps the process's memory (runtime/metrics) within
// 1.2x of the budget and refuses with ErrFull at it; every message it took
// is delivered exactly once. The budget is the Go memory limit, as
// `larkway serve` sets it, over what the test process held before.
func TestBudgetHoldsUnderAFlood(t *testing.T) {
	ctx := t.Context()
	const (
		budget = 48 << 20
		rounds = 6
		catch  = 3000 // messages the consumer handles between two floods
	)
	runtime.GC()
	debug.FreeOSMemory()
	base := ProcessBytes()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(base + budget))
	b := New(nil, WithBudget(budget))
	defer b.Close(context.Background())
	c, err := b.Subscribe(ctx, bus.SubscribeOptions{Topic: "t", Subscription: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var peak int64
	measure := func() { peak = max(peak, ProcessBytes()-base) }
	var (
		accepted uint64
		seen     = map[uint64]int{}
	)
	receive := func(n int) {
		for range n {
			d, err := c.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			seen[binary.BigEndian.Uint64(d.Payload)]++
			if err := d.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Like a webhook request's, each publish leaves garbage behind: the
	// request's buffers, in other size classes than the stored copy.
	var sink []byte
	for round := range rounds {
		for {
			sink = make([]byte, 4096+int(accepted%7)*512)
			payload := make([]byte, 1300)
			binary.BigEndian.PutUint64(payload, accepted)
			err := b.Publish(ctx, "t", bus.Message{Key: "oc_chat_" + string(rune('a'+accepted%26)), Payload: payload})
			if errors.Is(err, bus.ErrFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if accepted++; accepted%256 == 0 {
				measure()
			}
		}
		measure()
		t.Logf("round %d: %d accepted, then ErrFull; process %.1f MB over its start, budget %d MB", round, accepted,
			float64(ProcessBytes()-base)/(1<<20), budget>>20)
		receive(catch)
	}
	_ = sink
	backlog, err := b.Backlog(ctx, "t", "a")
	if err != nil {
		t.Fatal(err)
	}
	receive(int(backlog))
	if peak > budget*12/10 {
		t.Fatalf("the process's memory peaked %.1f MB over its start, past 1.2x the %d MB budget", float64(peak)/(1<<20), budget>>20)
	}
	if uint64(len(seen)) != accepted {
		t.Fatalf("%d distinct messages delivered, %d accepted", len(seen), accepted)
	}
	for i := range accepted {
		if seen[i] != 1 {
			t.Fatalf("message %d delivered %d times, want once", i, seen[i])
		}
	}
	if accepted < rounds*catch {
		t.Fatalf("only %d messages accepted in %d rounds: the budget held almost nothing", accepted, rounds)
	}
	t.Logf("peak %.1f MB over the start at a %d MB budget (%.2fx); %d messages accepted", float64(peak)/(1<<20), budget>>20,
		float64(peak)/budget, accepted)
}
