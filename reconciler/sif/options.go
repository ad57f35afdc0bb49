package sif

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Defaults of Options.
const (
	DefaultTar2sqfs    = "tar2sqfs"
	DefaultCompression = "gzip"
	DefaultTimeout     = 10 * time.Minute
	DefaultConcurrency = 2
)

// Default limits of what one build may unpack (Options.MaxUnpackedBytes,
// MaxFiles, MaxCompressedBytes): room for the large images of a course
// (CUDA, conda), none for an image made to fill the build host's disk.
const (
	DefaultMaxUnpackedBytes   = 8 << 30
	DefaultMaxFiles           = 500_000
	DefaultMaxCompressedBytes = 4 << 30
)

// DefaultPlatform is the platform picked from a multi-platform image: what
// the clusters that run the SIFs are.
var DefaultPlatform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Compressions are the squashfs compressions Options accepts. gzip is the
// one every kernel and squashfuse reads; the others need a kernel built
// with them on the machines that run the SIF. tar2sqfs stores a metadata
// block lz4 made larger as it is (an id table of one owner: every file
// root's), which squashfs-tools 4.5.1's unsquashfs refuses; Linux mounts
// such a SIF and squashfs-tools-ng reads it.
var Compressions = []string{"gzip", "lz4", "zstd", "xz"}

// SourceKind picks where Build reads images from.
type SourceKind int

const (
	// SourceAuto reads from the registry the reference names and, when that
	// registry cannot be reached at all (ErrUnreachable), from the local
	// Docker daemon, for images built on this host and never pushed.
	SourceAuto SourceKind = iota
	// SourceRegistry reads from registries only.
	SourceRegistry
	// SourceDaemon reads from the local Docker daemon only.
	SourceDaemon
)

// Auth is a username and password for one registry.
type Auth struct {
	Username, Password string
}

// Options configure a Builder. The zero value works: gzip, 10 minutes a
// build, 2 builds at once, anonymous pulls over HTTPS, registry then local
// daemon.
type Options struct {
	// Tools.

	// Tar2sqfs is the tar2sqfs binary, a path or a name looked up in
	// PATH; default "tar2sqfs" (Debian's squashfs-tools-ng).
	Tar2sqfs string
	// Compression is tar2sqfs's compressor: gzip (default), lz4, zstd or
	// xz.
	Compression string
	// Processors is how many compressor jobs tar2sqfs runs; default all
	// cores.
	Processors int
	// AllRoot makes every file of the SIF owned by root. It is forced on
	// when the process does not run as root, as apptainer's own rootless
	// builds do; as root, files keep the owners the image gives them, as
	// apptainer's own builds do.
	AllRoot bool
	// Squasher replaces tar2sqfs altogether (tests); Tar2sqfs,
	// Compression and Processors are then unused.
	Squasher Squasher

	// Limits.

	// Timeout bounds each build, from when it gets a slot; default 10
	// minutes. Resolving the image (a cache check) is bounded by it too.
	Timeout time.Duration
	// Concurrency is how many builds run at once; default 2. More wait
	// for a slot (and their context).
	Concurrency int
	// TempDir holds each build's squashfs while it is written, and a
	// daemon image's `docker save`; default os.TempDir(). Nothing is
	// unpacked there: a build needs room for its squashfs (less than
	// MaxUnpackedBytes), times Concurrency.
	TempDir string
	// MaxUnpackedBytes bounds the bytes of the files a build unpacks (into
	// tar2sqfs's stream); default DefaultMaxUnpackedBytes (8 GiB). An image
	// over it fails with ErrTooLarge before a byte past it is streamed.
	MaxUnpackedBytes int64
	// MaxFiles bounds the files, folders and links a build unpacks;
	// default DefaultMaxFiles (500,000). The layers together may hold
	// twice as many entries, whiteouts included (an upper layer often
	// rewrites a lower one's files), since each entry costs memory even
	// when nothing is written for it.
	MaxFiles int
	// MaxCompressedBytes bounds the bytes of the image's layers read as
	// stored (compressed, as downloaded); default
	// DefaultMaxCompressedBytes (4 GiB).
	MaxCompressedBytes int64

	// Image sources.

	// Source is where images are read from; default SourceAuto.
	Source SourceKind
	// Keychain finds registry credentials (e.g. authn.DefaultKeychain,
	// which reads ~/.docker/config.json); nil is anonymous.
	Keychain authn.Keychain
	// Auth are credentials by registry host ("host" or "host:port"), sent
	// to that host only. They come before Keychain.
	Auth map[string]Auth
	// Insecure lists registry hosts ("host:port") reached over plain HTTP.
	Insecure []string
	// Platform is picked from multi-platform images; default
	// DefaultPlatform.
	Platform *v1.Platform
	// Docker is the local Docker daemon for SourceAuto and SourceDaemon
	// (a *docker.Engine). Without it, SourceAuto reads registries only and
	// SourceDaemon fails every build with ErrUnreachable.
	Docker ImageStore
	// Images replaces the sources above altogether (tests, or a caller
	// with its own): Build resolves and opens every reference through it.
	Images Source
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Tar2sqfs == "" {
		o.Tar2sqfs = DefaultTar2sqfs
	}
	if o.Compression == "" {
		o.Compression = DefaultCompression
	}
	if o.Processors <= 0 {
		o.Processors = runtime.NumCPU()
	}
	if os.Geteuid() != 0 {
		o.AllRoot = true
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxUnpackedBytes <= 0 {
		o.MaxUnpackedBytes = DefaultMaxUnpackedBytes
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxCompressedBytes <= 0 {
		o.MaxCompressedBytes = DefaultMaxCompressedBytes
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.Platform == nil {
		p := DefaultPlatform
		o.Platform = &p
	}
	return o
}

// validate reports an option no build can run with.
func (o Options) validate() error {
	if !slices.Contains(Compressions, o.Compression) {
		return fmt.Errorf("compression %q: want one of %v", o.Compression, Compressions)
	}
	return nil
}
