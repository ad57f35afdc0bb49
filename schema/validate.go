package schema

import (
	"cmp"
	_ "crypto/sha256" // registers sha256 for image references pinned by digest
	"fmt"
	"io"
	"maps"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/distribution/reference"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// reporter receives one validation problem for a field path; onKey says
// the problem is the name (the map key) rather than the value.
type reporter func(path string, onKey bool, format string, args ...any)

// locate runs a validation and places each problem it reports in the file.
func locate(file string, p *positions, validate func(reporter)) Errors {
	var errs Errors
	validate(func(fieldPath string, onKey bool, format string, args ...any) {
		at := p.at(fieldPath, onKey)
		errs = append(errs, newError(file, at.line, at.col, fieldPath, fmt.Sprintf(format, args...)))
	})
	return errs
}

// parseInto is the one reading sequence of every file: strict decode,
// defaults, validation, all problems placed in the file and returned
// together as Errors.
func parseInto(name string, r io.Reader, out any, defaults func(), validate func(reporter)) error {
	_, err := parsePlaced(name, r, out, defaults, validate)
	return err
}

// parsePlaced is parseInto that also returns where each field of the file
// is, for checks made after parsing.
func parsePlaced(name string, r io.Reader, out any, defaults func(), validate func(reporter)) (*positions, error) {
	p, errs := decodeStrict(name, r, out)
	for _, e := range errs {
		if e.Path == "" {
			return nil, errs // the file as a whole is wrong: rules would only add noise
		}
	}
	defaults()
	return p, capErrors(name, merge(errs, locate(name, p, validate))).orNil()
}

// maxErrors is the most problems reported for one file: a student fixes the
// first ones first, and a GitLab note or a terminal is not flooded.
const maxErrors = 50

// capErrors keeps the first maxErrors-1 problems and says how many more
// there are.
func capErrors(file string, errs Errors) Errors {
	if len(errs) <= maxErrors {
		return errs
	}
	more := len(errs) - (maxErrors - 1)
	return append(errs[:maxErrors-1:maxErrors-1], newError(file, 0, 0, "", fmt.Sprintf("%d more problems not shown", more)))
}

// merge joins decode and validation problems in file order. A validation
// problem on or below a path that already failed to decode is dropped: it
// would only repeat the first one about a value that was never read.
func merge(decoded, validated Errors) Errors {
	out := decoded
	for _, e := range validated {
		if !slices.ContainsFunc(decoded, func(d *Error) bool { return within(e.Path, d.Path) }) {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return out
}

// within reports whether path is base or lies below it.
func within(path, base string) bool {
	rest, ok := strings.CutPrefix(path, base)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

// Validate checks a File that was built in code rather than parsed. Its
// errors carry field paths but no positions.
func (f *File) Validate() error {
	return locate("wm.yaml", &positions{}, f.validate).orNil()
}

// validate checks every rule of wm.yaml version 1.
func (f *File) validate(report reporter) {
	switch f.Version {
	case Version:
	case 0:
		report("version", false, "is required: start the file with \"version: %d\"", Version)
	default:
		report("version", false, "%d is not supported: this wm understands version %d", f.Version, Version)
	}
	if f.Image != nil {
		checkLength(report, "image.description", f.Image.Description, MaxDescriptionLength)
	}
	checkCount(report, "containers", len(f.Containers), MaxContainers)
	checkCount(report, "pods", len(f.Pods), MaxPods)
	checkCount(report, "singularity", len(f.Singularity), MaxSIFs)
	for _, name := range sortedKeys(f.Containers) {
		f.Containers[name].validate(report, joinPath("containers", name), name)
	}
	for _, name := range sortedKeys(f.Pods) {
		f.Pods[name].validate(report, joinPath("pods", name), name)
	}
	for _, name := range sortedKeys(f.Singularity) {
		p := joinPath("singularity", name)
		checkName(report, p, name)
		checkImage(report, p+".image", f.Singularity[name].Image)
	}
	if f.Expires != "" {
		if _, err := time.Parse(time.DateOnly, f.Expires); err != nil {
			report("expires", false, "%s is not a date (YYYY-MM-DD)", quote(f.Expires))
		} else if f.Expires < MinExpires || f.Expires > MaxExpires {
			// Dates in this form compare as strings.
			report("expires", false, "%s is not between %s and %s", quote(f.Expires), MinExpires, MaxExpires)
		}
	}
}

func (c Container) validate(report reporter, p, name string) {
	checkName(report, p, name)
	checkImage(report, p+".image", c.Image)
	checkArgs(report, p+".entrypoint", c.Entrypoint)
	checkArgs(report, p+".command", c.Command)
	checkEnv(report, p+".env", c.Env)
	checkAbsPath(report, p+".workdir", c.Workdir)
	checkResources(report, p, c.GPUs, c.CPUs, c.Memory)
	if c.ShmSize != "" {
		checkShm(report, p+".shmSize", c.ShmSize, c.Memory)
	}
	checkCount(report, p+".ports", len(c.Ports), MaxPortsPerContainer)
	checkCount(report, p+".volumes", len(c.Volumes), MaxVolumesPerContainer)
	seen := map[int]int{}
	for i, port := range c.Ports {
		ip := fmt.Sprintf("%s.ports[%d]", p, i)
		if port < 1 || port > 65535 {
			report(ip, false, "%d is not a port (1-65535)", port)
		} else if first, dup := seen[port]; dup {
			report(ip, false, "port %d is already listed as ports[%d]", port, first)
		} else {
			seen[port] = i
		}
	}
	mounts := map[string]string{}
	for _, vol := range sortedKeys(c.Volumes) {
		vp := joinPath(p+".volumes", vol)
		if msg := nameProblem(vol); msg != "" {
			report(vp, true, "%s is not a valid volume name: %s", quote(vol), msg)
		}
		target := c.Volumes[vol]
		if !checkAbsPath(report, vp, target) {
			continue
		}
		if target == "/" || isSystemPath(target) {
			report(vp, false, "cannot mount a volume on %s", quote(target))
		} else if other, dup := mounts[path.Clean(target)]; dup {
			report(vp, false, "%s is already the mount point of volume %s", quote(target), quote(other))
		} else {
			mounts[path.Clean(target)] = vol
		}
	}
	if !checkLength(report, p+".user", c.User, MaxUserLength) {
	} else if c.User != "" && !userPattern.MatchString(c.User) {
		report(p+".user", false, "%s is not a user: use \"uid\", \"uid:gid\" or a user name", quote(c.User))
	}
	if c.State != "" && c.State != StateRunning && c.State != StateStopped {
		report(p+".state", false, "%s is not a state: use %q or %q", quote(c.State), StateRunning, StateStopped)
	}
}

func (pod Pod) validate(report reporter, p, name string) {
	checkName(report, p, name)
	checkImage(report, p+".image", pod.Image)
	checkArgs(report, p+".entrypoint", pod.Entrypoint)
	checkArgs(report, p+".command", pod.Command)
	checkEnv(report, p+".env", pod.Env)
	checkAbsPath(report, p+".workdir", pod.Workdir)
	checkResources(report, p, pod.GPUs, pod.CPUs, pod.Memory)
	if pod.Restart != "" && pod.Restart != RestartNever && pod.Restart != RestartOnFailure {
		report(p+".restart", false, "%s is not a restart policy: use %q or %q", quote(pod.Restart), RestartNever, RestartOnFailure)
	}
}

var (
	envKeyPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userPattern   = regexp.MustCompile(`^([0-9]+|[a-z_][a-z0-9_-]*)(:([0-9]+|[a-z_][a-z0-9_-]*))?$`)
	// pathSegment is one segment of a GitLab project path, lower-cased as
	// image references require.
	pathSegment = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)
)

func checkCount(report reporter, p string, n, limit int) {
	if n > limit {
		report(p, true, "%d entries is more than the limit of %d", n, limit)
	}
}

// checkLength reports a string longer than limit characters; it returns
// whether the string is within it, so that other rules can skip a value
// that is already wrong.
func checkLength(report reporter, p, s string, limit int) bool {
	if n := utf8.RuneCountInString(s); n > limit {
		report(p, false, "is %d characters long, more than %d", n, limit)
		return false
	}
	return true
}

// checkArgs bounds a command or entrypoint.
func checkArgs(report reporter, p string, args []string) {
	checkCount(report, p, len(args), MaxArgs)
	for i, a := range args {
		checkLength(report, fmt.Sprintf("%s[%d]", p, i), a, MaxArgLength)
	}
}

// nameProblem says why a name cannot be used, or "" when it can: names end
// up in container names, volume names and Kubernetes object names.
func nameProblem(name string) string {
	if len(name) > MaxNameLength {
		return fmt.Sprintf("longer than %d characters", MaxNameLength)
	}
	if len(validation.IsDNS1123Label(name)) > 0 {
		return "use lower-case letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

func checkName(report reporter, p, name string) {
	if msg := nameProblem(name); msg != "" {
		report(p, true, "%s is not a valid name: %s", quote(name), msg)
	}
}

// checkImage accepts "self", "shared/<owner>/<repo>" and image references.
// Whether a reference is allowed by the registry policy is decided at
// reconcile time, where the policy is known.
func checkImage(report reporter, p, image string) {
	switch {
	case !checkLength(report, p, image, MaxImageLength):
	case image == "":
		report(p, false, "is required: use %q for the image CI builds from this repo, or an image reference", ImageSelf)
	case image == ImageSelf:
	case strings.HasPrefix(image, SharedImagePrefix):
		owner, repo, ok := strings.Cut(strings.TrimPrefix(image, SharedImagePrefix), "/")
		if !ok || nameProblem(owner) != "" || !validRepoPath(repo) {
			report(p, false, "%s is not a shared image: use \"shared/<owner>/<repo>\"", quote(image))
		}
	default:
		if _, err := reference.ParseNormalizedNamed(image); err != nil {
			report(p, false, "%s is not an image reference: %s", quote(image), referenceProblem(err))
		}
	}
}

// referenceProblem words a reference parsing error without the parts of
// the reference it repeats, which the message has already quoted.
func referenceProblem(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "invalid reference format: repository name ("):
		return "invalid reference format: repository name must be lowercase"
	case strings.HasPrefix(msg, "invalid repository name ("):
		return "invalid repository name: cannot specify 64-byte hexadecimal strings"
	case strings.HasPrefix(msg, "reference ") && strings.HasSuffix(msg, " has no name"):
		return "reference has no name"
	}
	return msg
}

func validRepoPath(repo string) bool {
	if repo == "" {
		return false
	}
	for _, seg := range strings.Split(repo, "/") {
		if !pathSegment.MatchString(seg) {
			return false
		}
	}
	return true
}

func checkEnv(report reporter, p string, env map[string]string) {
	checkCount(report, p, len(env), MaxEnv)
	for _, k := range sortedKeys(env) {
		kp := joinPath(p, k)
		if n := utf8.RuneCountInString(k); n > MaxEnvNameLength {
			report(kp, true, "is %d characters long, more than %d", n, MaxEnvNameLength)
		} else if !envKeyPattern.MatchString(k) {
			report(kp, true, "%s is not an environment variable name: use letters, digits and '_', not starting with a digit", quote(k))
		} else if why := RuntimeEnv(k); why != "" {
			report(kp, true, "%s", why)
		}
		checkLength(report, kp, env[k], MaxEnvValueLength)
	}
}

// runtimeEnv lists the environment variables that container runtimes read
// from a container's own environment to decide what the container gets:
// with one of them a student could give themselves devices on a host whose
// default runtime reads it. A name matches an entry when it equals it or,
// for an entry ending in '_', starts with it; case is ignored.
var runtimeEnv = []struct{ name, why string }{
	// NVIDIA Container Toolkit: NVIDIA_VISIBLE_DEVICES,
	// NVIDIA_DRIVER_CAPABILITIES, NVIDIA_REQUIRE_*, NVIDIA_DISABLE_REQUIRE,
	// NVIDIA_MIG_CONFIG_DEVICES, NVIDIA_MIG_MONITOR_DEVICES,
	// NVIDIA_IMEX_CHANNELS, NVIDIA_GDS, NVIDIA_MOFED, ... and whatever it
	// reads next: the whole prefix is the toolkit's.
	{"NVIDIA_", "is read by the NVIDIA container runtime, which would give the container GPUs or driver features it was not given: ask for GPUs with gpus"},
	// AMD Container Toolkit (amd-container-runtime).
	{"AMD_VISIBLE_DEVICES", "is read by the AMD container runtime, which would give the container GPUs it was not given: ask for GPUs with gpus"},
	// Intel Gaudi (habana-container-runtime): HABANA_VISIBLE_DEVICES,
	// HABANA_VISIBLE_MODULES.
	{"HABANA_VISIBLE_", "is read by the Habana container runtime, which would give the container accelerators it was not given"},
	// Huawei Ascend (ascend-docker-runtime).
	{"ASCEND_VISIBLE_DEVICES", "is read by the Ascend container runtime, which would give the container accelerators it was not given"},
	{"ASCEND_RUNTIME_", "is read by the Ascend container runtime, which would give the container accelerators or mounts it was not given"},
}

// RuntimeEnv says why an environment variable name cannot be set by a
// student, because a container runtime reads it to decide which devices a
// container gets, or returns "" for a name that steers nothing. Variables
// read only inside the container (CUDA_VISIBLE_DEVICES,
// HIP_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES) only narrow what it was
// given and are allowed. SINGULARITYENV_* and APPTAINERENV_* are read by
// the singularity and apptainer commands from the environment of whoever
// runs them, never from a container's: they are allowed too.
//
// An image can set these variables in its own ENV, where no rule of
// wm.yaml reaches: the reconciler must set them itself on every container
// and pod (for example NVIDIA_VISIBLE_DEVICES=void without GPUs).
func RuntimeEnv(name string) string {
	upper := strings.ToUpper(name)
	for _, e := range runtimeEnv {
		if upper == e.name || (strings.HasSuffix(e.name, "_") && strings.HasPrefix(upper, e.name)) {
			return e.why
		}
	}
	return ""
}

// checkAbsPath reports a non-empty path that is not absolute and clean.
func checkAbsPath(report reporter, p, value string) bool {
	if value == "" {
		return true
	}
	if !checkLength(report, p, value, MaxPathLength) {
		return false
	}
	if !path.IsAbs(value) || strings.Contains(value, "..") {
		report(p, false, "%s is not an absolute path without \"..\"", quote(value))
		return false
	}
	return true
}

// isSystemPath reports whether a volume would shadow what the container
// runtime itself provides.
func isSystemPath(p string) bool {
	p = path.Clean(p)
	for _, sys := range []string{"/proc", "/sys", "/dev"} {
		if p == sys || strings.HasPrefix(p, sys+"/") {
			return true
		}
	}
	return false
}

func checkResources(report reporter, p string, gpus int, cpus *float64, memory string) {
	if gpus < 0 || gpus > MaxGPUs {
		report(p+".gpus", false, "%d is not a GPU count (0-%d)", gpus, MaxGPUs)
	}
	if cpus != nil {
		checkCPUs(report, p+".cpus", *cpus)
	}
	if memory != "" {
		checkMemory(report, p+".memory", memory)
	}
}

// checkCPUs reports a CPU count outside MinCPUs..MaxCPUs or finer than
// CPUDecimals, so that every valid one is a whole number of milli-CPUs
// and none rounds to 0, which engines read as "no limit".
func checkCPUs(report reporter, p string, cpus float64) {
	milli := cpus * 1000
	switch {
	case math.IsNaN(cpus) || math.IsInf(cpus, 0):
		report(p, false, "%v is not a CPU count: use a number such as 0.5 or 2", cpus)
	case cpus < MinCPUs:
		report(p, false, "%v is less than the least a workload can have, %v CPUs", cpus, MinCPUs)
	case cpus > MaxCPUs:
		report(p, false, "%v is more than the most a workload can have, %v CPUs", cpus, MaxCPUs)
	case math.Abs(milli-math.Round(milli)) > 1e-9:
		report(p, false, "%v has more than %d decimals: CPUs are counted in thousandths", cpus, CPUDecimals)
	}
}

// MilliCPUs converts a validated cpus value to whole milli-CPUs.
func MilliCPUs(cpus float64) int64 { return int64(math.Round(cpus * 1000)) }

// maxMemory is MaxMemoryBytes as a quantity, to compare quantities that
// would overflow an int64.
var maxMemory = resource.NewQuantity(MaxMemoryBytes, resource.BinarySI)

// shmPattern is what shmSize may be: a whole number of Mi or Gi, so that
// the JSON Schema can hold the same bounds as a pattern.
var shmPattern = regexp.MustCompile(`^([0-9]+)(Mi|Gi)$`)

// checkShm reports a shmSize that is not a whole number of Mi or Gi from
// MinShmBytes to MaxShmBytes, or that is more than the container's memory
// when wm.yaml sets it (a default memory is checked when the pass
// resolves it).
func checkShm(report reporter, p, shm, memory string) {
	m := shmPattern.FindStringSubmatch(shm)
	if m == nil {
		hint := ""
		switch {
		case isDigits(shm):
			hint = fmt.Sprintf(": it has no unit; did you mean %s?", quote(shm+"Mi"))
		case strings.HasSuffix(shm, "G") || strings.HasSuffix(shm, "M"):
			hint = fmt.Sprintf(": did you mean %s?", quote(shm+"i"))
		case strings.HasSuffix(shm, "m"):
			hint = fmt.Sprintf(": %s is thousandths of a byte; did you mean %s?", quote(shm), quote(strings.TrimSuffix(shm, "m")+"Mi"))
		}
		report(p, false, "%s is not a size in whole Mi or Gi, such as 256Mi or 1Gi%s", quote(shm), hint)
		return
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	mib := map[string]int64{"Mi": 1, "Gi": 1 << 10}[m[2]]
	switch {
	case err != nil || n > MaxShmBytes>>20:
		report(p, false, "%s is more than the most shared memory a container can have, 64Gi", quote(shm))
	case n*mib<<20 > MaxShmBytes:
		report(p, false, "%s is more than the most shared memory a container can have, 64Gi", quote(shm))
	case n*mib<<20 < MinShmBytes:
		report(p, false, "%s is less than 1Mi", quote(shm))
	default:
		if q, err := resource.ParseQuantity(memory); err == nil && memory != "" && n*mib<<20 > q.Value() {
			report(p, false, "%s is more than the container's memory, %s: /dev/shm counts against it", quote(shm), quote(memory))
		}
	}
}

// checkMemory reports a memory size that is not a Kubernetes quantity
// from MinMemory to MaxMemoryBytes bytes.
func checkMemory(report reporter, p, memory string) {
	q, err := resource.ParseQuantity(memory)
	switch {
	case err != nil:
		report(p, false, "%s is not a memory size: use a number and a unit such as 512Mi, 2Gi or 1G", quote(memory))
	case strings.HasSuffix(memory, "m"):
		report(p, false, "%s is in thousandths of a byte: did you mean %s?", quote(memory), quote(strings.TrimSuffix(memory, "m")+"Mi"))
	case q.Cmp(*maxMemory) > 0:
		report(p, false, "%s is more than the most memory a workload can have, %s", quote(memory), maxMemory)
	case q.Value() < MinMemory && isDigits(memory):
		// A bare number is bytes: 64 was meant as 64Mi.
		report(p, false, "%s has no unit, so it is %s bytes, less than the least memory a workload can have (6Mi): did you mean %s?", quote(memory), memory, quote(memory+"Mi"))
	case q.Value() < MinMemory:
		report(p, false, "%s is less than the least memory a workload can have, 6Mi", quote(memory))
	}
}

// isDigits reports whether s is a whole number written without a unit.
func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// sortedKeys returns a map's keys in order, so errors come in file order.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
