package schema

// TLS is the certificate the public listener serves HTTPS with.
type TLS struct {
	// CertFile is the certificate chain, PEM, leaf first.
	CertFile string `yaml:"certFile"`
	// KeyFile is the certificate's private key, PEM; readable by wm only.
	KeyFile string `yaml:"keyFile"`
}

// validate checks that a tls block names both files; whether they load is
// a ServerCheck, made by wm serve and wm validate --server.
func (t *TLS) validate(report reporter) {
	if t == nil {
		return
	}
	if t.CertFile == "" {
		report("tls.certFile", false, "is required when tls is set: the certificate chain, PEM")
	}
	if t.KeyFile == "" {
		report("tls.keyFile", false, "is required when tls is set: the certificate's private key, PEM")
	}
}
