package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{First: time.Second, Max: time.Minute}
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{-3, time.Second}, {0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second},
		{6, 32 * time.Second}, {7, time.Minute}, {1000, time.Minute},
	}
	for _, tt := range tests {
		if got := p.Delay(tt.attempt); got != tt.want {
			t.Errorf("Delay(%d) = %s, want %s", tt.attempt, got, tt.want)
		}
	}
	if got := (Policy{}).Delay(3); got != 0 {
		t.Errorf("zero policy: %s", got)
	}
	if got := (Policy{First: time.Second}).Delay(4); got != 8*time.Second {
		t.Errorf("no max: %s", got)
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	p := Policy{First: 100 * time.Millisecond, Max: time.Second, Jitter: true}
	seen := map[time.Duration]bool{}
	for attempt := 1; attempt <= 6; attempt++ {
		step := Policy{First: p.First, Max: p.Max}.Delay(attempt)
		for range 200 {
			d := p.Delay(attempt)
			if d < step/2 || d > step {
				t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, step/2, step)
			}
			seen[d] = true
		}
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct delays: no jitter", len(seen))
	}
}
