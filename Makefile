# pktfate: run `make help` for the targets. Targets that attach BPF or build
# the lab need root. On a machine without make: sh scripts/setup.sh first.

VENV := .venv
PY := $(VENV)/bin/python
SCENARIO ?= checksum

.PHONY: help setup setup-dev demo test unit integration fault-matrix vm-test fresh-test vagrant-test report-screenshot image bench lint dump-bpf clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## Install distro packages, kernel headers, tracefs and the virtualenv (root)
	sh scripts/setup.sh

setup-dev: ## The same, plus what the tests and the bench need besides (vagrant, peers)
	sh scripts/setup.sh --dev

demo: setup ## Set up, then diagnose a lab incident (SCENARIO=checksum|no-listener|...)
	$(VENV)/bin/pktfate lab demo $(SCENARIO)

test: setup-dev ## Set up, then run the tests: unit, integration, the kernel matrix's smoke subset (root)
	$(PY) -m pytest -v -rs -m "not vm" tests

unit: ## Run the unit tests only (no root needed)
	$(PY) -m pytest -q tests/unit

integration: ## Run the integration tests only (root), the kernel matrix smoke included
	$(PY) -m pytest -v -rs -m "not vm" tests/integration

fault-matrix: setup-dev ## Every cell of the fault matrix (topology x family x fault x noise), live; table in docs/FAULTS.md (root)
	PKTFATE_FAULTS=all PKTFATE_FAULTS_TABLE=docs/FAULTS.md $(PY) -m pytest -v -rs tests/integration/test_fault_matrix.py

GUEST_TESTS := tests/integration/test_lifecycle.py tests/integration/test_flood.py \
	tests/integration/test_watch_scenarios.py

vm-test: setup-dev ## Every lab scenario under Debian's 5.10, 6.1, 6.12 (docs/KERNELS.md); the suite's lifecycle, flood and watch tests inside 6.1 and 5.10; the three-VM lab (root)
	$(PY) tests/vm/matrix.py --update-docs
	$(PY) tests/vm/matrix.py --no-scenarios --kernels 6.1,5.10 $(addprefix --pytest ,$(GUEST_TESTS))
	$(PY) -m pytest -v -rs -m vm tests/integration

vagrant-test: setup-dev ## The Vagrant lab for real on libvirt: box built here, up, checksum incident, destroy (root)
	$(PY) tests/vm/vagrant_test.py

fresh-test: ## The README's commands in a fresh Debian 12 guest built from Debian's packages alone (root; ~1 h)
	sh tests/vm/fresh.sh docs/FRESH.txt

report-screenshot: ## Draw docs/report-checksum.png: the checksum recording's HTML report in headless Chromium
	$(VENV)/bin/pktfate report tests/data/lab/checksum.jsonl -o docs/report-checksum.html
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
		--no-first-run --hide-scrollbars --user-data-dir=$$(mktemp -d) --window-size=900,1500 \
		--screenshot=docs/report-checksum.png docs/report-checksum.html
	rm docs/report-checksum.html

image: ## Build the agent's image with buildah from a debootstrap base, no registry (root)
	sh deploy/build-image.sh

bench: setup-dev ## Measure overhead, capacity, startup, CPU, memory; table into docs/BENCHMARKS.md (root)
	$(PY) bench/run.py --update-docs

lint: ## ruff and mypy on the package, the tests and the bench (strict on the typed model); shellcheck
	$(VENV)/bin/ruff check tracer tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict --follow-imports=silent tracer/model tracer/decode tracer/correlate tracer/diagnosis
	shellcheck scripts/*.sh vagrant/*.sh deploy/*.sh tests/vm/*.sh .ci/run

dump-bpf: ## Print the final BPF C source and compile flags for a watch of :80
	$(VENV)/bin/pktfate watch --port 80 --dump-bpf

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
