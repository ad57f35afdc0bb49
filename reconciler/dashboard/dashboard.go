package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/reconciler/webhook"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what a Dashboard needs.
type Config struct {
	// API is the access API's handler (access.Server.Handler) and
	// Artifacts its SIF download handler (access.Server.Artifacts): every
	// read and action of the dashboard is a call to them with the
	// session's token.
	API       http.Handler
	Artifacts http.Handler

	// GitLabURL is GitLab's base URL: its OAuth endpoints, and the links
	// to commits. ClientID and ClientSecret are the OAuth application's;
	// RedirectURL its callback (path schema.CallbackPath).
	GitLabURL    string
	ClientID     string
	ClientSecret string
	RedirectURL  string
	// HTTPClient, when set, is what GitLab's token endpoint is called
	// with.
	HTTPClient *http.Client

	// SessionKey seals the cookies (SessionKey makes one); Secure marks
	// them Secure (set it whenever the dashboard is reached over https);
	// SessionTTL is how long a login lasts (default 8h).
	SessionKey []byte
	Secure     bool
	SessionTTL time.Duration

	// Quota is each student's quota, drawn as bars of their use.
	Quota Quota
	// Hosts are the Docker hosts and their GPU devices, for the admins'
	// GPU map.
	Hosts []Host
	// MaxUpload bounds one file upload (default 1 GiB, the API's copy
	// limit).
	MaxUpload int64
	// History, when set, returns a repo's last passes (the state store's
	// History); it is asked only about repos the API listed to the
	// caller.
	History func(key string) ([]core.Pass, error)
	// GPUHours, when set, returns each owner's GPU-hours per day (the
	// state store's GPUHours), charted on the admins' page.
	GPUHours func(now time.Time) (map[string][]store.GPUDay, error)
	// Deliveries, when set, returns the webhook's last deliveries
	// (webhook.Handler.Recent), listed on the admins' page.
	Deliveries func() []webhook.Delivery

	// Log receives logins and failures; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Quota is a student's quota over all their repos; a zero field draws no
// bar.
type Quota struct {
	Containers, Pods, GPUs int
	CPUs                   float64
	MemoryBytes            int64
}

// Host is a Docker host as the GPU map shows it.
type Host struct {
	Name string
	// GPUs are its GPU devices (schema.DockerHost.Devices).
	GPUs []string
}

// Dashboard is the web dashboard. It is safe for concurrent use.
type Dashboard struct {
	cfg   Config
	log   *slog.Logger
	seal  *sealer
	oauth *oauth2.Config
	pages map[string]*template.Template
}

// New returns a Dashboard for cfg.
func New(cfg Config) (*Dashboard, error) {
	if cfg.API == nil || cfg.Artifacts == nil {
		return nil, errors.New("dashboard: the access API and SIF handlers are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = 1 << 30
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.GitLabURL = strings.TrimRight(cfg.GitLabURL, "/")
	seal, err := newSealer(cfg.SessionKey)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dashboard{cfg: cfg, log: log, seal: seal, pages: map[string]*template.Template{},
		oauth: &oauth2.Config{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: cfg.RedirectURL, Scopes: []string{"read_user"},
			Endpoint: oauth2.Endpoint{AuthURL: cfg.GitLabURL + "/oauth/authorize", TokenURL: cfg.GitLabURL + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}}
	for _, p := range []string{"landing", "home", "repo", "workload", "admin", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: template %s: %w", p, err)
		}
		d.pages[p] = t
	}
	return d, nil
}

// Handler serves the dashboard: mount it at the root of the public
// listener, after the API, the hooks and the downloads.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheable(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", d.login)
	mux.HandleFunc("GET /auth/callback", d.callback)
	mux.HandleFunc("POST /logout", d.form(d.logout))
	mux.HandleFunc("GET /{$}", d.home)
	mux.HandleFunc("GET /repos/{key...}", d.page(d.repo))
	mux.HandleFunc("GET /admin", d.page(d.admin))
	for _, kind := range []string{"containers", "pods"} {
		mux.HandleFunc("GET /"+kind+"/{name}", d.page(d.workload))
		mux.HandleFunc("GET /"+kind+"/{name}/logs", d.page(d.logs))
		mux.HandleFunc("GET /"+kind+"/{name}/exec", d.page(d.exec))
		mux.HandleFunc("GET /"+kind+"/{name}/download", d.page(d.download))
		mux.HandleFunc("POST /"+kind+"/{name}/upload", d.form(d.upload))
	}
	mux.HandleFunc("POST /containers/{name}/restart", d.form(d.action("restart")))
	mux.HandleFunc("POST /containers/{name}/wake", d.form(d.action("wake")))
	mux.HandleFunc("GET /sifs/{owner}/{file}", d.page(d.sif))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.fail(w, r, nil, http.StatusNotFound, "There is no such page.")
	})
	return securityHeaders(mux)
}

// securityHeaders sets what every answer carries: no framing, scripts
// and connections from this origin only, no sniffing, no referrer
// outside it.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// cacheable lets browsers keep the static files an hour.
func cacheable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// visit is one authenticated request: the session and who the API says
// its token is.
type visit struct {
	sess session
	id   access.Identity
}

// authenticate reads the session of r and asks the API who its token is,
// refreshing the token when it has expired. ok is false when there is no
// valid session; err when the API could not say (GitLab down: 503).
func (d *Dashboard) authenticate(w http.ResponseWriter, r *http.Request) (v *visit, ok bool, err error) {
	var s session
	now := d.cfg.Now()
	if !d.readCookie(r, sessionCookie, &s) || !now.Before(s.Expires) {
		return nil, false, nil
	}
	if !s.TokenExpiry.IsZero() && !now.Before(s.TokenExpiry) {
		if s.Refresh == "" {
			return nil, false, nil
		}
		tok, err := d.oauth.TokenSource(d.oauthContext(r.Context()), &oauth2.Token{RefreshToken: s.Refresh}).Token()
		if err != nil {
			d.log.Info("dashboard token refresh failed", "err", err)
			return nil, false, nil
		}
		s.Token, s.Refresh, s.TokenExpiry = tok.AccessToken, tok.RefreshToken, tok.Expiry
		if err := d.setCookie(w, sessionCookie, s, s.Expires.Sub(now)); err != nil {
			return nil, false, err
		}
	}
	var id access.Identity
	if err := d.getJSON(r, s.Token, access.Prefix+"whoami", nil, &id); err != nil {
		if statusOf(err) == http.StatusUnauthorized {
			return nil, false, nil
		}
		return nil, false, err
	}
	return &visit{sess: s, id: id}, true, nil
}

// page wraps a handler that needs a login: without one, the browser is
// sent to log in and brought back.
func (d *Dashboard) page(h func(w http.ResponseWriter, r *http.Request, v *visit)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, ok, err := d.authenticate(w, r)
		switch {
		case err != nil:
			d.fail(w, r, nil, statusOf(err), "Your login could not be checked: "+err.Error())
		case !ok:
			d.clearCookie(w, sessionCookie)
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		default:
			h(w, r, v)
		}
	}
}

// form wraps a handler of a POSTed form: it needs a login and the
// session's CSRF token in the form's csrf field, and a same-origin
// Origin when the browser sends one; otherwise 403.
func (d *Dashboard) form(h func(w http.ResponseWriter, r *http.Request, v *visit)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, ok, err := d.authenticate(w, r)
		switch {
		case err != nil:
			d.fail(w, r, nil, statusOf(err), "Your login could not be checked: "+err.Error())
			return
		case !ok:
			d.fail(w, r, nil, http.StatusForbidden, "You are not logged in, or your login has expired: log in again.")
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || !strings.EqualFold(u.Host, r.Host) {
				d.fail(w, r, v, http.StatusForbidden, "This form was sent from another site.")
				return
			}
		}
		// The token is read from the URL-encoded body or, for uploads,
		// from the multipart form's first part (formToken).
		if !sameToken(formToken(r, d.cfg.MaxUpload), v.sess.CSRF) {
			d.log.Info("dashboard form refused: no valid CSRF token", "account", v.id.Account, "path", r.URL.Path)
			d.fail(w, r, v, http.StatusForbidden, "This form has no valid token: reload the page and send it again.")
			return
		}
		h(w, r, v)
	}
}

// formToken reads the csrf field of a POSTed form.
func formToken(r *http.Request, maxUpload int64) string {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		r.Body = http.MaxBytesReader(nil, r.Body, maxUpload+1<<20)
		if err := r.ParseMultipartForm(32 << 20); err != nil {
			return ""
		}
		return r.FormValue("csrf")
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	return r.PostFormValue("csrf")
}

// render answers a page.
func (d *Dashboard) render(w http.ResponseWriter, status int, page string, v *visit, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	if v != nil {
		data["Me"] = v.id
		data["CSRF"] = v.sess.CSRF
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := d.pages[page].Execute(w, data); err != nil {
		d.log.Error("dashboard page failed", "page", page, "err", err)
	}
}

// fail answers an error page.
func (d *Dashboard) fail(w http.ResponseWriter, _ *http.Request, v *visit, status int, msg string) {
	d.render(w, status, "error", v, map[string]any{"Status": status, "StatusText": http.StatusText(status), "Message": msg})
}

// apiFail answers the error page of an API answer.
func (d *Dashboard) apiFail(w http.ResponseWriter, r *http.Request, v *visit, err error) {
	status := statusOf(err)
	var e *apiError
	msg := "Something went wrong."
	if errors.As(err, &e) {
		msg = e.msg
	}
	d.fail(w, r, v, status, msg)
}

// oauthContext carries the HTTP client for GitLab's token endpoint.
func (d *Dashboard) oauthContext(ctx context.Context) context.Context {
	if d.cfg.HTTPClient != nil {
		return context.WithValue(ctx, oauth2.HTTPClient, d.cfg.HTTPClient)
	}
	return ctx
}

// localPath is next when it is a path of this site, "/" otherwise, so a
// login never sends the browser elsewhere.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	return next
}

// repoPath is the dashboard's page of a repo: the URL commit statuses
// link to (sources.gitlab.dashboardURL + /repos/ + the path).
func repoPath(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "/repos/" + strings.Join(parts, "/")
}

// commitURL links a revision of a repo in GitLab.
func (d *Dashboard) commitURL(key, rev string) string {
	if rev == "" || d.cfg.GitLabURL == "" {
		return ""
	}
	return d.cfg.GitLabURL + "/" + key + "/-/commit/" + url.PathEscape(rev)
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"short": func(rev string) string {
		if len(rev) > 8 {
			return rev[:8]
		}
		return rev
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"bytes":      humanBytes,
	"repoPath":   repoPath,
	"pathEscape": url.PathEscape,
	"join":       strings.Join,
	"sortedPorts": func(m map[string]string) []string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return keys
	},
	"base": path.Base,
	"sub":  func(a, b int) int { return a - b },
}

// humanBytes writes n bytes in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
