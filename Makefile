# omk — build, demo and test entry points.
#   make demo   run the main job on the bundled scripted agent
#   make test   run every test suite (what .ci/run calls)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := $(CURDIR)/.venv
VPY     := $(VENV)/bin/python
TARGET  := $(CURDIR)/target
OMK     := $(TARGET)/debug/omk
DEMO_DIR ?= $(TARGET)/demo

# cargo (pyo3's build script) and maturin must use the same interpreter.
export PYO3_PYTHON := $(VPY)
export CARGO_TERM_COLOR ?= never

.PHONY: demo test build fmt-check clippy cargo-test c-test py-test mcp-test dashboard-test peers peer-test header bench deps venv clean install

## deps: system packages the tests need (Debian), installed only when missing.
deps:
	@missing=""; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	command -v valgrind >/dev/null || missing="$$missing valgrind"; \
	command -v tmux >/dev/null || missing="$$missing tmux"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	git lfs version >/dev/null 2>&1 || missing="$$missing git-lfs"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## venv: the Python environment for the wheel, pytest and later peers.
$(VPY): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $(VPY)
venv: $(VPY)

build: $(VPY)
	$(CARGO) build --workspace

## demo: a 3-worker team on the bundled scripted agent, in a scratch project.
demo: build
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)/state $(DEMO_DIR)/project/.omk
	@printf '[[gate]]\nname = "readme"\ncommand = "test -s README.md"\n\n[[gate]]\nname = "license"\ncommand = ["test", "-s", "LICENSE"]\n' \
	  > $(DEMO_DIR)/project/.omk/gates.toml
	@echo "== scratch project: $(DEMO_DIR)/project (gates in .omk/gates.toml), state: $(DEMO_DIR)/state"
	cd $(DEMO_DIR)/project && OMK_STATE_DIR=$(DEMO_DIR)/state \
	  OMK_KIMI_BIN=$(TARGET)/debug/omk-scripted-agent XDG_CONFIG_HOME=$(DEMO_DIR)/xdg \
	  $(OMK) team run 3:executor "Create the project's first files" --name demo \
	    --subtask "Write the README [write:README.md:# Demo project\nBuilt by an omk team.\n]" \
	    --subtask "Add a license file [write:LICENSE:MIT]" \
	    --subtask "Report what the project contains [tokens:1200:300]" --json
	@echo "== files the team wrote:" && ls -l $(DEMO_DIR)/project
	@echo "== the proof's gates:" && grep -E '"(name|passed|command_line)"' $(DEMO_DIR)/state/team/demo/proof.json | tail -6
	@echo "== team list:" && OMK_STATE_DIR=$(DEMO_DIR)/state $(OMK) team list

test: deps $(VPY) fmt-check clippy cargo-test c-test py-test mcp-test dashboard-test peer-test
	@echo "make test: all suites passed"

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: $(VPY)
	$(CARGO) clippy --workspace --all-targets --features omk-ffi/test-panic -- -D warnings

## cargo-test: the agent overrides of the caller's environment would replace
## the scripted agent the tests configure.
cargo-test: $(VPY)
	env -u OMK_KIMI_BIN -u OMK_KIMI_ARGS -u OMK_AGENT_PROTOCOL -u OMK_CONFIG \
	  -u OMK_SCRIPTED_BEHAVIOUR -u OMK_SCRIPTED_FAULT \
	  bash tests/pg/with-postgres.sh $(CARGO) test --workspace

## c-test: the C ABI from C (C11 strict, header also as C++17), under valgrind.
c-test: build
	bash tests/c/run.sh

## install: libomk.so/.a, omk.h and omk.pc under PREFIX (default /usr/local).
PREFIX ?= /usr/local
install:
	$(CARGO) build --release -p omk-ffi
	bash tests/c/install.sh $(PREFIX)

## py-test: build the wheel with maturin, install it, run pytest (with a throwaway PostgreSQL for the store tests) and mypy --strict against it.
py-test: build
	bash tests/pg/with-postgres.sh bash tests/python/run.sh

## mcp-test: omk mcp-server driven by the official Python `mcp` client, and
## omk mcp list/doctor/call against Python SDK servers (stdio and HTTP on 127.0.0.1);
## with a throwaway PostgreSQL for the cluster pool tools.
mcp-test: build
	OMK_BIN=$(OMK) bash tests/pg/with-postgres.sh $(VPY) -m pytest -q -p no:cacheprovider tests/mcp

## dashboard-test: the page in headless Chromium (live update, hostile text,
## screenshot in target/; a store's cluster pools, with a throwaway PostgreSQL)
## and schemathesis against /api/openapi.json.
dashboard-test: build
	OMK_BIN=$(OMK) bash tests/pg/with-postgres.sh $(VPY) -m pytest -q -p no:cacheprovider tests/dashboard

## peers: the real kimi-cli 1.51.0 in .kimi-venv (SKIPPED marker when no Python 3.13),
## and the real ACP agents (Claude Code's adapter, qwen-code, a Node 22) in .acp-agents.
peers:
	bash tests/peers/setup-kimi.sh
	bash tests/peers/setup-acp-agents.sh

## peer-test: the real kimi-cli over Wire and ACP, Claude Code and qwen-code over
## ACP, directly and driven by omk, in a network namespace with only loopback.
peer-test: build peers
	OMK_BIN=$(OMK) OMK_REQUIRE_KIMI=1 bash tests/peers/loopback-only.sh $(VPY) -m pytest -q tests/peers

## header: regenerate include/omk.h after changing the C ABI.
header:
	OMK_WRITE_HEADER=1 $(CARGO) test -q -p omk-ffi --test header

## bench: criterion benchmarks, the team and call-overhead benches; medians and ratios.
bench: $(VPY) peers
	OMK_TEST_PG_FSYNC=on bash tests/pg/with-postgres.sh $(CARGO) bench -p omk-core
	$(VPY) scripts/bench_report.py $(TARGET)/criterion
	$(CARGO) build --release -p omk-cli -p omk-scripted-agent
	$(VPY) scripts/bench_team.py --runs 7 --kimi
	OMK_TEST_PG_FSYNC=on bash tests/pg/with-postgres.sh $(VPY) scripts/bench_distributed.py
	$(VPY) scripts/bench_calls.py
	$(VPY) scripts/bench_goals.py
	$(VPY) scripts/bench_chat.py
	$(VPY) scripts/bench_mcp.py
	$(VPY) scripts/bench_dashboard.py
	$(VPY) scripts/bench_acp.py --runs 3
	$(VPY) scripts/bench_worktree.py --runs 3
	$(VPY) scripts/bench_latency.py

clean:
	$(CARGO) clean
	rm -rf $(VENV)
