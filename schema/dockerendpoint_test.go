package schema

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDockerEndpoint(t *testing.T) {
	withTLS := &DockerTLS{CAFile: "/etc/wm/ca.pem", CertFile: "/etc/wm/cert.pem", KeyFile: "/etc/wm/key.pem"}
	long := "unix:///" + strings.Repeat("s", maxSocketPath)
	cases := []struct {
		name     string
		endpoint string
		tls      *DockerTLS
		wantURL  string // when accepted
		field    string // when refused
		says     string // in the refusal
	}{
		{"a unix socket is accepted", "unix:///var/run/docker.sock", nil, "unix:///var/run/docker.sock", "", ""},
		{"a unix socket's path is cleaned", "unix:///run//wm/../docker.sock", nil, "unix:///run/docker.sock", "", ""},
		{"tcp with tls is accepted", "tcp://blade1.example.edu:2376", withTLS, "tcp://blade1.example.edu:2376", "", ""},
		{"tcp without tls is accepted on 127.0.0.1", "tcp://127.0.0.1:2375", nil, "tcp://127.0.0.1:2375", "", ""},
		{"tcp without tls is accepted on ::1", "tcp://[::1]:2375", nil, "tcp://[::1]:2375", "", ""},
		{"tcp without tls is accepted on localhost", "tcp://localhost:2375", nil, "tcp://localhost:2375", "", ""},
		{"tcp without tls is refused elsewhere, and the error says where it is allowed", "tcp://10.0.0.5:2375", nil, "", "endpoint", "allowed on loopback addresses only"},
		{"tcp without tls is refused on a name that is not localhost", "tcp://blade1:2375", nil, "", "endpoint", "set tls {caFile, certFile, keyFile}"},
		{"tls needs its key", "tcp://blade1:2376", &DockerTLS{CAFile: "ca", CertFile: "cert"}, "", "tls.keyFile", "is required with tls"},
		{"tls needs its CA", "tcp://blade1:2376", &DockerTLS{CertFile: "cert", KeyFile: "key"}, "", "tls.caFile", "is required with tls"},
		{"tls is refused on a unix socket", "unix:///var/run/docker.sock", withTLS, "", "tls", "only for tcp://"},
		{"ssh is refused as untested", "ssh://wm@blade1", nil, "", "endpoint", "ssh:// endpoints are not supported"},
		{"http is refused", "http://blade1:2375", nil, "", "endpoint", "http:// endpoints are not supported"},
		{"https is refused, pointing at tcp with tls", "https://blade1:2376", withTLS, "", "endpoint", "use tcp://host:2376 with tls"},
		{"another scheme is refused", "npipe:////./pipe/docker_engine", nil, "", "endpoint", `scheme "npipe" is not supported`},
		{"a path without a scheme is refused", "/var/run/docker.sock", nil, "", "endpoint", "is not a Docker endpoint"},
		{"a relative unix socket is refused", "unix://docker.sock", nil, "", "endpoint", "absolute path"},
		{"a unix socket path too long for the kernel is refused", long, nil, "", "endpoint", "at most 107 bytes"},
		{"tcp needs a port", "tcp://blade1", withTLS, "", "endpoint", "needs a host and a port"},
		{"tcp takes no path", "tcp://blade1:2376/v1.41", withTLS, "", "endpoint", "is not a tcp endpoint"},
		{"tcp takes no user", "tcp://wm@blade1:2376", withTLS, "", "endpoint", "is not a tcp endpoint"},
		{"a port is a number in range", "tcp://blade1:99999", withTLS, "", "endpoint", "is not a port"},
		{"an empty endpoint is refused", "", nil, "", "endpoint", "is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ep, err := ParseDockerEndpoint(c.endpoint, c.tls)
			if c.field == "" {
				if err != nil || ep.URL() != c.wantURL || (ep.TLS != nil) != (c.tls != nil) {
					t.Errorf("got %q (tls %v), %v; want %q", ep.URL(), ep.TLS, err, c.wantURL)
				}
				return
			}
			var ee *EndpointError
			if !errors.As(err, &ee) || ee.Field != c.field || !strings.Contains(ee.Message, c.says) {
				t.Errorf("got %v; want an error at %s saying %q", err, c.field, c.says)
			}
		})
	}
}

func TestTheConfigRefusesTheEndpointsTheRuntimeCannotUse(t *testing.T) {
	cases := []struct {
		name, hosts, want string
	}{
		{"ssh is refused at the endpoint", "    - {name: a, endpoint: \"ssh://wm@blade1\"}\n",
			"s.yaml:3:27: docker.hosts[0].endpoint: \"ssh://wm@blade1\": ssh:// endpoints are not supported"},
		{"tcp without tls off loopback is refused at the endpoint", "    - {name: a, endpoint: \"tcp://10.0.0.5:2375\"}\n",
			"s.yaml:3:27: docker.hosts[0].endpoint: \"tcp://10.0.0.5:2375\" has no tls"},
		{"a missing tls file is placed at its field", "    - name: a\n      endpoint: tcp://blade1:2376\n      tls: {caFile: ca.pem, certFile: cert.pem}\n",
			"s.yaml:5:12: docker.hosts[0].tls.keyFile: is required with tls"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseServer("s.yaml", strings.NewReader("docker:\n  hosts:\n"+c.hosts), "/etc/wm")
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("got  %v\nwant %s...", err, c.want)
			}
		})
	}
}

func TestTLSFilesAreMadeAbsoluteLikeTheConfigsOtherFiles(t *testing.T) {
	c, err := ParseServer("s.yaml", strings.NewReader(`docker:
  hosts:
    - name: blade1
      endpoint: tcp://blade1:2376
      tls: {caFile: tls/ca.pem, certFile: /abs/cert.pem, keyFile: tls/key.pem}
`), "/etc/wm")
	if err != nil {
		t.Fatal(err)
	}
	want := DockerTLS{CAFile: "/etc/wm/tls/ca.pem", CertFile: "/abs/cert.pem", KeyFile: "/etc/wm/tls/key.pem"}
	if got := c.Docker.Hosts[0].TLS; got == nil || *got != want {
		t.Errorf("tls %+v, want %+v", got, want)
	}
}

// testPKI writes a CA and a client certificate signed by it in dir, as
// ca.pem, cert.pem and key.pem, and returns their paths.
func testPKI(t *testing.T, dir string, notAfter time.Time) DockerTLS {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "wm"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	files := DockerTLS{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
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

func TestCheckDockerHostsLoadsTheTLSFilesAndPlacesEachProblem(t *testing.T) {
	good := testPKI(t, t.TempDir(), time.Now().Add(time.Hour))
	other := testPKI(t, t.TempDir(), time.Now().Add(time.Hour))
	expired := testPKI(t, t.TempDir(), time.Now().Add(-time.Hour))
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		tls  DockerTLS
		want string // "" when accepted
	}{
		{"a CA, a certificate and its key are accepted", good, ""},
		{"an unreadable CA is placed at caFile", DockerTLS{CAFile: "/nonexistent/ca.pem", CertFile: good.CertFile, KeyFile: good.KeyFile},
			"docker.hosts[0].tls.caFile: cannot read /nonexistent/ca.pem: no such file or directory"},
		{"a CA file without a certificate is placed at caFile", DockerTLS{CAFile: notPEM, CertFile: good.CertFile, KeyFile: good.KeyFile},
			"docker.hosts[0].tls.caFile: " + notPEM + " holds no PEM certificate"},
		{"an unreadable key is placed at keyFile", DockerTLS{CAFile: good.CAFile, CertFile: good.CertFile, KeyFile: "/nonexistent/key.pem"},
			"docker.hosts[0].tls.keyFile: cannot read /nonexistent/key.pem: no such file or directory"},
		{"a key of another certificate is placed at tls", DockerTLS{CAFile: good.CAFile, CertFile: good.CertFile, KeyFile: other.KeyFile},
			"docker.hosts[0].tls: certFile " + good.CertFile + " and keyFile " + other.KeyFile + " are not a certificate and its key"},
		{"an expired certificate is placed at certFile", expired,
			"docker.hosts[0].tls.certFile: " + expired.CertFile + " expired on"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := &ServerConfig{Docker: Docker{Hosts: []DockerHost{{Name: "blade1", Endpoint: "tcp://blade1:2376", TLS: &c.tls}}}}
			var got []string
			CheckDockerHosts(cfg, func(path, format string, args ...any) {
				got = append(got, path+": "+fmt.Sprintf(format, args...))
			})
			switch {
			case c.want == "" && len(got) != 0:
				t.Errorf("refused: %v", got)
			case c.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], c.want)):
				t.Errorf("got  %v\nwant %s...", got, c.want)
			}
		})
	}
}

func TestDockerFromEnvReadsTheEnvironmentAsTheDockerCLIDoes(t *testing.T) {
	cases := []struct {
		name                   string
		host, certPath, verify string
		wantEndpoint           string
		wantTLS                *DockerTLS
	}{
		{"nothing set is the local socket", "", "", "", "unix:///var/run/docker.sock", nil},
		{"DOCKER_HOST is the endpoint", "unix:///run/d.sock", "/certs", "1", "unix:///run/d.sock", nil},
		{"a tcp host with a cert path has TLS from it", "tcp://blade1:2376", "/certs", "", "tcp://blade1:2376",
			&DockerTLS{CAFile: "/certs/ca.pem", CertFile: "/certs/cert.pem", KeyFile: "/certs/key.pem"}},
		{"a tcp host without either has no TLS", "tcp://127.0.0.1:2375", "", "", "tcp://127.0.0.1:2375", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", c.host)
			t.Setenv("DOCKER_CERT_PATH", c.certPath)
			t.Setenv("DOCKER_TLS_VERIFY", c.verify)
			ep, tls := DockerFromEnv()
			if ep != c.wantEndpoint || (tls == nil) != (c.wantTLS == nil) || (tls != nil && *tls != *c.wantTLS) {
				t.Errorf("got %q %+v, want %q %+v", ep, tls, c.wantEndpoint, c.wantTLS)
			}
		})
	}
}
