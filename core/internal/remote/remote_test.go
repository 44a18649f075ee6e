package remote

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/larkway/larkway/core/internal/state"
	"github.com/larkway/larkway/core/internal/testenv"
	"github.com/larkway/larkway/sdk/go/larkway"
)

// serveEcho serves an SDK plugin named name remotely on loopback with the
// given certificate, trusting clientCA for the core; it returns the address.
func serveEcho(t *testing.T, name, certFile, keyFile, clientCA, stateAddr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := larkway.New(name, "1.0.0", larkway.WithActions(larkway.ActionReply), larkway.WithLogger(slog.New(slog.DiscardHandler)))
	p.OnMessage(func(ctx context.Context, ev *larkway.Event) ([]larkway.Action, error) {
		if ev.Message.Text == "count" {
			n, err := p.State().Set(ctx, "k", []byte("v"), 0)
			if err != nil {
				return nil, err
			}
			_ = n
		}
		return []larkway.Action{larkway.ReplyText("echo: " + ev.Message.Text)}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.ServeRemote(ctx, larkway.RemoteConfig{Listener: ln, CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCA,
			StateAddress: stateAddr, DrainTimeout: time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serving: %v", err)
		}
	})
	return ln.Addr().String()
}

// The core refuses an instance whose certificate does not chain to its CA,
// has expired, or names another plugin, and says which in its log; a good
// one is described and joins.
func TestDialChecksThePluginCertificate(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	good, goodKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	foreign, foreignKey := other.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	expired, expiredKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}, NotAfter: time.Now().Add(-time.Minute)})
	named, namedKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:billing"}})
	tests := []struct {
		name      string
		cert, key string
		want      string // in the error and the log; "" means accepted
	}{
		{"good", good, goodKey, ""},
		{"wrong CA", foreign, foreignKey, "certificate signed by unknown authority"},
		{"expired", expired, expiredKey, "certificate has expired"},
		{"names another plugin", named, namedKey, "the certificate names billing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveEcho(t, "echo", tc.cert, tc.key, pki.CAFile, "")
			var logs testenv.LogBuffer
			p, err := Dial(context.Background(), Config{Name: "echo", Address: addr, DescribeTimeout: 5 * time.Second,
				TLS: TLSFiles{CAFile: pki.CAFile, CertFile: coreCert, KeyFile: coreKey}}, slog.New(slog.NewJSONHandler(&logs, nil)))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				defer p.Close()
				if got := p.Manifest().GetName(); got != "echo" || len(p.Members()) != 1 {
					t.Fatalf("manifest %q, members %v", got, p.Members())
				}
				return
			}
			if err == nil {
				p.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if s := logs.String(); !strings.Contains(s, "remote plugin instance refused") || !strings.Contains(s, tc.want) || !strings.Contains(s, addr) {
				t.Errorf("log does not name the instance and the reason %q:\n%s", tc.want, s)
			}
		})
	}
}

// The plugin's own certificate is what the core's client certificate is
// checked against by the plugin: a core whose certificate does not chain to
// the plugin's client CA is refused too.
func TestPluginRefusesAnUnknownCore(t *testing.T) {
	pki := testenv.NewPKI(t)
	other := testenv.NewPKI(t)
	good, goodKey := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	addr := serveEcho(t, "echo", good, goodKey, pki.CAFile, "")
	coreCert, coreKey := other.Issue(t, testenv.Cert{})
	_, err := Dial(context.Background(), Config{Name: "echo", Address: addr, DescribeTimeout: 5 * time.Second,
		TLS: TLSFiles{CAFile: pki.CAFile, CertFile: coreCert, KeyFile: coreKey}}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("a core with a foreign certificate was served")
	}
}

// Re-resolving: a name that starts resolving joins the pool, one that stops
// leaves it, and Changed says so each time.
func TestPoolFollowsTheAddresses(t *testing.T) {
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	cert, key := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:echo"}})
	_, portA, _ := net.SplitHostPort(serveEcho(t, "echo", cert, key, pki.CAFile, ""))
	_, portB, _ := net.SplitHostPort(serveEcho(t, "echo", cert, key, pki.CAFile, ""))
	var mu sync.Mutex
	resolves := map[string]bool{"a.test": true}
	lookup := func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if !resolves[host] {
			return nil, errors.New("no such host")
		}
		return []string{"127.0.0.1"}, nil
	}
	set := func(host string, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		resolves[host] = ok
	}
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "instances"})
	p, err := Dial(context.Background(), Config{Name: "echo", Address: "dns:///a.test:" + portA + ",dns:///b.test:" + portB,
		ResolveInterval: 20 * time.Millisecond, TLS: TLSFiles{CAFile: pki.CAFile, CertFile: coreCert, KeyFile: coreKey}, Lookup: lookup,
		Instances: gauge}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if m := p.Members(); len(m) != 1 || m[0].ID != "127.0.0.1:"+portA {
		t.Fatalf("members %v", m)
	}
	ch := p.Changed()
	set("b.test", true)
	<-ch
	if m := p.Members(); len(m) != 2 || testutil.ToFloat64(gauge) != 2 {
		t.Fatalf("members after b resolves: %v (gauge %v)", m, testutil.ToFloat64(gauge))
	}
	ch = p.Changed()
	set("a.test", false)
	<-ch
	if m := p.Members(); len(m) != 1 || m[0].ID != "127.0.0.1:"+portB {
		t.Fatalf("members after a stops resolving: %v", m)
	}
	if err := p.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if got := testutil.ToFloat64(gauge); got != 0 {
		t.Errorf("instances gauge %v after Close, want 0", got)
	}
}

// A remote plugin's state calls act on the state of the plugin its
// certificate names; a certificate naming no configured remote plugin is
// refused.
func TestStateServerScopesByCertificate(t *testing.T) {
	pki := testenv.NewPKI(t)
	coreCert, coreKey := pki.Issue(t, testenv.Cert{})
	store := state.NewMemory()
	srv, err := NewStateServer("127.0.0.1:0", TLSFiles{CAFile: pki.CAFile, CertFile: coreCert, KeyFile: coreKey}, store, []string{"echo"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for _, tc := range []struct {
		plugin string
		ok     bool
	}{{"echo", true}, {"billing", false}} {
		cert, key := pki.Issue(t, testenv.Cert{URIs: []string{"urn:larkway:plugin:" + tc.plugin}})
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		p := larkway.New(tc.plugin, "1", larkway.WithLogger(slog.New(slog.DiscardHandler)))
		sctx, scancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() {
			served <- p.ServeRemote(sctx, larkway.RemoteConfig{Listener: ln, CertFile: cert, KeyFile: key, ClientCAFile: pki.CAFile, StateAddress: srv.Addr()})
		}()
		var err error
		testenv.Eventually(t, 10*time.Second, "ServeRemote never set the state store up", func() bool {
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			_, err = p.State().Set(cctx, "greeting", []byte("hi"), 0)
			return !errors.Is(err, larkway.ErrNoState)
		})
		scancel()
		<-served
		if tc.ok != (err == nil) {
			t.Fatalf("%s: set: %v", tc.plugin, err)
		}
	}
	e, ok, err := store.Get(context.Background(), "echo", "greeting")
	if err != nil || !ok || string(e.Data) != "hi" {
		t.Fatalf("echo's state: %+v %v %v", e, ok, err)
	}
}
