// Command schemagen writes the JSON schemas kubeconform validates the
// Kubernetes manifests of deploy/k8s against, from the OpenAPI (v2)
// document of the Kubernetes API.
//
// kubeconform looks its schemas up by kind and API version
// ({{ .ResourceKind }}{{ .KindSuffix }}.json: statefulset-apps-v1.json,
// service-v1.json, ...) and fetches them from the network by default. Here
// they are built from api/openapi-spec/swagger.json of the k8s.io/kubernetes
// module, which the Go module proxy serves like any other module, the way
// kubeconform's openapi2jsonschema.py builds its "standalone-strict" set:
//
//   - standalone: every $ref is inlined, so one file is the whole schema;
//   - strict: an object with properties admits no other property (a
//     misspelt or misplaced field is an error, as with kubectl --validate=strict);
//   - kind and apiVersion admit the kind's own values only;
//   - int-or-string fields admit an integer or a string, quantities a
//     number or a string, as the API server does.
//
// Descriptions are left out. Usage (make k8s-validate runs it):
//
//	schemagen -swagger swagger.json -out dir apps/v1/StatefulSet v1/Service ...
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	swagger := flag.String("swagger", "", "OpenAPI v2 document of the Kubernetes API (api/openapi-spec/swagger.json)")
	out := flag.String("out", "", "directory to write the schemas to")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: schemagen -swagger swagger.json -out dir group/version/Kind ...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *swagger == "" || *out == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*swagger, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(swaggerPath, outDir string, kinds []string) error {
	data, err := os.ReadFile(swaggerPath)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", swaggerPath, err)
	}
	if len(doc.Definitions) == 0 {
		return fmt.Errorf("%s: no definitions", swaggerPath)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, k := range kinds {
		name, schema, err := Generate(doc.Definitions, k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := json.Marshal(schema)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
			continue
		}
		if err := os.WriteFile(filepath.Join(outDir, name), b, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// gvk is a kind and the API version it is served at.
type gvk struct{ group, version, kind string }

// parseGVK reads "apps/v1/StatefulSet" or "v1/Service" (the core group).
func parseGVK(s string) (gvk, error) {
	parts := strings.Split(s, "/")
	switch len(parts) {
	case 2:
		return gvk{"", parts[0], parts[1]}, nil
	case 3:
		return gvk{parts[0], parts[1], parts[2]}, nil
	}
	return gvk{}, fmt.Errorf("%q: want group/version/Kind or version/Kind", s)
}

func (g gvk) apiVersion() string {
	if g.group == "" {
		return g.version
	}
	return g.group + "/" + g.version
}

// fileName is the name kubeconform looks the schema up by: the kind in
// lower case, the first label of the group and the version.
func (g gvk) fileName() string {
	name := strings.ToLower(g.kind)
	if g.group != "" {
		name += "-" + strings.ToLower(strings.Split(g.group, ".")[0])
	}
	return name + "-" + strings.ToLower(g.version) + ".json"
}

// Generate builds the standalone, strict schema of one kind (as parseGVK
// reads it) from the definitions of an OpenAPI v2 document, and the name of
// its file.
func Generate(defs map[string]map[string]any, kind string) (string, map[string]any, error) {
	g, err := parseGVK(kind)
	if err != nil {
		return "", nil, err
	}
	var names []string
	for name, def := range defs {
		if servesKind(def, g) {
			names = append(names, name)
		}
	}
	if len(names) != 1 {
		return "", nil, fmt.Errorf("%s: %d definitions have this group, version and kind, want 1", kind, len(names))
	}
	defName := names[0]
	schema, err := expand(defs, defs[defName], []string{defName})
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", kind, err)
	}
	props, _ := schema["properties"].(map[string]any)
	for key, val := range map[string]string{"kind": g.kind, "apiVersion": g.apiVersion()} {
		if p, ok := props[key].(map[string]any); ok {
			p["enum"] = []any{val}
		}
	}
	return g.fileName(), schema, nil
}

// servesKind reports whether def is the schema of g's objects.
func servesKind(def map[string]any, g gvk) bool {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m["group"] == g.group && m["version"] == g.version && m["kind"] == g.kind {
			return true
		}
	}
	return false
}

const (
	quantityDef = "io.k8s.apimachinery.pkg.api.resource.Quantity"
	refPrefix   = "#/definitions/"
)

// expand returns a copy of the schema s with its references inlined, its
// objects closed and its int-or-string and quantity values widened. path
// is the chain of definitions being expanded, to refuse a cycle.
func expand(defs map[string]map[string]any, s map[string]any, path []string) (map[string]any, error) {
	if ref, ok := s["$ref"].(string); ok {
		name, found := strings.CutPrefix(ref, refPrefix)
		def, known := defs[name]
		if !found || !known {
			return nil, fmt.Errorf("%s: unresolved reference %q", strings.Join(path, " > "), ref)
		}
		for _, p := range path {
			if p == name {
				return nil, fmt.Errorf("%s > %s: recursive definition", strings.Join(path, " > "), name)
			}
		}
		if name == quantityDef {
			return oneOf("string", "number"), nil
		}
		return expand(defs, def, append(slices.Clip(path), name))
	}
	if s["format"] == "int-or-string" {
		return oneOf("string", "integer"), nil
	}
	out := map[string]any{}
	for key, val := range s {
		switch {
		case key == "description", strings.HasPrefix(key, "x-"):
			// left out
		case key == "properties":
			props := map[string]any{}
			for name, p := range val.(map[string]any) {
				ps, err := expand(defs, p.(map[string]any), path)
				if err != nil {
					return nil, err
				}
				props[name] = ps
			}
			out[key] = props
		case key == "items" || key == "additionalProperties":
			sub, ok := val.(map[string]any)
			if !ok { // additionalProperties: true or false
				out[key] = val
				continue
			}
			ss, err := expand(defs, sub, path)
			if err != nil {
				return nil, err
			}
			out[key] = ss
		default:
			out[key] = val
		}
	}
	if _, ok := out["properties"]; ok {
		if _, set := out["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	return out, nil
}

func oneOf(types ...string) map[string]any {
	var alts []any
	for _, t := range types {
		alts = append(alts, map[string]any{"type": t})
	}
	return map[string]any{"oneOf": alts}
}
