package dispatch

import (
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/bus"
	"github.com/larkway/larkway/core/internal/testenv"
)

func keyedDel(key, id string) *bus.Delivery {
	return &bus.Delivery{Message: bus.Message{Key: key}, ID: id}
}

func mustTake(t *testing.T, q *keyedQueue, want string) *bus.Delivery {
	t.Helper()
	d, ok := q.take()
	if !ok || d.ID != want {
		t.Fatalf("take = %v, %v; want %s", d, ok, want)
	}
	return d
}

func readyKeys(q *keyedQueue) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.ready...)
}

// waitFull waits until a put is waiting for room.
func waitFull(t *testing.T, q *keyedQueue) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, "put did not wait for room", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.full == 1
	})
}

// A held chat's next delivery waits for done; other chats' do not.
func TestKeyedQueueOrderPerKey(t *testing.T) {
	q := newKeyedQueue(10)
	for _, d := range []*bus.Delivery{keyedDel("a", "a1"), keyedDel("a", "a2"), keyedDel("b", "b1"), keyedDel("a", "a3")} {
		q.put(d)
	}
	a1 := mustTake(t, q, "a1")
	b1 := mustTake(t, q, "b1") // a is held: b goes first
	if r := readyKeys(q); len(r) != 0 {
		t.Fatalf("ready %v while a is held and b is empty", r)
	}
	q.done(b1)
	if r := readyKeys(q); len(r) != 0 {
		t.Fatalf("ready %v after b's only delivery", r)
	}
	q.done(a1)
	a2 := mustTake(t, q, "a2")
	q.close()
	q.done(a2)
	mustTake(t, q, "a3")
	if _, ok := q.take(); ok {
		t.Fatal("take after close and empty returned a delivery")
	}
}

// put waits while max deliveries are queued, until a take makes room.
func TestKeyedQueueBound(t *testing.T) {
	q := newKeyedQueue(2)
	q.put(keyedDel("a", "a1"))
	q.put(keyedDel("b", "b1"))
	put := make(chan struct{})
	go func() { q.put(keyedDel("c", "c1")); close(put) }()
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
func TestKeyedQueueCloseWakesWaiters(t *testing.T) {
	q := newKeyedQueue(1)
	q.put(keyedDel("a", "a1"))
	put := make(chan struct{})
	go func() { q.put(keyedDel("b", "b1")); close(put) }()
	waitFull(t, q)
	q.close()
	<-put
	mustTake(t, q, "a1")
	mustTake(t, q, "b1")
	if _, ok := q.take(); ok {
		t.Fatal("take returned a delivery from a closed, empty queue")
	}

	idle := newKeyedQueue(1)
	ended := make(chan bool)
	go func() { _, ok := idle.take(); ended <- ok }() // waits, or sees the close
	idle.close()
	if ok := <-ended; ok {
		t.Fatal("take returned a delivery from a closed, empty queue")
	}
}
