package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultTimeout bounds one run of a check that sets no Timeout: well
// within the few seconds a Kubernetes probe waits (timeoutSeconds).
const DefaultTimeout = 2 * time.Second

// Check is one named check of a probe.
type Check struct {
	// Name reports the check and names it in ?exclude= and in the path
	// of a probe of it alone: a short word such as store or docker/blade1.
	Name string
	// Run checks, within ctx's deadline (Timeout); nil means it passes.
	Run func(ctx context.Context) error
	// Every is how long a result is reused before Run is called again
	// (failures too, so that a host that is down is not asked more
	// often); 0 calls it for every probe.
	Every time.Duration
	// Timeout bounds one run; DefaultTimeout when 0.
	Timeout time.Duration
}

// Probe is a named list of checks, such as livez or readyz.
type Probe struct {
	name   string
	checks []*check
	log    *slog.Logger
}

// New returns the probe called name (the path it is served at, without
// the slash) of checks, in the order they are listed; log hears when a
// check starts failing, and when it passes again.
func New(name string, log *slog.Logger, checks ...Check) *Probe {
	p := &Probe{name: name, log: log}
	for _, c := range checks {
		if c.Timeout <= 0 {
			c.Timeout = DefaultTimeout
		}
		p.checks = append(p.checks, &check{Check: c, probe: p})
	}
	return p
}

// Name is the probe's name.
func (p *Probe) Name() string { return p.name }

// Result is how one check went.
type Result struct {
	Name string
	// Err is why it failed; nil when it passed or was excluded.
	Err error
	// Excluded marks a check the caller left out.
	Excluded bool
}

// Run runs the probe's checks but those named in exclude, all at once,
// and returns a result per check in the probe's order. It returns within
// the longest timeout of the checks, or when ctx is done.
func (p *Probe) Run(ctx context.Context, exclude ...string) []Result {
	out := make([]Result, len(p.checks))
	var wg sync.WaitGroup
	for i, c := range p.checks {
		out[i].Name = c.Name
		if slices.Contains(exclude, c.Name) {
			out[i].Excluded = true
			continue
		}
		wg.Go(func() { out[i].Err = c.result(ctx) })
	}
	wg.Wait()
	return out
}

// Register serves the probe on mux at GET /<name> (every check) and GET
// /<name>/<check> (that check alone). reveal answers why a check failed;
// without it the answer says "reason withheld" (the log has the reason).
func (p *Probe) Register(mux *http.ServeMux, reveal bool) {
	mux.HandleFunc("GET /"+p.name, func(w http.ResponseWriter, r *http.Request) { p.serve(w, r, reveal, "") })
	mux.HandleFunc("GET /"+p.name+"/{check...}", func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, reveal, r.PathValue("check"))
	})
}

// serve answers a probe of every check, or of the one named only.
func (p *Probe) serve(w http.ResponseWriter, r *http.Request, reveal bool, only string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	q := r.URL.Query()
	_, verbose := q["verbose"]
	exclude := q["exclude"]
	var unknown []string
	for _, e := range exclude {
		if !slices.ContainsFunc(p.checks, func(c *check) bool { return c.Name == e }) {
			unknown = append(unknown, e)
		}
	}
	var results []Result
	if only != "" {
		i := slices.IndexFunc(p.checks, func(c *check) bool { return c.Name == only })
		if i < 0 {
			http.Error(w, fmt.Sprintf("no check %q in %s", only, p.name), http.StatusNotFound)
			return
		}
		results = []Result{{Name: only, Err: p.checks[i].result(r.Context())}}
	} else {
		results = p.Run(r.Context(), exclude...)
	}
	failed := len(unknown) > 0 || slices.ContainsFunc(results, func(res Result) bool { return res.Err != nil })
	if !failed && !verbose {
		fmt.Fprintln(w, "ok")
		return
	}
	var b strings.Builder
	for _, res := range results {
		switch {
		case res.Excluded:
			fmt.Fprintf(&b, "[+]%s excluded: ok\n", res.Name)
		case res.Err == nil:
			fmt.Fprintf(&b, "[+]%s ok\n", res.Name)
		default:
			fmt.Fprintf(&b, "[-]%s failed: %s\n", res.Name, withheld(res.Err, reveal))
		}
	}
	verdict := p.name + " check passed"
	if failed {
		verdict = p.name + " check failed"
		if len(unknown) > 0 {
			verdict += fmt.Sprintf(": no check to exclude called %s", strings.Join(unknown, ", "))
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, b.String())
	fmt.Fprintln(w, verdict)
}

// withheld is err's message when reveal, else "reason withheld".
func withheld(err error, reveal bool) string {
	if !reveal {
		return "reason withheld"
	}
	return oneLine(err.Error())
}

// oneLine keeps a message on one line of the answer.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// check is one Check with what its last run found.
type check struct {
	Check
	probe *Probe

	mu sync.Mutex
	// err and at are the last result and when it was had (zero: never).
	err error
	at  time.Time
	// running is closed when the run under way returns; nil when none
	// is, started when it began.
	running chan struct{}
	started time.Time
	// failing is the failure last logged; "" while the check passes.
	failing string
}

// result returns the check's result: the last one while it is fresh,
// else that of a run, started unless one is under way, waited for until
// its timeout at most.
func (c *check) result(ctx context.Context) error {
	now := time.Now()
	c.mu.Lock()
	if !c.at.IsZero() && now.Sub(c.at) < c.Every {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if c.running == nil {
		c.running, c.started = make(chan struct{}), now
		go c.run(c.running)
	}
	done, left := c.running, c.Timeout-now.Sub(c.started)
	c.mu.Unlock()
	if left <= 0 {
		return c.hung()
	}
	timer := time.NewTimer(left)
	defer timer.Stop()
	select {
	case <-done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-timer.C:
		return c.hung()
	case <-ctx.Done():
		return fmt.Errorf("%s was not checked: %w", c.Name, ctx.Err())
	}
}

// hung is the failure of a run that outlived its timeout and has not
// returned: it is not started again until it does.
func (c *check) hung() error {
	err := fmt.Errorf("%s did not answer within %v", c.Name, c.Timeout)
	c.mu.Lock()
	c.logChange(err)
	c.mu.Unlock()
	return err
}

// run runs the check once, within its timeout, and keeps the result.
func (c *check) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	err := c.call(ctx)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%s did not answer within %v: %w", c.Name, c.Timeout, err)
	}
	c.mu.Lock()
	c.err, c.at, c.running = err, time.Now(), nil
	c.logChange(err)
	c.mu.Unlock()
	close(done)
}

// call is Run, a panic in it being its failure rather than the server's.
func (c *check) call(ctx context.Context) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%s panicked: %v", c.Name, v)
		}
	}()
	return c.Run(ctx)
}

// logChange logs a check that starts failing, fails for another reason,
// or passes again; the caller holds c.mu.
func (c *check) logChange(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	switch {
	case msg == c.failing:
	case msg == "":
		c.probe.log.Info("check passes again", "probe", c.probe.name, "check", c.Name)
	default:
		c.probe.log.Warn("check fails", "probe", c.probe.name, "check", c.Name, "err", err)
	}
	c.failing = msg
}
