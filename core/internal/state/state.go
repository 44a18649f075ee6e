// Package state is the plugin state store: per-plugin keys with TTL and
// compare-and-set, in Redis (memory when embedded), served to each plugin
// over go-plugin's broker as larkway.plugin.v1.StateService. Plugin
// processes stay stateless while conversations keep state across replicas
// and restarts.
package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// Limits on what a plugin may store.
const (
	MaxKeyBytes   = 512
	MaxValueBytes = 1 << 20
	// DefaultTTL applies when a write gives none; MaxTTL caps any.
	DefaultTTL = 7 * 24 * time.Hour
	MaxTTL     = 90 * 24 * time.Hour
)

// Value is a stored value and its revision (changes on every write).
type Value struct {
	Data     []byte
	Revision uint64
}

// Store is namespaced by plugin. Safe for concurrent use.
type Store interface {
	Get(ctx context.Context, plugin, key string) (Value, bool, error)
	Set(ctx context.Context, plugin, key string, data []byte, ttl time.Duration) (uint64, error)
	// CompareAndSwap writes when the current revision equals expected (0:
	// the key must not exist); it returns whether it wrote and the revision
	// now stored.
	CompareAndSwap(ctx context.Context, plugin, key string, expected uint64, data []byte, ttl time.Duration) (bool, uint64, error)
	Delete(ctx context.Context, plugin, key string) (bool, error)
}

// Redis keeps each key as a hash {d: data, r: revision} with a TTL;
// revisions come from one counter so they never repeat.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// NewRedis uses keys under prefix (e.g. "larkway:state:").
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

func (r *Redis) key(plugin, key string) string { return r.prefix + plugin + ":" + key }

// ErrStore classes store failures.
var ErrStore = errors.New("state store unavailable")

var setScript = redis.NewScript(`
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'r', rev)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return rev`)

var casScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
if cur ~= tonumber(ARGV[3]) then return {0, cur} end
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'r', rev)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, rev}`)

// Get implements Store.
func (r *Redis) Get(ctx context.Context, plugin, key string) (Value, bool, error) {
	vals, err := r.client.HMGet(ctx, r.key(plugin, key), "d", "r").Result()
	if err != nil {
		return Value{}, false, fmt.Errorf("reading state: %w: %w", ErrStore, err)
	}
	d, ok1 := vals[0].(string)
	rs, ok2 := vals[1].(string)
	if !ok1 || !ok2 {
		return Value{}, false, nil
	}
	rev, _ := strconv.ParseUint(rs, 10, 64)
	return Value{Data: []byte(d), Revision: rev}, true, nil
}

// Set implements Store.
func (r *Redis) Set(ctx context.Context, plugin, key string, data []byte, ttl time.Duration) (uint64, error) {
	rev, err := setScript.Run(ctx, r.client, []string{r.key(plugin, key), r.prefix + "revision"}, data, ttl.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("writing state: %w: %w", ErrStore, err)
	}
	return uint64(rev), nil
}

// CompareAndSwap implements Store.
func (r *Redis) CompareAndSwap(ctx context.Context, plugin, key string, expected uint64, data []byte, ttl time.Duration) (bool, uint64, error) {
	res, err := casScript.Run(ctx, r.client, []string{r.key(plugin, key), r.prefix + "revision"}, data, ttl.Milliseconds(), expected).Int64Slice()
	if err != nil || len(res) != 2 {
		return false, 0, fmt.Errorf("writing state: %w: %v", ErrStore, err)
	}
	return res[0] == 1, uint64(res[1]), nil
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, plugin, key string) (bool, error) {
	n, err := r.client.Del(ctx, r.key(plugin, key)).Result()
	if err != nil {
		return false, fmt.Errorf("deleting state: %w: %w", ErrStore, err)
	}
	return n == 1, nil
}

// Service serves one plugin's keys over gRPC, validating what the plugin
// sends: the plugin is untrusted input.
type Service struct {
	pluginv1.UnimplementedStateServiceServer
	store  Store
	plugin func() string
}

// NewService serves store to the plugin whose name plugin returns (known
// only once the plugin has described itself; until then calls fail).
func NewService(store Store, plugin func() string) *Service {
	return &Service{store: store, plugin: plugin}
}

func (s *Service) check(key string, data []byte) (string, error) {
	p := s.plugin()
	if p == "" {
		return "", status.Error(codes.FailedPrecondition, "state store: plugin has not described itself yet")
	}
	if key == "" || len(key) > MaxKeyBytes {
		return "", status.Errorf(codes.InvalidArgument, "state store: key must be 1..%d bytes", MaxKeyBytes)
	}
	if len(data) > MaxValueBytes {
		return "", status.Errorf(codes.InvalidArgument, "state store: value exceeds %d bytes", MaxValueBytes)
	}
	return p, nil
}

func ttlOf(d interface{ AsDuration() time.Duration }, set bool) (time.Duration, error) {
	if !set {
		return DefaultTTL, nil
	}
	t := d.AsDuration()
	switch {
	case t == 0:
		return DefaultTTL, nil
	case t < 0:
		return 0, status.Error(codes.InvalidArgument, "state store: negative ttl")
	case t > MaxTTL:
		return MaxTTL, nil
	}
	return t, nil
}

func storeErr(err error) error {
	if errors.Is(err, ErrFull) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// Get implements StateService.
func (s *Service) Get(ctx context.Context, req *pluginv1.GetRequest) (*pluginv1.GetResponse, error) {
	p, err := s.check(req.GetKey(), nil)
	if err != nil {
		return nil, err
	}
	v, ok, err := s.store.Get(ctx, p, req.GetKey())
	if err != nil {
		return nil, storeErr(err)
	}
	return &pluginv1.GetResponse{Found: ok, Value: v.Data, Revision: v.Revision}, nil
}

// Set implements StateService.
func (s *Service) Set(ctx context.Context, req *pluginv1.SetRequest) (*pluginv1.SetResponse, error) {
	p, err := s.check(req.GetKey(), req.GetValue())
	if err != nil {
		return nil, err
	}
	ttl, err := ttlOf(req.GetTtl(), req.GetTtl() != nil)
	if err != nil {
		return nil, err
	}
	rev, err := s.store.Set(ctx, p, req.GetKey(), req.GetValue(), ttl)
	if err != nil {
		return nil, storeErr(err)
	}
	return &pluginv1.SetResponse{Revision: rev}, nil
}

// CompareAndSwap implements StateService.
func (s *Service) CompareAndSwap(ctx context.Context, req *pluginv1.CompareAndSwapRequest) (*pluginv1.CompareAndSwapResponse, error) {
	p, err := s.check(req.GetKey(), req.GetValue())
	if err != nil {
		return nil, err
	}
	ttl, err := ttlOf(req.GetTtl(), req.GetTtl() != nil)
	if err != nil {
		return nil, err
	}
	ok, rev, err := s.store.CompareAndSwap(ctx, p, req.GetKey(), req.GetExpectedRevision(), req.GetValue(), ttl)
	if err != nil {
		return nil, storeErr(err)
	}
	return &pluginv1.CompareAndSwapResponse{Swapped: ok, Revision: rev}, nil
}

// Delete implements StateService.
func (s *Service) Delete(ctx context.Context, req *pluginv1.DeleteRequest) (*pluginv1.DeleteResponse, error) {
	p, err := s.check(req.GetKey(), nil)
	if err != nil {
		return nil, err
	}
	ok, err := s.store.Delete(ctx, p, req.GetKey())
	if err != nil {
		return nil, storeErr(err)
	}
	return &pluginv1.DeleteResponse{Deleted: ok}, nil
}
