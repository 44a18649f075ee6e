// Package admintest makes the throwaway keys, certificates and JWTs that
// admin API tests need. Everything is generated per test run into
// t.TempDir(): no private key is committed.
package admintest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// PKI is a CA with a server certificate (127.0.0.1, ::1, localhost) and a
// client certificate, and a second, unrelated CA's client certificate.
type PKI struct {
	CAFile                  string
	ServerCert, ServerKey   string
	ClientCert, ClientKey   string
	ForeignCert, ForeignKey string // a client certificate from another CA
	pool                    *x509.CertPool
}

// NewPKI writes a fresh PKI into a temporary directory.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCA(t, "larkway test CA")
	other, otherKey := newCA(t, "some other CA")
	p := &PKI{CAFile: writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw), pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.ServerCert, p.ServerKey = leaf(t, dir, "server", ca, caKey, x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = leaf(t, dir, "client", ca, caKey, x509.ExtKeyUsageClientAuth)
	p.ForeignCert, p.ForeignKey = leaf(t, dir, "foreign", other, otherKey, x509.ExtKeyUsageClientAuth)
	return p
}

// ClientTLS is a client configuration trusting the CA, presenting the
// given key pair (none when certFile is empty).
func (p *PKI) ClientTLS(t testing.TB, certFile, keyFile string) *tls.Config {
	t.Helper()
	c := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c
}

var serial int64 = 1
var serialMu sync.Mutex

func nextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial++
	return big.NewInt(serial)
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func leaf(t testing.TB, dir, name string, ca *x509.Certificate, caKey crypto.Signer, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "PRIVATE KEY", kb)
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	return WriteFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

// WriteFile writes b to dir/name (mode 0600) and returns the path.
func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Keys are one signing key per accepted JWT algorithm, with their public
// JWK Set (kids "rsa", "ec", "ed").
type Keys struct {
	RSA  *rsa.PrivateKey
	EC   *ecdsa.PrivateKey
	Ed   ed25519.PrivateKey
	JWKS []byte
}

// NewKeys generates the keys and their JWK Set.
func NewKeys(t testing.TB) *Keys {
	t.Helper()
	k := &Keys{}
	var err error
	if k.RSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.EC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, k.Ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	var set jwkset.JWKSMarshal
	for kid, pub := range map[string]any{"rsa": &k.RSA.PublicKey, "ec": &k.EC.PublicKey, "ed": k.Ed.Public()} {
		// No "alg" in the keys: the verifier's own algorithm list must be
		// what refuses HS256 and "none".
		j, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	if k.JWKS, err = json.Marshal(set); err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign signs claims with the key for alg (RS256, ES256 or EdDSA).
func (k *Keys) Sign(t testing.TB, alg string, claims jwt.MapClaims) string {
	t.Helper()
	var (
		m   jwt.SigningMethod
		key any
		kid string
	)
	switch alg {
	case "RS256":
		m, key, kid = jwt.SigningMethodRS256, k.RSA, "rsa"
	case "ES256":
		m, key, kid = jwt.SigningMethodES256, k.EC, "ec"
	case "EdDSA":
		m, key, kid = jwt.SigningMethodEdDSA, k.Ed, "ed"
	default:
		t.Fatalf("no key for %s", alg)
	}
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// RSAPublicPEM is the RSA public key as PEM: what an alg-confusion attack
// uses as an HMAC secret.
func (k *Keys) RSAPublicPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.RSA.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
