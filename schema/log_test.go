package schema

import (
	"strings"
	"testing"
)

func TestTheLogIsTextFromInfoUnlessTheConfigSaysOtherwise(t *testing.T) {
	embedded, err := DefaultServerConfig("/srv/wm")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, config string
		want         Log
	}{
		{"a config without log logs text from info", "stateDir: /var/lib/wm\n", Log{Format: "text", Level: "info"}},
		{"json from debug is taken as written", "log: {format: json, level: debug}\n", Log{Format: "json", Level: "debug"}},
		{"a level alone keeps the text format", "log: {level: warn}\n", Log{Format: "text", Level: "warn"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err != nil {
				t.Fatal(err)
			}
			if c.Log != tc.want {
				t.Errorf("got %+v, want %+v", c.Log, tc.want)
			}
		})
	}
	if embedded.Log != (Log{Format: "text", Level: "info"}) {
		t.Errorf("the embedded defaults log %+v", embedded.Log)
	}
	if err := (&ServerConfig{}).Validate(); err != nil && strings.Contains(err.Error(), "log.") {
		t.Errorf("a config built in code, without log, is refused: %v", err)
	}
}

func TestABadLogSettingNamesLineAndField(t *testing.T) {
	for _, tc := range []struct{ name, config, want string }{
		{"the format is text or json", "log: {format: logfmt}\n", `s.yaml:1:15: log.format: "logfmt" is not text or json`},
		{"the level is one of slog's", "log:\n  level: verbose\n", `s.yaml:2:10: log.level: "verbose" is not one of debug, info, warn, error`},
		{"an unknown field is refused", "log: {colour: true}\n", `s.yaml:1:7: log.colour: unknown field`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
}
