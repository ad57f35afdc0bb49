package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers GitLab sends when a hook has a signing
// token.
const (
	headerWebhookID        = "Webhook-Id"
	headerWebhookTimestamp = "Webhook-Timestamp"
	headerWebhookSignature = "Webhook-Signature"
)

// SignatureTolerance is how far webhook-timestamp may lie from the
// handler's clock, either way, before a signed delivery is refused as a
// replay. It is the Standard Webhooks default.
const SignatureTolerance = 5 * time.Minute

// Why a signature is refused. None of them is told to the sender, which
// gets a plain 401; they exist for the tests.
var (
	errSignatureMissing = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	errTimestamp        = errors.New("webhook-timestamp is not a Unix time in seconds")
	errExpired          = errors.New("webhook-timestamp is too far from now")
	errSignature        = errors.New("no valid v1 signature")
)

// ParseSigningSecret decodes a Standard Webhooks signing secret as GitLab
// shows it, "whsec_" followed by base64, into the HMAC key Config wants.
// Surrounding white space (a secret file's last newline) is ignored; the
// error never quotes the secret.
func ParseSigningSecret(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "whsec_")
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("parse signing secret: not \"whsec_\" followed by base64")
	}
	if len(key) == 0 {
		return nil, errors.New("parse signing secret: empty")
	}
	return key, nil
}

// verifySignature checks a Standard Webhooks signature: webhook-signature
// holds space-separated "v1,<base64>" entries (several during a key
// rotation; other versions are skipped), one of which must be
// base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)), and
// webhook-timestamp must be within SignatureTolerance of now.
func verifySignature(key []byte, id, timestamp, signatures string, body []byte, now time.Time) error {
	if id == "" || timestamp == "" || signatures == "" {
		return errSignatureMissing
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errTimestamp
	}
	if d := now.Sub(time.Unix(sec, 0)); d > SignatureTolerance || d < -SignatureTolerance {
		return errExpired
	}
	want := sign(key, id, timestamp, body)
	for _, s := range strings.Fields(signatures) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return errSignature
}

// sign is the raw HMAC-SHA256 of a Standard Webhooks delivery.
func sign(key []byte, id, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, timestamp)
	mac.Write(body)
	return mac.Sum(nil)
}
