package app

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/larkway/larkway/core/internal/callback"
	"github.com/larkway/larkway/core/internal/cluster"
	"github.com/larkway/larkway/core/internal/config"
	"github.com/larkway/larkway/core/internal/dedup"
	"github.com/larkway/larkway/core/internal/dlq"
	"github.com/larkway/larkway/core/internal/ingest"
	"github.com/larkway/larkway/core/internal/shadow"
	"github.com/larkway/larkway/core/internal/state"
)

// stores are the state shared by replicas: in Redis when configured,
// otherwise in this process (a single replica).
type stores struct {
	redis   *redis.Client
	dedup   dedup.Store
	dlq     dlq.Store
	cluster cluster.Store
	replay  ingest.ReplayCache
	state   state.Store
	cards   callback.Hub
	shadows shadow.Store
}

func openStores(ctx context.Context, rc config.Redis) (*stores, error) {
	if rc.Addr == "" {
		return &stores{dedup: dedup.NewMemory(), dlq: dlq.NewMemory(), cluster: cluster.NewMemory(),
			replay: ingest.NewMemoryReplayCache(), state: state.NewMemory(), cards: callback.NewMemory(),
			shadows: shadow.NewMemory(0)}, nil
	}
	client := redis.NewClient(&redis.Options{Addr: rc.Addr, Password: rc.Password, DB: rc.DB,
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("connecting to Redis at %s: %w", rc.Addr, err)
	}
	p := rc.KeyPrefix
	return &stores{redis: client, dedup: dedup.NewRedis(client, p+"dedup:"), dlq: dlq.NewRedis(client, p+"dlq:"),
		cluster: cluster.NewRedis(client, p+"cluster:"), replay: ingest.NewRedisReplayCache(client, p+"nonce:"),
		state: state.NewRedis(client, p+"state:"), cards: callback.NewRedis(client, p+"callback:"),
		shadows: shadow.NewRedis(client, p+"shadow:", 0)}, nil
}

func (s *stores) close() {
	if s.redis != nil {
		_ = s.redis.Close()
	}
}

// ping checks the shared store for readiness.
func (s *stores) ping(ctx context.Context) error {
	if s.redis == nil {
		return nil
	}
	return s.redis.Ping(ctx).Err()
}
