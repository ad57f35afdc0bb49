package access

import (
	"errors"
	"slices"
	"testing"

	"github.com/whalemountain/wm/reconciler/fault"
)

func TestTarInAPodIsAskedForThePathUnderItsBaseName(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"a file is named by its base name", "/data/out.txt", []string{"tar", "cf", "-", "-C", "/data/", "out.txt"}},
		{"a folder with a trailing slash is named without it", "/data/results/", []string{"tar", "cf", "-", "-C", "/data/", "results"}},
		{"a folder at the root is named by its name", "/tmp", []string{"tar", "cf", "-", "-C", "/", "tmp"}},
		{"the root is its content", "/", []string{"tar", "cf", "-", "-C", "/", "."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tarCreate(tc.path); !slices.Equal(got, tc.want) {
				t.Errorf("tarCreate(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestHowTarEndedInAPodIsToldApart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   int
		err    error
		stderr string
		want   error
	}{
		{"busybox's missing path is not found", 1, nil, "tar: /no/such: No such file or directory\n", errNoPath},
		{"busybox's missing folder to unpack into is not found", 1, nil, "tar: can't change directory to '/no/such': No such file or directory\n", errNoPath},
		{"GNU tar's missing path is not found", 2, nil, "tar: /no/such: Cannot stat: No such file or directory\ntar: Exiting with failure status due to previous errors\n", errNoPath},
		{"an image without tar has no tar", -1, errors.New(`OCI runtime exec failed: exec failed: unable to start container process: exec: "tar": executable file not found in $PATH: unknown`), "", errNoTar},
		{"a folder tar may not write is tar failing", 1, nil, "tar: can't open 'x': Permission denied\n", fault.Invalid},
		{"a silent failure is tar failing, with its exit code", 2, nil, "", fault.Invalid},
		{"a broken stream is the cluster not answering", -1, errors.New("connection reset by peer"), "", fault.Unreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := classifyTar(tc.code, tc.err, tc.stderr)
			if !errors.Is(got, tc.want) {
				t.Errorf("classifyTar(%d, %v, %q) = %v, want %v", tc.code, tc.err, tc.stderr, got, tc.want)
			}
			if tc.want != errNoPath && errors.Is(got, fault.NotFound) {
				t.Errorf("classifyTar(%d, %v, %q) = %v: not found, which it is not", tc.code, tc.err, tc.stderr, got)
			}
		})
	}
}

func TestOnlyTimeStampWarningsLeaveACopyInSuccessful(t *testing.T) {
	for _, tc := range []struct {
		name, said string
		want       bool
	}{
		{"nothing said is no warning", "", true},
		{"GNU tar's old time stamp is a warning", "tar: a.txt: implausibly old time stamp 1754-08-30 22:43:41", true},
		{"GNU tar's future time stamp is a warning", "tar: a.txt: time stamp 2100-01-01 00:00:00 is 2366841600 s in the future", true},
		{"a missing folder is a failure", "tar: can't change directory to '/no': No such file or directory", false},
		{"a failure after a warning is a failure", "tar: a.txt: implausibly old time stamp 1754-08-30\ntar: b.txt: Cannot open: Permission denied", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := onlyWarnings(tc.said); got != tc.want {
				t.Errorf("onlyWarnings(%q) = %v, want %v", tc.said, got, tc.want)
			}
		})
	}
}
