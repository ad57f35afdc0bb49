// Command xterm makes the dashboard's vendored terminal from Debian's
// node-xterm package (xterm.js's CommonJS modules): one browser script,
// xterm.js, that bundles the Terminal and its fit addon and sets
// window.Terminal, with xterm.css and xterm's licence beside it. Run it
// through ci/xterm-bundle, which names the folders.
//
// It is its own module so that the main module never depends on esbuild.
// The bundle is minified, needs neither eval nor new Function, and is the
// same bytes on every run from the same package: a test of the dashboard
// regenerates it and compares.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/evanw/esbuild/pkg/api"
)

// esbuildVersion is the version in go.mod, named in the bundle's header.
const esbuildVersion = "v0.28.2"

// entry is the bundle's entry point: xterm's Terminal with the fit addon
// applied, as a global for the dashboard's own plain script.
const entry = `var Terminal = require("xterm").Terminal;
Terminal.applyAddon(require("xterm/lib/addons/fit/fit"));
window.Terminal = Terminal;
`

func main() {
	src := flag.String("src", "/usr/share/nodejs", "the folder holding Debian's node modules (node-xterm's xterm/)")
	doc := flag.String("doc", "/usr/share/doc/node-xterm/copyright", "node-xterm's copyright file, xterm's MIT licence")
	out := flag.String("out", "", "the folder to write xterm.js, xterm.css and xterm.LICENSE into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "xterm: -out is required")
		os.Exit(2)
	}
	if err := run(*src, *doc, *out); err != nil {
		fmt.Fprintln(os.Stderr, "xterm:", err)
		os.Exit(1)
	}
}

func run(src, doc, out string) error {
	var pkg struct {
		Version string `json:"version"`
		License string `json:"license"`
	}
	b, err := os.ReadFile(filepath.Join(src, "xterm", "package.json"))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no xterm in %s: install Debian's node-xterm (ci/setup does)", src)
	} else if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return fmt.Errorf("read xterm's package.json: %w", err)
	}
	license, err := os.ReadFile(doc)
	if err != nil {
		return fmt.Errorf("read xterm's licence: %w", err)
	}
	css, err := os.ReadFile(filepath.Join(src, "xterm", "lib", "xterm.css"))
	if err != nil {
		return err
	}
	made := fmt.Sprintf("xterm.js %s (%s licence: xterm.LICENSE), from Debian's node-xterm package,\n"+
		"bundled by ci/xterm-bundle (esbuild %s's Go API, ci/xterm). Do not edit: run ci/xterm-bundle.", pkg.Version, pkg.License, esbuildVersion)
	res := api.Build(api.BuildOptions{
		Stdin:             &api.StdinOptions{Contents: entry, Sourcefile: "wm-xterm-entry.js", ResolveDir: src},
		AbsWorkingDir:     src,
		NodePaths:         []string{src},
		Bundle:            true,
		Format:            api.FormatIIFE,
		Platform:          api.PlatformBrowser,
		Target:            api.ES2017,
		MinifyWhitespace:  true,
		MinifySyntax:      true,
		MinifyIdentifiers: true,
		LegalComments:     api.LegalCommentsEndOfFile,
		Banner:            map[string]string{"js": "/* " + made + " */"},
		LogLevel:          api.LogLevelWarning,
	})
	if len(res.Errors) > 0 {
		msgs := api.FormatMessages(res.Errors, api.FormatMessagesOptions{Kind: api.ErrorMessage})
		return fmt.Errorf("bundle xterm: %s", strings.Join(msgs, ""))
	}
	if len(res.OutputFiles) != 1 {
		return fmt.Errorf("bundle xterm: %d output files, want 1", len(res.OutputFiles))
	}
	js := res.OutputFiles[0].Contents
	for _, bad := range []string{"eval(", "new Function", "Function("} {
		if strings.Contains(string(js), bad) {
			return fmt.Errorf("the bundle calls %s, which the dashboard's Content-Security-Policy forbids", bad)
		}
	}
	for name, data := range map[string][]byte{
		"xterm.js":      js,
		"xterm.css":     append([]byte("/* "+made+" */\n"), css...),
		"xterm.LICENSE": license,
	} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
