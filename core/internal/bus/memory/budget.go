package memory

import (
	"math"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Usage is the process's memory as the Go runtime accounts it
// (runtime/metrics), in bytes.
type Usage struct {
	// Mapped is what the runtime holds from the OS and has not returned
	// (/memory/classes/total less heap/released): what RSS follows.
	Mapped int64
	// Live is the heap the last collection found live (/gc/heap/live).
	Live int64
	// Objects is the heap in objects, live or not yet swept; Unused the
	// free slots of spans that hold objects (fragmentation); Free the
	// free pages not yet returned.
	Objects, Unused, Free int64
	// Limit is the Go memory limit (math.MaxInt64: none).
	Limit int64
	// Cycles counts completed collections.
	Cycles uint64
}

var usageNames = [...]string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/gc/gomemlimit:bytes",
	"/gc/cycles/total:gc-cycles",
}

// ReadUsage reads the process's Usage. It does not stop the world; it
// costs ~0.7 µs on the bench machine, and the bus samples it at most every
// sampleEvery, not per publish.
func ReadUsage() Usage {
	var s [len(usageNames)]metrics.Sample
	for i, n := range usageNames {
		s[i].Name = n
	}
	metrics.Read(s[:])
	v := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(min(s[i].Value.Uint64(), math.MaxInt64))
	}
	return Usage{Mapped: v(0) - v(1), Live: v(2), Objects: v(3), Unused: v(4), Free: v(5), Limit: v(6), Cycles: uint64(v(7))}
}

// ProcessBytes is the process's memory as the runtime accounts it (Usage's
// Mapped): what the budget bounds and RSS follows.
func ProcessBytes() int64 { return ReadUsage().Mapped }

// Footprint estimates the memory the process would still hold right after
// a collection, given that the messages retained now are retainedDelta
// bytes more than when the last collection measured Live: live heap,
// inflated by the fragmentation of the spans holding it (a span with one
// live object stays in use whole), plus what is not heap (stacks, the
// runtime's metadata).
func (u Usage) Footprint(retainedDelta int64) int64 {
	live := max(u.Live+retainedDelta, 0)
	frag := 1.0
	if u.Objects > 0 {
		frag = float64(u.Objects+u.Unused) / float64(u.Objects)
	}
	nonHeap := max(u.Mapped-u.Objects-u.Unused-u.Free, 0)
	return int64(float64(live)*frag) + nonHeap
}

// gcHeadroomDiv leaves a third of the memory limit for garbage between
// collections: the bus refuses once the footprint reaches two thirds of
// it. A smaller share holds more events but makes the collector run more
// often (each cycle marks every held message): with a fifth, a 503 at the
// bound cost 1.56–1.79x the bare responder's CPU in the sustained bench
// (the collector running back to back), with a third 1.30x, for ~23 %
// fewer events held.
const gcHeadroomDiv = 3

// sampleEvery rate-limits ReadUsage: at 20 000 publishes/s, 5 ms is 100
// publishes (~170 KB) between samples, nothing against the budget.
const sampleEvery = 5 * time.Millisecond

// gate refuses publishes while the process's footprint is near its Go
// memory limit, which `larkway serve` sets to the bus's budget. Counting
// the bytes messages hold is not enough: their allocations share spans
// with the short-lived buffers of the requests around them, and at the
// bound the free slots of the spans they kept in use came to a third of
// their bytes (bench/README.md).
type gate struct {
	read func() Usage // ReadUsage; tests inject their own

	full atomic.Bool  // the last sample's verdict
	next atomic.Int64 // unix nanos of the next sample

	mu           sync.Mutex // one sampler at a time; guards the fields below
	cycles       uint64     // Usage.Cycles at the last sample
	retainedAtGC int64      // retained bytes when cycles was first seen
	foot, limit  int64      // the last sample's, for errors and logs
}

// over reports whether the process is over its share of the memory limit,
// sampling the runtime if the last sample is older than sampleEvery.
// retained is the bus's retained bytes now.
func (g *gate) over(now time.Time, retained int64) bool {
	if now.UnixNano() < g.next.Load() || !g.mu.TryLock() {
		return g.full.Load()
	}
	defer g.mu.Unlock()
	g.next.Store(now.Add(sampleEvery).UnixNano())
	u := g.read()
	if u.Cycles != g.cycles {
		// Live was measured by a collection since the last sample: the
		// messages retained now stand for those it found, as near as
		// this can tell.
		g.cycles, g.retainedAtGC = u.Cycles, retained
	}
	g.foot, g.limit = u.Footprint(retained-g.retainedAtGC), u.Limit
	full := u.Limit > 0 && u.Limit < math.MaxInt64 && g.foot >= u.Limit-u.Limit/gcHeadroomDiv
	g.full.Store(full)
	return full
}

// state is the last sample's footprint and limit.
func (g *gate) state() (foot, limit int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.foot, g.limit
}
