package bench

import (
	"math"
	"testing"
	"time"
)

func ms(xs ...int) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample, any p", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", hundred, 99.9, 100 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"p0 clamps to the min", hundred, 0, 1 * time.Millisecond},
		{"nearest rank rounds up", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"nearest rank rounds up past half", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p90 of ten", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("Percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize(ms(5, 1, 4, 2, 3)) // unsorted on purpose
	if s.N != 5 || s.P50 != 3 || s.Max != 5 || s.Mean != 3 || s.P99 != 5 {
		t.Fatalf("Summarize = %+v", s)
	}
	if (Summarize(nil) != Percentiles{}) {
		t.Fatal("empty summary is not zero")
	}
	var l Latencies
	for _, d := range ms(10, 30, 20) {
		l.Add(d)
	}
	if got := l.Summary(); got.P50 != 20 || got.N != 3 {
		t.Fatalf("Latencies.Summary = %+v", got)
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(tt.xs); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
	xs := []float64{3, 1, 2}
	Median(xs)
	if xs[0] != 3 {
		t.Fatal("Median modified its input")
	}
}

func TestLedgerAccounting(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := NewLedger()
	post := func(key string, accepted bool) {
		l.Posted(key, t0)
		if accepted {
			l.Accepted(key)
		}
	}
	post("a", true) // replied once: fine
	post("b", true) // never replied: lost
	post("c", true) // replied three times: two duplicates
	post("d", true) // reply raced the 200
	post("e", false)
	post("f", false)                 // no 200 but a reply: stored, answer lost — neither lost nor duplicated
	l.Posted("a", t0.Add(time.Hour)) // a retry does not restart the clock

	if p, _ := l.Pending(); p != 4 {
		t.Fatalf("pending %d, want 4", p)
	}
	l.Reply("a", t0.Add(10*time.Millisecond))
	l.Reply("c", t0.Add(20*time.Millisecond))
	l.Reply("c", t0.Add(21*time.Millisecond))
	l.Reply("c", t0.Add(22*time.Millisecond))
	l.Reply("zz", t0.Add(5*time.Millisecond)) // never posted
	l.Reply("f", t0.Add(40*time.Millisecond))
	l.Posted("d", t0)
	l.Reply("d", t0.Add(30*time.Millisecond))
	l.Accepted("d") // after its reply
	l.Accepted("d") // twice: counted once

	if p, _ := l.Pending(); p != 1 {
		t.Fatalf("pending %d, want 1 (b)", p)
	}
	got := l.Account(nil)
	want := Accounting{Posted: 6, Accepted: 4, Replied: 3, Lost: 1, Duplicated: 2, Unexpected: 1, UnackedReplied: 1}
	if got != want {
		t.Fatalf("Account = %+v\nwant      %+v", got, want)
	}
	// First reply per event, from its first post: a 10, c 20, d 30, f 40.
	if e := l.EndToEnd(); e.N != 4 || e.P50 != 20 || e.Max != 40 {
		t.Fatalf("EndToEnd = %+v", e)
	}
	first, last := l.Span()
	if !first.Equal(t0) || !last.Equal(t0.Add(40*time.Millisecond)) {
		t.Fatalf("Span = %v, %v", first, last)
	}

	// The emulator's record (after uuid dedup) overrides the tap's calls.
	rec := map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}
	if got := l.Account(rec); got.Lost != 0 || got.Duplicated != 0 || got.Replied != 4 || got.Unexpected != 0 {
		t.Fatalf("Account(recorded) = %+v", got)
	}
}

func TestLedgerPendingSignals(t *testing.T) {
	l := NewLedger()
	l.Posted("a", time.Now())
	l.Accepted("a")
	n, changed := l.Pending()
	if n != 1 {
		t.Fatalf("pending %d", n)
	}
	l.Reply("a", time.Now())
	select {
	case <-changed:
	default:
		t.Fatal("a reply did not signal")
	}
	if n, _ := l.Pending(); n != 0 {
		t.Fatalf("pending %d after the reply", n)
	}
}
