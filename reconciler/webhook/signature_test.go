package webhook

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks reference vector, used by the specification's own
// libraries' tests.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = "1614265330"
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestVerifySignatureMatchesTheStandardWebhooksVector(t *testing.T) {
	key, err := ParseSigningSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(1614265330, 0)
	tests := []struct {
		name       string
		body       string
		signatures string
		now        time.Time
		want       error
	}{
		{"the reference signature verifies", vectorBody, vectorSignature, at, nil},
		{"it verifies among other entries", vectorBody, "v1a,AAAA v1,bm9wZQ== " + vectorSignature, at, nil},
		{"extra spaces between entries are fine", vectorBody, "  v1,bm9wZQ==   " + vectorSignature + " ", at, nil},
		{"one byte more of body breaks it", vectorBody + " ", vectorSignature, at, errSignature},
		{"5 minutes later it still verifies", vectorBody, vectorSignature, at.Add(5 * time.Minute), nil},
		{"5 minutes and a second later it has expired", vectorBody, vectorSignature, at.Add(5*time.Minute + time.Second), errExpired},
		{"5 minutes and a second earlier it is from the future", vectorBody, vectorSignature, at.Add(-5*time.Minute - time.Second), errExpired},
		{"an entry without a version is skipped", vectorBody, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", at, errSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifySignature(key, vectorID, vectorTimestamp, tt.signatures, []byte(tt.body), tt.now)
			if !errors.Is(err, tt.want) {
				t.Errorf("verifySignature = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("a huge timestamp is expired, not an overflow", func(t *testing.T) {
		err := verifySignature(key, vectorID, "9223372036854775807", vectorSignature, []byte(vectorBody), at)
		if !errors.Is(err, errExpired) {
			t.Errorf("verifySignature = %v, want %v", err, errExpired)
		}
	})
}

func TestParseSigningSecret(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantLen int // 0: an error
	}{
		{"a whsec_ secret decodes", vectorSecret, 24},
		{"a trailing newline is ignored", vectorSecret + "\n", 24},
		{"the prefix may be left out", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 24},
		{"unpadded base64 decodes", "whsec_YWJj", 3},
		{"unpadded base64 of a length needing padding decodes", "whsec_YWI", 2},
		{"not base64 is an error", "whsec_not base64!", 0},
		{"an empty secret is an error", "whsec_", 0},
		{"nothing is an error", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParseSigningSecret(tt.in)
			if tt.wantLen == 0 {
				if err == nil {
					t.Fatalf("ParseSigningSecret(%q) succeeded", tt.in)
				}
				if len(tt.in) > len("whsec_") && strings.Contains(err.Error(), tt.in[len("whsec_"):]) {
					t.Errorf("error %q quotes the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(key) != tt.wantLen {
				t.Errorf("key of %d bytes, want %d", len(key), tt.wantLen)
			}
		})
	}
}
