package core

// Reason is a CamelCase word for machines saying why a repo is in its
// condition. Reasons are a public contract: GitLab commit statuses, the
// history, metrics and `wm status` carry them, so they are constants here
// and nowhere else, and one never changes its meaning.
type Reason string

// Reasons of a pass that ended well (Ready's reason).
const (
	// Applied: everything declared runs and is healthy.
	Applied Reason = "Applied"
	// NotHealthy: applied, but a container or pod is not (yet) healthy.
	NotHealthy Reason = "NotHealthy"
	// Expired: the repo's expiry date is past: its containers are stopped.
	Expired Reason = "Expired"
	// PruneHeld: applied, but removals past the prune limit wait for an
	// admin.
	PruneHeld Reason = "PruneHeld"
	// Done is the reason of Reconciling and Stalled once a pass ended
	// well.
	Done Reason = "Done"
)

// Reasons of a pass that must wait for something outside the repo.
const (
	WaitingForImage        Reason = "WaitingForImage"        // CI has not pushed the commit's image yet
	ImageNotFound          Reason = "ImageNotFound"          // the image is on no host nor in the registry
	ImagePullFailed        Reason = "ImagePullFailed"        // a host could not pull the image
	SharedImageNotBuilt    Reason = "SharedImageNotBuilt"    // the shared repo has no applied image yet
	SourceUnreachable      Reason = "SourceUnreachable"      // the git server did not answer
	RevisionNotVisible     Reason = "RevisionNotVisible"     // the webhook's commit is not fetchable yet
	RegistryUnreachable    Reason = "RegistryUnreachable"    // the registry did not answer
	ImageSourceUnreachable Reason = "ImageSourceUnreachable" // a SIF's image could not be fetched
	HostUnreachable        Reason = "HostUnreachable"        // a Docker host the repo needs did not answer
	ClusterUnreachable     Reason = "ClusterUnreachable"     // the Kubernetes API did not answer
	QuotaNotReady          Reason = "QuotaNotReady"          // a new namespace's quota is not counted yet
	NoFreePort             Reason = "NoFreePort"             // the host port range is used up
	NoCapacity             Reason = "NoCapacity"             // no host has room (GPUs) for a container
	BackendUnreachable     Reason = "BackendUnreachable"     // an error of kind fault.Unreachable
	NotReady               Reason = "NotReady"               // an error of kind fault.NotReady
)

// Reasons of a pass that needs the student (or an admin) to change
// something: the revision is not tried again until then.
const (
	NoWmYaml              Reason = "NoWmYaml"              // the repo has no wm.yaml
	BranchNotFound        Reason = "BranchNotFound"        // the configured branch does not exist
	RepoNotAccessible     Reason = "RepoNotAccessible"     // the repo cannot be read with the credentials given
	ValidationFailed      Reason = "ValidationFailed"      // wm.yaml is invalid
	InvalidLimits         Reason = "InvalidLimits"         // limits or defaults do not make sense together
	InvalidImage          Reason = "InvalidImage"          // an image reference does not parse
	ImageNotAllowed       Reason = "ImageNotAllowed"       // the image is outside the allowed registries
	ImageNotYours         Reason = "ImageNotYours"         // the image is another owner's, not shared
	ImageNotShared        Reason = "ImageNotShared"        // shared/<owner>/<repo> names a repo that does not share
	ImageAmbiguous        Reason = "ImageAmbiguous"        // shared/<owner>/<repo> matches several repos
	NameTaken             Reason = "NameTaken"             // another repo of the owner uses the name
	NameConflict          Reason = "NameConflict"          // an unmanaged object holds the name on a host
	NamespaceNotOurs      Reason = "NamespaceNotOurs"      // the owner's namespace was not made by this instance
	QuotaExceeded         Reason = "QuotaExceeded"         // the owner's quota would be exceeded
	ArtifactQuotaExceeded Reason = "ArtifactQuotaExceeded" // the owner's SIFs would exceed their space
	PodRefused            Reason = "PodRefused"            // admission refused a pod (quota, Pod Security)
	SIFTooLarge           Reason = "SIFTooLarge"           // an image is too large to become a SIF
	SIFBuildFailed        Reason = "SIFBuildFailed"        // a SIF could not be built from the image
	SIFBuilderBroken      Reason = "SIFBuilderBroken"      // the SIF builder is misconfigured (admins)
	NoSIFBuilder          Reason = "NoSIFBuilder"          // wm.yaml asks for SIFs; the server builds none
	NoRegistry            Reason = "NoRegistry"            // wm.yaml needs the registry; none is configured
	NoKubernetes          Reason = "NoKubernetes"          // wm.yaml asks for pods; no cluster is configured
	Refused               Reason = "Refused"               // an error of kind fault.Refused
	TooLarge              Reason = "TooLarge"              // an error of kind fault.TooLarge
	Invalid               Reason = "Invalid"               // an error of kind fault.Invalid
)

// Reasons of a pass that failed for a passing cause, retried with backoff.
const (
	Interrupted    Reason = "Interrupted"    // the pass's deadline passed, or the server shut down
	TransientError Reason = "TransientError" // an error of no known kind
)
