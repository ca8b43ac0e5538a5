# RunnerHub: `make demo` runs a local cluster with a demo workload; `make test` runs every
# check. Both install what is missing first (Debian/Ubuntu packages, then a virtualenv).
# `make image` builds RunnerHub's container images (deploy/container/, deploy/compose/).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
RUNNER_ROOTFS := build/runner-rootfs.tar
LOCK := requirements.lock
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PG_PACKAGE := $(shell apt-cache show postgresql-15 >/dev/null 2>&1 && echo postgresql-15 || echo postgresql)

.PHONY: demo test lint typecheck unit deps system venv patroni bench clean runner-image image lock audit

demo: deps
	$(BIN)/runnerhub up

test: deps lint typecheck audit
	$(BIN)/pytest -q --durations=30

lint: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: deps
	$(BIN)/mypy

bench: deps
	$(BIN)/python bench/ingest.py

deps: system venv patroni $(BIN)/promtool $(BIN)/alertmanager $(RUNNER_ROOTFS)

# The container backend's runner image, from Debian's packages (no registry): the base's
# root file system tar, which `podman import` (or `docker import`) turns into the base that
# src/runnerhub/dev/sim/Containerfile builds on (docs/backends.md). Kept in the user's cache
# under a hash of what makes it, so a fresh checkout need not make it again (delete
# ~/.cache/runnerhub to take Debian's newest packages).
runner-image: $(RUNNER_ROOTFS)
$(RUNNER_ROOTFS): src/runnerhub/dev/cluster/podman.py | system venv
	@key=$$(cat $^ | sha256sum | cut -c1-16); \
	cache="$${XDG_CACHE_HOME:-$$HOME/.cache}/runnerhub/runner-rootfs-$$key.tar"; \
	mkdir -p $(@D) "$$(dirname "$$cache")"; \
	if [ -f "$$cache" ]; then cp "$$cache" $@ && echo "runner image's root file system from $$cache"; \
	else $(BIN)/python -m runnerhub.dev.cluster.podman $@ && \
	  rm -f "$$(dirname "$$cache")"/runner-rootfs-*.tar && cp $@ "$$cache"; fi

# RunnerHub's own images, from Debian's packages and this checkout (no registry):
# localhost/runnerhub:latest (the node) and localhost/runnerhub-infra:latest (etcd,
# PostgreSQL, HAProxy, Redis for deploy/compose/), written to build/*-image.tar and loaded
# into this host's Podman. Root file systems and built images are kept in
# ~/.cache/runnerhub under a hash of what makes them: unchanged sources load in seconds.
image: system venv
	$(BIN)/python -m runnerhub.dev.cluster.node_image --out build

# System packages: installed only when a command they provide is missing.
system: $(STAMPS)/system
$(STAMPS)/system:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing $(PG_PACKAGE) postgresql-contrib"; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v gcc >/dev/null || missing="$$missing gcc python3-dev"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null || missing="$$missing etcd-client"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v keepalived >/dev/null || missing="$$missing keepalived"; \
	command -v patroni >/dev/null || missing="$$missing patroni"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	command -v pgbackrest >/dev/null || missing="$$missing pgbackrest"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v podman-compose >/dev/null || missing="$$missing podman-compose"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
	command -v ssh >/dev/null || missing="$$missing openssh-client"; \
	test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ "$$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then missing="$$missing $(PG_PACKAGE)"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(STAMPS) && touch $@

# Python packages: exactly the versions and hashes in requirements.lock (no resolution, so
# a new release upstream changes nothing here); `make lock` after editing pyproject.toml.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

# Patroni 3.0.4 in its own virtualenv over Debian's python3 and packages (patroni.lock says
# why not Debian's 3.0.2). Under /opt: the postgres user runs it, and /root is not readable.
PATRONI_VENV := /opt/runnerhub-patroni
PATRONI_LOCK := patroni.lock
patroni: $(PATRONI_VENV)/.installed
$(PATRONI_VENV)/.installed: $(PATRONI_LOCK) | system
	$(SUDO) /usr/bin/python3 -m venv --system-site-packages $(PATRONI_VENV)
	$(SUDO) $(PATRONI_VENV)/bin/python -m pip install -q --require-hashes --no-deps -r $(PATRONI_LOCK)
	$(PATRONI_VENV)/bin/patroni --version
	$(SUDO) touch $@

lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal \
	  --no-header --upgrade -o $(LOCK)

# Known vulnerabilities in the locked packages (pip-audit); says so when the data cannot
# be reached from this machine.
audit: venv
	$(BIN)/python -m runnerhub.dev.audit $(LOCK)

# promtool checks the alert rules. Only the binary is taken from Debian's prometheus
# package: installing the package would also start a Prometheus server.
$(BIN)/promtool: $(VENV)/.installed
	@if command -v promtool >/dev/null; then ln -sf "$$(command -v promtool)" $@; else \
	  echo "fetching promtool (from Debian's prometheus package)"; \
	  tmp=$$(mktemp -d) && cd $$tmp && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { $(SUDO) apt-get update -qq && apt-get download prometheus >/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool $(CURDIR)/$@ && \
	  cd / && rm -rf $$tmp; fi
	@$@ --version | head -1

# Prometheus, Alertmanager and amtool for the alerting tests (tests/chaos/test_alerts.py)
# and `amtool check-config`: the binaries only, from Debian's packages, as for promtool,
# and the notification templates, which Debian's Alertmanager reads from a fixed place.
AM_TEMPLATES := /usr/share/prometheus/alertmanager
$(BIN)/alertmanager: $(VENV)/.installed
	@echo "fetching prometheus, alertmanager and amtool (from Debian's packages)"; \
	tmp=$$(mktemp -d) && cd $$tmp && \
	{ apt-get download prometheus prometheus-alertmanager >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && apt-get download prometheus prometheus-alertmanager >/dev/null; }; } && \
	for deb in *.deb; do dpkg-deb -x $$deb root; done && \
	cp root/usr/bin/prometheus root/usr/bin/amtool $(CURDIR)/$(BIN)/ && \
	cp root/usr/bin/prometheus-alertmanager $(CURDIR)/$@ && \
	$(SUDO) mkdir -p $(AM_TEMPLATES) && $(SUDO) cp -n root$(AM_TEMPLATES)/*.tmpl $(AM_TEMPLATES)/ && \
	cd / && rm -rf $$tmp
	@$@ --version 2>&1 | head -1

clean:
	rm -rf $(VENV) $(STAMPS) .pytest_cache .mypy_cache .ruff_cache
