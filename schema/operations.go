package schema

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedules are the admins' periodic jobs, each a cron expression (five
// fields, or a descriptor such as @daily) read in TimeZone. An empty
// expression turns its job off. A run missed while wm was down is made
// once when it comes back, not once per missed time.
type Schedules struct {
	// TimeZone is the IANA zone every expression (and the semester's end
	// dates) is read in, such as Europe/Berlin or UTC. Required when any
	// schedule is set: a department's "at 3 in the morning" must not
	// depend on the machine wm happens to run on.
	TimeZone string `yaml:"timeZone"`
	// Resync passes every known repo, beside the poll loop's own.
	Resync string `yaml:"resync"`
	// Semester warns students before their semester ends, passes their
	// repos when it does (so everything stops on time), and removes what
	// stayed expired past semester.cleanupAfter.
	Semester string `yaml:"semester"`
	// IdleCull measures the containers that hold a GPU and stops those
	// idle for culling.after.
	IdleCull string `yaml:"idleCull"`
	// Cleanup removes dangling images on the Docker hosts.
	Cleanup string `yaml:"cleanup"`
}

// Each returns the schedules by job name, empty ones left out.
func (s Schedules) Each() map[string]string {
	out := map[string]string{}
	for name, spec := range map[string]string{"resync": s.Resync, "semester": s.Semester, "idleCull": s.IdleCull, "cleanup": s.Cleanup} {
		if spec != "" {
			out[name] = spec
		}
	}
	return out
}

// Location returns TimeZone's location; UTC when none is set.
func (s Schedules) Location() *time.Location {
	if s.TimeZone == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(s.TimeZone)
	if err != nil {
		return time.UTC // refused by validate
	}
	return loc
}

// ParseSchedule parses a cron expression as Schedules does: five fields
// or a descriptor, with no time zone of its own.
func ParseSchedule(spec string) (cron.Schedule, error) {
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return nil, fmt.Errorf("the time zone is schedules.timeZone, not part of the expression")
	}
	return cron.ParseStandard(spec)
}

func (s Schedules) validate(report reporter) {
	each := s.Each()
	if s.TimeZone != "" {
		if _, err := time.LoadLocation(s.TimeZone); err != nil || strings.EqualFold(s.TimeZone, "local") {
			report("schedules.timeZone", false, "%s is not a time zone such as Europe/Berlin or UTC", quote(s.TimeZone))
		}
	} else if len(each) > 0 {
		report("schedules.timeZone", true, "is required with a schedule: name the zone its times are in, such as Europe/Berlin or UTC")
	}
	for _, name := range []string{"resync", "semester", "idleCull", "cleanup"} {
		spec, ok := each[name]
		if !ok {
			continue
		}
		if _, err := ParseSchedule(spec); err != nil {
			report("schedules."+name, false, "%s is not a cron expression (minute hour day-of-month month day-of-week, or @daily and the like): %v", quote(spec), err)
		}
	}
}

// Semester ends what students run on a date: an admin-set end per group
// of students, and a default for everyone. A student's `expires:` can
// bring their own end forward, never put it off.
type Semester struct {
	// End is the last day (YYYY-MM-DD, in schedules.timeZone) of
	// everyone not in one of Groups; empty: no end for them.
	End string `yaml:"end"`
	// Groups give the students of a GitLab group (or a folder source's
	// owner prefix) an end of their own; the longest matching group wins.
	Groups []SemesterGroup `yaml:"groups,omitempty"`
	// WarnBefore is how long before the end a student is told, in their
	// GitLab project (an issue) and in their status; default 7 days.
	WarnBefore Duration `yaml:"warnBefore"`
	// CleanupAfter, when set, removes the containers and pods of a repo
	// that stayed expired this long (volumes are kept unless
	// policy.pruneVolumes says otherwise); 0 keeps them stopped forever.
	CleanupAfter Duration `yaml:"cleanupAfter"`
	// ExtensionLabel, when set, is the GitLab label an admin puts on a
	// student's merge request to approve it: once merged, the `expires:`
	// it set holds past the semester's end (needs sources.gitlab).
	ExtensionLabel string `yaml:"extensionLabel"`
}

// SemesterGroup is one group of students with an end of its own.
type SemesterGroup struct {
	// Group is a path prefix of repo keys: a GitLab group such as
	// cs101/2026ws, whose projects (and subgroups') it covers.
	Group string `yaml:"group"`
	// End is the group's last day, YYYY-MM-DD.
	End string `yaml:"end"`
}

// EndFor returns the first instant after repo key's semester (its
// group's end, else End) in loc, and false when it has none.
func (s *Semester) EndFor(key string, loc *time.Location) (time.Time, bool) {
	if s == nil {
		return time.Time{}, false
	}
	end, best := s.End, -1
	for _, g := range s.Groups {
		prefix := strings.Trim(g.Group, "/")
		if (key == prefix || strings.HasPrefix(key, prefix+"/")) && len(prefix) > best {
			end, best = g.End, len(prefix)
		}
	}
	if end == "" {
		return time.Time{}, false
	}
	day, err := time.ParseInLocation(time.DateOnly, end, loc)
	if err != nil {
		return time.Time{}, false
	}
	return day.AddDate(0, 0, 1), true
}

func (s *Semester) validate(report reporter) {
	if s == nil {
		return
	}
	date := func(path, v string) {
		if _, err := time.Parse(time.DateOnly, v); err != nil || v < MinExpires || v > MaxExpires {
			report(path, false, "%s is not a date such as 2027-02-15", quote(v))
		}
	}
	if s.End != "" {
		date("semester.end", s.End)
	}
	if s.End == "" && len(s.Groups) == 0 {
		report("semester", true, "needs an end, groups, or both")
	}
	seen := map[string]bool{}
	for i, g := range s.Groups {
		p := fmt.Sprintf("semester.groups[%d]", i)
		group := strings.Trim(g.Group, "/")
		switch {
		case group == "" || len(group) > 255 || strings.ContainsAny(group, " \t\n*?"):
			report(p+".group", false, "%s is not a GitLab group path such as cs101/2026ws", quote(g.Group))
		case seen[group]:
			report(p+".group", false, "%s is given twice", quote(g.Group))
		}
		seen[group] = true
		date(p+".end", g.End)
	}
	if w := s.WarnBefore.Std(); w < 0 || w > 90*24*time.Hour {
		report("semester.warnBefore", false, "%v is not between 0 and 90 days (2160h)", w)
	}
	if l := s.ExtensionLabel; l != "" && (len(l) > 255 || strings.ContainsAny(l, ",\n") || strings.TrimSpace(l) != l) {
		report("semester.extensionLabel", false, "%s is not a GitLab label name (no commas, at most 255 characters)", quote(l))
	}
	if c := s.CleanupAfter.Std(); c < 0 || (c > 0 && c < time.Hour) {
		report("semester.cleanupAfter", false, "%v is neither 0 (never) nor at least 1h", c)
	}
}

// Culling stops containers that hold a GPU and use too little of what
// they were given. No GPU utilisation is read (no engine reports it):
// the measure is CPU time against the container's CPU limit.
type Culling struct {
	// After is how long a container must stay idle; default 2h.
	After Duration `yaml:"after"`
	// BelowCPUShare is the share of its CPU limit (0 to 1) under which a
	// container counts as idle between two samples; default 0.05.
	BelowCPUShare float64 `yaml:"belowCPUShare"`
}

func (c *Culling) applyDefaults() {
	if c == nil {
		return
	}
	if c.After == 0 {
		c.After = Duration(2 * time.Hour)
	}
	if c.BelowCPUShare == 0 {
		c.BelowCPUShare = 0.05
	}
}

func (c *Culling) validate(report reporter, schedules Schedules) {
	if c == nil {
		return
	}
	if a := c.After.Std(); a < time.Minute || a > 30*24*time.Hour {
		report("culling.after", false, "%v is not between 1m and 30 days (720h)", a)
	}
	if s := c.BelowCPUShare; !(s > 0 && s < 1) {
		report("culling.belowCPUShare", false, "%v is not a share between 0 and 1, such as 0.05", s)
	}
	if schedules.IdleCull == "" {
		report("culling", true, "needs schedules.idleCull: it says how often containers are measured")
	}
}
