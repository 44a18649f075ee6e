package bench

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestParsePhases(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Phase
		wantErr bool
	}{
		{"closed loop", "30s@0", []Phase{{0, 30 * time.Second}}, false},
		{"step", "10s@5000, 10s@15000,10s@5000", []Phase{{5000, 10 * time.Second}, {15000, 10 * time.Second}, {5000, 10 * time.Second}}, false},
		{"no rate", "10s", nil, true},
		{"bad duration", "x@10", nil, true},
		{"zero duration", "0s@10", nil, true},
		{"negative rate", "1s@-1", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePhases(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// Every request Sustain sends is counted once, by its answer, and the
// seconds it reports add up to them (the last, partial one included).
func TestSustainAccounting(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) % 3 {
		case 0:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 1:
			w.WriteHeader(http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	src, err := NewSource(testApp, "s", 10)
	if err != nil {
		t.Fatal(err)
	}
	var sum Second
	reports := 0
	err = Sustain(t.Context(), src, srv.URL, testApp, 4, []Phase{{Rate: 0, Duration: 300 * time.Millisecond}, {Rate: 2000, Duration: 300 * time.Millisecond}},
		func(s Second) {
			reports++
			sum.Offered += s.Offered
			sum.Unsent += s.Unsent
			sum.Accepted += s.Accepted
			sum.Rejected += s.Rejected
			sum.Failed += s.Failed
		})
	if err != nil {
		t.Fatal(err)
	}
	if reports == 0 {
		t.Fatal("no report: the final, partial second must be reported")
	}
	answered := sum.Accepted + sum.Rejected + sum.Failed
	if int64(answered) != calls.Load() || answered+sum.Unsent != sum.Offered {
		t.Fatalf("server saw %d; reported offered %d unsent %d accepted %d rejected %d failed %d",
			calls.Load(), sum.Offered, sum.Unsent, sum.Accepted, sum.Rejected, sum.Failed)
	}
	if sum.Accepted == 0 || sum.Rejected == 0 || sum.Failed == 0 {
		t.Fatalf("every answer kind was expected: %+v", sum)
	}
}
