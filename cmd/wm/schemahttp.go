package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/whalemountain/wm/schema"
)

// schemaPaths are where wm serve's public listener serves wm.schema.json,
// for editors' modelines (`# yaml-language-server: $schema=https://WM/schema/v1/wm.schema.json`):
// /schema/v1/ stays the schema of wm.yaml version 1 for as long as wm
// reads version 1; /schema/wm.schema.json is the newest version's, the
// URL in the schema's own $id.
var schemaPaths = []string{"/schema/wm.schema.json", "/schema/v1/wm.schema.json"}

// handleSchema registers the schema's paths on mux.
func handleSchema(mux *http.ServeMux) {
	h := schemaHandler(schema.JSONSchema)
	for _, p := range schemaPaths {
		mux.Handle("GET "+p, h)
	}
}

// schemaHandler serves doc as application/schema+json with a strong ETag
// (its sha256), so that editors revalidate with If-None-Match and get 304
// Not Modified, and a day of caching: the schema changes only when wm is
// upgraded. Any origin may read it, as it is public and browser-based
// editors fetch it from another origin.
func schemaHandler(doc []byte) http.Handler {
	sum := sha256.Sum256(doc)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/schema+json")
		h.Set("ETag", etag)
		h.Set("Cache-Control", "public, max-age=86400")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "wm.schema.json", time.Time{}, bytes.NewReader(doc))
	})
}
