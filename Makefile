# Set-up and everyday commands. `make demo` and `make test` work on a fresh Debian machine as root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Read by tests/bench/bench_real_recordings.py only (voice, music, drum recordings): `make bench-system`
BENCH_SYSTEM_PACKAGES := alsa-utils asterisk-moh-opsound-wav avldrums.lv2-soundfont
SYSTEM_PACKAGES := make python3-venv libsndfile1 libportaudio2 jackd2 libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont chromium chromium-driver
DEMO_OUT ?= out/demo_fx.wav

NEUTONE_VENV := .venv-neutone

.PHONY: venv venv-neutone system bench-system demo test test-fast bench clean

# The CPU build of torch goes in first, so the project's own `torch` requirement
# is already satisfied and pip does not pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[train,test]'
	touch $@

venv: $(VENV)/.installed

# A side environment for `spectro-fx export --format neutone` and its tests: neutone-sdk wants
# torchaudio and numpy < 2.3, which the main environment does not hold. Same CPU torch as .venv,
# so a .nm written here loads with torch.jit.load there.
$(NEUTONE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NEUTONE_VENV)
	$(NEUTONE_VENV)/bin/pip install --quiet --upgrade pip
	$(NEUTONE_VENV)/bin/pip install --quiet torch==2.13.0
	$(NEUTONE_VENV)/bin/pip install --quiet -e '.[neutone]'
	# torchaudio's compiled libraries on PyPI link against CUDA torch (libc10_cuda.so) and cannot
	# load beside the CPU torch; without them torchaudio imports as pure Python (its loader skips
	# missing libraries), and neutone-sdk uses only its pure-PyTorch resampler. They are kept aside
	# for the test of the export's message when they are in place.
	mkdir -p $(NEUTONE_VENV)/torchaudio-libs-removed
	for lib in $(NEUTONE_VENV)/lib/python*/site-packages/torchaudio/lib/*.so; do \
		if [ -e "$$lib" ]; then mv -f "$$lib" $(NEUTONE_VENV)/torchaudio-libs-removed/; fi; \
	done
	touch $@

venv-neutone: $(NEUTONE_VENV)/.installed

# System libraries: PortAudio and a JACK server (audio/MIDI tests), FluidSynth and two
# General MIDI SoundFonts (training data and held-out evaluation), Chromium and its
# WebDriver (the browser UI's tests).
system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench-system:
	$(MAKE) system SYSTEM_PACKAGES="$(BENCH_SYSTEM_PACKAGES)"

# The demo regenerates 400 Hz - 3 kHz by inpainting, half of every second (so the change is
# easy to hear against the untouched half), and saves a before/after spectrogram.
DEMO_ARGS ?= --chain inpaint --set low_hz=400 --set high_hz=3000 --set period_s=1 --set duty=0.5 --seed 1

demo: system venv
	$(VENV)/bin/spectro-fx --input "$$($(PY) -c 'from spectro_fx.assets import asset_path; print(asset_path("demo.wav"))')" --output $(DEMO_OUT) $(DEMO_ARGS) --plot $(DEMO_OUT:.wav=.png)
	@echo "wrote $(DEMO_OUT) and $(DEMO_OUT:.wav=.png)"

test: system venv venv-neutone
	bash tests/run.sh

test-fast: venv
	bash tests/run.sh -m "not slow"

# Every benchmark that can run here, short (BENCH_ARGS=--full for the lengths quoted in docs/benchmarks.md); the
# summary says what ran and what was skipped and why (no GPU, no jackd, inputs to choose).
BENCH_ARGS ?=
bench: venv
	$(PY) tests/bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(NEUTONE_VENV) build dist *.egg-info out
