package sif

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The layout apptainer expects at the root of a container, as its
// docker:// builds write it. Apptainer 1.x reads env/*.sh and runscript
// itself; the action scripts are what older runtimes and `apptainer exec`
// of an old image use, kept small.
const (
	singularityDir = ".singularity.d"
	runscriptPath  = singularityDir + "/runscript"
	envScriptPath  = singularityDir + "/env/10-docker2singularity.sh"
	labelsPath     = singularityDir + "/labels.json"
)

// mountPoints are the folders Singularity mounts over; the image gets
// empty ones where it has none, since a read-only squashfs cannot grow
// them at run time.
var mountPoints = []struct {
	name string
	mode fs.FileMode
}{
	{"proc", 0o755}, {"sys", 0o755}, {"dev", 0o755}, {"tmp", 0o1777}, {"home", 0o755},
}

// bindFiles are the files Singularity binds over.
var bindFiles = []string{"etc/hosts", "etc/resolv.conf"}

// sourceEnv is how every action script starts: the env scripts, in order.
const sourceEnv = `for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
`

// actions are the scripts of .singularity.d/actions.
var actions = map[string]string{
	"exec": "#!/bin/sh\n" + sourceEnv + `exec "$@"
`,
	"run": "#!/bin/sh\n" + sourceEnv + `if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "No runscript in this container" >&2
exit 1
`,
	"shell": "#!/bin/sh\n" + sourceEnv + `if [ -n "${SINGULARITY_SHELL:-}" ] && [ -x "$SINGULARITY_SHELL" ]; then
    exec "$SINGULARITY_SHELL" "$@"
fi
exec /bin/sh "$@"
`,
	"start": "#!/bin/sh\n" + sourceEnv + `if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript "$@"
fi
`,
	"test": "#!/bin/sh\n" + sourceEnv + `if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
echo "No test script in this container" >&2
`,
}

// shellQuote quotes s for a POSIX shell: single quotes, each ' written as
// '\” — nothing inside is expanded.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shellWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}

// Runscript returns the /bin/sh runscript for an image's Entrypoint and
// Cmd, with Docker's rules: arguments to `apptainer run` replace Cmd and
// never Entrypoint; without Entrypoint, they are the whole command. Every
// word is quoted: nothing of the image's configuration is evaluated by the
// shell. Unlike `docker run`, the working folder stays the caller's (as
// with apptainer's own builds): WorkingDir is in oci-config.json only.
func Runscript(entrypoint, cmd []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("# Written by WhaleMountain from the image's Entrypoint and Cmd:\n")
	b.WriteString("# arguments replace Cmd, as with docker run.\n")
	b.WriteString("if [ \"$#\" -gt 0 ]; then\n")
	if len(entrypoint) > 0 {
		fmt.Fprintf(&b, "    exec %s \"$@\"\n", shellWords(entrypoint))
	} else {
		b.WriteString("    exec \"$@\"\n")
	}
	b.WriteString("fi\n")
	all := append(append([]string{}, entrypoint...), cmd...)
	if len(all) > 0 {
		fmt.Fprintf(&b, "exec %s\n", shellWords(all))
	} else {
		b.WriteString("echo \"This image has neither Entrypoint nor Cmd: give a command.\" >&2\n")
		b.WriteString("exit 1\n")
	}
	return b.String()
}

// shellName is what a POSIX shell accepts as a variable name.
var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// EnvScript returns env/10-docker2singularity.sh for an image's Env. PATH
// is set as the image has it; any other variable keeps a value the caller
// already gave it (apptainer's rule: the host's environment comes in
// unless --cleanenv). Values are quoted; names a shell cannot export are
// left out with a comment.
func EnvScript(env []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString("# Written by WhaleMountain from the image's Env.\n")
	for _, e := range env {
		k, v, hasValue := strings.Cut(e, "=")
		switch {
		case !shellName.MatchString(k):
			fmt.Fprintf(&b, "# left out %s: not a shell variable name\n", strconv.QuoteToASCII(k))
		case !hasValue:
			fmt.Fprintf(&b, "export %s\n", k)
		case k == "PATH":
			fmt.Fprintf(&b, "export PATH=%s\n", shellQuote(v))
		default:
			fmt.Fprintf(&b, "if [ -z \"${%s:-}\" ]; then export %s=%s; fi\n", k, k, shellQuote(v))
		}
	}
	return b.String()
}

// Labels returns labels.json: the image's labels and WhaleMountain's own.
// Only what the image's content decides goes in, so that a SIF is a
// function of the image and the builder alone.
func Labels(cfg *v1.ConfigFile, imageID, builder string) ([]byte, error) {
	labels := map[string]string{}
	for k, v := range cfg.Config.Labels {
		labels[k] = v
	}
	labels["org.label-schema.schema-version"] = "1.0"
	labels["org.label-schema.build-arch"] = archOf(cfg)
	labels["org.whalemountain.image.id"] = imageID
	labels["org.whalemountain.builder"] = builder
	return json.MarshalIndent(labels, "", "\t")
}

// layoutPaths are the paths layout writes, folders and files: an image's
// entry at one is left out of the stream (what the image has under a
// folder of them stays).
var layoutPaths = func() map[string]kind {
	m := map[string]kind{runscriptPath: kindFile, envScriptPath: kindFile, labelsPath: kindFile}
	for _, d := range layoutDirs {
		m[d] = kindDir
	}
	for name := range actions {
		m[singularityDir+"/actions/"+name] = kindFile
	}
	return m
}()

// layoutDirs are the folders of .singularity.d, parents first.
var layoutDirs = []string{singularityDir, singularityDir + "/actions", singularityDir + "/env", singularityDir + "/libs"}

// layout writes what apptainer expects into the stream, after the image's
// entries: the .singularity.d folder and its files (in place of whatever
// the image had at those paths), and the mount points and bind files the
// image lacks.
func (s *streamer) layout(cfg *v1.ConfigFile, imageID, builder string) error {
	labels, err := Labels(cfg, imageID, builder)
	if err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	for _, d := range layoutDirs {
		if err := s.dir(d, 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		runscriptPath: Runscript(cfg.Config.Entrypoint, cfg.Config.Cmd),
		envScriptPath: EnvScript(cfg.Config.Env),
	}
	for name, body := range actions {
		files[singularityDir+"/actions/"+name] = body
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := s.file(name, []byte(files[name]), 0o755); err != nil {
			return err
		}
	}
	if err := s.file(labelsPath, append(labels, '\n'), 0o644); err != nil {
		return err
	}

	for _, mp := range mountPoints {
		if _, ok := s.paths[mp.name]; !ok {
			if err := s.dir(mp.name, mp.mode); err != nil {
				return err
			}
		}
	}
	for _, name := range bindFiles {
		if _, ok := s.paths[name]; ok {
			continue // there, whatever it is (a symlink to resolv.conf is common)
		}
		if err := s.parents(name); errors.Is(err, errNotDir) {
			s.notes.add("no /%s: %v", name, err)
			continue
		} else if err != nil {
			return err
		}
		if err := s.file(name, nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// archOf is the image's architecture in SIF's (Go's) terms; the host's
// when the image does not say.
func archOf(cfg *v1.ConfigFile) string {
	if cfg.Architecture != "" {
		return cfg.Architecture
	}
	return hostArch
}
