package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A ServerCheck looks at what a valid server config refers to outside
// itself (secret files, the kubeconfig, the admin group, the addresses to
// listen on) and reports each problem with the field path it concerns, as
// the rules do. `wm serve` runs its checks before it starts and
// `wm validate --server` runs the same ones, so that a config one accepts
// the other does not refuse.
type ServerCheck func(c *ServerConfig, report func(path, format string, args ...any))

// LoadServerChecked is LoadServer followed by check: the problems check
// reports are placed in the file at the field they name, like the rules'.
// With path "" it checks the embedded defaults, relative to the current
// folder.
func LoadServerChecked(path string, check ServerCheck) (*ServerConfig, error) {
	if path == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		return ParseServerChecked("(embedded defaults)", bytes.NewReader(defaultServerConfig), wd, check)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, Errors{{File: path, Message: fmt.Sprintf("cannot open: %v", err)}}
	}
	defer f.Close()
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	return ParseServerChecked(path, f, abs, check)
}

// ParseServerChecked is ParseServer followed by check, which runs only on
// a config the rules accept, its paths resolved. A non-nil error is Errors.
func ParseServerChecked(name string, r io.Reader, dir string, check ServerCheck) (*ServerConfig, error) {
	c := newServerConfig()
	p, err := parsePlaced(name, r, &c, c.applyDefaults, c.validate)
	if err != nil {
		return nil, err
	}
	c.resolvePaths(dir)
	if check == nil {
		return &c, nil
	}
	errs := locate(name, p, func(report reporter) {
		check(&c, func(path, format string, args ...any) { report(path, false, format, args...) })
	})
	if err := capErrors(name, errs).orNil(); err != nil {
		return nil, err
	}
	return &c, nil
}

// CheckDockerHosts is the ServerCheck of the Docker hosts' endpoints: each
// one parses (ParseDockerEndpoint) and its TLS files load
// (DockerEndpoint.TLSConfig), every problem reported at the field it
// concerns (docker.hosts[i].endpoint, docker.hosts[i].tls.caFile, ...).
// docker.New makes the same two steps, so a config this accepts connects.
func CheckDockerHosts(c *ServerConfig, report func(path, format string, args ...any)) {
	for i, h := range c.Docker.Hosts {
		p := fmt.Sprintf("docker.hosts[%d]", i)
		ep, err := ParseDockerEndpoint(h.Endpoint, h.TLS)
		if err == nil {
			_, err = ep.TLSConfig()
		}
		var ee *EndpointError
		switch {
		case errors.As(err, &ee):
			report(p+"."+ee.Field, "%s", ee.Message)
		case err != nil:
			report(p+".endpoint", "%v", err)
		}
	}
}

// validate checks the log's format and level; "" is the default (a config
// built in code).
func (l *Log) validate(report reporter) {
	switch l.Format {
	case "", "text", "json":
	default:
		report("log.format", false, "%s is not text or json", quote(l.Format))
	}
	switch l.Level {
	case "", "debug", "info", "warn", "error":
	default:
		report("log.level", false, "%s is not one of debug, info, warn, error", quote(l.Level))
	}
}
