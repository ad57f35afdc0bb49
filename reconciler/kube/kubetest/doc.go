// Package kubetest gives tests a real Kubernetes control plane: etcd,
// kube-apiserver and kube-controller-manager running on loopback, started by
// ci/kube-up from binaries built out of the Go modules in ci/kube.
//
// # Model
//
// One control plane per machine and state dir (${WM_KUBE_DIR:-/tmp/wm-kube}),
// shared by every test, every package's test binary and every run. Env finds
// it through the env file ci/kube-up writes there; when that file is missing
// or the apiserver does not answer /readyz, Env runs ci/kube-up itself (found
// by walking up from the test's working directory), which serializes
// concurrent callers on a lock, builds the binaries once per version, and
// reuses a ready control plane as is. Env never stops it: later packages and
// runs reuse it, and `ci/kube-down` stops it. A test that cannot get a control
// plane fails; it never skips, because a skipped backend test is a test that
// silently stopped running.
//
// Because the control plane is shared, tests isolate themselves by namespace:
// Namespace hands out a fresh unique name and deletes that namespace at
// cleanup. Cluster-scoped objects (ClusterRoles, ClusterRoleBindings) must
// carry names unique to the test, and be deleted by it.
//
// # What the control plane does and does not do
//
// There is no kubelet and no node, so pods are admitted (or refused) exactly
// as on a real cluster and then stay Pending forever: assert on admission, on
// the objects written and on their status, never on a running container.
// Admission runs NamespaceLifecycle, LimitRanger, ServiceAccount, PodSecurity
// and ResourceQuota (plus the apiserver's other defaults); authorization is
// RBAC; privileged pods are allowed by the apiserver, so PodSecurity is what
// refuses them. The controller manager runs the namespace, service account,
// token, root CA publisher, resource quota, garbage collector, clusterrole
// aggregation (so admin/edit/view carry rules), deployment, replicaset,
// statefulset, job and ttl-after-finished controllers.
//
// Two races a real cluster has too, and that tests meet sooner: a new
// namespace gets its "default" service account a moment after creation (the
// ServiceAccount admission waits about a second for it), and a new
// ResourceQuota refuses every pod it constrains ("status unknown for quota")
// until the quota controller has written its status.
//
// # Identities
//
// AdminClient acts as a member of system:masters. StudentClient(t, "alice")
// acts as the token user alice (uid student-alice, group "students"), who
// starts with no RBAC at all; Students lists the fixed set. Can asks the
// apiserver a SubjectAccessReview, giving the user the groups its token
// carries.
package kubetest
