package dashboard

import "testing"

func TestALoginReturnsOnlyToAPathOfThisSite(t *testing.T) {
	for _, c := range []struct{ name, next, want string }{
		{"a path of the site is kept", "/repos/students/alice/web", "/repos/students/alice/web"},
		{"another site is refused", "https://evil.example/", "/"},
		{"a scheme-relative URL is refused", "//evil.example/x", "/"},
		{"a backslash trick is refused", "/\\evil.example", "/"},
		{"a header injection is refused", "/x\r\nSet-Cookie: a=b", "/"},
		{"nothing is the overview", "", "/"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := localPath(c.next); got != c.want {
				t.Errorf("localPath(%q) = %q, want %q", c.next, got, c.want)
			}
		})
	}
}

func TestASealedCookieOpensOnlyUnchangedAndUnderItsOwnName(t *testing.T) {
	s, err := newSealer([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.seal(sessionCookie, session{Token: "glpat-x", CSRF: "c"})
	if err != nil {
		t.Fatal(err)
	}
	var out session
	if err := s.open(sessionCookie, v, &out); err != nil || out.Token != "glpat-x" {
		t.Fatalf("open = %+v, %v", out, err)
	}
	flipped := []byte(v)
	flipped[len(flipped)/2] ^= 1
	other, _ := newSealer([]byte("another key, 32 bytes long......"))
	for _, c := range []struct {
		name string
		open func() error
	}{
		{"a changed value is refused", func() error { return s.open(sessionCookie, string(flipped), &out) }},
		{"the value under another cookie's name is refused", func() error { return s.open(loginCookie, v, &out) }},
		{"another key does not open it", func() error { return other.open(sessionCookie, v, &out) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.open() == nil {
				t.Error("opened")
			}
		})
	}
}
