# Makefile: build and check ferry. `scripts/setup && make test` is what CI runs.

GO       ?= go
FUZZTIME ?= 20s

# Go lives in /usr/local/go on the project's machines; staticcheck is installed
# by scripts/setup into $(go env GOPATH)/bin, which need not be on PATH.
export PATH := $(PATH):/usr/local/go/bin
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo "$$($(GO) env GOPATH)/bin/staticcheck")

# Every .go file of the project (testdata may hold deliberately odd Go).
GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -not -path './bin/*')

.PHONY: all build dev test lint fmt-check vet staticcheck test-go fuzz

all: build

## build: compile the ferry binary into bin/ferry.
build:
	$(GO) build -o bin/ferry ./cmd/ferry

## dev: build, then run a local cluster: 3 simulated hosts with real VMs
## (as root; without root or QEMU it falls back to the fake driver).
dev: build
	bin/ferry dev

## test: lint, then every test with the race detector.
test: lint test-go

## lint: gofmt, go vet and staticcheck.
lint: fmt-check vet staticcheck

fmt-check:
	@unformatted="$$(gofmt -l $(GOFILES))"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files are not formatted (run gofmt -w on them):"; \
		echo "$$unformatted"; \
		exit 1; \
	fi; \
	echo "gofmt: ok"

vet:
	$(GO) vet ./...

staticcheck:
	@test -x "$(STATICCHECK)" || { echo "staticcheck not found at $(STATICCHECK): run scripts/setup"; exit 1; }
	$(STATICCHECK) ./...

test-go:
	$(GO) test -race -timeout 25m ./...

## fuzz: run every Fuzz target of every package for FUZZTIME each (default 20s).
fuzz:
	@set -e; \
	for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
		for target in $$($(GO) test -list '^Fuzz' "$$dir" | grep '^Fuzz'); do \
			echo "fuzz: $$dir $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime "$(FUZZTIME)" "$$dir"; \
		done; \
	done
