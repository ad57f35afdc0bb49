// Package dockertest connects tests to the local Docker daemon and keeps
// them apart: each test gets its own owner name, and everything labelled
// with that owner is removed when the test ends. Images are built locally,
// without any network, so tests run on machines that cannot pull.
//
// A test that asks for the daemon fails, never skips, when there is none:
// the real engine is part of the normal test run.
//
// Tests of several Docker hosts get a second real daemon on the same
// machine with Second, which starts it with ci/docker2-up when it does not
// answer; Daemon is a handle on either one (Local, Second) with the helpers
// above. Only -short skips the tests that ask for the second daemon.
package dockertest
