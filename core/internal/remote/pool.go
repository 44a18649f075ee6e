package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/larkway/larkway/core/internal/dispatch"
	"github.com/larkway/larkway/core/internal/pluginhost"
	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

// DefaultResolveInterval is Config.ResolveInterval's default.
const DefaultResolveInterval = 10 * time.Second

// Config is one remote plugin.
type Config struct {
	// Name is the plugin's: its instances' certificates must name it and
	// their manifests must declare it.
	Name string
	// Address is host:port, dns:///host:port, or a comma-separated list of
	// either. Every address a host name resolves to is an instance.
	Address string
	TLS     TLSFiles
	// ResolveInterval between re-resolving Address and health-checking the
	// instances (default DefaultResolveInterval).
	ResolveInterval time.Duration
	// DescribeTimeout bounds connecting to, health-checking and describing
	// one instance (default 5 s).
	DescribeTimeout time.Duration
	// CoreVersion is told to the plugin in DescribeRequest.core_version.
	CoreVersion string
	// Lookup resolves a host name (nil: the system resolver).
	Lookup func(ctx context.Context, host string) ([]string, error)
	// Instances, if set, is kept at the number of instances in the pool
	// (0 once it is closed).
	Instances prometheus.Gauge
}

// Pool is a remote plugin's healthy instances: a dispatch.Pool and a
// manager.Instance.
type Pool struct {
	cfg    Config
	tls    *tls.Config
	logger *slog.Logger

	mu       sync.Mutex
	members  map[string]*instance
	retired  []*instance // left the pool; closed at the next round, once their streams drained
	manifest *pluginv1.Manifest
	changed  chan struct{}
	// refused is each address's last refusal, so a re-resolve that finds
	// an instance still down logs it once, not every round.
	refused map[string]string

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type instance struct {
	addr   string
	conn   *grpc.ClientConn
	svc    pluginv1.PluginServiceClient
	health healthpb.HealthClient
}

// Dial resolves the plugin's address and connects to every instance; it
// fails if none can be used. Each refused instance is logged with why
// (a certificate that does not chain to the CA or names another plugin, an
// expired one, a failed health check, a different manifest).
func Dial(ctx context.Context, cfg Config, logger *slog.Logger) (*Pool, error) {
	if cfg.ResolveInterval <= 0 {
		cfg.ResolveInterval = DefaultResolveInterval
	}
	if cfg.DescribeTimeout <= 0 {
		cfg.DescribeTimeout = 5 * time.Second
	}
	if cfg.Lookup == nil {
		cfg.Lookup = net.DefaultResolver.LookupHost
	}
	if cfg.Instances == nil {
		cfg.Instances = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
	}
	tc, err := ClientTLS(cfg.Name, cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("dialling remote plugin %s: %w", cfg.Name, err)
	}
	p := &Pool{cfg: cfg, tls: tc, logger: logger, members: map[string]*instance{}, changed: make(chan struct{}), refused: map[string]string{},
		stop: make(chan struct{}), done: make(chan struct{})}
	addrs, err := p.resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("dialling remote plugin %s: %w", cfg.Name, err)
	}
	var errs []error
	for _, a := range addrs {
		if err := p.join(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	if len(p.members) == 0 {
		p.closeAll()
		return nil, fmt.Errorf("dialling remote plugin %s at %s: no usable instance: %w", cfg.Name, cfg.Address, errors.Join(errs...))
	}
	cfg.Instances.Set(float64(len(p.members)))
	go func() { defer close(p.done); p.loop() }()
	return p, nil
}

// resolve lists the instances' addresses.
func (p *Pool) resolve(ctx context.Context) ([]string, error) {
	var out []string
	var errs []error
	for _, entry := range strings.Split(p.cfg.Address, ",") {
		entry = strings.TrimPrefix(strings.TrimSpace(entry), "dns:///")
		host, port, err := net.SplitHostPort(entry)
		if err != nil {
			errs = append(errs, fmt.Errorf("address %q: %w", entry, err))
			continue
		}
		if net.ParseIP(host) != nil {
			out = append(out, net.JoinHostPort(host, port))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, p.cfg.DescribeTimeout)
		ips, err := p.cfg.Lookup(lctx, host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("resolving %s: %w", host, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("no address for %q: %w", p.cfg.Address, errors.Join(errs...))
	}
	return out, nil
}

// join connects to addr, checks it and makes it a member.
func (p *Pool) join(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(p.tls.Clone())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return fmt.Errorf("instance %s: %w", addr, err)
	}
	inst := &instance{addr: addr, conn: conn, svc: pluginv1.NewPluginServiceClient(conn), health: healthpb.NewHealthClient(conn)}
	m, err := p.check(ctx, inst)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		_ = conn.Close()
		p.refuse(addr, err)
		return fmt.Errorf("instance %s: %w", addr, err)
	}
	if p.manifest == nil {
		p.manifest = m
	} else if !proto.Equal(p.manifest, m) {
		_ = conn.Close()
		err := fmt.Errorf("it describes version %s, unlike the pool's %s; roll the pool with a swap", m.GetVersion(), p.manifest.GetVersion())
		p.refuse(addr, err)
		return fmt.Errorf("instance %s: %w", addr, err)
	}
	delete(p.refused, addr)
	p.members[addr] = inst
	return nil
}

// refuse logs why addr was refused, unless that was already said. p.mu is
// held.
func (p *Pool) refuse(addr string, err error) {
	if p.refused[addr] == err.Error() {
		return
	}
	p.refused[addr] = err.Error()
	p.logger.Error("remote plugin instance refused", "instance", addr, "err", err)
}

// check health-checks and describes one instance.
func (p *Pool) check(ctx context.Context, inst *instance) (*pluginv1.Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DescribeTimeout)
	defer cancel()
	if err := ping(ctx, inst); err != nil {
		return nil, err
	}
	resp, err := inst.svc.Describe(ctx, &pluginv1.DescribeRequest{CoreContractVersion: contract.ContractVersion,
		CoreVersion: p.cfg.CoreVersion, AcceptsResultBatches: true})
	if err != nil {
		return nil, fmt.Errorf("describing: %w", err)
	}
	m := resp.GetManifest()
	if err := pluginhost.ValidateManifest(m); err != nil {
		return nil, fmt.Errorf("describing: %w", err)
	}
	if m.GetName() != p.cfg.Name {
		return nil, fmt.Errorf("describing: %w: the instance describes itself as %q", pluginhost.ErrManifest, m.GetName())
	}
	return m, nil
}

func ping(ctx context.Context, inst *instance) error {
	resp, err := inst.health.Check(ctx, &healthpb.HealthCheckRequest{Service: contract.HealthServiceName})
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check: status %s", resp.GetStatus())
	}
	return nil
}

// loop re-resolves and health-checks on a schedule until Close.
func (p *Pool) loop() {
	t := time.NewTicker(p.cfg.ResolveInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.refresh()
	}
}

// refresh is one round: instances that left the address or fail their
// health check leave the pool, new addresses that pass join it.
func (p *Pool) refresh() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer cancel()
	p.mu.Lock()
	retired := p.retired
	p.retired = nil
	cur := make([]*instance, 0, len(p.members))
	for _, in := range p.members {
		cur = append(cur, in)
	}
	p.mu.Unlock()
	for _, in := range retired {
		_ = in.conn.Close()
	}
	addrs, err := p.resolve(ctx)
	if err != nil {
		p.logger.Warn("re-resolving remote plugin; keeping its instances", "address", p.cfg.Address, "err", err)
		addrs = nil
		for _, in := range cur {
			addrs = append(addrs, in.addr)
		}
	}
	changed := false
	for _, in := range cur {
		hctx, hcancel := context.WithTimeout(ctx, p.cfg.DescribeTimeout)
		err := ping(hctx, in)
		hcancel()
		why := ""
		switch {
		case !slices.Contains(addrs, in.addr):
			why = "its address no longer resolves"
		case err != nil:
			why = err.Error()
		}
		if why == "" {
			continue
		}
		p.logger.Warn("remote plugin instance left the pool", "instance", in.addr, "reason", why)
		p.mu.Lock()
		delete(p.members, in.addr)
		p.retired = append(p.retired, in)
		p.mu.Unlock()
		changed = true
	}
	for _, a := range addrs {
		p.mu.Lock()
		_, ok := p.members[a]
		p.mu.Unlock()
		if ok || ctx.Err() != nil {
			continue
		}
		if err := p.join(ctx, a); err == nil {
			p.logger.Info("remote plugin instance joined the pool", "instance", a)
			changed = true
		}
	}
	if changed {
		p.mu.Lock()
		close(p.changed)
		p.changed = make(chan struct{})
		p.cfg.Instances.Set(float64(len(p.members)))
		p.mu.Unlock()
	}
}

// Manifest is the manifest every instance described.
func (p *Pool) Manifest() *pluginv1.Manifest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.manifest
}

// Service is one instance's client; dispatch reaches a Pool through Members.
func (p *Pool) Service() pluginv1.PluginServiceClient {
	for _, m := range p.Members() {
		return m.Service
	}
	return nil
}

// Members implements dispatch.Pool.
func (p *Pool) Members() []dispatch.Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]dispatch.Member, 0, len(p.members))
	for _, in := range p.members {
		out = append(out, dispatch.Member{ID: in.addr, Service: in.svc})
	}
	slices.SortFunc(out, func(a, b dispatch.Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Changed implements dispatch.Pool.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Ping succeeds if any instance passes its health check.
func (p *Pool) Ping(ctx context.Context) error {
	p.mu.Lock()
	cur := make([]*instance, 0, len(p.members))
	for _, in := range p.members {
		cur = append(cur, in)
	}
	p.mu.Unlock()
	var errs []error
	for _, in := range cur {
		err := ping(ctx, in)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", in.addr, err))
	}
	return fmt.Errorf("no remote instance healthy: %w", errors.Join(errs...))
}

// Close stops re-resolving and closes every connection. Idempotent.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		<-p.done // Dial started the loop
		p.closeAll()
		p.cfg.Instances.Set(0)
	})
}

func (p *Pool) closeAll() {
	p.mu.Lock()
	all := p.retired
	for _, in := range p.members {
		all = append(all, in)
	}
	p.members, p.retired = map[string]*instance{}, nil
	p.mu.Unlock()
	for _, in := range all {
		_ = in.conn.Close()
	}
}
