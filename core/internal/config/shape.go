package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/agnivade/levenshtein"
	"gopkg.in/yaml.v3"
)

// checkShape walks the YAML document beside the Config type and reports
// every key the type does not have and every scalar of the wrong kind by
// its YAML path ("dispatch.max_attempts", "plugins[1].env"), with the
// closest known key as a suggestion. yaml.v3's own strict errors name Go
// types ("field listn not found in type config.Config"), which tell an
// operator nothing; this runs first so they never see those.
func checkShape(doc *yaml.Node) error {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	var errs []error
	walkShape(doc.Content[0], reflect.TypeOf(Config{}), "", &errs)
	return errors.Join(errs...)
}

var durationType = reflect.TypeOf(Duration(0))

func walkShape(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default
	}
	where := path
	if where == "" {
		where = "the top level"
	}
	bad := func(format string, a ...any) {
		*errs = append(*errs, fmt.Errorf("config line %d: %s: %s", n.Line, where, fmt.Sprintf(format, a...)))
	}
	if t == durationType {
		if n.Kind != yaml.ScalarNode {
			bad("want a duration such as 500ms or 3s")
		}
		return // its UnmarshalYAML checks the syntax, naming the line
	}
	switch t.Kind() {
	case reflect.Pointer:
		walkShape(n, t.Elem(), path, errs)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("want a mapping of keys")
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("config line %d: unknown key %q", k.Line, sub)
				if s := suggest(k.Value, fields); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				*errs = append(*errs, errors.New(msg))
				continue
			}
			walkShape(v, ft, sub, errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("want a list")
			return
		}
		for i, e := range n.Content {
			walkShape(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("want a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkShape(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value, errs)
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			bad("want a string")
		}
	case reflect.Bool:
		if _, err := strconv.ParseBool(n.Value); n.Kind != yaml.ScalarNode || err != nil {
			bad("want true or false, got %s", shown(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if _, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); n.Kind != yaml.ScalarNode || err != nil {
			bad("want a whole number, got %s", shown(n))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64); n.Kind != yaml.ScalarNode || err != nil {
			bad("want a whole number ≥ 0, got %s", shown(n))
		}
	case reflect.Float32, reflect.Float64:
		if _, err := strconv.ParseFloat(n.Value, 64); n.Kind != yaml.ScalarNode || err != nil {
			bad("want a number, got %s", shown(n))
		}
	}
}

func shown(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// yamlFields maps a struct's YAML keys to their types, following inlined
// fields as yaml.v3 does.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// suggest is the known key closest to key, if it is close enough to be a
// typo (at most a third of its length off, and at most 3 edits).
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestD := "", 0
	for k := range fields {
		d := levenshtein.ComputeDistance(strings.ToLower(key), k)
		if best == "" || d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if bestD > 3 || bestD*3 > max(len(key), 3) {
		return ""
	}
	return best
}
