# certserver developer commands. The README explains each.

GO ?= go

.PHONY: build demo test soak bench fuzz clean

## build: compile the certserver binary into bin/, stamped with its commit
## (-buildvcs=auto overrides a GOFLAGS=-buildvcs=false of the machine)
build:
	$(GO) build -buildvcs=auto -o bin/certserver ./cmd/certserver

## demo: run the local demo (Pebble CA + certserver + nginx on loopback)
demo:
	scripts/demo.sh

## test: install missing test dependencies, then run every check and test
test:
	scripts/test.sh

## soak: the two large runs make test keeps small: renew SOAK_CERTS (2,000)
## certificates against Pebble (make test renews 400), about 4 minutes on 2
## cores; then 100,000 wildcard subnames and 100,000 unknown names against
## nginx's cache (make test sends 2,000 of each), about 5 minutes
SOAK_CERTS ?= 2000
soak:
	PEBBLE_BIN="$$(scripts/deps.sh)" CERTSERVER_MASS_RENEWAL=$(SOAK_CERTS) \
		$(GO) test -race -count=1 -timeout 30m -v -run '^TestMassRenewalWithPebble$$' ./renewer
	CERTSERVER_SOAK=1 $(GO) test -count=1 -timeout 30m -v -run '^TestLuaFloodKeepsCertificates$$' ./nginx

## bench: run the benchmarks and print their figures
bench:
	scripts/bench.sh

## fuzz: run the fuzzers (host names, import lines, certificate fast paths) a minute each
fuzz:
	$(GO) test ./store/hostname -run '^$$' -fuzz FuzzNormalize -fuzztime 60s
	$(GO) test ./certserver -run '^$$' -fuzz FuzzDecodeImportFast -fuzztime 60s
	$(GO) test ./store -run '^$$' -fuzz FuzzParseCertificateFastPaths -fuzztime 60s

clean:
	rm -rf bin
