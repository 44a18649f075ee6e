package main

import (
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/larkway/larkway/core/internal/admin"
	"github.com/larkway/larkway/core/internal/admin/admintest"
)

// tlsAdmin serves a stand-in admin API over mutual TLS and returns its
// address.
func tlsAdmin(t *testing.T, pki *admintest.PKI) string {
	t.Helper()
	cfg, err := admin.ServerTLS(admin.TLSConfig{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+adminToken {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"wrong bearer token","reason":"unauthorized"}`))
			return
		}
		_, _ = w.Write([]byte(`{"plugins":[{"name":"echo","replicas":{"r1":{"state":"serving","version":"1.0.0"}}}],"replicas":[]}`))
	})
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestAdminClientTLS(t *testing.T) {
	pki := admintest.NewPKI(t)
	addr := tlsAdmin(t, pki)
	_, port, _ := net.SplitHostPort(addr)
	url := "https://" + addr
	mtls := []string{"--ca-file", pki.CAFile, "--cert-file", pki.ClientCert, "--key-file", pki.ClientKey}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"mutual TLS", append([]string{"plugin", "list", "--admin", url, "--token", adminToken}, mtls...), nil, 0, "serving"},
		{"flags before the subcommand's argument", append([]string{"dlq", "list"}, append(mtls, "--admin", url, "--token", adminToken, "echo")...), nil, 0, ""},
		{"from the environment", []string{"plugin", "list"}, map[string]string{
			"LARKWAY_ADMIN_URL": url, "LARKWAY_ADMIN_TOKEN": adminToken, "LARKWAY_ADMIN_CA_FILE": pki.CAFile,
			"LARKWAY_ADMIN_CERT_FILE": pki.ClientCert, "LARKWAY_ADMIN_KEY_FILE": pki.ClientKey}, 0, "serving"},
		{"an empty --token beats the environment's", append([]string{"plugin", "list", "--admin", url, "--token", ""}, mtls...),
			map[string]string{"LARKWAY_ADMIN_TOKEN": adminToken}, 2, "admin token is required"},
		{"server name override", append([]string{"plugin", "list", "--admin", "https://127.0.0.1:" + port, "--token", adminToken,
			"--tls-server-name", "localhost"}, mtls...), nil, 0, "serving"},
		{"server name mismatch", append([]string{"plugin", "list", "--admin", url, "--token", adminToken,
			"--tls-server-name", "admin.example.test"}, mtls...), nil, 1, "certificate"},
		{"wrong token", append([]string{"plugin", "list", "--admin", url, "--token", "wrong"}, mtls...), nil, 1, "unauthorized"},
		{"no client certificate", []string{"plugin", "list", "--admin", url, "--token", adminToken, "--ca-file", pki.CAFile}, nil, 1, "calling the admin API"},
		{"client certificate from another CA", []string{"plugin", "list", "--admin", url, "--token", adminToken, "--ca-file", pki.CAFile,
			"--cert-file", pki.ForeignCert, "--key-file", pki.ForeignKey}, nil, 1, "calling the admin API"},
		{"server CA not given", []string{"plugin", "list", "--admin", url, "--token", adminToken,
			"--cert-file", pki.ClientCert, "--key-file", pki.ClientKey}, nil, 1, "certificate signed by unknown authority"},
		{"certificate without key", []string{"plugin", "list", "--admin", url, "--token", adminToken, "--cert-file", pki.ClientCert}, nil, 2, "--cert-file and --key-file"},
		{"CA file missing", []string{"plugin", "list", "--admin", url, "--token", adminToken, "--ca-file", pki.CAFile + ".nope"}, nil, 1, "--ca-file"},
		{"TLS flags on plain http", []string{"plugin", "list", "--admin", "http://127.0.0.1:1", "--token", adminToken, "--ca-file", pki.CAFile}, nil, 2, "https://"},
		// Refused before anything is sent.
		{"token over plain http to another host", []string{"plugin", "list", "--admin", "http://admin.example.test:8092", "--token", adminToken}, nil, 2, "plain http"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("code %d (want %d, %q)\nstdout %s\nstderr %s", code, tt.code, tt.want, out, errOut)
			}
		})
	}
}

// serve --check refuses an admin API on a non-loopback address without
// TLS, and says how an accepted one is exposed.
func TestServeCheckAdmin(t *testing.T) {
	pki := admintest.NewPKI(t)
	tests := []struct {
		name, admin string
		code        int
		want        string
	}{
		{"all interfaces without TLS", "admin: {listen: 0.0.0.0:8092, token: operator-token-0123456789}\n", 1, "admin.tls"},
		{"all interfaces with TLS", "admin:\n  listen: 0.0.0.0:8092\n  plugin_dir: /opt/plugins\n  tls: {cert_file: " + pki.ServerCert + ", key_file: " + pki.ServerKey +
			", client_ca_file: " + pki.CAFile + "}\n  tokens: [{name: ci, token: operator-token-0123456789, role: operator}]\n",
			0, "admin API: HTTPS with client certificates on 0.0.0.0:8092; callers: ci (operator); swaps from /opt/plugins"},
		{"loopback", "admin: {listen: 127.0.0.1:8092, token: operator-token-0123456789}\n", 0,
			"admin API: plain HTTP (loopback) on 127.0.0.1:8092; callers: admin.token (operator)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, "serve", "--check", "--config", writeConfig(t, validConfig+tt.admin))
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("code %d (want %d, %q)\nstdout %s\nstderr %s", code, tt.code, tt.want, out, errOut)
			}
		})
	}
}
