package admin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/admin/admintest"
)

// tlsServer serves the admin API with ServerTLS the way the core does
// (http.Server.ServeTLS; httptest's own certificate would shadow ours) and
// returns its URL.
func tlsServer(t *testing.T, c TLSConfig) string {
	t.Helper()
	s, _, _, _, _ := setup(t)
	cfg, err := ServerTLS(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s, TLSConfig: cfg, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)} // refused handshakes are the point
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

func get(t *testing.T, tc *tls.Config, url string) (int, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/plugins", nil)
	req.Header.Set("Authorization", "Bearer secret-token")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestMutualTLS(t *testing.T) {
	pki := admintest.NewPKI(t)
	url := tlsServer(t, TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile})
	tests := []struct {
		name     string
		cert     string
		key      string
		ok       bool
		wantErr  string
		insecure bool
	}{
		{"client certificate from the CA", pki.ClientCert, pki.ClientKey, true, "", false},
		{"client certificate from another CA", pki.ForeignCert, pki.ForeignKey, false, "certificate", false},
		{"no client certificate", "", "", false, "certificate", false},
		// The client checks the server too: without the CA it refuses.
		{"server not trusted", pki.ClientCert, pki.ClientKey, false, "certificate", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := pki.ClientTLS(t, tt.cert, tt.key)
			if tt.insecure {
				tc.RootCAs = x509.NewCertPool()
			}
			code, err := get(t, tc, url)
			if tt.ok {
				if err != nil || code != 200 {
					t.Fatalf("%d %v", code, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %d %v, want a TLS failure", code, err)
			}
		})
	}
}

func TestTLSWithoutClientCA(t *testing.T) {
	pki := admintest.NewPKI(t)
	url := tlsServer(t, TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey})
	if code, err := get(t, pki.ClientTLS(t, "", ""), url); err != nil || code != 200 {
		t.Fatalf("%d %v", code, err)
	}
	// Plain HTTP to the TLS port gets nowhere.
	resp, err := http.Get(strings.Replace(url, "https://", "http://", 1) + "/v1/plugins")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP answered %d", resp.StatusCode)
		}
	}
}

func TestServerTLSRefusesBadFiles(t *testing.T) {
	pki := admintest.NewPKI(t)
	dir := t.TempDir()
	tests := []struct {
		name string
		c    TLSConfig
	}{
		{"no key", TLSConfig{CertFile: pki.ServerCert}},
		{"missing cert", TLSConfig{CertFile: filepath.Join(dir, "nope"), KeyFile: pki.ServerKey}},
		{"mismatched key", TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ClientKey}},
		{"missing client CA", TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: filepath.Join(dir, "nope")}},
		{"client CA not PEM", TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey,
			ClientCAFile: admintest.WriteFile(t, dir, "ca.pem", []byte("nope"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ServerTLS(tt.c, slog.New(slog.DiscardHandler)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// A rotated certificate is served without a restart; a rotation that does
// not load keeps the previous one.
func TestServerTLSReloadsRotatedCertificate(t *testing.T) {
	a, b := admintest.NewPKI(t), admintest.NewPKI(t)
	dir := t.TempDir()
	copyTo := func(src, dst string, at time.Time) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			t.Fatal(err)
		}
		// Explicit times: a rotation within the file system's timestamp
		// granularity would otherwise look unchanged.
		if err := os.Chtimes(dst, at, at); err != nil {
			t.Fatal(err)
		}
	}
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Hour)
	copyTo(a.ServerCert, cert, t0)
	copyTo(a.ServerKey, key, t0)
	cfg, err := ServerTLS(TLSConfig{CertFile: cert, KeyFile: key}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		t.Helper()
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Issuer.String() + "/" + leaf.SerialNumber.String()
	}
	first := served()
	// Half a rotation (new certificate, old key) does not load.
	copyTo(b.ServerCert, cert, t0.Add(time.Minute))
	if got := served(); got != first {
		t.Fatalf("served a certificate that does not match its key: %s", got)
	}
	copyTo(b.ServerKey, key, t0.Add(time.Minute))
	if got := served(); got == first {
		t.Fatal("the rotated certificate is not served")
	}
}
