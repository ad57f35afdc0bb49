package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// defaultDir is ci/kube-up's state dir when WM_KUBE_DIR is unset.
	defaultDir = "/tmp/wm-kube"
	// upTimeout bounds one ci/kube-up run; a cold build of the binaries on
	// two cores is most of it.
	upTimeout = 30 * time.Minute
	// requestTimeout bounds each request the helpers make themselves.
	requestTimeout = 30 * time.Second
)

// Cluster is the shared control plane, as described by ci/kube-up's env file.
type Cluster struct {
	// Where it lives.
	dir        string
	kubeconfig string

	// How to reach it.
	server     string
	caData     []byte
	adminToken string

	// Who may act on it: student name → bearer token.
	students map[string]string

	// Its node, and the taint that keeps pods off it unless their
	// namespace lets them on (AllowOnNode); "" when ci/kube-up started
	// none.
	node, nodeTaint string
}

// shared is the control plane of this test process, looked up once: a
// failure is remembered so later tests fail at once instead of each running
// ci/kube-up again.
var shared struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// Env returns the shared control plane, starting it with ci/kube-up if it is
// not up, and fails the test when it cannot. It never stops it.
func Env(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() { shared.cluster, shared.err = connect(t) })
	if shared.err != nil {
		t.Fatalf("kubetest: no Kubernetes control plane: %v", shared.err)
	}
	return shared.cluster
}

// connect reuses a ready control plane or runs ci/kube-up.
func connect(t testing.TB) (*Cluster, error) {
	dir := os.Getenv("WM_KUBE_DIR")
	if dir == "" {
		dir = defaultDir
	}
	envFile := filepath.Join(dir, "env")
	// A control plane without a node is one an older ci/kube-up started:
	// ci/kube-up replaces it.
	if c, err := load(envFile); err == nil && c.node != "" && c.alive() && c.ready() == nil {
		return c, nil
	}

	script, err := kubeUp()
	if err != nil {
		return nil, err
	}
	t.Logf("kubetest: starting the control plane with %s (a cold build takes several minutes)", script)
	start := time.Now()
	out, err := runKubeUp(t, script, dir)
	if err != nil {
		return nil, err
	}
	if out != "" {
		envFile = out
	}
	c, err := load(envFile)
	if err != nil {
		return nil, fmt.Errorf("read what ci/kube-up wrote: %w", err)
	}
	if err := c.ready(); err != nil {
		return nil, fmt.Errorf("control plane started by ci/kube-up is not ready: %w", err)
	}
	t.Logf("kubetest: control plane up at %s after %s", c.server, time.Since(start).Round(time.Second))
	return c, nil
}

// kubeUp finds ci/kube-up: $WM_KUBE_UP, else in the nearest folder above
// the working directory that holds go.mod and ci/kube-up.
func kubeUp() (string, error) {
	if p := os.Getenv("WM_KUBE_UP"); p != "" {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find ci/kube-up: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		script := filepath.Join(d, "ci", "kube-up")
		if isFile(filepath.Join(d, "go.mod")) && isFile(script) {
			return script, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("find ci/kube-up: no folder above %s has go.mod and ci/kube-up (set WM_KUBE_UP)", wd)
		}
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// runKubeUp runs the script in its own process group, so a timeout also
// ends the go build it may be running (the daemons it starts have their own
// sessions and live on), and returns the env file path it printed.
func runKubeUp(t testing.TB, script, dir string) (string, error) {
	timeout := upTimeout
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok && time.Until(dl)-time.Minute < timeout {
			timeout = max(time.Until(dl)-time.Minute, 10*time.Second)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), "WM_KUBE_DIR="+dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("ci/kube-up did not finish within %s; run it before the tests, it reuses its build: %s",
			timeout.Round(time.Second), tail(stderr.String()))
	}
	if err != nil {
		return "", fmt.Errorf("ci/kube-up: %w: %s", err, tail(stderr.String()))
	}
	lines := strings.Fields(stdout.String())
	if len(lines) == 0 {
		return "", nil
	}
	return lines[len(lines)-1], nil
}

// tail keeps the last lines of a script's stderr for an error message.
func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return "\n" + strings.Join(lines, "\n")
}

// load reads the env file ci/kube-up writes: `export KEY='value'` lines.
func load(envFile string) (*Cluster, error) {
	f, err := os.Open(envFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("%s: unexpected line %q", envFile, line)
		}
		vars[k] = strings.Trim(v, `'"`)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, k := range []string{"WM_KUBE_DIR", "KUBECONFIG", "WM_KUBE_SERVER", "WM_KUBE_CA_FILE", "WM_KUBE_ADMIN_TOKEN", "WM_KUBE_STUDENT_TOKENS"} {
		if vars[k] == "" {
			return nil, fmt.Errorf("%s: %s is missing", envFile, k)
		}
	}
	ca, err := os.ReadFile(vars["WM_KUBE_CA_FILE"])
	if err != nil {
		return nil, fmt.Errorf("read the apiserver CA: %w", err)
	}
	c := &Cluster{
		dir:        vars["WM_KUBE_DIR"],
		kubeconfig: vars["KUBECONFIG"],
		server:     vars["WM_KUBE_SERVER"],
		caData:     ca,
		adminToken: vars["WM_KUBE_ADMIN_TOKEN"],
		students:   map[string]string{},
		node:       vars["WM_KUBE_NODE"],
		nodeTaint:  vars["WM_KUBE_NODE_TAINT"],
	}
	for _, pair := range strings.Split(vars["WM_KUBE_STUDENT_TOKENS"], ",") {
		name, token, ok := strings.Cut(pair, "=")
		if !ok || name == "" || token == "" {
			return nil, fmt.Errorf("%s: bad WM_KUBE_STUDENT_TOKENS entry %q", envFile, pair)
		}
		c.students[name] = token
	}
	return c, nil
}

// alive reports whether the processes of the pid files still run; a dead
// controller manager leaves /readyz green but new namespaces without
// service accounts, a dead kubelet a node that runs nothing, and
// ci/kube-up restarts them.
func (c *Cluster) alive() bool {
	names := []string{"etcd", "kube-apiserver", "kube-controller-manager"}
	if c.node != "" {
		names = append(names, "kube-scheduler", "containerd", "kubelet")
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(c.dir, name+".pid"))
		if err != nil {
			return false
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return false
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return false
		}
	}
	return true
}

// ready asks the apiserver's /readyz.
func (c *Cluster) ready() error {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	if s := strings.TrimSpace(string(body)); s != "ok" {
		return fmt.Errorf("readyz: %q", s)
	}
	return nil
}

// config is a client config for one bearer token. Rate limits are raised
// well above client-go's defaults (5 QPS), which would pace the tests.
func (c *Cluster) config(token, user string) *rest.Config {
	return &rest.Config{
		Host:            c.server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: bytes.Clone(c.caData)},
		QPS:             100,
		Burst:           200,
		UserAgent:       "wm-kubetest/" + user,
	}
}

// AdminConfig returns a new client config for the admin (system:masters);
// the caller may change it.
func (c *Cluster) AdminConfig() *rest.Config { return c.config(c.adminToken, "admin") }

// AdminClient returns a clientset acting as the admin (system:masters).
func (c *Cluster) AdminClient(t testing.TB) kubernetes.Interface {
	t.Helper()
	return c.client(t, c.AdminConfig())
}

// StudentConfig returns a new client config acting as the student token
// user name; it fails the test for a name not in Students.
func (c *Cluster) StudentConfig(t testing.TB, name string) *rest.Config {
	t.Helper()
	token, ok := c.students[name]
	if !ok {
		t.Fatalf("kubetest: no student %q; the control plane has %v", name, c.Students())
	}
	return c.config(token, name)
}

// StudentClient returns a clientset acting as the student token user name
// (group "students"), who has no RBAC until a test grants some.
func (c *Cluster) StudentClient(t testing.TB, name string) kubernetes.Interface {
	t.Helper()
	return c.client(t, c.StudentConfig(t, name))
}

func (c *Cluster) client(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: client for %s: %v", c.server, err)
	}
	return cs
}

// Kubeconfig returns the path of the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// Server returns the apiserver URL, https://127.0.0.1:<port>.
func (c *Cluster) Server() string { return c.server }

// CAData returns the PEM certificates that verify the apiserver's serving
// certificate.
func (c *Cluster) CAData() []byte { return bytes.Clone(c.caData) }

// Students returns the student token users, sorted.
func (c *Cluster) Students() []string {
	names := make([]string, 0, len(c.students))
	for n := range c.students {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Namespace returns a fresh namespace name starting with prefix (cut to
// fit, made a DNS label). It does not create the namespace; it deletes it
// at the test's cleanup if it exists then, without waiting for it to go.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	name := uniqueName(prefix)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		err := c.AdminClient(t).CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("kubetest: delete namespace %s: %v", name, err)
		}
	})
	return name
}

// uniqueName is prefix, as a DNS label, then "-" and six random characters.
func uniqueName(prefix string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	p := strings.Trim(b.String(), "-")
	if len(p) > validation.DNS1123LabelMaxLength-7 {
		p = strings.TrimRight(p[:validation.DNS1123LabelMaxLength-7], "-")
	}
	if p == "" {
		p = "test"
	}
	suffix := make([]byte, 6)
	for i := range suffix {
		suffix[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return p + "-" + string(suffix)
}

// Can asks the apiserver whether user may do verb on resource (with
// subresource, "" for none) in namespace ("" for cluster scope). resource
// is "pods" for the core group, or "resource.group" as in
// "deployments.apps" or "rolebindings.rbac.authorization.k8s.io". The
// review carries the groups the user's token gives it: students are in
// "students", the admin in "system:masters", service accounts
// (system:serviceaccount:NS:NAME) in theirs, everyone in
// system:authenticated.
func (c *Cluster) Can(t testing.TB, user, verb, resource, subresource, namespace string) bool {
	t.Helper()
	resource, group, _ := strings.Cut(resource, ".")
	review := &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: c.groupsOf(user),
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace:   namespace,
				Verb:        verb,
				Group:       group,
				Resource:    resource,
				Subresource: subresource,
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	got, err := c.AdminClient(t).AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: SubjectAccessReview for %s %s %s in %q: %v", user, verb, resource, namespace, err)
	}
	return got.Status.Allowed
}

func (c *Cluster) groupsOf(user string) []string {
	switch {
	case user == "admin":
		return []string{"system:masters", "system:authenticated"}
	case c.students[user] != "":
		return []string{"students", "system:authenticated"}
	case strings.HasPrefix(user, "system:serviceaccount:"):
		ns, _, _ := strings.Cut(strings.TrimPrefix(user, "system:serviceaccount:"), ":")
		return []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	default:
		return []string{"system:authenticated"}
	}
}

// NodeAnnotation is the namespace annotation of the PodTolerationRestriction
// admission plugin that gives every pod made in the namespace tolerations.
const NodeAnnotation = "scheduler.alpha.kubernetes.io/defaultTolerations"

// Node returns the name of the cluster's node once it is Ready, and fails
// the test when ci/kube-up started none.
func (c *Cluster) Node(t testing.TB) string {
	t.Helper()
	if c.node == "" || c.nodeTaint == "" {
		t.Fatalf("kubetest: the control plane in %s has no node: run ci/kube-up again (it starts one)", c.dir)
	}
	var last error
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		n, err := c.AdminClient(t).CoreV1().Nodes().Get(ctx, c.node, metav1.GetOptions{})
		cancel()
		if err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return c.node
				}
			}
			err = fmt.Errorf("not Ready: %v", n.Status.Conditions)
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: node %s: %v (logs: %s/logs/kubelet.log)", c.node, last, c.dir)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// AllowOnNode lets the pods made in namespace from now on run on the node:
// it annotates the namespace (which must exist) so that admission gives
// them the toleration of the node's taint. Pods of other namespaces stay
// Pending, as on a cluster without room for them.
func (c *Cluster) AllowOnNode(t testing.TB, namespace string) {
	t.Helper()
	c.Node(t)
	tol, err := json.Marshal([]corev1.Toleration{{Key: c.nodeTaint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}})
	if err != nil {
		t.Fatal(err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{NodeAnnotation: string(tol)}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := c.AdminClient(t).CoreV1().Namespaces().Patch(ctx, namespace, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("kubetest: let the pods of %s on the node: %v", namespace, err)
	}
}

// WaitRunning waits up to timeout for the pod to be Running with its
// containers ready, and returns it; it fails the test with the pod's
// status and events otherwise.
func (c *Cluster) WaitRunning(t testing.TB, namespace, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	admin := c.AdminClient(t)
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		pod, err := admin.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		cancel()
		if err == nil && pod.Status.Phase == corev1.PodRunning && podReady(pod) {
			return pod
		}
		if err == nil && (pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded) || time.Now().After(deadline) {
			t.Fatalf("kubetest: pod %s/%s is not running after %s: %s", namespace, name, timeout, c.describe(admin, namespace, name, pod, err))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// podReady reports whether every container of pod is ready.
func podReady(pod *corev1.Pod) bool {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// describe says what a pod is doing, for a failure: its phase, its
// containers' states and its events.
func (c *Cluster) describe(admin kubernetes.Interface, namespace, name string, pod *corev1.Pod, err error) string {
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s, node %q", pod.Status.Phase, pod.Spec.NodeName)
	for _, cs := range pod.Status.ContainerStatuses {
		fmt.Fprintf(&b, "; container %s: %+v", cs.Name, cs.State)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	events, err := admin.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err == nil {
		for _, e := range events.Items {
			fmt.Fprintf(&b, "\n  %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}
