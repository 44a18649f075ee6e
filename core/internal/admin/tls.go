package admin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// TLSConfig is the admin API's server certificate and, for mutual TLS, the
// CAs client certificates must chain to.
type TLSConfig struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string
}

// ServerTLS loads the certificate (and client CAs) now, so a bad file stops
// startup. The certificate is re-read when its files change (a rotated
// Kubernetes Secret or cert-manager renewal needs no restart); a rotation
// that does not load keeps the previous certificate and is logged.
func ServerTLS(c TLSConfig, logger *slog.Logger) (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("admin API TLS: a certificate and a key file are required")
	}
	r := &certReloader{certFile: c.CertFile, keyFile: c.KeyFile, logger: logger}
	if err := r.load(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("admin API TLS: reading the client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin API TLS: client CA file %s holds no PEM certificate", c.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// certReloader serves the key pair and reloads it when either file's
// modification time or size changes.
type certReloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu             sync.Mutex
	cert           *tls.Certificate
	certAt, keyAt  fileStamp
	failedAt       [2]fileStamp // the stamps of the last rotation that did not load
	failedReported bool
}

func (r *certReloader) load() error {
	cs, err := stamp(r.certFile)
	if err != nil {
		return fmt.Errorf("admin API TLS: reading the certificate: %w", err)
	}
	ks, err := stamp(r.keyFile)
	if err != nil {
		return fmt.Errorf("admin API TLS: reading the key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("admin API TLS: loading the key pair: %w", err)
	}
	r.cert, r.certAt, r.keyAt = &cert, cs, ks
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, cerr := stamp(r.certFile)
	ks, kerr := stamp(r.keyFile)
	if cerr != nil || kerr != nil || (cs == r.certAt && ks == r.keyAt) {
		return r.cert, nil
	}
	if r.failedReported && r.failedAt == [2]fileStamp{cs, ks} {
		return r.cert, nil
	}
	if err := r.load(); err != nil {
		// The certificate and key of a rotation may land one after the
		// other: keep serving the old pair until both match.
		r.failedAt, r.failedReported = [2]fileStamp{cs, ks}, true
		r.logger.Warn("admin API certificate changed but does not load; serving the previous one", "component", "admin", "err", err)
		return r.cert, nil
	}
	r.failedReported = false
	r.logger.Info("admin API certificate reloaded", "component", "admin", "cert_file", r.certFile)
	return r.cert, nil
}
