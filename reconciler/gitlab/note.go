package gitlab

import (
	"fmt"
	"strings"
	"unicode"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/schema"
)

// PlanMarker starts every plan note; it is how the note is found again to
// be edited in place. GitLab renders it as nothing.
const PlanMarker = "<!-- whalemountain-plan -->"

var actionIcons = map[reconciler.ActionKind]string{
	reconciler.ActionCreate: "➕", reconciler.ActionRecreate: "🔁", reconciler.ActionStart: "▶️",
	reconciler.ActionStop: "⏹️", reconciler.ActionRemove: "➖",
}

// RenderPlan writes the Markdown of a merge request's plan note: what
// merging would create, recreate, start, stop and remove, the quota it
// would use, or every problem that keeps the commit from being rolled out.
func RenderPlan(res reconciler.Result, err error, branch string, quota schema.Quota) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n### WhaleMountain plan for %s\n\n", PlanMarker, code(short(res.Revision)))
	if err != nil {
		outcome, reason := reconciler.Classify(err)
		fmt.Fprintf(&b, "**This commit cannot be rolled out** (%s, %s):\n\n%s", outcome, reason, codeBlock(err.Error()))
		fmt.Fprintf(&b, "\nNothing is applied from a merge request.\n")
		return b.String()
	}
	if len(res.Plan.Actions) == 0 {
		fmt.Fprintf(&b, "Merging would change nothing: %d container(s), pod(s) and SIF(s) stay as they are.\n", res.Plan.Unchanged)
	} else {
		fmt.Fprintf(&b, "Merging into %s would:\n\n| | action | kind | name | where | image | details |\n|---|---|---|---|---|---|---|\n", code(branch))
		for _, a := range res.Plan.Actions {
			image, details := actionImageAndDetails(a)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", actionIcons[a.Kind], a.Kind, a.Resource, code(a.Name), a.Where(), image, details)
		}
		if res.Plan.Unchanged > 0 {
			fmt.Fprintf(&b, "\n%d other container(s), pod(s) or SIF(s) stay as they are.\n", res.Plan.Unchanged)
		}
		if res.HeldRemovals > 0 {
			fmt.Fprintf(&b, "\n⚠️ %d removal(s) would be held by the prune limit until an admin allows them.\n", res.HeldRemovals)
		}
	}
	u := res.OwnerUsage
	fmt.Fprintf(&b, "\n**Quota** (all your repos, Docker and Kubernetes together, with this one as merged): %d of %d containers, %d of %d pods, %d of %d GPUs, %g of %g CPUs, %s of %s memory, %d of %d host ports.\n",
		u.Containers, quota.Containers, u.Pods, quota.Pods, u.GPUs, quota.GPUs, u.CPUs, quota.CPUs,
		resource.NewQuantity(u.MemoryBytes, resource.BinarySI), quota.Memory, u.Ports, quota.Ports)
	fmt.Fprintf(&b, "\nNothing is applied from a merge request; merging rolls this out.\n")
	return b.String()
}

// actionImageAndDetails are the image and the details of what an action
// makes, as note cells: a container's ports, a pod's resources.
func actionImageAndDetails(a reconciler.Action) (image, details string) {
	switch {
	case a.Spec != nil:
		var ps []string
		for _, p := range a.Spec.Ports {
			host := "new"
			if p.Host != 0 {
				host = fmt.Sprint(p.Host)
			}
			ps = append(ps, fmt.Sprintf("%d → %s", p.Guest, host))
		}
		details = strings.Join(ps, ", ")
		if !a.Spec.Running && a.Kind != reconciler.ActionStop {
			details += " (stopped)"
		}
		return code(a.Spec.Image), details
	case a.Pod != nil:
		p := a.Pod
		return code(p.Image), fmt.Sprintf("%d GPU(s), %g CPU(s), %s, restart %s", p.GPUs, p.CPUs, resource.NewQuantity(p.MemoryBytes, resource.BinarySI), p.Restart)
	case a.Image != "":
		return code(a.Image), ""
	}
	return "", ""
}

// What a student wrote (wm.yaml's keys and values, error messages that
// quote them, branch names) reaches notes that WhaleMountain's account
// posts, where GitLab would render Markdown, expand @mentions (@all),
// #references and links, allow some HTML, and run quick actions (/merge,
// /approve) found at the start of a line outside code. So it only ever
// appears inert:
//
//   - in code spans (code), on one line without invisible format
//     characters, backticks replaced, table pipes escaped, cut at
//     maxInline bytes;
//   - in indented code blocks (codeBlock): every line starts with four
//     spaces, so no line of it can end the block, open a fence or HTML
//     block, or be read as a quick action (GitLab's extractor needs the
//     slash at the very start of a line, and its idea of a fenced block
//     is not CommonMark's, so a fence, however long, is not enough);
//     carriage returns and other control characters become spaces and
//     invisible format characters (bidi overrides, zero-width ones) are
//     dropped first, and the block is cut at maxBlock bytes.
//
// Nothing a student wrote is ever written outside those two.
const (
	maxInline = 200
	maxBlock  = 16 << 10
)

// code is s as an inert one-line Markdown code span, also safe in a table
// cell.
func code(s string) string {
	s = cut(oneLine(s), maxInline)
	s = strings.NewReplacer("`", "'", "|", `\|`).Replace(s)
	return "`" + s + "`"
}

// codeBlock is s as an inert indented code block, ending in a newline; a
// blank line must come before it.
func codeBlock(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == '\r' || unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			return ' '
		case unicode.Is(unicode.Cf, r):
			return -1 // invisible: bidi overrides, zero-width characters
		}
		return r
	}, s))
	if len(s) > maxBlock {
		s = cut(s, maxBlock) + "\n(cut)"
	}
	var b strings.Builder
	for line := range strings.SplitSeq(s, "\n") {
		b.WriteString("    ")
		b.WriteString(strings.TrimRight(line, " \t"))
		b.WriteString("\n")
	}
	return b.String()
}

// oneLine makes s one line of plain text: every run of control characters
// (newlines included) and space becomes one space.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Cf, r) {
			return -1 // invisible: bidi overrides, zero-width characters
		}
		return r
	}, s)
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.IsSpace(r)
	}), " ")
}

// StatusText is s as a commit status description: one line of plain
// text, cut to GitLab's limit of 255 characters.
func StatusText(s string) string { return cut(oneLine(s), maxDescription) }
