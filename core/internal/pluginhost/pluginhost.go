// Package pluginhost launches handler plugins with hashicorp/go-plugin and
// hands the core a gRPC client for each. It is the only package importing
// go-plugin's host side; no go-plugin type leaves it.
package pluginhost

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

// ErrChecksum is returned when a plugin file does not match its pinned SHA-256.
var ErrChecksum = errors.New("plugin checksum mismatch")

// ErrManifest classes a manifest the core cannot accept.
var ErrManifest = errors.New("invalid plugin manifest")

// Config is one plugin file to launch.
type Config struct {
	// Path of the executable.
	Path string
	// Args passed to it.
	Args []string
	// SHA256 pins the file's checksum (hex). Empty launches unpinned.
	SHA256 string
	// Files pins more files the plugin runs (an interpreter's script and
	// modules). Pinned files run from verified private copies; an argument
	// naming one is rewritten to its copy.
	Files []File
	// Env is the plugin's environment beyond the allow-listed variables of
	// the core (PATH, HOME, LANG, LC_*, TZ, TMPDIR): KEY=VALUE sets KEY, a
	// bare KEY passes the core's own value through.
	Env []string
	// StartTimeout bounds the handshake (default 10 s).
	StartTimeout time.Duration
	// DescribeTimeout bounds the Describe call (default 5 s).
	DescribeTimeout time.Duration
	// State, if set, is served to the plugin over go-plugin's broker as its
	// state store (StateService).
	State pluginv1.StateServiceServer
	// CoreVersion is the core's own version, told to the plugin in
	// DescribeRequest.core_version.
	CoreVersion string
}

// Instance is one running plugin process.
type Instance struct {
	client   *plugin.Client
	rpc      plugin.ClientProtocol
	health   healthpb.HealthClient
	svc      pluginv1.PluginServiceClient
	manifest *pluginv1.Manifest
	logger   *slog.Logger
	cmd      *exec.Cmd
	staged   staged

	// The state store's server on the broker, once its listener is open;
	// closing tells the goroutine opening it that Close has begun, and
	// stateDone is closed when that goroutine has ended.
	stateMu   sync.Mutex
	stateSrv  *grpc.Server
	closing   bool
	stateDone chan struct{}

	closeOnce sync.Once
}

// Launch verifies the plugin's pinned files, starts it from their verified
// copies with an allow-listed environment, completes go-plugin's handshake
// (with automatic mTLS), and reads and validates its manifest. On any error
// the process is killed and the copies removed before Launch returns.
//
// logger names the plugin (plugin=NAME), as the manager's does: Launch adds
// the plugin's version to the lines it re-logs from the plugin's stderr,
// and go-plugin's own messages name the executable under plugin_path.
func Launch(ctx context.Context, cfg Config, logger *slog.Logger) (*Instance, error) {
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.DescribeTimeout <= 0 {
		cfg.DescribeTimeout = 5 * time.Second
	}
	if cfg.SHA256 == "" {
		logger.Warn("plugin executable not pinned; set sha256 in production", "path", cfg.Path)
	}
	hardenHost(logger)
	// Verification happens here, not through go-plugin's SecureConfig: that
	// hashes cmd.Path and then executes it by path, the window stage closes.
	st, err := stage(cfg)
	if err != nil {
		return nil, fmt.Errorf("launching %s: %w", cfg.Path, err)
	}
	gp := &grpcPlugin{}
	cmd := exec.Command(st.exe, st.args...)
	cmd.Args[0] = cfg.Path // what the plugin sees as its name; see stage
	cmd.Env = pluginEnv(cfg.Env)
	stderr := newLineLogger(logger)
	ccfg := &plugin.ClientConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  contract.ProtocolVersion,
			MagicCookieKey:   contract.MagicCookieKey,
			MagicCookieValue: contract.MagicCookieValue,
		},
		Plugins: plugin.PluginSet{contract.PluginName: gp},
		Cmd:     cmd,
		// go-plugin would otherwise append the core's whole environment
		// (secrets included) to cmd.Env; it still adds its handshake
		// variables (magic cookie, ports, protocol versions, client cert).
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     cfg.StartTimeout,
		Stderr:           stderr,
		SyncStdout:       stderr,
		Logger:           newHCLogger(logger, st.exe),
		GRPCDialOptions:  []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20))},
	}
	client := plugin.NewClient(ccfg)
	inst := &Instance{client: client, logger: logger, cmd: cmd, staged: st}
	rpc, err := client.Client()
	if err != nil {
		inst.Close()
		return nil, fmt.Errorf("launching %s: %w", cfg.Path, err)
	}
	raw, err := rpc.Dispense(contract.PluginName)
	if err != nil {
		inst.Close()
		return nil, fmt.Errorf("dispensing %s: %w", cfg.Path, err)
	}
	inst.rpc = rpc
	inst.svc = raw.(pluginv1.PluginServiceClient)
	gc, ok := rpc.(*plugin.GRPCClient)
	if !ok {
		inst.Close()
		return nil, fmt.Errorf("launching %s: not a gRPC plugin", cfg.Path)
	}
	inst.health = healthpb.NewHealthClient(gc.Conn)
	hctx, hcancel := context.WithTimeout(ctx, cfg.DescribeTimeout)
	defer hcancel()
	if err := inst.Ping(hctx); err != nil {
		inst.Close()
		return nil, fmt.Errorf("health-checking %s: %w", cfg.Path, err)
	}
	var stateID uint32
	if cfg.State != nil && gp.broker != nil {
		stateID = gp.broker.NextId()
		// AutoMTLS wrote the TLS configuration it negotiated (the core's
		// certificate, the plugin's as the only CA) into ccfg; go-plugin's
		// broker serves with the same one.
		inst.serveState(gp.broker, stateID, ccfg.TLSConfig, cfg.State)
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DescribeTimeout)
	defer cancel()
	resp, err := inst.svc.Describe(dctx, &pluginv1.DescribeRequest{CoreContractVersion: contract.ContractVersion, CoreVersion: cfg.CoreVersion,
		StateBrokerId: stateID, AcceptsResultBatches: true})
	if err != nil {
		inst.Close()
		return nil, fmt.Errorf("describing %s: %w", cfg.Path, err)
	}
	if err := ValidateManifest(resp.GetManifest()); err != nil {
		inst.Close()
		return nil, fmt.Errorf("describing %s: %w", cfg.Path, err)
	}
	inst.manifest = resp.GetManifest()
	stderr.setAttrs("version", inst.manifest.GetVersion())
	return inst, nil
}

// serveState serves svc to the plugin on broker id: the core listens on a
// fresh socket and sends its address down go-plugin's broker stream
// (plugin.GRPCBroker/StartStream, which the plugin serves), and the plugin
// dials it. This is go-plugin's GRPCBroker.AcceptAndServe, except that a
// plugin without a broker is logged here, as JSON: AcceptAndServe reports
// it with the standard library's log, a plain-text line on the core's
// stderr at every start.
func (i *Instance) serveState(b *plugin.GRPCBroker, id uint32, tlsCfg *tls.Config, svc pluginv1.StateServiceServer) {
	i.stateDone = make(chan struct{})
	go func() {
		defer close(i.stateDone)
		ln, err := b.Accept(id)
		if err != nil {
			i.stateMu.Lock()
			closing := i.closing
			i.stateMu.Unlock()
			if !closing {
				// "broker closed": the plugin does not serve
				// plugin.GRPCBroker, as a plugin without state need not.
				i.logger.Info("state store not offered to the plugin (does it serve plugin.GRPCBroker?)", "err", err)
			}
			return
		}
		var opts []grpc.ServerOption
		if tlsCfg != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
		}
		srv := grpc.NewServer(opts...)
		pluginv1.RegisterStateServiceServer(srv, svc)
		i.stateMu.Lock()
		if i.closing {
			i.stateMu.Unlock()
			_ = ln.Close()
			return
		}
		i.stateSrv = srv
		i.stateMu.Unlock()
		_ = srv.Serve(ln) // until Close stops it
	}()
}

// Manifest is the validated manifest the plugin described.
func (i *Instance) Manifest() *pluginv1.Manifest { return i.manifest }

// Service is the plugin's gRPC client.
func (i *Instance) Service() pluginv1.PluginServiceClient { return i.svc }

// Ping runs the gRPC health check every plugin serves (service "plugin"),
// bounded by ctx — go-plugin's own Ping has no deadline.
func (i *Instance) Ping(ctx context.Context) error {
	resp, err := i.health.Check(ctx, &healthpb.HealthCheckRequest{Service: contract.HealthServiceName})
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check: status %s", resp.GetStatus())
	}
	return nil
}

// Exited reports whether the process has ended.
func (i *Instance) Exited() bool { return i.client.Exited() }

// PID is the plugin process's id.
func (i *Instance) PID() int { return i.cmd.Process.Pid }

// Close asks the plugin to exit and kills it if it has not after go-plugin's
// grace period, then removes its private copies. Callers drain in-flight
// deliveries first. Idempotent.
func (i *Instance) Close() {
	i.closeOnce.Do(func() {
		i.stateMu.Lock()
		i.closing = true
		i.stateMu.Unlock()
		i.client.Kill() // closes the broker too: a pending Accept returns
		i.stateMu.Lock()
		srv := i.stateSrv
		i.stateMu.Unlock()
		if srv != nil {
			srv.Stop()
		}
		if i.stateDone != nil {
			<-i.stateDone
		}
		i.staged.cleanup()
	})
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidateManifest checks what the core relies on.
func ValidateManifest(m *pluginv1.Manifest) error {
	if m == nil {
		return fmt.Errorf("%w: empty", ErrManifest)
	}
	if !nameRE.MatchString(m.GetName()) {
		return fmt.Errorf("%w: name %q must be lowercase letters, digits and dashes", ErrManifest, m.GetName())
	}
	if m.GetVersion() == "" {
		return fmt.Errorf("%w: version is empty", ErrManifest)
	}
	if m.GetMaxInFlight() > 10000 {
		return fmt.Errorf("%w: max_in_flight %d exceeds 10000", ErrManifest, m.GetMaxInFlight())
	}
	for i, s := range m.GetSubscriptions() {
		for _, p := range s.GetTextPatterns() {
			if _, err := regexp.Compile(p); err != nil {
				return fmt.Errorf("%w: subscription %d: text pattern %q: %v", ErrManifest, i, p, err)
			}
		}
		for _, c := range s.GetCommands() {
			if len(c) < 2 || c[0] != '/' {
				return fmt.Errorf("%w: subscription %d: command %q must start with /", ErrManifest, i, c)
			}
		}
	}
	for _, a := range m.GetAllowedActions() {
		if _, ok := pluginv1.ActionKind_name[int32(a)]; !ok || a == pluginv1.ActionKind_ACTION_KIND_UNSPECIFIED {
			return fmt.Errorf("%w: unknown action kind %d", ErrManifest, a)
		}
	}
	return nil
}

// grpcPlugin dispenses the plugin's client and keeps the broker, over
// which the core serves the plugin's state store.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	broker *plugin.GRPCBroker
}

func (*grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the core does not serve plugins")
}

func (g *grpcPlugin) GRPCClient(_ context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	g.broker = b
	return pluginv1.NewPluginServiceClient(c), nil
}
