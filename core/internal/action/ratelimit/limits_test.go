package ratelimit

import (
	"testing"
	"time"
)

func TestGCRAKeepsUnderTheLimit(t *testing.T) {
	tests := map[string]struct {
		l          Limit
		margin     time.Duration
		minUseRate float64 // of Count/Window
	}{
		"50/s":       {Limit{50, time.Second}, 50 * time.Millisecond, 0.85},
		"1000/min":   {Limit{1000, time.Minute}, 50 * time.Millisecond, 0.98},
		"5/s":        {Limit{5, time.Second}, 50 * time.Millisecond, 0.95},
		"1000/6s":    {Limit{1000, 6 * time.Second}, 50 * time.Millisecond, 0.98},
		"1 per hour": {Limit{1, time.Hour}, 0, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := gcra(tc.l, tc.margin, 0, 0)
			interval := float64(g.Period) / float64(g.Rate)
			// At most Count in any Window+Margin: Burst + (Window+Margin)/T < Count+1.
			if float64(g.Burst)+float64(tc.l.Window+tc.margin)/interval > float64(tc.l.Count)+1+1e-9 {
				t.Fatalf("%+v admits more than %d in %s", g, tc.l.Count, tc.l.Window+tc.margin)
			}
			use := (float64(time.Second) / interval) / (float64(tc.l.Count) / tc.l.Window.Seconds())
			if use < tc.minUseRate {
				t.Fatalf("%+v uses %.3f of the limit, want at least %.2f", g, use, tc.minUseRate)
			}
		})
	}
}
