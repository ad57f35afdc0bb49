package sif

import (
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ArtifactsPrefix is the path under which Handler serves SIFs: mount it
// with mux.Handle(ArtifactsPrefix, NewHandler(...)).
const ArtifactsPrefix = "/artifacts/"

// dnsLabel is an RFC 1123 label, lowercase: what owners and SIF names are.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// handler serves SIFs from a folder.
type handler struct {
	dir       string
	authorize func(r *http.Request, owner string) bool
}

// NewHandler serves GET and HEAD /artifacts/<owner>/<name>.sif from
// <dir>/<owner>/<name>.sif, with http.ServeContent: Range requests,
// If-Range, If-None-Match and If-Modified-Since. The ETag is the quoted
// sha256 from the .sha256 sidecar (absent when the sidecar is), so a
// client can check its download against it.
//
// owner and name must be DNS labels (lowercase letters, digits, inner
// dashes), which rules out traversal, hidden and temporary files; any
// other path, like a missing file, is 404, and nothing is ever listed.
// authorize is asked about every well-formed path, before the file is
// looked at, so that a 403 says nothing of whether it exists.
func NewHandler(dir string, authorize func(r *http.Request, owner string) bool) http.Handler {
	return &handler{dir: dir, authorize: authorize}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The escaped path: owners and names never need escaping, so any
	// escape is some other path, and a 404.
	owner, name, ok := parseArtifactPath(r.URL.EscapedPath())
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	if h.authorize == nil || !h.authorize(r, owner) {
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return
	}
	path := filepath.Join(h.dir, owner, name+".sif")
	// The sum before the file: see writeSidecars for why this order never
	// labels an old file with a new sum.
	sum, sumErr := ReadSum(path)
	f, err := os.Open(path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name + ".sif"}))
	hdr.Set("X-Content-Type-Options", "nosniff")
	// private: the answer depends on who asks; no-cache: a rebuild
	// replaces the file under the same URL, so revalidate (cheaply, by
	// ETag) each time.
	hdr.Set("Cache-Control", "private, no-cache")
	if sumErr == nil {
		hdr.Set("ETag", `"`+sum+`"`)
	}
	http.ServeContent(w, r, name+".sif", fi.ModTime(), f)
}

// parseArtifactPath splits /artifacts/<owner>/<name>.sif, and says false
// for anything else.
func parseArtifactPath(p string) (owner, name string, ok bool) {
	rest, ok := strings.CutPrefix(p, ArtifactsPrefix)
	if !ok {
		return "", "", false
	}
	owner, file, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	name, ok = strings.CutSuffix(file, ".sif")
	if !ok || !dnsLabel.MatchString(owner) || !dnsLabel.MatchString(name) {
		return "", "", false
	}
	return owner, name, true
}

// ArtifactPath returns where Handler serves the SIF of owner's name, and
// where under dir Build must write it: "<owner>/<name>.sif". It says false
// when owner or name is not a DNS label.
func ArtifactPath(owner, name string) (string, bool) {
	if !dnsLabel.MatchString(owner) || !dnsLabel.MatchString(name) {
		return "", false
	}
	return owner + "/" + name + ".sif", true
}
