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
