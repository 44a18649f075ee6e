package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway CA and the certificates of a core and one plugin, in
// files under a run's directory, for the remote plugin measurements.
type PKI struct {
	CAFile, CoreCert, CoreKey, PluginCert, PluginKey string
}

// NewPKI writes a CA, a core certificate and a certificate naming plugin
// (URI SAN urn:larkway:plugin:NAME, as the core requires) into dir.
func NewPKI(dir, plugin string) (PKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PKI{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "larkway bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return PKI{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := PKI{CAFile: filepath.Join(dir, "bench-ca.pem")}
	if err := writePEM(p.CAFile, "CERTIFICATE", caDER); err != nil {
		return PKI{}, err
	}
	issue := func(serial int64, name string, uris []*url.URL) (string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, URIs: uris}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		cert, keyFile := filepath.Join(dir, "bench-"+name+".pem"), filepath.Join(dir, "bench-"+name+"-key.pem")
		return cert, keyFile, errors.Join(writePEM(cert, "CERTIFICATE", der), writePEM(keyFile, "PRIVATE KEY", kder))
	}
	if p.CoreCert, p.CoreKey, err = issue(2, "core", nil); err != nil {
		return PKI{}, err
	}
	u, _ := url.Parse("urn:larkway:plugin:" + plugin)
	if p.PluginCert, p.PluginKey, err = issue(3, "plugin", []*url.URL{u}); err != nil {
		return PKI{}, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// tlsConfigs are a plugin's server side and the core's client side, both
// verifying the other against the CA.
func (p PKI) tlsConfigs() (server, client *tls.Config, err error) {
	b, err := os.ReadFile(p.CAFile)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	pc, err := tls.LoadX509KeyPair(p.PluginCert, p.PluginKey)
	if err != nil {
		return nil, nil, err
	}
	cc, err := tls.LoadX509KeyPair(p.CoreCert, p.CoreKey)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	client = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cc}, RootCAs: pool, ServerName: "localhost"}
	return server, client, nil
}
