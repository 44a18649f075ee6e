// Command bare is a plugin written from sdk/README.md's "Any other language"
// steps alone: no SDK and no go-plugin, only gRPC and the standard library.
// The plugin host's tests run it to hold the README to what the core really
// checks. It serves no go-plugin broker, so the core cannot offer it the
// state store.
//
// BARE_CERT chooses the certificate it presents:
//
//	leaf         (default) self-signed, not a CA, ECDSA P-256, SAN localhost,
//	             extended key usages server and client auth
//	ca           the same as a CA with the certSign key usage, as go-plugin's own
//	no-eku       no extended key usage extension at all
//	crl-sign     key usage CRL sign only (not digital signature)
//	no-san       CN localhost but no subject alternative name
//	client-only  extended key usage client auth only
//
// BARE_REPORT, if set, names a file where it writes the DescribeRequest it
// received (protojson) and, on a separate line, "shutdown" when the core
// calls plugin.GRPCController/Shutdown.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/emptypb"

	pluginv1 "github.com/larkway/larkway/proto/gen/go/larkway/plugin/v1"
)

var reportMu sync.Mutex

func report(line string) {
	path := os.Getenv("BARE_REPORT")
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		fail("report: %v", err)
	}
	defer f.Close()
	_, _ = fmt.Fprintln(f, line)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, `{"level":"ERROR","msg":%q}`+"\n", fmt.Sprintf(format, args...))
	os.Exit(1)
}

type server struct {
	pluginv1.UnimplementedPluginServiceServer
}

func (server) Describe(_ context.Context, req *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	b, _ := protojson.Marshal(req)
	report(string(b))
	return &pluginv1.DescribeResponse{Manifest: &pluginv1.Manifest{Name: "bare", Version: "0.1.0",
		Subscriptions:  []*pluginv1.Subscription{{EventTypes: []string{"im.message.receive_v1"}}},
		AllowedActions: []pluginv1.ActionKind{pluginv1.ActionKind_ACTION_KIND_REPLY}}}, nil
}

func (server) Handle(stream pluginv1.PluginService_HandleServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if d := req.GetDelivery(); d != nil {
			if err := stream.Send(&pluginv1.HandleResponse{Kind: &pluginv1.HandleResponse_Result{Result: &pluginv1.Result{
				DeliveryId: d.GetDeliveryId(), Outcome: pluginv1.Outcome_OUTCOME_DONE}}}); err != nil {
				return nil
			}
		}
	}
}

// controller is go-plugin's plugin.GRPCController: Shutdown(Empty) returns
// (Empty). Its messages are empty, so emptypb's are the same on the wire.
var controller = grpc.ServiceDesc{
	ServiceName: "plugin.GRPCController",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Shutdown", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		if err := dec(new(emptypb.Empty)); err != nil {
			return nil, err
		}
		report("shutdown")
		// Step 8: log JSON lines on stderr.
		fmt.Fprintln(os.Stderr, `{"level":"INFO","msg":"shutting down","plugin":"mine"}`)
		stopOnce.Do(func() { close(stop) })
		return new(emptypb.Empty), nil
	}}},
}

var (
	stop     = make(chan struct{})
	stopOnce sync.Once
)

func certificate(kind string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fail("key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	switch kind {
	case "", "leaf":
	case "ca":
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	case "no-eku":
		tmpl.ExtKeyUsage = nil
	case "crl-sign":
		tmpl.KeyUsage = x509.KeyUsageCRLSign
	case "no-san":
		tmpl.DNSNames = nil
	case "client-only":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		fail("unknown BARE_CERT %q", kind)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		fail("certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// listen binds 127.0.0.1 on the first free port in the core's range.
func listen() net.Listener {
	lo, _ := strconv.Atoi(os.Getenv("PLUGIN_MIN_PORT"))
	hi, _ := strconv.Atoi(os.Getenv("PLUGIN_MAX_PORT"))
	for p := lo; p <= hi; p++ {
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			return ln
		}
	}
	fail("no free port in %d..%d", lo, hi)
	return nil
}

func main() {
	// Step 1: refuse to run by hand.
	if os.Getenv("LARKWAY_PLUGIN_MAGIC_COOKIE") != "d2f1c5b0-larkway-plugin-v1" {
		fmt.Fprintln(os.Stderr, "bare is a larkway plugin; the larkway core starts it")
		os.Exit(1)
	}
	// Ctrl-C reaches the whole process group: the core stops its plugins.
	signal.Ignore(syscall.SIGINT)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	// Step 3: mTLS with the core's certificate as the only client CA.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(os.Getenv("PLUGIN_CLIENT_CERT"))) {
		fail("PLUGIN_CLIENT_CERT holds no certificate")
	}
	cert := certificate(os.Getenv("BARE_CERT"))
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pool, MinVersion: tls.VersionTLS12})

	// Step 2: the services.
	s := grpc.NewServer(grpc.Creds(creds))
	pluginv1.RegisterPluginServiceServer(s, server{})
	hs := health.NewServer()
	hs.SetServingStatus("plugin", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	s.RegisterService(&controller, nil)
	ln := listen()
	go func() { _ = s.Serve(ln) }()

	// Step 4: the handshake line.
	fmt.Printf("1|1|tcp|%s|grpc|%s\n", ln.Addr(), base64.RawStdEncoding.EncodeToString(cert.Certificate[0]))
	_ = os.Stdout.Sync()

	select {
	case <-stop:
	case <-term:
	}
	// The core waits 2 s after Shutdown before it kills the process.
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		s.Stop()
	}
}
