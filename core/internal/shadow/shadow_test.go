package shadow

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

func stores(t *testing.T, keep int) map[string]Store {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return map[string]Store{"memory": NewMemory(keep), "redis": NewRedis(c, testenv.Name(t, "shadow")+":", keep)}
}

// Records come back newest first, bounded by keep; the summary counts
// every record since the last Clear, kept or not.
func TestStoreKeepsNewestAndCounts(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t, 3) {
		t.Run(name, func(t *testing.T) {
			for i := range 5 {
				r := Record{Plugin: "echo", EventID: fmt.Sprint(i), Differs: i%2 == 0,
					Candidate: Side{Actions: []json.RawMessage{json.RawMessage(`{"reply":{}}`)}}}
				if i == 4 {
					r.Candidate.Refused = []string{"0: not allowed"}
				}
				if err := st.Add(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Add(ctx, Record{Plugin: "other", EventID: "x"}); err != nil {
				t.Fatal(err)
			}
			recs, err := st.List(ctx, "echo", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 3 || recs[0].EventID != "4" || recs[2].EventID != "2" {
				t.Fatalf("records %+v", recs)
			}
			if recs, _ := st.List(ctx, "echo", 1); len(recs) != 1 || recs[0].EventID != "4" {
				t.Fatalf("limited %+v", recs)
			}
			sum, err := st.Summary(ctx, "echo")
			if err != nil {
				t.Fatal(err)
			}
			if sum != (Summary{Events: 5, Differ: 3, Actions: 5, Refused: 1}) {
				t.Fatalf("summary %+v", sum)
			}
			if err := st.Clear(ctx, "echo"); err != nil {
				t.Fatal(err)
			}
			if recs, _ := st.List(ctx, "echo", 0); len(recs) != 0 {
				t.Fatalf("after clear %+v", recs)
			}
			if sum, _ := st.Summary(ctx, "echo"); sum != (Summary{}) {
				t.Fatalf("summary after clear %+v", sum)
			}
			if recs, _ := st.List(ctx, "other", 0); len(recs) != 1 {
				t.Fatal("clear reached another plugin")
			}
		})
	}
}
