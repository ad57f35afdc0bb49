package dockertest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"

	"github.com/whalemountain/wm/reconciler/core"
)

// Media types of the one image a Registry serves.
const (
	manifestType = "application/vnd.docker.distribution.manifest.v2+json"
	configType   = "application/vnd.docker.container.image.v1+json"
	layerType    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Registry is a read-only registry (the pull half of the distribution API)
// on 127.0.0.1, which Docker trusts over plain HTTP. It serves the busybox
// test image under the repositories it was made with, any tag, and answers
// "manifest unknown" for the rest.
type Registry struct {
	// Host is "127.0.0.1:<port>".
	Host string

	repos map[string]bool
	auth  *core.RegistryAuth
	blobs map[string][]byte // by digest
	// manifest and its digest.
	manifest       []byte
	manifestDigest string
}

// NewRegistry starts a Registry serving repos, requiring auth (HTTP basic)
// when it is not nil. When t ends it stops, and the images pulled from it
// are removed from the local daemon.
func NewRegistry(t testing.TB, auth *core.RegistryAuth, repos ...string) *Registry {
	t.Helper()
	rootfs, err := BusyboxRootfs()
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(rootfs)
	if err := zw.Close(); err != nil {
		t.Fatalf("dockertest: compress layer: %v", err)
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Cmd": busyboxCmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{digest(rootfs)}},
	})
	layer := gz.Bytes()
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     manifestType,
		"config":        map[string]any{"mediaType": configType, "size": len(config), "digest": digest(config)},
		"layers":        []any{map[string]any{"mediaType": layerType, "size": len(layer), "digest": digest(layer)}},
	})
	r := &Registry{
		repos:          map[string]bool{},
		auth:           auth,
		blobs:          map[string][]byte{digest(config): config, digest(layer): layer},
		manifest:       manifest,
		manifestDigest: digest(manifest),
	}
	for _, repo := range repos {
		r.repos[repo] = true
	}
	srv := httptest.NewServer(r)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	t.Cleanup(func() {
		srv.Close()
		r.removePulled(t)
	})
	return r
}

// Ref returns the reference of repo:tag on r.
func (r *Registry) Ref(repo, tag string) string { return r.Host + "/" + repo + ":" + tag }

// ServeHTTP answers GET and HEAD of /v2/, manifests and blobs.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.auth != nil {
		user, pass, ok := req.BasicAuth()
		if !ok || user != r.auth.Username || pass != r.auth.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="dockertest"`)
			registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
	}
	path := req.URL.Path
	switch {
	case req.Method != http.MethodGet && req.Method != http.MethodHead:
		registryError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "read-only registry")
	case path == "/v2/" || path == "/v2":
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.WriteHeader(http.StatusOK)
	case strings.Contains(path, "/manifests/"):
		repo, _, _ := strings.Cut(strings.TrimPrefix(path, "/v2/"), "/manifests/")
		if !r.repos[repo] {
			registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		serve(w, req, manifestType, r.manifestDigest, r.manifest)
	case strings.Contains(path, "/blobs/"):
		_, d, _ := strings.Cut(path, "/blobs/")
		blob, ok := r.blobs[d]
		if !ok {
			registryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
			return
		}
		serve(w, req, "application/octet-stream", d, blob)
	default:
		registryError(w, http.StatusNotFound, "NOT_FOUND", "not found")
	}
}

// removePulled removes from the local daemon the images pulled from r.
func (r *Registry) removePulled(t testing.TB) {
	cli := usedClient()
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	list, err := cli.ImageList(ctx, image.ListOptions{})
	if err != nil {
		t.Errorf("dockertest: list images: %v", err)
		return
	}
	for _, img := range list {
		for _, tag := range img.RepoTags {
			if strings.HasPrefix(tag, r.Host+"/") {
				if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true}); err != nil {
					t.Errorf("dockertest: remove image %s: %v", tag, err)
				}
			}
		}
	}
}

func serve(w http.ResponseWriter, req *http.Request, mediaType, dgst string, body []byte) {
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("Docker-Content-Digest", dgst)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		w.Write(body)
	}
}

func registryError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"errors": []any{map[string]string{"code": code, "message": message}},
	})
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
