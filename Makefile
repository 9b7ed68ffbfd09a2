# mqcluster — build, run and test.
GO        ?= go
BIN       ?= bin/mqcluster
PKGS      ?= ./...
FUZZTIME  ?= 10m

.PHONY: all build run test vet fmt-check bench bench-cluster bench-codec fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/mqcluster

# A single node on the embedded defaults: MQTT on :1883, data in ./data.
run: build
	./$(BIN)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# The whole suite: formatting, vet, and every test with the race detector.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Codec and topic micro-benchmarks (figures in docs/performance.md).
bench-codec:
	$(GO) test -run='^$$' -bench=. -benchmem ./broker/packet/ ./broker/topic/

# mqcluster against Debian's Mosquitto, side by side, with the same load
# (figures and how to read them in docs/performance.md). Takes a few minutes;
# the raw figures go to bin/bench.json. Pass flags with BENCHFLAGS, e.g.
# BENCHFLAGS='--scenarios fanin,qos1'.
BENCHFLAGS ?=
bench: build
	./$(BIN) bench --mqcluster-bin ./$(BIN) --json bin/bench.json $(BENCHFLAGS)

# A three-node cluster on loopback against a single node: cross-node
# delivery, added latency, subscribe rate, connect storm and failover
# (figures in docs/performance.md). The raw figures go to
# bin/bench-cluster.json; BENCHFLAGS as for bench.
bench-cluster: build
	./$(BIN) bench --cluster 3 --mqcluster-bin ./$(BIN) --json bin/bench-cluster.json $(BENCHFLAGS)

# Every fuzz target for FUZZTIME each (default 10m), one after another.
fuzz:
	@for t in FuzzParseFixedHeader FuzzDecode FuzzDecodePublish FuzzReader FuzzDecodeMessageProperties; do \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./broker/packet/ || exit 1; done
	@for t in FuzzTrieMatch FuzzValidateFilter; do \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./broker/topic/ || exit 1; done

# Regenerate the Go code of proto/ (committed; CI does not run this). Needs
# protoc from Debian (apt-get update && apt-get install -y protobuf-compiler);
# protoc-gen-go is installed into bin/ at the version of
# google.golang.org/protobuf in go.mod, so the generated code matches the
# runtime it is compiled against. protoc-gen-go-grpc (the service stubs, from
# transport.proto) is its own module, pinned here; the code it generates needs
# google.golang.org/grpc >= 1.64 (grpc.SupportPackageIsVersion9).
PROTOC_GEN_GO_VERSION = $(shell $(GO) list -m -f '{{.Version}}' google.golang.org/protobuf)
PROTOC_GEN_GO_GRPC_VERSION = v1.6.2
.PHONY: proto
proto:
	@command -v protoc >/dev/null || { echo "make proto needs protoc: apt-get update && apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	protoc --plugin=protoc-gen-go=$(CURDIR)/bin/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(CURDIR)/bin/protoc-gen-go-grpc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/mqcluster/v1/*.proto

clean:
	rm -rf bin

# --- Running it: container image, local clusters, Kubernetes manifests ---

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE   ?= mqcluster/mqcluster
COMPOSE_FILE = deploy/docker/docker-compose.yml
# docker-compose (Debian's package) or the compose plugin of docker.
COMPOSE ?= $(shell docker-compose version >/dev/null 2>&1 && echo docker-compose || echo docker compose)

.PHONY: image cluster cluster-down compose-up compose-down compose-test k8s-schemas k8s-validate

# The container image, FROM scratch around a static binary built here
# (nothing is pulled): $(IMAGE):$(VERSION) and $(IMAGE):dev.
image:
	rm -rf bin/image && mkdir -p bin/image/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/image/mqcluster ./cmd/mqcluster
	docker build -q -f deploy/docker/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):dev bin/image

# Three nodes as processes on loopback: MQTT on 1883, 1884 and 1885, data
# and logs in bin/cluster/; `make cluster-down` stops them.
cluster: build
	deploy/local/cluster.sh up

cluster-down:
	deploy/local/cluster.sh down

# Three nodes in containers on a private network, MQTT on 127.0.0.1:1883,
# 1884 and 1885; `make compose-down` removes them and their volumes.
compose-up: image
	MQCLUSTER_IMAGE=$(IMAGE):dev $(COMPOSE) -p mqcluster -f $(COMPOSE_FILE) up -d

compose-down:
	$(COMPOSE) -p mqcluster -f $(COMPOSE_FILE) down -v --remove-orphans

# Builds the image and runs the compose cluster through a publish, a
# subscription on another node, a restart and the same again
# (deploy/docker/compose_test.go). Skipped, with a message, where Docker or
# compose is missing.
compose-test:
	@if ! docker info >/dev/null 2>&1; then \
		echo "compose-test: SKIPPED: no Docker engine here (docker info fails)"; exit 0; fi; \
	if ! $(COMPOSE) version >/dev/null 2>&1; then \
		echo "compose-test: SKIPPED: neither docker-compose nor docker compose is installed"; exit 0; fi; \
	$(MAKE) --no-print-directory image VERSION=$(VERSION) && \
	MQCLUSTER_TEST_IMAGE=$(IMAGE):$(VERSION) MQCLUSTER_TEST_COMPOSE="$(COMPOSE)" \
		$(GO) test -count=1 -timeout 5m -run '^TestComposeCluster$$' -v ./deploy/docker/

# Kubernetes API schemas for kubeconform, built from the OpenAPI document
# that the k8s.io/kubernetes module carries (fetched through the Go module
# proxy, in a throwaway module so that go.mod stays as it is).
K8S_VERSION    ?= 1.32.4
K8S_KINDS      = apps/v1/StatefulSet v1/Service policy/v1/PodDisruptionBudget v1/ConfigMap v1/Secret
K8S_SCHEMAS    = bin/k8s/schemas-v$(K8S_VERSION)
KUBECONFORM    ?= github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
KUSTOMIZE      ?= sigs.k8s.io/kustomize/kustomize/v5@v5.5.0
KUBECONFORM_RUN = $(GO) run $(KUBECONFORM) -strict -kubernetes-version $(K8S_VERSION) \
	-schema-location '$(K8S_SCHEMAS)/{{ .ResourceKind }}{{ .KindSuffix }}.json'

k8s-schemas:
	@mkdir -p bin/k8s
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		(cd "$$tmp" && $(GO) mod init schemas >/dev/null 2>&1 && $(GO) mod download k8s.io/kubernetes@v$(K8S_VERSION))
	$(GO) run ./deploy/k8s/schemagen -out $(K8S_SCHEMAS) \
		-swagger "$$($(GO) env GOMODCACHE)/k8s.io/kubernetes@v$(K8S_VERSION)/api/openapi-spec/swagger.json" $(K8S_KINDS)

# Renders deploy/k8s/base and every overlay with kustomize and validates
# them against the Kubernetes $(K8S_VERSION) schemas; then checks that the
# known-bad manifests of deploy/k8s/testdata are refused.
k8s-validate: k8s-schemas
	@set -e; for k in deploy/k8s/base deploy/k8s/overlays/*/; do \
		k=$${k%/}; out=bin/k8s/$$(echo "$$k" | tr / _).yaml; \
		$(GO) run $(KUSTOMIZE) build "$$k" > "$$out"; \
		echo "kustomize build $$k: $$(grep -c '^kind:' "$$out") objects"; \
		$(KUBECONFORM_RUN) -summary "$$out"; \
	done
	@if $(KUBECONFORM_RUN) deploy/k8s/testdata/invalid.yaml > bin/k8s/invalid.out 2>&1; then \
		echo "k8s-validate: deploy/k8s/testdata/invalid.yaml passed: the schemas check nothing"; exit 1; fi; \
	n=$$(grep -c ' is invalid: ' bin/k8s/invalid.out || true); \
	if [ "$$n" -ne 3 ]; then echo "k8s-validate: want 3 invalid objects in deploy/k8s/testdata/invalid.yaml, got $$n:"; \
		cat bin/k8s/invalid.out; exit 1; fi; \
	echo "deploy/k8s/testdata/invalid.yaml: refused, as it should be ($$n invalid objects)"

# Fault injection (test/jepsen-lite, needs root for network namespaces and
# nftables): real mqcluster processes, each in its own namespace, under
# partitions, kill -9, pause, slow links; the history is checked for lost,
# duplicated and reordered messages, diverging retained values, split
# brain, wills and recovery. Results in test/jepsen-lite/results/.
# SEED replays a run; JEPSENFLAGS passes more flags (see --help).
SEED        ?= 0
JEPSENFLAGS ?=
.PHONY: jepsen jepsen-short
# The full matrix: one run of 5 minutes per fault family, then all mixed.
jepsen:
	$(GO) run ./test/jepsen-lite --matrix --time 5m --seed $(SEED) $(JEPSENFLAGS)

# About two minutes: every fault family once (the CI run).
jepsen-short:
	$(GO) run ./test/jepsen-lite --short --seed $(SEED) $(JEPSENFLAGS)
