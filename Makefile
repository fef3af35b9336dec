# All set-up a fresh machine needs, then the demo or the tests.
#   make demo   - train both networks, a small sweep, the analysis and the report (CPU, about 8 min)
#   make test   - the test suite (starts the local one-node Slurm cluster; tests/test_multinode.py
#                 switches it to two nodes, `cluster.sh start --nodes 2`, and tests/test_slurm.py back),
#                 in TEST_PROCESSES pytest processes (pytest-xdist; tests/conftest.py keeps together the
#                 tests that share a cluster or a fixture): 2 by default, `make test TEST_PROCESSES=4`
#                 on a machine with more cores; PYTEST_ARGS adds pytest arguments.
# Without root nothing needs root: the Debian packages below are optional system parts, skipped with
# one line each when missing, and the tests that need them skip with their reason.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TEST_PROCESSES ?= 2
# The optional system parts, one a line: name|Debian packages|what it serves|what is lost without it.
define SYSTEM_PARTS
fashion-mnist|dataset-fashion-mnist|Debian's copy of Fashion-MNIST|convlens downloads it instead (convlens fetch-data)
slurm|slurmctld slurmd slurm-client munge|the local test Slurm cluster|the Slurm tests will be skipped
browser|chromium|the report's browser test|that test will be skipped
namespaces|iproute2 util-linux|the two-node test cluster (network namespaces, veths, a bridge)|the two-node tests will be skipped
endef
export SYSTEM_PARTS

.PHONY: setup debs venv data demo test clean-slurm

setup: debs venv data

# As root: apt-get installs whatever is missing. Without root: one line per missing part, and on.
debs:
	@missing=(); \
	while IFS='|' read -r part debs serves without; do \
	  dpkg -s $$debs >/dev/null 2>&1 && continue; \
	  if ((EUID == 0)); then missing+=($$debs); \
	  else echo "setup: skipping $$part ($$debs not installed; installing needs root): $$serves; $$without"; fi; \
	done <<<"$$SYSTEM_PARTS"; \
	if ((EUID != 0)); then exit 0; fi; \
	if ((! $${#missing[@]})); then echo "debian packages present"; exit 0; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${missing[@]}"

# torch/torchvision and everything else pinned by constraints.txt; pyproject keeps loose ranges.
# pip itself first, at its pinned version: the pip a venv of Python 3.11 starts with (23.2) takes
# 26 s to choose this project's 130 packages from an index as large as PyPI's, pip 26 takes 11 s.
# The bytecode is compiled after the install, on every core (pip compiles file by file: 134 s for the
# whole install on 2 cores instead of 57 + 25 s). It must be compiled: where PYTHONDONTWRITEBYTECODE
# is set (this machine, CI) none would ever be written, and every Ray worker would compile torch at
# import (make test took 60 min instead of ~30). compileall's status is not checked: a few files are
# for newer Pythons (torch's py312 test helpers) and fail to compile, as they do under pip. The
# packages' own test suites (a fifth of the files: pandas', sympy's, scipy's tests/) are never imported.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt pip
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -c constraints.txt -e '.[test]'
	$(PY) -m compileall -q -j0 -x '/tests/' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	touch $@

# The demo's and the tests' Fashion-MNIST: Debian's copy where installed, else downloaded and verified
# into $CONVLENS_DATA (default ~/.cache/convlens/datasets), from CONVLENS_DATA_MIRROR where set.
data: venv
	$(VENV)/bin/convlens fetch-data jobs/demo.yaml

demo: setup
	$(VENV)/bin/convlens demo jobs/demo.yaml

# cluster.sh exits 3 where it cannot run (no root): the Slurm tests then skip with that reason.
test: setup
	@bash slurm/cluster.sh start || (($$? == 3))
	$(PY) -m pytest -q -rs -p no:cacheprovider --durations=15 -n $(TEST_PROCESSES) $(PYTEST_ARGS)

clean-slurm:
	bash slurm/cluster.sh stop
