package dlq

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

func TestStores(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	for name, s := range map[string]Store{"memory": NewMemory(), "redis": NewRedis(c, testenv.Name(t, "dlq")+":")} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			base := time.Unix(1_700_000_000, 0)
			for i := range 5 {
				e := Entry{ID: fmt.Sprintf("m%d", i), Plugin: "p", Topic: "t", Reason: "r", Payload: []byte{byte(i), 0xff},
					DeadAt: base.Add(time.Duration(i) * time.Second), Properties: map[string]string{"k": "v"}}
				if err := s.Add(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			_ = s.Add(ctx, Entry{ID: "other", Plugin: "q", DeadAt: base})
			list, err := s.List(ctx, "p", 3)
			if err != nil || len(list) != 3 || list[0].ID != "m0" || list[2].ID != "m2" {
				t.Fatalf("list %+v %v", list, err)
			}
			e, err := s.Get(ctx, "p", "m4")
			if err != nil || e.Payload[0] != 4 || e.Properties["k"] != "v" || !e.DeadAt.Equal(base.Add(4*time.Second)) {
				t.Fatalf("get %+v %v", e, err)
			}
			if _, err := s.Get(ctx, "p", "nope"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get missing: %v", err)
			}
			if err := s.Delete(ctx, "p", "m0"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "p", "m0"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("delete twice: %v", err)
			}
			if n, _ := s.Count(ctx, "p"); n != 4 {
				t.Fatalf("count %d", n)
			}
			if all, _ := s.List(ctx, "p", 0); len(all) != 4 {
				t.Fatalf("list all %d", len(all))
			}
		})
	}
}
