package core

import "time"

// SIFBuild is what a SIF build made, or found already made.
type SIFBuild struct {
	// Ref is the reference built, "" for a build from a local image.
	Ref string
	// Digest is the image's manifest digest; "" for an image from the
	// local daemon, which has none without compressing every layer.
	Digest string
	// ImageID is the digest of the image's configuration: builds are
	// cached by it.
	ImageID string
	// SHA256 is the SIF's sha256, hex, as in its .sha256 sidecar.
	SHA256 string
	// Size is the SIF's size in bytes.
	Size int64
	// Arch is the SIF's architecture (Go's names: amd64, arm64, ...).
	Arch string
	// Cached: the SIF already at dst was of this image by this
	// builder version, and was kept as it was.
	Cached bool
	// Duration is the whole call's.
	Duration time.Duration
	// Notes are what the build skipped (device nodes, entries an upper
	// layer shadowed oddly, ...), at most about twenty.
	Notes []string
}
