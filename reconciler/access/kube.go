package access

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/kube"
)

// Cluster is the Kubernetes side of the API: a student's pods' logs,
// exec and copies, and a short-lived credential for their own namespace.
// *Kube is one.
type Cluster interface {
	// PodLogs streams the logs of owner's pod name; not found unless it
	// is a pod WhaleMountain made for owner in owner's namespace.
	PodLogs(ctx context.Context, owner, name string, o docker.LogOptions) (io.ReadCloser, error)
	// Credential issues owner a token for their namespace, valid for ttl.
	Credential(ctx context.Context, owner string, ttl time.Duration) (KubeCredential, error)
	// PodExec runs a command in owner's running pod name.
	PodExec(ctx context.Context, owner, name string, o docker.ExecOptions) (Session, error)
	// PodCopyFrom streams a tar archive of the file or folder path in
	// owner's running pod name.
	PodCopyFrom(ctx context.Context, owner, name, path string) (io.ReadCloser, error)
	// PodCopyTo unpacks the tar archive content into the folder dir of
	// owner's running pod name.
	PodCopyTo(ctx context.Context, owner, name, dir string, content io.Reader) error
}

var _ Cluster = (*Kube)(nil)

// KubeCredential is what a kubeconfig for one student needs.
type KubeCredential struct {
	Server    string    `json:"server"`
	CA        []byte    `json:"ca,omitempty"`
	Namespace string    `json:"namespace"`
	Token     string    `json:"token"`
	Expires   time.Time `json:"expires"`
}

// ServiceAccountName is the ServiceAccount in each student's namespace
// whose tokens Credential issues, bound to the student's Role
// (kube.RoleName): get, list and watch pods, their logs, and exec.
const ServiceAccountName = "wm-student"

// BindingName is the RoleBinding of ServiceAccountName to the student's
// Role.
const BindingName = "wm-student-serviceaccount"

// Kube is the cluster as the API talks to it, with WhaleMountain's own
// credentials: it acts only in namespaces the kube backend made for that
// student (managed by WhaleMountain, labelled with the owner, of this
// instance) and on pods it made there.
type Kube struct {
	Client   kubernetes.Interface
	Settings kube.Settings
	// Config is the client's configuration, for exec's streams.
	Config *rest.Config
	// Server and CA are what students' kubeconfigs point at.
	Server string
	CA     []byte
}

// errPodNotRunning is a pod whose logs cannot be read yet.
var errPodNotRunning = fault.New(fault.Conflict, "pod is not running")

// namespace returns owner's namespace once its labels say it is theirs.
func (k *Kube) namespace(ctx context.Context, owner string) (string, error) {
	name := k.Settings.Namespace(owner)
	if k.Settings.NamespaceProblem(owner) != "" {
		return "", fmt.Errorf("no namespace for %s: %w", owner, docker.ErrNotFound)
	}
	ns, err := k.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no namespace %s: %w", name, docker.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("namespace %s: %w: %w", name, docker.ErrUnreachable, err)
	}
	if !k.ours(ns.Labels, owner) {
		return "", fmt.Errorf("namespace %s is not %s's: %w", name, owner, docker.ErrNotFound)
	}
	return name, nil
}

// ours reports whether labels mark an object as owner's, of this
// instance.
func (k *Kube) ours(labels map[string]string, owner string) bool {
	instance := k.Settings.Instance
	if instance == "" {
		instance = "wm"
	}
	return kube.InstanceOf(labels) == instance && labels[kube.LabelOwner] == owner
}

// ownPod returns owner's pod name and its namespace, once it is running.
func (k *Kube) ownPod(ctx context.Context, owner, name string) (string, error) {
	ns, err := k.namespace(ctx, owner)
	if err != nil {
		return "", err
	}
	pod, err := k.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", docker.ErrNotFound
	case err != nil:
		return "", fmt.Errorf("%w: %w", docker.ErrUnreachable, err)
	case !k.ours(pod.Labels, owner):
		return "", docker.ErrNotFound
	case pod.Spec.NodeName == "" || pod.Status.Phase != corev1.PodRunning:
		return "", errPodNotRunning
	}
	return ns, nil
}

// PodExec runs a command in owner's running pod name, through the
// apiserver, with WhaleMountain's credentials.
func (k *Kube) PodExec(ctx context.Context, owner, name string, o docker.ExecOptions) (Session, error) {
	ns, err := k.ownPod(ctx, owner, name)
	if err != nil {
		return nil, fmt.Errorf("exec in pod %s of %s: %w", name, owner, err)
	}
	if k.Config == nil {
		return nil, fmt.Errorf("exec in pod %s of %s: no client configuration for streams", name, owner)
	}
	u := k.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: o.Cmd, Stdin: o.Stdin, Stdout: true, Stderr: !o.TTY, TTY: o.TTY}, scheme.ParameterCodec).URL()
	ex, err := remotecommand.NewSPDYExecutor(k.Config, http.MethodPost, u)
	if err != nil {
		return nil, fmt.Errorf("exec in pod %s of %s: %w", name, owner, err)
	}
	return startPodSession(ctx, ex, o), nil
}

// podSession is a remotecommand stream as a Session.
type podSession struct {
	stdout, stderr *io.PipeReader
	stdin          io.WriteCloser
	sizes          chan remotecommand.TerminalSize
	done           chan struct{}
	code           int
	err            error
	cancel         context.CancelFunc
}

// startPodSession runs ex in the background.
func startPodSession(ctx context.Context, ex remotecommand.Executor, o docker.ExecOptions) *podSession {
	ctx, cancel := context.WithCancel(ctx)
	p := &podSession{sizes: make(chan remotecommand.TerminalSize, 1), done: make(chan struct{}), cancel: cancel}
	outR, outW := io.Pipe()
	p.stdout = outR
	opts := remotecommand.StreamOptions{Stdout: outW, Tty: o.TTY}
	var errW *io.PipeWriter
	if !o.TTY {
		p.stderr, errW = io.Pipe()
		opts.Stderr = errW
	}
	p.stdin = nopWriteCloser{io.Discard}
	var inR *io.PipeReader
	if o.Stdin {
		var inW *io.PipeWriter
		inR, inW = io.Pipe()
		opts.Stdin, p.stdin = inR, inW
	}
	if o.TTY {
		opts.TerminalSizeQueue = sizeQueue{ctx: ctx, sizes: p.sizes}
		if o.Rows > 0 && o.Cols > 0 {
			p.sizes <- remotecommand.TerminalSize{Height: uint16(o.Rows), Width: uint16(o.Cols)}
		}
	}
	go func() {
		defer close(p.done)
		err := ex.StreamWithContext(ctx, opts)
		var exit utilexec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			p.code = exit.ExitStatus()
		default:
			p.code, p.err = -1, err
		}
		outW.Close()
		if errW != nil {
			errW.Close()
		}
		if inR != nil {
			// Input the command will never read fails at once rather
			// than waiting for a reader.
			inR.CloseWithError(errSessionEnded)
		}
	}()
	return p
}

// errSessionEnded is writing input to a command that has ended.
var errSessionEnded = errors.New("the command has ended")

func (p *podSession) Output() (io.Reader, io.Reader) {
	if p.stderr == nil {
		return p.stdout, nil
	}
	return p.stdout, p.stderr
}
func (p *podSession) Input() io.WriteCloser { return p.stdin }
func (p *podSession) Resize(_ context.Context, rows, cols uint) error {
	select {
	case p.sizes <- remotecommand.TerminalSize{Height: uint16(rows), Width: uint16(cols)}:
	default:
	}
	return nil
}
func (p *podSession) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.code, p.err
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}
func (p *podSession) Close() error {
	p.cancel()
	_ = p.stdin.Close()
	return nil
}

// sizeQueue hands remotecommand the terminal's sizes.
type sizeQueue struct {
	ctx   context.Context
	sizes chan remotecommand.TerminalSize
}

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	select {
	case s := <-q.sizes:
		return &s
	case <-q.ctx.Done():
		return nil
	}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// podExec is GET /api/v1/pods/{name}/exec, as for containers.
func (s *Server) podExec(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	if s.cfg.Cluster == nil {
		return fail(w, http.StatusNotFound, "", "this server has no Kubernetes cluster")
	}
	owner, name, o := s.podName(w, r, id)
	if o != nil {
		return *o
	}
	return s.session(w, r, id, owner+"_"+name, func(ctx context.Context, opts docker.ExecOptions) (Session, error) {
		return s.cfg.Cluster.PodExec(ctx, owner, name, opts)
	})
}

// PodLogs streams the logs of owner's pod name.
func (k *Kube) PodLogs(ctx context.Context, owner, name string, o docker.LogOptions) (io.ReadCloser, error) {
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("logs of pod %s of %s: %w", name, owner, err)
	}
	ns, err := k.namespace(ctx, owner)
	if err != nil {
		return fail(err)
	}
	pod, err := k.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fail(docker.ErrNotFound)
	case err != nil:
		return fail(fmt.Errorf("%w: %w", docker.ErrUnreachable, err))
	case !k.ours(pod.Labels, owner):
		return fail(docker.ErrNotFound)
	case pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodPending:
		return fail(errPodNotRunning)
	}
	opts := &corev1.PodLogOptions{Follow: o.Follow}
	if o.Tail > 0 {
		n := int64(o.Tail)
		opts.TailLines = &n
	}
	if !o.Since.IsZero() {
		t := metav1.NewTime(o.Since)
		opts.SinceTime = &t
	}
	rc, err := k.Client.CoreV1().Pods(ns).GetLogs(name, opts).Stream(ctx)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", errPodNotRunning, err))
	}
	return rc, nil
}

// Credential makes sure owner's namespace has the ServiceAccount
// ServiceAccountName, bound to the student's Role, and issues a token of
// it for ttl (a TokenRequest: nothing is stored, and it expires by
// itself).
func (k *Kube) Credential(ctx context.Context, owner string, ttl time.Duration) (KubeCredential, error) {
	fail := func(err error) (KubeCredential, error) {
		return KubeCredential{}, fmt.Errorf("kubernetes credential of %s: %w", owner, err)
	}
	ns, err := k.namespace(ctx, owner)
	if err != nil {
		return fail(err)
	}
	labels := map[string]string{kube.LabelManagedBy: kube.ManagedByValue, kube.LabelOwner: owner}
	if k.Settings.Instance != "" {
		labels[kube.LabelInstance] = k.Settings.Instance
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ServiceAccountName, Namespace: ns, Labels: labels},
		AutomountServiceAccountToken: new(bool)}
	if _, err := k.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fail(err)
	}
	got, err := k.Client.CoreV1().ServiceAccounts(ns).Get(ctx, ServiceAccountName, metav1.GetOptions{})
	if err != nil {
		return fail(err)
	}
	if !k.ours(got.Labels, owner) {
		return fail(fmt.Errorf("service account %s/%s is not WhaleMountain's for %s: %w", ns, ServiceAccountName, owner, docker.ErrConflict))
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: BindingName, Namespace: ns, Labels: labels},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: kube.RoleName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ServiceAccountName, Namespace: ns}},
	}
	if _, err := k.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{FieldManager: kube.FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fail(err)
	}
	gotRB, err := k.Client.RbacV1().RoleBindings(ns).Get(ctx, BindingName, metav1.GetOptions{})
	if err != nil {
		return fail(err)
	}
	if !k.ours(gotRB.Labels, owner) || gotRB.RoleRef != rb.RoleRef || len(gotRB.Subjects) != 1 || gotRB.Subjects[0] != rb.Subjects[0] {
		return fail(fmt.Errorf("role binding %s/%s is not WhaleMountain's binding of %s: %w", ns, BindingName, ServiceAccountName, docker.ErrConflict))
	}
	seconds := int64(ttl / time.Second)
	tr, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, ServiceAccountName,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
	if err != nil {
		return fail(err)
	}
	return KubeCredential{Server: k.Server, CA: k.CA, Namespace: ns, Token: tr.Status.Token, Expires: tr.Status.ExpirationTimestamp.Time}, nil
}

// credentialTTL is how long a student's Kubernetes token lives.
const credentialTTL = time.Hour

// podLogs is GET /api/v1/pods/{name}/logs?tail=N&since=T&follow=1, as for
// containers: the name is the pod's in wm.yaml or "<owner>_<name>".
func (s *Server) podLogs(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	if s.cfg.Cluster == nil {
		return fail(w, http.StatusNotFound, "", "this server has no Kubernetes cluster")
	}
	owner, name, o := s.podName(w, r, id)
	if o != nil {
		return *o
	}
	opts, o := s.logOptions(w, r, owner+"_"+name)
	if o != nil {
		return *o
	}
	ctx, touch, cancel := idle(r.Context(), s.cfg.IdleTimeout)
	defer cancel()
	if opts.Follow {
		release, ok := s.acquire(id)
		if !ok {
			return s.tooMany(w, name)
		}
		defer release()
	}
	rc, err := s.cfg.Cluster.PodLogs(ctx, owner, name, opts)
	if errors.Is(err, errPodNotRunning) {
		return fail(w, http.StatusConflict, owner+"_"+name, "pod "+name+" is not running yet")
	}
	if err != nil {
		return engineError(w, owner+"_"+name, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(s.stream(w, touch), rc)
	return ok(owner + "_" + name)
}

// podName resolves a pod's name as resolve does a container's: another
// owner's is 403 from the name alone.
func (s *Server) podName(w http.ResponseWriter, r *http.Request, id Identity) (owner, name string, o *outcome) {
	raw := r.PathValue("name")
	owner, name, full := strings.Cut(raw, "_")
	if !full {
		owner, name = id.Account, raw
	}
	if owner == "" || !validLabel(owner) || !validLabel(name) {
		out := fail(w, http.StatusNotFound, raw, "no pod "+cut(raw))
		return "", "", &out
	}
	if owner != id.Account && !id.Admin {
		out := fail(w, http.StatusForbidden, owner+"_"+name, "pod "+name+" of "+owner+" is not yours")
		return "", "", &out
	}
	return owner, name, nil
}

// kubeconfig is POST /api/v1/kubeconfig[?owner=]: a credential for the
// caller's own namespace (an admin may name an owner), valid for an hour.
func (s *Server) kubeconfig(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	if s.cfg.Cluster == nil {
		return fail(w, http.StatusNotFound, "", "this server has no Kubernetes cluster")
	}
	owner, allowed := owners(r, id)
	if !allowed || owner == "" {
		return fail(w, http.StatusForbidden, owner, "a credential is only for your own namespace")
	}
	c, err := s.cfg.Cluster.Credential(r.Context(), owner, credentialTTL)
	if errors.Is(err, fault.NotFound) {
		return fail(w, http.StatusNotFound, owner, "you have no Kubernetes namespace yet: declare a pod in wm.yaml first")
	}
	if err != nil {
		return fail(w, http.StatusBadGateway, owner, "the cluster did not issue a credential")
	}
	writeJSON(w, http.StatusOK, c)
	return ok(owner)
}
