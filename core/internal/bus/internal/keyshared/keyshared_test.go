package keyshared

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
)

type msg struct {
	key string
	seq uint64
}

func (m *msg) Key() string { return m.key }
func (m *msg) Seq() uint64 { return m.seq }

type consumer struct{ name string }

func entry(key string, seq uint64) *Entry[*msg] { return &Entry[*msg]{M: &msg{key: key, seq: seq}} }

func seqs(s *State[*consumer, *msg]) []uint64 {
	var out []uint64
	for _, e := range s.Pending() {
		out = append(out, e.M.Seq())
	}
	return out
}

func TestInsertKeepsSeqOrder(t *testing.T) {
	tests := []struct {
		name string
		in   []uint64
		want []uint64
	}{
		{"in order", []uint64{1, 2, 3}, []uint64{1, 2, 3}},
		{"redelivery lands in place", []uint64{1, 3, 4, 2}, []uint64{1, 2, 3, 4}},
		{"before all", []uint64{5, 6, 1}, []uint64{1, 5, 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New[*consumer, *msg](maphash.MakeSeed())
			for _, q := range tc.in {
				s.Insert(entry("k", q))
			}
			if got := seqs(s); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("pending seqs = %v, want %v", got, tc.want)
			}
		})
	}
}

// Next skips delayed entries (reporting the earliest wake), entries of keys
// pinned to another consumer, and keys hashed to another consumer.
func TestNext(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b := &consumer{"a"}, &consumer{"b"}
	s := New[*consumer, *msg](maphash.MakeSeed())
	s.Join(a, Salt(1))
	if i, wake := s.Next(a, now); i != -1 || !wake.IsZero() {
		t.Fatalf("empty: Next = %d, %v; want -1, zero", i, wake)
	}
	late, later := entry("x", 1), entry("y", 2)
	late.ReadyAt, later.ReadyAt = now.Add(2*time.Second), now.Add(time.Second)
	s.Insert(late)
	s.Insert(later)
	if i, wake := s.Next(a, now); i != -1 || !wake.Equal(now.Add(time.Second)) {
		t.Fatalf("delayed: Next = %d, %v; want -1, the earliest ready time", i, wake)
	}
	if i, _ := s.Next(a, now.Add(time.Second)); i != 1 {
		t.Fatalf("once ready: Next = %d, want 1", i)
	}

	// With two consumers, a key goes to the consumer it hashes to, and stays
	// with the consumer holding one of its entries.
	s.Join(b, Salt(2))
	var key string
	for n := 0; ; n++ {
		key = fmt.Sprint("k", n)
		if p, _ := s.pick(key); p == b {
			break
		}
	}
	s.Insert(entry(key, 3))
	s.Insert(entry(key, 4))
	if i, _ := s.Next(a, now); i != -1 {
		t.Fatalf("a took index %d of a key hashed to b", i)
	}
	i, _ := s.Next(b, now) // past the two delayed entries
	if i != 2 {
		t.Fatalf("b: Next = %d, want 2", i)
	}
	e := s.Take(b, i)
	if e.Deliveries != 1 {
		t.Fatalf("Take counted %d deliveries, want 1", e.Deliveries)
	}
	s.Leave(b)
	if i, _ := s.Next(a, now); i != -1 {
		t.Fatalf("a took index %d of a key pinned to b", i)
	}
	s.Release(e)
	if i, _ := s.Next(a, now); i != 2 {
		t.Fatalf("after release, a: Next = %d, want 2", i)
	}
	if n := s.Backlog(); n != 3 {
		t.Fatalf("Backlog = %d, want 3", n)
	}
}

// Rendezvous hashing: a consumer leaving moves only its own keys.
func TestPickMovesOnlyTheLeaversKeys(t *testing.T) {
	s := New[*consumer, *msg](maphash.MakeSeed())
	cs := []*consumer{{"a"}, {"b"}, {"c"}}
	for i, c := range cs {
		s.Join(c, Salt(uint64(i+1)))
	}
	before := make(map[string]*consumer)
	for n := range 1000 {
		k := fmt.Sprint("key", n)
		before[k], _ = s.pick(k)
	}
	s.Leave(cs[1])
	moved := 0
	for k, was := range before {
		now, _ := s.pick(k)
		if was != cs[1] && now != was {
			t.Fatalf("key %s moved from %s to %s though %s stayed", k, was.name, now.name, was.name)
		}
		if was == cs[1] {
			moved++
		}
	}
	if moved == 0 || moved == len(before) {
		t.Fatalf("%d of %d keys hashed to b: not a split", moved, len(before))
	}
}

func TestClaim(t *testing.T) {
	tests := []struct {
		name      string
		from      TokenState
		wantAct   bool
		wantErr   error
		wantState TokenState
	}{
		{"outstanding", Outstanding, true, nil, Settling},
		{"revoked", Revoked, false, bus.ErrClosed, Settled},
		{"already settling", Settling, false, nil, Settling},
		{"settled", Settled, false, nil, Settled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tk := &Token[*msg]{State: tc.from}
			act, err := tk.Claim(Settling)
			if act != tc.wantAct || !errors.Is(err, tc.wantErr) || tk.State != tc.wantState {
				t.Fatalf("Claim = %v, %v, state %v; want %v, %v, state %v", act, err, tk.State, tc.wantAct, tc.wantErr, tc.wantState)
			}
		})
	}
}

// CloseConsumer gives back the outstanding hand-outs when ctx ends first,
// leaves the ones being settled to their settler, and is idempotent.
func TestCloseConsumer(t *testing.T) {
	var mu sync.Mutex
	s := New[*consumer, *msg](maphash.MakeSeed())
	c := &consumer{"a"}
	s.Join(c, Salt(1))
	h := NewHandouts[*msg]()
	s.Insert(entry("k", 1))
	s.Insert(entry("k", 2))
	out := &Token[*msg]{E: s.Take(c, 0), State: Outstanding}
	busy := &Token[*msg]{E: s.Take(c, 0), State: Settling}
	h.Add(out)
	h.Add(busy)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var given []*Token[*msg]
	n, err := CloseConsumer(ctx, &mu, s, c, h, func(tk *Token[*msg]) { given = append(given, tk) })
	if n != 1 || !errors.Is(err, context.Canceled) || len(given) != 1 || given[0] != out || out.State != Revoked {
		t.Fatalf("CloseConsumer = %d, %v, gave back %v; want the outstanding one, context.Canceled", n, err, given)
	}
	if got := seqs(s); fmt.Sprint(got) != "[1]" {
		t.Fatalf("pending after close = %v, want [1]", got)
	}
	if !h.Closing() || s.Consumers() != 0 {
		t.Fatal("consumer still open after CloseConsumer")
	}
	select {
	case <-h.Done():
	default:
		t.Fatal("Done not closed")
	}
	h.Settle(busy) // its settler finishes it
	if err := h.WaitDrained(context.Background()); err != nil {
		t.Fatalf("WaitDrained after the last settle: %v", err)
	}
	if n, err := CloseConsumer(context.Background(), &mu, s, c, h, nil); n != 0 || err != nil {
		t.Fatalf("second CloseConsumer = %d, %v; want 0, nil", n, err)
	}
}

func TestCheckSubscribe(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		opts    bus.SubscribeOptions
		wantErr bool
	}{
		{"ok", context.Background(), bus.SubscribeOptions{Topic: "t", Subscription: "s"}, false},
		{"no topic", context.Background(), bus.SubscribeOptions{Subscription: "s"}, true},
		{"no subscription", context.Background(), bus.SubscribeOptions{Topic: "t"}, true},
		{"negative max deliveries", context.Background(), bus.SubscribeOptions{Topic: "t", Subscription: "s", MaxDeliveries: -1}, true},
		{"ended context", canceled, bus.SubscribeOptions{Topic: "t", Subscription: "s"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckSubscribe(tc.ctx, tc.opts); (err != nil) != tc.wantErr {
				t.Fatalf("CheckSubscribe = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}
