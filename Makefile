# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Python 3.12: a python3.12 on PATH that works, else pyenv's 3.12.x.
PYTHON312 ?= $(shell for c in python3.12 "$$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python3.12" \
	$$(ls -d "$$(pyenv root 2>/dev/null)"/versions/3.12.*/bin/python3.12 2>/dev/null); do \
	"$$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo "$$c"; break; }; done)
PYTEST_ARGS ?=
# Flags of examples/demo.py, e.g. DEMO_ARGS="--task=drawer-close-v3 --seed=1" or "--quick=true".
DEMO_ARGS ?=

.PHONY: venv test lint demo clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "Python 3.12 not found: install it (e.g. pyenv install 3.12) or set PYTHON312=/path/to/python3.12"; exit 1; }
	@test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@# torchcodec decodes dataset videos with FFmpeg's shared libraries; install them where we can.
	@if ! ldconfig -p 2>/dev/null | grep -q libavutil; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing FFmpeg libraries for torchcodec (apt-get)"; \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) >/dev/null; \
		else echo "Note: FFmpeg shared libraries not found; LeRobot will decode videos with pyav (slower)."; fi; \
	fi
	@touch $@

venv: $(VENV)/.installed

test: venv
	MUJOCO_GL=egl $(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv
	MUJOCO_GL=egl $(PY) examples/demo.py $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check lerobot_aim lerobot_policy_aim tests benchmarks examples

clean:
	rm -rf $(VENV) outputs .pytest_cache
