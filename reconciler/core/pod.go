package core

// PodSpec is one wm.yaml pod, with every choice made: the desired side of
// a Kubernetes pod.
type PodSpec struct {
	// Owner, Repo and Name are the student, the repo key and the pod's
	// name in wm.yaml (also its name in the owner's namespace).
	Owner, Repo, Name string
	// Image is a fully resolved reference.
	Image string
	// Entrypoint and Command replace the image's ENTRYPOINT and CMD when
	// set.
	Entrypoint, Command []string
	// Env is set on top of the image's environment.
	Env map[string]string
	// Workdir replaces the image's WORKDIR when set.
	Workdir string
	// GPUs, CPUs and MemoryBytes are the pod's limits (and requests).
	GPUs        int
	CPUs        float64
	MemoryBytes int64
	// Restart is the restart policy: Never or OnFailure.
	Restart string
}

// Pod is one pod WhaleMountain manages, as the cluster reports it: the
// observed side of a PodSpec, with what the owner's quota counts.
type Pod struct {
	// Repo and Name are the repo that asked for it and its name.
	Repo, Name string
	// Phase is the pod's phase: Pending, Running, Succeeded or Failed.
	Phase string
	// Hash is the pod's applied hash (Cluster.PodHash of what made it).
	Hash string
	// GPUs, CPUs and MemoryBytes are its limits.
	GPUs        int
	CPUs        float64
	MemoryBytes int64
}

// PodStatus is what a student sees of one pod.
type PodStatus struct {
	Name string `json:"name"`
	// Phase is Pending, Running, Succeeded, Failed, or Refused (the
	// cluster would not admit it).
	Phase   string `json:"phase"`
	Message string `json:"message,omitempty"`
}
