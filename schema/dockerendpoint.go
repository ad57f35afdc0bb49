package schema

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DockerTLS is how WhaleMountain reaches a tcp:// Docker endpoint: over
// TLS, checking the daemon's certificate against CAFile and showing its
// own client certificate (CertFile, KeyFile), as a daemon started with
// `dockerd --tlsverify --tlscacert --tlscert --tlskey` requires. The files
// are PEM; relative paths are relative to the server config's folder.
type DockerTLS struct {
	// CAFile holds the CA certificate(s) the daemon's certificate must
	// be signed by; only these are trusted, not the system's.
	CAFile string `yaml:"caFile"`
	// CertFile is WhaleMountain's client certificate, signed by a CA the
	// daemon trusts (its --tlscacert).
	CertFile string `yaml:"certFile"`
	// KeyFile is CertFile's private key. Keep it mode 0600, owned by the
	// user wm runs as: it is root on the Docker host.
	KeyFile string `yaml:"keyFile"`
}

// DockerEndpoint is a Docker host's endpoint as both the config's rules
// and the Docker backend understand it: ParseDockerEndpoint makes it, and
// docker.New connects with nothing else.
type DockerEndpoint struct {
	// Scheme is "unix" or "tcp".
	Scheme string
	// Address is the socket's absolute path (unix) or host:port (tcp).
	Address string
	// TLS is set for a tcp:// endpoint reached over TLS; nil for unix://
	// and for tcp:// on a loopback address without TLS.
	TLS *DockerTLS
}

// URL returns the endpoint as the Docker client takes it:
// unix:///var/run/docker.sock, tcp://host:2376.
func (e DockerEndpoint) URL() string { return e.Scheme + "://" + e.Address }

// EndpointError is what is wrong with a Docker host's endpoint or its TLS
// files; Field says where in the host's config ("endpoint", "tls",
// "tls.caFile", "tls.certFile", "tls.keyFile").
type EndpointError struct {
	Field   string
	Message string
}

// Error names the field and says what is wrong with it.
func (e *EndpointError) Error() string { return e.Field + ": " + e.Message }

// maxSocketPath is the longest path a unix socket may have (sun_path is
// 108 bytes with its NUL).
const maxSocketPath = 107

// ParseDockerEndpoint checks a Docker host's endpoint and TLS settings and
// returns what connecting takes. It is the one parser of Docker endpoints:
// the server config's rules use it, and so does docker.New, so that the
// config accepts exactly the endpoints the runtime can use. It does no I/O
// (DockerEndpoint.TLSConfig reads the TLS files). Accepted:
//
//   - unix:///absolute/path, without tls;
//   - tcp://host:port with tls (caFile, certFile and keyFile all set);
//   - tcp://host:port without tls only when host is a loopback address
//     (127.0.0.0/8, ::1 or localhost): a Docker API without TLS is root on
//     its host to anyone who reaches it.
//
// Refused, each with the reason: ssh:// (it needs the docker CLI's ssh
// connection helper, which wm does not include and which could not be
// tested here), http:// and https:// (the Docker client dials neither:
// https is tcp:// with tls), anything else. A non-nil error is an
// *EndpointError.
func ParseDockerEndpoint(endpoint string, t *DockerTLS) (DockerEndpoint, error) {
	bad := func(field, format string, args ...any) (DockerEndpoint, error) {
		return DockerEndpoint{}, &EndpointError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	if endpoint == "" {
		return bad("endpoint", "is required: unix:///var/run/docker.sock, or tcp://host:2376 with tls")
	}
	scheme, rest, ok := strings.Cut(endpoint, "://")
	if !ok {
		return bad("endpoint", "%q is not a Docker endpoint such as unix:///var/run/docker.sock or tcp://host:2376", endpoint)
	}
	switch strings.ToLower(scheme) {
	case "unix":
		if t != nil {
			return bad("tls", "is only for tcp:// endpoints: a unix socket is guarded by its file's owner and mode")
		}
		if !strings.HasPrefix(rest, "/") || strings.ContainsAny(rest, "?#") {
			return bad("endpoint", "%q is not a unix socket: write unix:// and the socket's absolute path, as in unix:///var/run/docker.sock", endpoint)
		}
		if p := filepath.Clean(rest); len(p) > maxSocketPath {
			return bad("endpoint", "%q: a unix socket's path is at most %d bytes", endpoint, maxSocketPath)
		}
		return DockerEndpoint{Scheme: "unix", Address: filepath.Clean(rest)}, nil
	case "tcp":
		u, err := url.Parse(endpoint)
		if err != nil || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return bad("endpoint", "%q is not a tcp endpoint: write tcp://host:port, as in tcp://blade1.example.edu:2376", endpoint)
		}
		host, port := u.Hostname(), u.Port()
		if host == "" || port == "" {
			return bad("endpoint", "%q needs a host and a port, as in tcp://blade1.example.edu:2376", endpoint)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("endpoint", "%q: %s is not a port (1-65535)", endpoint, port)
		}
		e := DockerEndpoint{Scheme: "tcp", Address: net.JoinHostPort(host, port)}
		if t == nil {
			if !loopback(host) {
				return bad("endpoint", "%q has no tls: a Docker API without TLS lets anyone who reaches it be root on the host; "+
					"set tls {caFile, certFile, keyFile} for a daemon run with --tlsverify (tcp:// without TLS is allowed on loopback addresses only: 127.0.0.1, ::1, localhost)", endpoint)
			}
			return e, nil
		}
		for _, f := range []struct{ field, v string }{{"tls.caFile", t.CAFile}, {"tls.certFile", t.CertFile}, {"tls.keyFile", t.KeyFile}} {
			if f.v == "" {
				return bad(f.field, "is required with tls: the daemon's CA (caFile), and WhaleMountain's client certificate (certFile) and its key (keyFile)")
			}
		}
		tc := *t
		e.TLS = &tc
		return e, nil
	case "ssh":
		return bad("endpoint", "%q: ssh:// endpoints are not supported: they need the docker CLI's ssh connection helper, "+
			"which wm does not include and which has not been tested with it; use tcp://host:2376 with tls, "+
			"or forward the host's socket (ssh -L /run/wm/blade.sock:/var/run/docker.sock) and use unix://", endpoint)
	case "http", "https":
		return bad("endpoint", "%q: %s:// endpoints are not supported, the Docker client dials neither: "+
			"use tcp://host:2376 with tls (which is HTTPS), or tcp:// on a loopback address", endpoint, scheme)
	default:
		return bad("endpoint", "%q: scheme %q is not supported: use unix:///path/to/docker.sock, or tcp://host:2376 with tls", endpoint, scheme)
	}
}

// loopback reports whether host names this machine only: localhost or a
// loopback IP.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TLSConfig reads the endpoint's TLS files and returns the client's TLS
// configuration: only the CA of caFile is trusted, the client certificate
// is shown, TLS 1.2 at least. It is nil, with no error, for an endpoint
// without TLS. A problem with the files is an *EndpointError naming the
// file's field.
func (e DockerEndpoint) TLSConfig() (*tls.Config, error) {
	t := e.TLS
	if t == nil {
		return nil, nil
	}
	read := func(field, file string) ([]byte, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, &EndpointError{Field: field, Message: fmt.Sprintf("cannot read %s: %v", file, unwrapPath(err))}
		}
		return b, nil
	}
	caPEM, err := read("tls.caFile", t.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, &EndpointError{Field: "tls.caFile", Message: fmt.Sprintf("%s holds no PEM certificate", t.CAFile)}
	}
	certPEM, err := read("tls.certFile", t.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read("tls.keyFile", t.KeyFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &EndpointError{Field: "tls", Message: fmt.Sprintf("certFile %s and keyFile %s are not a certificate and its key: %v", t.CertFile, t.KeyFile, err)}
	}
	if pair.Leaf != nil && time.Now().After(pair.Leaf.NotAfter) {
		return nil, &EndpointError{Field: "tls.certFile", Message: fmt.Sprintf("%s expired on %s", t.CertFile, pair.Leaf.NotAfter.UTC().Format(time.DateOnly))}
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// unwrapPath drops the path an *os.PathError repeats.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// DockerFromEnv is the Docker host the docker CLI would use, read as the
// CLI reads it: DOCKER_HOST (unix:///var/run/docker.sock when unset), and
// for a tcp:// host, TLS with ca.pem, cert.pem and key.pem from
// DOCKER_CERT_PATH (~/.docker when unset) when DOCKER_TLS_VERIFY or
// DOCKER_CERT_PATH is set. Unlike the CLI's, its TLS always verifies the
// daemon's certificate.
func DockerFromEnv() (endpoint string, t *DockerTLS) {
	endpoint = os.Getenv("DOCKER_HOST")
	if endpoint == "" {
		return "unix:///var/run/docker.sock", nil
	}
	dir := os.Getenv("DOCKER_CERT_PATH")
	if !strings.HasPrefix(endpoint, "tcp://") || (dir == "" && os.Getenv("DOCKER_TLS_VERIFY") == "") {
		return endpoint, nil
	}
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".docker")
	}
	return endpoint, &DockerTLS{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
	}
}
