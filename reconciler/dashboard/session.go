package dashboard

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Cookie names. The session cookie holds a session, the login cookie the
// state and PKCE verifier of a login under way; both are encrypted and
// authenticated (AES-256-GCM), so the browser can neither read nor forge
// them.
const (
	sessionCookie = "wm_session"
	loginCookie   = "wm_login"
)

// session is what the session cookie holds.
type session struct {
	// Token is the student's GitLab OAuth access token, which every call
	// to the access API is made with; Refresh gets a new one once
	// TokenExpiry has passed.
	Token       string    `json:"t"`
	Refresh     string    `json:"r,omitempty"`
	TokenExpiry time.Time `json:"te"`
	// CSRF is the token every form of this session carries.
	CSRF string `json:"c"`
	// Expires ends the session whatever the tokens say.
	Expires time.Time `json:"e"`
}

// login is what the login cookie holds, from /login to the callback.
type login struct {
	State    string    `json:"s"`
	Verifier string    `json:"v"`
	Expires  time.Time `json:"e"`
}

// sealer encrypts and authenticates cookie values.
type sealer struct{ aead cipher.AEAD }

// newSealer derives the cookies' key from secret with HKDF-SHA256, so the
// same secret could key something else without the two meeting.
func newSealer(secret []byte) (*sealer, error) {
	if len(secret) < 16 {
		return nil, errors.New("the session secret is shorter than 16 bytes")
	}
	key, err := hkdf.Key(sha256.New, secret, nil, "whalemountain dashboard cookies v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive the cookie key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cookie cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cookie cipher: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal encrypts v for the cookie name (the name is authenticated too, so
// one cookie's value cannot stand in for another's).
func (s *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := s.aead.Seal(nonce, nonce, plain, []byte(name))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// open decrypts a cookie value sealed for name into v.
func (s *sealer) open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return errors.New("not a sealed value")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(name))
	if err != nil {
		return fmt.Errorf("open cookie %s: %w", name, err)
	}
	return json.Unmarshal(plain, v)
}

// randomToken is 32 random bytes, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sameToken compares two tokens in constant time; "" never matches.
func sameToken(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// SessionKeyName is the file in the state folder that holds the made
// session key.
const SessionKeyName = "dashboard-session.key"

// SessionKey returns the secret session cookies are sealed with: the
// contents of file when it is set, otherwise the key kept in stateDir,
// made (32 random bytes, mode 0600) the first time.
func SessionKey(file, stateDir string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read dashboard.sessionKeyFile: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) < 16 {
			return nil, fmt.Errorf("dashboard.sessionKeyFile %s: shorter than 16 bytes", file)
		}
		return b, nil
	}
	path := filepath.Join(stateDir, SessionKeyName)
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return b, nil
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		// Another replica made it first, or a short file is there: use
		// what is there if it will do.
		b, rerr := os.ReadFile(path)
		if rerr == nil && len(b) >= 32 {
			return b, nil
		}
		return nil, fmt.Errorf("the session key %s is shorter than 32 bytes: remove it to make a new one", path)
	}
	if err != nil {
		return nil, fmt.Errorf("make the session key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the session key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write the session key: %w", err)
	}
	return key, nil
}

// setCookie sets a sealed cookie for maxAge.
func (d *Dashboard) setCookie(w http.ResponseWriter, name string, v any, maxAge time.Duration) error {
	value, err := d.seal.seal(name, v)
	if err != nil {
		return fmt.Errorf("seal cookie %s: %w", name, err)
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()), HttpOnly: true,
		Secure: d.cfg.Secure, SameSite: http.SameSiteLaxMode})
	return nil
}

// clearCookie removes a cookie.
func (d *Dashboard) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: d.cfg.Secure, SameSite: http.SameSiteLaxMode})
}

// readCookie opens the sealed cookie name of r into v.
func (d *Dashboard) readCookie(r *http.Request, name string, v any) bool {
	c, err := r.Cookie(name)
	if err != nil {
		return false
	}
	return d.seal.open(name, c.Value, v) == nil
}
