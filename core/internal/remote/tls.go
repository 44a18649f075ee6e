// Package remote connects the core to plugins that run as their own
// deployments: it dials every resolved address of a plugin's endpoint with
// mutual TLS, checks that each instance's certificate names the plugin,
// reads and validates its manifest, and keeps the set of healthy instances
// (a dispatch.Pool) up to date as addresses come and go. It also serves the
// state store to remote plugins over the same mutual TLS (state.go).
package remote

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// URIPrefix is how a plugin certificate names its plugin: a URI SAN
// urn:larkway:plugin:NAME (docs/operations.md, "Remote plugins").
const URIPrefix = "urn:larkway:plugin:"

// ErrIdentity classes a certificate that does not name the expected plugin.
var ErrIdentity = errors.New("plugin certificate names another plugin")

// TLSFiles are the PEM files of one side's mutual TLS.
type TLSFiles struct {
	// CAFile verifies the other side's certificate.
	CAFile string
	// CertFile and KeyFile are this side's certificate and key.
	CertFile, KeyFile string
	// ServerName, if set, must also be a DNS name of the plugin's
	// certificate (checked beside the plugin's URI).
	ServerName string
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA file: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("reading CA file %s: no PEM certificate in it", file)
	}
	return p, nil
}

func loadPair(f TLSFiles) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return c, fmt.Errorf("loading certificate %s and key %s: %w", f.CertFile, f.KeyFile, err)
	}
	return c, nil
}

// PluginName is the plugin a certificate names (its urn:larkway:plugin URI
// SAN), or "".
func PluginName(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, URIPrefix) {
			return strings.TrimPrefix(s, URIPrefix)
		}
	}
	return ""
}

// ClientTLS is the core's TLS configuration for dialling plugin's
// instances: it presents the core's certificate and accepts only a
// certificate that chains to CAFile, is valid now, and names plugin.
// Instances are dialled by IP address, so Go's host name check is replaced
// by VerifyConnection (the same chain check, then the plugin's name).
func ClientTLS(plugin string, f TLSFiles) (*tls.Config, error) {
	roots, err := loadPool(f.CAFile)
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // verified in VerifyConnection, by name not address
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPlugin(cs, roots, plugin, f.ServerName, time.Now())
		},
	}, nil
}

func verifyPlugin(cs tls.ConnectionState, roots *x509.CertPool, plugin, serverName string, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("plugin presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("plugin certificate refused (want one chaining to the configured ca_file, valid now): %w", err)
	}
	if got := PluginName(leaf); got != plugin {
		if got == "" {
			got = "no plugin"
		}
		return fmt.Errorf("%w: want URI SAN %s%s, the certificate names %s", ErrIdentity, URIPrefix, plugin, got)
	}
	if serverName != "" {
		if err := leaf.VerifyHostname(serverName); err != nil {
			return fmt.Errorf("plugin certificate refused for server_name: %w", err)
		}
	}
	return nil
}

// ServerTLS is the core's TLS configuration for serving remote plugins
// (the state store): it presents the core's certificate and requires a
// client certificate chaining to CAFile. Which plugin a client is comes
// from its certificate (PluginName).
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	roots, err := loadPool(f.CAFile)
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots}, nil
}
