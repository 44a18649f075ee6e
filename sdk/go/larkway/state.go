package larkway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// ErrNoState is returned when the core offers no state store (or, in tests,
// none was set up).
var ErrNoState = errors.New("larkway: no state store available")

// Entry is a stored value and its revision.
type Entry struct {
	Value []byte
	// Revision changes on every write; pass it to CompareAndSwap.
	Revision uint64
}

// StateBackend is what State calls; the core provides one over the plugin
// connection and the test kit an in-memory one.
type StateBackend interface {
	Get(ctx context.Context, key string) (Entry, bool, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error)
	CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (bool, uint64, error)
	Delete(ctx context.Context, key string) (bool, error)
}

// State is the plugin's key-value store, kept by the core (in Redis when the
// core runs several replicas), so the plugin process itself stays stateless.
// Keys are private to the plugin. A zero TTL means the core's default (7 days).
type State struct {
	mu      sync.Mutex
	broker  *plugin.GRPCBroker
	id      uint32
	backend StateBackend
	// A remote plugin dials the core's state store at remoteAddr.
	remoteAddr string
	remoteTLS  *tls.Config
	remoteConn *grpc.ClientConn
}

func (s *State) setRemote(addr string, tc *tls.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remoteAddr, s.remoteTLS = addr, tc
}

func (s *State) closeRemote() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.remoteConn != nil {
		_ = s.remoteConn.Close()
		s.remoteConn, s.backend = nil, nil
	}
}

// State returns the plugin's state store.
func (p *Plugin) State() *State { return p.state }

// SetStateBackend replaces the state store's backend (the test kit uses it).
func (p *Plugin) SetStateBackend(b StateBackend) {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	p.state.backend = b
}

func (s *State) setBroker(b *plugin.GRPCBroker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.broker = b
}

func (s *State) setBrokerID(id uint32) {
	s.mu.Lock()
	s.id = id
	s.mu.Unlock()
	if id != 0 {
		// go-plugin's plugin-side broker keeps the core's connection info
		// for 5 s after it arrives (GRPCBroker.timeoutWait), so dial now
		// rather than on first use; gRPC reconnects by itself afterwards.
		go func() { _, _ = s.get() }()
	}
}

// get returns the backend, dialling the core's StateService on first use.
func (s *State) get() (StateBackend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.backend != nil {
		return s.backend, nil
	}
	if s.remoteAddr != "" {
		// The core's certificate must name the address's host; gRPC
		// reconnects by itself.
		conn, err := grpc.NewClient(s.remoteAddr, grpc.WithTransportCredentials(credentials.NewTLS(s.remoteTLS)))
		if err != nil {
			return nil, fmt.Errorf("larkway: connecting to the state store: %w", err)
		}
		s.remoteConn = conn
		s.backend = &grpcState{c: pluginv1.NewStateServiceClient(conn)}
		return s.backend, nil
	}
	if s.broker == nil || s.id == 0 {
		return nil, ErrNoState
	}
	conn, err := s.broker.Dial(s.id)
	if err != nil {
		return nil, fmt.Errorf("larkway: connecting to the state store: %w", err)
	}
	s.backend = &grpcState{c: pluginv1.NewStateServiceClient(conn)}
	return s.backend, nil
}

// Get reads key.
func (s *State) Get(ctx context.Context, key string) (Entry, bool, error) {
	b, err := s.get()
	if err != nil {
		return Entry{}, false, err
	}
	return b.Get(ctx, key)
}

// Set writes key.
func (s *State) Set(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	b, err := s.get()
	if err != nil {
		return 0, err
	}
	return b.Set(ctx, key, value, ttl)
}

// CompareAndSwap writes key if its revision is still expected (0: the key
// must not exist). It reports whether it wrote and the current revision.
func (s *State) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, ttl time.Duration) (bool, uint64, error) {
	b, err := s.get()
	if err != nil {
		return false, 0, err
	}
	return b.CompareAndSwap(ctx, key, expected, value, ttl)
}

// Delete removes key.
func (s *State) Delete(ctx context.Context, key string) (bool, error) {
	b, err := s.get()
	if err != nil {
		return false, err
	}
	return b.Delete(ctx, key)
}

type grpcState struct{ c pluginv1.StateServiceClient }

func ttl(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

func (g *grpcState) Get(ctx context.Context, key string) (Entry, bool, error) {
	r, err := g.c.Get(ctx, &pluginv1.GetRequest{Key: key})
	if err != nil {
		return Entry{}, false, err
	}
	return Entry{Value: r.GetValue(), Revision: r.GetRevision()}, r.GetFound(), nil
}

func (g *grpcState) Set(ctx context.Context, key string, value []byte, d time.Duration) (uint64, error) {
	r, err := g.c.Set(ctx, &pluginv1.SetRequest{Key: key, Value: value, Ttl: ttl(d)})
	return r.GetRevision(), err
}

func (g *grpcState) CompareAndSwap(ctx context.Context, key string, expected uint64, value []byte, d time.Duration) (bool, uint64, error) {
	r, err := g.c.CompareAndSwap(ctx, &pluginv1.CompareAndSwapRequest{Key: key, ExpectedRevision: expected, Value: value, Ttl: ttl(d)})
	return r.GetSwapped(), r.GetRevision(), err
}

func (g *grpcState) Delete(ctx context.Context, key string) (bool, error) {
	r, err := g.c.Delete(ctx, &pluginv1.DeleteRequest{Key: key})
	return r.GetDeleted(), err
}
