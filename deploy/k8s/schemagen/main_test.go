package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// defs is a small OpenAPI v2 "definitions" object in Kubernetes' style.
const defs = `{
  "io.k8s.api.apps.v1.Widget": {
    "description": "A widget.",
    "x-kubernetes-group-version-kind": [{"group": "apps", "version": "v1", "kind": "Widget"}],
    "type": "object",
    "properties": {
      "apiVersion": {"type": "string"},
      "kind": {"type": "string"},
      "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.WidgetSpec"}
    }
  },
  "io.k8s.api.apps.v1.WidgetSpec": {
    "type": "object",
    "required": ["port"],
    "properties": {
      "port": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
      "limits": {"type": "object", "additionalProperties": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"}},
      "labels": {"type": "object", "additionalProperties": {"type": "string"}},
      "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string", "x-kubernetes-list-type": "atomic"}}}}
    }
  },
  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
  "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string", "description": "A quantity."},
  "io.k8s.api.core.v1.Loop": {
    "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Loop"}],
    "type": "object",
    "properties": {"next": {"$ref": "#/definitions/io.k8s.api.core.v1.Loop"}}
  }
}`

func TestGenerate(t *testing.T) {
	var d map[string]map[string]any
	if err := json.Unmarshal([]byte(defs), &d); err != nil {
		t.Fatal(err)
	}
	name, got, err := Generate(d, "apps/v1/Widget")
	if err != nil {
		t.Fatal(err)
	}
	if name != "widget-apps-v1.json" {
		t.Errorf("file name %q, want widget-apps-v1.json (kubeconform's {{ .ResourceKind }}{{ .KindSuffix }})", name)
	}
	var want map[string]any
	json.Unmarshal([]byte(`{
	  "type": "object",
	  "additionalProperties": false,
	  "properties": {
	    "apiVersion": {"type": "string", "enum": ["apps/v1"]},
	    "kind": {"type": "string", "enum": ["Widget"]},
	    "spec": {
	      "type": "object",
	      "additionalProperties": false,
	      "required": ["port"],
	      "properties": {
	        "port": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
	        "limits": {"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]}},
	        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
	        "items": {"type": "array", "items": {"type": "object", "additionalProperties": false, "properties": {"name": {"type": "string"}}}}
	      }
	    }
	  }
	}`), &want)
	// Compare through JSON, as the schema is written.
	gb, _ := json.Marshal(got)
	var gotJSON map[string]any
	json.Unmarshal(gb, &gotJSON)
	if !reflect.DeepEqual(gotJSON, want) {
		t.Errorf("schema:\n%s\nwant:\n%s", gb, must(json.Marshal(want)))
	}
}

func TestGenerateRefuses(t *testing.T) {
	var d map[string]map[string]any
	if err := json.Unmarshal([]byte(defs), &d); err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string]string{
		"v1/Loop":         "recursive definition",
		"apps/v2/Widget":  "0 definitions",
		"Widget":          "want group/version/Kind",
		"core/v1/Missing": "0 definitions",
	} {
		if _, _, err := Generate(d, kind); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", kind, err, want)
		}
	}
}

func must(b []byte, err error) string {
	if err != nil {
		panic(err)
	}
	return string(b)
}
