package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/larkway/larkway/core/internal/testenv"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

func stores(t *testing.T) map[string]Store {
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return map[string]Store{"memory": NewMemory(), "redis": NewRedis(c, testenv.Name(t, "state")+":")}
}

func TestStoreSemantics(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if _, ok, _ := s.Get(ctx, "p", "k"); ok {
				t.Fatal("empty store has k")
			}
			ok, rev, err := s.CompareAndSwap(ctx, "p", "k", 0, []byte("v1"), time.Minute)
			if err != nil || !ok || rev == 0 {
				t.Fatalf("create: %v %d %v", ok, rev, err)
			}
			if ok, cur, _ := s.CompareAndSwap(ctx, "p", "k", 0, []byte("x"), time.Minute); ok || cur != rev {
				t.Fatalf("create over existing: %v %d", ok, cur)
			}
			ok, rev2, _ := s.CompareAndSwap(ctx, "p", "k", rev, []byte("v2"), time.Minute)
			if !ok || rev2 <= rev {
				t.Fatalf("swap: %v %d", ok, rev2)
			}
			v, found, _ := s.Get(ctx, "p", "k")
			if !found || string(v.Data) != "v2" || v.Revision != rev2 {
				t.Fatalf("get %+v", v)
			}
			if _, found, _ := s.Get(ctx, "other", "k"); found {
				t.Fatal("keys leak across plugins")
			}
			if r3, _ := s.Set(ctx, "p", "k", []byte{0, 1, 2}, time.Minute); r3 <= rev2 {
				t.Fatalf("set rev %d", r3)
			}
			if v, _, _ := s.Get(ctx, "p", "k"); string(v.Data) != "\x00\x01\x02" {
				t.Fatalf("binary value %q", v.Data)
			}
			if del, _ := s.Delete(ctx, "p", "k"); !del {
				t.Fatal("delete")
			}
			if del, _ := s.Delete(ctx, "p", "k"); del {
				t.Fatal("delete twice")
			}
		})
	}
}

// Concurrent CAS increments never lose an update.
func TestCompareAndSwapCounter(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for done := 0; done < 10; {
						v, _, err := s.Get(ctx, "p", "n")
						if err != nil {
							t.Error(err)
							return
						}
						ok, _, err := s.CompareAndSwap(ctx, "p", "n", v.Revision, append(v.Data, 'x'), time.Minute)
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							done++
						}
					}
				}()
			}
			wg.Wait()
			if v, _, _ := s.Get(ctx, "p", "n"); len(v.Data) != 80 {
				t.Fatalf("counter %d, want 80", len(v.Data))
			}
		})
	}
}

func TestTTL(t *testing.T) {
	m := NewMemory()
	now := time.Now()
	m.now = func() time.Time { return now }
	ctx := context.Background()
	_, _ = m.Set(ctx, "p", "k", []byte("v"), time.Second)
	now = now.Add(2 * time.Second)
	if _, ok, _ := m.Get(ctx, "p", "k"); ok {
		t.Fatal("expired key returned")
	}
}

func TestServiceValidatesPluginInput(t *testing.T) {
	ctx := context.Background()
	name := ""
	svc := NewService(NewMemory(), func() string { return name })
	if _, err := svc.Get(ctx, &pluginv1.GetRequest{Key: "k"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("before describe: %v", err)
	}
	name = "p"
	tests := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"empty key", func() error { _, err := svc.Set(ctx, &pluginv1.SetRequest{Key: ""}); return err }, codes.InvalidArgument},
		{"long key", func() error {
			_, err := svc.Set(ctx, &pluginv1.SetRequest{Key: strings.Repeat("k", MaxKeyBytes+1)})
			return err
		}, codes.InvalidArgument},
		{"huge value", func() error {
			_, err := svc.Set(ctx, &pluginv1.SetRequest{Key: "k", Value: make([]byte, MaxValueBytes+1)})
			return err
		}, codes.InvalidArgument},
		{"negative ttl", func() error {
			_, err := svc.Set(ctx, &pluginv1.SetRequest{Key: "k", Ttl: durationpb.New(-time.Second)})
			return err
		}, codes.InvalidArgument},
		{"ok", func() error { _, err := svc.Set(ctx, &pluginv1.SetRequest{Key: "k", Value: []byte("v")}); return err }, codes.OK},
		{"cas ok", func() error {
			_, err := svc.CompareAndSwap(ctx, &pluginv1.CompareAndSwapRequest{Key: "new", ExpectedRevision: 0, Value: []byte("v")})
			return err
		}, codes.OK},
	}
	for _, tt := range tests {
		if err := tt.call(); status.Code(err) != tt.code {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if got, _ := svc.Get(ctx, &pluginv1.GetRequest{Key: "k"}); !got.GetFound() || string(got.GetValue()) != "v" {
		t.Fatalf("get %v", got)
	}
	if got, _ := svc.Delete(ctx, &pluginv1.DeleteRequest{Key: "k"}); !got.GetDeleted() {
		t.Fatal("delete")
	}
}

// Keys expire on their own: a key nobody asks for again is gone once its
// TTL passed and any other call comes, and a rewritten key keeps only its
// newest expiry (no stale bookkeeping piles up).
func TestMemoryExpiresUnaskedKeys(t *testing.T) {
	m := NewMemory()
	now := time.Now()
	m.now = func() time.Time { return now }
	ctx := context.Background()
	for i := range 1000 {
		if _, err := m.Set(ctx, "p", fmt.Sprint("k", i), []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for range 1000 { // rewriting one key keeps one entry
		if _, err := m.Set(ctx, "p", "hot", []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Len(); n != 1001 {
		t.Fatalf("%d keys, want 1001", n)
	}
	now = now.Add(2 * time.Second)
	if _, _, err := m.Get(ctx, "q", "unrelated"); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	entries, heapLen, usage := len(m.entries), len(m.expiry), *m.usage["p"]
	m.mu.Unlock()
	if entries != 1 || heapLen != 1 || usage.entries != 1 || usage.bytes != len("v")+len(memKey("p", "hot")) {
		t.Fatalf("after expiry: %d entries, heap %d, usage %+v; want only the hot key", entries, heapLen, usage)
	}
	now = now.Add(2 * time.Hour)
	if m.Len() != 0 || len(m.usage) != 0 {
		t.Fatalf("after every TTL: %d keys, usage %v", m.Len(), m.usage)
	}
}

// A plugin at its bound is refused new keys (RESOURCE_EXHAUSTED), may still
// rewrite and delete its own, and another plugin is unaffected.
func TestMemoryBoundedPerPlugin(t *testing.T) {
	ctx := context.Background()
	m := NewMemoryBounded(3, 1000)
	for i := range 3 {
		if _, err := m.Set(ctx, "greedy", fmt.Sprint("k", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Set(ctx, "greedy", "k3", []byte("v"), time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("fourth key: %v, want ErrFull", err)
	}
	if ok, _, err := m.CompareAndSwap(ctx, "greedy", "k4", 0, []byte("v"), time.Hour); ok || !errors.Is(err, ErrFull) {
		t.Fatalf("fourth key by CAS: %v %v, want ErrFull", ok, err)
	}
	if _, err := m.Set(ctx, "greedy", "k0", []byte("rewritten"), time.Hour); err != nil {
		t.Fatalf("rewriting an own key at the bound: %v", err)
	}
	if _, err := m.Set(ctx, "greedy", "k1", make([]byte, 2000), time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("over the byte bound: %v", err)
	}
	if _, err := m.Set(ctx, "other", "k", []byte("v"), time.Hour); err != nil {
		t.Fatalf("another plugin: %v", err)
	}
	if ok, _ := m.Delete(ctx, "greedy", "k2"); !ok {
		t.Fatal("delete")
	}
	if _, err := m.Set(ctx, "greedy", "k3", []byte("v"), time.Hour); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	svc := NewService(m, func() string { return "greedy" })
	if _, err := svc.Set(ctx, &pluginv1.SetRequest{Key: "k9", Value: []byte("v")}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the bound through the service: %v", err)
	}
}
