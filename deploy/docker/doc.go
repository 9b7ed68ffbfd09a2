// Package docker holds the container image (Dockerfile, FROM scratch around
// the static binary) and the compose cluster (docker-compose.yml, three
// nodes on a private network) of mqcluster, and no Go code.
//
// Its tests check that the compose file fits the binary (its configuration
// and each node's environment load with mqcluster's configuration loader),
// and, when MQCLUSTER_TEST_IMAGE names an image (`make compose-test` builds
// one and sets it), run the compose cluster: messages cross it between
// nodes, and still do after a node restarts.
//
// It must never hold code the binary depends on.
package docker
