package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/larkway/larkway/core/internal/state"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

// StateServer serves the plugin state store to remote plugins over mutual
// TLS. A call acts on the state of the plugin its client certificate names
// (PluginName), and only a configured remote plugin is served: a plugin
// reads and writes its own keys, as a launched one does over go-plugin's
// broker.
type StateServer struct {
	listen  string
	tls     *tls.Config
	store   state.Store
	plugins map[string]bool
	logger  *slog.Logger

	mu  sync.Mutex
	ln  net.Listener
	srv *grpc.Server
}

// NewStateServer returns a server for plugins on listen; it does no I/O
// beyond reading the TLS files.
func NewStateServer(listen string, f TLSFiles, store state.Store, plugins []string, logger *slog.Logger) (*StateServer, error) {
	tc, err := ServerTLS(f)
	if err != nil {
		return nil, fmt.Errorf("configuring the remote state server: %w", err)
	}
	allowed := map[string]bool{}
	for _, p := range plugins {
		allowed[p] = true
	}
	return &StateServer{listen: listen, tls: tc, store: store, plugins: allowed, logger: logger.With("component", "remote-state")}, nil
}

// Listen opens the listener (so Addr is known before Run).
func (s *StateServer) Listen() error {
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listening for remote plugins' state on %s: %w", s.listen, err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(s.tls)))
	pluginv1.RegisterStateServiceServer(srv, scoped{s: s})
	s.mu.Lock()
	s.ln, s.srv = ln, srv
	s.mu.Unlock()
	return nil
}

// Addr is the listening address.
func (s *StateServer) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run serves until ctx ends.
func (s *StateServer) Run(ctx context.Context) error {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if srv == nil {
		return errors.New("remote state server: Run before Listen")
	}
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving remote plugins' state: %w", err)
	}
	return nil
}

// Close stops serving at once and closes the listener (Run stops
// gracefully when its context ends). Idempotent.
func (s *StateServer) Close() {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if srv != nil {
		srv.Stop() // closes ln too, if Serve had it
	}
	if ln != nil {
		_ = ln.Close()
	}
}

// scoped resolves each call's plugin from its client certificate.
type scoped struct {
	pluginv1.UnimplementedStateServiceServer
	s *StateServer
}

func (c scoped) service(ctx context.Context) (*state.Service, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "state store: no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "state store: no client certificate")
	}
	name := PluginName(ti.State.PeerCertificates[0])
	if !c.s.plugins[name] {
		c.s.logger.Warn("state call refused: the certificate names no configured remote plugin", "names", name, "peer", p.Addr.String())
		return nil, status.Errorf(codes.PermissionDenied, "state store: certificate names %q, not a configured remote plugin", name)
	}
	return state.NewService(c.s.store, func() string { return name }), nil
}

func (c scoped) Get(ctx context.Context, r *pluginv1.GetRequest) (*pluginv1.GetResponse, error) {
	svc, err := c.service(ctx)
	if err != nil {
		return nil, err
	}
	return svc.Get(ctx, r)
}

func (c scoped) Set(ctx context.Context, r *pluginv1.SetRequest) (*pluginv1.SetResponse, error) {
	svc, err := c.service(ctx)
	if err != nil {
		return nil, err
	}
	return svc.Set(ctx, r)
}

func (c scoped) CompareAndSwap(ctx context.Context, r *pluginv1.CompareAndSwapRequest) (*pluginv1.CompareAndSwapResponse, error) {
	svc, err := c.service(ctx)
	if err != nil {
		return nil, err
	}
	return svc.CompareAndSwap(ctx, r)
}

func (c scoped) Delete(ctx context.Context, r *pluginv1.DeleteRequest) (*pluginv1.DeleteResponse, error) {
	svc, err := c.service(ctx)
	if err != nil {
		return nil, err
	}
	return svc.Delete(ctx, r)
}
