# All set-up a fresh Debian machine needs, then the demo or the tests.
#   make demo   - train both networks, a small sweep, the analysis and the report (CPU, about 8 min)
#   make test   - the test suite (starts the local one-node Slurm cluster; tests/test_multinode.py
#                 switches it to two nodes, `cluster.sh start --nodes 2`, and tests/test_slurm.py back)
VENV ?= .venv
PY := $(VENV)/bin/python
# iproute2 and util-linux (unshare, nsenter, mount): the two-node cluster's namespaces, veths and bridge
DEBS := dataset-fashion-mnist slurmctld slurmd slurm-client munge chromium iproute2 util-linux

.PHONY: setup debs venv demo test clean-slurm

setup: debs venv

debs:
	@if dpkg -s $(DEBS) >/dev/null 2>&1; then echo "debian packages present"; else \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS); fi

# torch/torchvision and everything else pinned by constraints.txt; pyproject keeps loose ranges.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/convlens demo jobs/demo.yaml

test: setup
	bash slurm/cluster.sh start
	$(PY) -m pytest -q -p no:cacheprovider

clean-slurm:
	bash slurm/cluster.sh stop
