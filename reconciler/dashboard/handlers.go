package dashboard

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"mime"
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

// loginLifetime bounds a login under way, from /login to the callback.
const loginLifetime = 10 * time.Minute

// login is GET /login?next=/path: it sends the browser to GitLab's
// authorize page with a new state and PKCE challenge, both kept in the
// sealed login cookie.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	l := login{State: randomToken(), Verifier: oauth2.GenerateVerifier(), Expires: d.cfg.Now().Add(loginLifetime)}
	next := localPath(r.URL.Query().Get("next"))
	if err := d.setCookie(w, loginCookie, struct {
		login
		Next string `json:"n"`
	}{l, next}, loginLifetime); err != nil {
		d.fail(w, r, nil, http.StatusInternalServerError, "The login could not start.")
		return
	}
	http.Redirect(w, r, d.oauth.AuthCodeURL(l.State, oauth2.S256ChallengeOption(l.Verifier)), http.StatusFound)
}

// callback is GET /auth/callback?code=...&state=...: the state must be
// the login cookie's; the code is exchanged with its verifier, the token
// checked with the API, and the session begins.
func (d *Dashboard) callback(w http.ResponseWriter, r *http.Request) {
	var l struct {
		login
		Next string `json:"n"`
	}
	q := r.URL.Query()
	ok := d.readCookie(r, loginCookie, &l)
	d.clearCookie(w, loginCookie)
	switch {
	case !ok || !d.cfg.Now().Before(l.Expires):
		d.fail(w, r, nil, http.StatusBadRequest, "This login is not one this browser started, or it took too long: log in again.")
		return
	case !sameToken(q.Get("state"), l.State):
		d.fail(w, r, nil, http.StatusBadRequest, "This login's state does not match the one this browser started: log in again.")
		return
	case q.Get("error") != "":
		d.fail(w, r, nil, http.StatusForbidden, "GitLab did not let you in: "+q.Get("error_description"))
		return
	}
	tok, err := d.oauth.Exchange(d.oauthContext(r.Context()), q.Get("code"), oauth2.VerifierOption(l.Verifier))
	if err != nil {
		d.log.Warn("dashboard login: the code was not exchanged", "err", err)
		d.fail(w, r, nil, http.StatusBadGateway, "GitLab did not give a token for this login: log in again.")
		return
	}
	var id access.Identity
	if err := d.getJSON(r, tok.AccessToken, access.Prefix+"whoami", nil, &id); err != nil {
		d.apiFail(w, r, nil, err)
		return
	}
	now := d.cfg.Now()
	s := session{Token: tok.AccessToken, Refresh: tok.RefreshToken, TokenExpiry: tok.Expiry, CSRF: randomToken(), Expires: now.Add(d.cfg.SessionTTL)}
	if err := d.setCookie(w, sessionCookie, s, d.cfg.SessionTTL); err != nil {
		d.fail(w, r, nil, http.StatusInternalServerError, "The session could not be kept.")
		return
	}
	d.log.Info("dashboard login", "account", id.Account, "admin", id.Admin)
	http.Redirect(w, r, localPath(l.Next), http.StatusSeeOther)
}

// logout is POST /logout: the session cookie goes.
func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request, v *visit) {
	d.clearCookie(w, sessionCookie)
	d.log.Info("dashboard logout", "account", v.id.Account)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// home is GET /: the landing page, or the student's own overview.
func (d *Dashboard) home(w http.ResponseWriter, r *http.Request) {
	v, ok, err := d.authenticate(w, r)
	switch {
	case err != nil:
		d.fail(w, r, nil, statusOf(err), "Your login could not be checked: "+err.Error())
		return
	case !ok:
		d.render(w, http.StatusOK, "landing", nil, nil)
		return
	}
	data := map[string]any{}
	var repos []access.Repo
	var containers []access.Container
	var pods []access.Pod
	var sifs []access.SIF
	for _, c := range []struct {
		path string
		into any
	}{{"repos", &repos}, {"containers", &containers}, {"pods", &pods}, {"sifs", &sifs}} {
		if err := d.getJSON(r, v.sess.Token, access.Prefix+c.path, nil, c.into); err != nil {
			d.apiFail(w, r, v, err)
			return
		}
	}
	data["Repos"] = d.repoViews(repos)
	data["Containers"], data["Pods"], data["SIFs"] = containers, pods, sifs
	data["Quota"] = d.bars(repos)
	d.render(w, http.StatusOK, "home", v, data)
}

// repoView is a repo as a page shows it.
type repoView struct {
	access.Repo
	Ready     *core.Condition
	CommitURL string
	Path      string
}

// repoViews adds to each repo its Ready condition and links.
func (d *Dashboard) repoViews(repos []access.Repo) []repoView {
	out := make([]repoView, 0, len(repos))
	for _, r := range repos {
		rv := repoView{Repo: r, CommitURL: d.commitURL(r.Key, r.AppliedRevision), Path: repoPath(r.Key)}
		for i := range r.Conditions {
			if r.Conditions[i].Type == core.Ready {
				rv.Ready = &r.Conditions[i]
			}
		}
		out = append(out, rv)
	}
	return out
}

// bar is one line of quota use.
type bar struct {
	Label     string
	Used, Max float64
	Text      string
	OverLimit bool
}

// bars draws the quota use of repos (one owner's).
func (d *Dashboard) bars(repos []access.Repo) []bar {
	var u core.Usage
	for _, r := range repos {
		u = u.Add(r.Usage)
	}
	q := d.cfg.Quota
	var out []bar
	add := func(label string, used, limit float64, text string) {
		if limit > 0 {
			out = append(out, bar{Label: label, Used: used, Max: limit, Text: text, OverLimit: used > limit})
		}
	}
	add("Containers", float64(u.Containers), float64(q.Containers), fmt.Sprintf("%d of %d", u.Containers, q.Containers))
	add("Pods", float64(u.Pods), float64(q.Pods), fmt.Sprintf("%d of %d", u.Pods, q.Pods))
	add("GPUs", float64(u.GPUs), float64(q.GPUs), fmt.Sprintf("%d of %d", u.GPUs, q.GPUs))
	add("CPUs", u.CPUs, q.CPUs, fmt.Sprintf("%g of %g", u.CPUs, q.CPUs))
	add("Memory", float64(u.MemoryBytes), float64(q.MemoryBytes), humanBytes(u.MemoryBytes)+" of "+humanBytes(q.MemoryBytes))
	return out
}

// everyone is the listing query of an admin's pages: all owners.
var everyone = url.Values{"owner": {"*"}}

// repo is GET /repos/{key...}: one repo, if the API lists it to the
// caller (their own; every repo to an admin): 403 otherwise, whether it
// exists or not.
func (d *Dashboard) repo(w http.ResponseWriter, r *http.Request, v *visit) {
	key := r.PathValue("key")
	var repos []access.Repo
	q := url.Values(nil)
	if v.id.Admin {
		q = everyone
	}
	if err := d.getJSON(r, v.sess.Token, access.Prefix+"repos", q, &repos); err != nil {
		d.apiFail(w, r, v, err)
		return
	}
	i := slices.IndexFunc(repos, func(x access.Repo) bool { return strings.EqualFold(x.Key, key) })
	if i < 0 {
		if v.id.Admin {
			d.fail(w, r, v, http.StatusNotFound, "There is no repo "+key+".")
		} else {
			d.fail(w, r, v, http.StatusForbidden, "Repo "+key+" is not one of yours.")
		}
		return
	}
	rp := repos[i]
	q = url.Values{"owner": {rp.Owner}}
	var containers []access.Container
	var pods []access.Pod
	var sifs []access.SIF
	for _, c := range []struct {
		path string
		into any
	}{{"containers", &containers}, {"pods", &pods}, {"sifs", &sifs}} {
		if err := d.getJSON(r, v.sess.Token, access.Prefix+c.path, q, c.into); err != nil {
			d.apiFail(w, r, v, err)
			return
		}
	}
	containers = slices.DeleteFunc(containers, func(c access.Container) bool { return c.Repo != rp.Key })
	pods = slices.DeleteFunc(pods, func(p access.Pod) bool { return p.Repo != rp.Key })
	sifs = slices.DeleteFunc(sifs, func(s access.SIF) bool { return s.Repo != rp.Key })
	var passes []core.Pass
	if d.cfg.History != nil {
		h, err := d.cfg.History(rp.Key)
		if err != nil {
			d.log.Warn("dashboard: history not read", "repo", rp.Key, "err", err)
		}
		slices.Reverse(h)
		passes = h[:min(len(h), 10)]
	}
	views := d.repoViews([]access.Repo{rp})
	d.render(w, http.StatusOK, "repo", v, map[string]any{"Repo": views[0], "Containers": containers, "Pods": pods, "SIFs": sifs,
		"Passes": passes, "CommitURL": func(rev string) string { return d.commitURL(rp.Key, rev) }})
}

// workloadOf finds the container or pod a path names among those the API
// lists to the caller. Not found is 404 for a name of the caller's own
// and 403 for another owner's full name (alice_web asked by bob), as the
// API answers.
func (d *Dashboard) workloadOf(w http.ResponseWriter, r *http.Request, v *visit) (kind string, c *access.Container, p *access.Pod, ok bool) {
	kind = strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
	name := r.PathValue("name")
	q := url.Values(nil)
	if v.id.Admin {
		q = everyone
	}
	missing := func() {
		if owner, _, full := strings.Cut(name, "_"); full && owner != v.id.Account && !v.id.Admin {
			d.fail(w, r, v, http.StatusForbidden, name+" is not yours.")
			return
		}
		d.fail(w, r, v, http.StatusNotFound, "You have no "+strings.TrimSuffix(kind, "s")+" "+name+".")
	}
	if kind == "containers" {
		var list []access.Container
		if err := d.getJSON(r, v.sess.Token, access.Prefix+"containers", q, &list); err != nil {
			d.apiFail(w, r, v, err)
			return kind, nil, nil, false
		}
		for i := range list {
			if list[i].Name == name || (list[i].LocalName == name && list[i].Owner == v.id.Account) {
				return kind, &list[i], nil, true
			}
		}
		missing()
		return kind, nil, nil, false
	}
	var list []access.Pod
	if err := d.getJSON(r, v.sess.Token, access.Prefix+"pods", q, &list); err != nil {
		d.apiFail(w, r, v, err)
		return kind, nil, nil, false
	}
	for i := range list {
		if list[i].Name == name || core.ObjectName(list[i].Owner, list[i].Name) == name {
			return kind, nil, &list[i], true
		}
	}
	missing()
	return kind, nil, nil, false
}

// workload is GET /containers/{name} and /pods/{name}: its state, live
// logs, a shell, files in and out, restart and wake.
func (d *Dashboard) workload(w http.ResponseWriter, r *http.Request, v *visit) {
	kind, c, p, ok := d.workloadOf(w, r, v)
	if !ok {
		return
	}
	data := map[string]any{"Kind": kind, "Name": r.PathValue("name"), "Container": c, "Pod": p, "Done": r.URL.Query().Get("done")}
	if c != nil {
		data["Running"] = c.State == "running"
		data["RepoPath"] = repoPath(c.Repo)
	} else {
		data["Running"] = p.Phase == "Running"
		data["RepoPath"] = repoPath(p.Repo)
	}
	d.render(w, http.StatusOK, "workload", v, data)
}

// apiPath is the access API's path of what a dashboard path names.
func apiPath(r *http.Request, what string) string {
	kind := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
	return access.Prefix + kind + "/" + url.PathEscape(r.PathValue("name")) + "/" + what
}

// logs is GET /containers/{name}/logs: the last 200 lines and what
// follows, as server-sent events (one a line, then an "end" event).
func (d *Dashboard) logs(w http.ResponseWriter, r *http.Request, v *visit) {
	sw := &sseWriter{w: w, header: http.Header{}}
	req := apiRequest(r.Context(), r, v.sess.Token, http.MethodGet, apiPath(r, "logs"), url.Values{"tail": {"200"}, "follow": {"1"}}, nil)
	d.cfg.API.ServeHTTP(sw, req)
	if sw.status == http.StatusOK {
		if len(sw.partial) > 0 {
			writeEvent(w, "", string(sw.partial))
		}
		writeEvent(w, "end", "the log stream ended")
		sw.Flush()
	}
}

// exec is GET /containers/{name}/exec: the API's exec WebSocket, with
// the session's token. The API checks the Origin (this site's only).
func (d *Dashboard) exec(w http.ResponseWriter, r *http.Request, v *visit) {
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: apiPath(r, "exec"), RawQuery: r.URL.RawQuery}
	req.RequestURI = ""
	req.Header.Del("Cookie")
	req.Header.Set("Authorization", "Bearer "+v.sess.Token)
	d.cfg.API.ServeHTTP(w, req)
}

// action is POST /containers/{name}/restart or /wake.
func (d *Dashboard) action(what string) func(w http.ResponseWriter, r *http.Request, v *visit) {
	return func(w http.ResponseWriter, r *http.Request, v *visit) {
		if err := d.callJSON(r, v.sess.Token, http.MethodPost, apiPath(r, what), nil, nil, nil); err != nil {
			d.apiFail(w, r, v, err)
			return
		}
		http.Redirect(w, r, "/containers/"+url.PathEscape(r.PathValue("name"))+"?done="+what, http.StatusSeeOther)
	}
}

// upload is POST /containers/{name}/upload (multipart: csrf, dir, file):
// the file is put in the folder dir as a one-file archive through the
// API, which vets it.
func (d *Dashboard) upload(w http.ResponseWriter, r *http.Request, v *visit) {
	dir := r.FormValue("dir")
	f, fh, err := r.FormFile("file")
	if err != nil {
		d.fail(w, r, v, http.StatusBadRequest, "Choose a file to upload.")
		return
	}
	defer f.Close()
	name := path.Base(strings.ReplaceAll(fh.Filename, "\\", "/"))
	if name == "." || name == "/" || name == ".." {
		d.fail(w, r, v, http.StatusBadRequest, "The file has no usable name.")
		return
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: fh.Size, ModTime: d.cfg.Now(), Typeflag: tar.TypeReg})
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	err = d.callJSON(r, v.sess.Token, http.MethodPut, apiPath(r, "archive"), url.Values{"path": {dir}}, pr, nil)
	pr.Close()
	if err != nil {
		d.apiFail(w, r, v, err)
		return
	}
	kind := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
	http.Redirect(w, r, "/"+kind+"/"+url.PathEscape(r.PathValue("name"))+"?done=uploaded", http.StatusSeeOther)
}

// download is GET /containers/{name}/download?path=/file: a file as
// itself, a folder as a tar archive, through the API's copy out.
func (d *Dashboard) download(w http.ResponseWriter, r *http.Request, v *visit) {
	p := r.URL.Query().Get("path")
	status, _, body := d.stream(r, v.sess.Token, http.MethodGet, apiPath(r, "archive"), url.Values{"path": {p}}, nil)
	defer body.Close()
	if status != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(body, 64<<10))
		d.fail(w, r, v, status, errorMessage(b))
		return
	}
	tr := tar.NewReader(body)
	first, err := tr.Next()
	if err != nil {
		d.fail(w, r, v, http.StatusBadGateway, "The copy out did not give an archive.")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if first.Typeflag == tar.TypeReg {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(first.Name)}))
		_, err = io.Copy(w, tr)
	} else {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(path.Clean(p)) + ".tar"}))
		err = retar(w, first, tr)
	}
	if err == nil {
		// Read the archive's end (its zero blocks and padding), so the
		// API's copy ends as done, not as broken by the reader.
		_, err = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	}
	if err != nil {
		// Cut off (the copy limit, or the container went): break the
		// connection so the browser sees a failed download.
		panic(http.ErrAbortHandler)
	}
}

// retar writes first and the rest of tr as a tar archive to w.
func retar(w io.Writer, first *tar.Header, tr *tar.Reader) error {
	tw := tar.NewWriter(w)
	for h := first; ; {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
		var err error
		if h, err = tr.Next(); errors.Is(err, io.EOF) {
			return tw.Close()
		} else if err != nil {
			return err
		}
	}
}

// sif is GET /sifs/{owner}/{file}: the SIF download of the API, with the
// session's token (the owner's own or an admin's; 403 otherwise).
func (d *Dashboard) sif(w http.ResponseWriter, r *http.Request, v *visit) {
	req := r.Clone(r.Context())
	req.URL = &url.URL{Path: "/artifacts/" + r.PathValue("owner") + "/" + r.PathValue("file")}
	req.RequestURI = ""
	req.Header.Del("Cookie")
	req.Header.Set("Authorization", "Bearer "+v.sess.Token)
	d.cfg.Artifacts.ServeHTTP(w, req)
}

// student is one row of the admins' table of students.
type student struct {
	Account    string
	Repos      int
	Failing    int
	Containers int
	Usage      core.Usage
}

// gpuSlot is one GPU of a host and what holds it.
type gpuSlot struct {
	Device    string
	Container string
	Owner     string
}

// admin is GET /admin: every student and their use, GPU-hours per student
// over the last days (a chart and its table), the hosts' GPUs and who
// holds each, the held prunes, the failing repos, the webhook's last
// deliveries and the audit log; 403 to students.
func (d *Dashboard) admin(w http.ResponseWriter, r *http.Request, v *visit) {
	if !v.id.Admin {
		d.fail(w, r, v, http.StatusForbidden, "These pages are for admins.")
		return
	}
	var repos []access.Repo
	var containers []access.Container
	var audit []store.AuditEntry
	for _, c := range []struct {
		path string
		q    url.Values
		into any
	}{{"repos", everyone, &repos}, {"containers", everyone, &containers}, {"audit", nil, &audit}} {
		if err := d.getJSON(r, v.sess.Token, access.Prefix+c.path, c.q, c.into); err != nil {
			d.apiFail(w, r, v, err)
			return
		}
	}
	byOwner := map[string]*student{}
	var owners []string
	row := func(o string) *student {
		if byOwner[o] == nil {
			byOwner[o] = &student{Account: o}
			owners = append(owners, o)
		}
		return byOwner[o]
	}
	var failing, held []repoView
	for _, rv := range d.repoViews(repos) {
		s := row(rv.Owner)
		s.Repos++
		s.Usage = s.Usage.Add(rv.Usage)
		if rv.Ready != nil && !rv.Ready.Status {
			s.Failing++
			failing = append(failing, rv)
		}
		if rv.Ready != nil && rv.Ready.Reason == core.PruneHeld {
			held = append(held, rv)
		}
	}
	for _, c := range containers {
		row(c.Owner).Containers++
	}
	slices.Sort(owners)
	students := make([]student, 0, len(owners))
	for _, o := range owners {
		students = append(students, *byOwner[o])
	}
	type hostMap struct {
		Name  string
		GPUs  []gpuSlot
		Other []gpuSlot // held GPUs of devices the config does not list
	}
	var hosts []hostMap
	for _, h := range d.cfg.Hosts {
		hm := hostMap{Name: h.Name}
		held := map[string]access.Container{}
		for _, c := range containers {
			if c.Host == h.Name {
				for _, g := range c.GPUs {
					held[g] = c
				}
			}
		}
		for _, g := range h.GPUs {
			slot := gpuSlot{Device: g}
			if c, ok := held[g]; ok {
				slot.Container, slot.Owner = c.Name, c.Owner
				delete(held, g)
			}
			hm.GPUs = append(hm.GPUs, slot)
		}
		for g, c := range held {
			hm.Other = append(hm.Other, gpuSlot{Device: g, Container: c.Name, Owner: c.Owner})
		}
		hosts = append(hosts, hm)
	}
	if len(audit) > 200 {
		audit = audit[len(audit)-200:]
	}
	slices.Reverse(audit)
	var chart *gpuChart
	if d.cfg.GPUHours != nil {
		now := d.cfg.Now()
		hours, err := d.cfg.GPUHours(now)
		if err != nil {
			d.log.Warn("dashboard: GPU-hours not read", "err", err)
		}
		chart = newGPUChart(hours, now)
	}
	var deliveries []webhook.Delivery
	if d.cfg.Deliveries != nil {
		deliveries = d.cfg.Deliveries()
	}
	d.render(w, http.StatusOK, "admin", v, map[string]any{"Students": students, "Hosts": hosts, "Failing": failing, "Audit": audit,
		"Containers": containers, "Chart": chart, "Held": held, "Deliveries": deliveries, "HasHook": d.cfg.Deliveries != nil})
}
