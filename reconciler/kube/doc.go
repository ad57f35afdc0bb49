// Package kube is WhaleMountain's Kubernetes backend: GPU pods in a
// namespace per student.
//
// For every owner it keeps a namespace "<prefix><owner>" labelled as
// WhaleMountain's with Pod Security "restricted" enforced; a Role letting
// the student get, list and watch pods, get pods/log, and get and create
// pods/exec (kubectl 1.30+ execs over a WebSocket GET, hence get as well
// as create), bound to the student's user name; a ResourceQuota from the
// policy (GPUs as requests of the configured extended resource, CPU,
// memory, pod count); a LimitRange giving containers the policy's default
// CPU and memory; and a default-deny NetworkPolicy whose one exception is
// DNS to the cluster DNS pods (kubernetes.dns), unless the admins deny it.
//
// Account names are chosen by students, so a namespace name is never
// trusted: WhaleMountain writes only into namespaces it made for that
// owner. It creates the namespace (a create, never an apply over something
// that exists) with the managed-by and owner labels, and checks both
// before every write into it and before deleting it. A namespace that
// exists without them, or with another owner's, and a name that is
// default, kube-* or reserved by the admins (Settings.NamespaceProblem)
// are refused with an error wrapping ErrNamespaceNotOurs: an account named
// after the namespace WhaleMountain runs in, or kube-system with an empty
// prefix, takes nothing over.
//
// A wm.yaml's pods become bare Pods, not Jobs: admission (the quota, Pod
// Security) then answers at creation, so a refusal reaches the student's
// status in plain words in the same pass, and restart: Never or OnFailure
// is the pod's own restartPolicy. A finished pod stays, with its logs,
// until its spec changes or wm.yaml drops it. Pods are immutable: a changed
// spec deletes and recreates the pod.
//
// Which pods to create, recreate or delete is not the backend's decision
// but the reconciler's plan, made from the pods wm.yaml declares and those
// OwnerPods reports, paired by name and by the hash PodHash gives (the one
// OwnerPods reads back from a live pod's annotation). The backend carries
// out one step at a time with the verbs of core.Cluster: CheckPod asks
// admission with a server-side dry run, before anything is removed,
// whether a pod would be admitted (for a replacement, with the quota the
// old pod holds given back); ApplyPod creates a pod or replaces the live
// one of its name; DeletePod deletes a pod of the repo it is told, and no
// other repo's; PodStatuses reads a repo's pods back for its status. Each
// write checks the namespace's ownership first.
//
// Everything is applied with server-side apply under the field manager
// "whalemountain". Each object carries the hash of what was applied in an
// annotation, and an object whose live hash equals the desired one is not
// sent again: a resync where nothing changed sends no mutating request.
// Only objects with WhaleMountain's labels are ever pruned, and a
// student's namespace is deleted only when the admins allow it.
//
// Every object also carries the instance that made it (LabelInstance,
// Settings.Instance): a backend reads, writes and deletes only its own
// instance's, and refuses another instance's namespace like one it did not
// make (ErrNamespaceNotOurs), so two WhaleMountains on one cluster leave
// each other alone (give them different namespace prefixes). Objects
// labelled before instances existed are the default instance's ("wm"); the
// label is not part of the applied hash, so an upgrade recreates nothing.
//
// Errors from the cluster are marked with their kind in package fault:
// fault.Unreachable when the API server cannot be reached or fails on its
// side; ErrRefused is fault.Refused, ErrQuotaNotReady fault.NotReady and
// ErrNamespaceNotOurs fault.Conflict.
//
// OwnerPods lists an owner's managed pods with their repo and limits, so
// that the reconciler counts them with the owner's Docker containers
// against one quota; the ResourceQuota in the namespace stays as the
// cluster's own backstop.
package kube
