package reconciler

import (
	"cmp"
	"slices"

	"github.com/whalemountain/wm/reconciler/core"
)

// Resource is the kind of thing an action changes. One plan covers every
// kind with the same verbs: create, recreate, start, stop, remove.
type Resource string

// The kinds of resource a repo declares.
const (
	Container Resource = "container"
	Pod       Resource = "pod"
	SIF       Resource = "sif"
)

// ActionKind is what a plan does to one container.
type ActionKind string

// The kinds of action, in the order a plan applies them: what is new or
// changed first, removals last, so a failure part-way leaves the old
// things in place rather than nothing.
const (
	ActionCreate   ActionKind = "create"
	ActionRecreate ActionKind = "recreate"
	ActionStart    ActionKind = "start"
	ActionStop     ActionKind = "stop"
	ActionRemove   ActionKind = "remove"
)

var actionOrder = map[ActionKind]int{ActionCreate: 0, ActionRecreate: 1, ActionStart: 2, ActionStop: 3, ActionRemove: 4}

// Desired is one container a repo declares, placed on a host.
type Desired struct {
	Host string
	Spec core.ContainerSpec
}

// Live is one managed container as an engine reports it.
type Live struct {
	Host string
	core.Container
}

// Action is one step of a plan.
type Action struct {
	Kind     ActionKind
	Resource Resource
	// Host is the Docker host of a container; "" for pods and SIFs.
	Host string
	// Name is a container's full name, a pod's or a SIF's name.
	Name string
	Spec *core.ContainerSpec // a container as it is wanted; nil for a removal
	Live *Live               // a container as it is; nil for a creation
	// Pod is a pod as it is wanted (nil for a removal), LivePod as it is.
	Pod     *core.PodSpec
	LivePod *core.Pod
	// Image is the image a SIF is built from (empty for a removal).
	Image string
}

// Where says where an action happens, for people: a container's host,
// "kubernetes" for a pod, "artifacts" for a SIF.
func (a Action) Where() string {
	switch a.Resource {
	case Pod:
		return "kubernetes"
	case SIF:
		return "artifacts"
	}
	return a.Host
}

// Plan is what one pass would change, in the order it applies it.
type Plan struct {
	Actions []Action
	// Unchanged counts the resources (of every kind) that already match.
	Unchanged int
}

// Count returns how many actions of kind k the plan has.
func (p Plan) Count(k ActionKind) int {
	n := 0
	for _, a := range p.Actions {
		if a.Kind == k {
			n++
		}
	}
	return n
}

// Of returns the plan's actions on resources of kind r, in order.
func (p Plan) Of(r Resource) []Action {
	var out []Action
	for _, a := range p.Actions {
		if a.Resource == r {
			out = append(out, a)
		}
	}
	return out
}

// Merge adds q's actions and unchanged count to p, keeping the order in
// which a plan applies: creations first, removals last.
func (p Plan) Merge(q Plan) Plan {
	p.Actions = append(slices.Clone(p.Actions), q.Actions...)
	p.Unchanged += q.Unchanged
	sortActions(p.Actions)
	return p
}

var resourceOrder = map[Resource]int{Container: 0, Pod: 1, SIF: 2}

func sortActions(actions []Action) {
	slices.SortStableFunc(actions, func(a, b Action) int {
		return cmp.Or(cmp.Compare(actionOrder[a.Kind], actionOrder[b.Kind]), cmp.Compare(resourceOrder[a.Resource], resourceOrder[b.Resource]),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Host, b.Host))
	})
}

// Diff pairs the desired containers of one repo with the live ones of the
// same repo by their wm.yaml name (the labels WhaleMountain set, not the
// engine name, so a container made under an older naming scheme pairs with
// its successor), and says what to do with each. It does no I/O.
//
// A container whose spec hash label differs from the desired spec's hash
// is recreated; one whose hash matches is only started or stopped when
// its running state differs; a live container nothing declares any more
// is removed. A GPU container that is to run but holds no GPU devices
// (resolve gives it its own only at its creation) is recreated too.
// Callers pass only containers labelled as the repo's own.
func Diff(desired []Desired, live []Live) Plan {
	var p Plan
	byName := make(map[string]*Live, len(live))
	for i := range live {
		l := &live[i]
		key, ok := identity(l.Container)
		if !ok {
			key = "\x00" + l.Name // set aside: pairs with nothing
		}
		if _, dup := byName[key]; dup {
			// The same container on a second host, or under both names:
			// only one can be the declared container, the other goes.
			p.Actions = append(p.Actions, Action{Kind: ActionRemove, Resource: Container, Host: l.Host, Name: l.Name, Live: l})
			continue
		}
		byName[key] = l
	}
	for i := range desired {
		d := &desired[i]
		l, ok := byName[d.Spec.LocalName]
		delete(byName, d.Spec.LocalName)
		switch {
		case !ok:
			p.Actions = append(p.Actions, Action{Kind: ActionCreate, Resource: Container, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec})
		case l.SpecHash != d.Spec.Hash() || l.Host != d.Host || l.Name != d.Spec.Name,
			d.Spec.Running && d.Spec.GPUs > 0 && len(d.Spec.GPUDevices) == 0:
			// A GPU container to run without devices of its own yet is
			// made anew, to be given its own: started as it is, it would
			// get the host's first GPUs.
			p.Actions = append(p.Actions, Action{Kind: ActionRecreate, Resource: Container, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec, Live: l})
		case d.Spec.Running && !l.Running:
			p.Actions = append(p.Actions, Action{Kind: ActionStart, Resource: Container, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec, Live: l})
		case !d.Spec.Running && l.Running:
			p.Actions = append(p.Actions, Action{Kind: ActionStop, Resource: Container, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec, Live: l})
		default:
			p.Unchanged++
		}
	}
	for _, l := range byName {
		p.Actions = append(p.Actions, Action{Kind: ActionRemove, Resource: Container, Host: l.Host, Name: l.Name, Live: l})
	}
	sortActions(p.Actions)
	return p
}

// DiffPods pairs the pods one repo declares with its live pods by name,
// as Diff does for containers: a pod whose applied hash (hash of the
// desired pod) differs is recreated (pods are immutable), one nothing
// declares any more is removed. Callers pass only the repo's own pods.
func DiffPods(desired []core.PodSpec, hash func(core.PodSpec) string, live []core.Pod) Plan {
	var p Plan
	byName := make(map[string]*core.Pod, len(live))
	for i := range live {
		byName[live[i].Name] = &live[i]
	}
	for i := range desired {
		d := &desired[i]
		l, ok := byName[d.Name]
		delete(byName, d.Name)
		switch {
		case !ok:
			p.Actions = append(p.Actions, Action{Kind: ActionCreate, Resource: Pod, Name: d.Name, Pod: d})
		case l.Hash != hash(*d):
			p.Actions = append(p.Actions, Action{Kind: ActionRecreate, Resource: Pod, Name: d.Name, Pod: d, LivePod: l})
		default:
			p.Unchanged++
		}
	}
	for _, l := range byName {
		p.Actions = append(p.Actions, Action{Kind: ActionRemove, Resource: Pod, Name: l.Name, LivePod: l})
	}
	sortActions(p.Actions)
	return p
}

// DiffSIFs pairs the SIFs one repo declares (name → image reference) with
// those its last pass built: a new name is created, a changed image
// rebuilt (a build whose image digest did not change is then a cache hit),
// a name no longer declared removed (its file goes after the grace
// period).
func DiffSIFs(desired map[string]string, built []core.SIFStatus) Plan {
	var p Plan
	byName := make(map[string]core.SIFStatus, len(built))
	for _, b := range built {
		byName[b.Name] = b
	}
	for name, ref := range desired {
		b, ok := byName[name]
		delete(byName, name)
		switch {
		case !ok:
			p.Actions = append(p.Actions, Action{Kind: ActionCreate, Resource: SIF, Name: name, Image: ref})
		case b.Image != ref:
			p.Actions = append(p.Actions, Action{Kind: ActionRecreate, Resource: SIF, Name: name, Image: ref})
		default:
			p.Unchanged++
		}
	}
	for name := range byName {
		p.Actions = append(p.Actions, Action{Kind: ActionRemove, Resource: SIF, Name: name})
	}
	sortActions(p.Actions)
	return p
}
