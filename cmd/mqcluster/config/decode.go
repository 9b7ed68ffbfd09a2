package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"

	"go.yaml.in/yaml/v3"
)

// decodeFile applies a YAML document over c: the keys it holds replace
// c's values, the others stay. It is strict: an unknown key, a value of
// the wrong kind and a repeated key are errors that name the key (with
// its place in the list: listeners[1].tls.cert_file) and the line.
func decodeFile(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file
		}
		return err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return errors.New("one YAML document expected, found more")
	}
	var errs []error
	decodeNode(&doc, reflect.ValueOf(c).Elem(), "", &errs)
	return errors.Join(errs...)
}

// decodeNode decodes n into v, appending to errs what is wrong, each
// error prefixed with its key.
func decodeNode(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	for n.Kind == yaml.DocumentNode || n.Kind == yaml.AliasNode {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
			continue
		}
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	bad := func(format string, args ...any) {
		where := path
		if where == "" {
			where = "the file"
		}
		*errs = append(*errs, fmt.Errorf("%s: %s (line %d)", where, fmt.Sprintf(format, args...), n.Line))
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		if v.Kind() != reflect.Struct {
			v.Set(reflect.Zero(v.Type()))
		}
		return // an empty section keeps its defaults
	}
	switch {
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		decodeNode(n, v.Elem(), path, errs)
	case v.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("want a mapping of keys")
			return
		}
		fields := map[string]int{}
		for i := range v.NumField() {
			fields[yamlName(v.Type().Field(i))] = i
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := joinPath(path, k.Value)
			idx, ok := fields[k.Value]
			switch {
			case !ok:
				*errs = append(*errs, fmt.Errorf("%s: unknown key (line %d)", kp, k.Line))
			case seen[k.Value]:
				*errs = append(*errs, fmt.Errorf("%s: set twice (line %d)", kp, k.Line))
			default:
				seen[k.Value] = true
				decodeNode(val, v.Field(idx), kp, errs)
			}
		}
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("want a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			if s.Index(i).Kind() != reflect.Struct && item.Kind != yaml.ScalarNode {
				*errs = append(*errs, fmt.Errorf("%s: want a single value (line %d)", ip, item.Line))
				continue
			}
			if item.Kind == yaml.ScalarNode && s.Index(i).Kind() != reflect.Struct {
				s.Index(i).SetString(item.Value)
				continue
			}
			decodeNode(item, s.Index(i), ip, errs)
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			bad("want a single value, not a %s", kindName(n.Kind))
			return
		}
		if err := setScalar(v, n.Value); err != nil {
			bad("%q: %v", n.Value, err)
		}
	}
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}
