package app_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/larkway/larkway/core/internal/admin/admintest"
)

// The core serves the admin API over mutual TLS when admin.tls is set:
// only clients with a certificate from the client CA get through, and
// then roles and JWTs apply as configured.
func TestAdminAPIOverMutualTLS(t *testing.T) {
	pki := admintest.NewPKI(t)
	keys := admintest.NewKeys(t)
	jwks := admintest.WriteFile(t, t.TempDir(), "jwks.json", keys.JWKS)
	appID := uniqueApp(t, "admintls")
	c := runCore(t, fmt.Sprintf(`
listen: 127.0.0.1:0
metrics: {listen: 127.0.0.1:0}
apps:
  - {id: %s, secret: secret, verification_token: vt, base_url: "http://127.0.0.1:1"}
admin:
  listen: 127.0.0.1:0
  tokens:
    - {name: dashboard, token: viewer-token-0123456789, role: viewer}
  jwt: {jwks_file: %s, issuer: https://idp.test, audience: larkway-admin}
  tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
`, appID, jwks, pki.ServerCert, pki.ServerKey, pki.CAFile))

	call := func(tc *tls.Config, scheme, method, path, token string) (int, string, error) {
		tr := &http.Transport{TLSClientConfig: tc}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(method, scheme+"://"+c.admin+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		var body struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Reason, nil
	}
	now := time.Now()
	operatorJWT := keys.Sign(t, "ES256", jwt.MapClaims{"iss": "https://idp.test", "aud": "larkway-admin", "sub": "alice",
		"role": "operator", "exp": now.Add(time.Hour).Unix()})
	good := pki.ClientTLS(t, pki.ClientCert, pki.ClientKey)

	if code, _, err := call(good, "https", "GET", "/v1/plugins", "viewer-token-0123456789"); err != nil || code != 200 {
		t.Fatalf("viewer read over mTLS: %d %v", code, err)
	}
	if code, reason, err := call(good, "https", "POST", "/v1/plugins/none/disable", "viewer-token-0123456789"); err != nil || code != 403 || reason != "forbidden" {
		t.Fatalf("viewer change: %d %s %v", code, reason, err)
	}
	// An operator JWT gets through to the cluster, which knows no such plugin.
	if code, reason, err := call(good, "https", "POST", "/v1/plugins/none/disable", operatorJWT); err != nil || code != 404 || reason != "unknown_plugin" {
		t.Fatalf("operator change: %d %s %v", code, reason, err)
	}
	if code, _, err := call(good, "https", "GET", "/v1/plugins", "wrong-token-0123456789"); err != nil || code != 401 {
		t.Fatalf("wrong token: %d %v", code, err)
	}
	for name, tc := range map[string]*tls.Config{
		"a client certificate from another CA": pki.ClientTLS(t, pki.ForeignCert, pki.ForeignKey),
		"no client certificate":                pki.ClientTLS(t, "", ""),
	} {
		if code, _, err := call(tc, "https", "GET", "/v1/plugins", "viewer-token-0123456789"); err == nil {
			t.Errorf("%s: answered %d, want the handshake refused", name, code)
		}
	}
	// Plain HTTP reaches the TLS port only to be told so (400).
	if code, _, err := call(nil, "http", "GET", "/v1/plugins", "viewer-token-0123456789"); err == nil && code != http.StatusBadRequest {
		t.Errorf("plain HTTP answered %d", code)
	}
}
