package dashboard

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/whalemountain/wm/reconciler/store"
)

// chartDays is how many days the admins' GPU-hours chart spans, and
// chartLines how many students get a line of their own (the others share
// one).
const (
	chartDays  = 30
	chartLines = 8
)

// palette tells lines apart for colour-blind readers too (Okabe and Ito),
// each dark enough on white.
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#8A6100", "#1F6F9E", "#000000", "#882255", "#6B6B6B"}

// gpuChart is the admins' chart of GPU-hours per student per day, drawn
// as SVG by the admin template, with the same figures as a table.
type gpuChart struct {
	// Drawing, in the SVG's user units.
	Width, Height, Left, Right, Top, Bottom int
	Lines                                   []chartLine
	YTicks, XTicks                          []chartTick
	// The table: a row a day, a column a line.
	Rows   []chartRow
	Totals []string
	Desc   string
}

// chartLine is one student's (or the others') line.
type chartLine struct {
	Name, Colour, Points string
}

// chartTick is a labelled place on an axis.
type chartTick struct {
	At    float64
	Label string
}

// chartRow is one day of the table.
type chartRow struct {
	Day   string
	Hours []string
}

// newGPUChart draws the last chartDays days up to now of hours (each
// owner's GPU-hours per day); nil when nobody held a GPU then.
func newGPUChart(hours map[string][]store.GPUDay, now time.Time) *gpuChart {
	days := make([]string, chartDays)
	index := map[string]int{}
	for i := range days {
		days[i] = now.UTC().AddDate(0, 0, i-chartDays+1).Format(time.DateOnly)
		index[days[i]] = i
	}
	type owner struct {
		name  string
		per   []float64
		total float64
	}
	var owners []owner
	for name, list := range hours {
		o := owner{name: name, per: make([]float64, chartDays)}
		for _, d := range list {
			if i, ok := index[d.Day]; ok {
				o.per[i] += d.Hours
				o.total += d.Hours
			}
		}
		if o.total > 0 {
			owners = append(owners, o)
		}
	}
	if len(owners) == 0 {
		return nil
	}
	slices.SortFunc(owners, func(a, b owner) int {
		return cmp.Or(cmp.Compare(b.total, a.total), strings.Compare(a.name, b.name))
	})
	if len(owners) > chartLines {
		others := owner{name: fmt.Sprintf("the %d others", len(owners)-chartLines), per: make([]float64, chartDays)}
		for _, o := range owners[chartLines:] {
			for i, h := range o.per {
				others.per[i] += h
			}
			others.total += o.total
		}
		owners = append(owners[:chartLines], others)
	}
	top := 0.0
	for _, o := range owners {
		top = max(top, slices.Max(o.per))
	}
	top = niceCeil(top)
	c := &gpuChart{Width: 720, Height: 300, Left: 56, Right: 28, Top: 12, Bottom: 36}
	plotW, plotH := float64(c.Width-c.Left-c.Right), float64(c.Height-c.Top-c.Bottom)
	x := func(i int) float64 { return float64(c.Left) + plotW*float64(i)/float64(chartDays-1) }
	y := func(v float64) float64 { return float64(c.Top) + plotH*(1-v/top) }
	for _, v := range []float64{0, top / 4, top / 2, 3 * top / 4, top} {
		c.YTicks = append(c.YTicks, chartTick{At: y(v), Label: hoursText(v)})
	}
	for i := 0; i < chartDays; i += 7 {
		j := chartDays - 1 - i // from today back, a week apart
		c.XTicks = append(c.XTicks, chartTick{At: x(j), Label: days[j][5:]})
	}
	var most []string
	for k, o := range owners {
		pts := make([]string, chartDays)
		for i, h := range o.per {
			pts[i] = fmt.Sprintf("%.1f,%.1f", x(i), y(h))
		}
		c.Lines = append(c.Lines, chartLine{Name: o.name, Colour: palette[k%len(palette)], Points: strings.Join(pts, " ")})
		c.Totals = append(c.Totals, hoursText(o.total))
		if k < 3 {
			most = append(most, fmt.Sprintf("%s %s", o.name, hoursText(o.total)))
		}
	}
	for i, d := range days {
		r := chartRow{Day: d}
		for _, o := range owners {
			r.Hours = append(r.Hours, hoursText(o.per[i]))
		}
		c.Rows = append(c.Rows, r)
	}
	c.Desc = fmt.Sprintf("One line per student, GPU-hours a day from %s to %s; the most: %s. The table below has every figure.",
		days[0], days[chartDays-1], strings.Join(most, ", "))
	return c
}

// niceCeil is the smallest of 1, 2 or 5 times a power of ten at or above
// v (and at least 1), so the axis reads in round figures.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// hoursText writes GPU-hours to a tenth.
func hoursText(h float64) string {
	return fmt.Sprintf("%.1f", h)
}
