// Package bench is `larkway bench`: a load generator that signs and encrypts
// realistic Lark events, drives a larkway stack (its own in-process one, or a
// running one at a URL) and measures ingest throughput and ack latency,
// end-to-end latency to the reply recorded in the Lark emulator, and lost and
// duplicated replies; and, in the same run and with the same generator, the
// reference points every larkway figure is printed beside as a ratio: a bare
// net/http responder, oapi-sdk-go's webhook dispatcher, and a raw gRPC
// stream.
package bench

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Latencies collects duration samples; it is safe for concurrent use.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one sample.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Summary returns the samples' percentiles.
func (l *Latencies) Summary() Percentiles {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	return Summarize(d)
}

// Percentiles summarizes a latency distribution, in milliseconds.
type Percentiles struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

// Summarize sorts d in place and computes its percentiles.
func Summarize(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	return Percentiles{
		N: len(d), Mean: ms(sum / time.Duration(len(d))),
		P50: ms(Percentile(d, 50)), P90: ms(Percentile(d, 90)), P99: ms(Percentile(d, 99)),
		P999: ms(Percentile(d, 99.9)), Max: ms(d[len(d)-1]),
	}
}

// Percentile is the nearest-rank p-th percentile of sorted samples: the
// smallest sample such that at least p % of the samples are ≤ it. p is
// clamped to (0, 100]; an empty slice gives 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none. It does not modify xs.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Ledger is the end-to-end accounting of one run: the events posted, those
// the core accepted (a 200), and the replies the emulator recorded for them.
// An accepted event without a reply is lost; a reply beyond the first for
// one event is a duplicate; a reply to an event never posted is unexpected.
// It is safe for concurrent use. K is the event's key: a string, or, in the
// sustained scenario, a number the ids map to (a few million ids held as
// strings would weigh in the RSS measured beside them).
type LedgerOf[K comparable] struct {
	mu       sync.Mutex
	posted   map[K]time.Time // event key → first post
	accepted map[K]bool
	replies  map[K]int
	e2e      []time.Duration // first post → first reply, per event
	pending  int             // accepted events without a reply yet
	changed  chan struct{}   // closed and replaced on every reply

	firstPost, lastReply time.Time
}

// Ledger is the ledger of string keys.
type Ledger = LedgerOf[string]

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return NewLedgerOf[string]() }

// NewLedgerOf returns an empty ledger of keys K.
func NewLedgerOf[K comparable]() *LedgerOf[K] {
	return &LedgerOf[K]{posted: map[K]time.Time{}, accepted: map[K]bool{}, replies: map[K]int{},
		changed: make(chan struct{})}
}

// Posted records the event key's first post (later calls for it are
// ignored: a retry does not restart its clock).
func (l *LedgerOf[K]) Posted(key K, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.posted[key]; !ok {
		l.posted[key] = at
		if l.firstPost.IsZero() || at.Before(l.firstPost) {
			l.firstPost = at
		}
	}
}

// Accepted records that the core acknowledged the event key with a 200.
// Its reply may already have been recorded: it can race the 200.
func (l *LedgerOf[K]) Accepted(key K) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.accepted[key] {
		return
	}
	l.accepted[key] = true
	if l.replies[key] == 0 {
		l.pending++
	}
}

// Reply records a reply to the event key that the emulator recorded at at.
func (l *LedgerOf[K]) Reply(key K, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.replies[key]++
	if at.After(l.lastReply) {
		l.lastReply = at
	}
	if l.replies[key] == 1 {
		if sent, ok := l.posted[key]; ok {
			l.e2e = append(l.e2e, at.Sub(sent))
		}
		if l.accepted[key] {
			l.pending--
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// Pending is the number of accepted events still without a reply, and a
// channel closed at the next reply.
func (l *LedgerOf[K]) Pending() (int, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending, l.changed
}

// Accounting is a ledger's verdict.
type Accounting struct {
	Posted   int `json:"posted"`
	Accepted int `json:"accepted"`
	// Replied counts accepted events with at least one reply.
	Replied int `json:"replied"`
	// Lost counts accepted events without a reply.
	Lost int `json:"lost"`
	// Duplicated counts replies beyond the first to one event.
	Duplicated int `json:"duplicated"`
	// Unexpected counts replies to events never posted.
	Unexpected int `json:"unexpected"`
	// UnackedReplied counts events replied to although the core never
	// answered 200 (it stored the event, then the answer was lost or late):
	// neither lost nor duplicated.
	UnackedReplied int `json:"unacked_replied"`
}

// Account counts lost, duplicated and unexpected replies: those the tap saw
// (recorded nil), or the counts per event the emulator recorded.
func (l *LedgerOf[K]) Account(recorded map[K]int) Accounting {
	l.mu.Lock()
	defer l.mu.Unlock()
	replies := l.replies
	if recorded != nil {
		replies = recorded
	}
	a := Accounting{Posted: len(l.posted), Accepted: len(l.accepted)}
	for key := range l.accepted {
		if replies[key] == 0 {
			a.Lost++
		} else {
			a.Replied++
		}
	}
	for key, n := range replies {
		a.Duplicated += max(n-1, 0)
		switch _, posted := l.posted[key]; {
		case !posted:
			a.Unexpected++
		case !l.accepted[key]:
			a.UnackedReplied++
		}
	}
	return a
}

// Span is the first post and the last reply.
func (l *LedgerOf[K]) Span() (firstPost, lastReply time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.firstPost, l.lastReply
}

// EndToEnd summarizes the first post → first reply latencies.
func (l *LedgerOf[K]) EndToEnd() Percentiles {
	l.mu.Lock()
	d := slices.Clone(l.e2e)
	l.mu.Unlock()
	return Summarize(d)
}
