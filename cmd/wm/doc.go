// Command wm is WhaleMountain's one binary: it validates wm.yaml files and
// server configs, and runs the reconciler that turns students' repos into
// containers, pods and Singularity images.
//
// Each subcommand lives in its own file here and only parses flags, calls
// into the packages that do the work and maps the outcome to an exit code:
// 0 success, 1 the input was checked and found wrong, 2 the command itself
// was used wrongly.
package main
