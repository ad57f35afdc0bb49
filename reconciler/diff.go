package reconciler

import (
	"cmp"
	"slices"

	"github.com/whalemountain/wm/reconciler/docker"
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
	Spec docker.Spec
}

// Live is one managed container as an engine reports it.
type Live struct {
	Host string
	docker.Container
}

// Action is one step of a plan.
type Action struct {
	Kind ActionKind
	Host string
	Name string       // the container's full name
	Spec *docker.Spec // what is wanted; nil for a removal
	Live *Live        // what is there; nil for a creation
}

// Plan is what one pass would change, in the order it applies it.
type Plan struct {
	Actions []Action
	// Unchanged counts the containers that already match.
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

// Diff pairs the desired containers of one repo with the live ones of the
// same repo by their wm.yaml name (the labels WhaleMountain set, not the
// engine name, so a container made under an older naming scheme pairs with
// its successor), and says what to do with each. It does no I/O.
//
// A container whose spec hash label differs from the desired spec's hash
// is recreated; one whose hash matches is only started or stopped when
// its running state differs; a live container nothing declares any more
// is removed. Callers pass only containers labelled as the repo's own.
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
			p.Actions = append(p.Actions, Action{Kind: ActionRemove, Host: l.Host, Name: l.Name, Live: l})
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
			p.Actions = append(p.Actions, Action{Kind: ActionCreate, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec})
		case l.Labels[docker.LabelSpecHash] != d.Spec.Hash() || l.Host != d.Host || l.Name != d.Spec.Name:
			p.Actions = append(p.Actions, Action{Kind: ActionRecreate, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec, Live: l})
		case d.Spec.Running && !l.Running:
			p.Actions = append(p.Actions, Action{Kind: ActionStart, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec, Live: l})
		case !d.Spec.Running && l.Running:
			p.Actions = append(p.Actions, Action{Kind: ActionStop, Host: d.Host, Name: d.Spec.Name, Spec: &d.Spec, Live: l})
		default:
			p.Unchanged++
		}
	}
	for _, l := range byName {
		p.Actions = append(p.Actions, Action{Kind: ActionRemove, Host: l.Host, Name: l.Name, Live: l})
	}
	slices.SortFunc(p.Actions, func(a, b Action) int {
		return cmp.Or(cmp.Compare(actionOrder[a.Kind], actionOrder[b.Kind]), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Host, b.Host))
	})
	return p
}
