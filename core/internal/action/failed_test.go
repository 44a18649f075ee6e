package action

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/testenv"
)

// TestFailedStores: both stores list newest first, bounded by the limit,
// find and delete by id, and say ErrFailedNotFound for an unknown one.
func TestFailedStores(t *testing.T) {
	stores := map[string]func(t *testing.T) FailedStore{
		"memory": func(*testing.T) FailedStore { return &MemoryFailedStore{} },
		"redis": func(t *testing.T) FailedStore {
			rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			return NewRedisFailedStore(rdb, testenv.Name(t, "lw")+":"+FailedKey, 0)
		},
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			s, ctx := mk(t), t.Context()
			for i := range 3 {
				if err := s.Put(ctx, FailedAction{Plugin: "p", EventID: fmt.Sprint("ev", i), Kind: "reply", Action: []byte(`{}`), At: time.Unix(int64(i), 0)}); err != nil {
					t.Fatal(err)
				}
			}
			list, err := s.List(ctx, 2)
			if err != nil || len(list) != 2 || list[0].EventID != "ev2" || list[1].EventID != "ev1" {
				t.Fatalf("List(2) = %+v, %v; want ev2, ev1", list, err)
			}
			if got, err := s.Get(ctx, list[1].ID); err != nil || got.EventID != "ev1" || got.ID != list[1].ID {
				t.Fatalf("Get = %+v, %v", got, err)
			}
			if err := s.Delete(ctx, list[1].ID); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, list[1].ID); !errors.Is(err, ErrFailedNotFound) {
				t.Fatalf("second Delete = %v, want ErrFailedNotFound", err)
			}
			if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrFailedNotFound) {
				t.Fatalf("Get(nope) = %v, want ErrFailedNotFound", err)
			}
			all, _ := s.List(ctx, 0)
			if n, err := s.Count(ctx); err != nil || n != 2 || len(all) != 2 || all[0].EventID != "ev2" || all[1].EventID != "ev0" {
				t.Fatalf("after delete: count %d (%v), list %+v", n, err, all)
			}
		})
	}
}
