package keyed

import (
	"fmt"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/testenv"
)

func keyedDel(key, id string) *bus.Delivery {
	return &bus.Delivery{Message: bus.Message{Key: key}, ID: id}
}

func mustTake(t *testing.T, q *Queue, want string) *bus.Delivery {
	t.Helper()
	d, ok := q.Take()
	if !ok || d.ID != want {
		t.Fatalf("take = %v, %v; want %s", d, ok, want)
	}
	return d
}

func readyKeys(q *Queue) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.ready...)
}

// waitFull waits until a put is waiting for room.
func waitFull(t *testing.T, q *Queue) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, "put did not wait for room", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.full == 1
	})
}

// A held chat's next delivery waits for done; other chats' do not.
func TestQueueOrderPerKey(t *testing.T) {
	q := New(10)
	for _, d := range []*bus.Delivery{keyedDel("a", "a1"), keyedDel("a", "a2"), keyedDel("b", "b1"), keyedDel("a", "a3")} {
		q.Put(d)
	}
	a1 := mustTake(t, q, "a1")
	b1 := mustTake(t, q, "b1") // a is held: b goes first
	if r := readyKeys(q); len(r) != 0 {
		t.Fatalf("ready %v while a is held and b is empty", r)
	}
	q.Done(b1)
	if r := readyKeys(q); len(r) != 0 {
		t.Fatalf("ready %v after b's only delivery", r)
	}
	q.Done(a1)
	a2 := mustTake(t, q, "a2")
	q.Close()
	q.Done(a2)
	mustTake(t, q, "a3")
	if _, ok := q.Take(); ok {
		t.Fatal("take after close and empty returned a delivery")
	}
}

// put waits while max deliveries are queued, until a take makes room.
func TestQueueBound(t *testing.T) {
	q := New(2)
	q.Put(keyedDel("a", "a1"))
	q.Put(keyedDel("b", "b1"))
	put := make(chan struct{})
	go func() { q.Put(keyedDel("c", "c1")); close(put) }()
	waitFull(t, q)
	q.mu.Lock()
	queued := q.queued
	q.mu.Unlock()
	if queued != 2 {
		t.Fatalf("%d queued, want the bound, 2", queued)
	}
	mustTake(t, q, "a1")
	<-put
	mustTake(t, q, "b1")
	mustTake(t, q, "c1")
}

// close wakes workers waiting on an empty queue, and puts waiting for room.
func TestQueueCloseWakesWaiters(t *testing.T) {
	q := New(1)
	q.Put(keyedDel("a", "a1"))
	put := make(chan struct{})
	go func() { q.Put(keyedDel("b", "b1")); close(put) }()
	waitFull(t, q)
	q.Close()
	<-put
	mustTake(t, q, "a1")
	mustTake(t, q, "b1")
	if _, ok := q.Take(); ok {
		t.Fatal("take returned a delivery from a closed, empty queue")
	}

	idle := New(1)
	ended := make(chan bool)
	go func() { _, ok := idle.Take(); ended <- ok }() // waits, or sees the close
	idle.Close()
	if ok := <-ended; ok {
		t.Fatal("take returned a delivery from a closed, empty queue")
	}
}

// BenchmarkKeyedQueue is one put, take and done on a queue of 64 chats.
func BenchmarkKeyedQueue(b *testing.B) {
	q := New(256)
	dels := make([]*bus.Delivery, 64)
	for i := range dels {
		dels[i] = &bus.Delivery{Message: bus.Message{Key: fmt.Sprintf("oc_%d", i)}}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q.Put(dels[i%64])
		d, _ := q.Take()
		q.Done(d)
		i++
	}
}
