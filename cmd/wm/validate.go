package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/schema"
)

// fileResult is the outcome for one file, as --format json prints it.
type fileResult struct {
	File   string          `json:"file"`
	Kind   string          `json:"kind"` // "wm.yaml" or "server"
	Valid  bool            `json:"valid"`
	Errors []*schema.Error `json:"errors"`
}

func newValidateCmd(g *globals) *cobra.Command {
	var format, server string
	cmd := &cobra.Command{
		Use:   "validate [PATH...]",
		Short: "Check wm.yaml files (or a server config) and print every problem",
		Long: `Check wm.yaml files and print every problem, one a line, as
file:line:column: field.path: message.

PATH is a file or a folder; folders are searched for files named wm.yaml.
With no PATH, ./wm.yaml is checked. --server FILE (or --config FILE)
checks a server config: its rules, and every check wm serve makes before it
starts (secret files readable and not empty, the kubeconfig, the admin
group and socket, the listen addresses free), with the messages wm serve
would print. It creates nothing, not even the state folder.

Exit status: 0 all valid, 1 a file is invalid, 2 usage error.`,
		Example: `  wm validate
  wm validate examples/
  wm validate --format json wm.yaml
  wm validate --server /etc/wm/wm-server.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--format must be text or json, not %q", format)
			}
			if server == "" {
				server = g.config
			}
			if len(args) == 0 && server == "" {
				args = []string{"wm.yaml"}
			}
			var results []fileResult
			if server != "" {
				results = append(results, checkServer(server))
			}
			for _, arg := range args {
				files, err := findWMFiles(arg)
				if err != nil {
					results = append(results, failed(arg, "wm.yaml", err))
					continue
				}
				for _, f := range files {
					results = append(results, check(f, "wm.yaml", validateWM))
				}
			}
			return report(cmd.OutOrStdout(), format, results)
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().StringVar(&server, "server", "", "check this server config `FILE`")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func validateWM(name string, r io.Reader) error {
	_, err := schema.Parse(name, r)
	return err
}

// checkServer parses a server config and makes on it every check wm serve
// makes at start-up (serverChecks), with the same messages.
func checkServer(name string) fileResult {
	if _, err := os.Stat(name); err != nil {
		return failed(name, "server", err)
	}
	_, err := schema.LoadServerChecked(name, serverChecks)
	return failed(name, "server", err)
}

// check opens and parses one file.
func check(name, kind string, parse func(string, io.Reader) error) fileResult {
	f, err := os.Open(name)
	if err != nil {
		return failed(name, kind, err)
	}
	defer f.Close()
	return failed(name, kind, parse(name, f))
}

// failed turns a parse outcome into a result; a nil err is a valid file.
func failed(name, kind string, err error) fileResult {
	res := fileResult{File: name, Kind: kind, Valid: err == nil, Errors: []*schema.Error{}}
	var list schema.Errors
	switch {
	case err == nil:
	case errors.As(err, &list):
		res.Errors = list
	case errors.Is(err, fs.ErrNotExist):
		res.Errors = []*schema.Error{{File: name, Message: "no such file or folder"}}
	default:
		res.Errors = []*schema.Error{{File: name, Message: err.Error()}}
	}
	return res
}

// findWMFiles expands a path: a file is itself, a folder every wm.yaml
// under it (hidden folders skipped), in lexical order.
func findWMFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != path && d.Name()[0] == '.' {
			return filepath.SkipDir
		}
		if !d.IsDir() && d.Name() == "wm.yaml" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no wm.yaml in this folder or below")
	}
	slices.Sort(files)
	return files, nil
}

// report prints the results and returns exitError{1} when any is invalid.
func report(w io.Writer, format string, results []fileResult) error {
	valid := true
	for _, r := range results {
		valid = valid && r.Valid
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Valid bool         `json:"valid"`
			Files []fileResult `json:"files"`
		}{valid, results}); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			if r.Valid {
				fmt.Fprintf(w, "%s: ok\n", r.File)
			}
			for _, e := range r.Errors {
				fmt.Fprintln(w, e.Error())
			}
		}
	}
	if !valid {
		return exitError{exitInvalid}
	}
	return nil
}
