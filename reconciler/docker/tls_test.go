package docker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/schema"
)

// TestSecondRealEngineOverTLS runs the whole contract against the second
// real Docker Engine through its TLS listener (tcp://127.0.0.1:PORT, run
// with dockerd --tlsverify by ci/docker2-up), with the client certificate
// its CA signed: what a blade reached over the network is.
func TestSecondRealEngineOverTLS(t *testing.T) {
	t.Parallel()
	d := dockertest.Second(t)
	testEngine(t, func(t *testing.T) (engine, string) {
		e := d.TLSEngine(t)
		d.BusyboxImage(t, image)
		return e, d.Owner(t)
	})
}

// TestATLSEndpointRefusesWhatItsCADidNotSign: a daemon run with
// --tlsverify refuses a client certificate its CA did not sign, and the
// Engine refuses a daemon whose certificate another CA signed. Either way
// every call fails with ErrUnreachable (fault.Unreachable: the host cannot
// be reached, its repos wait) and says why in plain words, and nothing is
// done on the host.
func TestATLSEndpointRefusesWhatItsCADidNotSign(t *testing.T) {
	t.Parallel()
	d := dockertest.Second(t)
	endpoint, right := d.TLS(t)
	other := otherPKI(t)
	cases := []struct {
		name  string
		files schema.DockerTLS
		says  string
	}{
		{"a client certificate of another CA is refused by the daemon", schema.DockerTLS{CAFile: right.CAFile, CertFile: other.CertFile, KeyFile: other.KeyFile}, "tls: "},
		{"a daemon whose certificate another CA signed is not trusted", schema.DockerTLS{CAFile: other.CAFile, CertFile: right.CertFile, KeyFile: right.KeyFile}, "certificate signed by unknown authority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := docker.New(d.Name(), endpoint, docker.WithTLS(&c.files))
			if err != nil {
				t.Fatalf("New: %v (the files are well formed: New must accept them)", err)
			}
			defer e.Close()
			_, err = e.ListManaged(ctx(t))
			if !errors.Is(err, docker.ErrUnreachable) || !errors.Is(err, fault.Unreachable) {
				t.Fatalf("ListManaged: %v; want ErrUnreachable", err)
			}
			if !strings.Contains(err.Error(), c.says) {
				t.Errorf("ListManaged: %q does not say %q", err, c.says)
			}
			t.Logf("the error: %v", err)
		})
	}
}

func TestNewRefusesWhatTheConfigRefuses(t *testing.T) {
	t.Parallel()
	other := otherPKI(t)
	cases := []struct {
		name     string
		endpoint string
		tls      *schema.DockerTLS
		field    string
	}{
		{"tcp without TLS off loopback", "tcp://10.0.0.5:2375", nil, "endpoint"},
		{"ssh", "ssh://wm@blade1", nil, "endpoint"},
		{"https", "https://blade1:2376", nil, "endpoint"},
		{"TLS on a unix socket", "unix:///var/run/docker.sock", &other, "tls"},
		{"a TLS key that cannot be read", "tcp://blade1:2376", &schema.DockerTLS{CAFile: other.CAFile, CertFile: other.CertFile, KeyFile: "/nonexistent/key.pem"}, "tls.keyFile"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := docker.New("blade1", c.endpoint, docker.WithTLS(c.tls))
			var ee *schema.EndpointError
			if !errors.As(err, &ee) || ee.Field != c.field {
				t.Errorf("New(%q) = %v; want a schema.EndpointError at %s", c.endpoint, err, c.field)
			}
		})
	}
}

// otherPKI writes a CA of the test's own and a client certificate it
// signed, which no daemon of this machine trusts, and returns their files.
func otherPKI(t *testing.T) schema.DockerTLS {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "wm"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	files := schema.DockerTLS{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	for file, block := range map[string]*pem.Block{
		files.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		files.CertFile: {Type: "CERTIFICATE", Bytes: der},
		files.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}
