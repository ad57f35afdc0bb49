// Package registrytest runs a real container registry for tests and builds
// small images to push to it, without any network.
//
// Start runs Debian's docker-registry (the CNCF distribution registry, the
// same server GitLab's container registry is built on) on a free loopback
// port, with its storage in the test's temporary folder, and stops it when
// the test ends. StartWithAuth does the same behind HTTP basic auth from an
// htpasswd file. A test that asks for a registry fails, never skips, when
// the binary is missing: the real registry is part of the normal test run
// (apt-get install docker-registry).
//
// BusyboxImage builds an image in memory with go-containerregistry: a base
// layer holding the host's static busybox (Debian's busybox-static) and a
// few links to it, then one layer per map the test gives, where a value can
// also delete a path (an OCI whiteout), hide a folder's lower content (an
// opaque whiteout) or make a symlink. The same maps always give the same
// layer digests, so tests can compare digests across pushes.
package registrytest
