# Set-up and entry points. `make demo` and `make test` build .venv from nothing when it is missing.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; override for a GPU machine, e.g. `make TORCH="torch==2.13.0 --index-url ..."`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# the tested torch-fidelity (= pyproject's `metrics` extra and shortcut_zoo/image_metrics.py's FIDELITY)
FIDELITY := torch-fidelity==0.4.0

.PHONY: demo demo-text test lint format docs bench train-digits train-dimoo-digits clean

$(BIN)/migm: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# torch-fidelity's Inception-v3 for FID / IS, without its torchvision requirement (pyproject's `metrics` extra
	# is the same pin with its dependencies)
	$(BIN)/python -m pip install --quiet --no-deps "$(FIDELITY)"
	touch $(BIN)/migm

# The whole pipeline on the embedded base: 5m16s on 2 idle CPU cores when last measured (AMD EPYC, torch 2.13.0+cpu).
# The bench runs --no-fidelity (with that column the demo once took 10m45s). demo/bench/pareto.png plots the
# Fréchet distance and, beside it, token agreement with vanilla: at 500 samples its intervals put the shortcut
# above cache and taylor at both N16B6 and N16B4 (measured: 0.651 vs 0.608 / 0.599, 0.607 vs 0.546 / 0.538).
demo: $(BIN)/migm
	mkdir -p demo
	$(BIN)/migm models
	$(BIN)/migm generate --model maskgit-digits --classes 0-9 --per-class 8 --steps 16 --seed 0 --out demo/grid.png
	$(BIN)/migm score --model maskgit-digits --samples 1000 --steps 16 --seed 0
	$(BIN)/migm dump-trajectories --model maskgit-digits --num-samples 1024 --steps 16 --out demo/digits-n16
	$(BIN)/migm verify demo/digits-n16
	rm -rf demo/zoo && mkdir -p demo/zoo
	$(BIN)/migm train --data demo/digits-n16 --arch tiny-transformer --steps 2000 --lr 2e-3 --out demo/zoo/tiny-transformer
	$(BIN)/migm zoo show demo/zoo/tiny-transformer
	$(BIN)/migm sample --model maskgit-digits --shortcut demo/zoo/tiny-transformer --steps 32 --budget 12 --out demo/shortcut-grid.png
	$(BIN)/migm bench --model maskgit-digits --shortcut demo/zoo/tiny-transformer --configs N8,N16,N16B6,N16B4 \
		--samples 500 --repeats 3 --no-fidelity --out demo/bench

# The text path on the embedded text-to-image base (dimoo-digits): prompts in, shortcut out (kept out of `make demo` to keep that under 10 minutes).
demo-text: $(BIN)/migm
	mkdir -p demo
	$(BIN)/migm generate --model dimoo-digits --prompt "a handwritten seven" --prompt "the digit 3" \
		--prompt "number zero" --per-class 8 --seed 0 --out demo/text-grid.png
	$(BIN)/migm score --model dimoo-digits --samples 500 --seed 0
	$(BIN)/migm dump-trajectories --model dimoo-digits --num-samples 512 --steps 16 --out demo/dimoo-digits-n16
	$(BIN)/migm verify demo/dimoo-digits-n16
	$(BIN)/migm inspect demo/dimoo-digits-n16 --plot demo/dimoo-digits-smoothness.png
	rm -rf demo/zoo-text && mkdir -p demo/zoo-text
	$(BIN)/migm train --data demo/dimoo-digits-n16 --arch dimoo-transformer --steps 1000 --lr 2e-3 --out demo/zoo-text/dt
	$(BIN)/migm sample --model dimoo-digits --shortcut demo/zoo-text/dt --prompt "a handwritten seven" \
		--prompt "the digit 3" --per-class 8 --steps 16 --budget 7 --out demo/text-shortcut-grid.png
	$(BIN)/migm bench --model dimoo-digits --shortcut demo/zoo-text/dt --configs N8,N16,N16B7,N16B5 \
		--predictors shortcut,cache,taylor,ml-cache --samples 200 --repeats 3 --out demo/bench-text

test: $(BIN)/migm
	$(BIN)/python -m pytest

# The docs site (docs/mkdocs/mkdocs.yml: MkDocs + Material, the API from docstrings, the CLI reference generated
# from the Typer app) built with --strict into site/. `python -m mkdocs`, so that the `migm` script in .venv/bin
# is not what the API reference finds under the name migm.
$(BIN)/mkdocs: $(BIN)/migm
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(BIN)/mkdocs

docs: $(BIN)/mkdocs
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet -f docs/mkdocs/mkdocs.yml

# ruff: lint and format check (CI runs both before the tests); `make format` rewrites in place.
lint: $(BIN)/migm
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/migm
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/migm
	$(BIN)/python benchmarks/sampler.py
	$(BIN)/python benchmarks/storage.py --rss
	$(BIN)/python benchmarks/zoo.py
	$(BIN)/python benchmarks/dump_memory.py
	bash benchmarks/gpu_check.sh --smoke

# Re-trains the shipped digits base and classifier (seeded; about 25 minutes on 2 cores).
train-digits: $(BIN)/migm
	$(BIN)/python -m migm.trajectories.train_digits --out trajectories/base/weights

# Re-trains the shipped dimoo-digits base (seeded; the shipped classifier scores its sweep; 45 minutes on 2 cores shared with other jobs, then 4 of sweep).
train-dimoo-digits: $(BIN)/migm
	$(BIN)/python -m migm.trajectories.train_dimoo_digits --out trajectories/base/weights/dimoo-digits

clean:
	rm -rf $(VENV) demo site
