// Package keyed is the per-chat work queue between a plugin's bus consumers
// and its workers: a chat's deliveries are handled one at a time, in order,
// while different chats proceed in parallel.
package keyed

import (
	"sync"

	"github.com/larkway/larkway/core/internal/bus"
)

// Queue hands deliveries to workers in order per key (chat), any key
// to any idle worker: a key is held by one worker at a time, and its next
// delivery becomes available once that worker is Done with it.
//
// Static sharding (hash of the key modulo workers) was simpler, but a shard
// holding two busy chats ran at half the pace of the others, and a full
// shard stopped the bus reader for every other chat; with 100 chats over 64
// workers the busiest shard bounded the whole plugin's throughput.
type Queue struct {
	mu      sync.Mutex
	more    sync.Cond // a key became ready, or the queue closed
	room    sync.Cond // queued dropped below max
	keys    map[string]*keyState
	ready   []string // keys with queued deliveries that no worker holds, oldest first
	queued  int      // deliveries put and not yet taken
	max     int
	full    int // puts waiting for room
	closing bool
}

type keyState struct {
	pending []*bus.Delivery
	held    bool // a worker is handling this key's delivery
}

// New returns a queue holding at most max deliveries.
func New(max int) *Queue {
	q := &Queue{keys: make(map[string]*keyState), max: max}
	q.more.L = &q.mu
	q.room.L = &q.mu
	return q
}

// Put queues del behind its key's earlier deliveries, waiting while max
// deliveries are queued (the bus keeps the rest until there is room).
func (q *Queue) Put(del *bus.Delivery) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.queued >= q.max && !q.closing {
		q.full++
		q.room.Wait()
		q.full--
	}
	k := q.keys[del.Key]
	if k == nil {
		k = &keyState{}
		q.keys[del.Key] = k
	}
	k.pending = append(k.pending, del)
	q.queued++
	if !k.held && len(k.pending) == 1 {
		q.ready = append(q.ready, del.Key)
		q.more.Signal()
	}
}

// Take waits for the next delivery of a key no worker holds, and holds its
// key until Done. ok is false once the queue is closed and empty.
func (q *Queue) Take() (del *bus.Delivery, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 {
		if q.closing && q.queued == 0 {
			return nil, false
		}
		q.more.Wait()
	}
	key := q.ready[0]
	q.ready[0] = ""
	q.ready = q.ready[1:]
	k := q.keys[key]
	del = k.pending[0]
	k.pending[0] = nil
	k.pending = k.pending[1:]
	k.held = true
	q.queued--
	q.room.Signal()
	if q.closing && q.queued == 0 {
		q.more.Broadcast() // the other waiting workers can end
	}
	return del, true
}

// Done releases del's key: its next delivery, if any, becomes available.
func (q *Queue) Done(del *bus.Delivery) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := q.keys[del.Key]
	k.held = false
	if len(k.pending) == 0 {
		delete(q.keys, del.Key)
		if q.closing && q.queued == 0 {
			q.more.Broadcast() // workers waiting for more can end
		}
		return
	}
	q.ready = append(q.ready, del.Key)
	q.more.Signal()
}

// Close lets Take return false once everything queued is taken; Put no
// longer waits for room.
func (q *Queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closing = true
	q.more.Broadcast()
	q.room.Broadcast()
}
