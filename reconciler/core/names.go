package core

// DefaultInstance is the instance of a server config that names none, and
// of every object labelled before instances existed.
const DefaultInstance = "wm"

// NameSeparator joins an owner and a name from wm.yaml into the name of a
// container or volume. Both are DNS labels ([a-z0-9-]), which never hold
// '_', so "<owner>_<name>" splits one way only: student "alice" declaring
// "x-web" gets "alice_x-web", student "alice-x" declaring "web" gets
// "alice-x_web", and no account can take another's names.
const NameSeparator = "_"

// ObjectName is the engine name of an owner's container or volume called
// local in wm.yaml.
func ObjectName(owner, local string) string { return owner + NameSeparator + local }

// LegacyObjectName is the name WhaleMountain gave before NameSeparator:
// "<owner>-<name>", which could collide across accounts. It is only ever
// used to find what an owner already has (labelled with their account), so
// that their data moves to the new names without loss.
func LegacyObjectName(owner, local string) string { return owner + "-" + local }

// NetworkName is the name of owner's bridge network under instance:
// "wm-<owner>" for DefaultInstance (or ""), as before instances existed,
// and "<instance>_<owner>" for any other. Instances and owners are DNS
// labels, which never hold '_', so another instance's names never meet
// the default one's, nor each other's ("wm-a" and "b" against "wm" and
// "a-b").
func NetworkName(instance, owner string) string {
	if instance == "" || instance == DefaultInstance {
		return DefaultInstance + "-" + owner
	}
	return instance + NameSeparator + owner
}
