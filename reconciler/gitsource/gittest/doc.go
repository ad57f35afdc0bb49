// Package gittest gives tests real git repositories and a real git server,
// so that code reading students' repos is tested against git itself and
// not against a fake.
//
// A Repo is a bare repository on disk. Commit replaces its whole tree with
// the files given, on any branch, like a student's push, and returns the
// new commit's sha. Commits are made with the git CLI under a fixed
// identity and date and without the machine's git configuration, so the
// same files, message and parent always give the same sha.
//
// Serve publishes every repository under a folder over git's smart HTTP
// protocol with the real `git http-backend` behind net/http/cgi, on
// 127.0.0.1, the way GitLab serves clones; ServeWithAuth adds HTTP basic
// auth. Handler is the same server as an http.Handler, for tests that wrap
// it (to count requests, say) or stop it themselves.
//
// The package needs git on the PATH (2.39 or later); it is a normal
// package, not a _test one, so that every package's tests can import it.
package gittest
