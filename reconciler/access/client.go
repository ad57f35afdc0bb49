package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"
)

// Client calls the access API of one wm serve, with one token.
type Client struct {
	// BaseURL is the server's URL, such as https://wm.example.edu.
	BaseURL string
	// Token is sent in the Authorization: Bearer header, never in a URL.
	Token string
	// HTTP is the client to use; nil is http.DefaultClient.
	HTTP *http.Client
}

// APIError is an answer of the server that is not 2xx.
type APIError struct {
	// Status is the HTTP status; Message the server's explanation.
	Status  int
	Message string
}

// Error says the status and the server's message.
func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s (%d)", e.Message, e.Status)
}

// StatusOf returns the HTTP status of an *APIError in err's chain, 0
// when there is none.
func StatusOf(err error) int {
	var e *APIError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// url builds the URL of path (under the base) with q.
func (c *Client) url(path string, q url.Values) string {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// Do sends a request to path with the token and returns the response
// when it is 2xx; otherwise an *APIError. The caller closes the body.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}

// readError reads the *APIError of a response.
func readError(resp *http.Response) error {
	var e Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	return &APIError{Status: resp.StatusCode, Message: e.Error}
}

// getJSON decodes the answer to GET path into v.
func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	resp, err := c.Do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("read the answer to %s: %w", path, err)
	}
	return nil
}

// WhoAmI returns the identity the server sees for the token.
func (c *Client) WhoAmI(ctx context.Context) (Identity, error) {
	var id Identity
	return id, c.getJSON(ctx, Prefix+"whoami", nil, &id)
}

// Repos lists the caller's repos.
func (c *Client) Repos(ctx context.Context) ([]Repo, error) {
	var out []Repo
	return out, c.getJSON(ctx, Prefix+"repos", nil, &out)
}

// Containers lists the caller's containers.
func (c *Client) Containers(ctx context.Context) ([]Container, error) {
	var out []Container
	return out, c.getJSON(ctx, Prefix+"containers", nil, &out)
}

// Pods lists the caller's pods.
func (c *Client) Pods(ctx context.Context) ([]Pod, error) {
	var out []Pod
	return out, c.getJSON(ctx, Prefix+"pods", nil, &out)
}

// SIFs lists the caller's SIFs.
func (c *Client) SIFs(ctx context.Context) ([]SIF, error) {
	var out []SIF
	return out, c.getJSON(ctx, Prefix+"sifs", nil, &out)
}

// containerPath is the API path of a container's endpoint.
func containerPath(name, what string) string {
	return Prefix + "containers/" + url.PathEscape(name) + "/" + what
}

// LogsRequest selects logs.
type LogsRequest struct {
	// Tail is how many lines from the end; 0 is all.
	Tail int
	// Since is a duration back from now ("10m") or an RFC 3339 time.
	Since string
	// Follow keeps the stream open for new lines.
	Follow bool
}

// query is o as the logs endpoints read it.
func (o LogsRequest) query() url.Values {
	q := url.Values{}
	if o.Tail > 0 {
		q.Set("tail", strconv.Itoa(o.Tail))
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Follow {
		q.Set("follow", "1")
	}
	return q
}

// Logs streams a container's logs. The caller closes the stream.
func (c *Client) Logs(ctx context.Context, name string, o LogsRequest) (io.ReadCloser, error) {
	resp, err := c.Do(ctx, http.MethodGet, containerPath(name, "logs"), o.query(), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// PodLogs streams a pod's logs. The caller closes the stream.
func (c *Client) PodLogs(ctx context.Context, name string, o LogsRequest) (io.ReadCloser, error) {
	resp, err := c.Do(ctx, http.MethodGet, podPath(name, "logs"), o.query(), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Kubeconfig asks for a short-lived credential for the caller's own
// Kubernetes namespace.
func (c *Client) Kubeconfig(ctx context.Context) (KubeCredential, error) {
	var out KubeCredential
	resp, err := c.Do(ctx, http.MethodPost, Prefix+"kubeconfig", nil, nil)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("read the credential: %w", err)
	}
	return out, nil
}

// Restart restarts a container.
func (c *Client) Restart(ctx context.Context, name string) error {
	resp, err := c.Do(ctx, http.MethodPost, containerPath(name, "restart"), nil, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// CopyFrom streams a tar archive of the file or folder at path in a
// container. The caller closes the stream.
func (c *Client) CopyFrom(ctx context.Context, name, path string) (io.ReadCloser, error) {
	resp, err := c.Do(ctx, http.MethodGet, containerPath(name, "archive"), url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// CopyTo unpacks a tar archive into the folder dir of a container.
func (c *Client) CopyTo(ctx context.Context, name, dir string, archive io.Reader) error {
	resp, err := c.Do(ctx, http.MethodPut, containerPath(name, "archive"), url.Values{"path": {dir}}, archive)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// podPath is the API path of a pod's endpoint.
func podPath(name, what string) string {
	return Prefix + "pods/" + url.PathEscape(name) + "/" + what
}

// PodCopyFrom streams a tar archive of the file or folder at path in a
// pod, as CopyFrom does from a container. The caller closes the stream.
func (c *Client) PodCopyFrom(ctx context.Context, name, path string) (io.ReadCloser, error) {
	resp, err := c.Do(ctx, http.MethodGet, podPath(name, "archive"), url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// PodCopyTo unpacks a tar archive into the folder dir of a pod, as CopyTo
// does into a container.
func (c *Client) PodCopyTo(ctx context.Context, name, dir string, archive io.Reader) error {
	resp, err := c.Do(ctx, http.MethodPut, podPath(name, "archive"), url.Values{"path": {dir}}, archive)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// ExecRequest is a command to run with Exec.
type ExecRequest struct {
	// Cmd is the command and its arguments.
	Cmd []string
	// TTY asks for a terminal of Rows × Cols (0: the default); Resize,
	// when not nil, sends its new sizes.
	TTY        bool
	Rows, Cols uint
	Resize     <-chan Resize
	// Stdin, when not nil, is sent as the command's input, then its end.
	Stdin io.Reader
	// Stdout and Stderr receive the output (with a TTY, all of it goes to
	// Stdout); nil discards it.
	Stdout, Stderr io.Writer
	// Header is added to the upgrade request (tests set Origin).
	Header http.Header
}

// Exec runs a command in a container and returns its exit code once it
// has ended and its output has been written.
func (c *Client) Exec(ctx context.Context, name string, x ExecRequest) (int, error) {
	return c.exec(ctx, containerPath(name, "exec"), name, x)
}

// PodExec runs a command in a pod, as Exec does in a container.
func (c *Client) PodExec(ctx context.Context, name string, x ExecRequest) (int, error) {
	return c.exec(ctx, podPath(name, "exec"), name, x)
}

// exec runs the exec protocol with the endpoint at path.
func (c *Client) exec(ctx context.Context, path, name string, x ExecRequest) (int, error) {
	q := url.Values{"cmd": x.Cmd}
	if x.TTY {
		q.Set("tty", "1")
		if x.Rows > 0 && x.Cols > 0 {
			q.Set("rows", strconv.FormatUint(uint64(x.Rows), 10))
			q.Set("cols", strconv.FormatUint(uint64(x.Cols), 10))
		}
	}
	if x.Stdin != nil {
		q.Set("stdin", "1")
	}
	h := http.Header{}
	for k, v := range x.Header {
		h[k] = v
	}
	h.Set("Authorization", "Bearer "+c.Token)
	u := c.url(path, q)
	u = "ws" + strings.TrimPrefix(u, "http")
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.http(), HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return -1, readError(resp)
		}
		return -1, fmt.Errorf("exec in %s: %w", name, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if x.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := x.Stdin.Read(buf)
				if n > 0 && conn.Write(ctx, websocket.MessageBinary, append([]byte{ChanStdin}, buf[:n]...)) != nil {
					return
				}
				if err != nil {
					_ = conn.Write(ctx, websocket.MessageBinary, []byte{ChanEOF})
					return
				}
			}
		}()
	}
	if x.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case rs := <-x.Resize:
					b, _ := json.Marshal(rs)
					if conn.Write(ctx, websocket.MessageBinary, append([]byte{ChanResize}, b...)) != nil {
						return
					}
				}
			}
		}()
	}
	out := func(w io.Writer, p []byte) {
		if w != nil {
			_, _ = w.Write(p)
		}
	}
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return -1, fmt.Errorf("exec in %s: the session ended without an exit code: %w", name, err)
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case ChanStdout:
			out(x.Stdout, msg[1:])
		case ChanStderr:
			out(x.Stderr, msg[1:])
		case ChanExit:
			var st ExitStatus
			if err := json.Unmarshal(msg[1:], &st); err != nil {
				return -1, fmt.Errorf("exec in %s: a bad exit status: %w", name, err)
			}
			_ = conn.Close(websocket.StatusNormalClosure, "")
			if st.Error != "" {
				return st.ExitCode, fmt.Errorf("exec in %s: %s", name, st.Error)
			}
			return st.ExitCode, nil
		}
	}
}

// Download GETs path (a SIF's URL) with the token, passing on the
// request's headers (Range, If-None-Match). The caller closes the body.
func (c *Client) Download(ctx context.Context, path string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(path, nil), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotModified {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}
