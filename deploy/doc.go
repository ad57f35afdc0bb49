// Package deploy holds the files that run `wm serve` for a department,
// and the tests that hold them to what wm really does:
//
//   - kubernetes/: plain manifests (a kustomization lists them) for wm
//     serve in a cluster: its namespace, ServiceAccount, the RBAC the kube
//     backend needs and an admission policy that keeps its writes inside
//     WhaleMountain's namespaces, the server config, Secrets, a volume for
//     the state, a Deployment, a Service and a NetworkPolicy. The tests
//     apply them to the real test control plane and run the kube backend
//     as that ServiceAccount.
//   - systemd/: wm.service, sandboxed, and the sysusers and tmpfiles
//     snippets that make its user and folders. The tests check it with
//     systemd-analyze and against `wm serve`'s real flags.
//
// README.md beside this file says how to use them. The package itself
// only embeds the files, for the tests.
package deploy

import "embed"

// Files are the deployment files, as kubernetes/... and systemd/....
//
//go:embed kubernetes systemd
var Files embed.FS
