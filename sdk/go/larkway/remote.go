package larkway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
	"github.com/larkway/larkway/sdk/go/contract"
)

// RemoteConfig serves a plugin as its own deployment: a gRPC server on
// Listen with mutual TLS, which the core dials (see docs/operations.md,
// "Remote plugins"). The plugin's certificate must carry the URI SAN
// urn:larkway:plugin:NAME; the core's client certificate must chain to
// ClientCAFile.
type RemoteConfig struct {
	// Listen is host:port (":7443").
	Listen string
	// CertFile and KeyFile are the plugin's certificate and key (PEM).
	CertFile, KeyFile string
	// ClientCAFile verifies the core: its client certificate, and the
	// state store's server certificate.
	ClientCAFile string
	// StateAddress is the core's state store for remote plugins
	// (plugin_state.listen); empty: no state store.
	StateAddress string
	// Listener, if set, is served instead of listening on Listen (tests).
	Listener net.Listener
	// DrainTimeout bounds the wait for the core to finish its deliveries
	// after SIGTERM (default 20 s).
	DrainTimeout time.Duration
}

// Remote-serving flags and the environment variables that stand in for them.
const (
	EnvListen       = "LARKWAY_LISTEN"
	EnvTLSCert      = "LARKWAY_TLS_CERT"
	EnvTLSKey       = "LARKWAY_TLS_KEY"
	EnvClientCA     = "LARKWAY_CLIENT_CA"
	EnvStateAddress = "LARKWAY_STATE_ADDRESS"
)

// ParseRemoteConfig reads --listen, --tls-cert, --tls-key, --client-ca and
// --state-address from args, each defaulting to its environment variable.
// An empty Listen means: not remote (launched by the core).
func ParseRemoteConfig(args []string, getenv func(string) string) (RemoteConfig, error) {
	var c RemoteConfig
	fs := flag.NewFlagSet("larkway-plugin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.Listen, "listen", getenv(EnvListen), "serve remotely on host:port")
	fs.StringVar(&c.CertFile, "tls-cert", getenv(EnvTLSCert), "the plugin's certificate (PEM)")
	fs.StringVar(&c.KeyFile, "tls-key", getenv(EnvTLSKey), "the plugin's key (PEM)")
	fs.StringVar(&c.ClientCAFile, "client-ca", getenv(EnvClientCA), "CA of the core's certificate (PEM)")
	fs.StringVar(&c.StateAddress, "state-address", getenv(EnvStateAddress), "the core's state store host:port")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("larkway: %w", err)
	}
	if c.Listen != "" && (c.CertFile == "" || c.KeyFile == "" || c.ClientCAFile == "") {
		return c, errors.New("larkway: serving remotely needs --tls-cert, --tls-key and --client-ca (or " +
			EnvTLSCert + ", " + EnvTLSKey + ", " + EnvClientCA + "): plugins serve only mutual TLS")
	}
	return c, nil
}

func (c RemoteConfig) tls() (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("larkway: loading %s and %s: %w", c.CertFile, c.KeyFile, err)
	}
	b, err := os.ReadFile(c.ClientCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("larkway: reading the client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, nil, fmt.Errorf("larkway: no PEM certificate in %s", c.ClientCAFile)
	}
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	client = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: pool}
	return server, client, nil
}

// ServeRemote serves the plugin on c.Listen until ctx ends or SIGTERM or
// SIGINT arrives; then it reports NOT_SERVING, waits (bounded) for the
// core to close its streams, and returns.
func (p *Plugin) ServeRemote(ctx context.Context, c RemoteConfig) error {
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 20 * time.Second
	}
	stc, ctc, err := c.tls()
	if err != nil {
		return err
	}
	ln := c.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", c.Listen); err != nil {
			return fmt.Errorf("larkway: listening on %s: %w", c.Listen, err)
		}
	}
	if c.StateAddress != "" {
		p.state.setRemote(c.StateAddress, ctc)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(stc)), grpc.MaxRecvMsgSize(16<<20))
	pluginv1.RegisterPluginServiceServer(srv, &server{p: p})
	hs := health.NewServer()
	hs.SetServingStatus(contract.HealthServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	p.logger.Info("plugin serving remotely", "listen", ln.Addr().String(), "state_address", c.StateAddress)
	select {
	case err := <-served:
		return fmt.Errorf("larkway: serving: %w", err)
	case <-ctx.Done():
	}
	hs.Shutdown() // NOT_SERVING: the core's health check takes the instance out
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	t := time.NewTimer(c.DrainTimeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		srv.Stop() // what is still in flight is redelivered by the core
	}
	p.state.closeRemote()
	return nil
}
