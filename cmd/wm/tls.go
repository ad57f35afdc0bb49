package main

import (
	"crypto/tls"
	"net"

	"github.com/whalemountain/wm/schema"
)

// publicTLS is the TLS configuration of the public listener, nil when the
// config has no tls block. The certificate is loaded once, at start-up.
func publicTLS(cfg *schema.ServerConfig) (*tls.Config, error) {
	if cfg.TLS == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}, nil
}

// withTLS makes ln speak HTTPS when cfg has a tls block; on error ln is
// closed.
func withTLS(ln net.Listener, cfg *schema.ServerConfig) (net.Listener, error) {
	tc, err := publicTLS(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if tc == nil {
		return ln, nil
	}
	return tls.NewListener(ln, tc), nil
}
