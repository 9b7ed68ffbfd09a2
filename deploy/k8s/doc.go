// Package k8s holds the Kubernetes manifests of mqcluster (base/, a
// three-node StatefulSet, and overlays/demo/) and no Go code. Its tests
// check that the manifests fit the binary: the configuration they mount and
// the environment they set load with mqcluster's own configuration loader,
// and the ports, paths and probes they name are the ones that configuration
// uses. `make k8s-validate` checks them against the Kubernetes API schemas
// (kubeconform; the schemas are built by schemagen/).
//
// It must never hold code the binary depends on.
package k8s
