package gitsource

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"path"
	"strings"
)

// ScrubURL returns raw without the user and password it may carry, so that
// it can go into any message or log. A string that does not parse as a URL
// loses whatever stands between "://" and the last "@" before the path.
func ScrubURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		u.User = nil
		return u.String()
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	host, tail := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		host, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(host, '@'); i >= 0 {
		host = host[i+1:]
	}
	return scheme + "://" + host + tail
}

// cacheName is the folder name of a remote's cache: a hash of the scrubbed
// URL, unique, then the URL's last two path elements, for people reading
// the folder ("3f2a9c0d1e7b5a64-alice-web.git").
func cacheName(scrubbed string) string {
	sum := sha256.Sum256([]byte(scrubbed))
	name := hex.EncodeToString(sum[:8])
	u, err := url.Parse(scrubbed)
	if err != nil {
		return name + ".git"
	}
	dir, base := path.Split(strings.TrimSuffix(strings.TrimRight(u.Path, "/"), ".git"))
	readable := strings.Trim(path.Base(dir)+"-"+base, "-./")
	readable = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, readable)
	if len(readable) > 48 {
		readable = readable[len(readable)-48:]
	}
	if readable != "" {
		name += "-" + readable
	}
	return name + ".git"
}
