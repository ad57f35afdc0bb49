// Package kubetest gives tests a real Kubernetes cluster: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler on loopback,
// and one node (a kubelet with a containerd of its own), started by
// ci/kube-up from binaries built out of the Go modules in ci/kube.
//
// # Model
//
// One cluster per machine and state dir (${WM_KUBE_DIR:-/tmp/wm-kube}),
// shared by every test, every package's test binary and every run. Env finds
// it through the env file ci/kube-up writes there; when that file is missing
// or names no node, when one of its processes is gone or when the apiserver
// does not answer /readyz, Env runs ci/kube-up itself (found by walking up
// from the test's working directory), which serializes concurrent callers on
// a lock, builds the binaries once per version, and reuses a ready cluster
// as is. Env never stops it: later packages and runs reuse it, and
// `ci/kube-down` stops it. A test that cannot get a cluster fails; it never
// skips, because a skipped backend test is a test that silently stopped
// running.
//
// Because the control plane is shared, tests isolate themselves by namespace:
// Namespace hands out a fresh unique name and deletes that namespace at
// cleanup. Cluster-scoped objects (ClusterRoles, ClusterRoleBindings) must
// carry names unique to the test, and be deleted by it.
//
// # What the cluster does and does not do
//
// Pods are admitted (or refused) exactly as on a real cluster. The one
// node is tainted, so a pod stays Pending, as on a cluster without room
// for it, unless its namespace lets it on: AllowOnNode annotates a
// namespace so that admission (PodTolerationRestriction) gives its new
// pods the toleration; Node returns the node's name once it is Ready, and
// WaitRunning waits for a pod to run. There the pod really runs (runc,
// CNI bridge networking): its logs and exec go through the apiserver to
// the kubelet. Images are pulled from registries on loopback
// over plain HTTP (registrytest makes and serves them); nothing can be
// pulled from outside. The node has the machine's CPUs and memory (two
// cores here): ask for little. There is no GPU, no cluster DNS, no
// kube-proxy (Services do not route) and no NetworkPolicy enforcement.
// Admission runs NamespaceLifecycle, LimitRanger, ServiceAccount,
// PodSecurity, ResourceQuota, NodeRestriction and PodTolerationRestriction
// (plus the apiserver's other defaults); authorization is Node and RBAC;
// privileged pods are allowed by the apiserver, so PodSecurity is what
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
