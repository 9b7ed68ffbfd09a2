# mqcluster — build, run and test.
GO        ?= go
BIN       ?= bin/mqcluster
PKGS      ?= ./...
FUZZTIME  ?= 10m

.PHONY: all build run test vet fmt-check bench bench-codec fuzz clean

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

# Every fuzz target for FUZZTIME each (default 10m), one after another.
fuzz:
	@for t in FuzzParseFixedHeader FuzzDecode FuzzDecodePublish FuzzReader; do \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./broker/packet/ || exit 1; done
	@for t in FuzzTrieMatch FuzzValidateFilter; do \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./broker/topic/ || exit 1; done

clean:
	rm -rf bin
