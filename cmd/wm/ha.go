package main

// wm serve as one replica of several (the server config's ha section):
// only the holder of a Kubernetes Lease opens the state store and
// reconciles.
//
// Every replica runs client-go's leader election on the Lease before it
// opens anything of the runtime: the state store is a bbolt file that one
// process may hold, in a stateDir the replicas share. A replica that does
// not hold the Lease is on standby: on its public address it answers
// /livez and /healthz (200) and /readyz (503, naming the replica that
// leads), so that a Service or a load balancer sends the students to the
// leader only. Once it holds the Lease, it closes that, waits for the
// state store (the previous leader's lock, which shared storage may keep
// a while after that leader died), opens the runtime and runs the same
// serveLoop as without ha.
//
// Never two leaders. A leader that cannot renew the Lease stops at once,
// by exiting non-zero (its supervisor starts it again, on standby): the
// passes under way are not let finish. It stops when client-go gives up
// renewing, or when its own watch (watchedLock) has seen no renewal sent
// for renewDeadline + retryPeriod, whichever comes first; the schema
// requires leaseDuration to be longer, so it has stopped before another
// replica may take over. (client-go alone first tries to release the
// Lease, which takes up to renewDeadline more when the apiserver does not
// answer: just when the Lease is lost.) A clean stop (SIGTERM) lets the
// passes finish for poll.shutdownGrace, closes the store, and only then
// releases the Lease, so that the next replica takes over at once.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	bolterrors "go.etcd.io/bbolt/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// replica is one wm serve of an ha config.
type replica struct {
	cmd *cobra.Command
	g   *globals
	cfg *schema.ServerConfig
	log *slog.Logger
	// id is this replica's identity in the Lease.
	id   string
	lock *watchedLock
	le   *leaderelection.LeaderElector
	// elected is closed once this replica holds the Lease.
	elected chan struct{}
	// stopping is set once this replica gives the election up on
	// purpose (a clean stop): the election's end is then no loss.
	stopping atomic.Bool
	// exit ends the process when the Lease is lost: os.Exit.
	exit func(code int)
}

// serveHA is wm serve with ha set: it leads, or waits on standby until
// it may (see the top of this file). cfg has passed loadCheckedConfig.
func serveHA(ctx context.Context, cmd *cobra.Command, g *globals, cfg *schema.ServerConfig) error {
	id := haIdentity(cfg.HA)
	r := &replica{cmd: cmd, g: g, cfg: cfg, id: id, elected: make(chan struct{}), exit: os.Exit,
		log: configLogger(cmd.ErrOrStderr(), cfg.Log, g.verbose).With("replica", id)}
	// client-go's leader election logs through klog: into wm's log.
	klog.SetSlogLogger(r.log.With("component", "leaderelection"))
	if err := r.elector(); err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	standby, err := r.standby()
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	h := cfg.HA
	r.log.Info("ha: on standby until this replica holds the Lease", "lease", h.LeaseNamespace+"/"+h.LeaseName,
		"leaseDuration", h.LeaseDuration.Std(), "renewDeadline", h.RenewDeadline.Std(), "retryPeriod", h.RetryPeriod.Std(),
		"listener", "public", "address", standby.addr)
	// The election outlives a SIGTERM until the passes under way are
	// done and the store is closed: only then is the Lease released.
	electCtx, cancelElect := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElect()
	ran := make(chan struct{})
	go func() { defer close(ran); r.le.Run(electCtx) }()

	var result error
	select {
	case <-ctx.Done():
		r.log.Info("ha: stopping on standby")
	case <-r.elected:
		result = r.lead(ctx, standby)
	}
	standby.close()
	r.stopping.Store(true)
	cancelElect()
	<-ran
	return result
}

// haIdentity is the replica's identity: the configured one, else
// <hostname>_<pid>.
func haIdentity(h *schema.HA) string {
	if h.Identity != "" {
		return h.Identity
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "wm"
	}
	return host + "_" + strconv.Itoa(os.Getpid())
}

// elector makes the leader election on the configured Lease, reached
// with kubernetes.kubeconfig. It releases the Lease when its context is
// cancelled, which serveHA does only once the store is closed.
func (r *replica) elector() error {
	h := r.cfg.HA
	rc, err := clientcmd.BuildConfigFromFlags("", r.cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes.kubeconfig: %w", err)
	}
	// No one request takes the whole renewal: one that hangs is retried
	// within renewDeadline.
	rc.Timeout = h.RenewDeadline.Std() / 2
	rc.UserAgent = "wm-leader-election/" + version
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	return r.elect(&resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: h.LeaseNamespace, Name: h.LeaseName},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: r.id},
	})
}

// elect makes the leader election on lock, watched, with the config's
// timing.
func (r *replica) elect(lock resourcelock.Interface) error {
	h := r.cfg.HA
	r.lock = &watchedLock{Interface: lock}
	var err error
	r.le, err = leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            r.lock,
		Name:            "wm",
		LeaseDuration:   h.LeaseDuration.Std(),
		RenewDeadline:   h.RenewDeadline.Std(),
		RetryPeriod:     h.RetryPeriod.Std(),
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { close(r.elected) },
			OnStoppedLeading: r.stoppedLeading,
			OnNewLeader: func(id string) {
				if id != r.id {
					r.log.Info("ha: another replica leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	return nil
}

// stoppedLeading is called when the election ends: on a clean stop, the
// Lease has been released (or was never held); otherwise it was lost.
func (r *replica) stoppedLeading() {
	select {
	case <-r.elected:
	default:
		return // never led
	}
	if r.stopping.Load() {
		r.log.Info("ha: the Lease is released: another replica may lead at once")
		return
	}
	r.lost("client-go could not renew it within renewDeadline")
}

// lost stops the process at once: another replica may take the Lease
// soon. The passes under way are cut short, as by a crash, which the
// reconciler is made to survive; the kernel releases the state file, and
// the admin socket left behind is replaced by the next wm serve.
func (r *replica) lost(why string) {
	r.log.Error("ha: lost the Lease: stopping at once, the supervisor starts this replica again", "why", why)
	r.exit(exitInvalid)
}

// lead runs wm serve as the leader until ctx is done (SIGTERM) or it
// fails; the Lease is lost only through r.lost.
func (r *replica) lead(ctx context.Context, standby *standbyServer) error {
	r.log.Info("ha: this replica holds the Lease: leading")
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go r.watch(watchCtx)
	standby.close()
	if err := r.waitForState(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintln(r.cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	rt, _, err := openRuntime(r.cmd, r.g, false, nil)
	if err != nil {
		return err
	}
	defer rt.Close()
	ls, err := listen(rt.cfg)
	if err != nil {
		fmt.Fprintln(r.cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	return serveLoop(ctx, r.cmd, rt, ls, r.g.verbose)
}

// watch calls r.lost once no renewal of the Lease was sent for
// renewDeadline + retryPeriod, until ctx is done.
func (r *replica) watch(ctx context.Context) {
	h := r.cfg.HA
	limit := h.RenewDeadline.Std() + h.RetryPeriod.Std()
	tick := time.NewTicker(max(h.RetryPeriod.Std()/10, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if since := time.Since(r.lock.lastRenewal()); since > limit && !r.stopping.Load() {
			r.lost(fmt.Sprintf("no renewal was sent for %v, more than renewDeadline + retryPeriod (%v)", since.Round(time.Millisecond), limit))
			return
		}
	}
}

// waitForState waits until the state store can be opened: the previous
// leader's lock may outlive it a while on shared storage (an NFS lock
// until the server's lease on it runs out). bbolt itself waits a few
// seconds on each try.
func (r *replica) waitForState(ctx context.Context) error {
	for {
		st, err := store.Open(r.cfg.StateDir)
		if err == nil {
			warnSetAside(r.log, st)
			return st.Close()
		}
		if !errors.Is(err, bolterrors.ErrTimeout) {
			return err
		}
		r.log.Warn("ha: the state store is still held, by the replica that led before: waiting", "stateDir", r.cfg.StateDir)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// watchedLock is the Lease lock, watched: it keeps when the last write of
// this replica's record that the apiserver accepted was sent. The time it
// was sent, not answered: the apiserver wrote it after, and the other
// replicas count the lease from when they see it.
type watchedLock struct {
	resourcelock.Interface
	last atomic.Int64 // UnixNano
}

// Create creates the Lease, held by this replica.
func (l *watchedLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	sent := time.Now()
	err := l.Interface.Create(ctx, ler)
	l.record(sent, ler, err)
	return err
}

// Update takes or renews the Lease, or releases it.
func (l *watchedLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	sent := time.Now()
	err := l.Interface.Update(ctx, ler)
	l.record(sent, ler, err)
	return err
}

func (l *watchedLock) record(sent time.Time, ler resourcelock.LeaderElectionRecord, err error) {
	if err == nil && ler.HolderIdentity == l.Identity() {
		l.last.Store(sent.UnixNano())
	}
}

// lastRenewal is when the last accepted write holding the Lease was sent.
func (l *watchedLock) lastRenewal() time.Time { return time.Unix(0, l.last.Load()) }

// standbyServer answers on the public address while this replica waits.
type standbyServer struct {
	addr string
	srv  *http.Server
	once sync.Once
}

// standby listens on the public address (with TLS when configured) and
// answers the probes of a replica that does not lead: alive, not ready.
func (r *replica) standby() (*standbyServer, error) {
	ln, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return nil, err
	}
	if ln, err = withTLS(ln, r.cfg); err != nil {
		return nil, err
	}
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", ok)
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		switch leader := r.le.GetLeader(); leader {
		case "":
			fmt.Fprintln(w, "standby: no replica leads yet")
		case r.id:
			fmt.Fprintln(w, "standby: taking over")
		default:
			fmt.Fprintf(w, "standby: replica %s leads\n", leader)
		}
	})
	s := &standbyServer{addr: ln.Addr().String(), srv: newHTTPServer(mux, defaultHTTPLimits, r.log)}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("http server stopped", "listener", "standby", "err", err)
		}
	}()
	return s, nil
}

// close stops answering, so that the leader can listen on the address.
func (s *standbyServer) close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.srv.Close()
		}
	})
}
