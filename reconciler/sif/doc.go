// Package sif builds Singularity/Apptainer images (SIF files) from
// container images, and serves them for download.
//
// # Building
//
// A Builder turns the image a reference names into one SIF at a path the
// caller chooses (see ArtifactPath for the layout Handler serves):
//
//  1. Resolve: ask the Source which image the reference names, by its
//     ImageID (the digest of its configuration, which names its layers and
//     config whatever their compression). A registry costs one manifest
//     request, the local Docker daemon one inspect.
//  2. Cache: if the SIF at the path is a build of that ImageID by the same
//     builder version (Builder.Version: the format version, compression and
//     ownership mode), and its sidecars agree with it, stop there.
//  3. In a build slot (Options.Concurrency) and under Options.Timeout:
//     flatten the image's layers with go-containerregistry's mutate.Extract
//     (OCI whiteouts, opaque ones included) and stream them, as one tar,
//     into squashfs-tools-ng's tar2sqfs (an argument list, its own process
//     group, killed at the deadline), which writes the squashfs as it
//     reads: nothing is unpacked to disk. Every entry is checked before
//     it is streamed and written with a clean name relative to the root:
//     none outside it, none under a symlink or a file of an upper layer;
//     symlinks are kept as they are (absolute targets resolve inside the
//     container), hard links too, once their target is known; device
//     nodes and named pipes are skipped with a note (Singularity provides
//     /dev). Every build is bounded: bytes of layers read as stored
//     (Options.MaxCompressedBytes, 4 GiB), bytes and files streamed
//     (MaxUnpackedBytes, 8 GiB; MaxFiles, 500,000, counted before each is
//     streamed), entries in the layers whatever becomes of them (twice
//     MaxFiles, with their names' total: mutate.Extract keeps every name
//     in memory; a scan of each layer's tar stream counts them before it
//     does), and paths (shorter than 4096 bytes, at most 256 folders deep,
//     names at most 255 bytes). A registry image's manifest is checked
//     first, before any blob is downloaded: layers past
//     MaxCompressedBytes, a configuration over 4 MiB (it is read whole).
//     Past one, the stream stops, tar2sqfs is killed before it reads an
//     end, the build fails with ErrTooLarge and its work folder is
//     removed.
//  4. At the end of the same stream, add what apptainer's docker://
//     builds write: /.singularity.d with runscript (the image's Entrypoint
//     and Cmd, Docker's rules: run arguments replace Cmd),
//     env/10-docker2singularity.sh (the image's Env, every value quoted),
//     labels.json, actions/ and libs/, in place of what the image has at
//     those paths; and the mount points /proc /sys /dev /tmp /home
//     /etc/hosts /etc/resolv.conf where the image has none.
//  5. Wrap the squashfs with the sif library: a JSON descriptor
//     "oci-config.json" holding the image's configuration and the
//     squashfs as the primary system partition, with the image's
//     architecture.
//  6. Write atomically: a hidden temporary file beside the destination,
//     fsynced, renamed over it; then the ".sha256" sidecar (sha256sum's
//     format) and the ".json" one (Meta), the latter last since a cache hit
//     trusts it. A failed build leaves what was there.
//
// The same image and builder version always give the same bytes: file
// times come from the image, the stream is the same (folders the image
// does not list are written in name order), the squashfs's own time is 0,
// and the SIF's ID and time derive from the image. So a SIF's sha256 names
// its content across rebuilds and hosts.
//
// # Ownership
//
// As root, files keep the owners the image gives them (uid/gid of the
// layer entries), as apptainer's own builds do when run as root. Not as
// root (or with Options.AllRoot), every file is owned by root in the SIF,
// as apptainer's own rootless builds do. Modes are the image's either way:
// tar2sqfs reads no file from disk, so none needs to be made readable.
// Inside the container, Singularity runs as the calling user either way.
//
// # Sources
//
// Registry reads registries with go-containerregistry: credentials per
// host (Options.Auth, then Options.Keychain), plain HTTP for
// Options.Insecure hosts, one platform picked from multi-platform images.
// Daemon reads the local Docker Engine (for images built on the host and
// never pushed) through Options.Docker, an ImageStore that *docker.Engine
// implements: `docker save` into a bounded temporary file, read with
// go-containerregistry's tarball package. This package has no Docker
// client of its own. Auto, the default, tries the registry and falls back
// to the daemon only when the registry cannot be reached at all (and there
// is an Options.Docker).
//
// # Errors
//
// Failures wrap a sentinel that says what happens next: ErrImageNotFound
// (the student must push, or CI has not yet), ErrAccessDenied and
// ErrToolMissing (an administrator must act), ErrInvalidRef and
// ErrInvalidImage (the student must fix the reference or the image),
// ErrTooLarge (the student must make the image smaller, or an
// administrator raise a limit),
// ErrUnreachable and ErrSquashFailed (transient), or a context error
// (context.DeadlineExceeded past Options.Timeout). Each sentinel but
// ErrSquashFailed is of a kind in package fault, which callers may branch
// on instead (errors.go says which).
//
// # Serving
//
// NewHandler serves GET /artifacts/<owner>/<name>.sif from
// <dir>/<owner>/<name>.sif with Range and conditional requests, the
// sha256 as ETag, after an authorization callback; every other path is a
// 404. Verify reads a SIF back with the sif library, for tests and for
// `wm sif verify`.
//
// Fake is a stand-in Builder for tests of callers: same caching, atomic
// writes and sidecars, a stand-in partition, no images or tar2sqfs.
package sif
