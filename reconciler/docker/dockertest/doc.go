// Package dockertest connects tests to the local Docker daemon and keeps
// them apart: each test gets its own owner name, and everything labelled
// with that owner is removed when the test ends. Images are built locally,
// without any network, so tests run on machines that cannot pull.
//
// A test that asks for the daemon fails, never skips, when there is none:
// the real engine is part of the normal test run.
package dockertest
