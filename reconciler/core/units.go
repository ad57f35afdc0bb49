package core

import (
	"fmt"
	"strings"
)

// FormatBytes writes n in the largest binary unit that keeps it at least
// 1: "1 MiB", "8 GiB", "1.5 GiB": the way every message
// about sizes writes them.
func FormatBytes(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d bytes", n)
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[u]
}
